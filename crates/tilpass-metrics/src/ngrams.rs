//! Exact n-gram counting for BLEU and chrF: tokens interned per segment, n-grams packed into
//! `u128` keys (no hashing collisions: a key is the n-gram itself).

use rustc_hash::FxHashMap;

/// n-gram → count, for one order.
pub type Counts = FxHashMap<u128, u32>;

/// Interns the tokens of a segment (hypothesis and its references share one table, so equal
/// tokens get equal ids).
#[derive(Debug, Default)]
pub struct Interner<'a> {
    ids: FxHashMap<&'a str, u32>,
}

impl<'a> Interner<'a> {
    /// Ids of `tokens`.
    pub fn ids(&mut self, tokens: impl Iterator<Item = &'a str>) -> Vec<u32> {
        tokens
            .map(|t| {
                let n = self.ids.len() as u32;
                *self.ids.entry(t).or_insert(n)
            })
            .collect()
    }

    /// Number of distinct tokens so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Bits per id that let `max_order` ids share a `u128` key (with one spare bit per id so that
/// ids never reach the all-ones pattern).
pub fn bits_for(max_order: usize) -> u32 {
    (128 / max_order.max(1)).min(32) as u32
}

/// Counts of the n-grams of `ids` for n in `1..=max_order`: `out[n - 1]`. Keys pack each id
/// shifted by one (so `0` means "no token") in `bits` bits; the caller guarantees that every
/// id + 1 fits.
pub fn count_ngrams(ids: &[u32], max_order: usize, bits: u32) -> Vec<Counts> {
    let mut out = vec![Counts::default(); max_order];
    for (n, counts) in out.iter_mut().enumerate() {
        let n = n + 1;
        if ids.len() < n {
            continue;
        }
        counts.reserve(ids.len() + 1 - n);
        for w in ids.windows(n) {
            let mut key = 0u128;
            for &id in w {
                key = (key << bits) | u128::from(id + 1);
            }
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    out
}
