//! Helpers shared by the CLI's end-to-end tests: run the `tilpass` binary, read its JSON, and
//! check the bad-input contract (exit 2, one line on stderr).

// Each test file uses a subset of these.
#![allow(dead_code)]

use std::process::{Command, Output};

use serde_json::Value;

/// Runs the `tilpass` binary built for the tests with `args`.
pub fn tilpass(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tilpass"))
        .args(args)
        .output()
        .expect("runs")
}

/// Stdout as JSON, after asserting the command succeeded (stderr shown otherwise).
pub fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// The one-line cause on stderr, after asserting exit code 2.
pub fn bad_input(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {} stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one-line cause: {err}");
    err
}
