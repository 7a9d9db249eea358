//! Malformed inputs give typed errors that say where.

use tilpass::data::{Message, Record, Role};
use tilpass::tokenize::{SftConfig, SftEncoder, TokenizeError, Tokenizer, Truncation};
use tilpass_tests::artefact;

#[test]
fn missing_tokenizer_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(
        matches!(err, TokenizeError::MissingTokenizer { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer.json") && msg.contains("vocab.txt"),
        "{msg}"
    );
    let err = Tokenizer::from_dir(dir.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn corrupt_tokenizer_json_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{\"model\": 5}").unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, TokenizeError::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    std::fs::write(dir.path().join("tokenizer_config.json"), "{oops").unwrap();
    let err = Tokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, TokenizeError::Json { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
}

fn mistral() -> Option<Tokenizer> {
    artefact("mistral").map(|d| Tokenizer::from_dir(d).unwrap())
}

#[test]
fn template_problems_are_typed() {
    let Some(mut tok) = mistral() else { return };
    // The Mistral tokenizer files carry no template.
    assert!(matches!(
        tok.chat_template(None),
        Err(TokenizeError::NoChatTemplate { .. })
    ));
    let err = tok.chat_template(Some("tool_use")).unwrap_err();
    assert!(matches!(err, TokenizeError::UnknownTemplate { .. }));
    assert!(err.to_string().contains("chatml, norsk"), "{err}");
    tok.set_chat_template("default", "{% for m in messages %}{{ m.content }");
    let err = tok.chat_template(None).unwrap_err();
    assert!(matches!(err, TokenizeError::Template { .. }), "{err}");
    // The norsk template refuses tool messages with its own message.
    let t = tok.chat_template(Some("norsk")).unwrap();
    let err = t
        .render(&[Message::new(Role::Tool, "{}")], &Default::default())
        .unwrap_err();
    match err {
        TokenizeError::TemplateRaised { message, .. } => {
            assert!(message.contains("unsupported role tool"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn examples_without_supervised_tokens_and_overlong_examples() {
    let Some(tok) = mistral() else { return };
    let cfg = SftConfig {
        chat_template: Some("norsk".into()),
        ..Default::default()
    };
    let enc = SftEncoder::new(&tok, cfg.clone()).unwrap();
    let no_answer = Record::Conversation {
        messages: vec![Message::new(Role::User, "Hei, er det noen der?")],
    };
    match enc.encode(7, &no_answer) {
        Err(TokenizeError::NoSupervisedTokens { index: 7, reason }) => {
            assert!(reason.contains("no assistant turn"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let ok = Record::Conversation {
        messages: vec![
            Message::new(Role::User, "Hei"),
            Message::new(Role::Assistant, "Hei på deg!"),
        ],
    };
    // Under assistant-only loss one conversation without assistant tokens makes the dataset an
    // error naming it (TRL 1.16 raises too), not a silently dropped row.
    let err = enc
        .encode_all(&[ok.clone(), no_answer.clone(), ok.clone()])
        .unwrap_err();
    assert!(
        matches!(err, TokenizeError::NoSupervisedTokens { index: 1, .. }),
        "{err}"
    );
    // Without assistant-only loss every token of it is trained.
    let all_tokens = SftEncoder::new(
        &tok,
        SftConfig {
            assistant_only_loss: false,
            ..cfg.clone()
        },
    )
    .unwrap();
    let (kept, report) = all_tokens
        .encode_all(&[no_answer.clone(), ok.clone()])
        .unwrap();
    assert_eq!((kept.len(), report.dropped_unsupervised), (2, 0));
    assert_eq!(kept[0].supervised(), kept[0].len());

    let strict = SftEncoder::new(
        &tok,
        SftConfig {
            max_length: Some(4),
            truncation: Truncation::Error,
            ..cfg.clone()
        },
    )
    .unwrap();
    assert!(matches!(
        strict.encode(3, &ok),
        Err(TokenizeError::TooLong {
            index: 3,
            max_length: 4,
            ..
        })
    ));
    let drop = SftEncoder::new(
        &tok,
        SftConfig {
            max_length: Some(4),
            truncation: Truncation::Drop,
            ..cfg.clone()
        },
    )
    .unwrap();
    let err = drop.encode_all(std::slice::from_ref(&ok)).unwrap_err();
    assert!(err.to_string().contains("dropped for length"), "{err}");
    // Keeping the start cuts the assistant turn off: reported as unsupervised, not silently kept.
    let cut = SftEncoder::new(
        &tok,
        SftConfig {
            max_length: Some(4),
            ..cfg
        },
    )
    .unwrap();
    match cut.encode(0, &ok) {
        Err(TokenizeError::NoSupervisedTokens { reason, .. }) => {
            assert!(reason.contains("truncation"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // Preference rows are not SFT rows.
    let pref = Record::from_json(
        &serde_json::json!({"prompt": "a", "chosen": "b", "rejected": "c"}),
        None,
    )
    .unwrap();
    assert!(matches!(
        enc.encode(1, &pref),
        Err(TokenizeError::UnsupportedRecord { index: 1, .. })
    ));
}
