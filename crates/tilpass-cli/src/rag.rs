//! `tilpass rag index|delete|search`: a knowledge base on disk (tilpass-rag) with BM25 search
//! over the Norwegian analysis chain. JSON on stdout, progress on stderr.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;
use tilpass::rag::{
    AnalysisConfig, Bm25Params, ChunkerConfig, Document, KbOptions, KnowledgeBase, MANIFEST_FILE,
    RagError, StemmerKind, TokenUnit,
};
use tilpass::{Error, Result};

use crate::common::print;

/// The subcommands of `rag`.
#[derive(Subcommand)]
pub enum RagCommand {
    /// Create a knowledge base or add to it from JSONL rows {"id", "text", "title"?, "meta"?}
    /// (an existing id is replaced); prints {"kb", "documents", "replaced", "passages",
    /// "seconds"}.
    Index(IndexArgs),
    /// Delete documents by id (removed from the files on disk); prints {"deleted", "passages"}.
    Delete(DeleteArgs),
    /// BM25 search; prints {"hits": [{"id", "score", "passage", "start", "end", "title", ...}]}
    /// best first (start/end: character span of the passage in its document). With --rerank
    /// the top --rerank-top hits are re-ordered by a cross-encoder and each hit also has
    /// "rerank_score" (null below the re-ranked ones), "retriever_rank" and "retriever_score".
    Search(SearchArgs),
    /// Answer a question from the knowledge base with a decoder, citing passages as `[n]`;
    /// prints {"answer", "citations": [{"n", "id", "title", "start", "end"}],
    /// "invalid_citations", ...}.
    Ask(crate::rag_ask::AskArgs),
    /// Evaluate retrieval on queries with relevance judgements; prints {"ndcg@10", "mrr@10",
    /// "recall@100", "queries", ...} (pytrec_eval semantics).
    Eval(crate::rag_eval::EvalArgs),
}

/// `rag index` flags.
#[derive(Args)]
pub struct IndexArgs {
    /// Knowledge-base directory (created when absent or empty).
    #[arg(long)]
    kb: PathBuf,
    /// JSONL file of documents.
    #[arg(long)]
    docs: PathBuf,
    /// Most whitespace tokens per passage (default 200 for a new knowledge base; an existing
    /// one keeps its own and refuses another value).
    #[arg(long)]
    chunk_tokens: Option<usize>,
    /// Tokens of whole trailing sentences repeated in the next passage (default: a fifth of
    /// --chunk-tokens).
    #[arg(long)]
    chunk_overlap: Option<usize>,
    /// Count --chunk-tokens in the tokens of this tokenizer (a directory with tokenizer.json,
    /// or the file) instead of whitespace words; a new knowledge base keeps a copy.
    #[arg(long)]
    chunk_tokenizer: Option<PathBuf>,
    /// Stemmer of the analysis chain of a new knowledge base: snowball (default), light-nb,
    /// light-nn, light-both (Lucene's NorwegianLightStemmer) or none.
    #[arg(long)]
    stemmer: Option<String>,
    /// BM25 k1 of a new knowledge base (finite, >= 0; default 1.2).
    #[arg(long, allow_negative_numbers = true)]
    k1: Option<f32>,
    /// BM25 b of a new knowledge base (in [0, 1]; default 0.75).
    #[arg(long, allow_negative_numbers = true)]
    b: Option<f32>,
    #[command(flatten)]
    dense: crate::rag_dense::IndexDenseArgs,
}

/// `rag delete` flags.
#[derive(Args)]
pub struct DeleteArgs {
    /// Knowledge-base directory.
    #[arg(long)]
    kb: PathBuf,
    /// Document id to delete (repeatable; every id must exist, else nothing is deleted).
    #[arg(long, required = true)]
    id: Vec<String>,
}

/// `rag search` flags.
#[derive(Args)]
pub struct SearchArgs {
    /// Knowledge-base directory.
    #[arg(long)]
    kb: PathBuf,
    /// Query text.
    #[arg(long)]
    query: String,
    /// Number of hits.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// BM25 k1 for this search (default: the knowledge base's).
    #[arg(long, allow_negative_numbers = true)]
    k1: Option<f32>,
    /// BM25 b for this search (default: the knowledge base's).
    #[arg(long, allow_negative_numbers = true)]
    b: Option<f32>,
    #[command(flatten)]
    dense: crate::rag_dense::SearchDenseArgs,
    #[command(flatten)]
    rerank: crate::rag_rerank::RerankArgs,
}

