//! Parity with HF `tokenizers`, transformers' `apply_chat_template` and TRL 1.16.0's SFT and DPO
//! data preparation and collators, on real tokenizer files (fixtures from
//! tests/fixtures/generate.py and generate_trl.py, which runs TRL's trainers themselves).

use serde_json::Value;
use tilpass::data::{Record, parse_messages};
use tilpass::tokenize::{
    ChatTemplate, MaskMode, PadSide, PreferenceConfig, RenderOptions, SftConfig, SftEncoder,
    TokenizeError, Tokenizer, Truncation, collate, collate_preference, concat_packed, encode_chat,
    encode_preferences, pack_bfd, preference_texts,
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

/// A list of integers from a fixture.
fn ints(v: &Value) -> Vec<i64> {
    serde_json::from_value(v.clone()).expect("integer list")
}

/// A `[rows, cols]` integer matrix from a fixture, flattened row-major, with its shape.
fn matrix(v: &Value) -> (Vec<i64>, [usize; 2]) {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).expect("integer matrix");
    let cols = rows.first().map_or(0, Vec::len);
    assert!(rows.iter().all(|r| r.len() == cols), "ragged matrix");
    let n = rows.len();
    (rows.into_iter().flatten().collect(), [n, cols])
}

fn widen<T: Copy + Into<i64>>(v: &[T]) -> Vec<i64> {
    v.iter().map(|&x| x.into()).collect()
}

/// The tokenizer of a case, with the case's template installed when given as source.
fn case_tokenizer(case: &Value) -> Option<Tokenizer> {
    let mut tok = load(case["tokenizer"].as_str().unwrap())?;
    if let Some(src) = case["template"].get("source").and_then(Value::as_str) {
        tok.set_chat_template("default", src);
    }
    Some(tok)
}

fn builtin_template(case: &Value) -> Option<String> {
    case["template"]
        .get("builtin")
        .and_then(Value::as_str)
        .map(String::from)
}

fn truncation(mode: &Value) -> Truncation {
    match mode.as_str() {
        Some("keep_start") => Truncation::KeepStart,
        Some("keep_end") => Truncation::KeepEnd,
        other => panic!("unknown truncation_mode {other:?}"),
    }
}

