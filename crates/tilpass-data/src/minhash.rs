//! MinHash signatures equal to datasketch's `MinHash` (2.0.0), for near-duplicate detection.
//!
//! A document becomes a set of shingles ([`Shingles`]); each shingle's UTF-8 bytes are hashed
//! with SHA-1 (the first 4 bytes, little-endian: datasketch's `sha1_hash32`), and each of
//! `num_perm` random permutations keeps the minimum permuted hash. The permutations are drawn
//! from numpy's `RandomState(seed)` exactly as datasketch draws them
//! ([`crate::nprandom::Mt19937`]), in one of two schemes:
//!
//! - [`MinHashScheme::Affine32`] (datasketch's default since 2.0.0): the hash is pre-mixed with
//!   the MurmurHash3 32-bit finalizer, then `a * h + b mod 2^32` with odd `a`;
//! - [`MinHashScheme::Legacy`] (datasketch before 2.0.0): `((a * h + b) mod 2^64) mod (2^61 - 1)`
//!   truncated to 32 bits (numpy's uint64 arithmetic wraps before the modulo).
//!
//! Text normalisation ([`Shingles`]): lower-cased (Unicode, like Python's `str.lower`), split
//! on white space (Unicode White_Space plus U+001C..U+001F, like `str.split()`), words joined
//! by one space. `words:N`: every run of N consecutive words (all words when fewer, none for an
//! empty text); `chars:N`: every run of N consecutive characters (code points) of the joined
//! text (the whole text when shorter). tests/fixtures/generate_minhash.py builds the same
//! shingles in Python; tests/all/minhash_parity.rs checks the hash values are equal.
//!
//! ```
//! use tilpass_data::minhash::{MinHasher, MinHashConfig};
//! let h = MinHasher::new(&MinHashConfig::default()).unwrap();
//! let a = h.signature("Været i Bergen er vått og kaldt i dag, men i morgen blir det sol.");
//! let b = h.signature("VÆRET i Bergen er vått og kaldt i dag, men i morgen blir det sol!");
//! assert_eq!(a.len(), 128);
//! assert!(tilpass_data::minhash::jaccard(&a, &b) > 0.5);
//! ```

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::error::{DataError, Result};
use crate::nprandom::Mt19937;

/// datasketch's `_mersenne_prime`, 2^61 - 1.
pub const MERSENNE_PRIME: u64 = (1 << 61) - 1;
/// datasketch's `_max_hash`, 2^32 - 1.
pub const MAX_HASH: u64 = (1 << 32) - 1;

/// How permutations are applied (datasketch's `scheme`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MinHashScheme {
    /// `fmix32(h) * a + b mod 2^32`, `a` odd (datasketch >= 2.0.0's default `"affine32"`).
    #[default]
    Affine32,
    /// `(a * h + b) mod (2^61 - 1)` truncated to 32 bits (datasketch < 2.0.0, `"legacy"`).
    Legacy,
}

/// How a text becomes shingles: `words:N` or `chars:N` (see the module docs for the
/// normalisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shingles {
    /// Runs of N consecutive words.
    Words(usize),
    /// Runs of N consecutive characters.
    Chars(usize),
}

impl Default for Shingles {
    fn default() -> Self {
        Self::Words(5)
    }
}

impl fmt::Display for Shingles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Words(n) => write!(f, "words:{n}"),
            Self::Chars(n) => write!(f, "chars:{n}"),
        }
    }
}

impl FromStr for Shingles {
    type Err = DataError;
    /// Parses `words:N` or `chars:N` with N >= 1.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            DataError::Invalid(format!(
                "invalid shingle setting `{s}`: expected words:N or chars:N with N >= 1"
            ))
        };
        let (kind, n) = s.split_once(':').ok_or_else(bad)?;
        let n: usize = n.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        match kind {
            "words" => Ok(Self::Words(n)),
            "chars" => Ok(Self::Chars(n)),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Shingles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shingles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// MinHash settings (datasketch's `MinHash(num_perm, seed, scheme)` plus the shingles).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MinHashConfig {
    /// Number of permutations (signature length), >= 1.
    pub num_perm: usize,
    /// Seed of numpy's `RandomState` drawing the permutations.
    pub seed: u32,
    /// Permutation scheme.
    pub scheme: MinHashScheme,
    /// Shingles.
    pub shingles: Shingles,
}

