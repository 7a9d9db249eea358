//! Near-duplicate removal: MinHash signatures ([`crate::minhash`]), LSH candidate buckets
//! ([`crate::lsh`]), and clusters (union-find over candidate pairs whose estimated Jaccard
//! similarity is at least the threshold). The first document of each cluster, in input order,
//! is kept; every other one is reported with the kept document and their estimated Jaccard
//! similarity (which, as clusters are transitive, may be below the threshold for a document
//! joined through a third one).
//!
//! ```
//! use tilpass_data::near_dedup::{NearDedupConfig, near_dedup_texts};
//! let texts = [
//!     "Været i Bergen er vått og kaldt i dag, men i morgen blir det sol og varmt.",
//!     "Jeg liker å gå på ski om vinteren og sykle til jobben om sommeren.",
//!     "Været i Bergen er vått og kaldt i dag, men i morgen blir det sol og varmt!",
//! ];
//! let cfg = NearDedupConfig { threshold: 0.5, ..Default::default() };
//! let out = near_dedup_texts(&texts, &cfg).unwrap();
//! assert_eq!(out.keep, [0, 1]);
//! assert_eq!((out.removed[0].index, out.removed[0].kept), (2, 0));
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::lsh::{LshConfig, MinHashLsh};
use crate::minhash::{MinHashConfig, MinHashScheme, MinHasher, Shingles, Signatures, jaccard};
use crate::record::Record;

/// Near-duplicate settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NearDedupConfig {
    /// Estimated Jaccard similarity at or above which two documents are near-duplicates (also
    /// the LSH threshold), in `[0, 1]`.
    pub threshold: f64,
    /// MinHash permutations.
    pub num_perm: usize,
    /// Shingles (`words:N` or `chars:N`).
    pub shingles: Shingles,
    /// Seed of the permutations.
    pub seed: u32,
    /// Permutation scheme (datasketch's default `affine32`, or `legacy`).
    pub scheme: MinHashScheme,
    /// LSH weights of false positives and false negatives.
    pub weights: (f64, f64),
}

impl Default for NearDedupConfig {
    fn default() -> Self {
        Self {
            threshold: 0.8,
            num_perm: 128,
            shingles: Shingles::Words(5),
            seed: 1,
            scheme: MinHashScheme::Affine32,
            weights: (0.5, 0.5),
        }
    }
}

/// A document removed as a near-duplicate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NearDuplicate {
    /// Its index in the input.
    pub index: usize,
    /// The index of the kept document of its cluster (smaller than `index`).
    pub kept: usize,
    /// Estimated Jaccard similarity between the two.
    pub jaccard: f64,
}

/// Counts of [`near_dedup_texts`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NearDedupReport {
    /// Documents looked at.
    pub input: usize,
    /// Documents kept.
    pub kept: usize,
    /// Documents removed.
    pub removed: usize,
    /// Clusters of two or more documents.
    pub clusters: usize,
    /// LSH bands and rows per band.
    pub bands: usize,
    /// Rows per band.
    pub rows: usize,
    /// Candidate pairs whose similarity was estimated.
    pub pairs_checked: usize,
}

/// What [`near_dedup_texts`] found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NearDedup {
    /// Indices kept, ascending.
    pub keep: Vec<usize>,
    /// Documents removed, by ascending index.
    pub removed: Vec<NearDuplicate>,
    /// Counts.
    pub report: NearDedupReport,
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize];
        x = p;
    }
    x
}

fn lsh_of(config: &NearDedupConfig) -> Result<MinHashLsh> {
    MinHashLsh::new(&LshConfig {
        threshold: config.threshold,
        num_perm: config.num_perm,
        weights: config.weights,
    })
}

fn hasher_of(config: &NearDedupConfig) -> Result<MinHasher> {
    MinHasher::new(&MinHashConfig {
        num_perm: config.num_perm,
        seed: config.seed,
        scheme: config.scheme,
        shingles: config.shingles,
    })
}

