//! Dense vectors of a knowledge base (a child module of `kb`, so it reaches the index and the
//! writer): `dense/vectors-<G>.bin` and `dense/hnsw-<G>.bin` are written whole before the
//! tantivy commit whose payload (`{"dense": {"generation": G, "embedder": ...}}`, stored by
//! tantivy in `meta.json`, which it replaces atomically) names generation `G`; files of other
//! generations are removed after the commit. A kill before the commit leaves the previous
//! payload and its files; readers load the generation the last commit names.
//!
//! Every commit of a knowledge base with an embedder writes a new generation: the rows of
//! deleted and replaced documents are dropped (so their vectors leave the bytes on disk with
//! the old files), new passages are embedded in batches and appended. The HNSW graph
//! ([`crate::hnsw`]) is extended in place by incremental inserts when the commit only added
//! rows, and rebuilt from the surviving rows when it dropped some (deleted or replaced
//! documents) or when its `hnsw_m` / `hnsw_ef_construction` / seed changed: a graph never
//! holds a deleted row, in memory or on disk. A changed `hnsw_ef_search` only changes searches.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tantivy::collector::DocSetCollector;
use tantivy::query::{AllQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{Searcher, TantivyDocument, Term};

use super::{Hit, KbWriter, KnowledgeBase, MANIFEST_FILE, index_err};
use crate::dense::{Embedder, EmbedderIdentity};
use crate::error::{RagError, Result};
use crate::fusion::{FusedHit, FusionConfig, fuse};
use crate::vectors::{
    HnswIndex, HnswParams, PassageKey, RecallReport, ScoredRow, VectorStore, measure_recall,
    normalize, write_file,
};

/// Sub-directory of the vector files.
pub const DENSE_DIR: &str = "dense";
/// Passages embedded per call of the embedder (and per progress report).
const EMBED_CHUNK: usize = 64;

/// How dense search finds neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenseIndex {
    /// Every vector scored (blocked dot products): exact.
    #[default]
    Exact,
    /// The HNSW graph: approximate (exact when `k` exceeds its `ef_search`).
    Hnsw,
}

/// The dense part of a commit's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DensePayload {
    generation: u64,
    embedder: EmbedderIdentity,
    hnsw: HnswParams,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Payload {
    dense: Option<DensePayload>,
}

/// The loaded vectors of one generation.
#[derive(Debug)]
pub(crate) struct DenseState {
    generation: u64,
    store: VectorStore,
    hnsw: HnswIndex,
}

/// The knowledge base's cache of the loaded generation.
#[derive(Debug, Default)]
pub(crate) struct DenseCache(Mutex<Option<Arc<DenseState>>>);

/// A writer's dense staging: passages to embed, the embedder, progress.
#[derive(Default)]
pub(crate) struct WriterDense<'a> {
    embedder: Option<&'a dyn Embedder>,
    pending: Vec<(PassageKey, String)>,
    progress: Option<Box<dyn FnMut(usize, usize) + 'a>>,
    /// Settings given with [`KbWriter::set_hnsw_params`] (else the last commit's, else the
    /// defaults).
    hnsw: Option<HnswParams>,
    /// Generation committed by this writer (files of others are removed after the commit).
    committed: Option<u64>,
}

impl WriterDense<'_> {
    /// Records the passages of an upserted document (replacing any staged ones of its id).
    pub(crate) fn stage(&mut self, id: &str, texts: impl Iterator<Item = String>) {
        self.unstage(id);
        self.pending.extend(texts.enumerate().map(|(ord, t)| {
            (
                PassageKey {
                    id: id.to_string(),
                    ord: ord as u64,
                },
                t,
            )
        }));
    }

    /// Drops staged passages of a deleted document.
    pub(crate) fn unstage(&mut self, id: &str) {
        self.pending.retain(|(k, _)| k.id != id);
    }
}

fn vec_file(dir: &std::path::Path, g: u64) -> PathBuf {
    dir.join(DENSE_DIR).join(format!("vectors-{g}.bin"))
}

fn hnsw_file(dir: &std::path::Path, g: u64) -> PathBuf {
    dir.join(DENSE_DIR).join(format!("hnsw-{g}.bin"))
}