fn records(case: &Value) -> Vec<Record> {
    case["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Record::from_json(r, None).unwrap())
        .collect()
}

/// TRL's `SFTConfig` of a case as tilpass's `SftConfig`.
fn sft_config(case: &Value) -> SftConfig {
    let c = &case["config"];
    assert_eq!(
        c["packing_strategy"], "bfd",
        "only TRL's bfd packing is implemented"
    );
    assert_eq!(
        c["padding_free"], false,
        "padding-free without packing is not covered"
    );
    SftConfig {
        max_length: c["max_length"].as_u64().map(|v| v as usize),
        truncation: truncation(&c["truncation_mode"]),
        completion_only_loss: c["completion_only_loss"].as_bool(),
        assistant_only_loss: c["assistant_only_loss"].as_bool().unwrap(),
        add_eos: true,
        chat_template: builtin_template(case),
        mask_mode: MaskMode::Auto,
        packing: c["packing"].as_bool().unwrap(),
    }
}

#[test]
fn sft_preparation_and_collation_match_trl() {
    let fx = fixture_json("tokenize/sft.json");
    assert_eq!(fx["versions"]["trl"], "1.16.0");
    let cases = fx["cases"].as_array().unwrap();
    let (mut checked, mut refused, mut packed) = (0, 0, 0);
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let Some(tok) = case_tokenizer(case) else {
            continue;
        };
        let recs = records(case);
        let cfg = sft_config(case);
        if let Some(err) = case.get("error") {
            // TRL refuses the case. Its refusals come from generation-block masks only, so
            // tilpass must refuse it in that mode (in `auto` mode a template without markers is
            // an extension: prefix rendering).
            let strict = SftEncoder::new(
                &tok,
                SftConfig {
                    mask_mode: MaskMode::GenerationBlocks,
                    ..cfg
                },
            )
            .unwrap();
            let got = strict.encode_all(&recs);
            match (err["type"].as_str().unwrap(), &got) {
                ("ValueError", Err(TokenizeError::Template { .. }))
                | ("RuntimeError", Err(TokenizeError::NoSupervisedTokens { .. })) => {}
                (t, _) => panic!(
                    "{id}: TRL raised {t} ({}), tilpass gave {got:?}",
                    err["message"]
                ),
            }
            if err["type"] == "RuntimeError" {
                // No assistant token anywhere in an example: refused in every mask mode.
                let auto = SftEncoder::new(&tok, sft_config(case)).unwrap();
                assert!(
                    matches!(
                        auto.encode_all(&recs),
                        Err(TokenizeError::NoSupervisedTokens { .. })
                    ),
                    "{id}"
                );
            }
            refused += 1;
            continue;
        }
        let exp = &case["expected"];
        let enc = SftEncoder::new(&tok, cfg.clone()).unwrap();
        let (examples, report) = enc
            .encode_all(&recs)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(
            i64::from(tok.pad_id().expect("pad or eos")),
            exp["pad_token_id"].as_i64().unwrap(),
            "{id}: pad id (TRL: pad token, else EOS)"
        );
        let rows = exp["rows"].as_array().unwrap();
        if cfg.packing {
            // TRL packs the prepared examples (BFD) and collates them padding-free.
            assert_eq!(report.kept, recs.len(), "{id}: packing filters nothing");
            let packed_rows = pack_bfd(&examples, cfg.max_length.unwrap());
            assert_eq!(packed_rows.len(), rows.len(), "{id}: packed rows");
            for (i, (p, row)) in packed_rows.iter().zip(rows).enumerate() {
                let coll = &exp["collated_rows"][i];
                assert_eq!(
                    widen(&p.input_ids),
                    ints(&row["input_ids"]),
                    "{id}: row {i} ids"
                );
                let lens: Vec<usize> = serde_json::from_value(row["seq_lengths"].clone()).unwrap();
                assert_eq!(p.doc_lengths, lens, "{id}: row {i} seq_lengths");
                assert_eq!(p.labels, matrix(&coll["labels"]).0, "{id}: row {i} labels");
                assert_eq!(
                    p.position_ids,
                    matrix(&coll["position_ids"]).0,
                    "{id}: row {i} positions"
                );
            }
            check_padding_free_batch(id, &concat_packed(&packed_rows), &exp["batch"]);
            packed += 1;
        } else {
            assert_eq!(examples.len(), rows.len(), "{id}: examples kept");
            assert_eq!(report.dropped_unsupervised, recs.len() - rows.len(), "{id}");
            for (i, (e, row)) in examples.iter().zip(rows).enumerate() {
                assert_eq!(
                    widen(&e.input_ids),
                    ints(&row["input_ids"]),
                    "{id}: row {i} ids"
                );
                assert_eq!(e.labels, ints(&row["labels"]), "{id}: row {i} labels");
                assert_eq!(e.attention_mask, vec![1; e.len()], "{id}: row {i}");
            }
            let pad = tok.pad_id().unwrap();
            let multiple = case["config"]["pad_to_multiple_of"]
                .as_u64()
                .map(|m| m as usize);
            let b = collate(&examples, pad, PadSide::Right, multiple).unwrap();
            let (ids, shape) = matrix(&exp["batch"]["input_ids"]);
            assert_eq!(b.shape(), shape, "{id}: batch shape");
            assert_eq!(widen(&b.input_ids), ids, "{id}: batch ids");
            assert_eq!(
                b.labels,
                matrix(&exp["batch"]["labels"]).0,
                "{id}: batch labels"
            );
            assert_eq!(
                widen(&b.attention_mask),
                matrix(&exp["batch"]["attention_mask"]).0,
                "{id}: batch attention mask"
            );
        }
        checked += 1;
    }
    if checked + refused > 0 {
        assert_eq!(checked + refused, cases.len(), "every case was checked");
        assert!(
            refused >= 2 && packed >= 3,
            "refusals and packing are covered"
        );
    }
}

/// Compares a flat packed row with TRL's padding-free collator output (batch of one row).
fn check_padding_free_batch(id: &str, flat: &tilpass::tokenize::PackedSequence, batch: &Value) {
    assert_eq!(
        widen(&flat.input_ids),
        matrix(&batch["input_ids"]).0,
        "{id}: flat ids"
    );
    assert_eq!(flat.labels, matrix(&batch["labels"]).0, "{id}: flat labels");
    assert_eq!(
        flat.position_ids,
        matrix(&batch["position_ids"]).0,
        "{id}: flat positions"
    );
    let cu: Vec<i64> = flat.cu_seqlens().iter().map(|&x| x as i64).collect();
    assert_eq!(cu, ints(&batch["cu_seq_lens_q"]), "{id}: cu_seq_lens");
    assert_eq!(
        flat.doc_lengths.iter().max().map(|&m| m as i64),
        batch["max_length_q"].as_i64(),
        "{id}: max_length"
    );
    let seq_idx: Vec<i64> = flat.document_ids().iter().map(|&d| d as i64).collect();
    assert_eq!(seq_idx, matrix(&batch["seq_idx"]).0, "{id}: seq_idx");
}

