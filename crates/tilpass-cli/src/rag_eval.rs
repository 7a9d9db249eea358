//! `tilpass rag eval`: runs every query of an evaluation set against a knowledge base and prints
//! nDCG@10, MRR@10 and recall@100 (pytrec_eval semantics, through tilpass-metrics) as JSON;
//! progress on stderr. `builtin:norsk-rag` names the embedded Norwegian set (data/rag/).

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use tilpass::data::embedded::{
    NORSK_RAG, NORSK_RAG_PASSAGES_JSONL, NORSK_RAG_QRELS, NORSK_RAG_QUERIES_JSONL,
};
use tilpass::rag::eval::{
    CUTOFF_RECALL, EvalQuery, evaluate, parse_qrels, parse_queries, read_qrels, read_queries,
    run_queries,
};
use tilpass::rag::{
    AnalysisConfig, ChunkerConfig, Document, KnowledgeBase, ModelEmbedder, RagError,
};
use tilpass::{Error, Result};

use crate::common::print;
use crate::rag_dense::{Mode, SearchDenseArgs, mode_hits, query_embedder};

/// `rag eval` flags.
#[derive(Args)]
pub struct EvalArgs {
    /// Knowledge-base directory, or `builtin:norsk-rag` (the embedded passages indexed into a
    /// temporary directory, removed afterwards).
    #[arg(long)]
    kb: String,
    /// Query JSONL rows {"id", "text", "lang"?}, or `builtin:norsk-rag`.
    #[arg(long)]
    queries: String,
    /// TREC qrels (`query_id 0 doc_id grade`; doc ids are knowledge-base document ids), or
    /// `builtin:norsk-rag`.
    #[arg(long)]
    qrels: String,
    /// Retriever and its settings (as `rag search`: --mode bm25|dense|hybrid, --fusion,
    /// --alpha, --depth, --index, --embedder; a `builtin:` knowledge base is embedded with
    /// --embedder for dense and hybrid).
    #[command(flatten)]
    dense: SearchDenseArgs,
    /// Hits retrieved per query (at least 100, the recall cutoff).
    #[arg(long, default_value_t = CUTOFF_RECALL)]
    k: usize,
    #[command(flatten)]
    rerank: crate::rag_rerank::RerankArgs,
    /// Also print every query's scores under "per_query".
    #[arg(long)]
    per_query: bool,
}

fn builtin(spec: &str) -> Result<bool> {
    match spec.strip_prefix("builtin:") {
        None => Ok(false),
        Some(NORSK_RAG) => Ok(true),
        Some(other) => Err(Error::invalid(format!(
            "builtin:{other}: no such evaluation set (available: builtin:{NORSK_RAG})"
        ))),
    }
}

fn load_queries(spec: &str) -> Result<Vec<EvalQuery>> {
    Ok(if builtin(spec)? {
        parse_queries(spec, NORSK_RAG_QUERIES_JSONL)?
    } else {
        read_queries(Path::new(spec))?
    })
}

/// A knowledge base of the embedded passages in a fresh temporary directory, removed on drop.
struct TempKb(PathBuf);

