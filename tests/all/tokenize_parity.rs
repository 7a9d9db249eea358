//! Parity with HF `tokenizers`, transformers' `apply_chat_template` and TRL's SFT/DPO
//! tokenization, on real tokenizer files (fixtures from tests/fixtures/generate.py).

use serde_json::Value;
use tilpass::data::{Record, parse_messages};
use tilpass::tokenize::{
    ChatTemplate, MaskMode, PreferenceConfig, RenderOptions, SftConfig, SftEncoder, TokenizeError,
    Tokenizer, Truncation, encode_chat, encode_preference, preference_texts,
};
use tilpass_tests::{artefact, fixture_json};

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).expect("id list")
}

fn load(name: &str) -> Option<Tokenizer> {
    artefact(name).map(|d| Tokenizer::from_dir(&d).unwrap_or_else(|e| panic!("{name}: {e}")))
}

/// The template a fixture case names, compiled for `tok`.
fn template(tok: &mut Tokenizer, spec: &Value) -> ChatTemplate {
    if let Some(src) = spec.get("source").and_then(Value::as_str) {
        tok.set_chat_template("default", src);
        return tok.chat_template(None).unwrap();
    }
    if let Some(name) = spec.get("builtin").and_then(Value::as_str) {
        return tok.chat_template(Some(name)).unwrap();
    }
    tok.chat_template(None)
        .expect("tokenizer carries a template")
}

#[test]
fn tokenizer_ids_match_hf_tokenizers() {
    let fx = fixture_json("tokenize/tokenizers.json");
    let mut checked = 0;
    for (name, rows) in fx["cases"].as_object().unwrap() {
        let Some(tok) = load(name) else { continue };
        for row in rows.as_array().unwrap() {
            let text = row["text"].as_str().unwrap();
            assert_eq!(
                tok.encode(text, true).unwrap(),
                ids(&row["ids"]),
                "{name}: {text:?}"
            );
            let enc = tok.encode_full(text, false).unwrap();
            assert_eq!(enc.get_ids(), ids(&row["ids_plain"]), "{name}: {text:?}");
            let tokens: Vec<String> = serde_json::from_value(row["tokens_plain"].clone()).unwrap();
            assert_eq!(enc.get_tokens(), tokens, "{name}: {text:?}");
            assert_eq!(
                tok.decode(enc.get_ids(), true).unwrap(),
                row["decoded"].as_str().unwrap(),
                "{name}: {text:?}"
            );
            checked += 1;
        }
    }
    if checked > 0 {
        assert_eq!(checked, 5 * 8, "every tokenizer and sentence was checked");
    }
}

#[test]
fn known_vectors_from_the_artefact_notes() {
    // Values published with the artefacts (shared/notes/test-artefacts.md), independent of the
    // fixture script.
    if let Some(gpt2) = load("gpt2") {
        assert_eq!(gpt2.encode("Hello world", true).unwrap(), [15496, 995]);
        assert_eq!(
            gpt2.encode("Hvor ligger nærmeste bibliotek?", true)
                .unwrap(),
            [
                39, 20867, 300, 15249, 299, 21241, 26224, 29872, 275, 29142, 313, 988, 30
            ]
        );
    }
    if let Some(mistral) = load("mistral") {
        assert_eq!(
            mistral.encode("Hello, world", true).unwrap(),
            [1, 22557, 28725, 1526]
        );
        assert_eq!(mistral.bos_id(), Some(1));
        assert_eq!(mistral.eos_id(), Some(2));
    }
    if let Some(minilm) = load("minilm") {
        assert_eq!(
            minilm.encode("Blåbærsyltetøy på søndag", true).unwrap(),
            [
                101, 1038, 20470, 29667, 2869, 8516, 22513, 27688, 6643, 1055, 16415, 8943, 2290,
                102
            ]
        );
    }
}