#[test]
fn preference_preparation_and_collation_match_trl() {
    let fx = fixture_json("tokenize/preference.json");
    assert_eq!(fx["versions"]["trl"], "1.16.0");
    let cases = fx["cases"].as_array().unwrap();
    let (mut checked, mut dropped) = (0, 0);
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let Some(tok) = case_tokenizer(case) else {
            continue;
        };
        assert!(
            case.get("error").is_none(),
            "{id}: TRL refused: {}",
            case["error"]
        );
        let c = &case["config"];
        let cfg = PreferenceConfig {
            max_length: c["max_length"].as_u64().map(|v| v as usize),
            truncation: truncation(&c["truncation_mode"]),
            pad_to_multiple_of: c["pad_to_multiple_of"].as_u64().map(|v| v as usize),
            chat_template: builtin_template(case),
        };
        let recs = records(case);
        let exp = &case["expected"];
        let (examples, report) =
            encode_preferences(&tok, &recs, &cfg).unwrap_or_else(|e| panic!("{id}: {e}"));
        let rows = exp["rows"].as_array().unwrap();
        assert_eq!(examples.len(), rows.len(), "{id}: rows kept");
        assert_eq!(
            report.dropped_prompt_too_long,
            recs.len() - rows.len(),
            "{id}"
        );
        dropped += report.dropped_prompt_too_long;
        for (i, (e, row)) in examples.iter().zip(rows).enumerate() {
            assert_eq!(
                widen(&e.prompt_ids),
                ints(&row["prompt_ids"]),
                "{id}: row {i} prompt"
            );
            assert_eq!(
                widen(&e.chosen_ids),
                ints(&row["chosen_ids"]),
                "{id}: row {i} chosen"
            );
            assert_eq!(
                widen(&e.rejected_ids),
                ints(&row["rejected_ids"]),
                "{id}: row {i} rejected"
            );
        }
        let pad = tok.pad_id().expect("pad or eos");
        assert_eq!(
            i64::from(pad),
            exp["pad_token_id"].as_i64().unwrap(),
            "{id}: pad id"
        );
        let b = collate_preference(&examples, pad, &cfg).unwrap();
        let (ids, shape) = matrix(&exp["batch"]["input_ids"]);
        assert_eq!([b.batch_size, b.seq_len], shape, "{id}: batch shape");
        assert_eq!(widen(&b.input_ids), ids, "{id}: batch ids");
        assert_eq!(
            widen(&b.attention_mask),
            matrix(&exp["batch"]["attention_mask"]).0,
            "{id}: attention mask"
        );
        assert_eq!(
            widen(&b.completion_mask),
            matrix(&exp["batch"]["completion_mask"]).0,
            "{id}: completion mask"
        );
        checked += 1;
    }
    if checked > 0 {
        assert_eq!(checked, cases.len(), "every case was checked");
        assert!(dropped > 0, "the keep_start filter is covered");
    }
}

#[test]
fn preference_texts_match_trl_maybe_apply_chat_template() {
    let fx = fixture_json("tokenize/preference.json");
    let cases = fx["chat_template_texts"].as_array().unwrap();
    let mut checked = 0;
    for case in cases {
        let id = case["id"].as_str().unwrap();
        let Some(tok) = case_tokenizer(case) else {
            continue;
        };
        let record = Record::from_json(&case["record"], None).unwrap();
        let (p, c, r) = preference_texts(&tok, &record, builtin_template(case).as_deref(), 0)
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let exp = &case["expected"];
        assert_eq!(p, exp["prompt"].as_str().unwrap(), "{id}: prompt");
        assert_eq!(c, exp["chosen"].as_str().unwrap(), "{id}: chosen");
        assert_eq!(r, exp["rejected"].as_str().unwrap(), "{id}: rejected");
        checked += 1;
    }
    if checked > 0 {
        assert_eq!(checked, cases.len(), "every case was checked");
    }
}