impl Default for MinHashConfig {
    fn default() -> Self {
        Self {
            num_perm: 128,
            seed: 1,
            scheme: MinHashScheme::Affine32,
            shingles: Shingles::Words(5),
        }
    }
}

/// True for the characters Python's `str.split()` splits on.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The normalised text: lower-cased, white space runs collapsed to one space, trimmed.
pub fn normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    for w in lower.split(is_py_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Calls `f` with each shingle of the normalised text `norm` (see [`normalize`]); `offsets`
/// is scratch space.
fn for_each_shingle(
    norm: &str,
    shingles: Shingles,
    offsets: &mut Vec<usize>,
    mut f: impl FnMut(&[u8]),
) {
    if norm.is_empty() {
        return;
    }
    offsets.clear();
    let bytes = norm.as_bytes();
    match shingles {
        Shingles::Words(n) => {
            // offsets: start of each word; the word ends before the next space.
            offsets.push(0);
            offsets.extend(memchr::memchr_iter(b' ', bytes).map(|i| i + 1));
            let words = offsets.len();
            if words < n {
                f(bytes);
                return;
            }
            for i in 0..=words - n {
                let start = offsets[i];
                let end = if i + n < words {
                    offsets[i + n] - 1
                } else {
                    bytes.len()
                };
                f(&bytes[start..end]);
            }
        }
        Shingles::Chars(n) => {
            offsets.extend(norm.char_indices().map(|(i, _)| i));
            offsets.push(bytes.len());
            let chars = offsets.len() - 1;
            if chars < n {
                f(bytes);
                return;
            }
            for i in 0..=chars - n {
                f(&bytes[offsets[i]..offsets[i + n]]);
            }
        }
    }
}

/// The shingles of a text as strings (for inspection; hashing does not allocate them).
pub fn shingles_of(text: &str, shingles: Shingles) -> Vec<String> {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    for_each_shingle(&normalize(text), shingles, &mut offsets, |s| {
        out.push(String::from_utf8_lossy(s).into_owned())
    });
    out
}

/// datasketch's `sha1_hash32`: the first 4 bytes of SHA-1, little-endian.
pub fn sha1_hash32(data: &[u8]) -> u32 {
    // A shingle that fits one block (<= 55 bytes with the padding) is padded here and
    // compressed directly: the same digest without the hasher's buffering.
    if data.len() <= 55 {
        let mut block = [0u8; 64];
        block[..data.len()].copy_from_slice(data);
        block[data.len()] = 0x80;
        block[56..].copy_from_slice(&(data.len() as u64 * 8).to_be_bytes());
        let mut h = SHA1_INIT;
        sha1::compress(&mut h, &[block.into()]);
        // The digest's first four bytes are `h[0]` big-endian, read little-endian.
        return h[0].swap_bytes();
    }
    let d = Sha1::digest(data);
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// SHA-1's initial state (FIPS 180-4, 5.3.1).
const SHA1_INIT: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];

/// The MurmurHash3 32-bit finalizer (datasketch's `_fmix(hv, 32)`).
pub fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// `sig[i] = min(sig[i], a[i] * h + b[i] mod 2^32)`: with AVX2 where the CPU has it (eight
/// lanes; the portable build targets SSE2, which has no 32-bit lane multiply or minimum).
#[inline]
fn affine_min(sig: &mut [u32], a: &[u32], b: &[u32], h: u32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { affine_min_avx2(sig, a, b, h) };
        return;
    }
    affine_min_portable(sig, a, b, h);
}

