//! Perplexity under a character n-gram model, for the `perplexity` quality rule.
//!
//! [`NgramLm`] is an interpolated Witten–Bell model over characters (Witten & Bell 1991; Chen &
//! Goodman 1998, "An Empirical Study of Smoothing Techniques for Language Modeling", §2.5):
//!
//! ```text
//! P(c | h) = (C(h c) + N1+(h •) · P(c | h')) / (C(h) + N1+(h •))
//! ```
//!
//! where `h` is the preceding `order - 1` characters, `h'` is `h` without its first character,
//! `C` counts in the training text, and `N1+(h •)` is the number of distinct characters seen
//! after `h`. A context never seen falls back to `P(c | h')`; the recursion ends in the uniform
//! distribution over the training alphabet plus one unknown-character slot (every character
//! absent from training shares it). Each line of training text is one sequence, padded at the
//! start with `order - 1` start symbols and ended with an end symbol that is predicted too.
//!
//! The perplexity of a text is `exp(-mean ln P)` over its characters and the end symbol
//! (line breaks included as characters). Any other model can be used through
//! [`PerplexityScorer`].

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Anything that gives a text a perplexity (lower: more typical text).
pub trait PerplexityScorer {
    /// The perplexity of `text`.
    fn perplexity(&self, text: &str) -> f64;
}

/// Settings of [`NgramLm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NgramLmConfig {
    /// n-gram order: the model conditions on `order - 1` characters. Default 5.
    pub order: usize,
}

impl Default for NgramLmConfig {
    fn default() -> Self {
        Self { order: 5 }
    }
}

const BOS: char = '\u{2}';
const EOS: char = '\u{3}';

#[derive(Debug, Clone, Default)]
struct ContextCounts {
    total: u64,
    next: HashMap<char, u64>,
}

/// An interpolated Witten–Bell character n-gram model (see the module docs).
#[derive(Debug, Clone)]
pub struct NgramLm {
    order: usize,
    /// Characters seen in training (with the end symbol).
    vocab: usize,
    /// Counts per context, for contexts of 0 to `order - 1` characters.
    contexts: HashMap<String, ContextCounts>,
}

impl NgramLm {
    /// Trains on `lines` (each one sequence); needs some text.
    pub fn train<'a>(
        lines: impl IntoIterator<Item = &'a str>,
        config: NgramLmConfig,
    ) -> Result<Self> {
        if config.order == 0 {
            return Err(DataError::Invalid(
                "invalid n-gram setting `order` = 0: expected at least 1".into(),
            ));
        }
        let k = config.order - 1;
        let mut contexts: HashMap<String, ContextCounts> = HashMap::new();
        let mut vocab = std::collections::HashSet::new();
        let mut seqs = 0usize;
        for line in lines {
            if line.is_empty() {
                continue;
            }
            seqs += 1;
            let seq: Vec<char> = std::iter::repeat_n(BOS, k)
                .chain(line.chars())
                .chain([EOS])
                .collect();
            for (i, &c) in seq.iter().enumerate().skip(k) {
                vocab.insert(c);
                for len in 0..=k {
                    let ctx: String = seq[i - len..i].iter().collect();
                    let e = contexts.entry(ctx).or_default();
                    e.total += 1;
                    *e.next.entry(c).or_default() += 1;
                }
            }
        }
        if seqs == 0 {
            return Err(DataError::Invalid(
                "n-gram model: the training text is empty".into(),
            ));
        }
        Ok(Self {
            order: config.order,
            vocab: vocab.len(),
            contexts,
        })
    }

    /// Trains on the non-empty lines of a UTF-8 text file.
    pub fn train_file(path: impl AsRef<Path>, config: NgramLmConfig) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| DataError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let text = tilpass_core::decode_utf8(path, bytes)?;
        Self::train(text.lines().map(str::trim_end), config).map_err(|e| match e {
            DataError::Invalid(m) => DataError::Invalid(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The order.
    pub fn order(&self) -> usize {
        self.order
    }

    /// `P(c | context)`, using the last `order - 1` characters of `context` (start symbols
    /// `\u{2}` pad a short one); `c` = `\u{3}` is the end of the text.
    pub fn prob(&self, context: &[char], c: char) -> f64 {
        let k = self.order - 1;
        let mut h: Vec<char> = std::iter::repeat_n(BOS, k.saturating_sub(context.len()))
            .chain(context[context.len().saturating_sub(k)..].iter().copied())
            .collect();
        // Uniform over the alphabet plus the unknown slot.
        let mut p = 1.0 / (self.vocab as f64 + 1.0);
        // From the empty context up to the full one.
        let mut ctxs = vec![];
        while ctxs.len() <= k {
            ctxs.push(h.iter().collect::<String>());
            if h.is_empty() {
                break;
            }
            h.remove(0);
        }
        for ctx in ctxs.iter().rev() {
            if let Some(cc) = self.contexts.get(ctx) {
                let n1 = cc.next.len() as f64;
                let count = cc.next.get(&c).copied().unwrap_or(0) as f64;
                p = (count + n1 * p) / (cc.total as f64 + n1);
            }
        }
        p
    }

    /// Natural-log probability of `text` (its characters and the end symbol) and the number of
    /// predictions.
    pub fn log_prob(&self, text: &str) -> (f64, usize) {
        let chars: Vec<char> = text.chars().chain([EOS]).collect();
        let mut lp = 0.0;
        for (i, &c) in chars.iter().enumerate() {
            lp += self.prob(&chars[..i], c).ln();
        }
        (lp, chars.len())
    }

    /// The characters a prediction can be: every training character and the end symbol (the
    /// unknown slot is any other character).
    pub fn alphabet(&self) -> Vec<char> {
        let mut v: Vec<char> = self
            .contexts
            .get("")
            .map(|c| c.next.keys().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }
}

impl PerplexityScorer for NgramLm {
    fn perplexity(&self, text: &str) -> f64 {
        let (lp, n) = self.log_prob(text);
        (-lp / n as f64).exp()
    }
}

/// The rows to drop for the worst `drop_pct` percent of perplexities: the `floor(n · p / 100)`
/// highest values (of equal ones, later rows first). Returns the cut-off (the lowest dropped
/// perplexity; `None` when nothing is dropped) and a drop flag per row. NaN counts as the
/// highest.
pub fn perplexity_cutoff(values: &[f64], drop_pct: f64) -> Result<(Option<f64>, Vec<bool>)> {
    if !(0.0..=100.0).contains(&drop_pct) {
        return Err(DataError::Invalid(format!(
            "invalid setting `perplexity_drop_pct` = {drop_pct}: expected a percentage in [0, 100]"
        )));
    }
    let k = ((values.len() as f64) * drop_pct / 100.0).floor() as usize;
    let mut order: Vec<usize> = (0..values.len()).collect();
    let key = |x: f64| if x.is_nan() { f64::INFINITY } else { x };
    order.sort_by(|&a, &b| key(values[b]).total_cmp(&key(values[a])).then(b.cmp(&a)));
    let mut drop = vec![false; values.len()];
    for &i in &order[..k] {
        drop[i] = true;
    }
    let cut = order[..k].last().map(|&i| values[i]);
    Ok((cut, drop))
}
