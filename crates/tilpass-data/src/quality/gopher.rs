//! The measurements behind the Gopher quality and repetition rules (Rae et al. 2021, "Scaling
//! Language Models: Methods, Analysis & Insights from Training Gopher", appendix A, table A1),
//! defined as datatrove 0.10.1's `GopherQualityFilter` and `GopherRepetitionFilter` compute them
//! (`tests/fixtures/generate_quality.py` checks every value against datatrove to 1e-9).
//!
//! Definitions (a text's length is its number of Unicode scalar values, `len(text)` in Python):
//!
//! - **words** ([`words`]): the pieces between runs of white space (`str.split()`), as Rae et
//!   al. count words: `"Hei, du!"` → `Hei,` `du!`. datatrove splits Norwegian with spaCy; the
//!   parity fixtures hand datatrove this same splitter, so what is compared is the rules, not
//!   two tokenisers;
//! - **non-symbol words**: words with a character outside datatrove's `PUNCTUATION_SET`
//!   ([`is_punctuation`]); the word-count and mean-word-length rules count only these;
//! - **lines**: `str.splitlines()` (`\n`, `\r`, `\r\n`, `\v`, `\f`, `\x1c`–`\x1e`, `\u{85}`,
//!   `\u{2028}`, `\u{2029}`) for the bullet and ellipsis rules; runs of `\n` for the repetition
//!   rules (`re.split("\n+", text)`, unstripped);
//! - **paragraphs**: `re.split("\n{2,}", text.strip())`;
//! - **duplicate fraction** of a list: elements equal to an earlier element, over all
//!   elements; **duplicate character fraction**: the characters of those repeated elements over
//!   the text's length;
//! - **top n-gram character fraction**: the most frequent word n-gram (words joined by one
//!   space; the first seen among equally frequent ones) — its length times its count, over the
//!   text's length;
//! - **duplicate n-gram character fraction**: scanning word n-grams left to right (words joined
//!   without a separator), an n-gram seen before adds its characters and the scan jumps `n`
//!   words ahead, otherwise it is remembered and the scan moves one word; the sum over the text's
//!   length.
//!
//! Ratios whose denominator is zero (an empty text, no words, no lines) are 0.

use std::collections::{HashMap, HashSet};

/// datatrove 0.10.1's `PUNCTUATION_SET` (`datatrove.utils.text`), as sorted code points: ASCII
/// punctuation and control characters, their full-width forms, and the terminal punctuation
/// of many scripts. The parity test checks this list against datatrove's.
pub const PUNCTUATION: &[u32] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27,
    28, 29, 30, 31, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 58, 59, 60, 61, 62,
    63, 64, 91, 92, 93, 94, 95, 96, 123, 124, 125, 126, 127, 128, 129, 130, 131, 132, 133, 134,
    135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150, 151, 152, 153,
    154, 155, 156, 157, 158, 159, 171, 180, 187, 1417, 1565, 1566, 1567, 1748, 1792, 1793, 1794,
    2041, 2103, 2105, 2109, 2110, 2404, 2405, 4170, 4171, 4962, 4967, 4968, 5742, 5941, 5942, 6100,
    6101, 6102, 6105, 6106, 6147, 6153, 6468, 6469, 6824, 6825, 6826, 6827, 7002, 7003, 7006, 7007,
    7037, 7038, 7227, 7228, 7294, 7295, 8211, 8212, 8217, 8220, 8221, 8222, 8230, 8252, 8253, 8263,
    8264, 8265, 8758, 9473, 9658, 11822, 11836, 11859, 11860, 12289, 12290, 12296, 12297, 12298,
    12299, 12300, 12301, 12304, 12305, 42239, 42510, 42511, 42739, 42743, 43126, 43127, 43214,
    43215, 43311, 43464, 43465, 43613, 43614, 43615, 43760, 43761, 44011, 65106, 65110, 65111,
    65281, 65285, 65288, 65289, 65292, 65294, 65297, 65306, 65307, 65311, 65374, 65377, 68182,
    68183, 69461, 69462, 69463, 69464, 69465, 69510, 69511, 69512, 69513, 69703, 69704, 69822,
    69823, 69824, 69825, 69953, 69954, 69955, 70085, 70086, 70093, 70110, 70111, 70200, 70201,
    70203, 70204, 70313, 70731, 70732, 71106, 71107, 71113, 71114, 71115, 71116, 71117, 71118,
    71119, 71120, 71121, 71122, 71123, 71124, 71125, 71126, 71127, 71233, 71234, 71484, 71485,
    71486, 72004, 72006, 72258, 72259, 72347, 72348, 72769, 72770, 73463, 73464, 73539, 73540,
    92782, 92783, 92917, 92983, 92984, 92996, 93848, 113823, 121480,
];

