//! `tilpass rag index|delete|search`: a knowledge base on disk (tilpass-rag) with BM25 search
//! over the Norwegian analysis chain. JSON on stdout, progress on stderr.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;
use tilpass::rag::{
    AnalysisConfig, ChunkerConfig, Document, KnowledgeBase, MANIFEST_FILE, RagError,
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
    /// best first (start/end: character span of the passage in its document).
    Search(SearchArgs),
    /// Answer a question from the knowledge base with a decoder, citing passages as [n];
    /// prints {"answer", "citations": [{"n", "id", "title", "start", "end"}],
    /// "invalid_citations", ...}.
    Ask(crate::rag_ask::AskArgs),
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
}

/// Runs `tilpass rag ...`.
pub fn rag_cmd(c: RagCommand) -> Result<()> {
    match c {
        RagCommand::Index(a) => index_cmd(a),
        RagCommand::Delete(a) => delete_cmd(a),
        RagCommand::Search(a) => search_cmd(a),
        RagCommand::Ask(a) => crate::rag_ask::ask_cmd(a),
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
    let kb = if existing {
        let kb = KnowledgeBase::open(&a.kb)?;
        let have = &kb.manifest().chunker;
        let clash = a.chunk_tokens.is_some_and(|n| n != have.max_tokens)
            || a.chunk_overlap.is_some_and(|n| n != have.overlap_tokens);
        if clash {
            return Err(RagError::InvalidSetting {
                setting: "chunk_tokens".into(),
                message: format!(
                    "{} was chunked with {} tokens and {} overlap; one chunking per knowledge \
                     base (leave --chunk-tokens/--chunk-overlap out or use a new --kb)",
                    a.kb.display(),
                    have.max_tokens,
                    have.overlap_tokens
                ),
            }
            .into());
        }
        kb
    } else {
        let d = ChunkerConfig::default();
        let max_tokens = a.chunk_tokens.unwrap_or(d.max_tokens);
        let chunker = ChunkerConfig {
            max_tokens,
            overlap_tokens: a.chunk_overlap.unwrap_or(max_tokens / 5),
            ..d
        };
        chunker.validate()?;
        KnowledgeBase::create(&a.kb, AnalysisConfig::default(), chunker)?
    };
    let mut w = kb.writer()?;
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
    print(&json!({
        "kb": a.kb,
        "documents": docs.len(),
        "replaced": replaced,
        "passages": stats.passages,
        "seconds": seconds,
    }));
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
    let kb = KnowledgeBase::open(&a.kb)?;
    let hits = kb.search(&a.query, a.k)?;
    let hits = serde_json::to_value(&hits).map_err(|e| Error::invalid(e.to_string()))?;
    print(&json!({ "hits": hits }));
    Ok(())
}
