//! Stop strings and streamed text of `generate_text`, on the transformers greedy output of the
//! `llama_gqa` fixture (tests/fixtures/models): the stop lands exactly where the reference's
//! tokens first spell the stop string, and the streamed chunks add up to the returned text.

use serde_json::Value;
use tilpass::models::{DecoderLm, GenerateConfig, ModelError, StopReason, generate, generate_text};
use tilpass_tests::fixture_path;

/// A stand-in detokenizer: token `t` reads `<t>`.
fn decode(ids: &[u32]) -> Result<String, String> {
    Ok(ids.iter().map(|t| format!("<{t}>")).collect())
}

fn setup() -> (DecoderLm, Vec<u32>, Vec<u32>) {
    let model = DecoderLm::load(
        fixture_path("models/llama_gqa"),
        &tilpass_tests::test_device(),
    )
    .unwrap();
    let inp: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_path("models/llama_gqa/inputs.json")).unwrap(),
    )
    .unwrap();
    let want: Vec<Vec<u32>> = serde_json::from_value(inp["greedy_single"].clone()).unwrap();
    let prompt = vec![1, 17, 42, 99, 200, 3, 5, 7, 11, 13, 250, 128];
    (model, prompt, want[0].clone())
}

fn config(stops: Vec<String>) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: 20,
        eos_token_ids: Some(vec![2]),
        pad_token_id: Some(0),
        stop_strings: stops,
        ..Default::default()
    }
}

#[test]
fn generation_stops_at_the_first_stop_string_and_streams_exactly_the_text() {
    let (model, prompt, reference) = setup();
    assert!(reference.len() >= 8, "the fixture generates enough tokens");
    // A stop string spanning tokens 5 and 6 of the reference output (the closing `>` of token
    // 5 and the opening of token 6), so it only completes with token 6.
    let stop = format!("{}><{}", reference[4], reference[5]);
    let mut streamed = String::new();
    let rows = generate_text(
        &model,
        std::slice::from_ref(&prompt),
        &config(vec!["never there".into(), stop.clone()]),
        &decode,
        &mut |row, chunk| {
            assert_eq!(row, 0);
            streamed.push_str(chunk);
        },
    )
    .unwrap();
    let row = &rows[0];
    assert_eq!(
        row.ids,
        reference[..6],
        "stops with the token completing it"
    );
    assert_eq!(row.stop, StopReason::StopString(stop.clone()));
    let full = decode(&reference[..6]).unwrap();
    let at = full.find(&stop).unwrap();
    assert!(
        !row.text.is_empty(),
        "the text before the stop string is kept"
    );
    assert_eq!(
        row.text,
        full[..at],
        "the text ends right before the stop string"
    );
    assert!(full[row.text.len()..].starts_with(&stop));
    assert_eq!(streamed, row.text, "streamed chunks add up to the text");
    assert!(!streamed.contains(&stop));
}

#[test]
fn without_a_match_rows_end_at_eos_or_max_new_tokens() {
    let (model, prompt, reference) = setup();
    let mut streamed = String::new();
    let rows = generate_text(
        &model,
        &[prompt],
        &config(vec!["<<".into()]),
        &decode,
        &mut |_, c| streamed.push_str(c),
    )
    .unwrap();
    assert_eq!(rows[0].ids, reference);
    assert_eq!(rows[0].text, decode(&reference).unwrap());
    assert_eq!(streamed, rows[0].text);
    let why = if reference.last() == Some(&2) {
        StopReason::Eos
    } else {
        StopReason::MaxNewTokens
    };
    assert_eq!(rows[0].stop, why);
}

#[test]
fn stop_strings_without_a_detokenizer_and_decode_failures_are_errors() {
    let (model, prompt, _) = setup();
    let cfg = config(vec!["x".into()]);
    let err = generate(&model, std::slice::from_ref(&prompt), &cfg, &mut |_, _| {
        true
    })
    .unwrap_err();
    assert!(err.to_string().contains("generate_text"), "{err}");
    let failing = |_: &[u32]| -> Result<String, String> { Err("no such token".into()) };
    let err = generate_text(&model, &[prompt], &cfg, &failing, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, ModelError::Decode(_)), "{err}");
    assert!(err.to_string().contains("no such token"));
}

/// A row that ends at EOS hands the EOS token to the text layer too: it is the last of `ids`
/// and the stop reason is `Eos` (one of the reference's tokens made the EOS id).
#[test]
fn a_row_ending_at_eos_keeps_it_and_says_so() {
    let (model, prompt, reference) = setup();
    let eos = reference[3];
    let first = reference.iter().position(|t| *t == eos).unwrap();
    let cfg = GenerateConfig {
        eos_token_ids: Some(vec![eos]),
        ..config(Vec::new())
    };
    let mut streamed = String::new();
    let rows = generate_text(&model, &[prompt], &cfg, &decode, &mut |_, c| {
        streamed.push_str(c)
    })
    .unwrap();
    assert_eq!(rows[0].ids, reference[..=first]);
    assert_eq!(rows[0].stop, StopReason::Eos);
    assert_eq!(streamed, rows[0].text);
}
