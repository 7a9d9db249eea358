//! The decoders' sampler checked statistically (GRPO draws its completions with it): token
//! frequencies of `next_token` and of batched `generate` over many seeded draws against the
//! softmax probabilities after transformers' warpers (temperature, then top-k keeping ties at
//! the k-th value, then top-p dropping tokens whose ascending cumulative mass is <= 1 - p),
//! computed here independently in f64; and determinism under a seed, batched and unbatched,
//! with and without the KV cache.
//!
//! The bounds come from the sample size: a chi-square statistic below the Wilson–Hilferty
//! quantile at z = 5 (a false alarm about once in three million), every token within five
//! standard deviations of its expected count, and no draw outside the kept tokens. The seeds
//! are fixed, so the tests are deterministic; each case also shows that the same draws are
//! rejected against a nearby wrong distribution, so the bound has power.

use tilpass::models::{
    DecoderInput, DecoderLm, GenerateConfig, Sampler, generate, generate_greedy, next_token,
};
use tilpass_tests::fixture_path;

/// transformers' `TemperatureLogitsWarper`, `TopKLogitsWarper` and `TopPLogitsWarper` (in this
/// order) followed by a softmax, in f64.
fn warped_probs(
    logits: &[f32],
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
) -> Vec<f64> {
    let mut s: Vec<f64> = logits.iter().map(|&l| f64::from(l) / temperature).collect();
    if let Some(k) = top_k {
        let mut sorted = s.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[k.min(sorted.len()) - 1];
        // `scores < topk(scores, k)[..., -1]` are removed: ties with the k-th stay.
        s.iter_mut()
            .filter(|x| **x < kth)
            .for_each(|x| *x = f64::NEG_INFINITY);
    }
    if let Some(p) = top_p {
        let probs = softmax(&s);
        let mut asc: Vec<usize> = (0..s.len()).collect();
        asc.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
        let mut cum = 0.0;
        let last = asc.len() - 1;
        for (j, &i) in asc.iter().enumerate() {
            cum += probs[i];
            // `cumulative_probs <= 1 - top_p` is removed, the most likely token always kept.
            if cum <= 1.0 - p && j != last {
                s[i] = f64::NEG_INFINITY;
            }
        }
    }
    softmax(&s)
}

fn softmax(s: &[f64]) -> Vec<f64> {
    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|x| x / total).collect()
}

/// Wilson–Hilferty approximation of the chi-square quantile with `df` degrees of freedom at
/// the standard-normal quantile `z`.
fn chi2_quantile(df: usize, z: f64) -> f64 {
    let d = df as f64;
    let a = 2.0 / (9.0 * d);
    d * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Pearson's chi-square of `counts` against `probs` over the tokens with positive
/// probability, and the degrees of freedom; `None` when a token outside the support was drawn.
fn chi2(counts: &[usize], probs: &[f64]) -> Option<(f64, usize)> {
    let n: usize = counts.iter().sum();
    let mut stat = 0.0;
    let mut support = 0usize;
    for (&c, &p) in counts.iter().zip(probs) {
        if p == 0.0 {
            if c > 0 {
                return None;
            }
            continue;
        }
        support += 1;
        let e = n as f64 * p;
        stat += (c as f64 - e).powi(2) / e;
    }
    Some((stat, support.saturating_sub(1).max(1)))
}

/// Asserts the draws follow `probs` (chi-square, per-token 5-sigma, nothing outside the
/// support) and are rejected against `wrong`.
fn assert_follows(case: &str, counts: &[usize], probs: &[f64], wrong: &[f64]) {
    let n: usize = counts.iter().sum();
    for (i, (&c, &p)) in counts.iter().zip(probs).enumerate() {
        if p == 0.0 {
            assert_eq!(
                c, 0,
                "{case}: token {i} is filtered out but was drawn {c} times"
            );
            continue;
        }
        let e = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (c as f64 - e).abs() <= 5.0 * sd + 1.0,
            "{case}: token {i} drawn {c} times, expected {e:.1} ± {sd:.1}"
        );
    }
    let (stat, df) = chi2(counts, probs).expect("checked above");
    let crit = chi2_quantile(df, 5.0);
    assert!(
        stat < crit,
        "{case}: chi-square {stat:.1} >= {crit:.1} ({df} degrees of freedom)"
    );
    let rejected = match chi2(counts, wrong) {
        None => true,
        Some((s, d)) => s > chi2_quantile(d, 5.0),
    };
    assert!(
        rejected,
        "{case}: the draws do not tell the wrong distribution apart"
    );
}