/// Checks `config` (threshold, permutations, LSH weights) without doing any work.
pub fn check_config(config: &NearDedupConfig) -> Result<()> {
    lsh_of(config)?;
    hasher_of(config)?;
    Ok(())
}

/// Finds near-duplicate clusters among `texts` and keeps the first of each.
pub fn near_dedup_texts<S: AsRef<str> + Sync>(
    texts: &[S],
    config: &NearDedupConfig,
) -> Result<NearDedup> {
    check_count(texts.len())?;
    let hasher = hasher_of(config)?;
    near_dedup_signatures(&hasher.signatures(texts), config)
}

fn check_count(n: usize) -> Result<()> {
    if n > u32::MAX as usize {
        return Err(DataError::Invalid(format!(
            "{n} documents: near-dedup takes at most {}",
            u32::MAX
        )));
    }
    Ok(())
}

/// Texts pushed one at a time, hashed a chunk at a time, so that only their MinHash
/// signatures (`num_perm` × 4 bytes each) are kept, not the texts: near-dedup of a dataset
/// larger than memory. [`NearDedupStream::finish`] gives what [`near_dedup_texts`] gives for
/// the same texts in the same order.
///
/// ```
/// use tilpass_data::near_dedup::{NearDedupConfig, NearDedupStream, near_dedup_texts};
/// let texts = ["en to tre fire fem seks", "sju åtte ni ti", "en to tre fire fem seks!"];
/// let cfg = NearDedupConfig { threshold: 0.5, ..Default::default() };
/// let mut stream = NearDedupStream::new(&cfg).unwrap();
/// for t in texts {
///     stream.push(t.to_string());
/// }
/// assert_eq!(stream.finish().unwrap(), near_dedup_texts(&texts, &cfg).unwrap());
/// ```
pub struct NearDedupStream {
    config: NearDedupConfig,
    hasher: MinHasher,
    sigs: Signatures,
    pending: Vec<String>,
    pushed: usize,
}

impl NearDedupStream {
    /// Texts hashed together (in parallel) when this many are pending.
    pub const CHUNK: usize = 4096;

    /// A stream for `config` (checked here: threshold, permutations, LSH weights).
    pub fn new(config: &NearDedupConfig) -> Result<Self> {
        lsh_of(config)?;
        let hasher = hasher_of(config)?;
        Ok(Self {
            config: *config,
            hasher,
            sigs: Signatures {
                num_perm: config.num_perm,
                data: Vec::new(),
            },
            pending: Vec::with_capacity(Self::CHUNK),
            pushed: 0,
        })
    }

    /// Adds the next document's text.
    pub fn push(&mut self, text: String) {
        self.pending.push(text);
        self.pushed += 1;
        if self.pending.len() >= Self::CHUNK {
            self.flush();
        }
    }

    /// Documents pushed so far.
    pub fn len(&self) -> usize {
        self.pushed
    }

    /// True before the first [`NearDedupStream::push`].
    pub fn is_empty(&self) -> bool {
        self.pushed == 0
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let chunk = self.hasher.signatures(&self.pending);
            self.sigs.data.extend_from_slice(&chunk.data);
            self.pending.clear();
        }
    }

    /// The clusters of every pushed document (indices in push order).
    pub fn finish(mut self) -> Result<NearDedup> {
        check_count(self.pushed)?;
        self.flush();
        near_dedup_signatures(&self.sigs, &self.config)
    }
}

