//! The tilpass side of the `rag` group of `scripts/compare/run.sh` (the Python side is
//! `scripts/compare/rag.py`; data, sizes and the cache directory: `scripts/compare/rag_harness.py`,
//! which writes `sizes.json`, `corpus.idx` and `queries.txt` before either side runs).
//!
//! - `bm25_small` / `bm25_big` / `rank_bm25_*`: `KnowledgeBase::search` (BM25, Lucene's formula,
//!   k1 1.2, b 0.75, Snowball Norwegian analysis; stored passage text read back) of the queries,
//!   spread over the pinned rayon threads, on knowledge bases built once by `rag_prepare`;
//! - `bm25_index`: a new knowledge base of the first passages (analysis, indexing, commit);
//! - `hnsw_ef*`: `HnswIndex::search_ef` top-10 of MiniLM query vectors at that ef, on one
//!   graph built once by `rag_prepare` with the harness's M and ef_construction (the ones
//!   hnswlib gets), recall@10 against exact search (`VectorStore::exact_search_batch`).
//!
//! `tilpass-compare rag_prepare` builds the cached inputs; `tilpass-compare rag_rss` is the child
//! process whose peak RSS is the memory figure (opens the large knowledge base, runs its queries).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::{Value, json};
use tilpass::models::SentenceEmbedder;
use tilpass::rag::vectors::{PassageKey, normalize};
use tilpass::rag::{
    ChunkerConfig, Document, HnswIndex, HnswParams, KbOptions, KnowledgeBase, VectorStore,
    recall_at_k,
};
use tilpass::tokenize::Tokenizer;

use super::{Report, Res, Spec, artefacts, bench_device, need_dir, root};

/// The benchmarks of the group (the same names as rag_harness.plan()).
pub const BENCHES: &[&str] = &[
    "bm25_small",
    "bm25_big",
    "rank_bm25_small",
    "rank_bm25_big",
    "bm25_index",
    "hnsw_ef16",
    "hnsw_ef32",
    "hnsw_ef64",
    "hnsw_ef128",
    "hnsw_ef256",
];

/// `sizes.json` of the cache.
struct Sizes(Value);

impl Sizes {
    fn load(cache: &Path) -> Res<Self> {
        let path = cache.join("sizes.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: {e} (run scripts/compare/run.sh --only rag, which prepares it)",
                path.display()
            )
        })?;
        Ok(Self(serde_json::from_str(&text)?))
    }

    fn get(&self, key: &str) -> Res<usize> {
        self.0[key]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| format!("sizes.json: no {key}").into())
    }
}

fn cache() -> Res<PathBuf> {
    std::env::var_os("TILPASS_RAG_CACHE")
        .map(PathBuf::from)
        .ok_or_else(|| "TILPASS_RAG_CACHE is not set (run.py sets it)".into())
}

/// The shared sentences, read as rag_harness.read_sentences does.
fn sentences() -> Res<Vec<String>> {
    let dir = std::env::var_os("TILPASS_RAG_SENTENCES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/data/ud-norwegian"));
    let mut out = Vec::new();
    for name in ["nob-dev.txt", "nno-dev.txt"] {
        let path = dir.join(name);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if !line.is_empty() {
                out.push(line.to_string());
            }
        }
    }
    Ok(out)
}

/// The first `n` passages of the synthetic corpus.
fn corpus(cache: &Path, n: usize) -> Res<Vec<String>> {
    let sents = sentences()?;
    let idx = std::fs::read_to_string(cache.join("corpus.idx"))?;
    let mut out = Vec::with_capacity(n);
    for line in idx.lines().take(n) {
        let parts = line
            .split(' ')
            .map(|i| {
                let i: usize = i.parse()?;
                sents
                    .get(i)
                    .map(String::as_str)
                    .ok_or_else(|| format!("corpus.idx: sentence {i} out of range").into())
            })
            .collect::<Res<Vec<&str>>>()?;
        out.push(parts.join(" "));
    }
    if out.len() != n {
        return Err(format!("corpus.idx has {} passages, {n} wanted", out.len()).into());
    }
    Ok(out)
}

fn queries(cache: &Path, n: usize) -> Res<Vec<String>> {
    let text = std::fs::read_to_string(cache.join("queries.txt"))?;
    Ok(text.split('\n').take(n).map(str::to_string).collect())
}

