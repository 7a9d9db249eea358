//! The embedded topic-classification set `norsk-topic` (`data/norsk-topic.jsonl`): sizes,
//! balance per topic, split and written standard, pair hygiene (a sentence's Bokmål and Nynorsk
//! versions share topic and split, and differ), agreement of the built-in language identifier
//! with the written-standard labels, and that the committed file is the one
//! `data/build_norsk_topic.py` writes (CI has no Python: the sums recorded in `data/README.md`
//! are checked).

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use tilpass_data::LangId;
use tilpass_data::embedded::{
    NORSK_TOPIC_JSONL, TOPIC_LABELS, TOPIC_SPLITS, TopicExample, norsk_topic,
};

fn all() -> Vec<TopicExample> {
    norsk_topic(None).expect("norsk-topic parses")
}

#[test]
fn sizes_topics_standards_and_splits_are_balanced() {
    let rows = all();
    assert!(rows.len() >= 1000, "{} items", rows.len());
    let mut by: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for r in &rows {
        assert!(
            TOPIC_LABELS.contains(&r.label.as_str()),
            "{}: {}",
            r.id,
            r.label
        );
        assert!(
            TOPIC_SPLITS.contains(&r.split.as_str()),
            "{}: {}",
            r.id,
            r.split
        );
        assert!(
            ["nb", "nn"].contains(&r.lang.as_str()),
            "{}: {}",
            r.id,
            r.lang
        );
        *by.entry((r.label.as_str(), r.split.as_str(), r.lang.as_str()))
            .or_insert(0) += 1;
    }
    // Every topic has the same number of items in every split and written standard.
    let counts: HashSet<_> = by.values().collect();
    assert_eq!(by.len(), TOPIC_LABELS.len() * 2 * 2, "{by:?}");
    for label in TOPIC_LABELS {
        assert_eq!(
            by[&(label, "test", "nb")] * 4,
            by[&(label, "train", "nb")],
            "{label}: a fifth of the pairs is held out"
        );
    }
    assert_eq!(counts.len(), 2, "{by:?}");
    assert_eq!(norsk_topic(Some("test")).unwrap().len(), 204);
    assert_eq!(norsk_topic(Some("train")).unwrap().len(), 816);
    let e = norsk_topic(Some("eval")).unwrap_err().to_string();
    assert!(e.contains("eval") && e.contains("test"), "{e}");
}

#[test]
fn pairs_share_topic_and_split_and_every_text_is_unique() {
    let rows = all();
    let mut pairs: HashMap<usize, Vec<&TopicExample>> = HashMap::new();
    let mut texts = HashSet::new();
    let mut ids = HashSet::new();
    for r in &rows {
        pairs.entry(r.pair).or_default().push(r);
        assert!(texts.insert(r.text.as_str()), "duplicate text: {}", r.text);
        assert!(ids.insert(r.id.as_str()), "duplicate id: {}", r.id);
        assert!(!r.text.trim().is_empty() && r.text.len() < 200, "{}", r.id);
    }
    assert_eq!(pairs.len() * 2, rows.len());
    for (p, v) in &pairs {
        assert_eq!(v.len(), 2, "pair {p}");
        let (a, b) = (v[0], v[1]);
        assert_eq!(a.label, b.label, "pair {p}");
        assert_eq!(a.split, b.split, "pair {p}: both versions in one split");
        assert_ne!(
            a.lang, b.lang,
            "pair {p}: one Bokmål and one Nynorsk version"
        );
        assert_ne!(a.text, b.text, "pair {p}");
    }
}

fn probability(id: &LangId, text: &str, lang: &str) -> f64 {
    id.predict(text)
        .probabilities
        .iter()
        .find(|(l, _)| l == lang)
        .map_or(0.0, |(_, p)| *p)
}

#[test]
fn the_builtin_langid_agrees_with_the_written_standards() {
    let id = LangId::builtin();
    let rows = all();
    // Alone, a short sentence is hard for the small identifier (trained on `norsk-chat` only,
    // not on this set): it puts 730 / 1,020 items (71.6%) in their labelled standard.
    let hits = rows
        .iter()
        .filter(|r| id.predict(&r.text).lang == r.lang)
        .count();
    println!("items in their labelled standard: {hits} / {}", rows.len());
    assert!(hits * 100 >= rows.len() * 65, "{hits} / {}", rows.len());
    // Side by side it tells the versions apart: the Nynorsk version of a pair looks more like
    // Nynorsk than its Bokmål version does in 487 / 510 pairs (95.5%).
    let mut by_pair: HashMap<usize, [Option<&str>; 2]> = HashMap::new();
    for r in &rows {
        by_pair.entry(r.pair).or_default()[usize::from(r.lang == "nn")] = Some(&r.text);
    }
    let ordered = by_pair
        .values()
        .filter(|[nb, nn]| probability(id, nn.unwrap(), "nn") > probability(id, nb.unwrap(), "nn"))
        .count();
    println!(
        "pairs whose Nynorsk version is more Nynorsk: {ordered} / {}",
        by_pair.len()
    );
    assert!(
        ordered * 100 >= by_pair.len() * 93,
        "{ordered} / {}",
        by_pair.len()
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn recorded(name: &str) -> Option<String> {
    include_str!("../../../data/README.md")
        .lines()
        .find_map(|l| {
            let f: Vec<_> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == "sha256" && f[1] == name).then(|| f[2].to_string())
        })
}

#[test]
fn the_committed_file_is_what_the_generator_wrote() {
    assert_eq!(
        recorded("norsk-topic.jsonl"),
        Some(sha256_hex(NORSK_TOPIC_JSONL.as_bytes())),
        "data/norsk-topic.jsonl differs from the file build_norsk_topic.py wrote \
         (regenerate it with `python3 data/build_norsk_topic.py` and update data/README.md)"
    );
    assert_eq!(
        recorded("build_norsk_topic.py"),
        Some(sha256_hex(include_bytes!(
            "../../../data/build_norsk_topic.py"
        ))),
        "data/build_norsk_topic.py changed since data/norsk-topic.jsonl was generated \
         (regenerate it and update both sums in data/README.md)"
    );
}
