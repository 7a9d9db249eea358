//! End-to-end tests of `tilpass rag index|delete|search`: JSON on stdout, exit 2 with a
//! one-line cause on bad input, deletes gone from the bytes on disk, a killed indexing run
//! leaving the last commit readable.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

mod common;
use common::{bad_input, ok_json, tilpass};

fn jsonl(dir: &Path, name: &str, rows: &[Value]) -> String {
    let p = dir.join(name);
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

fn search(kb: &str, q: &str) -> Vec<Value> {
    let v = ok_json(&tilpass(&[
        "rag", "search", "--kb", kb, "--query", q, "--k", "5",
    ]));
    v["hits"].as_array().unwrap().clone()
}

fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let p = e.unwrap().path();
        if p.is_dir() {
            any_file_contains(&p, needle)
        } else {
            let b = std::fs::read(&p).unwrap();
            b.windows(needle.len()).any(|w| w == needle)
        }
    })
}

#[test]
fn index_search_update_delete() {
    let t = tempfile::tempdir().unwrap();
    let kb_dir = t.path().join("kb");
    let kb = kb_dir.to_str().unwrap();
    let docs = jsonl(
        t.path(),
        "docs.jsonl",
        &[
            json!({"id": "kommune", "title": "Kommunen", "text": "Kommunen har ansvar for barnehagene. Skolen er også kommunens ansvar.", "meta": {"kilde": "test"}}),
            json!({"id": "fylke", "text": "Fylket driver de videregående skolene og fylkesveiene."}),
            json!({"id": "hemmelig", "text": "Dette dokumentet nevner xqvzpersondata og skal slettes."}),
        ],
    );
    let v = ok_json(&tilpass(&[
        "rag",
        "index",
        "--kb",
        kb,
        "--docs",
        &docs,
        "--chunk-tokens",
        "6",
    ]));
    assert_eq!(v["documents"], 3);
    // Chunks of at most 6 tokens: the first document has two sentences of 5 tokens each.
    assert!(v["passages"].as_u64().unwrap() >= 4, "{v}");

    let hits = search(kb, "Hvem har ansvar for barnehagene?");
    assert_eq!(hits[0]["id"], "kommune");
    assert_eq!(hits[0]["title"], "Kommunen");
    assert_eq!(hits[0]["passage"], "Kommunen har ansvar for barnehagene.");
    assert_eq!(
        (hits[0]["start"].as_u64(), hits[0]["end"].as_u64()),
        (Some(0), Some(36))
    );
    assert!(hits[0]["score"].as_f64().unwrap() > 0.0);
    let second = search(kb, "kommunens ansvar skolen");
    assert_eq!(second[0]["passage"], "Skolen er også kommunens ansvar.");
    assert_eq!(second[0]["start"], 37);

    // Re-indexing an id replaces it (the knowledge base keeps its chunking).
    let upd = jsonl(
        t.path(),
        "upd.jsonl",
        &[json!({"id": "fylke", "text": "Fylket har ansvar for tannhelsen."})],
    );
    let v = ok_json(&tilpass(&["rag", "index", "--kb", kb, "--docs", &upd]));
    assert_eq!(v["replaced"], 1);
    assert!(search(kb, "fylkesveiene").is_empty());
    assert_eq!(search(kb, "tannhelsen")[0]["id"], "fylke");
    let err = bad_input(&tilpass(&[
        "rag",
        "index",
        "--kb",
        kb,
        "--docs",
        &upd,
        "--chunk-tokens",
        "50",
    ]));
    assert!(err.contains("chunk"), "{err}");

    // Delete: gone from search and from every file under the directory.
    assert!(any_file_contains(&kb_dir, b"xqvzpersondata"));
    let v = ok_json(&tilpass(&["rag", "delete", "--kb", kb, "--id", "hemmelig"]));
    assert_eq!(v["deleted"], json!(["hemmelig"]));
    assert!(search(kb, "xqvzpersondata").is_empty());
    assert!(!any_file_contains(&kb_dir, b"xqvzpersondata"));

    // Bad input: one line, exit 2.
    let err = bad_input(&tilpass(&[
        "rag", "delete", "--kb", kb, "--id", "kommune", "--id", "nope",
    ]));
    assert!(
        err.contains("unknown document id") && err.contains("nope"),
        "{err}"
    );
    assert_eq!(
        search(kb, "barnehagene").len(),
        1,
        "nothing deleted on a bad id"
    );
    let err = bad_input(&tilpass(&["rag", "search", "--kb", kb, "--query", "  "]));
    assert!(err.contains("empty query"), "{err}");
    let foreign = t.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("x.txt"), "x").unwrap();
    let err = bad_input(&tilpass(&[
        "rag",
        "search",
        "--kb",
        foreign.to_str().unwrap(),
        "--query",
        "x",
    ]));
    assert!(err.contains("not a tilpass knowledge base"), "{err}");
    let bad = t.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"id\": \"a\", \"text\": \"ok\"}\n{\"id\": \"b\", \"txt\": 1}\n",
    )
    .unwrap();
    let err = bad_input(&tilpass(&[
        "rag",
        "index",
        "--kb",
        kb,
        "--docs",
        bad.to_str().unwrap(),
    ]));
    assert!(err.contains("bad.jsonl:2"), "{err}");
    std::fs::write(
        kb_dir.join("tilpass-kb.json"),
        "{\"format\": \"tilpass-kb\"",
    )
    .unwrap();
    let err = bad_input(&tilpass(&["rag", "search", "--kb", kb, "--query", "x"]));
    assert!(err.contains("corrupt knowledge base"), "{err}");
}

