//! Passage vectors on disk and in memory: a row-major `[rows, dim]` matrix of L2-normalised
//! `f32` vectors keyed by (document id, passage number), exact search by blocked dot products,
//! and an HNSW graph over the same rows ([`HnswIndex`], [`crate::hnsw`]).
//!
//! File `vectors-<generation>.bin` (little endian): magic `TPVEC001`, `u32` dim, `u64` rows,
//! per row `u32` id length + id bytes + `u64` passage number, then `rows * dim` `f32`, then
//! the SHA-256 of everything before it. File `hnsw-<generation>.bin`: the graph in
//! [`crate::hnsw`]'s format (which holds its own copy of the vectors). Both are written
//! whole (temporary file, fsync, rename) before the tantivy commit that names the generation.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{RagError, Result};
pub use crate::hnsw::{HnswIndex, HnswParams};

const VEC_MAGIC: &[u8; 8] = b"TPVEC001";
/// Rows of the matrix scored per block in exact search (fits L2 with 384-wide vectors).
pub const BLOCK_ROWS: usize = 256;

/// The key of one passage: document id and passage number within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PassageKey {
    /// Document id.
    pub id: String,
    /// Passage number (0-based).
    pub ord: u64,
}

/// L2-normalises `v` in place; a zero or non-finite vector is an error naming `what`.
pub fn normalize(v: &mut [f32], what: &str) -> Result<()> {
    let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !n.is_finite() || n == 0.0 {
        return Err(RagError::InvalidSetting {
            setting: "embedding".into(),
            message: format!("{what}: vector of norm {n}; expected a finite, non-zero vector"),
        });
    }
    v.iter_mut().for_each(|x| *x /= n);
    Ok(())
}

/// Dot product (over the shorter length). With AVX2 and FMA at run time (x86-64): 32 lanes of
/// fused multiply-adds, then the portable loop's tail; otherwise eight scalar accumulators. The
/// summation order differs between the two paths (last-bit differences); one machine always
/// takes the same path, so exact and HNSW scores of one process agree bit for bit.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: AVX2 and FMA were detected on this CPU at run time.
        return unsafe { simd::dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

/// The portable dot product (eight accumulators).
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    // Eight accumulators: lets the compiler vectorise without reassociation flags.
    let mut acc = [0f32; 8];
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    for (x, y) in ca.iter().zip(cb) {
        for ((s, xv), yv) in acc.iter_mut().zip(x).zip(y) {
            *s += xv * yv;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Whether this CPU has AVX2 and FMA (detected once, then a cached load).
    #[inline]
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// `sum a[i] b[i]` over the shorter length, 4 x 8 lanes of FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`available`]).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY (all loads): i + 32 <= n, resp. i + 8 <= n, bounds both slices.
        while i + 32 <= n {
            for (j, s) in acc.iter_mut().enumerate() {
                let x = unsafe { _mm256_loadu_ps(pa.add(i + 8 * j)) };
                let y = unsafe { _mm256_loadu_ps(pb.add(i + 8 * j)) };
                *s = _mm256_fmadd_ps(x, y, *s);
            }
            i += 32;
        }
        while i + 8 <= n {
            let x = unsafe { _mm256_loadu_ps(pa.add(i)) };
            let y = unsafe { _mm256_loadu_ps(pb.add(i)) };
            acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
            i += 8;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let hi = _mm256_extractf128_ps(v, 1);
        let lo = _mm256_castps256_ps128(v);
        let s4 = _mm_add_ps(lo, hi);
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
        let mut s = _mm_cvtss_f32(s1);
        for (x, y) in a[i..n].iter().zip(&b[i..n]) {
            s += x * y;
        }
        s
    }
}

/// Passage vectors: `keys[i]` owns row `i` of `data` (`[rows, dim]`, row-major, L2-normalised).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorStore {
    /// Vector width.
    pub dim: usize,
    /// The passage of each row.
    pub keys: Vec<PassageKey>,
    /// `[rows, dim]` row-major.
    pub data: Vec<f32>,
}

/// One scored row: its index and its cosine similarity (dot product of normalised vectors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredRow {
    /// Row of the [`VectorStore`].
    pub row: usize,
    /// Cosine similarity.
    pub score: f32,
}

/// Best first; equal scores by row (index order).
fn by_score(a: &ScoredRow, b: &ScoredRow) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then(a.row.cmp(&b.row))
}

impl VectorStore {
    /// An empty store of width `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            keys: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Row `i` (`[dim]`).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Appends a row, normalising it; a vector of another width is an error.
    pub fn push(&mut self, key: PassageKey, mut v: Vec<f32>) -> Result<()> {
        if v.len() != self.dim {
            return Err(RagError::InvalidSetting {
                setting: "embedding".into(),
                message: format!(
                    "passage {:?}#{}: vector of {} values; the knowledge base's embedder gives {}",
                    key.id,
                    key.ord,
                    v.len(),
                    self.dim
                ),
            });
        }
        normalize(&mut v, &format!("passage {:?}#{}", key.id, key.ord))?;
        self.keys.push(key);
        self.data.extend_from_slice(&v);
        Ok(())
    }