fn config(temperature: f32, top_k: Option<usize>, top_p: Option<f32>, seed: u64) -> GenerateConfig {
    GenerateConfig {
        do_sample: true,
        temperature,
        top_k,
        top_p,
        seed,
        ..Default::default()
    }
}

/// Counts of `n` draws of `next_token` from one row of logits.
fn draw(logits: &[f32], cfg: &GenerateConfig, n: usize) -> Vec<usize> {
    let mut sampler = Sampler::new(cfg.seed);
    let mut counts = vec![0; logits.len()];
    for _ in 0..n {
        counts[next_token(&mut logits.to_vec(), cfg, &mut sampler) as usize] += 1;
    }
    counts
}

#[test]
fn next_token_draws_follow_the_warped_softmax() {
    // Twelve logits with a spread like a small model's, a tie at 1.0 (tokens 3, 7 and 10).
    let logits = [
        0.3f32, 2.1, -0.4, 1.0, 1.7, -1.2, 0.0, 1.0, 2.6, -2.0, 1.0, 0.6,
    ];
    let n = 60_000;
    // (name, temperature, top_k, top_p, wrong-distribution settings)
    type Case = (
        &'static str,
        f32,
        Option<usize>,
        Option<f32>,
        (f64, Option<usize>, Option<f64>),
    );
    let cases: [Case; 8] = [
        ("plain", 1.0, None, None, (1.15, None, None)),
        ("temperature 0.6", 0.6, None, None, (0.7, None, None)),
        ("temperature 1.8", 1.8, None, None, (1.5, None, None)),
        ("top_k 2", 1.0, Some(2), None, (1.0, Some(3), None)),
        // The 4th largest logit is the three-way tie at 1.0: all tied tokens stay (6 in all).
        (
            "top_k 4 with ties",
            1.0,
            Some(4),
            None,
            (1.0, Some(3), None),
        ),
        // The top-p cut never falls inside the tie (torch.sort leaves tied tokens' order open).
        ("top_p 0.6", 1.0, None, Some(0.6), (1.0, None, Some(0.5))),
        (
            "top_p 0.5 at 0.7",
            0.7,
            None,
            Some(0.5),
            (0.7, None, Some(0.35)),
        ),
        (
            "temperature 1.3, top_k 7, top_p 0.6",
            1.3,
            Some(7),
            Some(0.6),
            (1.3, Some(7), None),
        ),
    ];
    for (i, (name, t, k, p, (wt, wk, wp))) in cases.into_iter().enumerate() {
        let cfg = config(t, k, p, 1000 + i as u64);
        let counts = draw(&logits, &cfg, n);
        let want = warped_probs(&logits, f64::from(t), k, p.map(f64::from));
        let wrong = warped_probs(&logits, wt, wk, wp);
        assert_follows(name, &counts, &want, &wrong);
        // Same seed, same draws; another seed, other draws.
        assert_eq!(counts, draw(&logits, &cfg, n), "{name}: same seed");
        let other = GenerateConfig {
            seed: cfg.seed + 7919,
            ..cfg.clone()
        };
        assert_ne!(counts, draw(&logits, &other, n), "{name}: another seed");
    }
}

fn model() -> DecoderLm {
    DecoderLm::load(
        fixture_path("models/llama_gqa"),
        &tilpass_tests::test_device(),
    )
    .unwrap()
}

