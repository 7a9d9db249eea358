//! TER (translation edit rate) exactly as sacrebleu 2.6.0 computes it: tercom's tokenizer
//! (lower-case unless case-sensitive, optional normalisation and punctuation removal), word
//! shifts found greedily (at most 10 words, 50 positions, 1,000 candidates per sentence), a
//! beam-limited edit distance (beam 25), the fewest edits over the references divided by the
//! average reference length, corpus scores from summed statistics.

use serde::{Deserialize, Serialize};

use crate::bleu::SACREBLEU_VERSION;
use crate::error::{MetricsError, Result};
use crate::ngrams::Interner;
use crate::sacre_tokenize::{is_py_space, py_split};

const MAX_SHIFT_SIZE: usize = 10;
const MAX_SHIFT_DIST: usize = 50;
const BEAM_WIDTH: usize = 25;
const MAX_SHIFT_CANDIDATES: usize = 1000;
const INF: i64 = 10_000_000_000_000_000;

/// TER settings (sacrebleu's `TER(...)`; Asian-script support is not implemented).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TerConfig {
    /// tercom's normalisation (punctuation split, `'s`, numbers).
    pub normalized: bool,
    /// Remove `.,?:;!"()`.
    pub no_punct: bool,
    /// Keep case (default: lower-case).
    pub case_sensitive: bool,
}

/// A TER score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerScore {
    /// TER × 100 (lower is better; can exceed 100).
    pub score: f64,
    /// Edits (shifts + insertions + deletions + substitutions), summed.
    pub num_edits: f64,
    /// Average reference length, summed over segments.
    pub ref_length: f64,
    /// sacrebleu's signature.
    pub signature: String,
}

