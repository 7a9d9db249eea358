//! The embedded retrieval evaluation set `norsk-rag` (`data/rag/`): sizes against the minimums
//! of the set's brief, unique ids, judgements that point at existing passages and queries with
//! grades 1 or 2 and at least one passage that answers each query, well-formed passages,
//! written-standard labels checked by the built-in language identifier, and that the committed
//! files are the ones `data/build_norsk_rag.py` writes from `data/rag/source/` (CI has no
//! Python, so the sha256 sums recorded in `data/README.md` are checked).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tilpass_data::LangId;
use tilpass_data::embedded::{NORSK_RAG_PASSAGES_JSONL, NORSK_RAG_QRELS, NORSK_RAG_QUERIES_JSONL};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    doc: String,
    lang: String,
    topic: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Passage {
    id: String,
    text: String,
    title: String,
    meta: Meta,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    id: String,
    text: String,
    lang: String,
}

fn passages() -> Vec<Passage> {
    NORSK_RAG_PASSAGES_JSONL
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("passages:{}: {e}", i + 1)))
        .collect()
}

fn queries() -> Vec<Query> {
    NORSK_RAG_QUERIES_JSONL
        .lines()
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("queries:{}: {e}", i + 1)))
        .collect()
}

/// (qid, passage id, grade) per qrels line, checked for the TREC shape.
fn qrels() -> Vec<(String, String, i64)> {
    NORSK_RAG_QRELS
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 4, "qrels:{}: {l:?}", i + 1);
            assert_eq!(f[1], "0", "qrels:{}: iteration field", i + 1);
            (f[0].to_string(), f[2].to_string(), f[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn counts_ids_and_judgements_are_consistent_and_meet_the_minimums() {
    let ps = passages();
    let qs = queries();
    let js = qrels();
    // The brief of the set: at least 500 passages, 150 queries of which 50 in Nynorsk.
    assert!(ps.len() >= 500, "{} passages", ps.len());
    assert!(qs.len() >= 150, "{} queries", qs.len());
    let nn_queries = qs.iter().filter(|q| q.lang == "nn").count();
    assert!(nn_queries >= 50, "{nn_queries} Nynorsk queries");
    let nn_passages = ps.iter().filter(|p| p.meta.lang == "nn").count();
    assert!(
        nn_passages * 4 >= ps.len(),
        "{nn_passages} Nynorsk passages of {}",
        ps.len()
    );

    let pids: BTreeSet<&str> = ps.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(pids.len(), ps.len(), "passage ids are unique");
    let qids: BTreeSet<&str> = qs.iter().map(|q| q.id.as_str()).collect();
    assert_eq!(qids.len(), qs.len(), "query ids are unique");
    let texts: BTreeSet<&str> = qs.iter().map(|q| q.text.as_str()).collect();
    assert_eq!(texts.len(), qs.len(), "query texts are unique");

    // Passages: ids `DOC-N` numbered from 1 within their document, one title and one written
    // standard per document, 40..=170 words.
    let mut docs: BTreeMap<&str, Vec<&Passage>> = BTreeMap::new();
    for p in &ps {
        docs.entry(p.meta.doc.as_str()).or_default().push(p);
        let words = p.text.split_whitespace().count();
        assert!((40..=170).contains(&words), "{}: {words} words", p.id);
        assert!(["nb", "nn"].contains(&p.meta.lang.as_str()), "{}", p.id);
        assert!(
            !p.title.trim().is_empty() && !p.meta.topic.is_empty(),
            "{}",
            p.id
        );
        assert_eq!(p.text.trim(), p.text, "{}: untrimmed text", p.id);
    }
    for (d, rows) in &docs {
        for (i, p) in rows.iter().enumerate() {
            assert_eq!(p.id, format!("{d}-{}", i + 1));
            assert_eq!(p.title, rows[0].title, "{}", p.id);
            assert_eq!(p.meta.lang, rows[0].meta.lang, "{}", p.id);
        }
    }
    assert!(docs.len() >= 100, "{} documents", docs.len());

    // Judgements: known ids, grades 1 or 2, each pair once, every query judged with a passage
    // that answers it, and some queries with several relevant passages.
    let mut per: HashMap<&str, Vec<(&str, i64)>> = HashMap::new();
    let mut pairs = BTreeSet::new();
    for (q, p, g) in &js {
        assert!(qids.contains(q.as_str()), "qrels: unknown query {q}");
        assert!(pids.contains(p.as_str()), "qrels: unknown passage {p}");
        assert!([1, 2].contains(g), "qrels: {q} {p} grade {g}");
        assert!(pairs.insert((q, p)), "qrels: {q} {p} judged twice");
        per.entry(q).or_default().push((p, *g));
    }
    for q in &qs {
        let j = per
            .get(q.id.as_str())
            .unwrap_or_else(|| panic!("{} unjudged", q.id));
        assert!(
            j.iter().any(|(_, g)| *g == 2),
            "{}: no passage graded 2",
            q.id
        );
    }
    let several = per.values().filter(|j| j.len() >= 2).count();
    assert!(
        several >= 50,
        "{several} queries with several judged passages"
    );
    assert!(js.iter().any(|(_, _, g)| *g == 1));
}

/// Share of `texts` (with their labels) that `LangId::builtin()` puts in the labelled standard.
fn agreement<'a>(texts: impl Iterator<Item = (&'a str, &'a str)>) -> (usize, usize) {
    let id = LangId::builtin();
    let (mut hit, mut n) = (0, 0);
    for (text, lang) in texts {
        n += 1;
        let got = id.predict(text).lang;
        if got == lang {
            hit += 1;
        } else if text.len() > 200 {
            eprintln!(
                "labelled {lang}, identified {got}: {}...",
                text.chars().take(80).collect::<String>()
            );
        }
    }
    (hit, n)
}

#[test]
fn the_builtin_langid_agrees_with_the_written_standard_labels() {
    // The identifier is trained on norsk-chat, not on this set. Passages are long enough for
    // a clear call; queries are a few words, so more of them are close calls.
    let ps = passages();
    let (hit, n) = agreement(ps.iter().map(|p| (p.text.as_str(), p.meta.lang.as_str())));
    eprintln!("passages: {hit} / {n} in the labelled standard");
    assert!(hit * 100 >= n * 95, "passages: {hit} / {n}");
    let qs = queries();
    let (hit, n) = agreement(qs.iter().map(|q| (q.text.as_str(), q.lang.as_str())));
    eprintln!("queries: {hit} / {n} in the labelled standard");
    assert!(hit * 100 >= n * 75, "queries: {hit} / {n}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn committed_files_match_the_sums_recorded_in_the_readme() {
    let readme = include_str!("../../../data/README.md");
    let recorded = |name: &str| -> String {
        readme
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 3 && f[0] == "sha256" && f[1] == name).then(|| f[2].to_string())
            })
            .unwrap_or_else(|| panic!("data/README.md records no sha256 for {name}"))
    };
    for (name, bytes) in [
        ("rag/passages.jsonl", NORSK_RAG_PASSAGES_JSONL.as_bytes()),
        ("rag/queries.jsonl", NORSK_RAG_QUERIES_JSONL.as_bytes()),
        ("rag/qrels.txt", NORSK_RAG_QRELS.as_bytes()),
    ] {
        assert_eq!(
            sha256_hex(bytes),
            recorded(name),
            "{name} differs from the file data/build_norsk_rag.py wrote when the sums were \
             recorded; rerun the script and update data/README.md"
        );
    }
}
