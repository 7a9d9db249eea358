//! The knowledge base on disk: one directory with a manifest (`tilpass-kb.json`: format
//! version, analysis, chunker, BM25 and embedder settings) and a tantivy index (`index/`:
//! segments, commits, deletes, merges, mmap) holding one tantivy document per passage.
//!
//! - Add / update / delete are incremental: [`KbWriter::upsert`] replaces every passage of a
//!   document id, [`KbWriter::delete`] removes them; nothing is visible before
//!   [`KbWriter::commit`], and a kill at any point leaves the last commit readable (tantivy
//!   writes `meta.json` atomically after the segment files).
//! - A commit that deleted passages merges the segments holding them and collects the files
//!   of the old segments, so the text and the terms of a deleted document are gone from the
//!   bytes on disk once `commit` returns (tantivy otherwise keeps tombstoned documents until a
//!   merge).
//! - Readers ([`KnowledgeBase::open`] in any number of processes) see the last commit while one
//!   writer (tantivy's writer lock) works.
//! - Search scores with [`crate::bm25`] over tantivy's postings and field norms, so `k1` and `b`
//!   are the manifest's (or a search's) rather than tantivy's fixed 1.2 / 0.75.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tantivy::directory::error::LockError;
use tantivy::indexer::NoMergePolicy;
use tantivy::query::TermQuery;
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, TantivyDocument, TantivyError,
    Term,
};

use crate::analysis::{ANALYZER_NAME, AnalysisConfig, analyze};
pub use crate::bm25::Bm25Params;
use crate::chunk::{Chunker, ChunkerConfig, TokenUnit};
use crate::error::{RagError, Result};

// Dense vectors, HNSW and hybrid search (a child module: it reaches the index and the writer).
#[path = "kb_dense.rs"]
mod dense;
pub use dense::{DENSE_DIR, DenseIndex};

/// File name of the manifest inside a knowledge-base directory.
pub const MANIFEST_FILE: &str = "tilpass-kb.json";
/// The `format` field of a manifest.
pub const FORMAT_NAME: &str = "tilpass-kb";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The copy of the chunking tokenizer in a knowledge base chunked by tokenizer tokens.
pub const CHUNK_TOKENIZER_FILE: &str = "chunk-tokenizer.json";
/// Sub-directory of the tantivy index.
const INDEX_DIR: &str = "index";
/// Memory of the indexing thread (tantivy's arena; at least 15 MB).
const WRITER_MEMORY: usize = 64 << 20;
/// Segments beyond this number are merged into one at commit.
const MAX_SEGMENTS: usize = 8;
/// Bytes per block of the stored passages (tantivy's default 16 KiB): reading one hit copies its
/// whole block out of the file, so small blocks keep a search's ten reads cheap (a 4 KiB block
/// holds about ten passages of 300-400 bytes).
const DOCSTORE_BLOCK_BYTES: usize = 4096;
/// Longest document id, in bytes.
const MAX_ID_BYTES: usize = 512;

/// The manifest of a knowledge base (`tilpass-kb.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written by this build.
    pub format_version: u32,
    /// The analysis chain of the text field.
    pub analysis: AnalysisConfig,
    /// How documents were cut into passages.
    pub chunker: ChunkerConfig,
    /// BM25 parameters of [`KnowledgeBase::search`] (set at creation; `k1 >= 0`, `b` in
    /// `[0, 1]`).
    pub bm25: Bm25Params,
    /// The dense embedder (path-independent identity: model type, width, pooling,
    /// fingerprint of the model files); `null` for a BM25-only knowledge base.
    pub embedder: Option<crate::dense::EmbedderIdentity>,
}

/// Settings of a new knowledge base ([`KnowledgeBase::create_with`]).
#[derive(Debug, Clone, Default)]
pub struct KbOptions {
    /// The analysis chain.
    pub analysis: AnalysisConfig,
    /// How documents are cut into passages.
    pub chunker: ChunkerConfig,
    /// BM25 parameters of [`KnowledgeBase::search`].
    pub bm25: Bm25Params,
    /// The tokenizer counting the chunker's tokens, for [`TokenUnit::Tokenizer`] (copied into
    /// the knowledge base as [`CHUNK_TOKENIZER_FILE`]).
    pub chunk_tokenizer: Option<std::sync::Arc<tilpass_tokenize::Tokenizer>>,
}

/// A document to index: a JSONL row `{"id", "text", "title"?, "meta"?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Unique id; indexing an existing id replaces the document.
    pub id: String,
    /// The text, cut into passages.
    pub text: String,
    /// Optional title, returned with each hit.
    #[serde(default)]
    pub title: Option<String>,
    /// Optional metadata (any JSON), stored with each passage.
    #[serde(default)]
    pub meta: Option<serde_json::Value>,
}