#[test]
fn chat_templates_match_transformers() {
    let fx = fixture_json("tokenize/chat_templates.json");
    let mut with_masks = 0;
    for case in fx["cases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let Some(mut tok) = load(case["tokenizer"].as_str().unwrap()) else {
            continue;
        };
        let t = template(&mut tok, &case["template"]);
        let messages = parse_messages(&case["messages"]).unwrap();
        let opts = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            tools: Some(case["tools"].clone()).filter(|t| !t.is_null()),
            ..Default::default()
        };
        if let Some(err) = case.get("error").and_then(Value::as_str) {
            match t.render(&messages, &opts) {
                Err(TokenizeError::TemplateRaised { message, .. }) => {
                    assert_eq!(message, err, "{id}")
                }
                other => panic!("{id}: expected the template to raise {err:?}, got {other:?}"),
            }
            continue;
        }
        let exp = &case["expected"];
        let enc = encode_chat(&tok, &t, &messages, &opts, MaskMode::Auto)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(
            enc.text,
            exp["text"].as_str().unwrap(),
            "{id}: rendered text"
        );
        assert_eq!(enc.ids, ids(&exp["ids"]), "{id}: ids");
        if let Some(mask) = exp.get("assistant_masks") {
            let mask: Vec<u8> = serde_json::from_value(mask.clone()).unwrap();
            assert_eq!(enc.assistant_mask, mask, "{id}: assistant mask");
            with_masks += 1;
        }
    }
    if with_masks > 0 {
        assert_eq!(with_masks, 7, "every generation-block case was checked");
    }
}

fn sft_config(case: &Value) -> SftConfig {
    let c = &case["config"];
    SftConfig {
        max_length: c["max_length"].as_u64().map(|v| v as usize),
        truncation: match c.get("truncation").and_then(Value::as_str) {
            Some("keep_end") => Truncation::KeepEnd,
            _ => Truncation::KeepStart,
        },
        assistant_only_loss: c
            .get("assistant_only_loss")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        chat_template: case["template"]
            .get("builtin")
            .and_then(Value::as_str)
            .map(String::from),
        ..Default::default()
    }
}

#[test]
fn sft_labels_match_trl() {
    let fx = fixture_json("tokenize/sft.json");
    for case in fx["cases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let Some(mut tok) = load(case["tokenizer"].as_str().unwrap()) else {
            continue;
        };
        if let Some(src) = case["template"].get("source").and_then(Value::as_str) {
            tok.set_chat_template("default", src);
        }
        let record = Record::from_json(&case["record"], None).unwrap();
        let enc = SftEncoder::new(&tok, sft_config(case)).unwrap();
        let ex = enc
            .encode(0, &record)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let exp = &case["expected"];
        assert_eq!(ex.input_ids, ids(&exp["input_ids"]), "{id}: input_ids");
        let labels: Vec<i64> = serde_json::from_value(exp["labels"].clone()).unwrap();
        assert_eq!(ex.labels, labels, "{id}: labels");
        assert_eq!(ex.attention_mask, vec![1; ex.input_ids.len()], "{id}");
    }
}

#[test]
fn preference_encoding_matches_trl() {
    let fx = fixture_json("tokenize/preference.json");
    for case in fx["cases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let Some(tok) = load(case["tokenizer"].as_str().unwrap()) else {
            continue;
        };
        let record = Record::from_json(&case["record"], None).unwrap();
        let cfg = PreferenceConfig {
            chat_template: case["template"]
                .get("builtin")
                .and_then(Value::as_str)
                .map(String::from),
            ..Default::default()
        };
        let exp = &case["expected"];
        let (p, c, r) = preference_texts(&tok, &record, cfg.chat_template.as_deref(), 0).unwrap();
        assert_eq!(
            (p.as_str(), c.as_str(), r.as_str()),
            (
                exp["prompt"].as_str().unwrap(),
                exp["chosen"].as_str().unwrap(),
                exp["rejected"].as_str().unwrap()
            ),
            "{id}"
        );
        let e = encode_preference(&tok, &record, &cfg, 0).unwrap();
        assert_eq!(e.prompt_ids, ids(&exp["prompt_ids"]), "{id}");
        assert_eq!(e.chosen_ids, ids(&exp["chosen_ids"]), "{id}");
        assert_eq!(e.rejected_ids, ids(&exp["rejected_ids"]), "{id}");
    }
}
