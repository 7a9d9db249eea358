//! A deterministic synthetic chat dataset of any size, for the scale runs of `tilpass data`
//! (scripts/data_100k.sh): TRL conversational rows (`messages`) with an `id` and a `meta`
//! object that every command must pass through unchanged.
//!
//! Row `i` depends only on `(i, seed)` (a SplitMix64 seeded with both) and on the embedded
//! `norsk-chat` conversations, so any prefix of an N-row set is the set of that size. Its kind
//! is chosen by `i mod 20`:
//!
//! | `i mod 20` | share | kind (`meta.kind`) |
//! |---|---|---|
//! | 0–10 | 55 % | `chat`: a `norsk-chat` question, an answer of three sentences drawn from all answers |
//! | 11, 12 | 10 % | `near_duplicate`: row `i - 7` with a word appended to its last turn (`meta.near_duplicate_of`; one new word 5-shingle, Jaccard ≥ 0.9 for these lengths) |
//! | 13 | 5 % | `pii`: a chat row whose answer holds an e-mail address, a phone number, a fødselsnummer and a bank account number (valid mod-11 check digits) and a URL |
//! | 14–16 | 15 % | `english`: an English question and answer (for translation), some with `{name}` |
//! | 17 | 5 % | `code`: an English question with inline code, an answer with a fenced block and `[EPOST]` / `{name}` placeholders |
//! | 18 | 5 % | `system`: a chat row with a system turn |
//! | 19 | 5 % | `multi_turn`: two user / assistant exchanges |
//!
//! Texts are short (a few dozen words) so that translating every row with a small model is
//! feasible on a CPU.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};
use tilpass::core::SplitMix64;
use tilpass::data::embedded::norsk_chat;

/// Error type of the generator.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ENGLISH_Q: &[&str] = &[
    "What is the capital of Norway?",
    "How do I boil an egg?",
    "Why is the sky blue?",
    "Can you explain what a language model does?",
    "What should I pack for a hiking trip in the mountains?",
    "How many days are there in a leap year?",
    "Give me a tip for learning a new language.",
    "What is the difference between weather and climate?",
    "How do I write a polite e-mail to my landlord?",
    "Which fruits grow well in a cold climate?",
    "What does a fjord look like?",
    "How can I save energy at home?",
    "Please summarise the plot of a fairy tale.",
    "What is a good name for a cat?",
    "How long does it take to walk ten kilometres?",
    "Write a short greeting to {name}.",
];
const ENGLISH_SUBJECTS: &[&str] = &[
    "The old harbour",
    "A careful cook",
    "Every winter the town",
    "The small library",
    "Our neighbour",
    "A quiet train",
    "The mountain path",
    "Most students",
    "The fishing boat",
    "A good teacher",
    "The new bridge",
    "My grandmother",
];
const ENGLISH_VERBS: &[&str] = &[
    "opens early on Sundays",
    "needs a little patience",
    "gets a lot of snow",
    "lends books to everyone",
    "grows tomatoes in the garden",
    "runs along the coast",
    "is steep but beautiful",
    "read in the evening",
    "comes back before dark",
    "explains things slowly",
    "connects the two islands",
    "bakes bread every Friday",
];
const ENGLISH_ENDS: &[&str] = &[
    "and nobody minds.",
    "when the weather allows it.",
    "as the guide book says.",
    "so plan ahead.",
    "which surprises many visitors.",
    "for reasons that are easy to see.",
    "in spring and autumn alike.",
    "according to the locals.",
];
const COMMANDS: &[(&str, &str)] = &[
    ("ls -la", "list every file in a folder"),
    ("git status", "see what changed in a repository"),
    ("du -sh .", "see how much space a folder takes"),
    ("grep -rn TODO src", "find every TODO in the code"),
    ("cargo test", "run the tests of a Rust project"),
    ("tar -xzf archive.tar.gz", "unpack an archive"),
    ("python3 -m venv .venv", "make a Python environment"),
    ("df -h", "check the free disk space"),
];
const NAMES: &[(&str, &str)] = &[
    ("ola", "nordmann"),
    ("kari", "hansen"),
    ("per", "olsen"),
    ("ingrid", "berg"),
    ("lars", "johansen"),
    ("sigrid", "dahl"),
    ("nils", "haugen"),
    ("astrid", "lie"),
];