#[test]
fn killed_indexing_leaves_the_last_commit() {
    let t = tempfile::tempdir().unwrap();
    let kb_dir = t.path().join("kb");
    let kb = kb_dir.to_str().unwrap();
    let first = jsonl(
        t.path(),
        "first.jsonl",
        &[json!({"id": "a", "text": "Kommunen har ansvar for barnehagene."})],
    );
    ok_json(&tilpass(&["rag", "index", "--kb", kb, "--docs", &first]));
    let many: Vec<Value> = (0..200_000)
        .map(|i| json!({"id": format!("d{i}"), "text": format!("Dokument nummer {i} handler om fylket og kommunen {i}.")}))
        .collect();
    let big = jsonl(t.path(), "big.jsonl", &many);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tilpass"))
        .args(["rag", "index", "--kb", kb, "--docs", &big])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it once it is indexing (before its commit).
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first_line = lines.next().unwrap().unwrap();
    assert!(first_line.starts_with("indexed"), "{first_line}");
    child.kill().unwrap();
    child.wait().unwrap();
    let hits = search(kb, "barnehagene");
    assert_eq!(hits.len(), 1);
    assert!(
        search(kb, "fylket").is_empty(),
        "nothing of the killed run is visible"
    );
    // The writer lock died with the process: a new run indexes.
    let more = jsonl(
        t.path(),
        "more.jsonl",
        &[json!({"id": "b", "text": "Fylket driver de videregående skolene."})],
    );
    let v = ok_json(&tilpass(&["rag", "index", "--kb", kb, "--docs", &more]));
    assert_eq!(v["passages"], 2);
}

