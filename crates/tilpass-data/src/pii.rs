//! Detecting and redacting personal data in Norwegian text.
//!
//! | kind | placeholder | what is found |
//! |---|---|---|
//! | [`PiiKind::Email`] | `[EPOST]` | `local@domain.tld` (letters, digits, `._%+-` in the local part) |
//! | [`PiiKind::Phone`] | `[TELEFON]` | Norwegian numbers: 8 digits starting with 2-9, optionally after `+47`, `0047` or `(+47)`; grouped `123 45 678`, `12 34 56 78` or `1234 5678` (spaces); ungrouped `12345678` only after `+47`/`0047` or a word starting with a phone word (tlf, telefon, mobil, ring, sms, ...) in the 30 characters before |
//! | [`PiiKind::NationalId`] | `[FØDSELSNUMMER]` | fødselsnummer and D-numbers: 11 digits (or `DDMMYY NNNNN`) with both mod-11 check digits right and a real date (D-number: first digit + 4; century from the individual number) |
//! | [`PiiKind::BankAccount`] | `[KONTONUMMER]` | 11 digits (or `1234.56.78903` / `1234 56 78903`) with the mod-11 check digit (weights 5,4,3,2,7,6,5,4,3,2) right, and not a valid national identity number |
//! | [`PiiKind::Url`] | `[URL]` | `http://`, `https://` and `www.` addresses up to white space (trailing punctuation and unbalanced closing brackets left out) |
//!
//! Numbers glued to letters, digits or `/-_` (order numbers such as `A-12345678`, decimals,
//! dates `12.03.2024`, prices `12 345 678 kr` grouped otherwise) are left alone. The committed
//! test set tests/fixtures/data/pii_testset.jsonl (CC0, made by
//! tests/fixtures/generate_pii_testset.py with its own mod-11 code) holds valid and invalid
//! numbers and look-alikes; tests/all/pii.rs asserts precision 1.0 and recall >= 0.95 per kind.
//!
//! ```
//! use tilpass_data::pii::redact;
//! let (text, found) = redact("Ring meg på +47 912 34 567 eller skriv til kari@example.no.");
//! assert_eq!(text, "Ring meg på [TELEFON] eller skriv til [EPOST].");
//! assert_eq!(found.len(), 2);
//! ```

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// A kind of personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiKind {
    /// An e-mail address.
    Email,
    /// A Norwegian phone number.
    Phone,
    /// A fødselsnummer or D-number.
    NationalId,
    /// A Norwegian bank account number.
    BankAccount,
    /// A URL.
    Url,
}

impl PiiKind {
    /// Every kind.
    pub const ALL: [PiiKind; 5] = [
        PiiKind::Email,
        PiiKind::Phone,
        PiiKind::NationalId,
        PiiKind::BankAccount,
        PiiKind::Url,
    ];

    /// The placeholder that replaces it.
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[EPOST]",
            PiiKind::Phone => "[TELEFON]",
            PiiKind::NationalId => "[FØDSELSNUMMER]",
            PiiKind::BankAccount => "[KONTONUMMER]",
            PiiKind::Url => "[URL]",
        }
    }

    /// The snake_case name (`email`, `phone`, `national_id`, `bank_account`, `url`).
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::NationalId => "national_id",
            PiiKind::BankAccount => "bank_account",
            PiiKind::Url => "url",
        }
    }
}

/// One finding: `text[start..end]` (byte offsets) is personal data of `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PiiMatch {
    /// What it is.
    pub kind: PiiKind,
    /// Byte offset of the start.
    pub start: usize,
    /// Byte offset of the end (exclusive).
    pub end: usize,
}

static URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?i)(?:https?://|www\.)[^\s<>"«»]+"#).expect("URL regex"));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[\p{L}\p{N}._%+-]+@[\p{L}\p{N}-]+(?:\.[\p{L}\p{N}-]+)*\.\p{L}{2,}")
        .expect("e-mail regex")
});
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\(?(?:\+|00)47\)?[ \u{a0}]?)?\d+(?:[ \u{a0}.]\d+)*").expect("number regex")
});

const PHONE_WORDS: [&str; 10] = [
    "tlf",
    "telefon",
    "mobil",
    "mob.",
    "ring",
    "sms",
    "tel.",
    "tel:",
    "nummeret mitt",
    "nå meg på",
];

