//! Helpers for tilpass's cross-crate tests: where the workspace, fixtures, downloaded
//! artefacts and the shared Norwegian data are.
//!
//! Tests that need an artefact (`scripts/fetch-artefacts.sh`) or the shared data call
//! [`artefact`] / [`shared_data`], which print why they skip when it is absent. With
//! `TILPASS_REQUIRE_ARTEFACTS=1` (set by `.ci/run`) an absent artefact is a failure instead.

#![warn(missing_docs)]

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
