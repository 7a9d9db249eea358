//! Dense and hybrid search of tilpass-rag.
//!
//! - With MiniLM (artefact): exact dense top-10 on the committed Norwegian corpus equals
//!   sentence-transformers' (tests/fixtures/rag/dense_expected.json, made by
//!   tests/fixtures/generate_rag_dense.py), and RRF / weighted fusion of the BM25 and dense lists
//!   equal the Python computation of the same lists.
//! - Without a model (a hashing embedder): HNSW recall@10 >= 0.95 on a few thousand random
//!   vectors; deletes and replacements keep dense results consistent and remove the vectors'
//!   bytes from the files on disk; a mismatched embedder is a typed error; an uncommitted
//!   writer leaves the last commit's vectors.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tilpass::rag::vectors::{PassageKey, ScoredRow, normalize};
use tilpass::rag::{
    AnalysisConfig, ChunkerConfig, DenseIndex, Document, Embedder, EmbedderIdentity, FusionMethod,
    HnswIndex, HnswParams, KnowledgeBase, ModelEmbedder, RagError, VectorStore, fuse, recall_at_k,
};
use tilpass_tests::{artefact, fixture_json, fixture_path, read_lines};

/// Groups of consecutive reference positions whose scores lie within `tol`: ids must be equal
/// as sets within a group (order inside a near-tie is float noise), groups in order.
fn assert_ranking(got: &[(String, f64)], want: &[Value], tol: f64, what: &str) {
    let want: Vec<(String, f64)> = want
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap().to_string(),
                w["score"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    let mut i = 0;
    while i < want.len() {
        let mut j = i + 1;
        while j < want.len() && want[j - 1].1 - want[j].1 <= tol {
            j += 1;
        }
        let mut g: Vec<&str> = got[i..j].iter().map(|x| x.0.as_str()).collect();
        let mut w: Vec<&str> = want[i..j].iter().map(|x| x.0.as_str()).collect();
        if j - i == 1 {
            assert_eq!(g, w, "{what}: position {i}");
        } else {
            g.sort();
            w.sort();
            assert_eq!(g, w, "{what}: near-tied positions {i}..{j}");
        }
        for k in i..j {
            assert!(
                (got[k].1 - want[k].1).abs() <= tol,
                "{what}: score at {k}: {} vs {}",
                got[k].1,
                want[k].1
            );
        }
        i = j;
    }
}

fn corpus() -> Vec<Document> {
    read_lines(&fixture_path("rag/corpus.jsonl"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn minilm_dense_ranking_and_fusion_equal_python() {
    let Some(dir) = artefact("minilm") else {
        return;
    };
    let fx = fixture_json("rag/dense_expected.json");
    let mut progress = Vec::new();
    let e = ModelEmbedder::load(&dir, &tilpass_tests::test_device()).unwrap();
    let t = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::create(
        t.path().join("kb"),
        AnalysisConfig::default(),
        ChunkerConfig::default(),
    )
    .unwrap();
    let mut w = kb.writer().unwrap();
    w.set_embedder(&e).unwrap();
    w.set_progress(|d, n| progress.push((d, n)));
    for d in &corpus() {
        w.upsert(d).unwrap();
    }
    w.commit().unwrap();
    w.close().unwrap();
    assert_eq!(progress.last(), Some(&(60, 60)), "{progress:?}");
    assert_eq!(kb.num_vectors().unwrap(), 60);
    assert_eq!(kb.embedder().unwrap().as_ref(), Some(e.identity()));
    // Reopened, the manifest records the identity.
    let again = KnowledgeBase::open(kb.dir()).unwrap();
    assert!(
        again
            .manifest()
            .embedder
            .as_ref()
            .unwrap()
            .same_model(e.identity())
    );

    // Embeddings of MiniLM match sentence-transformers to ~1e-4 per value (see
    // sentence_embeddings.rs), so cosines agree to a few 1e-5.
    let tol = 1e-4;
    let queries = fx["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 22);
    let pairs = |hits: &[tilpass::rag::Hit]| -> Vec<(String, f64)> {
        hits.iter()
            .map(|h| (h.id.clone(), f64::from(h.score)))
            .collect()
    };
    for q in queries {
        let text = q["query"].as_str().unwrap();
        let exact = kb.dense_search(&e, text, 10, DenseIndex::Exact).unwrap();
        assert_ranking(
            &pairs(&exact),
            q["dense"]["top"].as_array().unwrap(),
            tol,
            &format!("dense {text:?}"),
        );
        // 60 vectors, ef 64: the graph search sees every vector.
        let hnsw = kb.dense_search(&e, text, 10, DenseIndex::Hnsw).unwrap();
        let ids = |h: &[tilpass::rag::Hit]| h.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&hnsw), ids(&exact), "hnsw {text:?}");
        for (a, b) in hnsw.iter().zip(&exact) {
            // 1 - (1 - cosine) in f32.
            assert!((a.score - b.score).abs() <= 1e-6, "hnsw {text:?}");
        }

        let bm25 = kb.search(text, 10).unwrap();
        let rrf = fuse(&bm25, &exact, FusionMethod::Rrf { k: 60.0 }, 10);
        let got: Vec<(String, f64)> = rrf
            .iter()
            .map(|h| (h.hit.id.clone(), f64::from(h.hit.score)))
            .collect();
        // RRF depends on ranks only: exact up to f32 rounding of the fused score.
        assert_ranking(
            &got,
            q["rrf"]["top"].as_array().unwrap(),
            1e-6,
            &format!("rrf {text:?}"),
        );
        for h in &rrf {
            let r = |list: &[tilpass::rag::Hit]| list.iter().position(|x| x.id == h.hit.id);
            assert_eq!(h.bm25_rank, r(&bm25).map(|i| i + 1));
            assert_eq!(h.dense_rank, r(&exact).map(|i| i + 1));
        }
        let wf = fuse(&bm25, &exact, FusionMethod::Weighted { alpha: 0.5 }, 10);
        let got: Vec<(String, f64)> = wf
            .iter()
            .map(|h| (h.hit.id.clone(), f64::from(h.hit.score)))
            .collect();
        // Min-max of cosines that differ by ~1e-5 over a range of ~0.3.
        assert_ranking(
            &got,
            q["weighted"]["top"].as_array().unwrap(),
            1e-3,
            &format!("weighted {text:?}"),
        );
    }

    // Hybrid through the knowledge base (depth 10 = the lists above).
    let q = queries[0]["query"].as_str().unwrap();
    let h = kb
        .hybrid_search(
            &e,
            q,
            10,
            DenseIndex::Exact,
            tilpass::rag::FusionConfig {
                method: FusionMethod::Rrf { k: 60.0 },
                depth: 10,
            },
        )
        .unwrap();
    let ids: Vec<&str> = h.iter().map(|x| x.hit.id.as_str()).collect();
    let want: Vec<&str> = queries[0]["rrf"]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, want);
}

/// Bag of hashed words, 32 wide: similar texts get similar vectors, no model needed.
struct HashEmbedder {
    identity: EmbedderIdentity,
}

impl HashEmbedder {
    fn new(fingerprint: &str) -> Self {
        Self {
            identity: EmbedderIdentity {
                source: "hash".into(),
                model_type: "hash".into(),
                dim: 32,
                pooling: tilpass::models::PoolingMode::Mean,
                normalize: true,
                max_seq_length: None,
                fingerprint: fingerprint.into(),
            },
        }
    }
}

impl Embedder for HashEmbedder {
    fn identity(&self) -> &EmbedderIdentity {
        &self.identity
    }
    fn embed(&self, texts: &[&str]) -> tilpass::rag::Result<Vec<Vec<f32>>> {
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0.01f32; 32];
                for w in t.split_whitespace() {
                    let w = w.to_lowercase();
                    let h = w.bytes().fold(1469598103934665603u64, |h, b| {
                        (h ^ u64::from(b)).wrapping_mul(1099511628211)
                    });
                    v[(h % 32) as usize] += 1.0;
                    v[((h >> 20) % 32) as usize] += 0.5;
                }
                v
            })
            .collect())
    }
}