/// True for a character of datatrove's `PUNCTUATION_SET` ([`PUNCTUATION`]).
pub fn is_punctuation(c: char) -> bool {
    PUNCTUATION.binary_search(&(c as u32)).is_ok()
}

/// White space as Python's `str.isspace()` sees it (Unicode `White_Space` plus the information
/// separators `\x1c`–`\x1f`).
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The words of `text`: the pieces between runs of white space (Python's `str.split()`).
pub fn words(text: &str) -> Vec<&str> {
    text.split(is_py_space).filter(|w| !w.is_empty()).collect()
}

/// Python's `str.splitlines()`.
pub fn split_lines(text: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut start = 0;
    let mut it = text.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\u{b}'
                | '\u{c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if is_break {
            out.push(&text[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r'
                && let Some(&(j, '\n')) = it.peek()
            {
                it.next();
                end = j + 1;
            }
            start = end;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// `re.split(sep + "{min,}", text)`: splits at runs of at least `min` `sep` characters.
fn split_runs(text: &str, sep: char, min: usize) -> Vec<&str> {
    let mut out = vec![];
    let mut start = 0;
    let bytes: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].1 == sep {
            let mut j = i;
            while j < bytes.len() && bytes[j].1 == sep {
                j += 1;
            }
            if j - i >= min {
                out.push(&text[start..bytes[i].0]);
                start = if j < bytes.len() {
                    bytes[j].0
                } else {
                    text.len()
                };
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out.push(&text[start..]);
    out
}

fn nchars(s: &str) -> usize {
    s.chars().count()
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// datatrove's `find_duplicates`: (elements equal to an earlier one, their characters).
pub fn find_duplicates(items: &[&str]) -> (usize, usize) {
    let mut seen = HashSet::with_capacity(items.len());
    let (mut n, mut chars) = (0, 0);
    for x in items {
        if !seen.insert(*x) {
            n += 1;
            chars += nchars(x);
        }
    }
    (n, chars)
}

/// datatrove's `find_top_duplicate` over the word `n`-grams joined by one space: the length of
/// the most frequent n-gram (the first seen among ties) times its count; 0 without n-grams.
pub fn top_ngram_chars(words: &[&str], n: usize) -> usize {
    if n == 0 || words.len() < n {
        return 0;
    }
    let mut counts: HashMap<Vec<&str>, (usize, usize)> = HashMap::new();
    for (i, g) in words.windows(n).enumerate() {
        counts.entry(g.to_vec()).or_insert((0, i)).0 += 1;
    }
    // Most frequent, then first seen (Counter.most_common keeps insertion order among ties).
    let (gram, _) = counts
        .iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.1.1.cmp(&a.1.1)))
        .map(|(g, c)| (g.clone(), *c))
        .unwrap_or_default();
    let count = counts.get(&gram).map_or(0, |c| c.0);
    let len: usize = gram.iter().map(|w| nchars(w)).sum::<usize>() + n - 1;
    len * count
}

/// datatrove's `find_all_duplicate`: characters of repeated word `n`-grams (words joined with no
/// separator, compared as joined strings), skipping `n` words after each repeat.
pub fn duplicate_ngram_chars(words: &[&str], n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    // Keyed by the joined string, as datatrove does: ("ab", "c") and ("a", "bc") are the same.
    let mut seen: HashSet<String> = HashSet::new();
    let (mut chars, mut i) = (0, 0);
    while i + n <= words.len() {
        let g = words[i..i + n].concat();
        if seen.contains(&g) {
            chars += nchars(&g);
            i += n;
        } else {
            seen.insert(g);
            i += 1;
        }
    }
    chars
}

/// The Gopher measurements of one text (see the module docs for each definition).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GopherStats {
    /// Unicode scalar values.
    pub chars: usize,
    /// Words (symbol runs included).
    pub words: usize,
    /// Words with a character outside [`PUNCTUATION`].
    pub non_symbol_words: usize,
    /// Mean length in characters of the non-symbol words (NaN without any, as numpy's mean).
    pub mean_word_length: f64,
    /// `#` characters per word.
    pub hash_ratio: f64,
    /// (`...` + `…`) occurrences (non-overlapping) per word.
    pub ellipsis_ratio: f64,
    /// Share of lines starting (after white space) with `•` or `-`.
    pub bullet_lines: f64,
    /// Share of lines ending (before white space) with `...` or `…`.
    pub ellipsis_lines: f64,
    /// Share of words with an alphabetic character.
    pub alpha_words: f64,
    /// Share of non-space characters that are alphabetic.
    pub alpha_chars: f64,
    /// Share of non-space characters that are ASCII digits `0`–`9`.
    pub digit_chars: f64,
    /// Duplicate paragraph fraction.
    pub dup_para_frac: f64,
    /// Duplicate paragraph character fraction.
    pub dup_para_char_frac: f64,
    /// Duplicate line fraction.
    pub dup_line_frac: f64,
    /// Duplicate line character fraction.
    pub dup_line_char_frac: f64,
    /// `(n, top n-gram character fraction)` for each `n` asked for.
    pub top_ngram: Vec<(usize, f64)>,
    /// `(n, duplicate n-gram character fraction)` for each `n` asked for.
    pub dup_ngram: Vec<(usize, f64)>,
}

impl GopherStats {
    /// Measures `text`, with top n-gram fractions for `top_ns` and duplicate n-gram fractions
    /// for `dup_ns`.
    pub fn compute(text: &str, top_ns: &[usize], dup_ns: &[usize]) -> Self {
        let chars = nchars(text);
        let len = chars as f64;
        let ws = words(text);
        let nw = ws.len() as f64;
        let non_symbol: Vec<&&str> = ws
            .iter()
            .filter(|w| w.chars().any(|c| !is_punctuation(c)))
            .collect();
        let mean_word_length = if non_symbol.is_empty() {
            f64::NAN
        } else {
            non_symbol.iter().map(|w| nchars(w) as f64).sum::<f64>() / non_symbol.len() as f64
        };
        let hashes = text.matches('#').count() as f64;
        let ellipses = (text.matches("...").count() + text.matches('…').count()) as f64;
        let lines = split_lines(text);
        let nl = lines.len() as f64;
        let bullets = lines
            .iter()
            .filter(|l| {
                let s = l.trim_start_matches(is_py_space);
                s.starts_with('•') || s.starts_with('-')
            })
            .count() as f64;
        let ell_lines = lines
            .iter()
            .filter(|l| {
                let s = l.trim_end_matches(is_py_space);
                s.ends_with("...") || s.ends_with('…')
            })
            .count() as f64;
        let alpha_words = ws
            .iter()
            .filter(|w| w.chars().any(char::is_alphabetic))
            .count() as f64;
        let (mut visible, mut alpha, mut digit) = (0usize, 0usize, 0usize);
        for c in text.chars() {
            if !is_py_space(c) {
                visible += 1;
                alpha += usize::from(c.is_alphabetic());
                digit += usize::from(c.is_ascii_digit());
            }
        }
        let paragraphs = split_runs(text.trim_matches(is_py_space), '\n', 2);
        let (pd, pdc) = find_duplicates(&paragraphs);
        let rep_lines = split_runs(text, '\n', 1);
        let (ld, ldc) = find_duplicates(&rep_lines);
        Self {
            chars,
            words: ws.len(),
            non_symbol_words: non_symbol.len(),
            mean_word_length,
            hash_ratio: ratio(hashes, nw),
            ellipsis_ratio: ratio(ellipses, nw),
            bullet_lines: ratio(bullets, nl),
            ellipsis_lines: ratio(ell_lines, nl),
            alpha_words: ratio(alpha_words, nw),
            alpha_chars: ratio(alpha as f64, visible as f64),
            digit_chars: ratio(digit as f64, visible as f64),
            dup_para_frac: ratio(pd as f64, paragraphs.len() as f64),
            dup_para_char_frac: ratio(pdc as f64, len),
            dup_line_frac: ratio(ld as f64, rep_lines.len() as f64),
            dup_line_char_frac: ratio(ldc as f64, len),
            top_ngram: top_ns
                .iter()
                .map(|&n| (n, ratio(top_ngram_chars(&ws, n) as f64, len)))
                .collect(),
            dup_ngram: dup_ns
                .iter()
                .map(|&n| (n, ratio(duplicate_ngram_chars(&ws, n) as f64, len)))
                .collect(),
        }
    }
}