/// The Norwegian material: questions and answer sentences of the embedded `norsk-chat`.
#[derive(Debug, Clone)]
pub struct Material {
    questions: Vec<(String, String)>,
    sentences: Vec<String>,
}

impl Material {
    /// Questions (with their written form) and answer sentences of every `norsk-chat`
    /// conversation (both splits).
    pub fn new() -> Result<Self, BoxError> {
        let mut questions = Vec::new();
        let mut sentences = Vec::new();
        for c in norsk_chat(None)? {
            if let Some(u) = c.messages.first() {
                questions.push((c.lang.clone(), u.content.clone()));
            }
            for m in c.messages.iter().skip(1) {
                for s in split_sentences(&m.content) {
                    sentences.push(s);
                }
            }
        }
        Ok(Self {
            questions,
            sentences,
        })
    }
}

/// Sentences of a text: cut after `.`, `!` or `?` followed by a space.
fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        cur.push(c);
        if matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|n| n.is_whitespace()) {
            let s = cur.trim().to_string();
            if !s.is_empty() {
                out.push(s);
            }
            cur.clear();
        }
    }
    let s = cur.trim().to_string();
    if !s.is_empty() {
        out.push(s);
    }
    out
}

fn pick<'a, T>(rng: &mut SplitMix64, xs: &'a [T]) -> &'a T {
    &xs[(rng.next_u64() % xs.len() as u64) as usize]
}

fn digit(rng: &mut SplitMix64) -> u8 {
    (rng.next_u64() % 10) as u8
}

fn digits(d: &[u8]) -> String {
    d.iter().map(|x| char::from(b'0' + x)).collect()
}

/// A valid fødselsnummer (both mod-11 check digits) born in the 1900s.
pub fn national_id(rng: &mut SplitMix64) -> String {
    loop {
        let day = 1 + rng.next_u64() % 28;
        let month = 1 + rng.next_u64() % 12;
        let year = rng.next_u64() % 100;
        let ind = rng.next_u64() % 500;
        let mut d: Vec<u8> = format!("{day:02}{month:02}{year:02}{ind:03}")
            .bytes()
            .map(|b| b - b'0')
            .collect();
        let check = |d: &[u8], w: &[u32]| -> Option<u8> {
            let s: u32 = w.iter().zip(d).map(|(&w, &x)| w * u32::from(x)).sum();
            match 11 - s % 11 {
                11 => Some(0),
                10 => None,
                k => Some(k as u8),
            }
        };
        let Some(k1) = check(&d, &[3, 7, 6, 1, 8, 9, 4, 5, 2]) else {
            continue;
        };
        d.push(k1);
        let Some(k2) = check(&d, &[5, 4, 3, 2, 7, 6, 5, 4, 3, 2]) else {
            continue;
        };
        d.push(k2);
        return digits(&d);
    }
}

/// A valid Norwegian bank account number (mod-11), written `1234.56.78903`.
pub fn bank_account(rng: &mut SplitMix64) -> String {
    loop {
        let mut d: Vec<u8> = (0..10).map(|_| digit(rng)).collect();
        d[0] = 1 + d[0] % 9;
        let w = [5u32, 4, 3, 2, 7, 6, 5, 4, 3, 2];
        let s: u32 = w.iter().zip(&d).map(|(&w, &x)| w * u32::from(x)).sum();
        let k = match 11 - s % 11 {
            11 => 0,
            10 => continue,
            k => k as u8,
        };
        d.push(k);
        let s = digits(&d);
        return format!("{}.{}.{}", &s[..4], &s[4..6], &s[6..]);
    }
}

fn english_sentence(rng: &mut SplitMix64) -> String {
    format!(
        "{} {} {}",
        pick(rng, ENGLISH_SUBJECTS),
        pick(rng, ENGLISH_VERBS),
        pick(rng, ENGLISH_ENDS)
    )
}

