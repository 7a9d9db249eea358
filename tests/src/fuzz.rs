//! A small mutation fuzzer on stable Rust for the loaders of untrusted files.
//!
//! Each target starts from a committed seed corpus (`tests/fuzz/corpus/`, small valid files)
//! and feeds the code under test mutated copies: bit flips, byte edits, truncation, deleted and
//! duplicated ranges, splices with other seeds, and hostile tokens (huge and negative numbers,
//! `NaN`, deep nesting, invalid UTF-8, a byte-order mark). JSON seeds are also mutated
//! structurally (a value replaced by a hostile one, a key removed). Cases are deterministic
//! (seeded [`SplitMix64`]); the count per target is the caller's CI default unless
//! `TILPASS_FUZZ_CASES` sets it. A case that panics or runs longer than [`SLOW_CASE`] fails the
//! test, printing the target, the case number and the input to reproduce it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tilpass::core::SplitMix64;

/// A case slower than this is reported as a hang.
pub const SLOW_CASE: Duration = Duration::from_secs(20);

/// Environment variable that sets the number of cases per target.
pub const CASES_ENV: &str = "TILPASS_FUZZ_CASES";

/// `tests/fuzz/corpus/<target>/*`, sorted, as `(file name, bytes)`.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = crate::workspace_root()
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// The number of cases: `TILPASS_FUZZ_CASES` when set, else `ci_default`.
pub fn cases(ci_default: usize) -> usize {
    std::env::var(CASES_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci_default)
}

const HOSTILE_TOKENS: &[&str] = &[
    "0",
    "-1",
    "-0",
    "1e308",
    "-1e308",
    "1e999",
    "NaN",
    "\"NaN\"",
    "Infinity",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "4294967296",
    "1000000000000",
    "0.5",
    "null",
    "true",
    "\"\"",
    "[]",
    "{}",
    "\"../../etc/passwd\"",
    "\"/etc/passwd\"",
    "\u{feff}",
    "\"\\ud800\"",
];

/// Mutates inputs deterministically.
#[derive(Debug, Clone)]
pub struct Mutator {
    rng: SplitMix64,
}