impl Document {
    /// Checks the id and text; `source_name` (`file:line`) goes into the error.
    pub fn validate(&self, source_name: &str) -> Result<()> {
        let bad = |m: String| RagError::InvalidDocument {
            source_name: source_name.to_string(),
            message: m,
        };
        if self.id.trim().is_empty() {
            return Err(bad("empty \"id\"; expected a non-empty string".into()));
        }
        if self.id.len() > MAX_ID_BYTES {
            return Err(bad(format!(
                "\"id\" of {} bytes; expected at most {MAX_ID_BYTES}",
                self.id.len()
            )));
        }
        if self.text.split_whitespace().next().is_none() {
            return Err(bad(format!(
                "document {:?} has no text; expected a non-empty \"text\"",
                self.id
            )));
        }
        Ok(())
    }
}

/// One search hit: a passage with its document's id and title and its span in the document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Document id.
    pub id: String,
    /// BM25 score (f32): Lucene's `BM25Similarity` times `k1 + 1`, as tantivy scores.
    pub score: f32,
    /// Passage text.
    pub passage: String,
    /// First character of the passage in the document.
    pub start: u64,
    /// One past its last character.
    pub end: u64,
    /// Document title, if any.
    pub title: Option<String>,
    /// Passage number within the document (0-based).
    pub ord: u64,
    /// Document metadata, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

/// The tantivy fields of a passage.
#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    text: Field,
    title: Field,
    meta: Field,
    ord: Field,
    start: Field,
    end: Field,
}

fn schema() -> Schema {
    let mut b = Schema::builder();
    b.add_text_field("id", STRING | STORED);
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(ANALYZER_NAME)
        .set_index_option(IndexRecordOption::WithFreqs);
    b.add_text_field(
        "text",
        TextOptions::default()
            .set_indexing_options(indexing)
            .set_stored(),
    );
    b.add_text_field("title", TextOptions::default().set_stored());
    b.add_text_field("meta", TextOptions::default().set_stored());
    let num = NumericOptions::default().set_stored();
    b.add_u64_field("ord", num.clone());
    b.add_u64_field("start", num.clone());
    b.add_u64_field("end", num);
    b.build()
}

/// A knowledge base opened for reading (and for writing through [`KnowledgeBase::writer`]).
pub struct KnowledgeBase {
    dir: PathBuf,
    manifest: Manifest,
    index: Index,
    reader: IndexReader,
    fields: Fields,
    analyzer: TextAnalyzer,
    chunker: Chunker,
    dense: dense::DenseCache,
}

impl std::fmt::Debug for KnowledgeBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeBase")
            .field("dir", &self.dir)
            .field("manifest", &self.manifest)
            .finish()
    }
}

fn index_err(dir: &Path, e: TantivyError) -> RagError {
    match e {
        TantivyError::LockFailure(LockError::LockBusy, _) => RagError::Locked {
            path: dir.to_path_buf(),
        },
        TantivyError::DataCorruption(_)
        | TantivyError::IncompatibleIndex(_)
        | TantivyError::OpenReadError(_)
        | TantivyError::DeserializeError(_)
        | TantivyError::SchemaError(_) => RagError::Corrupt {
            path: dir.to_path_buf(),
            message: e.to_string(),
        },
        e => RagError::Index {
            path: dir.to_path_buf(),
            message: e.to_string(),
        },
    }
}

impl KnowledgeBase {
    /// Creates a knowledge base in `dir` (absent or empty). The manifest and the empty index
    /// are built in a temporary directory beside it and renamed into place, so `dir` appears
    /// whole or not at all.
    pub fn create(
        dir: impl AsRef<Path>,
        analysis: AnalysisConfig,
        chunker: ChunkerConfig,
    ) -> Result<Self> {
        Self::create_with(
            dir,
            KbOptions {
                analysis,
                chunker,
                ..Default::default()
            },
        )
    }

