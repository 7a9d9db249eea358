//! Ceilings on what untrusted inputs may make tilpass allocate.
//!
//! Sizes read from files (`config.json` dimensions, safetensors headers) and from flags
//! (`--vocab-size`, `--num-beams` x `--max-new-tokens`) are checked with [`check_memory`]
//! against a memory budget *before* anything is allocated, so that a hostile or mistyped value
//! is a typed [`Error::TooLarge`] naming the value instead of an allocation failure that aborts
//! the process. Lines of text files are bounded by [`DEFAULT_MAX_LINE_BYTES`].

use crate::error::{Error, Result};

/// The longest line (in bytes) that line-based readers ([`crate::TextLines`], JSONL datasets,
/// metric files) accept by default: 64 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;

/// Environment variable that sets the memory budget [`check_memory`] uses, in bytes with an
/// optional `K`, `M`, `G` or `T` suffix (powers of 1024), e.g. `TILPASS_MEMORY_LIMIT=8G`.
pub const MEMORY_LIMIT_ENV: &str = "TILPASS_MEMORY_LIMIT";

/// The budget when neither [`MEMORY_LIMIT_ENV`] nor the machine's memory is known: 64 GiB.
pub const FALLBACK_MEMORY_BUDGET: u64 = 64 << 30;

/// Parses a byte count such as `1048576`, `512M` or `8G` (powers of 1024).
///
/// ```
/// assert_eq!(tilpass_core::limits::parse_bytes("8G"), Some(8 << 30));
/// assert_eq!(tilpass_core::limits::parse_bytes("12k"), Some(12 << 10));
/// assert_eq!(tilpass_core::limits::parse_bytes("many"), None);
/// ```
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return None,
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(1u64 << shift)
}

/// The memory budget: [`MEMORY_LIMIT_ENV`] when set, else the machine's total memory
/// (`MemTotal` of `/proc/meminfo`), else [`FALLBACK_MEMORY_BUDGET`].
pub fn memory_budget() -> u64 {
    if let Ok(v) = std::env::var(MEMORY_LIMIT_ENV)
        && let Some(b) = parse_bytes(&v)
    {
        return b;
    }
    total_memory().unwrap_or(FALLBACK_MEMORY_BUDGET)
}

fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A human-readable byte count (`1.5 GiB`).
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Fails with [`Error::TooLarge`] when `bytes` exceed [`memory_budget`]; `what` names the value
/// that implies the size (e.g. `config.json: vocab_size 1000000000000 x hidden_size 64`).
///
/// Compute `bytes` with [`mul_all`] (saturating, so that an overflow is simply too large).
pub fn check_memory(what: impl Into<String>, bytes: u128) -> Result<()> {
    let limit = memory_budget();
    if bytes > u128::from(limit) {
        return Err(Error::TooLarge {
            what: what.into(),
            bytes: u64::try_from(bytes).unwrap_or(u64::MAX),
            limit,
        });
    }
    Ok(())
}

/// The product of `factors`, saturating at `u128::MAX` (a size that overflows is too large).
///
/// ```
/// use tilpass_core::limits::mul_all;
/// assert_eq!(mul_all(&[3, 4, 5]), 60);
/// assert_eq!(mul_all(&[u64::MAX as u128, u64::MAX as u128, 2]), u128::MAX);
/// ```
pub fn mul_all(factors: &[u128]) -> u128 {
    factors
        .iter()
        .try_fold(1u128, |acc, &f| acc.checked_mul(f))
        .unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_over_the_budget_are_too_large_and_name_the_value() {
        let err =
            check_memory("vocab_size 10^12", mul_all(&[1_000_000_000_000, 64, 4])).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("vocab_size 10^12") && msg.contains(MEMORY_LIMIT_ENV),
            "{msg}"
        );
        check_memory("small", 1 << 20).unwrap();
        assert!(check_memory("overflow", mul_all(&[u128::MAX, 2])).is_err());
    }

    #[test]
    fn byte_counts_parse_with_suffixes() {
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("2M"), Some(2 << 20));
        assert_eq!(parse_bytes(" 1 t "), Some(1 << 40));
        assert_eq!(parse_bytes("99999999999999999999G"), None);
        assert_eq!(parse_bytes("5X"), None);
        assert_eq!(parse_bytes(""), None);
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