impl Drop for TempKb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn builtin_kb(embedder: Option<&ModelEmbedder>) -> Result<(KnowledgeBase, TempKb)> {
    let dir = std::env::temp_dir().join(format!(
        "tilpass-rag-eval-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let guard = TempKb(dir.clone());
    let kb = KnowledgeBase::create(&dir, AnalysisConfig::default(), ChunkerConfig::default())?;
    let mut w = kb.writer()?;
    if let Some(e) = embedder {
        w.set_embedder(e)?;
    }
    let mut n = 0usize;
    for (i, line) in NORSK_RAG_PASSAGES_JSONL.lines().enumerate() {
        let source_name = format!("builtin:{NORSK_RAG}:{}", i + 1);
        let doc: Document = serde_json::from_str(line).map_err(|e| RagError::InvalidDocument {
            source_name: source_name.clone(),
            message: e.to_string(),
        })?;
        doc.validate(&source_name)?;
        w.upsert(&doc)?;
        n += 1;
    }
    w.commit()?;
    w.close()?;
    eprintln!("indexed the {n} built-in passages of {NORSK_RAG} into a temporary knowledge base");
    Ok((kb, guard))
}

/// Runs `tilpass rag eval`.
pub fn eval_cmd(a: EvalArgs) -> Result<()> {
    // Inputs are checked before any searching starts.
    let queries = load_queries(&a.queries)?;
    let qrels = if builtin(&a.qrels)? {
        parse_qrels(&a.qrels, NORSK_RAG_QRELS)?
    } else {
        read_qrels(Path::new(&a.qrels))?
    };
    if a.k < CUTOFF_RECALL {
        return Err(RagError::InvalidSetting {
            setting: "k".into(),
            message: format!(
                "{} hits per query; recall@{CUTOFF_RECALL} needs at least {CUTOFF_RECALL}",
                a.k
            ),
        }
        .into());
    }
    // The cross-encoder is checked and loaded before any indexing or searching.
    let reranker = a.rerank.load()?;
    let mode = a.dense.mode;
    let mode_name = match mode {
        Mode::Bm25 => "bm25",
        Mode::Dense => "dense",
        Mode::Hybrid => "hybrid",
    };
    let (kb, _guard) = if builtin(&a.kb)? {
        let index_embedder = match (mode, a.dense.embedder_dir()) {
            (Mode::Bm25, _) => None,
            (_, Some(dir)) => Some(ModelEmbedder::load(
                dir,
                &tilpass::device(a.dense.device())?,
            )?),
            (_, None) => {
                return Err(Error::invalid(format!(
                    "--kb builtin:{NORSK_RAG} with --mode {mode_name} needs --embedder MODEL_DIR \
                     to embed the passages with"
                )));
            }
        };
        let (kb, g) = builtin_kb(index_embedder.as_ref())?;
        (kb, Some(g))
    } else {
        (KnowledgeBase::open(&a.kb)?, None)
    };
    let query_embedder = match mode {
        Mode::Bm25 => None,
        _ => Some(query_embedder(&kb, &a.dense)?),
    };
    let bm25 = kb.manifest().bm25;
    let start = std::time::Instant::now();
    let step = (queries.len() / 10).max(1);
    let run = run_queries(
        &queries,
        a.k,
        |text, k| {
            let hits = mode_hits(
                &kb,
                query_embedder.as_ref(),
                text,
                a.rerank.depth(k),
                bm25,
                &a.dense,
            )?;
            match &reranker {
                None => Ok(hits),
                Some(ce) => {
                    let mut r = ce.rerank(text, hits, a.rerank.rerank_top)?;
                    r.truncate(k);
                    Ok(crate::rag_rerank::rank_scored(r))
                }
            }
        },
        |done, total| {
            if done % step == 0 || done == total {
                eprintln!("searched {done} / {total} queries");
            }
        },
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let report = evaluate(&qrels, &run)?;
    if !report.qrels_without_query.is_empty() {
        eprintln!(
            "warning: {} judged query ids are not in {} and are ignored (as trec_eval does): {}",
            report.qrels_without_query.len(),
            a.queries,
            report.qrels_without_query.join(", ")
        );
    }
    if !report.unjudged_queries.is_empty() {
        eprintln!(
            "warning: {} queries have no judgements in {} and are skipped: {}",
            report.unjudged_queries.len(),
            a.qrels,
            report.unjudged_queries.join(", ")
        );
    }
    eprintln!(
        "{} queries evaluated in {seconds:.2}s: nDCG@10 {:.4}, MRR@10 {:.4}, recall@100 {:.4}",
        report.queries, report.mean.ndcg_at_10, report.mean.mrr_at_10, report.mean.recall_at_100
    );
    let mut out = json!({
        "mode": mode_name,
        "k": a.k,
        "queries": report.queries,
        "ndcg@10": report.mean.ndcg_at_10,
        "mrr@10": report.mean.mrr_at_10,
        "recall@100": report.mean.recall_at_100,
        "unjudged_queries": report.unjudged_queries,
        "qrels_without_query": report.qrels_without_query,
        "seconds": seconds,
    });
    if let Some(ce) = &reranker {
        out["rerank"] = json!({"model": ce.dir(), "top": a.rerank.rerank_top});
    }
    if a.per_query {
        out["per_query"] = report
            .per_query
            .iter()
            .map(|(q, s)| {
                (
                    q.clone(),
                    json!({"ndcg@10": s.ndcg_at_10, "mrr@10": s.mrr_at_10, "recall@100": s.recall_at_100}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    print(&out);
    Ok(())
}