/// Runs `tilpass rag ...`.
pub fn rag_cmd(c: RagCommand) -> Result<()> {
    match c {
        RagCommand::Index(a) => index_cmd(a),
        RagCommand::Delete(a) => delete_cmd(a),
        RagCommand::Search(a) => search_cmd(a),
        RagCommand::Ask(a) => crate::rag_ask::ask_cmd(a),
        RagCommand::Eval(a) => crate::rag_eval::eval_cmd(a),
    }
}

/// Every document of a JSONL file, checked (well-formed rows, ids unique in the file), in
/// order; errors name file:line.
fn read_docs(path: &Path) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for line in tilpass::core::TextLines::open(path)? {
        let (n, text) = line?;
        if text.trim().is_empty() {
            continue;
        }
        let source_name = format!("{}:{n}", path.display());
        let doc: Document = serde_json::from_str(&text).map_err(|e| RagError::InvalidDocument {
            source_name: source_name.clone(),
            message: format!(
                "{e}; expected a JSON object {{\"id\": string, \"text\": string, \
                     \"title\"?: string, \"meta\"?: any}}"
            ),
        })?;
        doc.validate(&source_name)?;
        if let Some(first) = seen.insert(doc.id.clone(), n) {
            return Err(RagError::InvalidDocument {
                source_name,
                message: format!("id {:?} already given on line {first}", doc.id),
            }
            .into());
        }
        docs.push(doc);
    }
    if docs.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no documents (expected JSONL rows {{\"id\", \"text\"}})",
            path.display()
        )));
    }
    Ok(docs)
}

fn index_cmd(a: IndexArgs) -> Result<()> {
    let start = std::time::Instant::now();
    let docs = read_docs(&a.docs)?;
    let existing = a.kb.join(MANIFEST_FILE).is_file();
    let stemmer = a
        .stemmer
        .as_deref()
        .map(str::parse::<StemmerKind>)
        .transpose()?;
    let kb = if existing {
        let kb = KnowledgeBase::open(&a.kb)?;
        let have = &kb.manifest().chunker;
        let clash = a.chunk_tokens.is_some_and(|n| n != have.max_tokens)
            || a.chunk_overlap.is_some_and(|n| n != have.overlap_tokens)
            || (a.chunk_tokenizer.is_some() && have.unit != TokenUnit::Tokenizer);
        if clash {
            return Err(RagError::InvalidSetting {
                setting: "chunk_tokens".into(),
                message: format!(
                    "{} was chunked with {} tokens ({:?}) and {} overlap; one chunking per \
                     knowledge base (leave --chunk-tokens/--chunk-overlap/--chunk-tokenizer out \
                     or use a new --kb)",
                    a.kb.display(),
                    have.max_tokens,
                    have.unit,
                    have.overlap_tokens
                ),
            }
            .into());
        }
        let m = kb.manifest();
        let settings_clash = stemmer.is_some_and(|s| s != m.analysis.stemmer)
            || a.k1.is_some_and(|k1| k1 != m.bm25.k1)
            || a.b.is_some_and(|b| b != m.bm25.b);
        if settings_clash {
            return Err(RagError::InvalidSetting {
                setting: "stemmer/k1/b".into(),
                message: format!(
                    "{} was made with stemmer {} and BM25 k1 {} b {}; these are fixed at \
                     creation (use --k1/--b of `rag search` to try other BM25 parameters)",
                    a.kb.display(),
                    m.analysis.stemmer.name(),
                    m.bm25.k1,
                    m.bm25.b
                ),
            }
            .into());
        }
        kb
    } else {
        let d = ChunkerConfig::default();
        let max_tokens = a.chunk_tokens.unwrap_or(d.max_tokens);
        let tokenizer = match &a.chunk_tokenizer {
            None => None,
            Some(p) if p.is_dir() => Some(tilpass::tokenize::Tokenizer::from_dir(p)?),
            Some(p) => Some(tilpass::tokenize::Tokenizer::from_file(p)?),
        };
        let chunker = ChunkerConfig {
            unit: if tokenizer.is_some() {
                TokenUnit::Tokenizer
            } else {
                TokenUnit::Whitespace
            },
            max_tokens,
            overlap_tokens: a.chunk_overlap.unwrap_or(max_tokens / 5),
            tokenizer_source: a.chunk_tokenizer.as_ref().map(|p| p.display().to_string()),
        };
        chunker.validate()?;
        let dflt = Bm25Params::default();
        let bm25 = Bm25Params {
            k1: a.k1.unwrap_or(dflt.k1),
            b: a.b.unwrap_or(dflt.b),
        };
        bm25.validate()?;
        let analysis = AnalysisConfig {
            stemmer: stemmer.unwrap_or(StemmerKind::Snowball),
            ..Default::default()
        };
        KnowledgeBase::create_with(
            &a.kb,
            KbOptions {
                analysis,
                chunker,
                bm25,
                chunk_tokenizer: tokenizer.map(std::sync::Arc::new),
            },
        )?
    };
    let embedder = a.dense.load()?;
    let mut w = kb.writer()?;
    if let Some(e) = &embedder {
        a.dense.attach(&kb, &mut w, e)?;
    }
    let mut replaced = 0usize;
    let mut passages = 0usize;
    for (i, d) in docs.iter().enumerate() {
        if kb.contains(&d.id)? {
            replaced += 1;
        }
        passages += w.upsert(d)?;
        if (i + 1) % 1000 == 0 {
            eprintln!("indexed {} / {} documents", i + 1, docs.len());
        }
    }
    eprintln!("committing {} documents ({passages} passages)", docs.len());
    let stats = w.commit()?;
    w.close()?;
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} documents ({replaced} replaced), {} passages in the knowledge base, {seconds:.2}s",
        a.kb.display(),
        docs.len(),
        stats.passages
    );
    let mut out = json!({
        "kb": a.kb,
        "documents": docs.len(),
        "replaced": replaced,
        "passages": stats.passages,
        "seconds": seconds,
    });
    if let Some(r) = a.dense.report(&kb)? {
        out["recall"] = r;
    }
    print(&out);
    Ok(())
}