#[inline(always)]
fn affine_min_portable(sig: &mut [u32], a: &[u32], b: &[u32], h: u32) {
    for ((s, &a), &b) in sig.iter_mut().zip(a).zip(b) {
        *s = (*s).min(a.wrapping_mul(h).wrapping_add(b));
    }
}

/// [`affine_min_portable`] compiled for AVX2 (the compiler vectorises the loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn affine_min_avx2(sig: &mut [u32], a: &[u32], b: &[u32], h: u32) {
    affine_min_portable(sig, a, b, h)
}

/// MinHash with fixed permutations: makes signatures (`[num_perm]` u32 values each).
#[derive(Debug, Clone)]
pub struct MinHasher {
    config: MinHashConfig,
    a32: Vec<u32>,
    b32: Vec<u32>,
    a64: Vec<u64>,
    b64: Vec<u64>,
}

impl MinHasher {
    /// Draws the permutations as datasketch's `MinHash(num_perm, seed, scheme)` does;
    /// `num_perm` must be at least 1 ([`DataError::Invalid`] otherwise).
    pub fn new(config: &MinHashConfig) -> Result<Self> {
        if config.num_perm == 0 || config.num_perm > u32::MAX as usize {
            return Err(DataError::Invalid(format!(
                "invalid setting `num_perm` = {}: expected at least 1",
                config.num_perm
            )));
        }
        let n = config.num_perm;
        let mut g = Mt19937::new(config.seed);
        let (mut a32, mut b32, mut a64, mut b64) = (vec![], vec![], vec![], vec![]);
        match config.scheme {
            MinHashScheme::Legacy => {
                for _ in 0..n {
                    a64.push(g.randint_u64(1, MERSENNE_PRIME));
                    b64.push(g.randint_u64(0, MERSENNE_PRIME));
                }
            }
            MinHashScheme::Affine32 => {
                a32 = (0..n)
                    .map(|_| g.randint_u32(0, 1 << 31).wrapping_mul(2).wrapping_add(1))
                    .collect();
                b32 = (0..n).map(|_| g.randint_u32(0, 1 << 32)).collect();
            }
        }
        Ok(Self {
            config: *config,
            a32,
            b32,
            a64,
            b64,
        })
    }

    /// The settings.
    pub fn config(&self) -> &MinHashConfig {
        &self.config
    }

    /// The permutation parameters `(a, b)` as datasketch's `MinHash.permutations` holds them.
    pub fn permutations(&self) -> (Vec<u64>, Vec<u64>) {
        match self.config.scheme {
            MinHashScheme::Legacy => (self.a64.clone(), self.b64.clone()),
            MinHashScheme::Affine32 => (
                self.a32.iter().map(|&x| x as u64).collect(),
                self.b32.iter().map(|&x| x as u64).collect(),
            ),
        }
    }

    /// Folds one token (its bytes) into `sig` (`[num_perm]`, started at `u32::MAX`).
    #[inline]
    pub fn update(&self, sig: &mut [u32], token: &[u8]) {
        let hv = sha1_hash32(token);
        match self.config.scheme {
            MinHashScheme::Affine32 => affine_min(sig, &self.a32, &self.b32, fmix32(hv)),
            MinHashScheme::Legacy => {
                let h = hv as u64;
                for ((s, &a), &b) in sig.iter_mut().zip(&self.a64).zip(&self.b64) {
                    let p = (a.wrapping_mul(h).wrapping_add(b) % MERSENNE_PRIME) & MAX_HASH;
                    *s = (*s).min(p as u32);
                }
            }
        }
    }

    /// Writes the signature of `text` into `sig` (`[num_perm]`); `offsets` is scratch space.
    pub fn signature_into(&self, text: &str, sig: &mut [u32], offsets: &mut Vec<usize>) {
        sig.fill(u32::MAX);
        let norm = normalize(text);
        for_each_shingle(&norm, self.config.shingles, offsets, |s| {
            self.update(sig, s)
        });
    }

