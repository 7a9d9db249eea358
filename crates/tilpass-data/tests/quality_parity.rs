//! Quality filters: the Gopher measurements and decisions against datatrove 0.10.1
//! (tests/fixtures/quality/gopher.json, made by tests/fixtures/generate_quality.py), and the
//! n-gram perplexity model trained on the shared UD Norwegian sentences.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tilpass_data::quality::gopher::{GopherStats, PUNCTUATION};
use tilpass_data::quality::{
    NgramLm, NgramLmConfig, PerplexityScorer, QualityConfig, QualityFilter,
};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture_json(rel: &str) -> Value {
    let p = workspace_root().join("tests/fixtures").join(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A file of the shared data (`TILPASS_SHARED_DATA`, default ../shared/data next to the
/// workspace), or `None` with a SKIPPED note (a panic with `TILPASS_REQUIRE_ARTEFACTS=1`).
fn shared_data(rel: &str) -> Option<PathBuf> {
    let base = std::env::var_os("TILPASS_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/data"));
    let p = base.join(rel);
    if p.is_file() {
        return Some(p);
    }
    let msg = format!("shared data file {} not found", p.display());
    if std::env::var("TILPASS_REQUIRE_ARTEFACTS").is_ok_and(|v| v == "1") {
        panic!("{msg} (TILPASS_REQUIRE_ARTEFACTS=1)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

const TOP: [usize; 3] = [2, 3, 4];
const DUP: [usize; 6] = [5, 6, 7, 8, 9, 10];

fn close(got: f64, want: f64, what: &str, text: &str) {
    assert!(
        (got - want).abs() <= 1e-9,
        "{what}: tilpass {got}, datatrove {want} for {text:?}"
    );
}

/// datatrove's reason → tilpass's rule.
fn rule_of(reason: &str) -> String {
    match reason {
        "gopher_short_doc" => "min_words".into(),
        "gopher_long_doc" => "max_words".into(),
        "gopher_below_avg_threshold" => "min_mean_word_length".into(),
        "gopher_above_avg_threshold" => "max_mean_word_length".into(),
        "gopher_too_many_hashes" => "hash_ratio".into(),
        "gopher_too_many_ellipsis" => "ellipsis_ratio".into(),
        "gopher_too_many_bullets" => "bullet_lines".into(),
        "gopher_too_many_end_ellipsis" => "ellipsis_lines".into(),
        "gopher_below_alpha_threshold" => "alpha_words".into(),
        r if r.starts_with("duplicated_") => {
            format!(
                "dup_{}_gram",
                r.trim_start_matches("duplicated_")
                    .trim_end_matches("_n_grams")
            )
        }
        other => other.into(),
    }
}

/// The Gopher quality rules of datatrove's filter (stop words off), all else off.
fn quality_config(min_words: usize) -> QualityConfig {
    let d = QualityConfig::default();
    QualityConfig {
        min_words: Some(min_words),
        max_words: d.max_words,
        min_mean_word_length: d.min_mean_word_length,
        max_mean_word_length: d.max_mean_word_length,
        max_hash_ratio: d.max_hash_ratio,
        max_ellipsis_ratio: d.max_ellipsis_ratio,
        max_bullet_lines: d.max_bullet_lines,
        max_ellipsis_lines: d.max_ellipsis_lines,
        min_alpha_words: d.min_alpha_words,
        ..QualityConfig::none()
    }
}

/// The Gopher repetition rules (table A1), all else off.
fn repetition_config() -> QualityConfig {
    let d = QualityConfig::default();
    QualityConfig {
        max_dup_para_frac: d.max_dup_para_frac,
        max_dup_para_char_frac: d.max_dup_para_char_frac,
        max_dup_line_frac: d.max_dup_line_frac,
        max_dup_line_char_frac: d.max_dup_line_char_frac,
        max_top_ngram: d.max_top_ngram,
        max_dup_ngram: d.max_dup_ngram,
        ..QualityConfig::none()
    }
}

#[test]
fn gopher_measurements_and_decisions_match_datatrove() {
    let fx = fixture_json("quality/gopher.json");
    let punct: Vec<u32> = fx["punctuation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(PUNCTUATION, punct.as_slice(), "datatrove's PUNCTUATION_SET");
    let relaxed_min = fx["quality_relaxed_min_doc_words"].as_u64().unwrap() as usize;
    let q_default = QualityFilter::new(quality_config(50)).unwrap();
    let q_relaxed = QualityFilter::new(quality_config(relaxed_min)).unwrap();
    let rep = QualityFilter::new(repetition_config()).unwrap();
    let docs = fx["docs"].as_array().unwrap();
    assert!(docs.len() > 500);
    let mut decided = std::collections::BTreeMap::<String, usize>::new();
    for doc in docs {
        let text = doc["text"].as_str().unwrap();
        let v = &doc["values"];
        let s = GopherStats::compute(text, &TOP, &DUP);
        assert_eq!(
            s.chars as u64,
            v["chars"].as_u64().unwrap(),
            "chars of {text:?}"
        );
        assert_eq!(
            s.words as u64,
            v["words"].as_u64().unwrap(),
            "words of {text:?}"
        );
        assert_eq!(
            s.non_symbol_words as u64,
            v["non_symbol_words"].as_u64().unwrap(),
            "non-symbol words of {text:?}"
        );
        match v["mean_word_length"].as_f64() {
            Some(m) => close(s.mean_word_length, m, "mean_word_length", text),
            None => assert!(s.mean_word_length.is_nan()),
        }
        for (name, got) in [
            ("hash_ratio", s.hash_ratio),
            ("ellipsis_ratio", s.ellipsis_ratio),
            ("bullet_lines", s.bullet_lines),
            ("ellipsis_lines", s.ellipsis_lines),
            ("alpha_words", s.alpha_words),
            ("dup_para_frac", s.dup_para_frac),
            ("dup_para_char_frac", s.dup_para_char_frac),
            ("dup_line_frac", s.dup_line_frac),
            ("dup_line_char_frac", s.dup_line_char_frac),
        ] {
            close(got, v[name].as_f64().unwrap(), name, text);
        }
        for (key, got) in [("top_ngram", &s.top_ngram), ("dup_ngram", &s.dup_ngram)] {
            let want = v[key].as_array().unwrap();
            assert_eq!(got.len(), want.len());
            for ((n, g), w) in got.iter().zip(want) {
                assert_eq!(*n as u64, w[0].as_u64().unwrap());
                close(*g, w[1].as_f64().unwrap(), &format!("{key} n={n}"), text);
            }
        }
        // The first rule tilpass fails is the reason datatrove gives (rules in the same order).
        for (filter, key) in [
            (&q_default, "quality_default"),
            (&q_relaxed, "quality_relaxed"),
            (&rep, "repetition"),
        ] {
            let got = filter.check_text(text).first().map(|f| f.rule.clone());
            let want = match &doc[key] {
                Value::Null => None,
                // datatrove's repetition filter rejects an empty text before measuring.
                Value::String(r) if r == "empty" => {
                    assert!(text.is_empty());
                    continue;
                }
                Value::String(r) => Some(rule_of(r)),
                other => panic!("unexpected decision {other}"),
            };
            assert_eq!(got, want, "{key} of {text:?}");
            *decided
                .entry(want.unwrap_or_else(|| "kept".into()))
                .or_default() += 1;
        }
    }
    // The fixture reaches most rules, so each comparison above means something.
    for rule in [
        "kept",
        "min_words",
        "min_mean_word_length",
        "hash_ratio",
        "ellipsis_ratio",
        "bullet_lines",
        "alpha_words",
        "dup_para_frac",
        "dup_line_frac",
        "dup_line_char_frac",
        "top_2_gram",
        "top_3_gram",
        "top_4_gram",
        "dup_6_gram",
    ] {
        assert!(
            decided.contains_key(rule),
            "no document decided by {rule}: {decided:?}"
        );
    }
}

fn ud_lines(file: &str) -> Option<Vec<String>> {
    let path = shared_data(&format!("ud-norwegian/{file}"))?;
    Some(
        std::fs::read_to_string(path)
            .ok()?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect(),
    )
}

#[test]
fn ngram_perplexity_ranks_held_out_norwegian_below_scrambled_text() {
    // Needs ../shared/data/ud-norwegian (CC BY-SA, read at test time, not vendored).
    let Some(nob) = ud_lines("nob-dev.txt") else {
        return;
    };
    let (train, test): (Vec<_>, Vec<_>) = nob.iter().enumerate().partition(|(i, _)| i % 10 != 0);
    let lm = NgramLm::train(
        train.iter().map(|(_, s)| s.as_str()),
        NgramLmConfig::default(),
    )
    .unwrap();
    // A proper distribution: over every character it can predict, plus one unseen character
    // (the unknown slot), the probabilities after any context sum to 1.
    let alphabet = lm.alphabet();
    for ctx in ["", "Det e", "xq", "på en m"] {
        let ctx: Vec<char> = ctx.chars().collect();
        let total: f64 =
            alphabet.iter().map(|&c| lm.prob(&ctx, c)).sum::<f64>() + lm.prob(&ctx, '\u{10FFFF}');
        assert!((total - 1.0).abs() < 1e-9, "sums to {total}");
    }
    let mut wins = 0;
    for (_, s) in &test {
        let mut scrambled: Vec<char> = s.chars().collect();
        scrambled.reverse();
        let scrambled: String = scrambled.into_iter().collect();
        wins += usize::from(lm.perplexity(s) < lm.perplexity(&scrambled));
    }
    assert!(wins * 100 >= test.len() * 95, "{wins} of {}", test.len());
}
