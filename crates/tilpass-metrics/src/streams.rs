//! Reference streams shared by the corpus metrics: `refs[k][i]` is the k-th reference of
//! segment i (`None` where a segment has fewer references), sacrebleu's layout.

use crate::error::{MetricsError, Result};

/// Checks that there is at least one stream and every stream has one entry per hypothesis.
pub fn check_streams<S>(n_hyps: usize, refs: &[Vec<Option<S>>]) -> Result<()> {
    if refs.is_empty() {
        return Err(MetricsError::Invalid("no reference stream given".into()));
    }
    for (k, r) in refs.iter().enumerate() {
        if r.len() != n_hyps {
            return Err(MetricsError::LengthMismatch {
                what: format!("reference stream {}", k + 1),
                expected: n_hyps,
                found: r.len(),
            });
        }
    }
    Ok(())
}

/// The references of segment `i`.
pub fn segment_refs<S: AsRef<str>>(refs: &[Vec<Option<S>>], i: usize) -> Vec<&str> {
    refs.iter()
        .filter_map(|s| s[i].as_ref().map(|x| x.as_ref()))
        .collect()
}

/// sacrebleu's `nrefs` signature field: the number of references per segment, or `var` when
/// it varies.
pub fn nrefs_label<S>(n_hyps: usize, refs: &[Vec<Option<S>>]) -> String {
    let counts: std::collections::BTreeSet<usize> = (0..n_hyps)
        .map(|i| refs.iter().filter(|r| r[i].is_some()).count())
        .collect();
    if counts.len() == 1 {
        counts.into_iter().next().unwrap_or(0).to_string()
    } else {
        "var".into()
    }
}