    /// The signature of one text, `[num_perm]`; an empty text gives all `u32::MAX` (2^32 - 1,
    /// datasketch's empty MinHash).
    pub fn signature(&self, text: &str) -> Vec<u32> {
        let mut sig = vec![u32::MAX; self.config.num_perm];
        self.signature_into(text, &mut sig, &mut Vec::new());
        sig
    }

    /// Signatures of many texts, hashed in parallel (rayon): `[texts.len(), num_perm]`.
    pub fn signatures<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Signatures {
        let n = self.config.num_perm;
        // Zeroed (fresh pages, touched first by the worker that fills them): each
        // `signature_into` starts its row at `u32::MAX` itself.
        let mut data = vec![0u32; texts.len() * n];
        data.par_chunks_mut(n * 64)
            .zip(texts.par_chunks(64))
            .for_each_init(Vec::new, |offsets, (out, ts)| {
                for (sig, t) in out.chunks_mut(n).zip(ts) {
                    self.signature_into(t.as_ref(), sig, offsets);
                }
            });
        Signatures { num_perm: n, data }
    }
}

/// Signatures of many documents, `[docs, num_perm]` row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signatures {
    /// Values per signature.
    pub num_perm: usize,
    /// The values, `[docs, num_perm]`.
    pub data: Vec<u32>,
}

impl Signatures {
    /// Number of documents.
    pub fn len(&self) -> usize {
        self.data.len() / self.num_perm.max(1)
    }

    /// True when there is no document.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The signature of document `i`, `[num_perm]`.
    pub fn get(&self, i: usize) -> &[u32] {
        &self.data[i * self.num_perm..(i + 1) * self.num_perm]
    }
}

/// Estimated Jaccard similarity of two signatures: the share of equal values (datasketch's
/// `MinHash.jaccard`). Signatures of different lengths give 0.
pub fn jaccard(a: &[u32], b: &[u32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let eq = a.iter().zip(b).filter(|(x, y)| x == y).count();
    eq as f64 / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_block_sha1_equals_the_hasher() {
        for len in 0..200usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let d = Sha1::digest(&data);
            assert_eq!(
                sha1_hash32(&data),
                u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
                "length {len}"
            );
        }
    }

    #[test]
    fn shingles_follow_the_documented_normalisation() {
        let w = shingles_of("  Hei  PÅ\tdeg du ", Shingles::Words(2));
        assert_eq!(w, ["hei på", "på deg", "deg du"]);
        assert_eq!(shingles_of("Hei på", Shingles::Words(5)), ["hei på"]);
        assert!(shingles_of(" \n", Shingles::Words(1)).is_empty());
        assert_eq!(shingles_of("Æb  c", Shingles::Chars(3)), ["æb ", "b c"]);
        assert_eq!(shingles_of("ab", Shingles::Chars(3)), ["ab"]);
        assert_eq!("chars:4".parse::<Shingles>().unwrap(), Shingles::Chars(4));
        for bad in ["words", "words:0", "bytes:3", "chars:x"] {
            assert!(bad.parse::<Shingles>().is_err(), "{bad}");
        }
    }

    #[test]
    fn identical_texts_after_normalisation_have_equal_signatures() {
        let h = MinHasher::new(&MinHashConfig::default()).unwrap();
        let a = h.signature("En to tre fire fem seks");
        assert_eq!(a, h.signature("EN to  tre\nfire fem seks"));
        assert_ne!(a, h.signature("En to tre fire fem sju"));
        let sigs = h.signatures(&["En to tre fire fem seks", ""]);
        assert_eq!(sigs.get(0), &a[..]);
        assert!(sigs.get(1).iter().all(|&v| v == u32::MAX));
        assert!(
            MinHasher::new(&MinHashConfig {
                num_perm: 0,
                ..Default::default()
            })
            .is_err()
        );
    }
}