/// True when `d` (11 ASCII digits as values 0-9) is a valid fødselsnummer or D-number: both
/// mod-11 check digits and the date (D-number: day + 40).
pub fn valid_national_id(d: &[u8; 11]) -> bool {
    let check = |w: &[u32], n: usize| -> Option<u32> {
        let s: u32 = w.iter().zip(d).map(|(&w, &x)| w * x as u32).sum();
        match 11 - s % 11 {
            11 => Some(0),
            10 => None,
            k => Some(k),
        }
        .filter(|&k| k == d[n] as u32)
    };
    if check(&[3, 7, 6, 1, 8, 9, 4, 5, 2], 9).is_none()
        || check(&[5, 4, 3, 2, 7, 6, 5, 4, 3, 2], 10).is_none()
    {
        return false;
    }
    let mut day = d[0] as u32 * 10 + d[1] as u32;
    let month = d[2] as u32 * 10 + d[3] as u32;
    let yy = d[4] as u32 * 10 + d[5] as u32;
    let ind = d[6] as u32 * 100 + d[7] as u32 * 10 + d[8] as u32;
    if day > 40 {
        day -= 40;
    }
    let year = match ind {
        0..=499 => 1900 + yy,
        500..=749 if yy >= 54 => 1800 + yy,
        500..=999 if yy < 40 => 2000 + yy,
        900..=999 if yy >= 40 => 1900 + yy,
        _ => return false,
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// True when `d` (11 digits as values 0-9) is a valid Norwegian bank account number: the
/// last digit is the mod-11 check digit of the first ten with weights 5,4,3,2,7,6,5,4,3,2.
pub fn valid_account(d: &[u8; 11]) -> bool {
    let w = [5u32, 4, 3, 2, 7, 6, 5, 4, 3, 2];
    let s: u32 = w.iter().zip(d).map(|(&w, &x)| w * x as u32).sum();
    match 11 - s % 11 {
        11 => d[10] == 0,
        10 => false,
        k => d[10] as u32 == k,
    }
}

fn glued_before(text: &str, start: usize) -> bool {
    let mut it = text[..start].chars().rev();
    match it.next() {
        None => false,
        Some(c) if c.is_alphanumeric() || matches!(c, '_' | '/' | '-' | '+' | '@') => true,
        Some('.' | ',') => it.next().is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    }
}

fn glued_after(text: &str, end: usize) -> bool {
    let mut it = text[end..].chars();
    match it.next() {
        None => false,
        Some(c) if c.is_alphanumeric() || matches!(c, '_' | '/' | '@') => true,
        Some('.' | ',' | '-') => it.next().is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    }
}

fn phone_word_before(text: &str, start: usize) -> bool {
    let before: String = text[..start]
        .chars()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<String>()
        .to_lowercase();
    // A phone word starts a word: `ring` in `ring meg`, not in `oppfordring`.
    PHONE_WORDS.iter().any(|w| {
        before.match_indices(w).any(|(i, _)| {
            !before[..i]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric)
        })
    })
}

/// Classifies one number-like match `m` (country prefix included when present).
fn classify_number(text: &str, start: usize, m: &str) -> Option<(PiiKind, usize)> {
    // Split off a +47 / 0047 / (+47) prefix: the digits start after it.
    let prefix_len = if m.starts_with(['(', '+']) {
        prefix_end(m)?
    } else if m.starts_with("0047") {
        prefix_end(m).unwrap_or(0)
    } else {
        0
    };
    let body = &m[prefix_len..];
    let prefixed = prefix_len > 0;
    let mut groups: Vec<usize> = Vec::new();
    let mut seps: Vec<char> = Vec::new();
    let mut digits: Vec<u8> = Vec::with_capacity(16);
    let mut run = 0;
    for c in body.chars() {
        if let Some(v) = c.to_digit(10) {
            digits.push(v as u8);
            run += 1;
        } else {
            groups.push(run);
            seps.push(c);
            run = 0;
        }
    }
    groups.push(run);
    let spaces = seps.iter().all(|&c| c == ' ' || c == '\u{a0}');
    let dots = seps.iter().all(|&c| c == '.');
    let first = *digits.first()?;
    if digits.len() == 8 && (2..=9).contains(&first) && spaces {
        let grouped = matches!(groups.as_slice(), [3, 2, 3] | [2, 2, 2, 2] | [4, 4]);
        let plain = groups == [8];
        if grouped || (plain && (prefixed || phone_word_before(text, start))) {
            return Some((PiiKind::Phone, m.len()));
        }
        return None;
    }
    if prefixed || digits.len() != 11 {
        return None;
    }
    let d: [u8; 11] = digits.try_into().ok()?;
    let fnr_shape = groups == [11] || (spaces && groups == [6, 5]);
    let account_shape = groups == [11] || ((spaces || dots) && groups == [4, 2, 5]);
    if fnr_shape && valid_national_id(&d) {
        return Some((PiiKind::NationalId, m.len()));
    }
    if account_shape && valid_account(&d) {
        return Some((PiiKind::BankAccount, m.len()));
    }
    None
}

/// Byte length of a leading `+47 ` / `0047 ` / `(+47) ` prefix.
fn prefix_end(m: &str) -> Option<usize> {
    let b = m.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'(') {
        i += 1;
    }
    if b.get(i) == Some(&b'+') {
        i += 1;
    } else if m[i..].starts_with("00") {
        i += 2;
    } else {
        return None;
    }
    if !m[i..].starts_with("47") {
        return None;
    }
    i += 2;
    if b.get(i) == Some(&b')') {
        i += 1;
    }
    if m[i..].starts_with(' ') {
        i += 1;
    } else if m[i..].starts_with('\u{a0}') {
        i += '\u{a0}'.len_utf8();
    }
    (i < m.len()).then_some(i)
}