    /// [`KnowledgeBase::create`] with every setting: BM25 parameters other than Lucene's
    /// defaults, chunking by the tokens of a tokenizer (checked before anything is written).
    pub fn create_with(dir: impl AsRef<Path>, options: KbOptions) -> Result<Self> {
        let KbOptions {
            analysis,
            chunker,
            bm25,
            chunk_tokenizer,
        } = options;
        let dir = dir.as_ref();
        bm25.validate()?;
        analysis.validate()?;
        Chunker::new(chunker.clone(), chunk_tokenizer.clone())?;
        if dir.exists() {
            let mut entries =
                std::fs::read_dir(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
            if entries.next().is_some() {
                return Err(if dir.join(MANIFEST_FILE).exists() {
                    RagError::InvalidSetting {
                        setting: "kb".into(),
                        message: format!("{} already holds a knowledge base", dir.display()),
                    }
                } else {
                    RagError::Foreign {
                        path: dir.to_path_buf(),
                        reason: format!("a non-empty directory without {MANIFEST_FILE}"),
                    }
                });
            }
        }
        let manifest = Manifest {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            analysis,
            chunker,
            bm25,
            embedder: None,
        };
        let tmp = tilpass_core::temp_dir_for(dir)?;
        let built = (|| -> Result<()> {
            let index_dir = tmp.join(INDEX_DIR);
            std::fs::create_dir(&index_dir).map_err(|e| tilpass_core::Error::io(&index_dir, e))?;
            if let Some(t) = &chunk_tokenizer {
                let path = tmp.join(CHUNK_TOKENIZER_FILE);
                t.inner().save(&path, false).map_err(|e| {
                    tilpass_core::Error::invalid(format!("{}: {e}", path.display()))
                })?;
            }
            Index::builder()
                .schema(schema())
                .settings(IndexSettings {
                    docstore_blocksize: DOCSTORE_BLOCK_BYTES,
                    ..IndexSettings::default()
                })
                .create_in_dir(&index_dir)
                .map_err(|e| index_err(dir, e))?;
            let json = serde_json::to_string_pretty(&manifest)
                .map_err(|e| tilpass_core::Error::invalid(e.to_string()))?;
            tilpass_core::write_atomic(tmp.join(MANIFEST_FILE), json + "\n")?;
            if dir.exists() {
                std::fs::remove_dir(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
            }
            std::fs::rename(&tmp, dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
            Ok(())
        })();
        tilpass_core::forget_temp(&tmp);
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Self::open(dir)
    }

    /// Opens an existing knowledge base; a directory without a manifest, with a manifest of
    /// another format or version, or with a damaged index is a typed error.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(RagError::Foreign {
                path: dir.to_path_buf(),
                reason: "no such directory".into(),
            });
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.is_file() {
            return Err(RagError::Foreign {
                path: dir.to_path_buf(),
                reason: format!("no {MANIFEST_FILE}"),
            });
        }
        let value: serde_json::Value =
            tilpass_core::read_json(&manifest_path).map_err(|e| RagError::Corrupt {
                path: manifest_path.clone(),
                message: e.to_string(),
            })?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
            return Err(RagError::Foreign {
                path: dir.to_path_buf(),
                reason: format!("{MANIFEST_FILE} does not say \"format\": \"{FORMAT_NAME}\""),
            });
        }
        let version = value.get("format_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(FORMAT_VERSION)) {
            return match version {
                Some(v) => Err(RagError::UnsupportedVersion {
                    path: manifest_path,
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                    expected: FORMAT_VERSION,
                }),
                None => Err(RagError::Corrupt {
                    path: manifest_path,
                    message: "no integer \"format_version\"".into(),
                }),
            };
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| RagError::Corrupt {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        manifest.bm25.validate().map_err(|e| RagError::Corrupt {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        let analyzer = manifest.analysis.analyzer()?;
        let chunk_tokenizer = match manifest.chunker.unit {
            TokenUnit::Whitespace => None,
            TokenUnit::Tokenizer => {
                let path = dir.join(CHUNK_TOKENIZER_FILE);
                let t = tilpass_tokenize::Tokenizer::from_file(&path).map_err(|e| {
                    RagError::Corrupt {
                        path: path.clone(),
                        message: format!("the chunking tokenizer does not load: {e}"),
                    }
                })?;
                Some(std::sync::Arc::new(t))
            }
        };
        let chunker = Chunker::new(manifest.chunker.clone(), chunk_tokenizer)?;
        let index_dir = dir.join(INDEX_DIR);
        if !index_dir.is_dir() {
            return Err(RagError::Corrupt {
                path: dir.to_path_buf(),
                message: format!("no {INDEX_DIR}/ directory"),
            });
        }
        let index = Index::open_in_dir(&index_dir).map_err(|e| RagError::Corrupt {
            path: index_dir.clone(),
            message: e.to_string(),
        })?;
        if index.schema() != schema() {
            return Err(RagError::Corrupt {
                path: index_dir,
                message: "the index schema is not a tilpass knowledge base's".into(),
            });
        }
        index.tokenizers().register(ANALYZER_NAME, analyzer.clone());
        let s = index.schema();
        let f = |name: &str| s.get_field(name).map_err(|e| index_err(dir, e));
        let fields = Fields {
            id: f("id")?,
            text: f("text")?,
            title: f("title")?,
            meta: f("meta")?,
            ord: f("ord")?,
            start: f("start")?,
            end: f("end")?,
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| RagError::Corrupt {
                path: dir.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            index,
            reader,
            fields,
            analyzer,
            chunker,
            dense: Default::default(),
        })
    }

    /// Opens `dir` if it holds a knowledge base, else creates one with these settings. An
    /// existing knowledge base must have been chunked with `chunker` (else
    /// [`RagError::InvalidSetting`]).
    pub fn open_or_create(
        dir: impl AsRef<Path>,
        analysis: AnalysisConfig,
        chunker: ChunkerConfig,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let empty = !dir.exists()
            || std::fs::read_dir(dir)
                .map_err(|e| tilpass_core::Error::io(dir, e))?
                .next()
                .is_none();
        if empty {
            return Self::create(dir, analysis, chunker);
        }
        let kb = Self::open(dir)?;
        if kb.manifest.chunker != chunker {
            return Err(RagError::InvalidSetting {
                setting: "chunk_tokens".into(),
                message: format!(
                    "{} was chunked with {:?}; got {:?} (one chunking per knowledge base)",
                    dir.display(),
                    kb.manifest.chunker,
                    chunker
                ),
            });
        }
        if kb.manifest.analysis != analysis {
            return Err(RagError::InvalidSetting {
                setting: "analysis".into(),
                message: format!(
                    "{} was analysed with {:?}; got {:?}",
                    dir.display(),
                    kb.manifest.analysis,
                    analysis
                ),
            });
        }
        Ok(kb)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The chunker (with its tokenizer when chunking by tokenizer tokens).
    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }

    /// The terms the analysis chain makes of `text` (what BM25 scores).
    pub fn analyze(&self, text: &str) -> Vec<String> {
        analyze(&mut self.analyzer.clone(), text)
    }

    /// Reloads the reader to the last commit (of this or another process).
    pub fn reload(&self) -> Result<()> {
        self.reader.reload().map_err(|e| index_err(&self.dir, e))
    }

    /// Passages in the last commit the reader sees.
    pub fn num_passages(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether document `id` has passages in the last commit the reader sees.
    pub fn contains(&self, id: &str) -> Result<bool> {
        let term = Term::from_field_text(self.fields.id, id);
        let searcher = self.reader.searcher();
        // doc_freq counts tombstoned passages too; count live ones.
        let n = searcher
            .search(
                &TermQuery::new(term, IndexRecordOption::Basic),
                &tantivy::collector::Count,
            )
            .map_err(|e| index_err(&self.dir, e))?;
        Ok(n > 0)
    }

    /// The `k` best passages for `query` by BM25 with the manifest's parameters (best first;
    /// equal scores in index order). Each analysed query term counts once per occurrence (as one
    /// `SHOULD` clause each in Lucene's query parser). A query whose terms are all stop words
    /// finds nothing; a query without any text is [`RagError::EmptyQuery`].
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>> {
        self.search_with(query, k, self.manifest.bm25)
    }

    /// [`KnowledgeBase::search`] with other BM25 parameters than the manifest's (checked first;
    /// the index's statistics do not depend on them).
    pub fn search_with(&self, query: &str, k: usize, bm25: Bm25Params) -> Result<Vec<Hit>> {
        if query.trim().is_empty() {
            return Err(RagError::EmptyQuery);
        }
        if k == 0 {
            return Err(RagError::InvalidSetting {
                setting: "k".into(),
                message: "0 hits asked; expected at least 1".into(),
            });
        }
        bm25.validate()?;
        let terms = self.analyze(query);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let top = crate::bm25::top_k(&searcher, self.fields.text, &terms, bm25, k)
            .map_err(|e| index_err(&self.dir, e))?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let doc: TantivyDocument = searcher.doc(addr).map_err(|e| index_err(&self.dir, e))?;
            let text = |f: Field| {
                doc.get_first(f)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            };
            let num = |f: Field| doc.get_first(f).and_then(|v| v.as_u64());
            let corrupt = |what: &str| RagError::Corrupt {
                path: self.dir.clone(),
                message: format!("a passage without its stored {what}"),
            };
            let meta = match text(self.fields.meta) {
                Some(m) => Some(serde_json::from_str(&m).map_err(|_| corrupt("meta JSON"))?),
                None => None,
            };
            hits.push(Hit {
                id: text(self.fields.id).ok_or_else(|| corrupt("id"))?,
                score,
                passage: text(self.fields.text).ok_or_else(|| corrupt("text"))?,
                start: num(self.fields.start).ok_or_else(|| corrupt("start"))?,
                end: num(self.fields.end).ok_or_else(|| corrupt("end"))?,
                title: text(self.fields.title),
                ord: num(self.fields.ord).ok_or_else(|| corrupt("ord"))?,
                meta,
            });
        }
        Ok(hits)
    }

    /// Takes the writer lock (one writer per knowledge base; [`RagError::Locked`] when another
    /// holds it). Readers keep working while it writes.
    pub fn writer(&self) -> Result<KbWriter<'_>> {
        let writer: IndexWriter<TantivyDocument> = self
            .index
            .writer_with_num_threads(1, WRITER_MEMORY)
            .map_err(|e| index_err(&self.dir, e))?;
        writer.set_merge_policy(Box::new(NoMergePolicy));
        Ok(KbWriter {
            kb: self,
            writer: Some(writer),
            upserted: HashSet::new(),
            deleted: HashSet::new(),
            committed_empty: self.num_passages() == 0,
            purge: false,
            dense: Default::default(),
        })
    }
}

/// BM25 hits as `(score, address)`, best first (the pruning tests of `bm25`).
#[cfg(test)]
pub(crate) type ScoredAddresses = Vec<(f32, tantivy::DocAddress)>;

#[cfg(test)]
impl KnowledgeBase {
    /// Pruned and exhaustive BM25 of `query` (the pruning tests of `bm25`).
    pub(crate) fn bm25_both(
        &self,
        query: &str,
        k: usize,
        params: Bm25Params,
    ) -> (ScoredAddresses, ScoredAddresses) {
        let terms = self.analyze(query);
        let searcher = self.reader.searcher();
        let f = self.fields.text;
        (
            crate::bm25::top_k(&searcher, f, &terms, params, k).unwrap(),
            crate::bm25::top_k_exhaustive(&searcher, f, &terms, params, k).unwrap(),
        )
    }
}

/// Statistics of one commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CommitStats {
    /// Documents added or replaced.
    pub upserted: usize,
    /// Documents deleted.
    pub deleted: usize,
    /// Segments rewritten to drop deleted passages or to bound the segment count.
    pub merged_segments: usize,
    /// Passages in the knowledge base after the commit.
    pub passages: u64,
}

/// The single writer of a knowledge base: stages upserts and deletes; [`KbWriter::commit`]
/// makes them visible and durable. Dropped without a commit, the staged work is discarded.
pub struct KbWriter<'a> {
    kb: &'a KnowledgeBase,
    writer: Option<IndexWriter<TantivyDocument>>,
    upserted: HashSet<String>,
    deleted: HashSet<String>,
    /// Whether the last commit the reader sees has no passage (then no upserted id can replace
    /// a committed one: no lookup, no delete).
    committed_empty: bool,
    purge: bool,
    dense: dense::WriterDense<'a>,
}

