//! Dataset statistics: rows, kinds, turns and characters.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::{Content, Record};

/// Summary of a numeric quantity over rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Smallest value.
    pub min: usize,
    /// Mean value.
    pub mean: f64,
    /// Median value (lower median for even counts).
    pub median: usize,
    /// Largest value.
    pub max: usize,
    /// Sum over rows.
    pub total: usize,
}

impl Summary {
    /// Summarises a list of values (all zeros for an empty list).
    pub fn of(values: &[usize]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let total: usize = v.iter().sum();
        Self {
            min: v[0],
            mean: total as f64 / v.len() as f64,
            median: v[(v.len() - 1) / 2],
            max: v[v.len() - 1],
            total,
        }
    }
}

/// Statistics of a set of records.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DatasetStats {
    /// Number of rows.
    pub rows: usize,
    /// Rows per kind (`language_modeling`, `preference`, ...).
    pub kinds: BTreeMap<String, usize>,
    /// Rows made of message lists.
    pub conversational_rows: usize,
    /// Messages per conversational row (all message lists of the row together).
    pub turns: Summary,
    /// Messages per role, over all rows.
    pub messages_per_role: BTreeMap<String, usize>,
    /// Characters per row (all fields).
    pub chars: Summary,
    /// Characters per role, over all rows (`text` for plain-string fields).
    pub chars_per_role: BTreeMap<String, usize>,
    /// Messages or strings with no non-space character.
    pub empty_fields: usize,
}

/// Computes statistics over `records`.
pub fn stats(records: &[Record]) -> DatasetStats {
    let mut s = DatasetStats {
        rows: records.len(),
        ..Default::default()
    };
    let mut turns = vec![];
    let mut chars = Vec::with_capacity(records.len());
    for r in records {
        *s.kinds.entry(r.kind().as_str().to_string()).or_default() += 1;
        chars.push(r.chars());
        let contents = r.contents();
        if r.is_conversational() {
            s.conversational_rows += 1;
            turns.push(contents.iter().map(Content::turns).sum());
        }
        for c in &contents {
            match c {
                Content::Text(t) => {
                    *s.chars_per_role.entry("text".into()).or_default() += t.chars().count();
                    s.empty_fields += usize::from(t.trim().is_empty());
                }
                Content::Messages(ms) => {
                    for m in ms {
                        let role = m.role.as_str().to_string();
                        *s.messages_per_role.entry(role.clone()).or_default() += 1;
                        *s.chars_per_role.entry(role).or_default() += m.content.chars().count();
                        s.empty_fields += usize::from(m.content.trim().is_empty());
                    }
                }
            }
        }
    }
    s.turns = Summary::of(&turns);
    s.chars = Summary::of(&chars);
    s
}