/// Trims trailing punctuation (and unbalanced closing brackets) off a URL match.
fn trim_url(s: &str) -> usize {
    let mut end = s.len();
    loop {
        let Some(c) = s[..end].chars().next_back() else {
            return end;
        };
        let trim = match c {
            '.' | ',' | ';' | ':' | '!' | '?' | '\'' | '"' => true,
            ')' => s[..end].matches('(').count() < s[..end].matches(')').count(),
            ']' => s[..end].matches('[').count() < s[..end].matches(']').count(),
            '}' => s[..end].matches('{').count() < s[..end].matches('}').count(),
            _ => false,
        };
        if !trim {
            return end;
        }
        end -= c.len_utf8();
    }
}

/// Every piece of personal data in `text`, ascending, not overlapping: URLs first, then
/// e-mail addresses, then numbers outside those.
pub fn find_pii(text: &str) -> Vec<PiiMatch> {
    let mut found: Vec<PiiMatch> = Vec::new();
    let overlaps =
        |found: &[PiiMatch], s: usize, e: usize| found.iter().any(|m| s < m.end && m.start < e);
    for m in URL.find_iter(text) {
        if glued_before(text, m.start()) && !text[..m.start()].ends_with(['(', '[']) {
            // e.g. `xwww.` inside a word; brackets before a URL are fine.
            let prev = text[..m.start()].chars().next_back();
            if prev.is_some_and(|c| c.is_alphanumeric()) {
                continue;
            }
        }
        let end = m.start() + trim_url(m.as_str());
        if end > m.start() + 4 {
            found.push(PiiMatch {
                kind: PiiKind::Url,
                start: m.start(),
                end,
            });
        }
    }
    for m in EMAIL.find_iter(text) {
        if !overlaps(&found, m.start(), m.end()) {
            found.push(PiiMatch {
                kind: PiiKind::Email,
                start: m.start(),
                end: m.end(),
            });
        }
    }
    for m in NUMBER.find_iter(text) {
        let (s, e) = (m.start(), m.end());
        if overlaps(&found, s, e) || glued_before(text, s) || glued_after(text, e) {
            continue;
        }
        if let Some((kind, len)) = classify_number(text, s, m.as_str()) {
            found.push(PiiMatch {
                kind,
                start: s,
                end: s + len,
            });
        }
    }
    found.sort_by_key(|m| m.start);
    found
}

/// `text` with every finding of [`find_pii`] replaced by its kind's placeholder, and the
/// findings (offsets into the original text).
pub fn redact(text: &str) -> (String, Vec<PiiMatch>) {
    let found = find_pii(text);
    if found.is_empty() {
        return (text.to_string(), found);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for m in &found {
        out.push_str(&text[at..m.start]);
        out.push_str(m.kind.placeholder());
        at = m.end;
    }
    out.push_str(&text[at..]);
    (out, found)
}

/// Counts of findings per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PiiCounts {
    /// E-mail addresses.
    pub email: usize,
    /// Phone numbers.
    pub phone: usize,
    /// Fødselsnummer and D-numbers.
    pub national_id: usize,
    /// Bank account numbers.
    pub bank_account: usize,
    /// URLs.
    pub url: usize,
}