    /// The store without the rows whose document id `drop` says to remove (order kept).
    pub fn without(&self, drop: impl Fn(&str) -> bool) -> Self {
        let mut out = Self::new(self.dim);
        for (i, k) in self.keys.iter().enumerate() {
            if !drop(&k.id) {
                out.keys.push(k.clone());
                out.data.extend_from_slice(self.row(i));
            }
        }
        out
    }

    /// Exact search: the `k` rows with the highest dot product with each query (each `[dim]`,
    /// normalised by the caller), best first, ties by row. Rows are scored in blocks of
    /// [`BLOCK_ROWS`] against every query (a blocked `[queries, dim] x [dim, rows]` product).
    pub fn exact_search_batch(&self, queries: &[Vec<f32>], k: usize) -> Vec<Vec<ScoredRow>> {
        let mut best: Vec<Vec<ScoredRow>> =
            vec![Vec::with_capacity(2 * k + BLOCK_ROWS); queries.len()];
        if k == 0 {
            return best;
        }
        for start in (0..self.len()).step_by(BLOCK_ROWS) {
            let end = (start + BLOCK_ROWS).min(self.len());
            for (q, b) in queries.iter().zip(best.iter_mut()) {
                for row in start..end {
                    b.push(ScoredRow {
                        row,
                        score: dot(q, self.row(row)),
                    });
                }
                if b.len() >= 2 * k + BLOCK_ROWS {
                    b.select_nth_unstable_by(k - 1, by_score);
                    b.truncate(k);
                }
            }
        }
        for b in &mut best {
            b.sort_by(by_score);
            b.truncate(k);
        }
        best
    }

    /// [`Self::exact_search_batch`] for one query.
    pub fn exact_search(&self, query: &[f32], k: usize) -> Vec<ScoredRow> {
        self.exact_search_batch(&[query.to_vec()], k)
            .pop()
            .unwrap_or_default()
    }

    /// Serialises the store (format in the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16 + self.data.len() * 4 + self.keys.len() * 24 + 32);
        b.extend_from_slice(VEC_MAGIC);
        b.extend_from_slice(&(self.dim as u32).to_le_bytes());
        b.extend_from_slice(&(self.keys.len() as u64).to_le_bytes());
        for k in &self.keys {
            b.extend_from_slice(&(k.id.len() as u32).to_le_bytes());
            b.extend_from_slice(k.id.as_bytes());
            b.extend_from_slice(&k.ord.to_le_bytes());
        }
        for x in &self.data {
            b.extend_from_slice(&x.to_le_bytes());
        }
        let h = Sha256::digest(&b);
        b.extend_from_slice(&h);
        b
    }

    /// Parses [`Self::to_bytes`]'s format; damage is [`RagError::Corrupt`] naming `path`.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |m: &str| RagError::Corrupt {
            path: path.to_path_buf(),
            message: format!("vector file: {m}"),
        };
        if bytes.len() < 8 + 4 + 8 + 32 || &bytes[..8] != VEC_MAGIC {
            return Err(corrupt("not a tilpass vector file (magic TPVEC001)"));
        }
        let (body, hash) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != hash {
            return Err(corrupt("checksum mismatch (truncated or damaged)"));
        }
        let mut pos = 8;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = body
                .get(pos..pos + n)
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
        let dim = u32_at(take(4)?) as usize;
        let rows = u64_at(take(8)?) as usize;
        let mut keys = Vec::with_capacity(rows.min(1 << 24));
        for _ in 0..rows {
            let n = u32_at(take(4)?) as usize;
            let id = std::str::from_utf8(take(n)?)
                .map_err(|_| corrupt("a passage id that is not UTF-8"))?
                .to_string();
            let ord = u64_at(take(8)?);
            keys.push(PassageKey { id, ord });
        }
        let bytes_len = rows
            .checked_mul(dim)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| corrupt("a header of impossible size"))?;
        let raw = take(bytes_len)?;
        let data = raw
            .as_chunks::<4>()
            .0
            .iter()
            .map(|c| f32::from_le_bytes(*c))
            .collect();
        if pos != body.len() {
            return Err(corrupt("trailing bytes after the matrix"));
        }
        Ok(Self { dim, keys, data })
    }
}

/// recall@k of approximate results against exact ones, ann-benchmarks style: per query, the
/// share of the `k` approximate hits whose score is at least the exact k-th score minus `1e-3`
/// (distance within the true k-th distance + 1e-3), averaged over queries.
pub fn recall_at_k(exact: &[Vec<ScoredRow>], approx: &[Vec<ScoredRow>], k: usize) -> f64 {
    if exact.is_empty() || k == 0 {
        return 0.0;
    }
    let mut total = 0.0;
    for (e, a) in exact.iter().zip(approx) {
        let want = e.len().min(k);
        if want == 0 {
            total += 1.0;
            continue;
        }
        let kth = e[want - 1].score;
        let hits = a
            .iter()
            .take(k)
            .filter(|h| h.score >= kth - 1e-3)
            .count()
            .min(want);
        total += hits as f64 / want as f64;
    }
    total / exact.len() as f64
}

