//! tilpass's own HNSW graph (Malkov & Yashunin 2016, the algorithm of hnswlib) over the rows of
//! a [`VectorStore`]: L2-normalised `f32` vectors, distance `-dot` (inner product; the score of
//! a hit is the cosine similarity itself, bit for bit the exact search's).
//!
//! Why not a crate: the previous graph (`instant-distance` 0.6) fixes `M` at 32, fixes `ef` at
//! build time, keeps each vector in its own heap allocation and allocates per query; measured
//! with `scripts/compare/run.sh --only rag` (20k MiniLM vectors, 2 threads) it reached
//! 3,583 queries/s at recall@10 0.978 against hnswlib's 4,542 at 0.985 and 14,202 at 0.903
//! (0.25-0.47x). This module follows hnswlib instead:
//!
//! - level of node `i`: `floor(-ln(u) / ln(M))` with `u` from a SplitMix64 hash of
//!   (`seed`, `i`): deterministic for a seed, and the same whether a node was inserted by a
//!   full build or by a later incremental insert;
//! - insertion: greedy descent from the entry point, then per level a beam search of
//!   `ef_construction` and hnswlib's neighbour-selection heuristic (`getNeighborsByHeuristic2`:
//!   keep a candidate only if no kept neighbour is closer to it than the new node) to `M`
//!   links; a neighbour whose list is full (`M` on upper levels, `2M` on layer 0) re-selects
//!   its list with the same heuristic;
//! - storage: one flat `[rows, 1 + 2M]` `u32` array of layer-0 links (count, then ids), one
//!   flat array of the upper levels' `[1 + M]` blocks, one flat `[rows, dim]` `f32` matrix;
//! - search: greedy descent on the upper levels, then a beam of `max(ef, k)` on layer 0 with a
//!   per-thread visited list (a generation counter: no clearing, no per-query allocation) and
//!   software prefetch of the next neighbours' vectors; the dot product is
//!   [`crate::vectors::dot`] (AVX2 + FMA when the CPU has them at run time, portable otherwise).
//!
//! Deletes are not done in the graph: the knowledge base rebuilds it from the surviving rows
//! at a commit that dropped rows (so a deleted passage's vector leaves the graph file too), and
//! extends it in place ([`HnswIndex::extend_from`]) at a commit that only adds rows.
//!
//! File (little endian): magic `TPHNSW02`; `u32` M, `u32` ef_construction, `u32` ef_search,
//! `u64` seed; `u32` dim, `u64` rows, `u32` entry point (`u32::MAX`: none), `u32` top level;
//! `rows` bytes of levels; `rows * (1 + 2M)` `u32` layer-0 links; `u64` count and the `u32`
//! upper links; `rows * dim` `f32`; the SHA-256 of everything before it.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{RagError, Result};
use crate::vectors::{ScoredRow, VectorStore, dot};

const MAGIC: &[u8; 8] = b"TPHNSW02";
/// Magic of the `instant-distance` graphs of earlier builds (rebuilt from the vectors on load).
pub const LEGACY_MAGIC: &[u8; 8] = b"TPHNSW01";
/// Highest level a node can get (a level needs `M^level` nodes to be likely).
const MAX_LEVEL: usize = 30;
/// Largest `M` accepted (hnswlib warns above 10,000; graphs beyond 256 are not useful).
pub const MAX_M: usize = 256;
/// Largest `ef` accepted (at search or construction).
pub const MAX_EF: usize = 1 << 20;
const NONE: u32 = u32::MAX;

fn default_m() -> usize {
    16
}

/// HNSW build and search settings (the dense part of a knowledge base's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HnswParams {
    /// Links per node on the upper levels (`M`, hnswlib's default 16); layer 0 holds `2M`.
    #[serde(rename = "hnsw_m", default = "default_m")]
    pub m: usize,
    /// Candidate list while inserting (`efConstruction`, hnswlib's default 200).
    #[serde(rename = "hnsw_ef_construction", alias = "ef_construction")]
    pub ef_construction: usize,
    /// Candidate list while searching (`ef`); a search for `k` rows uses `max(k, ef_search)`.
    #[serde(rename = "hnsw_ef_search", alias = "ef_search")]
    pub ef_search: usize,
    /// Seed of the level assignment.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self {
            m: default_m(),
            ef_construction: 200,
            ef_search: 64,
            seed: 0x7417_9a55,
        }
    }
}

