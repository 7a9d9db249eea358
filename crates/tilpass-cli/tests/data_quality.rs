//! End-to-end tests of `tilpass data filter` and `tilpass data card`.

mod common;

use std::path::Path;

use common::{bad_input, ok_json, tilpass};
use serde_json::Value;

/// The first `n` rows of tilpass's own CC0 norsk-chat data, as written there (ids, lang, task
/// and all).
fn chat_rows(n: usize) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/norsk-chat.jsonl");
    std::fs::read_to_string(root)
        .unwrap()
        .lines()
        .take(n)
        .map(String::from)
        .collect()
}

fn report(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn filter_keeps_rows_unchanged_in_order_and_reports_every_rule() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = chat_rows(40);
    // Planted failures: English, repeated lines, a one-word answer.
    rows.insert(3, r#"{"id": "en-1", "messages": [{"role": "user", "content": "What is the weather like today in Oslo?"}, {"role": "assistant", "content": "It is cold and rainy in Oslo today, as it often is in the autumn."}]}"#.into());
    rows.insert(10, r#"{"id": "rep-1", "messages": [{"role": "user", "content": "Skriv det same tre gonger."}, {"role": "assistant", "content": "Eg likar å gå tur.\nEg likar å gå tur.\nEg likar å gå tur."}]}"#.into());
    rows.insert(20, r#"{"id": "short-1", "messages": [{"role": "user", "content": "Ja?"}, {"role": "assistant", "content": "Ja."}]}"#.into());
    let input = dir.path().join("chat.jsonl");
    std::fs::write(&input, rows.join("\n") + "\n").unwrap();
    let out = dir.path().join("kept.jsonl");
    let rep = dir.path().join("report.jsonl");
    let v = ok_json(&tilpass(&[
        "data",
        "filter",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--min-words",
        "5",
    ]));
    let entries = report(&rep);
    let failed: std::collections::BTreeSet<u64> = entries
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    // Kept rows: exactly the input lines no rule failed, byte for byte, in input order.
    let expected: Vec<&str> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains(&(*i as u64 + 1)))
        .map(|(_, r)| r.as_str())
        .collect();
    let kept = std::fs::read_to_string(&out).unwrap();
    assert_eq!(kept.lines().collect::<Vec<_>>(), expected);
    assert_eq!(v["read"], rows.len());
    assert_eq!(v["kept"], expected.len());
    assert_eq!(v["removed"], failed.len());
    let line_rules = |line: u64| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["line"] == line)
            .map(|e| e["rule"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        line_rules(4).contains(&"language".to_string()),
        "{entries:?}"
    );
    assert!(
        line_rules(11).contains(&"dup_line_frac".to_string()),
        "{entries:?}"
    );
    assert!(
        line_rules(21).contains(&"min_words".to_string()),
        "{entries:?}"
    );
    // Summary counts per rule agree with the report.
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for e in &entries {
        for k in ["line", "rule", "value", "threshold"] {
            assert!(e.get(k).is_some(), "{e}");
        }
        *counts
            .entry(e["rule"].as_str().unwrap().into())
            .or_default() += 1;
    }
    let summary: std::collections::BTreeMap<String, u64> =
        serde_json::from_value(v["rules"].clone()).unwrap();
    assert_eq!(summary, counts);
    let lang = entries
        .iter()
        .find(|e| e["line"] == 4 && e["rule"] == "language")
        .unwrap();
    assert_eq!(lang["value"], "en");
    assert_eq!(lang["threshold"], serde_json::json!(["nb", "nn"]));
}

#[test]
fn filter_drops_the_worst_perplexity_share() {
    let dir = tempfile::tempdir().unwrap();
    let rows = chat_rows(30);
    let input = dir.path().join("chat.jsonl");
    std::fs::write(&input, rows.join("\n") + "\n").unwrap();
    // The model trains on the assistant answers of later rows.
    let train: Vec<String> = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/norsk-chat.jsonl"),
    )
    .unwrap()
    .lines()
    .skip(100)
    .take(300)
    .flat_map(|l| {
        let v: Value = serde_json::from_str(l).unwrap();
        let msgs = v["messages"].as_array().cloned().unwrap_or_default();
        msgs.into_iter()
            .filter(|m| m["role"] == "assistant")
            .map(|m| m["content"].as_str().unwrap_or_default().replace('\n', " "))
            .collect::<Vec<_>>()
    })
    .collect();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, train.join("\n")).unwrap();
    let out = dir.path().join("kept.jsonl");
    let rep = dir.path().join("report.jsonl");
    let v = ok_json(&tilpass(&[
        "data",
        "filter",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--config",
        write_config(dir.path()).to_str().unwrap(),
        "--ngram-train",
        corpus.to_str().unwrap(),
        "--perplexity-drop-pct",
        "20",
    ]));
    // Only the perplexity rule is on: floor(30 · 0.2) = 6 rows go, the highest ones.
    assert_eq!(v["rules"]["perplexity"], 6);
    assert_eq!(v["kept"], 24);
    let cut = v["perplexity_cutoff"].as_f64().unwrap();
    for e in report(&rep) {
        assert!(e["value"].as_f64().unwrap() >= cut);
        assert_eq!(e["threshold"].as_f64().unwrap(), cut);
    }
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    // Every rule off.
    let p = dir.join("filter.json");
    std::fs::write(
        &p,
        r#"{"languages": null, "min_words": null, "max_words": null, "min_mean_word_length": null,
            "max_mean_word_length": null, "max_hash_ratio": null, "max_ellipsis_ratio": null,
            "max_bullet_lines": null, "max_ellipsis_lines": null, "min_alpha_words": null,
            "max_dup_para_frac": null, "max_dup_para_char_frac": null, "max_dup_line_frac": null,
            "max_dup_line_char_frac": null, "max_top_ngram": [], "max_dup_ngram": []}"#,
    )
    .unwrap();
    p
}

