//! The embedded preference set `norsk-pref` (`data/norsk-pref.jsonl`): sizes, balance, sanity of
//! every pair, split hygiene, agreement of the built-in language identifier with the labels, and
//! that the committed file is the one `data/build_norsk_pref.py` writes (CI has no Python, so
//! the sha256 sums recorded in `data/README.md` when the file was generated are checked).

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use tilpass_data::embedded::{NORSK_PREF_JSONL, PreferenceExample, Rejection, norsk_pref};
use tilpass_data::{LangId, Role};

fn all() -> Vec<PreferenceExample> {
    norsk_pref(None).expect("norsk-pref parses")
}

fn text(messages: &[tilpass_data::Message]) -> &str {
    &messages[0].content
}

fn count<K: std::hash::Hash + Eq>(
    rows: &[PreferenceExample],
    key: impl Fn(&PreferenceExample) -> K,
) -> HashMap<K, usize> {
    let mut m = HashMap::new();
    for r in rows {
        *m.entry(key(r)).or_insert(0) += 1;
    }
    m
}

#[test]
fn sizes_languages_classes_and_splits_meet_the_minimums() {
    let rows = all();
    assert!(rows.len() >= 320, "{} pairs", rows.len());
    let splits = count(&rows, |r| r.split.clone());
    assert_eq!(
        splits.keys().collect::<HashSet<_>>(),
        HashSet::from([&"train".to_string(), &"eval".to_string()])
    );
    // Every tenth row (after the generator's shuffle) is held out.
    assert_eq!(splits["eval"], rows.len() / 10, "{splits:?}");
    assert_eq!(norsk_pref(Some("eval")).unwrap().len(), splits["eval"]);
    assert_eq!(norsk_pref(Some("train")).unwrap().len(), splits["train"]);

    let langs = count(&rows, |r| r.lang.clone());
    assert_eq!(langs.len(), 2, "{langs:?}");
    for l in ["nb", "nn"] {
        // Roughly half each.
        assert!(langs[l] * 5 >= rows.len() * 2, "{langs:?}");
    }
    let classes = count(&rows, |r| r.rejection);
    for c in Rejection::ALL {
        assert!(
            classes.get(&c).copied().unwrap_or(0) >= 40,
            "{}: {classes:?}",
            c.as_str()
        );
    }
    // Both standards in every class, and both standards and several classes held out.
    let by = count(&rows, |r| (r.lang.clone(), r.rejection));
    for c in Rejection::ALL {
        for l in ["nb", "nn"] {
            assert!(
                by.get(&(l.to_string(), c)).copied().unwrap_or(0) >= 10,
                "{by:?}"
            );
        }
    }
    let eval = norsk_pref(Some("eval")).unwrap();
    assert_eq!(count(&eval, |r| r.lang.clone()).len(), 2);
    assert!(count(&eval, |r| r.rejection).len() >= 4);
    // Varied tasks.
    let tasks = count(&rows, |r| r.task.clone());
    assert!(tasks.len() >= 8, "{tasks:?}");
}

#[test]
fn every_pair_is_well_formed_and_ids_and_prompts_are_unique() {
    let rows = all();
    let mut ids = HashSet::new();
    let mut prompts: HashMap<&str, &str> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.id, format!("norsk-pref-{i:04}"));
        assert!(ids.insert(r.id.as_str()), "duplicate id {}", r.id);
        assert!(r.split == "train" || r.split == "eval", "{}", r.id);
        assert!(r.lang == "nb" || r.lang == "nn", "{}", r.id);
        assert_eq!(r.prompt.len(), 1, "{}", r.id);
        assert_eq!(r.chosen.len(), 1, "{}", r.id);
        assert_eq!(r.rejected.len(), 1, "{}", r.id);
        assert_eq!(r.prompt[0].role, Role::User, "{}", r.id);
        assert_eq!(r.chosen[0].role, Role::Assistant, "{}", r.id);
        assert_eq!(r.rejected[0].role, Role::Assistant, "{}", r.id);
        for m in r.prompt.iter().chain(&r.chosen).chain(&r.rejected) {
            assert!(!m.content.trim().is_empty(), "{}: empty message", r.id);
            assert_eq!(m.content.trim(), m.content, "{}: untrimmed message", r.id);
            assert!(m.extra.is_empty(), "{}", r.id);
        }
        assert_ne!(text(&r.chosen), text(&r.rejected), "{}", r.id);
        // No prompt twice, so none is shared by train and eval.
        if let Some(other) = prompts.insert(text(&r.prompt), &r.id) {
            panic!("{} repeats the prompt of {other}", r.id);
        }
    }
    let train: HashSet<&str> = rows
        .iter()
        .filter(|r| r.split == "train")
        .map(|r| text(&r.prompt))
        .collect();
    assert!(
        rows.iter()
            .filter(|r| r.split == "eval")
            .all(|r| !train.contains(text(&r.prompt)))
    );
    // An evasive answer never gives the chosen answer.
    for r in &rows {
        if r.rejection == Rejection::Evasive {
            assert!(!text(&r.rejected).contains(text(&r.chosen)), "{}", r.id);
        }
    }
}

