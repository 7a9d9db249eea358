//! Dense and hybrid parts of `tilpass rag`: `index --embedder MODEL_DIR` (passages embedded with
//! a progress bar on stderr, vectors and an HNSW graph committed with the index, optional
//! `--report-recall`), and `search --mode dense|hybrid`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tilpass::rag::kb::Bm25Params;
use tilpass::rag::{
    DenseIndex, Embedder, FusionConfig, FusionMethod, HnswParams, KbWriter, KnowledgeBase,
    ModelEmbedder, RagError,
};
use tilpass::{Error, Result};

/// Dense flags of `rag index`.
#[derive(Args)]
pub struct IndexDenseArgs {
    /// Sentence encoder directory (BERT / MiniLM, NorBERT3; pooling per its
    /// sentence-transformers files) to embed passages with; recorded in the knowledge base.
    /// A knowledge base with vectors needs its own model to add documents.
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// Passages per forward pass of the embedder.
    #[arg(long, default_value_t = 32)]
    embed_batch: usize,
    /// HNSW M (links per node; layer 0 holds 2M). Default: the knowledge base's, else 16.
    #[arg(long)]
    hnsw_m: Option<usize>,
    /// HNSW efConstruction. Default: the knowledge base's, else 200.
    #[arg(long)]
    ef_construction: Option<usize>,
    /// HNSW ef at search time (stored with the graph). Default: the knowledge base's, else 64.
    #[arg(long)]
    ef_search: Option<usize>,
    /// After the commit, measure recall@10 of HNSW against exact search (up to 1000 stored
    /// vectors as queries) and queries/s of both; added to the output as "recall".
    #[arg(long)]
    report_recall: bool,
    /// Device of the embedder (flex, cpu, ...).
    #[arg(long, default_value = "flex")]
    device: String,
}

/// `--mode` of `rag search`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// BM25 over the Norwegian analysis chain.
    Bm25,
    /// Cosine similarity of the knowledge base's embeddings.
    Dense,
    /// BM25 and dense fused.
    Hybrid,
}

/// `--fusion` of `rag search`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fusion {
    /// Reciprocal rank fusion, k = 60, 1-based ranks.
    Rrf,
    /// alpha * minmax(dense) + (1 - alpha) * minmax(bm25).
    Weighted,
}

/// `--index` of `rag search`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Index {
    /// Every vector scored.
    Exact,
    /// The HNSW graph.
    Hnsw,
}

/// Dense and hybrid flags of `rag search`.
#[derive(Args)]
pub struct SearchDenseArgs {
    /// Retriever.
    #[arg(long, value_enum, default_value_t = Mode::Bm25)]
    pub mode: Mode,
    /// Fusion of hybrid search.
    #[arg(long, value_enum, default_value_t = Fusion::Rrf)]
    fusion: Fusion,
    /// Weight of the dense score in weighted fusion, in [0, 1].
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
    /// Passages each retriever contributes to hybrid fusion (at least --k).
    #[arg(long, default_value_t = 100)]
    depth: usize,
    /// Dense neighbour search.
    #[arg(long, value_enum, default_value_t = Index::Exact)]
    index: Index,
    /// Encoder for the query (default: the one the knowledge base was indexed with, from the
    /// path it recorded); must be the same model as the index's.
    #[arg(long)]
    embedder: Option<PathBuf>,
    /// Device of the embedder.
    #[arg(long, default_value = "flex")]
    device: String,
}

impl IndexDenseArgs {
    /// Loads `--embedder`, if given.
    pub fn load(&self) -> Result<Option<ModelEmbedder>> {
        let Some(dir) = &self.embedder else {
            return Ok(None);
        };
        if self.embed_batch == 0 {
            return Err(Error::invalid("--embed-batch 0; expected at least 1"));
        }
        let device = tilpass::device(&self.device)?;
        let mut e = ModelEmbedder::load(dir, &device)?;
        e.batch_size = self.embed_batch;
        Ok(Some(e))
    }