#[test]
fn filter_rejects_bad_rows_settings_and_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let rows = chat_rows(3);
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{\"messages\": [{{\"role\": \"robot\", \"content\": \"x\"}}]}}\n",
            rows[0]
        ),
    )
    .unwrap();
    let out = dir.path().join("kept.jsonl");
    let err = bad_input(&tilpass(&[
        "data",
        "filter",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("bad.jsonl:line 2"), "{err}");
    assert!(!out.exists());

    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, rows.join("\n")).unwrap();
    let err = bad_input(&tilpass(&[
        "data",
        "filter",
        good.to_str().unwrap(),
        "--out",
        good.to_str().unwrap(),
    ]));
    assert!(err.contains("`out`"), "{err}");
    assert_eq!(std::fs::read_to_string(&good).unwrap(), rows.join("\n"));

    let cfg = dir.path().join("cfg.json");
    std::fs::write(&cfg, r#"{"min_word": 3}"#).unwrap();
    let err = bad_input(&tilpass(&[
        "data",
        "filter",
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert!(err.contains("min_word"), "{err}");
    let err = bad_input(&tilpass(&[
        "data",
        "filter",
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--lang",
        "nb,xx",
    ]));
    assert!(err.contains("`languages`"), "{err}");
    let err = bad_input(&tilpass(&[
        "data",
        "filter",
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--perplexity-drop-pct",
        "10",
    ]));
    assert!(err.contains("--ngram-train"), "{err}");
    assert!(!out.exists());
}

#[test]
fn filter_checks_preference_rows_per_field() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pref.jsonl");
    let rows = [
        r#"{"prompt": "Kva heiter hovudstaden i Noreg?", "chosen": "Hovudstaden i Noreg heiter Oslo.", "rejected": "Bergen.", "meta": {"k": 1}}"#,
        r#"{"prompt": "Kva er to pluss to?", "chosen": "To pluss to er fire.", "rejected": "To pluss to er fem.", "meta": {"k": 2}}"#,
    ];
    std::fs::write(&input, rows.join("\n")).unwrap();
    let out = dir.path().join("kept.jsonl");
    let rep = dir.path().join("report.jsonl");
    let v = ok_json(&tilpass(&[
        "data",
        "filter",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--config",
        write_config(dir.path()).to_str().unwrap(),
        "--min-words",
        "2",
        "--scope",
        "per_field",
    ]));
    assert_eq!(v["kept"], 1);
    let e = report(&rep);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["line"], 1);
    assert_eq!(e[0]["field"], "rejected");
    assert_eq!(e[0]["rule"], "min_words");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("{}\n", rows[1])
    );
}

#[test]
fn card_for_builtin_and_filtered_data() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card");
    let v = ok_json(&tilpass(&[
        "data",
        "card",
        "builtin:norsk-chat",
        "--out",
        card.to_str().unwrap(),
        "--license",
        "CC0-1.0",
    ]));
    assert!(v["rows"].as_u64().unwrap() > 100);
    let md = std::fs::read_to_string(card.join("README.md")).unwrap();
    assert!(md.contains("# norsk-chat"), "{md}");
    assert!(md.contains("CC0-1.0"));
    assert!(md.contains("| nn |") && md.contains("| nb |"), "{md}");
    for f in [
        "words.svg",
        "words.png",
        "turns.svg",
        "turns.png",
        "stats.json",
    ] {
        assert!(card.join(f).is_file(), "{f}");
    }
    let svg = std::fs::read_to_string(card.join("turns.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("<rect"));
    // An existing directory is refused.
    let err = bad_input(&tilpass(&[
        "data",
        "card",
        "builtin:norsk-chat",
        "--out",
        card.to_str().unwrap(),
    ]));
    assert!(err.contains("exists"), "{err}");

    // A filter report summarised by rule on a prompt-completion file.
    let input = dir.path().join("pc.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"Kva er klokka?\", \"completion\": \"Ho er tolv.\"}\n{\"prompt\": \"What time is it?\", \"completion\": \"It is noon.\"}\n",
    )
    .unwrap();
    let rep = dir.path().join("r.jsonl");
    let kept = dir.path().join("kept.jsonl");
    ok_json(&tilpass(&[
        "data",
        "filter",
        input.to_str().unwrap(),
        "--out",
        kept.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
        "--min-words",
        "1",
    ]));
    let card2 = dir.path().join("card2");
    ok_json(&tilpass(&[
        "data",
        "card",
        input.to_str().unwrap(),
        "--out",
        card2.to_str().unwrap(),
        "--reports",
        rep.to_str().unwrap(),
    ]));
    let md = std::fs::read_to_string(card2.join("README.md")).unwrap();
    assert!(md.contains("| prompt_completion | 2 |"), "{md}");
    assert!(md.contains("| language |"), "{md}");
    assert!(!card2.join("turns.svg").exists());
}

/// `data filter` reads the built-in datasets too (as every `tilpass data` command does), and
/// writes their rows in the library's JSON, the kept ones in order.
#[test]
fn filter_reads_builtin_norsk_chat() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kept.jsonl");
    let v = ok_json(&tilpass(&[
        "data",
        "filter",
        "builtin:norsk-chat",
        "--out",
        out.to_str().unwrap(),
        "--lang",
        "nb,nn",
        "--min-words",
        "3",
    ]));
    let read = v["read"].as_u64().unwrap();
    let kept = v["kept"].as_u64().unwrap();
    assert!(read > 300 && kept > 0 && kept <= read, "{v}");
    let rows: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len() as u64, kept);
    assert!(
        rows.iter().all(|r| r["messages"].is_array()),
        "{:?}",
        rows[0]
    );
}
