//! sacrebleu's tokenizers (2.6.0): `13a` (mteval-v13a, the default), `intl` (mteval-v14
//! international), `char` and `none`, reproduced character for character.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// A sacrebleu tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SacreTokenizer {
    /// mteval-v13a: splits ASCII punctuation, `.`/`,` except between digits, `-` after a digit.
    /// Leaves non-ASCII punctuation (`«»`) attached.
    #[default]
    #[serde(rename = "13a")]
    Tok13a,
    /// mteval-v14 international: splits Unicode punctuation (except between digits) and
    /// symbols.
    Intl,
    /// Every character is a token.
    Char,
    /// The text as it is (whitespace-separated tokens).
    None,
}

impl SacreTokenizer {
    /// sacrebleu's name (`13a`, `intl`, `char`, `none`), used in signatures.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tok13a => "13a",
            Self::Intl => "intl",
            Self::Char => "char",
            Self::None => "none",
        }
    }

    /// Parses a sacrebleu name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "13a" => Self::Tok13a,
            "intl" => Self::Intl,
            "char" => Self::Char,
            "none" => Self::None,
            _ => return None,
        })
    }

    /// Tokenizes one line: tokens separated by single spaces, as sacrebleu returns them.
    pub fn tokenize(self, line: &str) -> String {
        match self {
            Self::Tok13a => tokenize_13a(line),
            Self::Intl => tokenize_intl(line),
            Self::Char => {
                let mut out = String::with_capacity(line.len() * 2);
                for (i, c) in line.chars().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push(c);
                }
                out
            }
            Self::None => line.to_string(),
        }
    }
}

/// Python's `str.isspace` (Rust's `char::is_whitespace` plus the ASCII separators
/// U+001C..U+001F, which Python also splits on).
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()` (no argument).
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|t| !t.is_empty())
}

/// `' '.join(line.split())`.
fn join_split(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for t in py_split(line) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(t);
    }
    out
}

/// The characters 13a pads with spaces: `{|}~ [\]^_` space!"#$%& ()*+ :;<=>?@ /`.
fn is_13a_punct(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// sacrebleu's `Tokenizer13a`.
pub fn tokenize_13a(line: &str) -> String {
    let mut owned;
    let mut s = line;
    if s.contains("<skipped>") || s.contains('\n') {
        owned = s
            .replace("<skipped>", "")
            .replace("-\n", "")
            .replace('\n', " ");
        s = &owned;
    }
    if s.contains('&') {
        owned = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
        s = &owned;
    }
    // Rule 1: pad the ASCII punctuation class (one character at a time, no overlap issue).
    let mut a: Vec<char> = Vec::with_capacity(s.len() + 16);
    a.push(' ');
    for c in s.chars() {
        if is_13a_punct(c) {
            a.extend([' ', c, ' ']);
        } else {
            a.push(c);
        }
    }
    a.push(' ');
    // Rules 2-4 are two-character patterns applied left to right without overlap, as
    // Python's `re.sub` does; each is skipped when its characters are absent.
    let digit = |c: char| c.is_ascii_digit();
    let dot = |c: char| c == '.' || c == ',';
    if a.iter().any(|c| dot(*c)) {
        a = sub_pairs(
            &a,
            |x, y| !digit(x) && dot(y),
            |x, y, out| {
                out.extend([x, ' ', y, ' ']);
            },
        );
        a = sub_pairs(
            &a,
            |x, y| dot(x) && !digit(y),
            |x, y, out| {
                out.extend([' ', x, ' ', y]);
            },
        );
    }
    if a.contains(&'-') {
        a = sub_pairs(
            &a,
            |x, y| digit(x) && y == '-',
            |x, y, out| {
                out.extend([x, ' ', y, ' ']);
            },
        );
    }
    // `' '.join(line.split())`.
    let mut out = String::with_capacity(a.len());
    let mut pending_space = false;
    for c in a {
        if is_py_space(c) {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// `re.sub` of a two-character pattern `(X)(Y)`: leftmost matches, scanning on after each.
fn sub_pairs(
    chars: &[char],
    matches: impl Fn(char, char) -> bool,
    replace: impl Fn(char, char, &mut Vec<char>),
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 4);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && matches(chars[i], chars[i + 1]) {
            replace(chars[i], chars[i + 1], &mut out);
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn intl_regexes() -> &'static [Regex; 3] {
    static RE: OnceLock<[Regex; 3]> = OnceLock::new();
    RE.get_or_init(|| {
        [
            Regex::new(r"(\P{N})(\p{P})").expect("valid regex"),
            Regex::new(r"(\p{P})(\P{N})").expect("valid regex"),
            Regex::new(r"(\p{S})").expect("valid regex"),
        ]
    })
}

/// sacrebleu's `TokenizerV14International`.
pub fn tokenize_intl(line: &str) -> String {
    let [a, b, c] = intl_regexes();
    let s = a.replace_all(line, "$1 $2 ");
    let s = b.replace_all(&s, " $1 $2");
    let s = c.replace_all(&s, " $1 ");
    join_split(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_a_keeps_guillemets_and_splits_ascii_punctuation() {
        // ../shared/notes/reference-semantics.md §3.1.
        assert_eq!(tokenize_13a("«Hei», sa han."), "«Hei» , sa han .");
        assert_eq!(tokenize_intl("«Hei», sa han."), "« Hei » , sa han .");
        assert_eq!(
            tokenize_13a("It costs 1,000.50 kr."),
            "It costs 1,000.50 kr ."
        );
        assert_eq!(tokenize_13a("1995-2000 &amp; more"), "1995 - 2000 & more");
    }
}
