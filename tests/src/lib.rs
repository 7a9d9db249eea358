//! Helpers for tilpass's cross-crate tests: where the workspace, fixtures, downloaded
//! artefacts and the shared Norwegian data are.
//!
//! Tests that need an artefact (`scripts/fetch-artefacts.sh`) or the shared data call
//! [`artefact`] / [`shared_data`], which print why they skip when it is absent. With
//! `TILPASS_REQUIRE_ARTEFACTS=1` (set by `.ci/run`) an absent artefact is a failure instead.

#![warn(missing_docs)]

pub mod fuzz;

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `tests/fixtures/<rel>`.
pub fn fixture_path(rel: &str) -> PathBuf {
    workspace_root().join("tests").join("fixtures").join(rel)
}

/// Parses a JSON fixture.
pub fn fixture_json(rel: &str) -> serde_json::Value {
    let p = fixture_path(rel);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn required() -> bool {
    std::env::var("TILPASS_REQUIRE_ARTEFACTS").is_ok_and(|v| v == "1")
}

/// The directory of a fetched artefact (`gpt2`, `mistral`, `llama3`, `qwen3`, `minilm`), or
/// `None` after printing why the calling test skips.
pub fn artefact(name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("TILPASS_ARTEFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("artefacts"));
    let dir = base.join(name);
    if dir.join(".done").is_file() {
        return Some(dir);
    }
    let msg = format!(
        "artefact `{name}` not found in {}: run scripts/fetch-artefacts.sh",
        base.display()
    );
    if required() {
        panic!("{msg} (TILPASS_REQUIRE_ARTEFACTS=1)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A file of the shared data folder (`../shared/data/` beside the checkout, or
/// `TILPASS_SHARED_DATA`), or `None` after printing why the calling test skips.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let base = std::env::var_os("TILPASS_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("..").join("shared").join("data"));
    let p = base.join(rel);
    if p.is_file() {
        return Some(p);
    }
    let msg = format!("shared data file {} not found", p.display());
    if required() {
        panic!("{msg} (TILPASS_REQUIRE_ARTEFACTS=1)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// The device tests run on: `TILPASS_TEST_DEVICE` (e.g. `wgpu-cpu`, with the `wgpu` feature),
/// else `flex`.
pub fn test_device() -> tilpass::burn::tensor::Device {
    let spec = std::env::var("TILPASS_TEST_DEVICE").unwrap_or_else(|_| "flex".into());
    tilpass::device(&spec).unwrap_or_else(|e| panic!("TILPASS_TEST_DEVICE={spec}: {e}"))
}

/// Lines of a text file.
pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

/// The largest `|got[i] - want[i]|` over the positions `i` where `keep(i)` holds, computed in
/// f64, for the parity tests' `<= tolerance` checks. Cannot pass by accident: a NaN on either
/// side (or an infinity that does not equal its counterpart) gives `f64::INFINITY`, unequal
/// lengths and an empty comparison (nothing kept) panic.
pub fn max_abs_diff_where<T: Copy + Into<f64>>(
    got: &[T],
    want: &[T],
    keep: impl Fn(usize) -> bool,
) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "compared lists differ in length: got {}, want {}",
        got.len(),
        want.len()
    );
    let mut worst = 0f64;
    let mut compared = 0usize;
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        if !keep(i) {
            continue;
        }
        compared += 1;
        let (a, b): (f64, f64) = (a.into(), b.into());
        if a == b {
            continue; // also equal infinities
        }
        let d = (a - b).abs();
        if d.is_nan() || d.is_infinite() {
            return f64::INFINITY;
        }
        worst = worst.max(d);
    }
    assert!(compared > 0, "nothing was compared ({} values)", got.len());
    worst
}

/// [`max_abs_diff_where`] over every position.
pub fn max_abs_diff<T: Copy + Into<f64>>(got: &[T], want: &[T]) -> f64 {
    max_abs_diff_where(got, want, |_| true)
}

/// The largest `|got[i] - want[i]| / |want[i]|`, with the guarantees of
/// [`max_abs_diff_where`] (NaN, infinities and a zero `want` next to a non-zero `got` give
/// `f64::INFINITY`; unequal or empty lists panic).
pub fn max_rel_diff<T: Copy + Into<f64>>(got: &[T], want: &[T]) -> f64 {
    assert_eq!(
        got.len(),
        want.len(),
        "compared lists differ in length: got {}, want {}",
        got.len(),
        want.len()
    );
    let abs: Vec<f64> = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| {
            let (g, w): (f64, f64) = (g.into(), w.into());
            if g == w { 0.0 } else { (g - w).abs() / w.abs() }
        })
        .collect();
    let zeros = vec![0f64; abs.len()];
    max_abs_diff(&abs, &zeros)
}

/// The real tokens of padded rows: each row's values where its attention mask is non-zero
/// (`[batch, seq]` → `batch` rows of their own lengths), to pad them again with tilpass.
pub fn unpadded_rows<T: Copy>(rows: &[Vec<T>], mask: &[Vec<u8>]) -> Vec<Vec<T>> {
    assert_eq!(rows.len(), mask.len(), "rows and mask differ in batch size");
    rows.iter()
        .zip(mask)
        .map(|(r, m)| {
            assert_eq!(r.len(), m.len(), "a row and its mask differ in length");
            r.iter()
                .zip(m)
                .filter(|(_, m)| **m != 0)
                .map(|(v, _)| *v)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_fail_on_nan_infinity_and_differences() {
        assert_eq!(max_abs_diff(&[1f32, 2.0], &[1.0, 2.5]), 0.5);
        assert_eq!(max_abs_diff(&[1f32, f32::NAN], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[1f32, 2.0], &[f32::NAN, 2.0]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[f32::INFINITY], &[1.0]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[f32::INFINITY], &[f32::INFINITY]), 0.0);
        assert_eq!(
            max_abs_diff_where(&[9f32, 1.0], &[0.0, 1.0], |i| i == 1),
            0.0
        );
        assert_eq!(max_rel_diff(&[1.1f64], &[1.0]), 0.10000000000000009);
        assert_eq!(max_rel_diff(&[1.0f64], &[0.0]), f64::INFINITY);
        assert_eq!(max_rel_diff(&[f64::NAN], &[1.0]), f64::INFINITY);
    }

    #[test]
    #[should_panic(expected = "differ in length")]
    fn unequal_lengths_panic() {
        max_abs_diff(&[1f32], &[1.0, 2.0]);
    }

    #[test]
    #[should_panic(expected = "nothing was compared")]
    fn empty_comparisons_panic() {
        max_abs_diff::<f32>(&[], &[]);
    }
}