impl Mutator {
    /// A mutator for one target and case.
    pub fn new(target: &str, case: usize) -> Self {
        let h = target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Self {
            rng: SplitMix64::from_state(h ^ (case as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        }
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn hostile_token(&mut self) -> Vec<u8> {
        match self.below(HOSTILE_TOKENS.len() + 3) {
            i if i < HOSTILE_TOKENS.len() => HOSTILE_TOKENS[i].as_bytes().to_vec(),
            i if i == HOSTILE_TOKENS.len() => {
                let d = 1 + self.below(3000);
                let mut v = vec![b'['; d];
                v.extend(std::iter::repeat_n(b']', d));
                v
            }
            i if i == HOSTILE_TOKENS.len() + 1 => vec![0xff, 0xfe, 0xc3],
            _ => {
                let n = 1 + self.below(20);
                (0..n).map(|_| b'0' + self.below(10) as u8).collect()
            }
        }
    }

    /// One to four byte-level mutations of `seed` (`others` for splicing).
    pub fn bytes(&mut self, seed: &[u8], others: &[&[u8]]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            let len = v.len();
            match self.below(9) {
                0 if len > 0 => {
                    let i = self.below(len);
                    v[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    v[i] = [
                        0, 0xff, b'"', b'{', b'}', b'[', b'\n', b'\\', b'-', b'9', 0x80,
                    ][self.below(11)];
                }
                2 => v.truncate(self.below(len + 1)),
                3 if len > 0 => {
                    let a = self.below(len);
                    let b = (a + 1 + self.below(16)).min(len);
                    v.drain(a..b);
                }
                4 if len > 0 => {
                    let a = self.below(len);
                    let b = (a + 1 + self.below(64)).min(len);
                    let chunk = v[a..b].to_vec();
                    let at = self.below(len + 1);
                    v.splice(at..at, chunk);
                }
                5 if !others.is_empty() => {
                    let o = others[self.below(others.len())];
                    let cut = self.below(len + 1);
                    let from = self.below(o.len() + 1);
                    v.truncate(cut);
                    v.extend_from_slice(&o[from..]);
                }
                6 => {
                    // Replace a run of digits (or insert) with a hostile token.
                    let tok = self.hostile_token();
                    let digits: Vec<usize> = (0..len).filter(|i| v[*i].is_ascii_digit()).collect();
                    if digits.is_empty() {
                        let at = self.below(len + 1);
                        v.splice(at..at, tok);
                    } else {
                        let a = digits[self.below(digits.len())];
                        let mut b = a;
                        while b < len && (v[b].is_ascii_digit() || v[b] == b'.') {
                            b += 1;
                        }
                        v.splice(a..b, tok);
                    }
                }
                7 => {
                    let at = self.below(len + 1);
                    let tok = self.hostile_token();
                    v.splice(at..at, tok);
                }
                _ => {
                    let n = 1 + self.below(8);
                    let at = self.below(len + 1);
                    let junk: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                    v.splice(at..at, junk);
                }
            }
        }
        if self.one_in(20) {
            let mut b = b"\xEF\xBB\xBF".to_vec();
            b.extend(v);
            v = b;
        }
        v
    }

    /// A hostile JSON value.
    pub fn hostile_value(&mut self) -> Value {
        match self.below(16) {
            0 => Value::from(0),
            1 => Value::from(-1),
            2 => Value::from(u64::MAX),
            3 => Value::from(i64::MIN),
            4 => Value::from(1e300),
            5 => Value::from(-1e-300),
            6 => Value::from("NaN"),
            7 => Value::from(1_000_000_000_000u64),
            8 => Value::Null,
            9 => Value::from(vec![Value::Null; self.below(4)]),
            10 => Value::Object(Default::default()),
            11 => Value::from(0.5),
            12 => Value::from(1u64 << 31),
            13 => Value::from("../../outside.safetensors"),
            14 => Value::from(true),
            _ => {
                let mut v = Value::from(1);
                for _ in 0..self.below(120) {
                    v = Value::from(vec![v]);
                }
                v
            }
        }
    }

    /// One to three structural mutations of a JSON value: a value replaced by a hostile one,
    /// a key removed, or a number scaled.
    pub fn json(&mut self, seed: &Value) -> Value {
        let mut v = seed.clone();
        for _ in 0..1 + self.below(3) {
            let mut paths = Vec::new();
            collect_paths(&v, &mut vec![], &mut paths);
            if paths.is_empty() {
                return self.hostile_value();
            }
            let path = paths[self.below(paths.len())].clone();
            let action = self.below(4);
            let replacement = self.hostile_value();
            let scale = [0.0, -1.0, 1e6, 1e12, 0.5][self.below(5)];
            if let Some(node) = node_at(&mut v, &path) {
                match action {
                    0 | 1 => *node = replacement,
                    2 => {
                        if let Some(n) = node.as_f64() {
                            *node = serde_json::Number::from_f64(n * scale)
                                .map_or(Value::Null, Value::Number);
                        } else {
                            *node = replacement;
                        }
                    }
                    _ => {
                        if let Some(o) = node.as_object_mut()
                            && !o.is_empty()
                        {
                            let k = o.keys().nth(self.below(o.len())).unwrap().clone();
                            o.remove(&k);
                        }
                    }
                }
            }
        }
        v
    }
}

fn collect_paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                at.push(k.clone());
                collect_paths(x, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(i.to_string());
                collect_paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn node_at<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = v;
    for p in path {
        cur = match cur {
            Value::Object(o) => o.get_mut(p)?,
            Value::Array(a) => a.get_mut(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Runs `cases` cases of `target`: `make` builds the input of one case, `check` runs the code
/// under test on it (it must return, Ok or a typed error: a panic or a slow case fails, naming
/// the case and showing the input). Returns how many cases `check` said were accepted (`true`).
pub fn run<I: std::fmt::Debug>(
    target: &str,
    cases: usize,
    mut make: impl FnMut(&mut Mutator) -> I,
    mut check: impl FnMut(&I) -> bool,
) -> usize {
    let start = Instant::now();
    let mut accepted = 0;
    for case in 0..cases {
        let mut m = Mutator::new(target, case);
        let input = make(&mut m);
        let t0 = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(&input)));
        let took = t0.elapsed();
        let shown = {
            let s = format!("{input:?}");
            if s.len() > 4000 {
                format!("{}… ({} chars)", &s[..s.floor_char_boundary(4000)], s.len())
            } else {
                s
            }
        };
        match outcome {
            Ok(ok) => accepted += usize::from(ok),
            Err(_) => panic!("fuzz target `{target}` case {case} panicked on input:\n{shown}"),
        }
        assert!(
            took < SLOW_CASE,
            "fuzz target `{target}` case {case} took {took:?} on input:\n{shown}"
        );
    }
    eprintln!(
        "fuzz `{target}`: {cases} cases, {accepted} accepted, {:.1}s",
        start.elapsed().as_secs_f64()
    );
    accepted
}