fn doc(id: &str, text: &str) -> Document {
    Document {
        id: id.into(),
        text: text.into(),
        title: None,
        meta: None,
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect()
}

/// The bytes a passage's vector has on disk (normalised f32, little endian).
fn vector_bytes(e: &HashEmbedder, text: &str) -> Vec<u8> {
    let mut v = e.embed(&[text]).unwrap().pop().unwrap();
    normalize(&mut v, "t").unwrap();
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn delete_and_replace_keep_dense_consistent_and_purge_vector_bytes() {
    let e = HashEmbedder::new("a");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("kb");
    let kb =
        KnowledgeBase::create(&dir, AnalysisConfig::default(), ChunkerConfig::default()).unwrap();
    // A BM25-only commit first: the embedder set later embeds these too.
    let mut w = kb.writer().unwrap();
    for i in 0..20 {
        w.upsert(&doc(
            &format!("d{i}"),
            &format!("vanlig tekst nummer{i} om kommunen"),
        ))
        .unwrap();
    }
    w.commit().unwrap();
    assert!(matches!(
        kb.dense_search(&e, "kommunen", 3, DenseIndex::Exact),
        Err(RagError::NoVectors { .. })
    ));
    w.set_embedder(&e).unwrap();
    let secret = "hemmelig personnummer tilhører kari nordmann";
    w.upsert(&doc("secret", secret)).unwrap();
    w.upsert(&doc("other", "fylket har ansvar for veiene"))
        .unwrap();
    w.commit().unwrap();
    assert_eq!(kb.num_vectors().unwrap(), 22);
    let top = kb.dense_search(&e, secret, 1, DenseIndex::Exact).unwrap();
    assert_eq!(
        (top[0].id.as_str(), top[0].passage.as_str()),
        ("secret", secret)
    );
    assert!((top[0].score - 1.0).abs() < 1e-5);
    let needle = vector_bytes(&e, secret);
    assert!(!holding(&dir, &needle).is_empty(), "the vector is stored");

    w.delete("secret").unwrap();
    w.commit().unwrap();
    let left = holding(&dir, &needle);
    assert!(left.is_empty(), "deleted vector still on disk in {left:?}");
    assert_eq!(kb.num_vectors().unwrap(), 21);
    for how in [DenseIndex::Exact, DenseIndex::Hnsw] {
        let hits = kb.dense_search(&e, secret, 30, how).unwrap();
        assert!(hits.iter().all(|h| h.id != "secret"));
        assert_eq!(hits.len(), 21);
    }

    // Replace: the old vector goes, the new one answers.
    let old = vector_bytes(&e, "fylket har ansvar for veiene");
    w.upsert(&doc("other", "staten eier sykehusene")).unwrap();
    w.commit().unwrap();
    assert!(holding(&dir, &old).is_empty());
    let top = kb
        .dense_search(&e, "staten eier sykehusene", 1, DenseIndex::Hnsw)
        .unwrap();
    assert_eq!(top[0].id, "other");
    assert_eq!(kb.num_vectors().unwrap(), 21);

    // Staged work dropped without a commit (a crash) leaves the last commit's vectors; stray
    // files of an unfinished generation are ignored and then removed.
    w.upsert(&doc("ghost", "aldri lagret")).unwrap();
    drop(w);
    std::fs::write(dir.join("dense").join("vectors-99.bin"), b"partial").unwrap();
    let kb2 = KnowledgeBase::open(&dir).unwrap();
    assert_eq!(kb2.num_vectors().unwrap(), 21);
    assert!(!kb2.contains("ghost").unwrap());
    // Deletes need no embedder; adding passages does.
    let mut w2 = kb2.writer().unwrap();
    w2.delete("d0").unwrap();
    w2.commit().unwrap();
    assert_eq!(kb2.num_vectors().unwrap(), 20);
    assert_eq!(
        std::fs::read_dir(dir.join("dense")).unwrap().count(),
        2,
        "one generation on disk"
    );
    w2.upsert(&doc("new", "ny tekst")).unwrap();
    assert!(matches!(w2.commit(), Err(RagError::InvalidSetting { .. })));
    drop(w2);

    // Another model: a typed error at write and at query time.
    let other = HashEmbedder::new("b");
    let mut w3 = kb2.writer().unwrap();
    assert!(matches!(
        w3.set_embedder(&other),
        Err(RagError::EmbedderMismatch { .. })
    ));
    drop(w3);
    let err = kb2
        .dense_search(&other, "kommunen", 3, DenseIndex::Exact)
        .unwrap_err();
    assert!(matches!(err, RagError::EmbedderMismatch { .. }));
    assert!(err.to_string().contains("embedder mismatch"), "{err}");
}

fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Sum of 4 uniforms: roughly Gaussian, so directions are spread over the sphere.
        (0..4)
            .map(|i| ((s >> (8 + 12 * i)) & 0xfff) as f32 / 4096.0 - 0.5)
            .sum::<f32>()
    };
    (0..n).map(|_| (0..dim).map(|_| next()).collect()).collect()
}