impl PiiCounts {
    /// Adds one finding.
    pub fn add(&mut self, kind: PiiKind) {
        match kind {
            PiiKind::Email => self.email += 1,
            PiiKind::Phone => self.phone += 1,
            PiiKind::NationalId => self.national_id += 1,
            PiiKind::BankAccount => self.bank_account += 1,
            PiiKind::Url => self.url += 1,
        }
    }

    /// Adds another count.
    pub fn merge(&mut self, o: &PiiCounts) {
        self.email += o.email;
        self.phone += o.phone;
        self.national_id += o.national_id;
        self.bank_account += o.bank_account;
        self.url += o.url;
    }

    /// All findings.
    pub fn total(&self) -> usize {
        self.email + self.phone + self.national_id + self.bank_account + self.url
    }
}

/// Redacts every text in a TRL row in place: the strings of `text`, `prompt`, `completion`,
/// `chosen`, `rejected`, `messages`, and Alpaca's `instruction`, `input`, `output`
/// (conversational values: every message's `content`, string or a list of `{"type": "text",
/// "text": ...}` parts). Other fields (ids, metadata, roles) are left as they are. Returns
/// what was found, per kind.
pub fn redact_row(row: &mut serde_json::Value) -> PiiCounts {
    const FIELDS: [&str; 9] = [
        "text",
        "prompt",
        "completion",
        "chosen",
        "rejected",
        "messages",
        "instruction",
        "input",
        "output",
    ];
    let mut counts = PiiCounts::default();
    if let Some(obj) = row.as_object_mut() {
        for f in FIELDS {
            if let Some(v) = obj.get_mut(f) {
                redact_value(v, &mut counts, true);
            }
        }
    }
    counts
}

/// Redacts strings: at the top of a field every string; inside messages only `content` and
/// text parts' `text`.
fn redact_value(v: &mut serde_json::Value, counts: &mut PiiCounts, text_here: bool) {
    use serde_json::Value;
    match v {
        Value::String(s) if text_here => {
            let (out, found) = redact(s);
            if !found.is_empty() {
                for m in &found {
                    counts.add(m.kind);
                }
                *s = out;
            }
        }
        Value::Array(items) => {
            for it in items {
                redact_value(it, counts, text_here);
            }
        }
        Value::Object(o) => {
            for (k, val) in o.iter_mut() {
                if k == "content" || k == "text" {
                    redact_value(val, counts, true);
                } else if val.is_array() || val.is_object() {
                    redact_value(val, counts, false);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(PiiKind, &str)> {
        find_pii(text)
            .into_iter()
            .map(|m| (m.kind, &text[m.start..m.end]))
            .collect()
    }

    #[test]
    fn finds_each_kind_and_leaves_look_alikes() {
        assert_eq!(
            kinds("Skriv til ola.nordmann@example.no."),
            [(PiiKind::Email, "ola.nordmann@example.no")]
        );
        assert_eq!(kinds("tlf 22 33 44 55"), [(PiiKind::Phone, "22 33 44 55")]);
        assert_eq!(
            kinds("(+47) 41234567!"),
            [(PiiKind::Phone, "(+47) 41234567")]
        );
        assert_eq!(
            kinds("Se (https://www.nav.no/side)."),
            [(PiiKind::Url, "https://www.nav.no/side")]
        );
        assert!(kinds("Oppfordring 41234567").is_empty());
        assert_eq!(kinds("Ring: 41234567").len(), 1);
        for neg in [
            "12.03.2024",
            "ordre 20231234",
            "kr 12 345 678",
            "1 234 567 kr",
            "A-41234567",
            "3,14159265",
            "22 33 44 55 66",
        ] {
            assert!(kinds(neg).is_empty(), "{neg}: {:?}", kinds(neg));
        }
    }

    #[test]
    fn redact_row_touches_text_fields_only() {
        let mut row = serde_json::json!({"id": "kari@example.no", "messages": [
            {"role": "user", "content": "Min e-post er kari@example.no"},
            {"role": "assistant", "content": [{"type": "text", "text": "Ring 22 33 44 55"}]}]});
        let c = redact_row(&mut row);
        assert_eq!((c.email, c.phone), (1, 1));
        assert_eq!(row["id"], "kari@example.no");
        assert_eq!(row["messages"][0]["content"], "Min e-post er [EPOST]");
        assert_eq!(row["messages"][1]["content"][0]["text"], "Ring [TELEFON]");
    }
}