impl HnswParams {
    /// [`RagError::InvalidSetting`] naming `hnsw_m` (2..=[`MAX_M`]), `hnsw_ef_construction`
    /// or `hnsw_ef_search` (1..=[`MAX_EF`]) when out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &str, v: usize, want: String| RagError::InvalidSetting {
            setting: setting.into(),
            message: format!("{v}; expected {want}"),
        };
        if !(2..=MAX_M).contains(&self.m) {
            return Err(bad("hnsw_m", self.m, format!("2 to {MAX_M}")));
        }
        if !(1..=MAX_EF).contains(&self.ef_construction) {
            return Err(bad(
                "hnsw_ef_construction",
                self.ef_construction,
                format!("1 to {MAX_EF}"),
            ));
        }
        if !(1..=MAX_EF).contains(&self.ef_search) {
            return Err(bad(
                "hnsw_ef_search",
                self.ef_search,
                format!("1 to {MAX_EF}"),
            ));
        }
        Ok(())
    }

    /// Whether graphs built with `self` and `other` are the same (only `ef_search` may differ).
    pub fn same_graph(&self, other: &Self) -> bool {
        self.m == other.m
            && self.ef_construction == other.ef_construction
            && self.seed == other.seed
    }
}

/// A node at a distance (`-dot`); ordered by distance, then id.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cand {
    d: f32,
    id: u32,
}

impl Eq for Cand {}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.d.total_cmp(&other.d).then(self.id.cmp(&other.id))
    }
}

/// Reversed [`Cand`] order: a `BinaryHeap` of it pops the nearest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Near(Cand);

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.cmp(&self.0)
    }
}

/// The reusable state of a search: the visited list (a node is visited when its mark equals
/// the current generation) and the two heaps.
#[derive(Debug, Default)]
struct Scratch {
    marks: Vec<u32>,
    generation: u32,
    candidates: BinaryHeap<Near>,
    top: BinaryHeap<Cand>,
    fresh: Vec<u32>,
}

impl Scratch {
    /// Starts a search over `n` nodes: a new generation (marks cleared only on wrap-around).
    fn begin(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.generation = 1;
        }
        self.candidates.clear();
        self.top.clear();
    }
}

