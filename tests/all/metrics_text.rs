//! Text metrics equal the reference libraries (tests/fixtures/metrics/text_metrics.json, made
//! by tests/fixtures/generate_text_metrics.py from sacrebleu 2.6.0, rouge-score 0.1.2 and
//! pytrec_eval), plus the printed vectors of ../shared/notes/reference-semantics.md §3.

use serde_json::Value;
use tilpass::metrics::{Bleu, BleuConfig, Chrf, ChrfConfig, SacreTokenizer, Smooth};
use tilpass_tests::fixture_json;

/// `hyps`, `refs` (streams; null = no reference) of a case: inline or a named corpus.
fn texts(fx: &Value, case: &Value) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let src = if case.get("hyps").is_some() {
        case
    } else {
        &fx["corpora"][case["corpus"].as_str().unwrap()]
    };
    (
        serde_json::from_value(src["hyps"].clone()).unwrap(),
        serde_json::from_value(src["refs"].clone()).unwrap(),
    )
}

fn bleu_config(c: &Value) -> BleuConfig {
    let mut cfg = BleuConfig::default();
    if let Some(t) = c["tokenize"].as_str() {
        cfg.tokenize = SacreTokenizer::from_name(t).unwrap();
    }
    if let Some(s) = c["smooth_method"].as_str() {
        cfg.smooth_method = Smooth::from_name(s).unwrap();
    }
    cfg.smooth_value = c["smooth_value"].as_f64();
    cfg.lowercase = c["lowercase"].as_bool().unwrap_or(false);
    cfg.effective_order = c["effective_order"].as_bool().unwrap_or(false);
    if let Some(n) = c["max_ngram_order"].as_u64() {
        cfg.max_ngram_order = n as usize;
    }
    cfg
}

#[test]
fn bleu_matches_sacrebleu() {
    let fx = fixture_json("metrics/text_metrics.json");
    let cases = fx["bleu"].as_array().unwrap();
    assert!(cases.len() > 100);
    for case in cases {
        let (hyps, refs) = texts(&fx, case);
        let bleu = Bleu::new(bleu_config(&case["config"]));
        let s = bleu.corpus_score(&hyps, &refs).unwrap();
        let want = case["score"].as_f64().unwrap();
        let what = format!("{} {} {}", case["corpus"], case["level"], case["config"]);
        assert!(
            (s.score - want).abs() < 1e-9,
            "{what}: {} vs {want}",
            s.score
        );
        assert_eq!(
            s.sys_len as u64,
            case["sys_len"].as_u64().unwrap(),
            "{what}"
        );
        assert_eq!(
            s.ref_len as u64,
            case["ref_len"].as_u64().unwrap(),
            "{what}"
        );
        assert!(
            (s.bp - case["bp"].as_f64().unwrap()).abs() < 1e-12,
            "{what}"
        );
        let p: Vec<f64> = serde_json::from_value(case["precisions"].clone()).unwrap();
        for (a, b) in s.precisions.iter().zip(&p) {
            assert!(
                (a - b).abs() < 1e-9,
                "{what}: precisions {:?} vs {p:?}",
                s.precisions
            );
        }
        assert_eq!(s.signature, case["signature"].as_str().unwrap(), "{what}");
    }
}

#[test]
fn chrf_matches_sacrebleu() {
    let fx = fixture_json("metrics/text_metrics.json");
    for case in fx["chrf"].as_array().unwrap() {
        let (hyps, refs) = texts(&fx, case);
        let c = &case["config"];
        let d = ChrfConfig::default();
        let cfg = ChrfConfig {
            char_order: c["char_order"]
                .as_u64()
                .map_or(d.char_order, |v| v as usize),
            word_order: c["word_order"]
                .as_u64()
                .map_or(d.word_order, |v| v as usize),
            beta: c["beta"].as_u64().map_or(d.beta, |v| v as u32),
            lowercase: c["lowercase"].as_bool().unwrap_or(false),
            whitespace: c["whitespace"].as_bool().unwrap_or(false),
            eps_smoothing: c["eps_smoothing"].as_bool().unwrap_or(false),
        };
        let chrf = Chrf::new(cfg);
        let s = chrf.corpus_score(&hyps, &refs).unwrap();
        let want = case["score"].as_f64().unwrap();
        let what = format!("{} {} {c}", case["corpus"], case["level"]);
        assert!(
            (s.score - want).abs() < 1e-9,
            "{what}: {} vs {want}",
            s.score
        );
        assert_eq!(s.name, case["name"].as_str().unwrap(), "{what}");
        if let Some(sig) = case["signature"].as_str() {
            assert_eq!(s.signature, sig, "{what}");
        }
    }
}