impl std::fmt::Debug for KbWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KbWriter")
            .field("dir", &self.kb.dir)
            .finish()
    }
}

impl KbWriter<'_> {
    fn w(&mut self) -> &mut IndexWriter<TantivyDocument> {
        // Cannot fail: only `close(self)` takes the writer, and it consumes the KbWriter.
        self.writer.as_mut().expect("the writer lives until close")
    }

    /// Whether document `id` has live passages in the last commit the reader sees: nothing to
    /// look up in an empty knowledge base, a term-dictionary lookup for an id never indexed,
    /// and a count of live passages otherwise (the dictionary counts deleted ones too).
    fn committed_has(&self, id: &str) -> Result<bool> {
        if self.committed_empty {
            return Ok(false);
        }
        let term = Term::from_field_text(self.kb.fields.id, id);
        let df = self
            .kb
            .reader
            .searcher()
            .doc_freq(&term)
            .map_err(|e| index_err(&self.kb.dir, e))?;
        if df == 0 {
            return Ok(false);
        }
        self.kb.contains(id)
    }

    /// Stages document `doc` (replacing any document with its id); returns its passages.
    /// A new id costs no delete: only an id staged before or in the last commit is deleted
    /// first.
    pub fn upsert(&mut self, doc: &Document) -> Result<usize> {
        doc.validate(&format!("document {:?}", doc.id))?;
        let chunks = self.kb.chunker.chunk(&doc.text)?;
        let f = self.kb.fields;
        if self.upserted.contains(&doc.id) || self.committed_has(&doc.id)? {
            self.purge = true;
            self.w().delete_term(Term::from_field_text(f.id, &doc.id));
        }
        let meta = doc
            .meta
            .as_ref()
            // Cannot fail: a serde_json::Value (string keys, finite numbers) always serialises.
            .map(|m| serde_json::to_string(m).expect("a JSON value serialises"));
        for (ord, c) in chunks.iter().enumerate() {
            let mut d = TantivyDocument::default();
            d.add_text(f.id, &doc.id);
            d.add_text(f.text, &c.text);
            if let Some(t) = &doc.title {
                d.add_text(f.title, t);
            }
            if let Some(m) = &meta {
                d.add_text(f.meta, m);
            }
            d.add_u64(f.ord, ord as u64);
            d.add_u64(f.start, c.start as u64);
            d.add_u64(f.end, c.end as u64);
            let dir = self.kb.dir.clone();
            self.w().add_document(d).map_err(|e| index_err(&dir, e))?;
        }
        self.dense
            .stage(&doc.id, chunks.iter().map(|c| c.text.clone()));
        self.deleted.remove(&doc.id);
        self.upserted.insert(doc.id.clone());
        Ok(chunks.len())
    }

    /// Stages the deletion of document `id`; [`RagError::UnknownId`] when neither the last
    /// commit nor this writer holds it.
    pub fn delete(&mut self, id: &str) -> Result<()> {
        let known =
            (self.kb.contains(id)? && !self.deleted.contains(id)) || self.upserted.contains(id);
        if !known {
            return Err(RagError::UnknownId { id: id.to_string() });
        }
        let term = Term::from_field_text(self.kb.fields.id, id);
        self.w().delete_term(term);
        self.dense.unstage(id);
        self.upserted.remove(id);
        self.deleted.insert(id.to_string());
        self.purge = true;
        Ok(())
    }

    /// Commits the staged work; when passages were deleted or replaced, rewrites the segments
    /// holding them and removes the old segment files, so the deleted text and terms are no
    /// longer on disk. Then the knowledge base's reader sees the commit.
    pub fn commit(&mut self) -> Result<CommitStats> {
        let dir = self.kb.dir.clone();
        let err = |e| index_err(&dir, e);
        // With an embedder: the vector files first, then the commit whose payload names them.
        match self.stage_dense()? {
            Some(payload) => {
                let mut prepared = self.w().prepare_commit().map_err(err)?;
                prepared.set_payload(&payload);
                prepared.commit().map_err(err)?;
            }
            None => {
                self.w().commit().map_err(err)?;
            }
        }
        let mut merged = 0;
        if self.purge {
            // Segment ids only: a live `SegmentMeta` (here or in a searcher) keeps its files
            // from garbage collection.
            let with_deletes: Vec<_> = self
                .kb
                .index
                .searchable_segment_metas()
                .map_err(err)?
                .iter()
                .filter(|m| m.has_deletes())
                .map(|m| m.id())
                .collect();
            if !with_deletes.is_empty() {
                merged += with_deletes.len();
                self.w().merge(&with_deletes).wait().map_err(err)?;
            }
        }
        let ids = self.kb.index.searchable_segment_ids().map_err(err)?;
        if ids.len() > MAX_SEGMENTS {
            merged += ids.len();
            self.w().merge(&ids).wait().map_err(err)?;
        }
        // The reader lets go of the old segments before their files are collected.
        self.kb.reload()?;
        self.w().garbage_collect_files().wait().map_err(err)?;
        self.finish_dense()?;
        let stats = CommitStats {
            upserted: self.upserted.len(),
            deleted: self.deleted.len(),
            merged_segments: merged,
            passages: self.kb.num_passages(),
        };
        self.upserted.clear();
        self.deleted.clear();
        self.committed_empty = stats.passages == 0;
        self.purge = false;
        Ok(stats)
    }

    /// Waits for the writer's threads and releases the lock (staged work not committed is
    /// discarded).
    pub fn close(mut self) -> Result<()> {
        let dir = self.kb.dir.clone();
        if let Some(w) = self.writer.take() {
            w.wait_merging_threads().map_err(|e| index_err(&dir, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn doc(id: &str, text: &str) -> Document {
        Document {
            id: id.into(),
            text: text.into(),
            title: Some(format!("Tittel {id}")),
            meta: Some(serde_json::json!({"kilde": id})),
        }
    }

    fn new_kb(dir: &Path) -> KnowledgeBase {
        KnowledgeBase::create(dir, AnalysisConfig::default(), ChunkerConfig::default()).unwrap()
    }

    /// Every file under `dir`, recursively.
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

    fn bytes_contain(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
        files(dir)
            .into_iter()
            .filter(|p| {
                let b = std::fs::read(p).unwrap();
                b.windows(needle.len()).any(|w| w == needle)
            })
            .collect()
    }

    #[test]
    fn add_search_update_delete() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("kb");
        let kb = new_kb(&dir);
        let mut w = kb.writer().unwrap();
        w.upsert(&doc("a", "Kommunen har ansvar for skolen og barnehagene."))
            .unwrap();
        w.upsert(&doc(
            "b",
            "Fylkeskommunen driver videregående skoler og fylkesveier.",
        ))
        .unwrap();
        w.upsert(&doc(
            "c",
            "Staten driver sykehusene gjennom helseforetakene.",
        ))
        .unwrap();
        let s = w.commit().unwrap();
        assert_eq!((s.upserted, s.passages), (3, 3));
        let hits = kb.search("skolen", 10).unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.contains(&"a") && ids.contains(&"b"));
        let h = &hits[0];
        assert_eq!(
            h.title.as_deref(),
            Some(format!("Tittel {}", h.id).as_str())
        );
        assert_eq!(h.meta, Some(serde_json::json!({"kilde": h.id})));
        assert_eq!((h.start, h.end), (0, h.passage.chars().count() as u64));

        // Update: same id replaces every passage.
        w.upsert(&doc("a", "Kommunen har ansvar for vann og avløp."))
            .unwrap();
        let s = w.commit().unwrap();
        assert_eq!(s.passages, 3);
        let ids: Vec<String> = kb
            .search("skolen", 10)
            .unwrap()
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(ids, ["b"]);
        assert_eq!(kb.search("avløp", 10).unwrap()[0].id, "a");

        // Delete, unknown id, empty query.
        w.delete("b").unwrap();
        assert!(matches!(w.delete("b"), Err(RagError::UnknownId { .. })));
        assert!(matches!(w.delete("zz"), Err(RagError::UnknownId { .. })));
        w.commit().unwrap();
        assert!(kb.search("skolen", 10).unwrap().is_empty());
        assert!(!kb.contains("b").unwrap());
        assert_eq!(kb.num_passages(), 2);
        assert!(matches!(kb.search("  ", 10), Err(RagError::EmptyQuery)));
        // Only stop words: nothing to score.
        assert!(kb.search("og i på", 10).unwrap().is_empty());
        w.close().unwrap();

        // Reopened from disk.
        let kb2 = KnowledgeBase::open(&dir).unwrap();
        assert_eq!(kb2.num_passages(), 2);
        assert_eq!(kb2.manifest().format_version, FORMAT_VERSION);
    }

    #[test]
    fn delete_removes_text_and_terms_from_disk() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("kb");
        let kb = new_kb(&dir);
        let mut w = kb.writer().unwrap();
        for i in 0..30 {
            w.upsert(&doc(
                &format!("d{i}"),
                &format!("Vanlig tekst nummer {i} om kommunen."),
            ))
            .unwrap();
        }
        w.commit().unwrap();
        // Another segment, holding the secret beside other documents.
        w.upsert(&doc(
            "secret",
            "Personnummeret til Kari er qzxwvhemmelig og skal slettes.",
        ))
        .unwrap();
        w.upsert(&doc(
            "other",
            "Et annet dokument i samme segment om fylket.",
        ))
        .unwrap();
        w.commit().unwrap();
        let needle = b"qzxwvhemmelig";
        assert!(
            !bytes_contain(&dir, needle).is_empty(),
            "the secret is indexed"
        );
        assert_eq!(kb.search("qzxwvhemmelig", 5).unwrap().len(), 1);
        w.delete("secret").unwrap();
        let s = w.commit().unwrap();
        assert!(s.merged_segments >= 1);
        let left = bytes_contain(&dir, needle);
        assert!(left.is_empty(), "deleted text still on disk in {left:?}");
        assert!(bytes_contain(&dir, b"Personnummeret").is_empty());
        assert!(kb.search("qzxwvhemmelig", 5).unwrap().is_empty());
        assert_eq!(kb.num_passages(), 31);
        assert_eq!(kb.search("fylket", 5).unwrap()[0].id, "other");
        // An update purges the replaced text too.
        w.upsert(&doc("other", "Ny tekst uten det gamle ordet."))
            .unwrap();
        w.commit().unwrap();
        assert!(bytes_contain(&dir, b"samme segment").is_empty());
        w.close().unwrap();
    }

    #[test]
    fn readers_see_last_commit_while_a_writer_works() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("kb");
        let kb = new_kb(&dir);
        let mut w = kb.writer().unwrap();
        w.upsert(&doc("a", "Første versjon om kommunen.")).unwrap();
        w.commit().unwrap();
        // A second opening (as another process would) reads while the writer stages work.
        let reader = KnowledgeBase::open(&dir).unwrap();
        assert!(matches!(reader.writer(), Err(RagError::Locked { .. })));
        w.upsert(&doc("b", "Andre dokument om fylket.")).unwrap();
        assert_eq!(reader.num_passages(), 1);
        assert!(reader.search("fylket", 5).unwrap().is_empty());
        w.commit().unwrap();
        reader.reload().unwrap();
        assert_eq!(reader.search("fylket", 5).unwrap()[0].id, "b");
        // Staged work dropped without a commit (a crash) leaves the last commit.
        w.upsert(&doc("c", "Aldri lagret om staten.")).unwrap();
        drop(w);
        let again = KnowledgeBase::open(&dir).unwrap();
        assert_eq!(again.num_passages(), 2);
        assert!(again.search("staten", 5).unwrap().is_empty());
        // The lock is free again.
        again.writer().unwrap().close().unwrap();
    }

    #[test]
    fn concurrent_readers_see_only_whole_commits() {
        use std::sync::atomic::{AtomicBool, Ordering};
        const BATCH: usize = 5;
        const COMMITS: usize = 24;
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("kb");
        let kb = new_kb(&dir);
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let readers: Vec<_> = (0..2)
                .map(|r| {
                    let (dir, done) = (&dir, &done);
                    scope.spawn(move || {
                        // Another opening, as another process would make.
                        let kb = KnowledgeBase::open(dir).unwrap();
                        let mut rounds = 0usize;
                        let mut seen = std::collections::BTreeSet::new();
                        while !done.load(Ordering::SeqCst) || rounds < 3 {
                            kb.reload().unwrap_or_else(|e| panic!("reader {r}: {e}"));
                            let n = kb.num_passages() as usize;
                            assert_eq!(n % BATCH, 0, "reader {r}: {n} passages, half a commit");
                            let hits = kb
                                .search("felles", 1000)
                                .unwrap_or_else(|e| panic!("reader {r}: {e}"));
                            assert_eq!(hits.len(), n, "reader {r}");
                            let mut per: HashMap<String, usize> = HashMap::new();
                            for h in &hits {
                                let b = h.id.split('-').next().unwrap().to_string();
                                *per.entry(b).or_default() += 1;
                            }
                            assert!(
                                per.values().all(|&c| c == BATCH),
                                "reader {r}: a partial batch {per:?}"
                            );
                            seen.insert(n);
                            rounds += 1;
                        }
                        (rounds, seen.len())
                    })
                })
                .collect();
            let mut w = kb.writer().unwrap();
            for c in 0..COMMITS {
                for i in 0..BATCH {
                    w.upsert(&doc(
                        &format!("b{c}-{i}"),
                        &format!("Felles tekst for runde {c}, dokument {i}, om kommunen."),
                    ))
                    .unwrap();
                }
                // Every third commit also deletes an older batch whole (merges, collects files)
                // and rewrites another one in place.
                if c % 3 == 2 {
                    for i in 0..BATCH {
                        w.delete(&format!("b{}-{i}", c - 2)).unwrap();
                        w.upsert(&doc(
                            &format!("b{}-{i}", c - 1),
                            &format!("Felles ny tekst {c} {i}."),
                        ))
                        .unwrap();
                    }
                }
                w.commit().unwrap();
            }
            w.close().unwrap();
            done.store(true, Ordering::SeqCst);
            for r in readers {
                let (rounds, distinct) = r.join().unwrap();
                assert!(rounds >= 3 && distinct >= 1, "{rounds} {distinct}");
            }
        });
        assert_eq!(kb.num_passages() as usize, BATCH * (COMMITS - COMMITS / 3));
    }

    #[test]
    fn foreign_corrupt_and_future_directories_are_typed_errors() {
        let t = tempfile::tempdir().unwrap();
        let foreign = t.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("notes.txt"), "hei").unwrap();
        assert!(matches!(
            KnowledgeBase::open(&foreign),
            Err(RagError::Foreign { .. })
        ));
        assert!(matches!(
            KnowledgeBase::create(
                &foreign,
                AnalysisConfig::default(),
                ChunkerConfig::default()
            ),
            Err(RagError::Foreign { .. })
        ));
        assert!(matches!(
            KnowledgeBase::open(t.path().join("missing")),
            Err(RagError::Foreign { .. })
        ));

        let dir = t.path().join("kb");
        drop(new_kb(&dir));
        let m = dir.join(MANIFEST_FILE);
        let good = std::fs::read_to_string(&m).unwrap();
        std::fs::write(&m, "{not json").unwrap();
        assert!(matches!(
            KnowledgeBase::open(&dir),
            Err(RagError::Corrupt { .. })
        ));
        std::fs::write(&m, good.replace("\"tilpass-kb\"", "\"other\"")).unwrap();
        assert!(matches!(
            KnowledgeBase::open(&dir),
            Err(RagError::Foreign { .. })
        ));
        std::fs::write(
            &m,
            good.replace("\"format_version\": 1", "\"format_version\": 9"),
        )
        .unwrap();
        assert!(matches!(
            KnowledgeBase::open(&dir),
            Err(RagError::UnsupportedVersion { found: 9, .. })
        ));
        std::fs::write(&m, &good).unwrap();
        KnowledgeBase::open(&dir).unwrap();
        // A damaged index.
        std::fs::write(dir.join(INDEX_DIR).join("meta.json"), "garbage").unwrap();
        assert!(matches!(
            KnowledgeBase::open(&dir),
            Err(RagError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(dir.join(INDEX_DIR)).unwrap();
        assert!(matches!(
            KnowledgeBase::open(&dir),
            Err(RagError::Corrupt { .. })
        ));
    }

    #[test]
    fn chunker_mismatch_and_bad_documents() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("kb");
        drop(new_kb(&dir));
        let other = ChunkerConfig {
            max_tokens: 50,
            ..Default::default()
        };
        assert!(matches!(
            KnowledgeBase::open_or_create(&dir, AnalysisConfig::default(), other),
            Err(RagError::InvalidSetting { .. })
        ));
        let kb = KnowledgeBase::open_or_create(
            &dir,
            AnalysisConfig::default(),
            ChunkerConfig::default(),
        )
        .unwrap();
        let mut w = kb.writer().unwrap();
        assert!(matches!(
            w.upsert(&doc("", "tekst")),
            Err(RagError::InvalidDocument { .. })
        ));
        assert!(matches!(
            w.upsert(&doc("x", "   ")),
            Err(RagError::InvalidDocument { .. })
        ));
    }
}
