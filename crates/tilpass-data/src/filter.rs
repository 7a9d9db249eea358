//! Quality filters: exact de-duplication and length limits.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::record::Record;

/// What two records must share to count as duplicates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupKey {
    /// The whole record, byte for byte.
    #[default]
    Exact,
    /// The whole record after lower-casing and collapsing runs of white space.
    Normalized,
    /// Only the prompt side (the first field, e.g. `prompt` or the conversation's non-assistant
    /// turns), normalised: keeps one answer per question.
    Prompt,
}

/// Lower-cases and collapses white space, the normalisation behind [`DedupKey::Normalized`].
pub fn normalize_text(s: &str) -> String {
    s.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn key_string(r: &Record, key: DedupKey) -> String {
    match key {
        DedupKey::Exact => r.to_json().to_string(),
        DedupKey::Normalized => normalize_text(&r.to_json().to_string()),
        DedupKey::Prompt => {
            let prompt = match r {
                Record::Conversation { messages } => messages
                    .iter()
                    .filter(|m| m.role != crate::Role::Assistant)
                    .map(|m| m.content.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                other => other
                    .contents()
                    .first()
                    .map(|c| c.joined_text())
                    .unwrap_or_default(),
            };
            normalize_text(&prompt)
        }
    }
}

/// Result of [`dedup`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DedupReport {
    /// Records looked at.
    pub input: usize,
    /// Records kept (the first of each group).
    pub kept: usize,
    /// Records dropped as duplicates.
    pub removed: usize,
}

/// Indices of the records to keep: the first occurrence of every key, in order.
pub fn dedup_indices(records: &[Record], key: DedupKey) -> (Vec<usize>, DedupReport) {
    // 128-bit keys (two independent 64-bit hashes) make accidental collisions negligible.
    let mut seen: HashSet<(u64, u64)> = HashSet::with_capacity(records.len());
    let mut keep = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let s = key_string(r, key);
        let mut h1 = DefaultHasher::new();
        s.hash(&mut h1);
        let mut h2 = DefaultHasher::new();
        (s.len(), "tilpass", &s).hash(&mut h2);
        if seen.insert((h1.finish(), h2.finish())) {
            keep.push(i);
        }
    }
    let report = DedupReport {
        input: records.len(),
        kept: keep.len(),
        removed: records.len() - keep.len(),
    };
    (keep, report)
}

/// Removes duplicates in place, keeping first occurrences.
pub fn dedup(records: &mut Vec<Record>, key: DedupKey) -> DedupReport {
    let (keep, report) = dedup_indices(records, key);
    let mut keep = keep.into_iter().peekable();
    let mut i = 0;
    records.retain(|_| {
        let k = keep.peek() == Some(&i);
        if k {
            keep.next();
        }
        i += 1;
        k
    });
    report
}

/// Keeps records whose total characters (all fields) lie in `[min_chars, max_chars]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LengthFilter {
    /// Minimum characters (inclusive); `None` for no minimum.
    pub min_chars: Option<usize>,
    /// Maximum characters (inclusive); `None` for no maximum.
    pub max_chars: Option<usize>,
}

impl LengthFilter {
    /// Checks the bounds: `min_chars` at most `max_chars` ([`crate::DataError::Invalid`] naming
    /// both).
    pub fn validate(&self) -> Result<(), crate::DataError> {
        if let (Some(lo), Some(hi)) = (self.min_chars, self.max_chars)
            && lo > hi
        {
            return Err(crate::DataError::Invalid(format!(
                "invalid setting `min_chars` = {lo}: expected at most `max_chars` ({hi})"
            )));
        }
        Ok(())
    }

    /// True when the record passes.
    pub fn accepts(&self, r: &Record) -> bool {
        let n = r.chars();
        self.min_chars.is_none_or(|m| n >= m) && self.max_chars.is_none_or(|m| n <= m)
    }

    /// Removes failing records in place; returns how many were removed.
    pub fn apply(&self, records: &mut Vec<Record>) -> usize {
        let before = records.len();
        records.retain(|r| self.accepts(r));
        before - records.len()
    }
}