/// The printed vectors of reference-semantics.md §3.2 (sacrebleu's README / test suite).
#[test]
fn bleu_and_chrf_reproduce_the_published_vectors() {
    let refs: Vec<Vec<Option<&str>>> = vec![
        vec![
            Some("The dog bit the man."),
            Some("It was not unexpected."),
            Some("The man bit him first."),
        ],
        vec![
            Some("The dog had bit the man."),
            Some("No one was surprised."),
            Some("The man had bitten the dog."),
        ],
    ];
    let hyps = [
        "The dog bit the man.",
        "It wasn't surprising.",
        "The man had just bitten him.",
    ];
    let s = Bleu::default().corpus_score(&hyps, &refs).unwrap();
    assert_eq!(format!("{:.6}", s.score), "48.530827");
    assert_eq!(
        s.to_string(),
        "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)"
    );
    assert_eq!(
        s.signature,
        "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    );
    for (n, want) in [77.65, 60.50, 53.93, 48.53, 46.14, 43.28]
        .iter()
        .enumerate()
    {
        let b = Bleu::new(BleuConfig {
            max_ngram_order: n + 1,
            ..Default::default()
        });
        let got = b.corpus_score(&hyps, &refs).unwrap().score;
        assert_eq!(format!("{got:.2}"), format!("{want:.2}"), "order {}", n + 1);
    }
    let chrf = Chrf::default().corpus_score(&hyps, &refs).unwrap();
    assert_eq!(format!("{:.2}", chrf.score), "59.73");
    // First reference set only: BLEU / chrF / chrF++.
    let one = &refs[..1];
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    close(
        Bleu::default().corpus_score(&hyps, one).unwrap().score,
        45.06750632106114,
    );
    close(
        Chrf::default().corpus_score(&hyps, one).unwrap().score,
        50.043063606582294,
    );
    close(
        Chrf::new(ChrfConfig::chrf_plus_plus())
            .corpus_score(&hyps, one)
            .unwrap()
            .score,
        51.7309698503746,
    );
    close(
        Chrf::new(ChrfConfig::chrf_plus_plus())
            .corpus_score(&hyps, &refs)
            .unwrap()
            .score,
        59.15310444399262,
    );
    let eff = Bleu::new(BleuConfig {
        effective_order: true,
        ..Default::default()
    });
    close(
        eff.sentence_score("The man had just bitten him.", &["The man bit him first."])
            .unwrap()
            .score,
        15.619699684601283,
    );
    // sacrebleu's compute_bleu test (its scores are on a 0-1 scale there).
    let (mut c, mut t) = (vec![9.0, 7.0, 5.0, 3.0], vec![10.0, 8.0, 6.0, 4.0]);
    let (b, _, _) =
        tilpass::metrics::compute_bleu(&mut c, &mut t, 11, 11, Smooth::None, None, false);
    assert!((b / 100.0 - 0.8375922397).abs() < 1e-10, "{b}");
    // floor 0.01, tokenizer none, effective order.
    let floor = Bleu::new(BleuConfig {
        tokenize: SacreTokenizer::None,
        smooth_method: Smooth::Floor,
        smooth_value: Some(0.01),
        effective_order: true,
        ..Default::default()
    });
    for (h, r, want) in [
        ("this is a fest", "this is a test", 0.223606797749979),
        ("test", "a test", 0.3678794411714425),
        ("a little test", "a test", 0.03218297948685433),
    ] {
        let got = floor.sentence_score(h, &[r]).unwrap().score / 100.0;
        assert!((got - want).abs() < 1e-12, "{h}: {got} vs {want}");
    }
    // Sentence BLEU with effective order (sacrebleu's test_sentence_bleu, tolerance 1e-3).
    let r = "producţia de zahăr brut se exprimă în zahăr alb;";
    let h = "Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;";
    let eff = |tokenize, smooth_method, smooth_value, lowercase| {
        Bleu::new(BleuConfig {
            tokenize,
            smooth_method,
            smooth_value,
            lowercase,
            effective_order: true,
            ..Default::default()
        })
        .sentence_score(h, &[r])
        .unwrap()
        .score
    };
    use SacreTokenizer::{Char, Intl, Tok13a};
    let none_tok = SacreTokenizer::None;
    for (got, want) in [
        (eff(Tok13a, Smooth::Exp, None, false), 8.493),
        (eff(Tok13a, Smooth::None, None, false), 0.0),
        (eff(Tok13a, Smooth::Floor, Some(0.1), false), 4.51688),
        (eff(Tok13a, Smooth::Floor, Some(0.5), false), 10.10),
        (eff(Tok13a, Smooth::AddK, Some(1.0), false), 14.882),
        (eff(Tok13a, Smooth::AddK, Some(2.0), false), 21.389),
        (eff(none_tok, Smooth::Exp, None, false), 7.347),
        (eff(Intl, Smooth::Exp, None, false), 8.493),
        (eff(Char, Smooth::Exp, None, false), 40.8759),
        (eff(Char, Smooth::Exp, None, true), 42.0267),
    ] {
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    }
    // chrF effective-order and eps vectors (sacrebleu's test_chrf).
    let c = |h: &str, r: &str, eps| {
        Chrf::new(ChrfConfig {
            eps_smoothing: eps,
            ..Default::default()
        })
        .sentence_score(h, &[r])
        .unwrap()
        .score
    };
    assert!((c("a", "a", false) - 100.0).abs() < 1e-9);
    assert!((c("aa", "ab", false) - 25.0).abs() < 1e-9);
    assert!((c("aa", "ab", true) - 8.3333).abs() < 1e-4);
    assert!((c("a", "a", true) - 16.6667).abs() < 1e-4);
    assert!((c("a b c", "abc", true) - 50.0).abs() < 1e-9);
    // Norwegian (reference-semantics.md, computed with sacrebleu 2.6.0).
    let nh = [
        "Været i Bergen er vått og kaldt i dag.",
        "Jeg liker å gå på ski om vinteren.",
    ];
    let nr = vec![vec![
        Some("Været i Bergen er kaldt og vått i dag."),
        Some("Om vinteren liker jeg å gå på ski."),
    ]];
    let b = Bleu::default().corpus_score(&nh, &nr).unwrap().score;
    assert!((b - 38.33323253707271).abs() < 1e-9, "{b}");
    let p1 = Bleu::new(BleuConfig {
        tokenize: SacreTokenizer::Intl,
        smooth_value: Some(0.0),
        ..Default::default()
    })
    .corpus_score(&nh[..1], &[vec![nr[0][0]]])
    .unwrap()
    .score;
    assert!((p1 - 41.53509237206397).abs() < 1e-9, "{p1}");
    let cp = Chrf::new(ChrfConfig::chrf_plus_plus())
        .corpus_score(&nh, &nr)
        .unwrap()
        .score;
    assert!((cp - 66.51361402001653).abs() < 1e-9, "{cp}");
}

#[test]
fn mismatched_and_empty_inputs_are_errors() {
    let err = Bleu::default()
        .corpus_score(&["a", "b"], &[vec![Some("a")]])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("reference stream 1 has 1 lines, expected 2"),
        "{err}"
    );
    assert!(Chrf::default().corpus_score::<&str>(&["a"], &[]).is_err());
}

