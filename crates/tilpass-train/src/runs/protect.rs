//! What a translation must not touch: code (``` fenced blocks and inline `code`) is swapped
//! for markers `[[C0]]`, `[[C1]]`, ... before the text goes to the model and put back after
//! ([`mask_code`], [`MaskedText::restore`]); placeholders such as `{name}`, `{0}` and
//! `[EPOST]` are left in the text, and the output must hold the same ones
//! ([`placeholders`], [`placeholder_changes`]).

use std::collections::BTreeMap;

/// A text with its code spans swapped for markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedText {
    /// The text with every code span replaced by its marker.
    pub text: String,
    /// The code spans, in order: span `i` is behind marker [`marker`]`(i)`.
    pub spans: Vec<String>,
}

/// The marker of code span `i`: `[[C{i}]]`.
pub fn marker(i: usize) -> String {
    format!("[[C{i}]]")
}

/// Swaps the code of `text` for markers: fenced blocks from a ```` ``` ```` to the next (the
/// whole block, language tag included; an unclosed fence runs to the end of the text), then
/// inline spans between two backticks on one line.
pub fn mask_code(text: &str) -> MaskedText {
    let mut out = String::with_capacity(text.len());
    let mut spans = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = if let Some(body) = tail.strip_prefix("```") {
            // A fenced block: up to and including the closing fence.
            match body.find("```") {
                Some(k) => 3 + k + 3,
                None => tail.len(),
            }
        } else {
            // Inline code: up to the next backtick on the same line.
            match tail[1..].find(['`', '\n']) {
                Some(k) if tail[1 + k..].starts_with('`') && k > 0 => 1 + k + 1,
                _ => {
                    // A lone backtick: plain text.
                    out.push('`');
                    rest = &tail[1..];
                    continue;
                }
            }
        };
        out.push_str(&marker(spans.len()));
        spans.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out.push_str(rest);
    MaskedText { text: out, spans }
}

/// What went wrong putting code back into a model's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreIssues {
    /// Markers the output lost (their code is missing from the result).
    pub lost: Vec<usize>,
    /// Markers the output holds more than once (each copy gets the code).
    pub repeated: Vec<usize>,
}

impl RestoreIssues {
    /// True when every marker came back exactly once.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.repeated.is_empty()
    }
}

impl MaskedText {
    /// True when the masked text has nothing to translate (only markers and white space).
    pub fn is_only_code(&self) -> bool {
        let mut t = self.text.clone();
        for i in 0..self.spans.len() {
            t = t.replace(&marker(i), "");
        }
        t.trim().is_empty()
    }

    /// Puts the code back into `output` (the model's translation of [`Self::text`]), and says
    /// which markers were lost or repeated.
    pub fn restore(&self, output: &str) -> (String, RestoreIssues) {
        let mut issues = RestoreIssues::default();
        let mut text = output.to_string();
        // Highest index first, so `[[C1]]` is not read inside `[[C10]]` (it cannot be: the
        // closing brackets differ, but the order keeps replacements independent anyway).
        for (i, code) in self.spans.iter().enumerate().rev() {
            let m = marker(i);
            match text.matches(&m).count() {
                0 => issues.lost.push(i),
                1 => {}
                _ => issues.repeated.push(i),
            }
            text = text.replace(&m, code);
        }
        issues.lost.reverse();
        issues.repeated.reverse();
        (text, issues)
    }
}

type CharTest = fn(char) -> bool;

/// The placeholders of `text` with their counts: `{name}` / `{0}` (letters, digits, `_`, `.`
/// between braces) and `[EPOST]` (an upper-case letter, then upper-case letters, digits or `_`,
/// between brackets).
pub fn placeholders(text: &str) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (n, &(i, c)) in chars.iter().enumerate() {
        let (close, body_ok, first_ok): (char, CharTest, CharTest) = match c {
            '{' => (
                '}',
                |ch| ch.is_alphanumeric() || ch == '_' || ch == '.',
                |_| true,
            ),
            '[' => (
                ']',
                |ch| ch.is_uppercase() || ch.is_ascii_digit() || ch == '_',
                char::is_uppercase,
            ),
            _ => continue,
        };
        let body = chars[n + 1..]
            .iter()
            .take_while(|&&(_, ch)| body_ok(ch))
            .count();
        let min = if c == '[' { 2 } else { 1 };
        let after = n + 1 + body;
        if body >= min
            && first_ok(chars[n + 1].1)
            && chars.get(after).is_some_and(|&(_, ch)| ch == close)
        {
            let end = chars[after].0 + close.len_utf8();
            *found.entry(text[i..end].to_string()).or_default() += 1;
        }
    }
    found
}

/// The placeholders whose count differs between `source` and `output`, as
/// `(placeholder, in source, in output)`; empty when the output kept them all.
pub fn placeholder_changes(source: &str, output: &str) -> Vec<(String, usize, usize)> {
    let (a, b) = (placeholders(source), placeholders(output));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (
                a.get(k).copied().unwrap_or(0),
                b.get(k).copied().unwrap_or(0),
            );
            (x != y).then(|| (k.clone(), x, y))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_and_inline_code_become_markers_and_come_back() {
        let text = "Run `ls -a` then:\n```bash\necho {x}\n```\nDone, `a` b ` c.";
        let m = mask_code(text);
        assert_eq!(m.text, "Run [[C0]] then:\n[[C1]]\nDone, [[C2]] b ` c.");
        assert_eq!(m.spans, vec!["`ls -a`", "```bash\necho {x}\n```", "`a`"]);
        let (back, issues) = m.restore(&m.text);
        assert_eq!(back, text);
        assert!(issues.is_clean());
        let (_, issues) = m.restore("Kjør [[C0]] så: [[C2]] [[C2]]");
        assert_eq!(issues.lost, vec![1]);
        assert_eq!(issues.repeated, vec![2]);
    }

    #[test]
    fn unclosed_fence_runs_to_the_end_and_code_only_is_detected() {
        let m = mask_code("```\nfn main() {}\n");
        assert_eq!(m.text, "[[C0]]");
        assert!(m.is_only_code());
        assert!(!mask_code("Hei `x`").is_only_code());
        // A backtick pair across a line break is not inline code.
        assert_eq!(mask_code("a `b\nc` d").spans.len(), 0);
    }

    #[test]
    fn placeholders_are_counted_and_changes_named() {
        let p = placeholders("Hei {name}, send til [EPOST] eller {0}. [a] {} [X] {navn}");
        let keys: Vec<&str> = p.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["[EPOST]", "{0}", "{name}", "{navn}"]);
        assert!(placeholder_changes("Hi {name} [EPOST]", "Hei {name} [EPOST]").is_empty());
        assert_eq!(
            placeholder_changes("Hi {name} [EPOST]", "Hei {navn} [EPOST] [EPOST]"),
            vec![
                ("[EPOST]".to_string(), 1, 2),
                ("{name}".to_string(), 1, 0),
                ("{navn}".to_string(), 0, 1)
            ]
        );
    }
}
