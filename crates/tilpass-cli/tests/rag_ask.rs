//! End-to-end test of `tilpass rag ask` on a tiny decoder: retrieval, the prompt within the
//! model's context, generation, and the answer's `[n]` markers mapped to the passages given
//! (valid ones to document id, title and span; the others reported as invalid).

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{bad_input, ok_json, tilpass};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A copy of the tiny GPT-2 fixture with a word-level tokenizer whose token `i` reads
/// `[i % 6]x{i}`: whatever the model generates is full of citation markers `[0]`..`[5]`, some
/// naming passages of the prompt and some not.
fn marker_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("models/gpt2");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let vocab: serde_json::Map<String, Value> = (0..256)
        .map(|i| (format!("[{}]x{i}", i % 6), Value::from(i)))
        .collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[0]x0"}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

/// The numbers of the `[d]` markers of `text`, distinct, in order of first appearance.
fn marker_numbers(text: &str) -> Vec<u64> {
    let b = text.as_bytes();
    let mut out: Vec<u64> = Vec::new();
    for i in 0..b.len().saturating_sub(2) {
        if b[i] == b'[' && b[i + 1].is_ascii_digit() && b[i + 2] == b']' {
            let n = u64::from(b[i + 1] - b'0');
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

#[test]
fn ask_cites_the_passages_it_was_given() {
    let work = tempfile::tempdir().unwrap();
    let kb = work.path().join("kb");
    let kb = kb.to_str().unwrap();
    let corpus = fixtures().join("rag/corpus.jsonl");
    ok_json(&tilpass(&[
        "rag",
        "index",
        "--kb",
        kb,
        "--docs",
        corpus.to_str().unwrap(),
    ]));
    let model = marker_model();
    let m = model.path().to_str().unwrap();
    let q = "Hvem har ansvar for barnehagene?";
    let out = tilpass(&[
        "rag",
        "ask",
        "--kb",
        kb,
        "--model",
        m,
        "--query",
        q,
        "--k",
        "3",
        "--max-new-tokens",
        "24",
        "--temperature",
        "1.0",
        "--seed",
        "3",
        "--stream",
    ]);
    let v = ok_json(&out);
    let answer = v["answer"].as_str().unwrap();
    assert!(!answer.is_empty());
    // --stream: the text went to stderr as it was generated; stdout holds only the JSON.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(answer),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The passages given are the best BM25 hits, in order (the lowest-ranked dropped when the
    // 128-token context could not hold them with room for the answer).
    let hits = ok_json(&tilpass(&[
        "rag", "search", "--kb", kb, "--query", q, "--k", "3",
    ]))["hits"]
        .as_array()
        .unwrap()
        .clone();
    let passages = v["passages"].as_array().unwrap();
    assert!(!passages.is_empty() && passages.len() <= 3);
    assert!(v["prompt_tokens"].as_u64().unwrap() + 24 <= 128, "{v}");
    for (i, p) in passages.iter().enumerate() {
        assert_eq!(p["n"], i + 1);
        for key in ["id", "title", "start"] {
            assert_eq!(p[key], hits[i][key], "{key} of passage {}", i + 1);
        }
        if p["truncated"] == false {
            assert_eq!(p["end"], hits[i]["end"]);
        }
    }
    // Every marker of the answer is a citation (naming a passage given) or an invalid one.
    let numbers = marker_numbers(answer);
    let given = passages.len() as u64;
    let valid: Vec<u64> = numbers
        .iter()
        .copied()
        .filter(|n| (1..=given).contains(n))
        .collect();
    let invalid: Vec<u64> = numbers
        .iter()
        .copied()
        .filter(|n| !(1..=given).contains(n))
        .collect();
    assert!(
        !valid.is_empty() && !invalid.is_empty(),
        "the seed should give both kinds: {answer}"
    );
    let citations = v["citations"].as_array().unwrap();
    let cited: Vec<u64> = citations.iter().map(|c| c["n"].as_u64().unwrap()).collect();
    assert_eq!(cited, valid, "{v}");
    for c in citations {
        let p = &passages[c["n"].as_u64().unwrap() as usize - 1];
        for key in ["id", "title", "start", "end"] {
            assert_eq!(c[key], p[key], "{key} of citation {c}");
        }
    }
    let bad: Vec<u64> = v["invalid_citations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["n"].as_u64().unwrap())
        .collect();
    assert_eq!(bad, invalid, "{v}");

    // Nynorsk instructions, and the same run again gives the same answer (seeded sampling).
    let again = ok_json(&tilpass(&[
        "rag",
        "ask",
        "--kb",
        kb,
        "--model",
        m,
        "--query",
        q,
        "--k",
        "3",
        "--max-new-tokens",
        "24",
        "--temperature",
        "1.0",
        "--seed",
        "3",
    ]));
    assert_eq!(again["answer"], v["answer"]);
    let nn = ok_json(&tilpass(&[
        "rag",
        "ask",
        "--kb",
        kb,
        "--model",
        m,
        "--query",
        q,
        "--lang",
        "nn",
        "--max-new-tokens",
        "4",
    ]));
    assert!(nn["answer"].is_string());

    // Bad input: one line, exit 2, before the model is read.
    let err = bad_input(&tilpass(&[
        "rag", "ask", "--kb", kb, "--model", m, "--query", "  ",
    ]));
    assert!(err.contains("empty query"), "{err}");
    let missing = work.path().join("no-kb");
    let err = bad_input(&tilpass(&[
        "rag",
        "ask",
        "--kb",
        missing.to_str().unwrap(),
        "--model",
        m,
        "--query",
        q,
    ]));
    assert!(err.contains("no-kb"), "{err}");
    let not_a_model = work.path().join("empty-model");
    std::fs::create_dir(&not_a_model).unwrap();
    let err = bad_input(&tilpass(&[
        "rag",
        "ask",
        "--kb",
        kb,
        "--model",
        not_a_model.to_str().unwrap(),
        "--query",
        q,
    ]));
    assert!(err.contains("empty-model"), "{err}");
    // A model directory without a tokenizer cannot count or decode the prompt.
    let bare = fixtures().join("models/gpt2");
    let err = bad_input(&tilpass(&[
        "rag",
        "ask",
        "--kb",
        kb,
        "--model",
        bare.to_str().unwrap(),
        "--query",
        q,
    ]));
    assert!(err.contains("tokenizer"), "{err}");
    let err = bad_input(&tilpass(&[
        "rag", "ask", "--kb", kb, "--model", m, "--query", q, "--lang", "se",
    ]));
    assert!(err.contains("--lang"), "{err}");
}

/// `rag ask --rerank`: the passages given are the cross-encoder's best of the BM25 top hits,
/// as `rag search --rerank` lists them.
#[test]
fn ask_with_rerank_uses_the_reranked_passages() {
    let work = tempfile::tempdir().unwrap();
    let kb = work.path().join("kb");
    let kb = kb.to_str().unwrap();
    let corpus = fixtures().join("rag/corpus.jsonl");
    ok_json(&tilpass(&[
        "rag",
        "index",
        "--kb",
        kb,
        "--docs",
        corpus.to_str().unwrap(),
    ]));
    let model = marker_model();
    let m = model.path().to_str().unwrap();
    let ce = fixtures().join("rag/cross_encoder/labels1");
    let ce = ce.to_str().unwrap();
    let q = "Hvor mye får jeg i dagpenger når jeg mister jobben?";
    let rr = ["--rerank", ce, "--rerank-top", "5"];
    let mut search = vec!["rag", "search", "--kb", kb, "--query", q, "--k", "2"];
    search.extend(rr);
    let hits = ok_json(&tilpass(&search))["hits"]
        .as_array()
        .unwrap()
        .clone();
    let mut ask = vec![
        "rag",
        "ask",
        "--kb",
        kb,
        "--model",
        m,
        "--query",
        q,
        "--k",
        "2",
        "--max-new-tokens",
        "4",
    ];
    let mut bad = ask.clone();
    ask.extend(rr);
    let v = ok_json(&tilpass(&ask));
    let passages = v["passages"].as_array().unwrap();
    assert_eq!(passages.len(), 2, "{v}");
    for (p, h) in passages.iter().zip(&hits) {
        assert_eq!(p["id"], h["id"]);
    }
    let mlm = fixtures().join("encoders/bert_mlm");
    bad.extend(["--rerank", mlm.to_str().unwrap()]);
    let err = bad_input(&tilpass(&bad));
    assert!(err.contains("not a sequence classifier"), "{err}");
}