#[test]
fn porter_stems_equal_nltk() {
    let fx = fixture_json("metrics/text_metrics.json");
    let cases = fx["porter"].as_object().unwrap();
    assert!(cases.len() > 3000);
    let wrong: Vec<String> = cases
        .iter()
        .filter_map(|(w, s)| {
            let got = tilpass::metrics::porter_stem(w);
            (got != s.as_str().unwrap()).then(|| format!("{w}: {got} vs {s}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} differ, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

#[test]
fn rouge_matches_rouge_score() {
    use tilpass::metrics::{Rouge, RougeTokenizer, RougeType};
    let fx = fixture_json("metrics/text_metrics.json");
    let types: Vec<RougeType> = ["rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum"]
        .iter()
        .map(|t| RougeType::parse(t).unwrap())
        .collect();
    for case in fx["rouge"].as_array().unwrap() {
        let stem = case["use_stemmer"].as_bool().unwrap();
        let r = Rouge::new(&types, RougeTokenizer::Ascii { stem });
        let (t, p) = (
            case["target"].as_str().unwrap(),
            case["prediction"].as_str().unwrap(),
        );
        let got = r.score(t, p);
        for (k, v) in case["scores"].as_object().unwrap() {
            let want: Vec<f64> = serde_json::from_value(v.clone()).unwrap();
            let s = got.scores[k];
            for (a, b) in [s.precision, s.recall, s.fmeasure].iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-12,
                    "{k} stem={stem} {t:?} / {p:?}: {s:?} vs {want:?}"
                );
            }
        }
    }
}

#[test]
fn the_unicode_rouge_tokenizer_keeps_norwegian_letters() {
    use tilpass::metrics::{Rouge, RougeTokenizer, RougeType, StemLanguage};
    let ascii = RougeTokenizer::Ascii { stem: false };
    assert_eq!(
        ascii.tokenize("Blåbærsyltetøy!"),
        ["bl", "b", "rsyltet", "y"]
    );
    let uni = RougeTokenizer::Unicode { stem: None };
    assert_eq!(
        uni.tokenize("Blåbærsyltetøy, nærmeste!"),
        ["blåbærsyltetøy", "nærmeste"]
    );
    // "båtene" and "båten" share the Snowball stem, so ROUGE-1 sees a match only with stemming.
    let plain = Rouge::new(&[RougeType::N(1)], uni).score("båtene", "båten");
    let stemmed = Rouge::new(
        &[RougeType::N(1)],
        RougeTokenizer::Unicode {
            stem: Some(StemLanguage::Norwegian),
        },
    )
    .score("båtene", "båten");
    assert_eq!(plain.scores["rouge1"].fmeasure, 0.0);
    assert_eq!(stemmed.scores["rouge1"].fmeasure, 1.0);
    assert_eq!(stemmed.tokenizer, "unicode+norwegian");
}

#[test]
fn retrieval_metrics_match_pytrec_eval() {
    use tilpass::metrics::{Qrels, Run, evaluate_run};
    let fx = fixture_json("metrics/text_metrics.json");
    for (i, case) in fx["retrieval"].as_array().unwrap().iter().enumerate() {
        let qrels: Qrels = serde_json::from_value(case["qrels"].clone()).unwrap();
        let run: Run = serde_json::from_value(case["run"].clone()).unwrap();
        let cutoffs: Vec<usize> = serde_json::from_value(case["cutoffs"].clone()).unwrap();
        let (per, _) = evaluate_run(&qrels, &run, &cutoffs).unwrap();
        let want = case["per_query"].as_object().unwrap();
        assert_eq!(
            per.len(),
            want.len(),
            "case {i}: the same queries are scored"
        );
        for (q, m) in want {
            let s = &per[q];
            let close = |a: f64, key: &str| {
                let b = m[key].as_f64().unwrap();
                assert!((a - b).abs() < 1e-9, "case {i} {q} {key}: {a} vs {b}");
            };
            close(s.ndcg, "ndcg");
            close(s.map, "map");
            close(s.recip_rank, "recip_rank");
            for k in &cutoffs {
                close(s.ndcg_cut[k], &format!("ndcg_cut_{k}"));
                close(s.recall[k], &format!("recall_{k}"));
                close(s.precision[k], &format!("P_{k}"));
            }
        }
    }
}

#[test]
fn reciprocal_rank_fusion_reproduces_the_published_vector() {
    // reference-semantics.md §3.5: A = [d1, d2, d3], B = [d3, d1, d4], k = 60, 1-based ranks.
    let fused = tilpass::metrics::reciprocal_rank_fusion(
        &[vec!["d1", "d2", "d3"], vec!["d3", "d1", "d4"]],
        60.0,
    );
    let want = [
        ("d1", 0.0325224749),
        ("d3", 0.0322664585),
        ("d2", 0.0161290323),
        ("d4", 0.0158730159),
    ];
    for ((d, s), (wd, ws)) in fused.iter().zip(want) {
        assert_eq!(*d, wd);
        assert!((s - ws).abs() < 1e-10, "{d}: {s}");
    }
}

/// reference-semantics.md §3.4 (SQuAD v1.1 script).
#[test]
fn squad_exact_match_and_f1_reproduce_the_reference_vectors() {
    use tilpass::metrics::{Articles, exact_match, squad_scores, token_f1};
    let en = Articles::English;
    for (pred, gold, em, f1) in [
        ("The Eiffel Tower!", "eiffel tower", 1.0, 1.0),
        ("in Paris, France", "Paris", 0.0, 0.5),
        ("Oslo er hovedstaden", "hovedstaden er Oslo", 0.0, 1.0),
        ("Det er i Bergen", "i Bergen", 0.0, 0.666667),
        ("the cat sat", "a cat sat on the mat", 0.0, 0.666667),
    ] {
        assert_eq!(exact_match(pred, &[gold], &en), em, "{pred}");
        assert!((token_f1(pred, &[gold], &en) - f1).abs() < 1e-6, "{pred}");
    }
    // With Norwegian articles, "Det er i Bergen" loses "det" and scores higher.
    let nb = Articles::Norwegian;
    assert!((token_f1("Det er i Bergen", &["i Bergen"], &nb) - 0.8).abs() < 1e-12);
    let s = squad_scores(
        &["Oslo", "Bergen"],
        &[vec!["oslo"], vec!["Trondheim", "bergen."]],
        &en,
    )
    .unwrap();
    assert_eq!((s.exact_match, s.f1), (100.0, 100.0));
    assert!(squad_scores(&["a"], &[], &en).is_err());
}

/// distinct-n vector of reference-semantics.md §3.4; perplexity and bits per byte by their
/// definitions.
#[test]
fn chat_and_lm_metrics_follow_their_definitions() {
    use tilpass::metrics::{ScoredText, distinct_n, lm_scores, repetition_rate, self_bleu};
    let gens = [
        "jeg liker å gå på ski",
        "jeg liker å gå på tur",
        "han liker å lese bøker",
        "vi drar til fjellet i dag",
    ];
    assert!((distinct_n(&gens, 1) - 16.0 / 23.0).abs() < 1e-12);
    assert!((distinct_n(&gens, 2) - 14.0 / 19.0).abs() < 1e-12);
    assert_eq!(repetition_rate(&["a b a b a b"], 2), 1.0 - 2.0 / 5.0);
    assert_eq!(repetition_rate(&gens, 2), 0.0);
    let shares = tilpass::metrics::language_shares(&[
        "Eg veit ikkje kva eg skal gjere.",
        "Jeg vet ikke hva jeg skal gjøre.",
        " ",
    ]);
    assert_eq!(shares.get("nn"), Some(&0.5));
    assert_eq!(shares.get("nb"), Some(&0.5));
    // Identical responses are maximally self-similar.
    assert!((self_bleu(&["det var en gang", "det var en gang"]).unwrap() - 100.0).abs() < 1e-9);
    let half = 0.5f64.ln();
    let lp = [half, half.mul_add(2.0, 0.0)];
    let s = lm_scores(&[ScoredText {
        logprobs: &lp,
        text: "abcd",
    }])
    .unwrap();
    assert!((s.perplexity - 8f64.sqrt()).abs() < 1e-12);
    assert!((s.bits_per_byte - 0.75).abs() < 1e-12);
    assert!((s.byte_perplexity - 8f64.powf(0.25)).abs() < 1e-12);
    assert!(
        lm_scores(&[ScoredText {
            logprobs: &[f64::NAN],
            text: "x"
        }])
        .is_err()
    );
}

#[test]
fn pairwise_judging_cancels_position_bias_and_controls_for_length() {
    use tilpass::metrics::{
        DEFAULT_JUDGE_TEMPLATE, JudgePair, Verdict, judge_pairs, parse_verdict, win_rate,
    };
    assert_eq!(parse_verdict("A er bedre ... [[A]]"), Some(Verdict::A));
    assert_eq!(
        parse_verdict("først [[A]], men til slutt [[B]]"),
        Some(Verdict::B)
    );
    assert_eq!(parse_verdict("uavgjort [[C]]"), Some(Verdict::Tie));
    assert_eq!(parse_verdict("ingen dom"), None);
    let pairs: Vec<JudgePair> = (0..40)
        .map(|i| JudgePair {
            question: format!("Spørsmål {i}"),
            answer: if i % 4 == 0 {
                "godt svar".into()
            } else {
                "svar".into()
            },
            baseline: "grunnlinje".into(),
        })
        .collect();
    // A judge that always prefers whatever is shown first: every item flips, so all tie.
    let mut first: &mut dyn FnMut(&str) -> Result<String, String> = &mut |_| Ok("[[A]]".into());
    let out = judge_pairs(&pairs, DEFAULT_JUDGE_TEMPLATE, &mut first).unwrap();
    let w = win_rate(&out, &pairs, 0).unwrap();
    assert_eq!((w.wins, w.ties, w.losses), (0, 40, 0));
    assert_eq!(w.win_rate, 50.0);
    assert_eq!(w.consistency, 0.0);
    // A judge that prefers the answer containing "godt": 10 wins, 30 losses, consistent.
    let mut fair = |p: &str| -> Result<String, String> {
        let (a, b) = (p.find("[Svar A]").unwrap(), p.find("[Svar B]").unwrap());
        let (sa, sb) = (&p[a..b], &p[b..]);
        let a_wins = sa.contains("godt") || (!sb.contains("godt") && sa.contains("grunnlinje"));
        Ok(if a_wins { "[[A]]" } else { "[[B]]" }.into())
    };
    let out = judge_pairs(&pairs, DEFAULT_JUDGE_TEMPLATE, &mut fair).unwrap();
    let w = win_rate(&out, &pairs, 0).unwrap();
    assert_eq!((w.wins, w.ties, w.losses), (10, 0, 30));
    assert!((w.win_rate - 25.0).abs() < 1e-12);
    assert!(w.ci95.0 < 25.0 && w.ci95.1 > 25.0, "{:?}", w.ci95);
    // Every win came with a longer answer: at equal length the judge would prefer it less.
    assert!(w.length_controlled < w.win_rate, "{}", w.length_controlled);
    assert!(judge_pairs(&pairs, "no placeholders", &mut fair).is_err());
}

#[test]
fn ter_matches_sacrebleu() {
    use tilpass::metrics::{Ter, TerConfig};
    let fx = fixture_json("metrics/text_metrics.json");
    let cases = fx["ter"].as_array().unwrap();
    assert!(cases.len() >= 16);
    for case in cases {
        let (hyps, refs) = texts(&fx, case);
        let c = &case["config"];
        let ter = Ter::new(TerConfig {
            normalized: c["normalized"].as_bool().unwrap_or(false),
            no_punct: c["no_punct"].as_bool().unwrap_or(false),
            case_sensitive: c["case_sensitive"].as_bool().unwrap_or(false),
        });
        let s = ter.corpus_score(&hyps, &refs).unwrap();
        let what = format!("{} {c}", case["corpus"]);
        let want = case["score"].as_f64().unwrap();
        assert!(
            (s.score - want).abs() < 1e-9,
            "{what}: {} vs {want}",
            s.score
        );
        assert_eq!(
            s.num_edits as u64,
            case["num_edits"].as_u64().unwrap(),
            "{what}"
        );
        assert!(
            (s.ref_length - case["ref_length"].as_f64().unwrap()).abs() < 1e-9,
            "{what}"
        );
        assert_eq!(s.signature, case["signature"].as_str().unwrap(), "{what}");
    }
    // reference-semantics.md §3.2: the dog example, TER 40.0 (case:lc|tok:tercom).
    let dog = cases
        .iter()
        .find(|c| c["corpus"] == "dog" && c["config"] == serde_json::json!({}))
        .unwrap();
    assert_eq!(dog["score"].as_f64().unwrap(), 40.0);
}