#[test]
fn hnsw_recall_at_10_on_random_vectors() {
    let (n, dim) = (3000, 32);
    let mut store = VectorStore::new(dim);
    for (i, v) in random_vectors(n, dim, 11).into_iter().enumerate() {
        store
            .push(
                PassageKey {
                    id: format!("v{i}"),
                    ord: 0,
                },
                v,
            )
            .unwrap();
    }
    let params = HnswParams::default();
    let t = std::time::Instant::now();
    let index = HnswIndex::build(&store, params);
    let build_s = t.elapsed().as_secs_f64();
    let mut queries = random_vectors(200, dim, 12345);
    for q in &mut queries {
        normalize(q, "q").unwrap();
    }
    let report = tilpass::rag::vectors::measure_recall(&store, &index, &queries, 10);
    eprintln!(
        "hnsw: {n} random vectors of {dim}, ef_construction {} ef {}: build {build_s:.2}s, \
         recall@10 {:.4}, {:.0} queries/s (exact {:.0} queries/s)",
        params.ef_construction, params.ef_search, report.recall, report.hnsw_qps, report.exact_qps
    );
    assert!(report.recall >= 0.95, "recall@10 {}", report.recall);
    // The measure itself: exact against exact is 1, a wrong list is not.
    let exact: Vec<Vec<ScoredRow>> = queries.iter().map(|q| store.exact_search(q, 10)).collect();
    assert_eq!(recall_at_k(&exact, &exact, 10), 1.0);
    let shifted: Vec<Vec<ScoredRow>> = queries
        .iter()
        .map(|q| store.exact_search(q, 20)[10..].to_vec())
        .collect();
    assert!(recall_at_k(&exact, &shifted, 10) < 0.5);
    // Persisted and reloaded, the graph answers the same.
    let b = index.to_bytes().unwrap();
    let back = HnswIndex::from_bytes(&b, Path::new("hnsw")).unwrap();
    for q in queries.iter().take(20) {
        assert_eq!(back.search(q, 10), index.search(q, 10));
    }
}