/// The logits of the token after `prompt`, `[vocab]`.
fn last_logits(model: &DecoderLm, prompt: &[u32]) -> Vec<f32> {
    let input = DecoderInput::unpadded(&[prompt.to_vec()]).unwrap();
    let logits = model.forward(&input, None).unwrap();
    let [_, s, v] = logits.dims();
    logits
        .slice([0..1, s - 1..s, 0..v])
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
}

#[test]
fn batched_generation_samples_each_row_from_the_model_softmax() {
    // GRPO's layout: one prompt repeated in the batch, one new token per row.
    let model = model();
    let prompt = vec![1u32, 17, 42, 99, 200, 3, 5];
    let logits = last_logits(&model, &prompt);
    let (lo, hi) = logits
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    // A temperature that makes the random-init model's nearly flat distribution uneven: the
    // logit range becomes 4 nats.
    let t = (hi - lo) / 4.0;
    assert!(t > 0.0, "the fixture's logits differ");
    let rows = 6000;
    let prompts = vec![prompt.clone(); rows];
    for (name, k, p, seed, wrong_t) in [
        ("temperature only", None, None, 5u64, 1.25),
        ("top_k 24, top_p 0.9", Some(24), Some(0.9f32), 6, 1.0),
    ] {
        let cfg = GenerateConfig {
            max_new_tokens: 1,
            eos_token_ids: Some(vec![2]),
            pad_token_id: Some(0),
            ..config(t, k, p, seed)
        };
        let out = generate(&model, &prompts, &cfg, &mut |_, _| true).unwrap();
        let mut counts = vec![0; logits.len()];
        for row in &out {
            assert_eq!(row.len(), 1);
            counts[row[0] as usize] += 1;
        }
        let want = warped_probs(&logits, f64::from(t), k, p.map(f64::from));
        let wrong = match k {
            // Without the filters.
            Some(_) => warped_probs(&logits, f64::from(t), None, None),
            None => warped_probs(&logits, f64::from(t) * wrong_t, None, None),
        };
        assert_follows(name, &counts, &want, &wrong);
    }
}

/// Prompts of different lengths (left padding in a batch).
fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![1, 17, 42, 99, 200, 3, 5, 7],
        vec![1, 250, 128],
        vec![1, 9, 8, 7, 6, 5],
        vec![1, 33],
    ]
}

fn sample_cfg(seed: u64, use_cache: bool) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: 12,
        eos_token_ids: Some(vec![2]),
        pad_token_id: Some(0),
        use_cache,
        ..config(1.0, None, Some(0.95), seed)
    }
}

#[test]
fn sampling_is_deterministic_under_a_seed_batched_and_unbatched() {
    let model = model();
    let prompts = prompts();
    let run = |p: &[Vec<u32>], seed: u64, cache: bool| {
        generate(&model, p, &sample_cfg(seed, cache), &mut |_, _| true).unwrap()
    };
    let a = run(&prompts, 11, true);
    assert_eq!(a.len(), prompts.len());
    assert_eq!(
        a,
        run(&prompts, 11, true),
        "batched: same seed, same completions"
    );
    assert_ne!(
        a,
        run(&prompts, 12, true),
        "batched: another seed, other completions"
    );
    assert_eq!(
        a,
        run(&prompts, 11, false),
        "batched: the KV cache does not change the draws"
    );
    let mut differs = false;
    for p in &prompts {
        let one = std::slice::from_ref(p);
        let x = run(one, 21, true);
        assert_eq!(
            x,
            run(one, 21, true),
            "unbatched: same seed, same completion"
        );
        assert_eq!(
            x,
            run(one, 21, false),
            "unbatched: the KV cache does not change it"
        );
        differs |= x != run(one, 22, true);
    }
    assert!(differs, "unbatched: another seed gives other completions");
    // Sampled completions are not the greedy ones (the sampler is in use).
    let greedy = generate_greedy(&model, &prompts, &sample_cfg(11, true)).unwrap();
    assert_ne!(a, greedy);
}