fn sub_pairs(
    s: &[char],
    m: impl Fn(char, char) -> bool,
    r: impl Fn(char, char, &mut Vec<char>),
) -> Vec<char> {
    let mut out = Vec::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < s.len() {
        if i + 1 < s.len() && m(s[i], s[i + 1]) {
            r(s[i], s[i + 1], &mut out);
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// sacrebleu's `TercomTokenizer` (without Asian support).
pub fn tercom_tokenize(sent: &str, cfg: &TerConfig) -> String {
    if sent.is_empty() {
        return String::new();
    }
    let mut s = if cfg.case_sensitive {
        sent.to_string()
    } else {
        sent.to_lowercase()
    };
    if cfg.normalized {
        s = s
            .replace("\n-", "")
            .replace('\n', " ")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
        let mut a: Vec<char> = vec![' '];
        for c in s.chars() {
            if matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/') {
                a.extend([' ', c, ' ']);
            } else {
                a.push(c);
            }
        }
        a.push(' ');
        let mut t: String = a.into_iter().collect();
        t = t.replace("'s ", " 's ");
        if let Some(x) = t.strip_suffix("'s") {
            t = format!("{x} 's");
        }
        let a: Vec<char> = t.chars().collect();
        let digit = |c: char| c.is_ascii_digit();
        let dot = |c: char| c == '.' || c == ',';
        let a = sub_pairs(
            &a,
            |x, y| !digit(x) && dot(y),
            |x, y, o| o.extend([x, ' ', y, ' ']),
        );
        let a = sub_pairs(
            &a,
            |x, y| dot(x) && !digit(y),
            |x, y, o| o.extend([' ', x, ' ', y]),
        );
        let a = sub_pairs(
            &a,
            |x, y| digit(x) && y == '-',
            |x, y, o| o.extend([x, ' ', y, ' ']),
        );
        s = a.into_iter().collect();
    }
    if cfg.no_punct {
        s.retain(|c| !matches!(c, '.' | ',' | '?' | ':' | ';' | '!' | '"' | '(' | ')'));
    }
    py_split(&s).collect::<Vec<_>>().join(" ")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Ins,
    Del,
    Nop,
    Sub,
    Undef,
}

/// `BeamEditDistance` without its prefix cache (which only saves time: every hypothesis it
/// sees for one reference has the same length, so cached rows equal recomputed ones).
fn edit_distance(h: &[u32], r: &[u32]) -> Result<(i64, Vec<Op>)> {
    let (nh, nr) = (h.len(), r.len());
    let mut dist = vec![vec![(INF, Op::Undef); nr + 1]; nh + 1];
    for (j, cell) in dist[0].iter_mut().enumerate() {
        *cell = (j as i64, Op::Ins);
    }
    let ratio = if nh > 0 { nr as f64 / nh as f64 } else { 1.0 };
    let beam = if (BEAM_WIDTH as f64) < ratio / 2.0 {
        (ratio / 2.0 + BEAM_WIDTH as f64).ceil() as usize
    } else {
        BEAM_WIDTH
    };
    for i in 1..=nh {
        let diag = (i as f64 * ratio).floor() as usize;
        let min_j = diag.saturating_sub(beam);
        let max_j = if i == nh {
            nr + 1
        } else {
            (nr + 1).min(diag + beam)
        };
        for j in min_j..max_j {
            if j == 0 {
                dist[i][0] = (dist[i - 1][0].0 + 1, Op::Del);
            } else {
                let (cs, os) = if h[i - 1] == r[j - 1] {
                    (0, Op::Nop)
                } else {
                    (1, Op::Sub)
                };
                for (c, o) in [
                    (dist[i - 1][j - 1].0 + cs, os),
                    (dist[i - 1][j].0 + 1, Op::Del),
                    (dist[i][j - 1].0 + 1, Op::Ins),
                ] {
                    if dist[i][j].0 > c {
                        dist[i][j] = (c, o);
                    }
                }
            }
        }
    }
    let mut trace = Vec::new();
    let (mut i, mut j) = (nh, nr);
    while i > 0 || j > 0 {
        let op = dist[i][j].1;
        trace.push(op);
        match op {
            Op::Sub | Op::Nop => {
                i -= 1;
                j -= 1;
            }
            Op::Ins => j -= 1,
            Op::Del => i -= 1,
            Op::Undef => {
                return Err(MetricsError::Invalid(
                    "TER: the edit-distance beam lost the alignment".into(),
                ));
            }
        }
    }
    trace.reverse();
    Ok((dist[nh][nr].0, trace))
}

/// `trace_to_alignment` of the flipped trace: (ref position → hyp position, ref errors, hyp
/// errors).
fn alignment(inv_trace: &[Op]) -> (Vec<i64>, Vec<u8>, Vec<u8>) {
    let (mut ph, mut pr) = (-1i64, -1i64);
    let (mut align, mut ref_err, mut hyp_err) = (Vec::new(), Vec::new(), Vec::new());
    for op in inv_trace {
        // Flip: insertions become deletions and back.
        match op {
            Op::Nop | Op::Sub => {
                ph += 1;
                pr += 1;
                align.push(ph);
                let e = u8::from(*op == Op::Sub);
                hyp_err.push(e);
                ref_err.push(e);
            }
            Op::Del => {
                // flipped: insertion
                ph += 1;
                hyp_err.push(1);
            }
            Op::Ins => {
                // flipped: deletion
                pr += 1;
                align.push(ph);
                ref_err.push(1);
            }
            Op::Undef => {}
        }
        debug_assert_eq!(align.len() as i64, pr + 1);
    }
    (align, ref_err, hyp_err)
}

fn perform_shift(w: &[u32], start: usize, len: usize, target: usize) -> Vec<u32> {
    if target < start {
        [
            &w[..target],
            &w[start..start + len],
            &w[target..start],
            &w[start + len..],
        ]
        .concat()
    } else if target > start + len {
        [
            &w[..start],
            &w[start + len..target],
            &w[start..start + len],
            &w[target..],
        ]
        .concat()
    } else {
        [
            &w[..start],
            &w[start + len..len + target],
            &w[start..start + len],
            &w[len + target..],
        ]
        .concat()
    }
}

/// One round of `_shift`: (gain, shifted words, candidates checked so far).
fn shift(
    h: &[u32],
    r: &[u32],
    words: &[&str],
    mut checked: usize,
) -> Result<(i64, Vec<u32>, usize)> {
    let (pre, trace) = edit_distance(h, r)?;
    let (align, ref_err, hyp_err) = alignment(&trace);
    // (gain, length, -start_h, -idx, words): Python compares these tuples.
    let mut best: Option<(i64, usize, i64, i64, Vec<u32>)> = None;
    let text = |v: &[u32]| -> Vec<&str> { v.iter().map(|&i| words[i as usize]).collect() };
    'outer: for sh in 0..h.len() {
        for sr in 0..r.len() {
            if sr.abs_diff(sh) > MAX_SHIFT_DIST {
                continue;
            }
            let mut len = 0;
            while h[sh + len] == r[sr + len] && len < MAX_SHIFT_SIZE {
                len += 1;
                // candidate (sh, sr, len)
                let ok = hyp_err[sh..sh + len].iter().any(|e| *e != 0)
                    && ref_err[sr..sr + len].iter().any(|e| *e != 0)
                    && !(sh as i64 <= align[sr] && align[sr] < (sh + len) as i64);
                if ok {
                    let mut prev = -1i64;
                    for off in -1i64..len as i64 {
                        let pos = sr as i64 + off;
                        let idx = if pos == -1 {
                            0
                        } else if (pos as usize) < align.len() {
                            align[pos as usize] + 1
                        } else {
                            break;
                        };
                        if idx == prev {
                            continue;
                        }
                        prev = idx;
                        let shifted = perform_shift(h, sh, len, idx as usize);
                        let gain = pre - edit_distance(&shifted, r)?.0;
                        checked += 1;
                        let cand = (gain, len, -(sh as i64), -idx, shifted);
                        let better = match &best {
                            None => true,
                            Some(b) => (cand.0, cand.1, cand.2, cand.3)
                                .cmp(&(b.0, b.1, b.2, b.3))
                                .then_with(|| text(&cand.4).cmp(&text(&b.4)))
                                .is_gt(),
                        };
                        if better {
                            best = Some(cand);
                        }
                    }
                }
                if checked >= MAX_SHIFT_CANDIDATES {
                    break 'outer;
                }
                if h.len() == sh + len || r.len() == sr + len {
                    break;
                }
            }
        }
    }
    Ok(match best {
        None => (0, h.to_vec(), checked),
        Some((gain, _, _, _, w)) => (gain, w, checked),
    })
}

/// `translation_edit_rate`: (edits, reference length) of one hypothesis/reference pair.
pub fn translation_edit_rate(hyp: &[&str], reference: &[&str]) -> Result<(i64, usize)> {
    if reference.is_empty() {
        return Ok((hyp.len() as i64, 0));
    }
    let mut interner = Interner::default();
    let h = interner.ids(hyp.iter().copied());
    let r = interner.ids(reference.iter().copied());
    let mut words: Vec<&str> = vec![""; interner.len()];
    for (w, &i) in hyp.iter().zip(&h).chain(reference.iter().zip(&r)) {
        words[i as usize] = w;
    }
    let mut input = h;
    let mut shifts = 0i64;
    let mut checked = 0usize;
    loop {
        let (delta, shifted, c) = shift(&input, &r, &words, checked)?;
        checked = c;
        if checked >= MAX_SHIFT_CANDIDATES || delta <= 0 {
            break;
        }
        shifts += 1;
        input = shifted;
    }
    let (ed, _) = edit_distance(&input, &r)?;
    Ok((shifts + ed, reference.len()))
}

/// The TER metric.
#[derive(Debug, Clone, Default)]
pub struct Ter {
    /// Settings.
    pub config: TerConfig,
}

impl Ter {
    /// A metric with these settings.
    pub fn new(config: TerConfig) -> Self {
        Self { config }
    }

    fn prep(&self, s: &str) -> String {
        tercom_tokenize(s.trim_end_matches(is_py_space), &self.config)
    }

    /// Corpus TER of `hyps` against reference streams (`refs[k][i]`; `None` where a segment has
    /// fewer references).
    pub fn corpus_score<S: AsRef<str> + Sync>(
        &self,
        hyps: &[S],
        refs: &[Vec<Option<S>>],
    ) -> Result<TerScore> {
        crate::streams::check_streams(hyps.len(), refs)?;
        use rayon::prelude::*;
        let stats: Vec<(f64, f64)> = (0..hyps.len())
            .into_par_iter()
            .map(|i| {
                // sacrebleu tokenizes references twice (when caching them and when splitting).
                let refs: Vec<String> = refs
                    .iter()
                    .filter_map(|s| s[i].as_ref().map(|x| self.prep(&self.prep(x.as_ref()))))
                    .collect();
                let hyp = self.prep(hyps[i].as_ref());
                let hw: Vec<&str> = py_split(&hyp).collect();
                let mut best = i64::MAX;
                let mut ref_len = 0usize;
                for r in &refs {
                    let rw: Vec<&str> = py_split(r).collect();
                    let (e, l) = translation_edit_rate(&hw, &rw)?;
                    ref_len += l;
                    best = best.min(e);
                }
                if refs.is_empty() {
                    return Ok((0.0, 0.0));
                }
                Ok((best as f64, ref_len as f64 / refs.len() as f64))
            })
            .collect::<Result<_>>()?;
        let (edits, len) = stats
            .iter()
            .fold((0.0, 0.0), |(a, b), (e, l)| (a + e, b + l));
        let score = if len > 0.0 {
            edits / len
        } else if edits > 0.0 {
            1.0
        } else {
            0.0
        };
        let nrefs = crate::streams::nrefs_label(hyps.len(), refs);
        let c = &self.config;
        let yn = |b: bool| if b { "yes" } else { "no" };
        Ok(TerScore {
            score: 100.0 * score,
            num_edits: edits,
            ref_length: len,
            signature: format!(
                "nrefs:{nrefs}|case:{}|tok:tercom|norm:{}|punct:{}|asian:no|version:{SACREBLEU_VERSION}",
                if c.case_sensitive { "mixed" } else { "lc" },
                yn(c.normalized),
                yn(!c.no_punct)
            ),
        })
    }
}