fn probability(id: &LangId, text: &str, lang: &str) -> f64 {
    id.predict(text)
        .probabilities
        .iter()
        .find(|(l, _)| l == lang)
        .map_or(0.0, |(_, p)| *p)
}

#[test]
fn the_builtin_langid_agrees_with_the_labels() {
    let id = LangId::builtin();
    let rows = all();
    let rate = |hits: usize, n: usize| hits as f64 / n as f64;

    // Chosen answers are in the row's written standard. Measured: 318 / 334 (95.2%); the misses
    // are short answers and Bokmål rewrites that quote "bokmål".
    let hits = rows
        .iter()
        .filter(|r| id.predict(text(&r.chosen)).lang == r.lang)
        .count();
    println!("chosen in the row's standard: {hits} / {}", rows.len());
    assert!(rate(hits, rows.len()) >= 0.93, "{hits} / {}", rows.len());

    // `language` rejections (English, Swedish, Danish — all known to the identifier) are not
    // Norwegian. Measured: 47 / 59 (79.7%); the misses are Swedish sentences, which the small
    // built-in model often takes for Norwegian. Relative to the chosen answer they are less
    // Norwegian in 56 / 59.
    let lang: Vec<_> = rows
        .iter()
        .filter(|r| r.rejection == Rejection::Language)
        .collect();
    let hits = lang
        .iter()
        .filter(|r| !["nb", "nn"].contains(&id.predict(text(&r.rejected)).lang.as_str()))
        .count();
    println!("`language` rejections not nb/nn: {hits} / {}", lang.len());
    assert!(rate(hits, lang.len()) >= 0.75, "{hits} / {}", lang.len());
    let norwegian = |t: &str| probability(id, t, "nb") + probability(id, t, "nn");
    let hits = lang
        .iter()
        .filter(|r| norwegian(text(&r.rejected)) < norwegian(text(&r.chosen)))
        .count();
    println!(
        "`language` rejections less Norwegian than chosen: {hits} / {}",
        lang.len()
    );
    assert!(rate(hits, lang.len()) >= 0.9, "{hits} / {}", lang.len());

    // `written_form` rejections are in the other standard. Measured: 69 / 72 (95.8%); less
    // like the row's standard than the chosen answer in 72 / 72.
    let wf: Vec<_> = rows
        .iter()
        .filter(|r| r.rejection == Rejection::WrittenForm)
        .collect();
    let other = |l: &str| if l == "nb" { "nn" } else { "nb" };
    let hits = wf
        .iter()
        .filter(|r| id.predict(text(&r.rejected)).lang == other(&r.lang))
        .count();
    println!(
        "`written_form` rejections in the other standard: {hits} / {}",
        wf.len()
    );
    assert!(rate(hits, wf.len()) >= 0.9, "{hits} / {}", wf.len());
    for r in &wf {
        assert!(
            probability(id, text(&r.rejected), &r.lang) < probability(id, text(&r.chosen), &r.lang),
            "{}: the rejected answer looks more like `{}` than the chosen one",
            r.id,
            r.lang
        );
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sums `data/README.md` records, in lines `sha256  FILE  HEX`.
fn recorded_sums() -> HashMap<String, String> {
    let readme = include_str!("../../../data/README.md");
    readme
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("sha256")).then_some(())?;
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

#[test]
fn the_committed_file_is_what_the_generator_wrote() {
    let sums = recorded_sums();
    assert_eq!(
        sums.get("norsk-pref.jsonl").map(String::as_str),
        Some(sha256_hex(NORSK_PREF_JSONL.as_bytes()).as_str()),
        "data/norsk-pref.jsonl differs from the file build_norsk_pref.py wrote \
         (regenerate it with `python3 data/build_norsk_pref.py` and update data/README.md)"
    );
    let script = include_bytes!("../../../data/build_norsk_pref.py");
    assert_eq!(
        sums.get("build_norsk_pref.py").map(String::as_str),
        Some(sha256_hex(script).as_str()),
        "data/build_norsk_pref.py changed since data/norsk-pref.jsonl was generated \
         (regenerate it and update both sums in data/README.md)"
    );
}