thread_local! {
    /// The search state reused by this thread's queries.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// SplitMix64 of `x`.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Prefetches the start of `v` into the cache (x86-64; a no-op elsewhere).
#[inline(always)]
fn prefetch(v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = v.as_ptr().cast::<i8>();
        // Up to four cache lines (a 384-wide vector spans 24; the hardware prefetcher follows).
        let lines = (v.len() * 4).div_ceil(64).min(4);
        for i in 0..lines {
            // SAFETY: SSE is part of the x86-64 baseline; a prefetch never faults, and
            // `i * 64` stays inside `v`'s allocation.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(i * 64)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// An HNSW graph over the rows of a [`VectorStore`] (node `i` is row `i`), holding its own
/// copy of the vectors (`[rows, dim]`).
#[derive(Clone, PartialEq)]
pub struct HnswIndex {
    params: HnswParams,
    dim: usize,
    /// `[rows, dim]` row-major, normalised.
    vectors: Vec<f32>,
    /// Level of each node.
    levels: Vec<u8>,
    /// `[rows, 1 + 2M]`: count, then neighbour ids.
    links0: Vec<u32>,
    /// Start of each node's upper blocks in `upper` (level `l >= 1` at
    /// `upper_start[i] + (l - 1) * (1 + M)`); 0 for nodes of level 0.
    upper_start: Vec<usize>,
    /// `[1 + M]` blocks: count, then neighbour ids.
    upper: Vec<u32>,
    entry: u32,
    top_level: usize,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("params", &self.params)
            .field("rows", &self.len())
            .field("dim", &self.dim)
            .field("top_level", &self.top_level)
            .finish()
    }
}

impl HnswIndex {
    /// An empty graph of width `dim`.
    pub fn new(dim: usize, params: HnswParams) -> Self {
        Self {
            params,
            dim,
            vectors: Vec::new(),
            levels: Vec::new(),
            links0: Vec::new(),
            upper_start: Vec::new(),
            upper: Vec::new(),
            entry: NONE,
            top_level: 0,
        }
    }

    /// Builds the graph over every row of `store` (one thread, deterministic for
    /// `params.seed`). `params` are used as given; check them with [`HnswParams::validate`].
    pub fn build(store: &VectorStore, params: HnswParams) -> Self {
        let mut g = Self::new(store.dim, params);
        g.extend_from(store);
        g
    }

    /// Inserts the rows of `store` beyond the ones indexed (`len()..store.len()`): the
    /// incremental insert of a commit that only added rows. `store` must hold this graph's rows
    /// first, unchanged, and have its width.
    pub fn extend_from(&mut self, store: &VectorStore) {
        assert_eq!(store.dim, self.dim, "HNSW: a store of another width");
        let start = self.len();
        let n = store.len();
        if n <= start {
            return;
        }
        let m0 = 1 + 2 * self.params.m;
        self.vectors
            .extend_from_slice(&store.data[start * self.dim..n * self.dim]);
        self.links0.resize(n * m0, 0);
        self.levels.reserve(n - start);
        self.upper_start.reserve(n - start);
        let mut scratch = Scratch::default();
        for i in start..n {
            self.insert(i as u32, &mut scratch);
        }
    }

    /// The settings it was built with (`ef_search`: the one searches use).
    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Sets the `ef` of [`Self::search`] (a search-time setting; the graph is unchanged).
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef;
    }

    /// Rows indexed.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Whether no row is indexed.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Vector width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    #[inline(always)]
    fn vector(&self, i: u32) -> &[f32] {
        let i = i as usize * self.dim;
        &self.vectors[i..i + self.dim]
    }

    #[inline(always)]
    fn dist(&self, q: &[f32], i: u32) -> f32 {
        -dot(q, self.vector(i))
    }

    /// Start of the link block of `node` on `level` (count at the start, then ids).
    #[inline(always)]
    fn block(&self, node: u32, level: usize) -> (usize, usize) {
        if level == 0 {
            let cap = 2 * self.params.m;
            (node as usize * (cap + 1), cap)
        } else {
            let cap = self.params.m;
            (
                self.upper_start[node as usize] + (level - 1) * (cap + 1),
                cap,
            )
        }
    }

    #[inline(always)]
    fn links(&self, node: u32, level: usize) -> &[u32] {
        let (s, _) = self.block(node, level);
        let arr = if level == 0 {
            &self.links0
        } else {
            &self.upper
        };
        let c = arr[s] as usize;
        &arr[s + 1..s + 1 + c]
    }

    fn set_links(&mut self, node: u32, level: usize, ids: &[u32]) {
        let (s, cap) = self.block(node, level);
        debug_assert!(ids.len() <= cap);
        let arr = if level == 0 {
            &mut self.links0
        } else {
            &mut self.upper
        };
        arr[s] = ids.len() as u32;
        arr[s + 1..s + 1 + ids.len()].copy_from_slice(ids);
    }

    fn push_link(&mut self, node: u32, level: usize, id: u32) {
        let (s, _) = self.block(node, level);
        let arr = if level == 0 {
            &mut self.links0
        } else {
            &mut self.upper
        };
        let c = arr[s] as usize;
        arr[s + 1 + c] = id;
        arr[s] += 1;
    }

    /// The level of node `i`: `floor(-ln(u) / ln(M))`, `u` in (0, 1] from (seed, i).
    fn level_of(&self, i: u32) -> usize {
        let h = splitmix64(self.params.seed ^ splitmix64(u64::from(i)));
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let mult = 1.0 / (self.params.m as f64).ln();
        ((-u.ln() * mult) as usize).min(MAX_LEVEL)
    }

    /// Greedy descent from the entry point to `level + 1` (hnswlib's upper-level walk).
    fn greedy(&self, q: &[f32], down_to: usize) -> (u32, f32) {
        let mut cur = self.entry;
        let mut cur_d = self.dist(q, cur);
        for level in (down_to + 1..=self.top_level).rev() {
            loop {
                let mut changed = false;
                for &nb in self.links(cur, level) {
                    let d = self.dist(q, nb);
                    if d < cur_d {
                        cur_d = d;
                        cur = nb;
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        (cur, cur_d)
    }

    /// Beam search of width `ef` on `level` from `ep`; the result is in `s.top` (a max-heap).
    fn search_layer(&self, q: &[f32], ep: Cand, ef: usize, level: usize, s: &mut Scratch) {
        s.begin(self.len());
        let generation = s.generation;
        s.marks[ep.id as usize] = generation;
        s.candidates.push(Near(ep));
        s.top.push(ep);
        let mut bound = ep.d;
        let mut fresh = std::mem::take(&mut s.fresh);
        while let Some(Near(c)) = s.candidates.pop() {
            if c.d > bound && s.top.len() >= ef {
                break;
            }
            fresh.clear();
            for &nb in self.links(c.id, level) {
                let mark = &mut s.marks[nb as usize];
                if *mark != generation {
                    *mark = generation;
                    prefetch(self.vector(nb));
                    fresh.push(nb);
                }
            }
            for &nb in &fresh {
                let d = self.dist(q, nb);
                if s.top.len() < ef || d < bound {
                    let cand = Cand { d, id: nb };
                    s.candidates.push(Near(cand));
                    s.top.push(cand);
                    if s.top.len() > ef {
                        s.top.pop();
                    }
                    if let Some(t) = s.top.peek() {
                        bound = t.d;
                    }
                }
            }
        }
        s.fresh = fresh;
    }

    /// hnswlib's neighbour-selection heuristic: of `cands` (sorted nearest first, distances to
    /// the node being linked), keep a candidate only when no kept one is nearer to it than the
    /// node is; at most `m`.
    fn select(&self, cands: &[Cand], m: usize, out: &mut Vec<u32>) {
        out.clear();
        if cands.len() <= m {
            out.extend(cands.iter().map(|c| c.id));
            return;
        }
        for c in cands {
            if out.len() >= m {
                break;
            }
            let v = self.vector(c.id);
            if out.iter().all(|&r| -dot(v, self.vector(r)) >= c.d) {
                out.push(c.id);
            }
        }
    }

    /// Inserts node `i` (its vector already in `vectors`, its layer-0 block allocated).
    fn insert(&mut self, i: u32, s: &mut Scratch) {
        let level = self.level_of(i);
        self.levels.push(level as u8);
        let m = self.params.m;
        self.upper_start
            .push(if level > 0 { self.upper.len() } else { 0 });
        if level > 0 {
            self.upper.resize(self.upper.len() + level * (1 + m), 0);
        }
        if self.entry == NONE {
            self.entry = i;
            self.top_level = level;
            return;
        }
        let q = self.vector(i).to_vec();
        let (mut ep, mut ep_d) = if level < self.top_level {
            self.greedy(&q, level)
        } else {
            (self.entry, self.dist(&q, self.entry))
        };
        let ef = self.params.ef_construction.max(1);
        let mut cands: Vec<Cand> = Vec::with_capacity(ef);
        let mut chosen: Vec<u32> = Vec::with_capacity(2 * m);
        let mut nbr_cands: Vec<Cand> = Vec::with_capacity(2 * m + 1);
        let mut nbr_sel: Vec<u32> = Vec::with_capacity(2 * m);
        for l in (0..=level.min(self.top_level)).rev() {
            self.search_layer(&q, Cand { d: ep_d, id: ep }, ef, l, s);
            cands.clear();
            cands.extend(s.top.drain());
            cands.sort_unstable();
            self.select(&cands, m, &mut chosen);
            self.set_links(i, l, &chosen);
            let cap = if l == 0 { 2 * m } else { m };
            for &nb in &chosen {
                if self.links(nb, l).len() < cap {
                    self.push_link(nb, l, i);
                    continue;
                }
                let v = self.vector(nb);
                nbr_cands.clear();
                nbr_cands.push(Cand {
                    d: -dot(v, &q),
                    id: i,
                });
                for &x in self.links(nb, l) {
                    nbr_cands.push(Cand {
                        d: -dot(v, self.vector(x)),
                        id: x,
                    });
                }
                nbr_cands.sort_unstable();
                self.select(&nbr_cands, cap, &mut nbr_sel);
                self.set_links(nb, l, &nbr_sel);
            }
            // The nearest candidate enters the next level down (hnswlib's next entry point).
            if let Some(c) = cands.first() {
                ep = c.id;
                ep_d = c.d;
            }
        }
        if level > self.top_level {
            self.entry = i;
            self.top_level = level;
        }
    }

    /// Approximate `k` nearest rows of `query` (normalised `[dim]`), best first (equal scores
    /// by row), with a beam of `max(k, ef_search)`.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<ScoredRow> {
        self.search_ef(query, k, self.params.ef_search)
    }

    /// [`Self::search`] with a beam of `max(k, ef)`. A query of another width than the
    /// graph's scores over the shorter length (check widths before).
    pub fn search_ef(&self, query: &[f32], k: usize, ef: usize) -> Vec<ScoredRow> {
        if k == 0 || self.entry == NONE {
            return Vec::new();
        }
        let (ep, ep_d) = self.greedy(query, 0);
        let mut out: Vec<ScoredRow> = SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            self.search_layer(query, Cand { d: ep_d, id: ep }, ef.max(k), 0, &mut s);
            s.top
                .drain()
                .map(|c| ScoredRow {
                    row: c.id as usize,
                    score: -c.d,
                })
                .collect()
        });
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        out.truncate(k);
        out
    }

    /// Serialises the graph (format in the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let n = self.len();
        let mut b = Vec::with_capacity(
            64 + n + 4 * (self.links0.len() + self.upper.len() + self.vectors.len()),
        );
        b.extend_from_slice(MAGIC);
        let p = self.params;
        for v in [p.m, p.ef_construction, p.ef_search] {
            b.extend_from_slice(&(v as u32).to_le_bytes());
        }
        b.extend_from_slice(&p.seed.to_le_bytes());
        b.extend_from_slice(&(self.dim as u32).to_le_bytes());
        b.extend_from_slice(&(n as u64).to_le_bytes());
        b.extend_from_slice(&self.entry.to_le_bytes());
        b.extend_from_slice(&(self.top_level as u32).to_le_bytes());
        b.extend_from_slice(&self.levels);
        for x in &self.links0 {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.extend_from_slice(&(self.upper.len() as u64).to_le_bytes());
        for x in &self.upper {
            b.extend_from_slice(&x.to_le_bytes());
        }
        for x in &self.vectors {
            b.extend_from_slice(&x.to_le_bytes());
        }
        let h = Sha256::digest(&b);
        b.extend_from_slice(&h);
        Ok(b)
    }

    /// Whether `bytes` is a graph of the format of earlier builds (`instant-distance`), which
    /// this build rebuilds from the vectors instead of reading.
    pub fn is_legacy(bytes: &[u8]) -> bool {
        bytes.starts_with(LEGACY_MAGIC)
    }

    /// Parses [`Self::to_bytes`]'s format; damage (checksum, sizes, links out of range) is
    /// [`RagError::Corrupt`] naming `path`.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |m: &str| RagError::Corrupt {
            path: path.to_path_buf(),
            message: format!("HNSW file: {m}"),
        };
        if bytes.len() < 8 + 32 || &bytes[..8] != MAGIC {
            return Err(corrupt("not a tilpass HNSW file (magic TPHNSW02)"));
        }
        let (body, hash) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != hash {
            return Err(corrupt("checksum mismatch (truncated or damaged)"));
        }
        let mut pos: usize = 8;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = pos
                .checked_add(n)
                .and_then(|e| body.get(pos..e))
                .ok_or_else(|| corrupt("shorter than its header says"))?;
            pos += n;
            Ok(s)
        };
        let u32_at = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let u64_at = |s: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        };
        let params = HnswParams {
            m: u32_at(take(4)?) as usize,
            ef_construction: u32_at(take(4)?) as usize,
            ef_search: u32_at(take(4)?) as usize,
            seed: u64_at(take(8)?),
        };
        params
            .validate()
            .map_err(|e| corrupt(&format!("settings: {e}")))?;
        let dim = u32_at(take(4)?) as usize;
        let n = usize::try_from(u64_at(take(8)?)).map_err(|_| corrupt("row count"))?;
        let entry = u32_at(take(4)?);
        let top_level = u32_at(take(4)?) as usize;
        if n >= NONE as usize || n > body.len() {
            return Err(corrupt("a row count larger than the file"));
        }
        let levels = take(n)?.to_vec();
        let m = params.m;
        let m0 = 1 + 2 * m;
        let words = |count: usize| {
            count
                .checked_mul(4)
                .ok_or_else(|| corrupt("a header of impossible size"))
        };
        let u32s = |s: &[u8]| -> Vec<u32> {
            s.as_chunks::<4>()
                .0
                .iter()
                .map(|c| u32::from_le_bytes(*c))
                .collect()
        };
        let links0 = u32s(take(words(
            n.checked_mul(m0).ok_or_else(|| corrupt("size"))?,
        )?)?);
        let n_upper = usize::try_from(u64_at(take(8)?)).map_err(|_| corrupt("upper links"))?;
        let upper = u32s(take(words(n_upper)?)?);
        let vectors: Vec<f32> = take(words(n.checked_mul(dim).ok_or_else(|| corrupt("size"))?)?)?
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| f32::from_le_bytes(*c))
            .collect();
        if pos != body.len() {
            return Err(corrupt("trailing bytes after the vectors"));
        }
        // Structure: every count within capacity, every id a node, levels consistent.
        let mut upper_start = Vec::with_capacity(n);
        let mut next = 0usize;
        for &l in &levels {
            let l = l as usize;
            if l > MAX_LEVEL || l > top_level {
                return Err(corrupt("a node above the top level"));
            }
            upper_start.push(if l > 0 { next } else { 0 });
            next += l * (1 + m);
        }
        if next != upper.len() {
            return Err(corrupt("upper links do not match the levels"));
        }
        let check = |arr: &[u32], cap: usize| -> Result<()> {
            for blk in arr.chunks_exact(cap + 1) {
                let c = blk[0] as usize;
                if c > cap || blk[1..=c].iter().any(|&x| x as usize >= n) {
                    return Err(corrupt("a link out of range"));
                }
            }
            Ok(())
        };
        check(&links0, 2 * m)?;
        check(&upper, m)?;
        if n == 0 {
            if entry != NONE {
                return Err(corrupt("an entry point in an empty graph"));
            }
        } else if entry as usize >= n || levels[entry as usize] as usize != top_level {
            return Err(corrupt(
                "an entry point that is not a node of the top level",
            ));
        }
        Ok(Self {
            params,
            dim,
            vectors,
            levels,
            links0,
            upper_start,
            upper,
            entry,
            top_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vectors::{PassageKey, normalize, recall_at_k};

    /// Gaussian-ish vectors (sum of four uniforms per value) from a seeded LCG.
    fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (0..4)
                .map(|i| ((s >> (8 + 12 * i)) & 0xfff) as f32 / 4096.0 - 0.5)
                .sum::<f32>()
        };
        (0..n).map(|_| (0..dim).map(|_| next()).collect()).collect()
    }

    fn store(n: usize, dim: usize, seed: u64) -> VectorStore {
        let mut s = VectorStore::new(dim);
        for (i, v) in vectors(n, dim, seed).into_iter().enumerate() {
            s.push(
                PassageKey {
                    id: format!("v{i}"),
                    ord: 0,
                },
                v,
            )
            .unwrap();
        }
        s
    }

    fn queries(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut q = vectors(n, dim, seed);
        for v in &mut q {
            normalize(v, "q").unwrap();
        }
        q
    }

    #[test]
    fn recall_at_10_at_default_settings() {
        let (n, dim) = (4000, 32);
        let s = store(n, dim, 3);
        let g = HnswIndex::build(&s, HnswParams::default());
        let q = queries(300, dim, 77);
        let exact: Vec<_> = q.iter().map(|v| s.exact_search(v, 10)).collect();
        let approx: Vec<_> = q.iter().map(|v| g.search(v, 10)).collect();
        let r = recall_at_k(&exact, &approx, 10);
        assert!(r >= 0.95, "recall@10 {r}");
        // A narrower beam finds less: the setting is used.
        let narrow: Vec<_> = q.iter().map(|v| g.search_ef(v, 10, 10)).collect();
        assert!(recall_at_k(&exact, &narrow, 10) < r);
        // Scores are the exact dot products.
        for (a, v) in approx.iter().zip(&q) {
            for h in a {
                assert_eq!(h.score, dot(v, s.row(h.row)));
            }
        }
        // Layer 0 holds up to 2M links, upper levels M; the graph has upper levels.
        let m = g.params().m;
        assert!((0..n as u32).any(|i| g.links(i, 0).len() > m));
        assert!((0..n as u32).all(|i| g.links(i, 0).len() <= 2 * m));
        assert!(g.top_level >= 1);
    }

    #[test]
    fn tiny_sets_equal_exact_search() {
        for n in [1usize, 2, 5, 17, 40] {
            let s = store(n, 8, n as u64);
            let g = HnswIndex::build(&s, HnswParams::default());
            for v in queries(20, 8, 1000 + n as u64) {
                let want = s.exact_search(&v, n.min(10));
                assert_eq!(g.search(&v, 10), want, "n {n}");
            }
        }
        let empty = HnswIndex::build(&VectorStore::new(4), HnswParams::default());
        assert!(empty.search(&[1.0, 0.0, 0.0, 0.0], 3).is_empty());
    }

    #[test]
    fn deterministic_incremental_and_round_trip() {
        let s = store(1500, 16, 9);
        let p = HnswParams {
            m: 8,
            ef_construction: 64,
            ..HnswParams::default()
        };
        let a = HnswIndex::build(&s, p);
        assert_eq!(a, HnswIndex::build(&s, p), "same seed, same graph");
        // Built in two steps: the first 1000 rows, then the rest inserted.
        // (Rows copied as they are: normalising again could change last bits.)
        let first = VectorStore {
            dim: 16,
            keys: s.keys[..1000].to_vec(),
            data: s.data[..1000 * 16].to_vec(),
        };
        let mut inc = HnswIndex::build(&first, p);
        inc.extend_from(&s);
        assert_eq!(inc, a, "a full build inserts the rows in the same order");
        let q = queries(50, 16, 5);
        let bytes = a.to_bytes().unwrap();
        let back = HnswIndex::from_bytes(&bytes, Path::new("h")).unwrap();
        assert_eq!(back, a);
        for v in &q {
            assert_eq!(back.search(v, 10), a.search(v, 10));
        }
        // Damage anywhere is caught.
        let mut bad = bytes.clone();
        bad[100] ^= 1;
        assert!(matches!(
            HnswIndex::from_bytes(&bad, Path::new("h")),
            Err(RagError::Corrupt { .. })
        ));
        assert!(HnswIndex::from_bytes(&bytes[..bytes.len() - 1], Path::new("h")).is_err());
        assert!(HnswIndex::from_bytes(b"TPHNSW01xxxxxxxx", Path::new("h")).is_err());
        assert!(HnswIndex::is_legacy(b"TPHNSW01xxxxxxxx"));
    }

    #[test]
    fn settings_are_validated_by_name() {
        let bad = |p: HnswParams| match p.validate() {
            Err(RagError::InvalidSetting { setting, .. }) => setting,
            other => panic!("{other:?}"),
        };
        let d = HnswParams::default();
        assert_eq!(bad(HnswParams { m: 1, ..d }), "hnsw_m");
        assert_eq!(bad(HnswParams { m: 100_000, ..d }), "hnsw_m");
        assert_eq!(
            bad(HnswParams {
                ef_construction: 0,
                ..d
            }),
            "hnsw_ef_construction"
        );
        assert_eq!(bad(HnswParams { ef_search: 0, ..d }), "hnsw_ef_search");
        d.validate().unwrap();
        // The serde names, and the names of earlier builds' payloads.
        let j = serde_json::to_value(d).unwrap();
        assert_eq!(j["hnsw_m"], 16);
        assert_eq!(j["hnsw_ef_construction"], 200);
        let old: HnswParams =
            serde_json::from_str(r#"{"ef_construction": 128, "ef_search": 64, "seed": 1}"#)
                .unwrap();
        assert_eq!((old.m, old.ef_construction, old.seed), (16, 128, 1));
    }
}