/// Finds near-duplicate clusters from MinHash signatures (`[docs, num_perm]`, made with
/// `config`'s permutations, seed and shingles) and keeps the first of each.
pub fn near_dedup_signatures(sigs: &Signatures, config: &NearDedupConfig) -> Result<NearDedup> {
    check_count(sigs.len())?;
    if sigs.num_perm != config.num_perm {
        return Err(DataError::Invalid(format!(
            "signatures of {} values, but the near-dedup settings have num_perm {}",
            sigs.num_perm, config.num_perm
        )));
    }
    let lsh = lsh_of(config)?;
    let n = sigs.len();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    let mut pairs = 0;
    for group in lsh.buckets(sigs) {
        for (x, &i) in group.iter().enumerate() {
            for &j in &group[x + 1..] {
                let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                if ri == rj {
                    continue;
                }
                pairs += 1;
                if jaccard(sigs.get(i as usize), sigs.get(j as usize)) >= config.threshold {
                    // The smaller index becomes the root: the first document in input order.
                    let (lo, hi) = if ri < rj { (ri, rj) } else { (rj, ri) };
                    parent[hi as usize] = lo;
                }
            }
        }
    }
    let mut keep = Vec::new();
    let mut removed = Vec::new();
    let mut sizes = vec![0u32; n];
    for i in 0..n {
        let root = find(&mut parent, i as u32) as usize;
        sizes[root] += 1;
        if root == i {
            keep.push(i);
        } else {
            removed.push(NearDuplicate {
                index: i,
                kept: root,
                jaccard: jaccard(sigs.get(i), sigs.get(root)),
            });
        }
    }
    let report = NearDedupReport {
        input: n,
        kept: keep.len(),
        removed: removed.len(),
        clusters: sizes.iter().filter(|&&s| s >= 2).count(),
        bands: lsh.bands,
        rows: lsh.rows,
        pairs_checked: pairs,
    };
    Ok(NearDedup {
        keep,
        removed,
        report,
    })
}

/// The text a record is compared by: every text field (message contents, prompt, completion,
/// chosen, rejected), joined by newlines in the record's field order.
pub fn record_text(r: &Record) -> String {
    r.contents()
        .iter()
        .map(|c| c.joined_text())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_keep_the_first_and_are_transitive() {
        let base: Vec<String> = (0..40).map(|i| format!("ord{i}")).collect();
        let a = base.join(" ");
        let mut b = base.clone();
        b[39] = "endret".into();
        let mut c = b.clone();
        c[0] = "annet".into();
        let other: String = (0..40).map(|i| format!("x{i} ")).collect();
        let texts = [other.clone(), c.join(" "), a.clone(), b.join(" "), a];
        let cfg = NearDedupConfig {
            threshold: 0.7,
            ..Default::default()
        };
        let out = near_dedup_texts(&texts, &cfg).unwrap();
        assert_eq!(out.keep, [0, 1]);
        let kept: Vec<_> = out.removed.iter().map(|d| (d.index, d.kept)).collect();
        assert_eq!(kept, [(2, 1), (3, 1), (4, 1)]);
        assert_eq!(out.removed[2].jaccard, out.removed[0].jaccard);
        assert_eq!(out.report.clusters, 1);
        let bad = NearDedupConfig {
            threshold: 2.0,
            ..Default::default()
        };
        assert!(near_dedup_texts(&texts, &bad).is_err());
    }

    #[test]
    fn the_stream_equals_the_whole_list_across_chunks() {
        // More than two chunks, with near-duplicates far apart (across chunk boundaries).
        let n = 2 * NearDedupStream::CHUNK + 17;
        let texts: Vec<String> = (0..n)
            .map(|i| {
                let base = i % 997;
                let words: String = (0..12).map(|w| format!("ord{base}x{w} ")).collect();
                if i % 3 == 0 {
                    format!("{words} tillegg")
                } else {
                    words
                }
            })
            .collect();
        let cfg = NearDedupConfig {
            threshold: 0.6,
            num_perm: 64,
            ..Default::default()
        };
        let mut stream = NearDedupStream::new(&cfg).unwrap();
        assert!(stream.is_empty());
        for t in &texts {
            stream.push(t.clone());
        }
        assert_eq!(stream.len(), n);
        let streamed = stream.finish().unwrap();
        let whole = near_dedup_texts(&texts, &cfg).unwrap();
        assert!(whole.report.removed > n / 2, "{:?}", whole.report);
        assert_eq!(streamed, whole);
        // Signatures of other settings are refused.
        let sigs = hasher_of(&cfg).unwrap().signatures(&texts[..3]);
        let other = NearDedupConfig {
            num_perm: 128,
            ..cfg
        };
        assert!(near_dedup_signatures(&sigs, &other).is_err());
    }
}