fn delete_cmd(a: DeleteArgs) -> Result<()> {
    let kb = KnowledgeBase::open(&a.kb)?;
    // Every id is checked before anything is staged.
    for id in &a.id {
        if !kb.contains(id)? {
            return Err(RagError::UnknownId { id: id.clone() }.into());
        }
    }
    let mut w = kb.writer()?;
    let mut deleted = Vec::new();
    for id in &a.id {
        if !deleted.contains(id) {
            w.delete(id)?;
            deleted.push(id.clone());
        }
    }
    let stats = w.commit()?;
    w.close()?;
    eprintln!(
        "{}: deleted {} documents; {} passages left",
        a.kb.display(),
        deleted.len(),
        stats.passages
    );
    print(&json!({"deleted": deleted, "passages": stats.passages}));
    Ok(())
}

fn search_cmd(a: SearchArgs) -> Result<()> {
    if a.query.trim().is_empty() {
        return Err(RagError::EmptyQuery.into());
    }
    a.rerank.check()?;
    let kb = KnowledgeBase::open(&a.kb)?;
    let m = kb.manifest().bm25;
    let bm25 = Bm25Params {
        k1: a.k1.unwrap_or(m.k1),
        b: a.b.unwrap_or(m.b),
    };
    if let Some(ce) = a.rerank.load()? {
        use crate::rag_dense::{Mode, mode_hits, query_embedder};
        let e = match a.dense.mode {
            Mode::Bm25 => None,
            _ => Some(query_embedder(&kb, &a.dense)?),
        };
        let depth = a.rerank.depth(a.k);
        let hits = mode_hits(&kb, e.as_ref(), &a.query, depth, bm25, &a.dense)?;
        let hits = crate::rag_rerank::rerank_hits(&ce, &a.query, hits, a.rerank.rerank_top, a.k)?;
        print(&json!({ "hits": crate::rag_rerank::to_json(&hits)? }));
        return Ok(());
    }
    if a.dense.mode != crate::rag_dense::Mode::Bm25 {
        print(&crate::rag_dense::search(
            &kb, &a.query, a.k, bm25, &a.dense,
        )?);
        return Ok(());
    }
    let hits = kb.search_with(&a.query, a.k, bm25)?;
    let hits = serde_json::to_value(&hits).map_err(|e| Error::invalid(e.to_string()))?;
    print(&json!({ "hits": hits }));
    Ok(())
}