impl KnowledgeBase {
    fn payload(&self) -> Result<Option<DensePayload>> {
        let metas = self
            .index
            .load_metas()
            .map_err(|e| index_err(&self.dir, e))?;
        match metas.payload {
            None => Ok(None),
            Some(p) => {
                let p: Payload = serde_json::from_str(&p).map_err(|e| RagError::Corrupt {
                    path: self.dir.join("index").join("meta.json"),
                    message: format!("commit payload: {e}"),
                })?;
                Ok(p.dense)
            }
        }
    }

    /// The embedder of this knowledge base's vectors: the last commit's, else the manifest's
    /// (set by a writer whose first dense commit has not happened yet); `None` for a BM25-only
    /// knowledge base.
    pub fn embedder(&self) -> Result<Option<EmbedderIdentity>> {
        if let Some(p) = self.payload()? {
            return Ok(Some(p.embedder));
        }
        let path = self.dir.join(MANIFEST_FILE);
        let m: super::Manifest = tilpass_core::read_json(&path).map_err(|e| RagError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(m.embedder)
    }

    /// [`RagError::EmbedderMismatch`] unless `e` makes the vectors this knowledge base holds;
    /// [`RagError::NoVectors`] when it has none.
    pub fn check_embedder(&self, e: &dyn Embedder) -> Result<()> {
        match self.embedder()? {
            None => Err(RagError::NoVectors {
                path: self.dir.clone(),
            }),
            Some(have) if !have.same_model(e.identity()) => Err(RagError::EmbedderMismatch {
                index: have.describe(),
                given: e.identity().describe(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// The vectors of the last commit (loaded once per generation).
    pub(crate) fn dense_state(&self) -> Result<Arc<DenseState>> {
        let Some(p) = self.payload()? else {
            return Err(RagError::NoVectors {
                path: self.dir.clone(),
            });
        };
        let mut cache = self.dense.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.as_ref().filter(|s| s.generation == p.generation) {
            return Ok(s.clone());
        }
        let read = |path: PathBuf| {
            std::fs::read(&path).map_err(|e| RagError::Corrupt {
                path: path.clone(),
                message: format!("the last commit's vector file cannot be read: {e}"),
            })
        };
        let vp = vec_file(&self.dir, p.generation);
        let store = VectorStore::from_bytes(&read(vp.clone())?, &vp)?;
        let hp = hnsw_file(&self.dir, p.generation);
        let bytes = read(hp.clone())?;
        let hnsw = if HnswIndex::is_legacy(&bytes) {
            // A graph of an earlier build (instant-distance): rebuilt in memory from the vectors;
            // the next commit writes it in the current format.
            HnswIndex::build(&store, p.hnsw)
        } else {
            HnswIndex::from_bytes(&bytes, &hp)?
        };
        if store.dim != p.embedder.dim || hnsw.len() != store.len() || hnsw.dim() != store.dim {
            return Err(RagError::Corrupt {
                path: vp,
                message: format!(
                    "{} rows of width {} and an HNSW graph of {} rows; the commit says width {}",
                    store.len(),
                    store.dim,
                    hnsw.len(),
                    p.embedder.dim
                ),
            });
        }
        let s = Arc::new(DenseState {
            generation: p.generation,
            store,
            hnsw,
        });
        *cache = Some(s.clone());
        Ok(s)
    }

    /// The HNSW settings of the last commit's graph; `None` without vectors.
    pub fn hnsw_params(&self) -> Result<Option<HnswParams>> {
        Ok(self.payload()?.map(|p| p.hnsw))
    }

    /// Passages with vectors in the last commit.
    pub fn num_vectors(&self) -> Result<usize> {
        Ok(self.dense_state()?.store.len())
    }

    fn hit_from_doc(&self, doc: &TantivyDocument, score: f32) -> Result<Hit> {
        let f = self.fields;
        let text = |fl| {
            doc.get_first(fl)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let num = |fl| doc.get_first(fl).and_then(|v| v.as_u64());
        let corrupt = |what: &str| RagError::Corrupt {
            path: self.dir.clone(),
            message: format!("a passage without its stored {what}"),
        };
        let meta = match text(f.meta) {
            Some(m) => Some(serde_json::from_str(&m).map_err(|_| corrupt("meta JSON"))?),
            None => None,
        };
        Ok(Hit {
            id: text(f.id).ok_or_else(|| corrupt("id"))?,
            score,
            passage: text(f.text).ok_or_else(|| corrupt("text"))?,
            start: num(f.start).ok_or_else(|| corrupt("start"))?,
            end: num(f.end).ok_or_else(|| corrupt("end"))?,
            title: text(f.title),
            ord: num(f.ord).ok_or_else(|| corrupt("ord"))?,
            meta,
        })
    }

    /// The stored passages of document `id`, by passage number.
    fn passages_of(&self, searcher: &Searcher, id: &str) -> Result<Vec<Hit>> {
        let q = TermQuery::new(
            Term::from_field_text(self.fields.id, id),
            IndexRecordOption::Basic,
        );
        let addrs = searcher
            .search(&q, &DocSetCollector)
            .map_err(|e| index_err(&self.dir, e))?;
        let mut out = Vec::with_capacity(addrs.len());
        for a in addrs {
            let d: TantivyDocument = searcher.doc(a).map_err(|e| index_err(&self.dir, e))?;
            out.push(self.hit_from_doc(&d, 0.0)?);
        }
        out.sort_by_key(|h| h.ord);
        Ok(out)
    }

    fn rows_to_hits(&self, state: &DenseState, rows: &[ScoredRow]) -> Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let mut docs: std::collections::HashMap<&str, Vec<Hit>> = Default::default();
        let mut hits = Vec::with_capacity(rows.len());
        for r in rows {
            let key = &state.store.keys[r.row];
            if !docs.contains_key(key.id.as_str()) {
                docs.insert(&key.id, self.passages_of(&searcher, &key.id)?);
            }
            // A passage missing from the reader's view (another process committed between the
            // reader's reload and this generation) is skipped.
            if let Some(h) = docs[key.id.as_str()].iter().find(|h| h.ord == key.ord) {
                let mut h = h.clone();
                h.score = r.score;
                hits.push(h);
            }
        }
        Ok(hits)
    }

    /// The `k` passages nearest to `query` by cosine similarity, best first (equal scores in
    /// row order), embedded with `embedder`, which must be the knowledge base's
    /// ([`RagError::EmbedderMismatch`] otherwise).
    pub fn dense_search(
        &self,
        embedder: &dyn Embedder,
        query: &str,
        k: usize,
        how: DenseIndex,
    ) -> Result<Vec<Hit>> {
        if query.trim().is_empty() {
            return Err(RagError::EmptyQuery);
        }
        self.check_embedder(embedder)?;
        let v = embedder
            .embed(&[query])?
            .pop()
            .ok_or_else(|| RagError::InvalidSetting {
                setting: "embedder".into(),
                message: "no vector for the query".into(),
            })?;
        self.dense_search_vector(v, k, how)
    }

    /// [`Self::dense_search`] with a query vector `[dim]` (normalised here).
    pub fn dense_search_vector(
        &self,
        mut query: Vec<f32>,
        k: usize,
        how: DenseIndex,
    ) -> Result<Vec<Hit>> {
        if k == 0 {
            return Err(RagError::InvalidSetting {
                setting: "k".into(),
                message: "0 hits asked; expected at least 1".into(),
            });
        }
        let s = self.dense_state()?;
        if query.len() != s.store.dim {
            return Err(RagError::InvalidSetting {
                setting: "query".into(),
                message: format!(
                    "a query vector of {} values; the knowledge base holds width {}",
                    query.len(),
                    s.store.dim
                ),
            });
        }
        normalize(&mut query, "the query vector")?;
        let rows = match how {
            DenseIndex::Hnsw if k <= s.hnsw.params().ef_search => s.hnsw.search(&query, k),
            _ => s.store.exact_search(&query, k),
        };
        self.rows_to_hits(&s, &rows)
    }

    /// BM25 and dense search fused ([`crate::fusion`]); each retriever contributes
    /// `max(k, fusion.depth)` passages. A query whose terms are all stop words still has its
    /// dense list.
    pub fn hybrid_search(
        &self,
        embedder: &dyn Embedder,
        query: &str,
        k: usize,
        how: DenseIndex,
        fusion: FusionConfig,
    ) -> Result<Vec<FusedHit>> {
        self.hybrid_search_with(embedder, query, k, how, fusion, self.manifest().bm25)
    }

    /// [`Self::hybrid_search`] with BM25 parameters `bm25` instead of the knowledge base's.
    pub fn hybrid_search_with(
        &self,
        embedder: &dyn Embedder,
        query: &str,
        k: usize,
        how: DenseIndex,
        fusion: FusionConfig,
        bm25: crate::bm25::Bm25Params,
    ) -> Result<Vec<FusedHit>> {
        fusion.validate()?;
        let depth = fusion.depth.max(k);
        let bm25 = self.search_with(query, depth, bm25)?;
        let dense = self.dense_search(embedder, query, depth, how)?;
        Ok(fuse(&bm25, &dense, fusion.method, k))
    }

    /// recall@`k` of the HNSW graph against exact search, with `queries` (each `[dim]`) or,
    /// when `None`, up to 1000 of the stored vectors as queries; also queries/s of both.
    pub fn hnsw_recall(&self, queries: Option<&[Vec<f32>]>, k: usize) -> Result<RecallReport> {
        let s = self.dense_state()?;
        let own: Vec<Vec<f32>>;
        let qs = match queries {
            Some(q) => q,
            None => {
                let step = (s.store.len() / 1000).max(1);
                own = (0..s.store.len())
                    .step_by(step)
                    .take(1000)
                    .map(|i| s.store.row(i).to_vec())
                    .collect();
                &own
            }
        };
        let mut qs: Vec<Vec<f32>> = qs.to_vec();
        for (i, q) in qs.iter_mut().enumerate() {
            normalize(q, &format!("query {i}"))?;
        }
        Ok(measure_recall(&s.store, &s.hnsw, &qs, k))
    }

    /// Every live passage's key and text in the reader's view.
    fn all_passages(&self) -> Result<Vec<(PassageKey, String)>> {
        let searcher = self.reader.searcher();
        let addrs = searcher
            .search(&AllQuery, &DocSetCollector)
            .map_err(|e| index_err(&self.dir, e))?;
        let mut out = Vec::with_capacity(addrs.len());
        for a in addrs {
            let d: TantivyDocument = searcher.doc(a).map_err(|e| index_err(&self.dir, e))?;
            let h = self.hit_from_doc(&d, 0.0)?;
            out.push((
                PassageKey {
                    id: h.id,
                    ord: h.ord,
                },
                h.passage,
            ));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

impl<'a> KbWriter<'a> {
    /// Embeds new passages with `embedder` from now on. A knowledge base without vectors takes
    /// it (its committed passages are embedded at the next commit); one with vectors must have
    /// been made by the same model ([`RagError::EmbedderMismatch`]).
    pub fn set_embedder(&mut self, embedder: &'a dyn Embedder) -> Result<()> {
        if let Some(have) = self.kb.embedder()?
            && !have.same_model(embedder.identity())
        {
            return Err(RagError::EmbedderMismatch {
                index: have.describe(),
                given: embedder.identity().describe(),
            });
        }
        self.dense.embedder = Some(embedder);
        Ok(())
    }

    /// Calls `f(done, total)` as passages are embedded at commit.
    pub fn set_progress(&mut self, f: impl FnMut(usize, usize) + 'a) {
        self.dense.progress = Some(Box::new(f));
    }

    /// HNSW settings of the graphs this writer builds or extends (checked:
    /// [`RagError::InvalidSetting`] naming `hnsw_m`, `hnsw_ef_construction` or
    /// `hnsw_ef_search`). Without a call, the last commit's settings (else the defaults) hold.
    pub fn set_hnsw_params(&mut self, p: HnswParams) -> Result<()> {
        p.validate()?;
        self.dense.hnsw = Some(p);
        Ok(())
    }

    /// Before the tantivy commit: when the knowledge base has (or gets) an embedder, writes the
    /// next generation's vector and HNSW files and returns the payload naming them.
    pub(crate) fn stage_dense(&mut self) -> Result<Option<String>> {
        let kb = self.kb;
        let identity = match (kb.embedder()?, self.dense.embedder) {
            (None, None) => return Ok(None),
            (Some(i), _) => i,
            (None, Some(e)) => e.identity().clone(),
        };
        let previous = kb.payload()?;
        let dropped: HashSet<&str> = self
            .upserted
            .iter()
            .chain(self.deleted.iter())
            .map(String::as_str)
            .collect();
        let params = match (self.dense.hnsw, &previous) {
            (Some(p), _) => p,
            (None, Some(p)) => p.hnsw,
            (None, None) => HnswParams::default(),
        };
        params.validate()?;
        let mut todo: Vec<(PassageKey, String)> = Vec::new();
        // The previous graph, when this commit can extend it (no row dropped, same build
        // settings); otherwise the graph is rebuilt from the surviving rows.
        let mut graph: Option<HnswIndex> = None;
        let mut store = match &previous {
            Some(_) => {
                let state = kb.dense_state()?;
                let kept = state.store.without(|id| dropped.contains(id));
                if kept.len() == state.store.len() && state.hnsw.params().same_graph(&params) {
                    let mut g = state.hnsw.clone();
                    g.set_ef_search(params.ef_search);
                    graph = Some(g);
                }
                kept
            }
            None => {
                // First vectors of this knowledge base: its committed passages too.
                todo.extend(
                    kb.all_passages()?
                        .into_iter()
                        .filter(|(k, _)| !dropped.contains(k.id.as_str())),
                );
                VectorStore::new(identity.dim)
            }
        };
        todo.extend(self.dense.pending.iter().cloned());
        if !todo.is_empty() {
            let Some(e) = self.dense.embedder else {
                return Err(RagError::InvalidSetting {
                    setting: "embedder".into(),
                    message: format!(
                        "{}: the knowledge base embeds its passages with {}; give that model \
                         (--embedder) to add documents",
                        kb.dir.display(),
                        identity.describe()
                    ),
                });
            };
            if !identity.same_model(e.identity()) {
                return Err(RagError::EmbedderMismatch {
                    index: identity.describe(),
                    given: e.identity().describe(),
                });
            }
            let total = todo.len();
            for (n, chunk) in todo.chunks(EMBED_CHUNK).enumerate() {
                let texts: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
                let vs = e.embed(&texts)?;
                if vs.len() != chunk.len() {
                    return Err(RagError::InvalidSetting {
                        setting: "embedder".into(),
                        message: format!("{} vectors for {} passages", vs.len(), chunk.len()),
                    });
                }
                for ((k, _), v) in chunk.iter().zip(vs) {
                    store.push(k.clone(), v)?;
                }
                if let Some(p) = self.dense.progress.as_mut() {
                    p((n * EMBED_CHUNK + chunk.len()).min(total), total);
                }
            }
        }
        let generation = previous.as_ref().map_or(1, |p| p.generation + 1);
        let hnsw = match graph {
            Some(mut g) => {
                g.extend_from(&store);
                g
            }
            None => HnswIndex::build(&store, params),
        };
        let dense_dir = kb.dir.join(DENSE_DIR);
        std::fs::create_dir_all(&dense_dir).map_err(|e| tilpass_core::Error::io(&dense_dir, e))?;
        write_file(&vec_file(&kb.dir, generation), &store.to_bytes())?;
        write_file(&hnsw_file(&kb.dir, generation), &hnsw.to_bytes()?)?;
        if kb.manifest.embedder.as_ref() != Some(&identity) && previous.is_none() {
            let mut m = kb.manifest.clone();
            m.embedder = Some(identity.clone());
            let json = serde_json::to_string_pretty(&m)
                .map_err(|e| tilpass_core::Error::invalid(e.to_string()))?;
            tilpass_core::write_atomic(kb.dir.join(MANIFEST_FILE), json + "\n")?;
        }
        self.dense.committed = Some(generation);
        let payload = Payload {
            dense: Some(DensePayload {
                generation,
                embedder: identity,
                hnsw: params,
            }),
        };
        // Cannot fail: plain structs of strings and numbers.
        Ok(Some(
            serde_json::to_string(&payload).expect("the payload serialises"),
        ))
    }

    /// After the tantivy commit: forgets the staged passages and removes the vector files of
    /// other generations (the deleted passages' vectors leave the disk with them).
    pub(crate) fn finish_dense(&mut self) -> Result<()> {
        self.dense.pending.clear();
        let Some(g) = self.dense.committed.take() else {
            return Ok(());
        };
        let dir = self.kb.dir.join(DENSE_DIR);
        let keep = [
            vec_file(&self.kb.dir, g)
                .file_name()
                .map(|n| n.to_os_string()),
            hnsw_file(&self.kb.dir, g)
                .file_name()
                .map(|n| n.to_os_string()),
        ];
        for e in std::fs::read_dir(&dir).map_err(|e| tilpass_core::Error::io(&dir, e))? {
            let e = e.map_err(|e| tilpass_core::Error::io(&dir, e))?;
            let name = e.file_name();
            if !keep.contains(&Some(name)) {
                let p = e.path();
                std::fs::remove_file(&p).map_err(|e| tilpass_core::Error::io(&p, e))?;
            }
        }
        // Load the new generation now, so the next search does not pay for it.
        self.kb.dense_state()?;
        Ok(())
    }
}