#[test]
fn hnsw_settings_persist_and_incremental_commits_match_exact_search() {
    let e = HashEmbedder::new("a");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("kb");
    let kb =
        KnowledgeBase::create(&dir, AnalysisConfig::default(), ChunkerConfig::default()).unwrap();
    let mut w = kb.writer().unwrap();
    w.set_embedder(&e).unwrap();
    // Bad settings are refused by name before any work.
    for (p, name) in [
        (
            HnswParams {
                m: 1,
                ..HnswParams::default()
            },
            "hnsw_m",
        ),
        (
            HnswParams {
                ef_construction: 0,
                ..HnswParams::default()
            },
            "hnsw_ef_construction",
        ),
        (
            HnswParams {
                ef_search: 0,
                ..HnswParams::default()
            },
            "hnsw_ef_search",
        ),
    ] {
        match w.set_hnsw_params(p) {
            Err(RagError::InvalidSetting { setting, .. }) => assert_eq!(setting, name),
            other => panic!("{other:?}"),
        }
    }
    let params = HnswParams {
        m: 4,
        ef_construction: 20,
        ef_search: 40,
        ..HnswParams::default()
    };
    w.set_hnsw_params(params).unwrap();
    let text = |i: usize| format!("tekst {i} om kommune{} og fylke{} i landet", i % 7, i % 5);
    for i in 0..30 {
        w.upsert(&doc(&format!("d{i}"), &text(i))).unwrap();
    }
    w.commit().unwrap();
    // A second commit that only adds rows (the graph is extended), then one that deletes.
    for i in 30..60 {
        w.upsert(&doc(&format!("d{i}"), &text(i))).unwrap();
    }
    w.commit().unwrap();
    assert_eq!(kb.hnsw_params().unwrap(), Some(params));
    assert_eq!(kb.num_vectors().unwrap(), 60);
    let check = |kb: &KnowledgeBase| {
        for i in [0usize, 13, 31, 59] {
            let q = text(i);
            let exact = kb.dense_search(&e, &q, 10, DenseIndex::Exact).unwrap();
            let hnsw = kb.dense_search(&e, &q, 10, DenseIndex::Hnsw).unwrap();
            let ids = |h: &[tilpass::rag::Hit]| h.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
            assert_eq!(ids(&hnsw), ids(&exact), "{q}");
        }
    };
    check(&kb);
    w.delete("d13").unwrap();
    w.commit().unwrap();
    w.close().unwrap();
    assert_eq!(kb.num_vectors().unwrap(), 59);
    // Reopened: the settings of the last commit hold; a writer without settings keeps them.
    let kb = KnowledgeBase::open(&dir).unwrap();
    check(&kb);
    let mut w = kb.writer().unwrap();
    w.set_embedder(&e).unwrap();
    w.upsert(&doc("d60", &text(60))).unwrap();
    w.commit().unwrap();
    w.close().unwrap();
    assert_eq!(kb.hnsw_params().unwrap(), Some(params));
    assert_eq!(kb.num_vectors().unwrap(), 60);
    check(&kb);
}
