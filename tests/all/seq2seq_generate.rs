//! Seq2seq generation with logits processors against transformers' `generate`
//! (tests/fixtures/encoders/seq2seq_generate.json, made by
//! tests/fixtures/generate_seq2seq_generate.py on the tiny T5 fixtures): repetition penalty in
//! greedy decoding and beam search, sampling that can only pick the top token; and seeded
//! sampling's reproducibility, streaming and stop strings.

use serde_json::Value;
use tilpass::models::{
    Seq2SeqConfig, StopReason, T5, generate_seq2seq, generate_seq2seq_stream, generate_seq2seq_text,
};
use tilpass_tests::fixture_path;

use crate::encoder_parity::{batch, rows};

fn expected() -> Value {
    let p = fixture_path("encoders/seq2seq_generate.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn load(name: &str) -> T5 {
    T5::from_dir(
        fixture_path(&format!("encoders/{name}")),
        &tilpass_tests::test_device(),
    )
    .unwrap()
}

#[test]
fn seq2seq_processors_match_transformers() {
    let exp = expected();
    let n = exp["max_new_tokens"].as_u64().unwrap() as usize;
    for name in ["t5_v1_0", "t5_v1_1"] {
        let model = load(name);
        let input = batch(name);
        let want = &exp["models"][name];
        let base = Seq2SeqConfig {
            max_new_tokens: n,
            ..Default::default()
        };
        let cases = [
            (
                "greedy_rep1.3",
                Seq2SeqConfig {
                    repetition_penalty: Some(1.3),
                    ..base.clone()
                },
            ),
            (
                "greedy_rep2.0",
                Seq2SeqConfig {
                    repetition_penalty: Some(2.0),
                    ..base.clone()
                },
            ),
            (
                "beam4_rep1.3",
                Seq2SeqConfig {
                    num_beams: 4,
                    repetition_penalty: Some(1.3),
                    ..base.clone()
                },
            ),
            (
                "sample_topk1_t0.7",
                Seq2SeqConfig {
                    do_sample: true,
                    top_k: Some(1),
                    temperature: 0.7,
                    seed: 11,
                    ..base.clone()
                },
            ),
            (
                "sample_topk1_t0.7_rep1.3",
                Seq2SeqConfig {
                    do_sample: true,
                    top_k: Some(1),
                    temperature: 0.7,
                    repetition_penalty: Some(1.3),
                    seed: 5,
                    ..base.clone()
                },
            ),
            (
                "sample_topp0.01_rep1.3",
                Seq2SeqConfig {
                    do_sample: true,
                    top_p: Some(0.01),
                    repetition_penalty: Some(1.3),
                    ..base.clone()
                },
            ),
        ];
        for (key, cfg) in cases {
            for use_cache in [true, false] {
                let cfg = Seq2SeqConfig {
                    use_cache,
                    ..cfg.clone()
                };
                let got = generate_seq2seq(&model, &input, &cfg).unwrap();
                assert_eq!(
                    got,
                    rows::<u32>(&want[key]),
                    "{name} {key} (cache {use_cache})"
                );
            }
        }
    }
}

fn sampling(seed: u64) -> Seq2SeqConfig {
    Seq2SeqConfig {
        max_new_tokens: 12,
        do_sample: true,
        temperature: 1.5,
        top_k: Some(50),
        top_p: Some(0.95),
        seed,
        ..Default::default()
    }
}

#[test]
fn seq2seq_sampling_is_seeded() {
    let model = load("t5_v1_1");
    let input = batch("t5_v1_1");
    let a = generate_seq2seq(&model, &input, &sampling(3)).unwrap();
    assert_eq!(a, generate_seq2seq(&model, &input, &sampling(3)).unwrap());
    // The cache changes nothing, seeded or not.
    let nocache = Seq2SeqConfig {
        use_cache: false,
        ..sampling(3)
    };
    assert_eq!(a, generate_seq2seq(&model, &input, &nocache).unwrap());
    // Other seeds draw other tokens, and the draws are not greedy decoding.
    let greedy = generate_seq2seq(
        &model,
        &input,
        &Seq2SeqConfig {
            max_new_tokens: 12,
            ..Default::default()
        },
    )
    .unwrap();
    let others: Vec<_> = (4..8)
        .map(|s| generate_seq2seq(&model, &input, &sampling(s)).unwrap())
        .collect();
    assert!(others.iter().any(|o| *o != a), "every seed drew {a:?}");
    assert!(
        std::iter::once(&a).chain(&others).any(|o| *o != greedy),
        "sampling at temperature 1.5 always equals greedy decoding"
    );
}

#[test]
fn seq2seq_streaming_and_stop_strings() {
    let model = load("t5_v1_1");
    let input = batch("t5_v1_1");
    let cfg = sampling(9);
    let all = generate_seq2seq(&model, &input, &cfg).unwrap();
    // The callback sees every token of every row, in order.
    let mut seen = vec![Vec::new(); 2];
    let streamed = generate_seq2seq_stream(&model, &input, &cfg, &mut |r, t| {
        seen[r].push(t);
        true
    })
    .unwrap();
    assert_eq!(streamed, all);
    assert_eq!(seen, all);
    // A callback that says stop at row 0's first token ends that row only (greedy: one
    // sampler serves the batch, so a stopped row changes the other rows' draws).
    let greedy = Seq2SeqConfig {
        max_new_tokens: 12,
        ..Default::default()
    };
    let full = generate_seq2seq(&model, &input, &greedy).unwrap();
    // Greedy row 0 ends in EOS (id 1): the callback sees it too, and the text path says so.
    assert_eq!(full[0].last(), Some(&1));
    let mut seen = vec![Vec::new(); 2];
    generate_seq2seq_stream(&model, &input, &greedy, &mut |r, t| {
        seen[r].push(t);
        true
    })
    .unwrap();
    assert_eq!(seen, full);
    let decode = |ids: &[u32]| Ok(ids.iter().map(|t| format!("<{t}>")).collect::<String>());
    let g = generate_seq2seq_text(&model, &input, &greedy, &decode, &mut |_, _| {}).unwrap();
    assert_eq!((&g[0].ids, &g[0].stop), (&full[0], &StopReason::Eos));
    let cut = generate_seq2seq_stream(&model, &input, &greedy, &mut |r, _| r != 0).unwrap();
    assert_eq!(cut[0], full[0][..1].to_vec());
    assert_eq!(cut[1], full[1]);
    // Stop strings on a "detokenizer" that spells each id: the row stops at the first match,
    // the text is cut before it, and the streamed chunks add up to the text.
    let stop = format!("<{}>", all[0][2]);
    let cfg = Seq2SeqConfig {
        stop_strings: vec![stop.clone()],
        ..sampling(9)
    };
    let mut chunks = vec![String::new(); 2];
    let g = generate_seq2seq_text(&model, &input, &cfg, &decode, &mut |r, c| {
        chunks[r].push_str(c)
    })
    .unwrap();
    let first = all[0].iter().position(|t| *t == all[0][2]).unwrap();
    assert_eq!(g[0].ids, all[0][..=first].to_vec());
    assert_eq!(g[0].stop, StopReason::StopString(stop));
    assert_eq!(chunks[0], g[0].text);
    assert_eq!(chunks[1], g[1].text);
    assert_eq!(g[0].text, decode(&all[0][..first]).unwrap());
    // Stop strings need text; sampling and stop strings need greedy-style decoding.
    assert!(generate_seq2seq(&model, &input, &cfg).is_err());
    for bad in [
        Seq2SeqConfig {
            num_beams: 2,
            ..sampling(1)
        },
        Seq2SeqConfig {
            num_beams: 2,
            stop_strings: vec!["x".into()],
            ..Default::default()
        },
        Seq2SeqConfig {
            top_p: Some(1.5),
            ..sampling(1)
        },
        Seq2SeqConfig {
            repetition_penalty: Some(-1.0),
            ..Default::default()
        },
    ] {
        let e = generate_seq2seq_text(&model, &input, &bad, &decode, &mut |_, _| {}).unwrap_err();
        assert!(
            matches!(e, tilpass::models::ModelError::InvalidConfig { .. }),
            "{e}"
        );
    }
}