/// One passage per document: no chunking of the (at most a few hundred words) passages.
fn options() -> KbOptions {
    KbOptions {
        chunker: ChunkerConfig {
            max_tokens: 100_000,
            overlap_tokens: 0,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn documents(texts: Vec<String>) -> Vec<Document> {
    texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| Document {
            id: i.to_string(),
            text,
            title: None,
            meta: None,
        })
        .collect()
}

fn build_kb(dir: &Path, docs: &[Document]) -> Res<KnowledgeBase> {
    let kb = KnowledgeBase::create_with(dir, options())?;
    {
        let mut w = kb.writer()?;
        for d in docs {
            w.upsert(d)?;
        }
        w.commit()?;
        w.close()?;
    }
    Ok(kb)
}

/// Builds `cache/name` from the first `n` passages unless `cache/name.done` exists.
fn cached_kb(cache: &Path, name: &str, n: usize) -> Res<()> {
    let done = cache.join(format!("{name}.done"));
    if done.exists() {
        return Ok(());
    }
    let dir = cache.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    eprintln!("rag_prepare: indexing {n} passages into {}", dir.display());
    build_kb(&dir, &documents(corpus(cache, n)?))?;
    std::fs::write(done, "")?;
    Ok(())
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) -> Res<()> {
    let mut b = Vec::with_capacity(rows.len() * rows.first().map_or(0, Vec::len) * 4);
    for r in rows {
        for x in r {
            b.extend_from_slice(&x.to_le_bytes());
        }
    }
    std::fs::write(path, b)?;
    Ok(())
}

fn read_f32(path: &Path, dim: usize) -> Res<Vec<Vec<f32>>> {
    let b = std::fs::read(path)?;
    let v: Vec<f32> = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(v.chunks_exact(dim).map(<[f32]>::to_vec).collect())
}

/// The untimed preparation: the two knowledge bases, MiniLM vectors of the HNSW passages and
/// queries, the HNSW graph (M and ef_construction of `sizes.json`). Each step is skipped when its cache entry exists.
pub fn prepare() -> Res<()> {
    let cache = cache()?;
    let z = Sizes::load(&cache)?;
    cached_kb(&cache, "kb-big", z.get("big")?)?;
    cached_kb(&cache, "kb-small", z.get("small")?)?;
    let meta = cache.join("hnsw.json");
    if !meta.exists() {
        let dir = artefacts().join("minilm");
        need_dir(&dir)?;
        let device = bench_device()?;
        let embedder = SentenceEmbedder::load(&dir, &device)?;
        let tok = Tokenizer::from_dir(&dir)?;
        let embed = |texts: &[String]| -> Res<Vec<Vec<f32>>> {
            let ids = texts
                .iter()
                .map(|s| tok.encode(s, true))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(embedder.embed_ids(&ids, 32)?)
        };
        // Embedding 20k passages costs minutes on two cores; a passage's vector is the
        // normalised sum of its sentences' MiniLM embeddings instead (the sentences are embedded
        // once each), the queries are embedded themselves.
        let sents = sentences()?;
        eprintln!(
            "rag_prepare: MiniLM embeddings of {} sentences",
            sents.len()
        );
        let e = embed(&sents)?;
        let n = z.get("hnsw")?;
        let idx = std::fs::read_to_string(cache.join("corpus.idx"))?;
        let mut x = Vec::with_capacity(n);
        for line in idx.lines().take(n) {
            let mut v = vec![0f32; e[0].len()];
            for i in line.split(' ') {
                let row = e
                    .get(i.parse::<usize>()?)
                    .ok_or("corpus.idx: sentence out of range")?;
                v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
            normalize(&mut v, "passage vector")?;
            x.push(v);
        }
        let mut q = embed(&queries(&cache, z.get("q_hnsw")?)?)?;
        for v in &mut q {
            normalize(v, "query vector")?;
        }
        write_f32(&cache.join("hnsw-vectors.f32"), &x)?;
        write_f32(&cache.join("hnsw-queries.f32"), &q)?;
        let dim = x[0].len();
        std::fs::write(
            &meta,
            json!({"dim": dim, "rows": x.len(), "queries": q.len(),
                   "model": "all-MiniLM-L6-v2 (artefacts/minilm)",
                   "vectors": "passage = normalised sum of its sentences' embeddings; queries embedded"})
                .to_string(),
        )?;
    }
    let path = graph_file(&cache, &z)?;
    if !path.exists() {
        let (store, _) = hnsw_data(&cache)?;
        let params = graph_params(&z)?;
        eprintln!(
            "rag_prepare: HNSW graph of {} rows, M {}, ef_construction {}",
            store.len(),
            params.m,
            params.ef_construction
        );
        let t = std::time::Instant::now();
        let g = HnswIndex::build(&store, params);
        eprintln!(
            "rag_prepare: HNSW graph built in {:.1} s (one thread)",
            t.elapsed().as_secs_f64()
        );
        std::fs::write(&path, g.to_bytes()?)?;
    }
    Ok(())
}

/// The HNSW settings of `sizes.json` (`ef_search`: a placeholder, each benchmark sets its own).
fn graph_params(z: &Sizes) -> Res<HnswParams> {
    let p = HnswParams {
        m: z.get("m")?,
        ef_construction: z.get("ef_construction")?,
        ..Default::default()
    };
    p.validate()?;
    Ok(p)
}

/// The cached graph of the harness's M and ef_construction.
fn graph_file(cache: &Path, z: &Sizes) -> Res<PathBuf> {
    let p = graph_params(z)?;
    Ok(cache.join(format!(
        "hnsw-tilpass-m{}-efc{}.bin",
        p.m, p.ef_construction
    )))
}

fn hnsw_data(cache: &Path) -> Res<(VectorStore, Vec<Vec<f32>>)> {
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(cache.join("hnsw.json"))?)?;
    let dim = meta["dim"].as_u64().ok_or("hnsw.json: no dim")? as usize;
    let mut store = VectorStore::new(dim);
    for (i, v) in read_f32(&cache.join("hnsw-vectors.f32"), dim)?
        .into_iter()
        .enumerate()
    {
        store.push(
            PassageKey {
                id: i.to_string(),
                ord: 0,
            },
            v,
        )?;
    }
    Ok((store, read_f32(&cache.join("hnsw-queries.f32"), dim)?))
}

/// Top-10 passage numbers of each query (searched in parallel on the pinned threads).
fn top(kb: &KnowledgeBase, qs: &[String], k: usize) -> Res<Vec<Vec<usize>>> {
    qs.par_iter()
        .map(|q| -> Result<Vec<usize>, String> {
            kb.search(q, k)
                .map_err(|e| e.to_string())?
                .iter()
                .map(|h| h.id.parse::<usize>().map_err(|e| e.to_string()))
                .collect()
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(Into::into)
}

fn dir_bytes(dir: &Path) -> Res<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            dir_bytes(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}

/// Peak resident memory of this process (`VmHWM` of /proc/self/status), bytes.
fn peak_rss() -> Res<u64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or("VmHWM: no value")?
        .parse()?;
    Ok(kb * 1024)
}

/// The memory child: opens the large knowledge base, runs its queries, prints its peak RSS.
pub fn rss() -> Res<()> {
    let cache = cache()?;
    let z = Sizes::load(&cache)?;
    let kb = KnowledgeBase::open(cache.join("kb-big"))?;
    top(&kb, &queries(&cache, z.get("q_big")?)?, z.get("k")?)?;
    println!("{}", json!({"peak_rss_bytes": peak_rss()?}));
    Ok(())
}

/// FNV-1a 64 of the terms joined by U+001F (as rag.py's `fnv1a`).
fn fnv1a(terms: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, t) in terms.iter().enumerate() {
        if i > 0 {
            h = (h ^ 0x1f).wrapping_mul(0x100_0000_01b3);
        }
        for &b in t.as_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// The HNSW benchmarks' vectors, query vectors and exact top-k of each query.
type HnswBench = (
    VectorStore,
    Vec<Vec<f32>>,
    Vec<Vec<tilpass::rag::vectors::ScoredRow>>,
);

/// Runs the group's benchmarks; rankings, recall, statistics and memory go to `extra`.
pub fn run(specs: &[Spec], r: &mut Report, extra: &mut serde_json::Map<String, Value>) -> Res<()> {
    let cache = cache()?;
    let z = Sizes::load(&cache)?;
    let k = z.get("k")?;
    let qs = queries(&cache, z.get("q_small")?.max(z.get("q_big")?))?;
    let small = KnowledgeBase::open(cache.join("kb-small"))?;
    r.check("passages_small", json!(small.num_passages()));
    let small_texts = corpus(&cache, z.get("small")?)?;
    let terms: Vec<Vec<String>> = small_texts.iter().map(|t| small.analyze(t)).collect();
    let vocab: std::collections::HashSet<&String> = terms.iter().flatten().collect();
    extra.insert(
        "token_hashes".into(),
        json!(terms.iter().map(|t| fnv1a(t)).collect::<Vec<_>>()),
    );
    extra.insert(
        "stats".into(),
        json!({"small_corpus_terms": terms.iter().map(Vec::len).sum::<usize>(),
               "small_corpus_vocabulary": vocab.len()}),
    );
    drop(vocab);
    drop(terms);
    let mut rankings = serde_json::Map::new();
    let mut recall = serde_json::Map::new();
    let mut tie_sets = serde_json::Map::new();
    let mut big: Option<KnowledgeBase> = None;
    let mut hnsw: Option<HnswBench> = None;
    let mut graph: Option<HnswIndex> = None;
    for spec in specs {
        let name = spec.name.as_str();
        match name {
            "bm25_small" | "bm25_big" | "rank_bm25_small" | "rank_bm25_big" => {
                let is_big = name.ends_with("_big");
                if is_big && big.is_none() {
                    let kb = KnowledgeBase::open(cache.join("kb-big"))?;
                    r.check("passages_big", json!(kb.num_passages()));
                    big = Some(kb);
                }
                let kb = if is_big {
                    big.as_ref().ok_or("no large knowledge base")?
                } else {
                    &small
                };
                let n = z.get(match name {
                    "bm25_small" => "q_small",
                    "bm25_big" => "q_big",
                    "rank_bm25_small" => "q_rank_small",
                    _ => "q_rank_big",
                })?;
                let q = &qs[..n];
                let out = r.time(spec, q.len(), "queries", || Ok(()), |()| top(kb, q, k))?;
                let key = match name {
                    "bm25_small" => "bm25s_small",
                    "bm25_big" => "bm25s_big",
                    other => other,
                };
                rankings.insert(key.into(), json!(out));
                // Untimed: every passage scoring at least the 10th (ties at the boundary).
                let ties = q
                    .par_iter()
                    .map(|q| -> Result<Vec<usize>, String> {
                        let hits = kb.search(q, 5 * k).map_err(|e| e.to_string())?;
                        let Some(kth) = hits.get(k - 1).map(|h| h.score) else {
                            return hits
                                .iter()
                                .map(|h| h.id.parse().map_err(|e| format!("{e}")))
                                .collect();
                        };
                        hits.iter()
                            .filter(|h| h.score >= kth)
                            .map(|h| h.id.parse().map_err(|e| format!("{e}")))
                            .collect()
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                tie_sets.insert(key.into(), json!(ties));
                if name == "bm25_big" {
                    let exe = std::env::current_exe()?;
                    let out = std::process::Command::new(exe).arg("rag_rss").output()?;
                    if !out.status.success() {
                        return Err(format!(
                            "rag_rss failed: {}",
                            String::from_utf8_lossy(&out.stderr)
                        )
                        .into());
                    }
                    let child: Value = serde_json::from_slice(&out.stdout)?;
                    extra.insert(
                        "memory".into(),
                        json!({
                            "passages": z.get("big")?,
                            "disk_bytes": dir_bytes(&cache.join("kb-big"))?,
                            "queries": z.get("q_big")?,
                            "peak_rss_bytes": child["peak_rss_bytes"],
                            "how": "KnowledgeBase::open (tantivy, mmap) + KnowledgeBase::search, one thread",
                        }),
                    );
                }
            }
            "bm25_index" => {
                let docs = documents(corpus(&cache, z.get("index")?)?);
                let n = r.time(
                    spec,
                    docs.len(),
                    "passages",
                    || Ok(tempfile::tempdir_in(&cache)?),
                    |dir| {
                        let kb = build_kb(&dir.path().join("kb"), &docs)?;
                        Ok((kb.num_passages(), dir))
                    },
                )?;
                r.check("indexed_passages", json!(n.0));
            }
            _ => {
                let ef: usize = name
                    .strip_prefix("hnsw_ef")
                    .ok_or_else(|| format!("unknown benchmark {name}"))?
                    .parse()?;
                if hnsw.is_none() {
                    let (store, q) = hnsw_data(&cache)?;
                    let exact = store.exact_search_batch(&q, k);
                    hnsw = Some((store, q, exact));
                }
                let (_, q, exact) = hnsw.as_ref().ok_or("no vectors")?;
                if graph.is_none() {
                    let path = graph_file(&cache, &z)?;
                    let g = HnswIndex::from_bytes(&std::fs::read(&path)?, &path)?;
                    if !g.params().same_graph(&graph_params(&z)?) {
                        return Err(format!("{}: other HNSW settings", path.display()).into());
                    }
                    graph = Some(g);
                }
                let g = graph.as_ref().ok_or("no graph")?;
                let approx = r.time(
                    spec,
                    q.len(),
                    "queries",
                    || Ok(()),
                    |()| {
                        Ok(q.par_iter()
                            .map(|v| g.search_ef(v, k, ef))
                            .collect::<Vec<_>>())
                    },
                )?;
                recall.insert(name.into(), json!(recall_at_k(exact, &approx, k)));
                r.check(&format!("{name}_queries"), json!(q.len()));
            }
        }
    }
    extra.insert("rankings".into(), Value::Object(rankings));
    extra.insert("recall".into(), Value::Object(recall));
    extra.insert("tie_sets".into(), Value::Object(tie_sets));
    Ok(())
}