/// Measured HNSW quality and speed on a set of queries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RecallReport {
    /// Queries run.
    pub queries: usize,
    /// `k` of recall@k.
    pub k: usize,
    /// recall@k of HNSW against exact search ([`recall_at_k`]).
    pub recall: f64,
    /// HNSW queries per second (one thread of search).
    pub hnsw_qps: f64,
    /// Exact-search queries per second (queries one at a time).
    pub exact_qps: f64,
}

/// Runs `queries` (normalised `[dim]` each) through exact search and `index`, timing both.
pub fn measure_recall(
    store: &VectorStore,
    index: &HnswIndex,
    queries: &[Vec<f32>],
    k: usize,
) -> RecallReport {
    let t = std::time::Instant::now();
    let exact: Vec<Vec<ScoredRow>> = queries.iter().map(|q| store.exact_search(q, k)).collect();
    let exact_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let approx: Vec<Vec<ScoredRow>> = queries.iter().map(|q| index.search(q, k)).collect();
    let hnsw_s = t.elapsed().as_secs_f64();
    let qps = |s: f64| queries.len() as f64 / s.max(1e-9);
    RecallReport {
        queries: queries.len(),
        k,
        recall: recall_at_k(&exact, &approx, k),
        hnsw_qps: qps(hnsw_s),
        exact_qps: qps(exact_s),
    }
}

/// Writes `bytes` to `path` whole (temporary file, fsync, rename).
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(tilpass_core::write_atomic(path, bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        // xorshift, Box-Muller-free: uniform in [-1, 1) is enough for a test of ranking.
        let mut s = seed.max(1);
        (0..n)
            .map(|_| {
                (0..dim)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
                    })
                    .collect()
            })
            .collect()
    }

    fn store(n: usize, dim: usize) -> VectorStore {
        let mut s = VectorStore::new(dim);
        for (i, v) in rng_vectors(n, dim, 7).into_iter().enumerate() {
            s.push(
                PassageKey {
                    id: format!("d{}", i / 3),
                    ord: (i % 3) as u64,
                },
                v,
            )
            .unwrap();
        }
        s
    }

    #[test]
    fn dot_paths_agree() {
        // Every tail length around the 32- and 8-lane blocks; values of both signs.
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 40, 384, 385, 1000] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 13.0)
                .collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let scale: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from((x * y).abs()))
                .sum();
            for got in [dot(&a, &b), dot_portable(&a, &b)] {
                assert!(
                    (f64::from(got) - want).abs() <= 1e-6 * scale.max(1.0),
                    "n {n}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn exact_search_is_a_full_sort() {
        let s = store(1000, 24);
        let mut q = rng_vectors(1, 24, 99).pop().unwrap();
        normalize(&mut q, "q").unwrap();
        let got = s.exact_search(&q, 10);
        let mut all: Vec<ScoredRow> = (0..s.len())
            .map(|row| ScoredRow {
                row,
                score: s.row(row).iter().zip(&q).map(|(a, b)| a * b).sum(),
            })
            .collect();
        all.sort_by(by_score);
        assert_eq!(got.len(), 10);
        for (g, w) in got.iter().zip(&all) {
            assert_eq!(g.row, w.row);
            assert!((g.score - w.score).abs() < 1e-5);
        }
        assert_eq!(s.exact_search(&q, 5000).len(), 1000);
    }

    #[test]
    fn bytes_round_trip_and_damage_is_detected() {
        let s = store(50, 8);
        let b = s.to_bytes();
        let p = Path::new("vectors-1.bin");
        assert_eq!(VectorStore::from_bytes(&b, p).unwrap(), s);
        let mut bad = b.clone();
        bad[40] ^= 1;
        assert!(matches!(
            VectorStore::from_bytes(&bad, p),
            Err(RagError::Corrupt { .. })
        ));
        assert!(matches!(
            VectorStore::from_bytes(&b[..b.len() - 3], p),
            Err(RagError::Corrupt { .. })
        ));
        let kept = s.without(|id| id == "d0");
        assert_eq!(kept.len(), 47);
        assert_eq!(kept.row(0), s.row(3));
        let mut zero = VectorStore::new(2);
        assert!(
            zero.push(
                PassageKey {
                    id: "z".into(),
                    ord: 0
                },
                vec![0.0, 0.0]
            )
            .is_err()
        );
        assert!(
            zero.push(
                PassageKey {
                    id: "z".into(),
                    ord: 0
                },
                vec![1.0]
            )
            .is_err()
        );
    }

    #[test]
    fn hnsw_round_trips_and_finds_neighbours() {
        let s = store(300, 16);
        let h = HnswIndex::build(&s, HnswParams::default());
        let b = h.to_bytes().unwrap();
        let h2 = HnswIndex::from_bytes(&b, Path::new("h")).unwrap();
        for i in [0usize, 17, 299] {
            let a = h.search(s.row(i), 5);
            assert_eq!(a[0].row, i);
            assert_eq!(a, h2.search(s.row(i), 5));
        }
        assert!(HnswIndex::from_bytes(b"garbage!x", Path::new("h")).is_err());
    }
}
