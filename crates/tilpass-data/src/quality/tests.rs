//! Unit tests of the rules without a reference implementation (the Gopher measurements are
//! checked against datatrove in tests/all/quality.rs).

use serde_json::json;

use super::*;
use crate::record::{Message, Role};

fn only(cfg: QualityConfig) -> QualityFilter {
    QualityFilter::new(cfg).unwrap()
}

fn rules(f: &QualityFilter, text: &str) -> Vec<String> {
    f.check_text(text).into_iter().map(|x| x.rule).collect()
}

// Rows of the built-in norsk-chat data (what the built-in identifier learnt from).
const NN: &str = "Kva gjer ein språkmodell?\n\nEin språkmodell reknar ut kor sannsynleg det neste ordet er, gitt teksten framfor. Slik kan han fullføre setningar og svare på spørsmål.";
const NB: &str = "Hva er det motsatte av «høy»?\n\nDet motsatte av «høy» er «lav».";
const EN: &str = "I do not know what I should do today, but I think I will go for a walk.";

#[test]
fn language_rule_keeps_the_written_forms_asked_for() {
    let both = only(QualityConfig {
        languages: Some(vec!["nb".into(), "nn".into()]),
        ..QualityConfig::none()
    });
    assert!(both.check_text(NN).is_empty());
    assert!(both.check_text(NB).is_empty());
    let f = both.check_text(EN);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule, "language");
    assert_eq!(f[0].value, json!("en"));
    assert_eq!(f[0].threshold, json!(["nb", "nn"]));
    let nn = only(QualityConfig {
        languages: Some(vec!["nn".into()]),
        ..QualityConfig::none()
    });
    assert!(nn.check_text(NN).is_empty());
    assert_eq!(rules(&nn, NB), ["language"]);
    let sure = only(QualityConfig {
        languages: Some(vec!["nn".into()]),
        min_language_probability: Some(1.5),
        ..QualityConfig::none()
    });
    assert_eq!(rules(&sure, NN), ["min_language_probability"]);
}

#[test]
fn length_and_character_share_rules() {
    // 6 words, 32 characters, 27 non-space characters: 18 letters, 6 digits, 3 other.
    let text = "abc def 123 456 ghi jklmnopqr!?.";
    let s = GopherStats::compute(text, &[], &[]);
    assert_eq!((s.words, s.chars), (6, 32));
    assert!((s.alpha_chars - 18.0 / 27.0).abs() < 1e-12);
    assert!((s.digit_chars - 6.0 / 27.0).abs() < 1e-12);
    let f = only(QualityConfig {
        min_words: Some(7),
        max_chars: Some(31),
        min_alpha_chars: Some(0.7),
        max_digit_chars: Some(0.2),
        ..QualityConfig::none()
    });
    assert_eq!(
        rules(&f, text),
        ["min_words", "max_chars", "alpha_chars", "digit_chars"]
    );
    let f = only(QualityConfig {
        min_words: Some(6),
        max_words: Some(6),
        min_chars: Some(32),
        max_chars: Some(32),
        min_alpha_chars: Some(0.6),
        max_digit_chars: Some(0.25),
        ..QualityConfig::none()
    });
    assert!(f.check_text(text).is_empty(), "{:?}", f.check_text(text));
    let f = only(QualityConfig {
        max_words: Some(5),
        min_chars: Some(33),
        ..QualityConfig::none()
    });
    assert_eq!(rules(&f, text), ["max_words", "min_chars"]);
}

#[test]
fn per_field_scope_names_the_failing_field() {
    let rec = Record::PromptCompletion {
        prompt: Content::Text("Kva heiter hovudstaden i Noreg?".into()),
        completion: Content::Text("Oslo".into()),
    };
    let cfg = QualityConfig {
        min_words: Some(2),
        scope: TextScope::PerField,
        ..QualityConfig::none()
    };
    let f = only(cfg.clone()).check_record(&rec);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].field.as_deref(), Some("completion"));
    assert_eq!(f[0].value, json!(1));
    // Joined, the row has 6 words.
    let f = only(QualityConfig {
        scope: TextScope::Joined,
        ..cfg
    });
    assert!(f.check_record(&rec).is_empty());
    assert_eq!(record_text(&rec), "Kva heiter hovudstaden i Noreg?\n\nOslo");
}

#[test]
fn implicit_preference_prompt_counts_once() {
    let user = Message::new(Role::User, "Kva er klokka?");
    let rec = Record::Preference {
        prompt: None,
        chosen: Content::Messages(vec![
            user.clone(),
            Message::new(Role::Assistant, "Ho er tolv."),
        ]),
        rejected: Content::Messages(vec![user, Message::new(Role::Assistant, "Veit ikkje.")]),
    };
    assert_eq!(
        record_text(&rec),
        "Kva er klokka?\n\nHo er tolv.\n\nVeit ikkje."
    );
    let names: Vec<&str> = record_fields(&rec).iter().map(|x| x.0).collect();
    assert_eq!(names, ["prompt", "chosen", "rejected"]);
    let f = only(QualityConfig {
        max_dup_para_frac: Some(0.0),
        ..QualityConfig::none()
    });
    assert!(f.check_record(&rec).is_empty());
}