    /// Gives the writer the embedder, the HNSW settings and a progress bar on stderr.
    /// HNSW settings not given keep the knowledge base's (`kb`, the writer's knowledge base).
    pub fn attach<'a>(
        &self,
        kb: &KnowledgeBase,
        w: &mut KbWriter<'a>,
        e: &'a ModelEmbedder,
    ) -> Result<()> {
        if self.hnsw_m.is_some() || self.ef_construction.is_some() || self.ef_search.is_some() {
            let base = kb.hnsw_params()?.unwrap_or_default();
            w.set_hnsw_params(HnswParams {
                m: self.hnsw_m.unwrap_or(base.m),
                ef_construction: self.ef_construction.unwrap_or(base.ef_construction),
                ef_search: self.ef_search.unwrap_or(base.ef_search),
                ..base
            })?;
        }
        w.set_embedder(e)?;
        let start = std::time::Instant::now();
        w.set_progress(move |done, total| {
            let width = 30;
            let filled = done * width / total.max(1);
            let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-9);
            eprint!(
                "\rembedding [{}{}] {done}/{total} passages ({rate:.0}/s)",
                "#".repeat(filled),
                ".".repeat(width - filled)
            );
            if done == total {
                eprintln!();
            }
            let _ = std::io::stderr().flush();
        });
        Ok(())
    }

    /// The recall report, when asked for and the knowledge base has vectors.
    pub fn report(&self, kb: &KnowledgeBase) -> Result<Option<Value>> {
        if !self.report_recall || kb.embedder()?.is_none() {
            return Ok(None);
        }
        let r = kb.hnsw_recall(None, 10)?;
        eprintln!(
            "HNSW recall@10 {:.4} over {} queries; {:.0} queries/s (exact {:.0}/s)",
            r.recall, r.queries, r.hnsw_qps, r.exact_qps
        );
        Ok(Some(
            serde_json::to_value(r).map_err(|e| Error::invalid(e.to_string()))?,
        ))
    }
}

/// The query encoder of a dense or hybrid search: `--embedder`, else the model the knowledge
/// base recorded, checked to be the index's model.
pub fn query_embedder(kb: &KnowledgeBase, a: &SearchDenseArgs) -> Result<ModelEmbedder> {
    let Some(have) = kb.embedder()? else {
        return Err(RagError::NoVectors {
            path: kb.dir().to_path_buf(),
        }
        .into());
    };
    let dir = a
        .embedder
        .clone()
        .unwrap_or_else(|| PathBuf::from(&have.source));
    if a.embedder.is_none() && !dir.is_dir() {
        return Err(Error::invalid(format!(
            "the knowledge base's embedder was {} and is not there now; give --embedder MODEL_DIR",
            have.source
        )));
    }
    let device = tilpass::device(&a.device)?;
    let e = ModelEmbedder::load(&dir, &device)?;
    kb.check_embedder(&e as &dyn Embedder)?;
    Ok(e)
}

impl SearchDenseArgs {
    fn how(&self) -> DenseIndex {
        match self.index {
            Index::Exact => DenseIndex::Exact,
            Index::Hnsw => DenseIndex::Hnsw,
        }
    }

    fn fusion(&self) -> FusionConfig {
        let method = match self.fusion {
            Fusion::Rrf => FusionMethod::Rrf { k: 60.0 },
            Fusion::Weighted => FusionMethod::Weighted { alpha: self.alpha },
        };
        FusionConfig {
            method,
            depth: self.depth,
        }
    }

    /// The encoder given with `--embedder`, if any (for indexing a temporary knowledge base).
    pub fn embedder_dir(&self) -> Option<&std::path::Path> {
        self.embedder.as_deref()
    }

    /// The device of the encoder.
    pub fn device(&self) -> &str {
        &self.device
    }
}

/// The `k` best passages for `query` by `a.mode` (fused hits reduced to their passage and fused
/// score); `e` is the query encoder ([`query_embedder`]), needed for dense and hybrid.
pub fn mode_hits(
    kb: &KnowledgeBase,
    e: Option<&ModelEmbedder>,
    query: &str,
    k: usize,
    bm25: Bm25Params,
    a: &SearchDenseArgs,
) -> tilpass::rag::Result<Vec<tilpass::rag::Hit>> {
    match (a.mode, e) {
        (Mode::Bm25, _) => kb.search_with(query, k, bm25),
        (Mode::Dense, Some(e)) => kb.dense_search(e, query, k, a.how()),
        (Mode::Hybrid, Some(e)) => Ok(kb
            .hybrid_search_with(e, query, k, a.how(), a.fusion(), bm25)?
            .into_iter()
            .map(|f| f.hit)
            .collect()),
        (_, None) => Err(RagError::NoVectors {
            path: kb.dir().to_path_buf(),
        }),
    }
}

/// `rag search --mode dense|hybrid`: prints {"hits": [...]} (hybrid hits carry "bm25_rank",
/// "dense_rank", "bm25_score", "dense_score"); the BM25 list of hybrid search uses `bm25`.
pub fn search(
    kb: &KnowledgeBase,
    query: &str,
    k: usize,
    bm25: Bm25Params,
    a: &SearchDenseArgs,
) -> Result<Value> {
    let e = query_embedder(kb, a)?;
    let hits = match a.mode {
        Mode::Dense => to_json(kb.dense_search(&e, query, k, a.how())?)?,
        _ => to_json(kb.hybrid_search_with(&e, query, k, a.how(), a.fusion(), bm25)?)?,
    };
    Ok(json!({ "hits": hits }))
}

fn to_json(v: impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| Error::invalid(e.to_string()))
}