#[test]
fn stemmer_bm25_and_tokenizer_chunking_flags() {
    let t = tempfile::tempdir().unwrap();
    let kb = t.path().join("kb");
    let kb = kb.to_str().unwrap();
    let sentence = "Kommunen brøyter vegane når snøen kjem. ";
    let docs = jsonl(
        t.path(),
        "docs.jsonl",
        &[
            json!({"id": "a", "text": sentence.repeat(12), "title": "Brøyting"}),
            json!({"id": "b", "text": "Tryggleiken på skulevegen er viktig for kommunen."}),
        ],
    );
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/train/orpo/tokenizer/tokenizer.json");
    let tokenizer = tokenizer.to_str().unwrap();
    // Bad values are refused before anything is written.
    for (flag, value) in [
        ("--k1", "-1"),
        ("--b", "1.5"),
        ("--k1", "NaN"),
        ("--stemmer", "porter"),
    ] {
        let err = bad_input(&tilpass(&[
            "rag", "index", "--kb", kb, "--docs", &docs, flag, value,
        ]));
        assert!(
            err.contains(flag.trim_start_matches('-')) || err.contains("stemmer"),
            "{err}"
        );
        assert!(!Path::new(kb).exists(), "{flag} {value}: nothing written");
    }
    let v = ok_json(&tilpass(&[
        "rag",
        "index",
        "--kb",
        kb,
        "--docs",
        &docs,
        "--chunk-tokens",
        "20",
        "--chunk-overlap",
        "4",
        "--chunk-tokenizer",
        tokenizer,
        "--stemmer",
        "light-nn",
        "--k1",
        "0.9",
        "--b",
        "0.4",
    ]));
    assert!(v["passages"].as_u64().unwrap() > 2, "{v}");
    let m: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(kb).join("tilpass-kb.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["analysis"]["stemmer"], "light-nn");
    assert_eq!(m["bm25"], json!({"k1": 0.9, "b": 0.4}));
    assert_eq!(m["chunker"]["unit"], "tokenizer");
    assert!(Path::new(kb).join("chunk-tokenizer.json").is_file());
    // The Nynorsk light stemmer joins "tryggleik" and "tryggleiken".
    let hits = search(kb, "tryggleik");
    assert_eq!(hits[0]["id"], "b");
    // Per-search parameters, and their ranges.
    let v = ok_json(&tilpass(&[
        "rag", "search", "--kb", kb, "--query", "snøen", "--k1", "2", "--b", "1",
    ]));
    assert!(!v["hits"].as_array().unwrap().is_empty());
    bad_input(&tilpass(&[
        "rag", "search", "--kb", kb, "--query", "snøen", "--b", "-0.5",
    ]));
    // Creation settings are fixed.
    let err = bad_input(&tilpass(&[
        "rag", "index", "--kb", kb, "--docs", &docs, "--k1", "1.5",
    ]));
    assert!(err.contains("k1"), "{err}");
}

/// `rag search --rerank`: the retriever's top hits re-ordered by the cross-encoder fixture,
/// scores equal to sentence-transformers' for the pairs it scored; models that are no
/// cross-encoders exit 2 with one line.
#[test]
fn search_rerank_with_a_cross_encoder() {
    let t = tempfile::tempdir().unwrap();
    let kb = t.path().join("kb");
    let kb = kb.to_str().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let corpus = fixtures.join("rag/corpus.jsonl");
    ok_json(&tilpass(&[
        "rag",
        "index",
        "--kb",
        kb,
        "--docs",
        corpus.to_str().unwrap(),
    ]));
    let ce = fixtures.join("rag/cross_encoder/labels1");
    let ce = ce.to_str().unwrap();
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("rag/cross_encoder/expected.json")).unwrap(),
    )
    .unwrap();
    // BM25 finds five passages for this query, two of which the reference scored.
    let q = "Hvor mye får jeg i dagpenger når jeg mister jobben?";
    let bm25 = search(kb, q);
    assert_eq!(bm25.len(), 5);
    let v = ok_json(&tilpass(&[
        "rag",
        "search",
        "--kb",
        kb,
        "--query",
        q,
        "--k",
        "4",
        "--rerank",
        ce,
        "--rerank-top",
        "5",
    ]));
    let hits = v["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 4);
    // The four best of BM25's five by the cross-encoder's score.
    let score = |h: &Value| h["rerank_score"].as_f64().unwrap();
    assert!(hits.windows(2).all(|w| score(&w[0]) >= score(&w[1])), "{v}");
    for h in hits {
        let r = h["retriever_rank"].as_u64().unwrap() as usize;
        assert!((1..=5).contains(&r));
        assert_eq!(h["id"], bm25[r - 1]["id"]);
        assert_eq!(h["retriever_score"], bm25[r - 1]["score"]);
        assert_eq!(h["score"], h["rerank_score"]);
    }
    let ranks: std::collections::BTreeSet<u64> = hits
        .iter()
        .map(|h| h["retriever_rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks.len(), 4);
    // Pairs the reference scored (a corpus row is one passage) have its score.
    let mut checked = 0;
    for (i, p) in fx["pairs"].as_array().unwrap().iter().enumerate() {
        if p["query"] != q {
            continue;
        }
        if let Some(h) = hits.iter().find(|h| h["id"] == p["passage_id"]) {
            let want = fx["models"]["labels1"]["scores"][i].as_f64().unwrap();
            assert!(
                (score(h) - want).abs() <= 1e-5,
                "{}: {}",
                p["passage_id"],
                score(h)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "{v}");
    // Fewer hits re-ranked than asked for: the rest follow in BM25's order.
    let v = ok_json(&tilpass(&[
        "rag",
        "search",
        "--kb",
        kb,
        "--query",
        q,
        "--k",
        "5",
        "--rerank",
        ce,
        "--rerank-top",
        "2",
    ]));
    let hits = v["hits"].as_array().unwrap();
    for (i, h) in hits.iter().enumerate().skip(2) {
        assert_eq!(h["id"], bm25[i]["id"]);
        assert!(h["rerank_score"].is_null());
    }

    let mlm = fixtures.join("encoders/bert_mlm");
    let err = bad_input(&tilpass(&[
        "rag",
        "search",
        "--kb",
        kb,
        "--query",
        q,
        "--rerank",
        mlm.to_str().unwrap(),
    ]));
    assert!(err.contains("not a sequence classifier"), "{err}");
    let three = fixtures.join("encoders/bert_cls");
    let err = bad_input(&tilpass(&[
        "rag",
        "search",
        "--kb",
        kb,
        "--query",
        q,
        "--rerank",
        three.to_str().unwrap(),
    ]));
    assert!(err.contains("wrong labels: 3 classes"), "{err}");
    let err = bad_input(&tilpass(&[
        "rag",
        "search",
        "--kb",
        kb,
        "--query",
        q,
        "--rerank",
        ce,
        "--rerank-top",
        "0",
    ]));
    assert!(err.contains("--rerank-top"), "{err}");
}