#[test]
fn settings_are_checked() {
    let id = crate::LangId::builtin();
    for (cfg, setting) in [
        (
            QualityConfig {
                languages: Some(vec!["xx".into()]),
                ..QualityConfig::none()
            },
            "languages",
        ),
        (
            QualityConfig {
                min_words: Some(10),
                max_words: Some(5),
                ..QualityConfig::none()
            },
            "min_words",
        ),
        (
            QualityConfig {
                max_hash_ratio: Some(f64::NAN),
                ..QualityConfig::none()
            },
            "max_hash_ratio",
        ),
        (
            QualityConfig {
                max_top_ngram: vec![(0, 0.2)],
                ..QualityConfig::none()
            },
            "max_top_ngram",
        ),
    ] {
        let e = cfg.validate(id).unwrap_err().to_string();
        assert!(e.contains(&format!("`{setting}`")), "{e}");
    }
    QualityConfig::default().validate(id).unwrap();
    let e = serde_json::from_value::<QualityConfig>(json!({"min_word": 3})).unwrap_err();
    assert!(e.to_string().contains("min_word"), "{e}");
    let c: QualityConfig =
        serde_json::from_value(json!({"min_words": 3, "languages": null})).unwrap();
    assert_eq!(c.min_words, Some(3));
    assert_eq!(c.languages, None);
    assert_eq!(c.max_dup_line_frac, Some(0.3));
}

#[test]
fn perplexity_cutoff_drops_the_highest_share() {
    let v = [3.0, 9.0, 1.0, 9.0, f64::NAN, 2.0, 5.0, 4.0, 8.0, 7.0];
    let (cut, drop) = perplexity_cutoff(&v, 30.0).unwrap();
    // floor(10 · 0.3) = 3 rows: NaN, then the two 9s.
    assert_eq!(cut, Some(9.0));
    let dropped: Vec<usize> = (0..v.len()).filter(|&i| drop[i]).collect();
    assert_eq!(dropped, [1, 3, 4]);
    let (cut, drop) = perplexity_cutoff(&v, 25.0).unwrap();
    // floor(2.5) = 2: NaN and the later 9.
    assert_eq!(cut, Some(9.0));
    assert_eq!(
        (0..v.len()).filter(|&i| drop[i]).collect::<Vec<_>>(),
        [3, 4]
    );
    let (cut, drop) = perplexity_cutoff(&v, 0.0).unwrap();
    assert_eq!(cut, None);
    assert!(drop.iter().all(|d| !d));
    assert!(perplexity_cutoff(&v, 101.0).is_err());
}

#[test]
fn ngram_model_is_a_distribution_and_prefers_its_training_text() {
    let lines = [
        "eg likar å gå tur",
        "eg likar å lese bøker",
        "du likar å gå på ski",
    ];
    let lm = NgramLm::train(lines, NgramLmConfig { order: 3 }).unwrap();
    let alphabet = lm.alphabet();
    for ctx in ["", "e", "eg ", "zz"] {
        let ctx: Vec<char> = ctx.chars().collect();
        let total: f64 =
            alphabet.iter().map(|&c| lm.prob(&ctx, c)).sum::<f64>() + lm.prob(&ctx, 'Q');
        assert!((total - 1.0).abs() < 1e-12, "{total}");
    }
    assert!(lm.perplexity("eg likar å gå") < lm.perplexity("kq zxw vvv"));
    assert!(NgramLm::train(["", ""], NgramLmConfig::default()).is_err());
    assert!(NgramLm::train(["a"], NgramLmConfig { order: 0 }).is_err());
}

#[test]
fn filter_records_adds_the_perplexity_rule() {
    let recs: Vec<Record> = ["eg likar å gå tur", "qqq zzz xxx", "eg likar å lese"]
        .iter()
        .map(|t| Record::Text {
            text: t.to_string(),
        })
        .collect();
    let lm = NgramLm::train(
        ["eg likar å gå tur", "eg likar å lese bøker"],
        NgramLmConfig::default(),
    )
    .unwrap();
    let f = only(QualityConfig::none());
    let v = filter_records(
        &recs,
        &f,
        Some(PerplexityRule {
            scorer: &lm,
            drop_pct: 34.0,
        }),
    )
    .unwrap();
    let kept: Vec<bool> = v.iter().map(RowVerdict::kept).collect();
    assert_eq!(kept, [true, false, true]);
    assert_eq!(v[1].failures[0].rule, "perplexity");
    assert_eq!(v[1].failures[0].value, json!(v[1].perplexity.unwrap()));
}
