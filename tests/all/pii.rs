//! Personal-data detection on the committed test set tests/fixtures/data/pii_testset.jsonl
//! (CC0, made by tests/fixtures/generate_pii_testset.py, whose mod-11 and date rules are its
//! own): per kind, precision 1.0 and recall >= 0.95 against the expected spans (exact offsets
//! and kind), the numbers stated in tilpass_data::pii's docs.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;
use tilpass::data::pii::{PiiKind, find_pii, redact};
use tilpass_tests::fixture_path;

#[test]
fn pii_test_set_precision_and_recall() {
    let text = std::fs::read_to_string(fixture_path("data/pii_testset.jsonl")).unwrap();
    let rows: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 100, "{} lines", rows.len());
    // (tp, fp, fn) per kind.
    let mut counts: BTreeMap<String, (usize, usize, usize)> = PiiKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), (0, 0, 0)))
        .collect();
    let mut negatives = 0;
    for row in &rows {
        let t = row["text"].as_str().unwrap();
        let char_at = |byte: usize| t[..byte].chars().count();
        let want: HashSet<(String, usize, usize)> = row["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["type"].as_str().unwrap().to_string(),
                    s["start"].as_u64().unwrap() as usize,
                    s["end"].as_u64().unwrap() as usize,
                )
            })
            .collect();
        negatives += usize::from(want.is_empty());
        let got: HashSet<(String, usize, usize)> = find_pii(t)
            .iter()
            .map(|m| {
                (
                    m.kind.as_str().to_string(),
                    char_at(m.start),
                    char_at(m.end),
                )
            })
            .collect();
        for g in &got {
            let c = counts.get_mut(&g.0).unwrap();
            if want.contains(g) {
                c.0 += 1;
            } else {
                c.1 += 1;
                eprintln!("false positive {g:?} in {t:?}");
            }
        }
        for w in want.difference(&got) {
            counts.get_mut(&w.0).unwrap().2 += 1;
            eprintln!("missed {w:?} in {t:?}");
        }
        // Redaction replaces exactly the findings.
        let (red, found) = redact(t);
        assert_eq!(found.len(), got.len());
        for m in &found {
            assert!(red.contains(m.kind.placeholder()));
        }
    }
    assert!(negatives >= 40, "{negatives} lines without personal data");
    for (kind, (tp, fp, fn_)) in &counts {
        let precision = *tp as f64 / (tp + fp).max(1) as f64;
        let recall = *tp as f64 / (tp + fn_).max(1) as f64;
        eprintln!("{kind}: tp {tp} fp {fp} fn {fn_} precision {precision:.3} recall {recall:.3}");
        assert!(tp + fn_ >= 10, "{kind}: too few examples");
        assert_eq!(precision, 1.0, "{kind}");
        assert!(recall >= 0.95, "{kind}: recall {recall}");
    }
}

#[test]
fn check_digit_rules_agree_with_the_test_set_generator() {
    // Every 11-digit span of the test set is valid by our rules; every broken one is not.
    let text = std::fs::read_to_string(fixture_path("data/pii_testset.jsonl")).unwrap();
    let mut seen = 0;
    for l in text.lines() {
        let row: Value = serde_json::from_str(l).unwrap();
        for s in row["spans"].as_array().unwrap() {
            let digits: Vec<u8> = s["text"]
                .as_str()
                .unwrap()
                .bytes()
                .filter(u8::is_ascii_digit)
                .map(|b| b - b'0')
                .collect();
            let Ok(d) = <[u8; 11]>::try_from(digits) else {
                continue;
            };
            seen += 1;
            match s["type"].as_str().unwrap() {
                "national_id" => assert!(tilpass::data::pii::valid_national_id(&d), "{s}"),
                "bank_account" => assert!(tilpass::data::pii::valid_account(&d), "{s}"),
                other => panic!("{other}: {s}"),
            }
        }
    }
    assert!(seen >= 30);
}