fn norwegian_answer(rng: &mut SplitMix64, m: &Material, n: usize) -> String {
    (0..n)
        .map(|_| pick(rng, &m.sentences).as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn turn(role: &str, content: String) -> Value {
    json!({"role": role, "content": content})
}

/// The `meta` object of row `i`: fields of several JSON types that must come through every
/// command unchanged.
fn meta(i: usize, kind: &str, lang: &str, rng: &mut SplitMix64) -> Value {
    json!({
        "source": "synthetic",
        "kind": kind,
        "lang": lang,
        "n": i,
        "weight": (rng.next_u64() % 1000) as f64 / 8.0,
        "tags": ["synth", format!("batch-{}", i / 1000)],
        "reviewed": i.is_multiple_of(3),
        "note": null,
    })
}

/// Row `i` of the synthetic set with `seed`; near-duplicates copy row `i - 7`, which is
/// computed again (rows depend only on `(i, seed)`).
pub fn synth_row(m: &Material, i: usize, seed: u64) -> Value {
    let mut rng = SplitMix64::from_state(seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let id = format!("synth-{i:07}");
    let k = i % 20;
    if (k == 11 || k == 12) && i >= 7 {
        let mut row = synth_row(m, i - 7, seed);
        let of = row["id"].clone();
        let msgs = row["messages"].as_array_mut().expect("messages");
        let last = msgs.last_mut().expect("a turn");
        let text = last["content"].as_str().unwrap_or_default();
        let word = ["Takk!", "Ja.", "Altså.", "Fint."][(rng.next_u64() % 4) as usize];
        last["content"] = json!(format!("{text} {word}"));
        let lang = row["meta"]["lang"].clone();
        row["id"] = json!(id);
        row["meta"] = meta(i, "near_duplicate", lang.as_str().unwrap_or("nb"), &mut rng);
        row["meta"]["near_duplicate_of"] = of;
        return row;
    }
    let (kind, lang, messages) = match k {
        13 => {
            let (lang, q) = pick(&mut rng, &m.questions).clone();
            let (first, last) = *pick(&mut rng, NAMES);
            let phone = format!(
                "9{}{} {}{} {}{}{}",
                digit(&mut rng),
                digit(&mut rng),
                digit(&mut rng),
                digit(&mut rng),
                digit(&mut rng),
                digit(&mut rng),
                digit(&mut rng)
            );
            let answer = format!(
                "{} Skriv til {first}.{last}{i}@example.no eller ring {phone}. \
                 Fødselsnummer {}, konto {}. Mer på https://example.no/side/{i}.",
                norwegian_answer(&mut rng, m, 2),
                national_id(&mut rng),
                bank_account(&mut rng),
            );
            (
                "pii",
                lang,
                vec![turn("user", q), turn("assistant", answer)],
            )
        }
        14..=16 => {
            let q = pick(&mut rng, ENGLISH_Q).to_string();
            let a = (0..3)
                .map(|_| english_sentence(&mut rng))
                .collect::<Vec<_>>()
                .join(" ");
            let a = if q.contains("{name}") {
                format!("Hello {{name}}! {a}")
            } else {
                a
            };
            (
                "english",
                "en".to_string(),
                vec![turn("user", q), turn("assistant", a)],
            )
        }
        17 => {
            let (cmd, what) = *pick(&mut rng, COMMANDS);
            let q = format!("How do I {what}? I tried `{}` but it failed.", cmd);
            let a = format!(
                "Run this in a terminal:\n```bash\n{cmd}\n```\n{} Ask {{name}} or write to \
                 [EPOST] if it still fails.",
                english_sentence(&mut rng)
            );
            (
                "code",
                "en".to_string(),
                vec![turn("user", q), turn("assistant", a)],
            )
        }
        18 => {
            let (lang, q) = pick(&mut rng, &m.questions).clone();
            let sys = if lang == "nn" {
                "Du er ein hjelpsam assistent som svarar kort på nynorsk."
            } else {
                "Du er en hjelpsom assistent som svarer kort på bokmål."
            };
            (
                "system",
                lang,
                vec![
                    turn("system", sys.to_string()),
                    turn("user", q),
                    turn("assistant", norwegian_answer(&mut rng, m, 3)),
                ],
            )
        }
        19 => {
            let (lang, q1) = pick(&mut rng, &m.questions).clone();
            let (_, q2) = pick(&mut rng, &m.questions).clone();
            (
                "multi_turn",
                lang,
                vec![
                    turn("user", q1),
                    turn("assistant", norwegian_answer(&mut rng, m, 2)),
                    turn("user", q2),
                    turn("assistant", norwegian_answer(&mut rng, m, 2)),
                ],
            )
        }
        _ => {
            let (lang, q) = pick(&mut rng, &m.questions).clone();
            (
                "chat",
                lang,
                vec![
                    turn("user", q),
                    turn("assistant", norwegian_answer(&mut rng, m, 3)),
                ],
            )
        }
    };
    json!({
        "id": id,
        "messages": messages,
        "meta": meta(i, kind, &lang, &mut rng),
    })
}

/// Writes rows `0..rows` with `seed` to `out` as JSONL (through a temporary file renamed into
/// place, so `out` appears whole or not at all).
pub fn write_synth(out: &Path, rows: usize, seed: u64) -> Result<(), BoxError> {
    let m = Material::new()?;
    let tmp = out.with_extension("jsonl.tmp");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for i in 0..rows {
            writeln!(w, "{}", synth_row(&m, i, seed))?;
        }
        w.flush()?;
    }
    std::fs::rename(&tmp, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deterministic_and_of_every_kind() {
        let m = Material::new().unwrap();
        let a: Vec<Value> = (0..200).map(|i| synth_row(&m, i, 7)).collect();
        let b: Vec<Value> = (0..200).map(|i| synth_row(&m, i, 7)).collect();
        assert_eq!(a, b);
        assert_ne!(a, (0..200).map(|i| synth_row(&m, i, 8)).collect::<Vec<_>>());
        let mut ids: Vec<&str> = a.iter().map(|r| r["id"].as_str().unwrap()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 200);
        for kind in [
            "chat",
            "near_duplicate",
            "pii",
            "english",
            "code",
            "system",
            "multi_turn",
        ] {
            assert!(a.iter().any(|r| r["meta"]["kind"] == kind), "{kind}");
        }
        for r in &a {
            let rec = tilpass::data::Record::from_json(r, None).unwrap();
            assert_eq!(rec.kind().as_str(), "language_modeling");
        }
        // A near-duplicate is its original with one word appended to its last turn.
        let d = &a[31];
        assert_eq!(d["meta"]["near_duplicate_of"], a[24]["id"]);
        let last = |r: &Value| {
            let m = r["messages"].as_array().unwrap();
            m[m.len() - 1]["content"].as_str().unwrap().to_string()
        };
        let (x, y) = (last(d), last(&a[24]));
        assert!(
            x.starts_with(&format!("{y} ")) && !x[y.len() + 1..].contains(' '),
            "{x} / {y}"
        );
        assert_eq!(d["messages"][0], a[24]["messages"][0]);
    }

    #[test]
    fn personal_data_has_valid_check_digits_and_is_found() {
        let mut rng = SplitMix64::from_state(3);
        for _ in 0..50 {
            let id = national_id(&mut rng);
            let d: Vec<u8> = id.bytes().map(|b| b - b'0').collect();
            assert!(
                tilpass::data::pii::valid_national_id(&d.try_into().unwrap()),
                "{id}"
            );
            let acct = bank_account(&mut rng);
            let d: Vec<u8> = acct
                .bytes()
                .filter(u8::is_ascii_digit)
                .map(|b| b - b'0')
                .collect();
            assert!(
                tilpass::data::pii::valid_account(&d.try_into().unwrap()),
                "{acct}"
            );
        }
        let m = Material::new().unwrap();
        let row = synth_row(&m, 13, 0);
        let text = row["messages"][1]["content"].as_str().unwrap();
        let kinds: std::collections::BTreeSet<&str> = tilpass::data::pii::find_pii(text)
            .iter()
            .map(|f| f.kind.as_str())
            .collect();
        assert_eq!(kinds.len(), 5, "{text}: {kinds:?}");
    }
}
