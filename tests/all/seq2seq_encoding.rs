//! Seq2seq SFT encoding (`tilpass_tokenize::seq2seq`) with a word-level tokenizer whose ids
//! are readable (`tN` = id N, anything else = `t0`): one example per assistant turn, the plain
//! `role: content` layout or the chat template as encoder input, targets ending in EOS,
//! history cut from the left, typed errors. Expected ids are written from the vocabulary.

use serde_json::{Value, json};
use tilpass::data::{Content, Message, Record, Role};
use tilpass::tokenize::{
    Seq2SeqEncoder, Seq2SeqExample, Seq2SeqSftConfig, TokenizeError, Tokenizer,
};

/// A tokenizer directory: `t0`..`t255`, split on white space, EOS `t1`, pad `t0`, and
/// `template` as its chat template when given.
fn tokenizer(template: Option<&str>) -> (tempfile::TempDir, Tokenizer) {
    let dir = tempfile::tempdir().unwrap();
    let vocab: serde_json::Map<String, Value> = (0..256)
        .map(|i| (format!("t{i}"), Value::from(i)))
        .collect();
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let mut cfg = json!({"eos_token": "t1", "pad_token": "t0"});
    if let Some(t) = template {
        cfg["chat_template"] = t.into();
    }
    std::fs::write(dir.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
    let t = Tokenizer::from_dir(dir.path()).unwrap();
    (dir, t)
}

fn msg(role: Role, content: &str) -> Message {
    Message::new(role, content)
}

fn chat() -> Record {
    Record::Conversation {
        messages: vec![
            msg(Role::System, "t7"),
            msg(Role::User, "t10 t11"),
            msg(Role::Assistant, "t40 t41"),
            msg(Role::User, "t12"),
            msg(Role::Assistant, "t42"),
        ],
    }
}

fn ex(input_ids: &[u32], labels: &[u32]) -> Seq2SeqExample {
    Seq2SeqExample {
        input_ids: input_ids.to_vec(),
        labels: labels.to_vec(),
    }
}

#[test]
fn one_example_per_assistant_turn_in_the_plain_layout() {
    let (_d, tok) = tokenizer(None);
    let enc = Seq2SeqEncoder::new(&tok, Seq2SeqSftConfig::default()).unwrap();
    assert!(!enc.uses_template());
    // "system: t7\nuser: t10 t11\nassistant:" -> system: (t0) t7 user: (t0) t10 t11 assistant: (t0)
    assert_eq!(
        enc.encode(0, &chat()).unwrap(),
        vec![
            ex(&[0, 7, 0, 10, 11, 0], &[40, 41, 1]),
            ex(&[0, 7, 0, 10, 11, 0, 40, 41, 0, 12, 0], &[42, 1]),
        ]
    );
    // Prompt-completion text: the prompt as it is, the completion + EOS.
    let pc = Record::PromptCompletion {
        prompt: Content::Text("t20 t21".into()),
        completion: Content::Text("t30".into()),
    };
    assert_eq!(enc.encode(0, &pc).unwrap(), vec![ex(&[20, 21], &[30, 1])]);
    // Conversational prompt-completion: only the completion's assistant turns are targets.
    let pc = Record::PromptCompletion {
        prompt: Content::Messages(vec![
            msg(Role::User, "t10"),
            msg(Role::Assistant, "t40"),
            msg(Role::User, "t11"),
        ]),
        completion: Content::Messages(vec![msg(Role::Assistant, "t41")]),
    };
    assert_eq!(
        enc.encode(0, &pc).unwrap(),
        vec![ex(&[0, 10, 0, 40, 0, 11, 0], &[41, 1])]
    );
    let (all, report) = enc.encode_all(&[chat(), chat()]).unwrap();
    assert_eq!((all.len(), report.examples, report.input), (4, 4, 2));
    assert_eq!(report.target_tokens, 10);
}

#[test]
fn the_chat_template_renders_the_history_with_the_generation_prompt() {
    let template = "{% for m in messages %}{{ m['content'] }} {% endfor %}\
                    {% if add_generation_prompt %}t2{% endif %}";
    let (_d, tok) = tokenizer(Some(template));
    let enc = Seq2SeqEncoder::new(&tok, Seq2SeqSftConfig::default()).unwrap();
    assert!(enc.uses_template());
    assert_eq!(
        enc.encode(0, &chat()).unwrap(),
        vec![
            ex(&[7, 10, 11, 2], &[40, 41, 1]),
            ex(&[7, 10, 11, 40, 41, 12, 2], &[42, 1]),
        ]
    );
}

#[test]
fn long_histories_lose_their_oldest_turns_and_long_answers_their_end() {
    let template = "{% for m in messages %}{{ m['content'] }} {% endfor %}\
                    {% if add_generation_prompt %}t2{% endif %}";
    let (_d, tok) = tokenizer(Some(template));
    let cfg = Seq2SeqSftConfig {
        max_source_length: Some(4),
        max_target_length: Some(2),
        ..Default::default()
    };
    let enc = Seq2SeqEncoder::new(&tok, cfg).unwrap();
    // Turn 2's history [t7 | t10 t11 | t40 t41 | t12] + t2 is 7 tokens: the oldest messages go
    // (the system message stays) until [t7 | t12] + t2 fits.
    let got = enc.encode(0, &chat()).unwrap();
    assert_eq!(got[1], ex(&[7, 12, 2], &[42, 1]));
    // The first answer (t40 t41 + EOS) is cut to 2 tokens, EOS kept last.
    assert_eq!(got[0], ex(&[7, 10, 11, 2], &[40, 1]));
    let (_, report) = enc.encode_all(&[chat()]).unwrap();
    assert_eq!((report.source_truncated, report.target_truncated), (1, 1));
    // A single message longer than the limit keeps its last tokens.
    let long = Record::Conversation {
        messages: vec![
            msg(Role::User, "t10 t11 t12 t13 t14 t15"),
            msg(Role::Assistant, "t40"),
        ],
    };
    assert_eq!(
        enc.encode(0, &long).unwrap(),
        vec![ex(&[13, 14, 15, 2], &[40, 1])]
    );
}

#[test]
fn records_an_encoder_decoder_cannot_learn_from_are_typed_errors() {
    let (_d, tok) = tokenizer(None);
    let enc = Seq2SeqEncoder::new(&tok, Seq2SeqSftConfig::default()).unwrap();
    let text = Record::Text {
        text: "t5 t6".into(),
    };
    assert!(matches!(
        enc.encode(3, &text),
        Err(TokenizeError::UnsupportedRecord { index: 3, .. })
    ));
    let no_answer = Record::Conversation {
        messages: vec![msg(Role::User, "t5")],
    };
    assert!(matches!(
        enc.encode(4, &no_answer),
        Err(TokenizeError::NoSupervisedTokens { index: 4, .. })
    ));
    let starts_with_answer = Record::Conversation {
        messages: vec![msg(Role::Assistant, "t5"), msg(Role::User, "t6")],
    };
    let err = enc.encode(5, &starts_with_answer).unwrap_err();
    assert!(
        matches!(err, TokenizeError::UnsupportedRecord { index: 5, .. }),
        "{err}"
    );
    // encode_all names the first bad record.
    let err = enc.encode_all(&[chat(), text]).unwrap_err();
    assert!(
        matches!(err, TokenizeError::UnsupportedRecord { index: 1, .. }),
        "{err}"
    );
    // Settings checked before any work.
    for cfg in [
        Seq2SeqSftConfig {
            max_source_length: Some(0),
            ..Default::default()
        },
        Seq2SeqSftConfig {
            max_target_length: Some(1),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            Seq2SeqEncoder::new(&tok, cfg),
            Err(TokenizeError::Invalid(_))
        ));
    }
    // A named template that does not exist.
    let err = Seq2SeqEncoder::new(
        &tok,
        Seq2SeqSftConfig {
            chat_template: Some("no-such-template".into()),
            ..Default::default()
        },
    )
    .err()
    .expect("an error");
    assert!(err.to_string().contains("no-such-template"), "{err}");
}

#[test]
fn a_tokenizer_without_eos_needs_the_models() {
    let (dir, _) = tokenizer(None);
    std::fs::write(dir.path().join("tokenizer_config.json"), "{}").unwrap();
    let tok = Tokenizer::from_dir(dir.path()).unwrap();
    let err = Seq2SeqEncoder::new(&tok, Seq2SeqSftConfig::default())
        .err()
        .expect("an error");
    assert!(err.to_string().contains("EOS"), "{err}");
    // The model's EOS id, given in the config, ends the targets instead.
    let cfg = Seq2SeqSftConfig {
        eos_id: Some(6),
        ..Default::default()
    };
    let enc = Seq2SeqEncoder::new(&tok, cfg).unwrap();
    let one = Record::PromptCompletion {
        prompt: Content::Text("t20".into()),
        completion: Content::Text("t30".into()),
    };
    assert_eq!(enc.encode(0, &one).unwrap(), vec![ex(&[20], &[30, 6])]);
    let out_of_vocab = Seq2SeqSftConfig {
        eos_id: Some(256),
        ..Default::default()
    };
    assert!(matches!(
        Seq2SeqEncoder::new(&tok, out_of_vocab),
        Err(TokenizeError::Invalid(_))
    ));
}
