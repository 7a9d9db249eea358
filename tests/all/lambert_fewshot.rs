//! Few-shot annotation (`tilpass annotate --shots/--verbalizer/--calibrate/--gold-field`) on
//! the tiny Llama fixture with a word-level tokenizer (`t0`..`t255` = ids 0..255): every
//! expected value is built here by hand — prompts from the templates, one unpadded forward per
//! (prompt, verbalisation) with its own log-softmax, the calibration formulas, cosine
//! neighbours, agreement counts — and compared with what the run wrote.

use std::path::Path;

use serde_json::{Value, json};
use tilpass::models::{DecoderInput, DecoderLm, SentenceEmbedder};
use tilpass::tokenize::Tokenizer;
use tilpass::train::runs::fewshot::{Calibration, FormChoice, ShotSelection};
use tilpass::train::{AnnotateRun, RunConfig, TrainError};
use tilpass_tests::{max_abs_diff, test_device};

use crate::runs::{with_tokenizer, write_jsonl};

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(words: &str) -> Vec<u32> {
    words
        .split_whitespace()
        .map(|w| w.trim_start_matches('t').parse().unwrap())
        .collect()
}

/// `Σ_t log p(cont_t | prompt, cont_<t)` from one unpadded forward, log-softmax in f64.
fn seq_logprob(model: &DecoderLm, prompt: &[u32], cont: &[u32]) -> f64 {
    let row = [prompt, cont].concat();
    let logits = model
        .forward(
            &DecoderInput::unpadded(std::slice::from_ref(&row)).unwrap(),
            None,
        )
        .unwrap();
    let v: Vec<f32> = logits.into_data().try_into_vec_as::<f32>().unwrap();
    let vocab = v.len() / row.len();
    let mut total = 0.0;
    for (j, &t) in cont.iter().enumerate() {
        let pos = prompt.len() + j - 1;
        let l: Vec<f64> = v[pos * vocab..(pos + 1) * vocab]
            .iter()
            .map(|x| f64::from(*x))
            .collect();
        let max = l.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + l.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        total += l[t as usize] - lse;
    }
    total
}

/// The label distribution of a prompt: per label the log of the summed probabilities of its
/// synonyms, then a softmax over labels.
fn distribution(model: &DecoderLm, prompt: &[u32], synonyms: &[Vec<Vec<u32>>]) -> Vec<f64> {
    let scores: Vec<f64> = synonyms
        .iter()
        .map(|syn| {
            syn.iter()
                .map(|c| seq_logprob(model, prompt, c).exp())
                .sum::<f64>()
                .ln()
        })
        .collect();
    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
    let z: f64 = scores.iter().map(|s| (s - max).exp()).sum();
    scores.iter().map(|s| (s - max).exp() / z).collect()
}

fn argmax(p: &[f64]) -> usize {
    (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b })
}

fn probs_of(row: &Value, key: &str, labels: &[&str]) -> Vec<f64> {
    labels
        .iter()
        .map(|l| row[key][*l].as_f64().unwrap())
        .collect()
}

const LABELS: [&str; 3] = ["sport", "politikk", "kultur"];

struct Setup {
    _work: tempfile::TempDir,
    model: tempfile::TempDir,
    dir: std::path::PathBuf,
    texts: Vec<&'static str>,
    shots: Vec<(&'static str, &'static str)>,
}

fn setup() -> Setup {
    let model = with_tokenizer("models/llama_gqa");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    let texts = vec![
        "t50 t51 t52",
        "t60",
        "t70 t71",
        "t80 t81 t82 t83",
        "t90 t91",
        "t100",
        "t110 t111 t112",
    ];
    let rows: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "body": t}))
        .collect();
    write_jsonl(&dir.join("texts.jsonl"), &rows);
    // Shots in file order; labels: politikk, sport, sport, kultur, politikk.
    let shots = vec![
        ("t20 t21", "politikk"),
        ("t22", "sport"),
        ("t23 t24 t25", "sport"),
        ("t26", "kultur"),
        ("t27 t28", "politikk"),
    ];
    let srows: Vec<Value> = shots
        .iter()
        .map(|(t, l)| json!({"body": t, "label": l}))
        .collect();
    write_jsonl(&dir.join("shots.jsonl"), &srows);
    std::fs::write(
        dir.join("verbalizer.json"),
        json!({
            "sport": {"nb": ["t40"], "nn": ["t41 t42", "t43"]},
            "politikk": {"nb": ["t44"], "nn": ["t45"]},
            "kultur": {"nb": ["t46 t47"], "nn": ["t48", "t49 t47"]}
        })
        .to_string(),
    )
    .unwrap();
    Setup {
        _work: work,
        model,
        dir,
        texts,
        shots,
    }
}

impl Setup {
    fn run(&self, out: &str) -> AnnotateRun {
        AnnotateRun {
            model: Some(self.model.path().into()),
            data: Some(self.dir.join("texts.jsonl")),
            text_field: "body".into(),
            labels: LABELS.iter().map(|s| s.to_string()).collect(),
            template: "t1 {text} t30".into(),
            out: Some(self.dir.join(out)),
            batch_size: 4,
            shots: Some(self.dir.join("shots.jsonl")),
            k: Some(3),
            shot_template: "t2 {text} t3 {label} t4 ".into(),
            verbalizer: Some(self.dir.join("verbalizer.json")),
            form: FormChoice::Nn,
            ..Default::default()
        }
    }

    /// Nynorsk synonyms per label, as token ids (from verbalizer.json above).
    fn nn_synonyms(&self) -> Vec<Vec<Vec<u32>>> {
        vec![
            vec![ids("t41 t42"), ids("t43")],
            vec![ids("t45")],
            vec![ids("t48"), ids("t49 t47")],
        ]
    }

    /// The prompt of `text` with the shots `order` (indices into the shots file), by hand:
    /// `t2 <shot> t3 <first nn word> t4` per shot, then `t1 <text> t30`.
    fn prompt(&self, order: &[usize], text: &str) -> Vec<u32> {
        let first_nn = |l: &str| match l {
            "sport" => "t41 t42",
            "politikk" => "t45",
            _ => "t48",
        };
        let mut p = Vec::new();
        for &i in order {
            let (t, l) = self.shots[i];
            p.extend(ids(&format!("t2 {t} t3 {} t4", first_nn(l))));
        }
        p.extend(ids(&format!("t1 {text} t30")));
        p
    }
}

/// Fixed shots (balanced per label), Nynorsk multi-token verbalisations with synonyms, and
/// contextual / prior calibration equal the hand-built prompts and formulas.
#[test]
fn fixed_shots_verbalizer_and_calibration_match_hand_built_prompts() {
    let s = setup();
    let llm = DecoderLm::load(s.model.path(), &test_device()).unwrap();
    // Balanced round robin over [sport, politikk, kultur]: shot 1 (first sport), shot 0 (first
    // politikk), shot 3 (first kultur).
    let order = [1usize, 0, 3];
    let syn = s.nn_synonyms();
    let p: Vec<Vec<f64>> = s
        .texts
        .iter()
        .map(|t| distribution(&llm, &s.prompt(&order, t), &syn))
        .collect();
    // Contextual: "N/A" and "[MASK]" are unknown words (t0), "" leaves `t1 t30`.
    let cf: Vec<Vec<f64>> = ["t0", "", "t0"]
        .iter()
        .map(|t| distribution(&llm, &s.prompt(&order, t), &syn))
        .collect();
    let p_cf: Vec<f64> = (0..3)
        .map(|l| cf.iter().map(|d| d[l]).sum::<f64>() / 3.0)
        .collect();
    let renorm = |v: Vec<f64>| {
        let z: f64 = v.iter().sum();
        v.into_iter().map(|x| x / z).collect::<Vec<f64>>()
    };
    let contextual: Vec<Vec<f64>> = p
        .iter()
        .map(|r| renorm((0..3).map(|l| r[l] / p_cf[l]).collect()))
        .collect();
    let prior: Vec<f64> = (0..3)
        .map(|l| p.iter().map(|r| r[l]).sum::<f64>() / p.len() as f64)
        .collect();
    let prior_corrected: Vec<Vec<f64>> = p
        .iter()
        .map(|r| renorm((0..3).map(|l| r[l] / prior[l]).collect()))
        .collect();

    for (cal, want) in [
        (Calibration::None, &p),
        (Calibration::Contextual, &contextual),
        (Calibration::Prior, &prior_corrected),
    ] {
        let out = format!("out_{cal:?}.jsonl");
        let run = AnnotateRun {
            calibrate: cal,
            ..s.run(&out)
        };
        let r = run.run_report(&test_device(), &mut |_| {}).unwrap();
        assert_eq!(r.outcome.rows, 7);
        assert_eq!(r.shots_dropped, 0);
        let got = read_jsonl(&s.dir.join(&out));
        for (i, row) in got.iter().enumerate() {
            assert_eq!(row["id"], i);
            assert_eq!(row["form"], "nn");
            assert_eq!(row["shots"], 3);
            let probs = probs_of(row, "probabilities", &LABELS);
            let d = max_abs_diff(&probs, &want[i]);
            assert!(
                d <= 1e-5,
                "{cal:?} row {i}: {probs:?} vs {:?}: {d:e}",
                want[i]
            );
            assert_eq!(row["label"], LABELS[argmax(&want[i])], "{cal:?} row {i}");
            if cal == Calibration::None {
                assert!(row.get("uncalibrated").is_none());
            } else {
                let raw = probs_of(row, "uncalibrated", &LABELS);
                assert!(max_abs_diff(&raw, &p[i]) <= 1e-5, "{cal:?} row {i}");
            }
        }
    }
}

/// `similar` picks, per row, the k shots nearest by cosine of the embedder's vectors (each
/// embedded alone here, cosine computed here), most similar last; a token budget drops the
/// least similar first and the summary counts them.
#[test]
fn similar_shots_are_the_nearest_by_cosine_and_the_budget_drops_the_least_similar() {
    let s = setup();
    let enc = with_tokenizer("encoders/bert_cls");
    let llm = DecoderLm::load(s.model.path(), &test_device()).unwrap();
    let emb = SentenceEmbedder::load(enc.path(), &test_device()).unwrap();
    let etok = Tokenizer::from_dir(enc.path()).unwrap();
    let vec_of = |t: &str| {
        emb.embed_ids(&[etok.encode(t, true).unwrap()], 1)
            .unwrap()
            .remove(0)
    };
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        dot / (n(a) * n(b))
    };
    let shot_vecs: Vec<Vec<f32>> = s.shots.iter().map(|(t, _)| vec_of(t)).collect();
    let syn = s.nn_synonyms();
    let k = 2;
    let nearest: Vec<Vec<usize>> = s
        .texts
        .iter()
        .map(|t| {
            let q = vec_of(t);
            let mut idx: Vec<usize> = (0..s.shots.len()).collect();
            idx.sort_by(|&a, &b| {
                cos(&q, &shot_vecs[b])
                    .partial_cmp(&cos(&q, &shot_vecs[a]))
                    .unwrap()
            });
            idx.truncate(k);
            idx
        })
        .collect();
    // Budget: room for the query and one shot of the row's nearest (a shot costs 3 tokens
    // plus its text and first nn word); the least similar of the two is dropped where both
    // do not fit.
    let budget = 14;
    let mut dropped = 0;
    let run = AnnotateRun {
        k: Some(k),
        shot_selection: ShotSelection::Similar,
        embedder: Some(enc.path().into()),
        max_prompt_tokens: Some(budget),
        ..s.run("similar.jsonl")
    };
    let r = run.run_report(&test_device(), &mut |_| {}).unwrap();
    let got = read_jsonl(&s.dir.join("similar.jsonl"));
    for (i, (row, t)) in got.iter().zip(&s.texts).enumerate() {
        let mut keep = nearest[i].clone();
        while s
            .prompt(&keep.iter().rev().copied().collect::<Vec<_>>(), t)
            .len()
            > budget
            && !keep.is_empty()
        {
            keep.pop();
            dropped += 1;
        }
        let order: Vec<usize> = keep.iter().rev().copied().collect();
        let want = distribution(&llm, &s.prompt(&order, t), &syn);
        let probs = probs_of(row, "probabilities", &LABELS);
        assert!(
            max_abs_diff(&probs, &want) <= 1e-5,
            "row {i}: {probs:?} vs {want:?}"
        );
        assert_eq!(row["shots"], keep.len(), "row {i}");
    }
    assert!(dropped > 0, "the budget should drop some shots");
    assert_eq!(r.shots_dropped, dropped);
}

/// An interrupted few-shot run continued by the same command writes the bytes of an
/// uninterrupted one; other shots (same path, other content) are refused naming the setting.
#[test]
fn fewshot_resume_is_byte_identical() {
    let s = setup();
    let base = AnnotateRun {
        window: 3,
        calibrate: Calibration::Prior,
        ..s.run("whole.jsonl")
    };
    base.run(&test_device(), &mut |_| {}).unwrap();
    let part = AnnotateRun {
        out: Some(s.dir.join("resumed.jsonl")),
        max_rows: Some(4),
        keep_partial: true,
        ..base.clone()
    };
    let o = part.run(&test_device(), &mut |_| {}).unwrap();
    assert!(!o.complete);
    let o = AnnotateRun {
        max_rows: None,
        ..part.clone()
    }
    .run(&test_device(), &mut |_| {})
    .unwrap();
    assert!(o.complete && o.resumed_from == 4);
    assert_eq!(
        std::fs::read(s.dir.join("whole.jsonl")).unwrap(),
        std::fs::read(s.dir.join("resumed.jsonl")).unwrap()
    );
    // Partial output, then the shots file changes: refused.
    let p2 = AnnotateRun {
        out: Some(s.dir.join("p2.jsonl")),
        ..part
    };
    p2.run(&test_device(), &mut |_| {}).unwrap();
    write_jsonl(
        &s.dir.join("shots.jsonl"),
        &[
            json!({"body": "t9", "label": "sport"}),
            json!({"body": "t8", "label": "kultur"}),
            json!({"body": "t7", "label": "politikk"}),
        ],
    );
    let err = p2.run(&test_device(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("shots_sha256"), "{err}");
}

/// Bad few-shot inputs are typed errors naming the file, line or setting, before any output.
#[test]
fn fewshot_bad_inputs_are_typed_errors() {
    let s = setup();
    let out = s.dir.join("bad.jsonl");
    let base = s.run("bad.jsonl");
    let go = |run: AnnotateRun| {
        let e = run.run(&test_device(), &mut |_| {}).unwrap_err();
        assert!(!out.exists() && !s.dir.join("bad.jsonl.partial").exists());
        e
    };
    // k larger than the shots file.
    let e = go(AnnotateRun {
        k: Some(6),
        ..base.clone()
    });
    assert!(
        matches!(&e, TrainError::InvalidSetting { setting, .. } if setting == "k"),
        "{e}"
    );
    assert!(
        e.to_string().contains("shots.jsonl") && e.to_string().contains("5 shots"),
        "{e}"
    );
    // A shot label outside the labels, named by file and line.
    write_jsonl(
        &s.dir.join("bad_shots.jsonl"),
        &[
            json!({"body": "t9", "label": "sport"}),
            json!({"body": "t8", "label": "vær"}),
        ],
    );
    let e = go(AnnotateRun {
        shots: Some(s.dir.join("bad_shots.jsonl")),
        k: None,
        ..base.clone()
    });
    assert!(matches!(e, TrainError::Row { line: 2, .. }), "{e}");
    assert!(
        e.to_string().contains("bad_shots.jsonl:2") && e.to_string().contains("vær"),
        "{e}"
    );
    // A verbalizer without a label, and one with an empty word.
    for (v, needle) in [
        (
            json!({"sport": {"nb": ["t40"], "nn": ["t41"]}, "politikk": {"nb": ["t44"], "nn": ["t45"]}}),
            "\"kultur\" is missing",
        ),
        (
            json!({"sport": {"nb": ["t40"], "nn": [" "]}, "politikk": {"nb": ["t44"], "nn": ["t45"]},
                   "kultur": {"nb": ["t46"], "nn": ["t48"]}}),
            "`nn` word 0 is empty",
        ),
        (
            json!({"sport": {"nb": [], "nn": ["t41"]}, "politikk": {"nb": ["t44"], "nn": ["t45"]},
                   "kultur": {"nb": ["t46"], "nn": ["t48"]}}),
            "at least one `nb`",
        ),
    ] {
        std::fs::write(s.dir.join("bad_verb.json"), v.to_string()).unwrap();
        let e = go(AnnotateRun {
            verbalizer: Some(s.dir.join("bad_verb.json")),
            ..base.clone()
        });
        assert!(
            matches!(&e, TrainError::InvalidSetting { setting, .. } if setting == "verbalizer"),
            "{e}"
        );
        assert!(
            e.to_string().contains("bad_verb.json") && e.to_string().contains(needle),
            "{e}"
        );
    }
    // Settings that contradict each other.
    let e = AnnotateRun {
        shot_selection: ShotSelection::Similar,
        ..base.clone()
    }
    .validate()
    .unwrap_err();
    assert!(
        matches!(&e, TrainError::MissingSetting { setting, .. } if setting == "embedder"),
        "{e}"
    );
    let e = AnnotateRun {
        shots: None,
        ..base.clone()
    }
    .validate()
    .unwrap_err();
    assert!(
        matches!(&e, TrainError::InvalidSetting { setting, .. } if setting == "k"),
        "{e}"
    );
    let e = AnnotateRun {
        shot_template: "t2 {text}".into(),
        ..base.clone()
    }
    .validate()
    .unwrap_err();
    assert!(
        e.to_string().contains("shot_template") && e.to_string().contains("{label}"),
        "{e}"
    );
    for (run, setting) in [
        (
            AnnotateRun {
                shots: None,
                k: None,
                max_prompt_tokens: Some(10),
                ..base.clone()
            },
            "max_prompt_tokens",
        ),
        (
            AnnotateRun {
                verbalizer: None,
                ..base.clone()
            },
            "form",
        ),
    ] {
        let e = run.validate().unwrap_err();
        assert!(
            matches!(&e, TrainError::InvalidSetting { setting: s, .. } if s == setting),
            "{e}"
        );
    }
    // A gold label outside the labels, named by file and line, before the run.
    write_jsonl(
        &s.dir.join("gold_bad.jsonl"),
        &[
            json!({"body": "t5", "gold": "sport"}),
            json!({"body": "t6", "gold": "vær"}),
        ],
    );
    let e = go(AnnotateRun {
        data: Some(s.dir.join("gold_bad.jsonl")),
        gold_field: Some("gold".into()),
        ..base
    });
    assert!(e.to_string().contains("gold_bad.jsonl:2"), "{e}");
}

/// With a gold field (here `label`, which the output overwrites) the report has accuracy,
/// macro-F1, Cohen's kappa and the confusion matrix of the written labels against the input's,
/// counted here by hand; rows without gold are counted and left out.
#[test]
fn gold_agreement_is_counted_from_input_and_output() {
    let s = setup();
    let golds = [
        Some("sport"),
        Some("kultur"),
        None,
        Some("politikk"),
        Some("sport"),
        Some("sport"),
        Some("kultur"),
    ];
    let rows: Vec<Value> = s
        .texts
        .iter()
        .zip(golds)
        .map(|(t, g)| match g {
            Some(g) => json!({"body": t, "label": g}),
            None => json!({"body": t}),
        })
        .collect();
    write_jsonl(&s.dir.join("gold.jsonl"), &rows);
    let run = AnnotateRun {
        data: Some(s.dir.join("gold.jsonl")),
        gold_field: Some("label".into()),
        window: 2,
        shard: Some("1/2".parse().unwrap()),
        calibrate: Calibration::Contextual,
        ..s.run("gold_out.jsonl")
    };
    let r = run.run_report(&test_device(), &mut |_| {}).unwrap();
    let a = r.agreement.expect("agreement");
    let got = read_jsonl(&s.dir.join("gold_out.jsonl"));
    // Shard 1/2 with windows of 2: rows 2, 3, 6.
    let mine = [2usize, 3, 6];
    assert_eq!(got.len(), mine.len());
    let mut confusion = vec![vec![0usize; 3]; 3];
    let mut without = 0;
    for (row, &i) in got.iter().zip(&mine) {
        assert_eq!(row["body"], s.texts[i]);
        let Some(g) = golds[i] else {
            without += 1;
            continue;
        };
        let gi = LABELS.iter().position(|l| *l == g).unwrap();
        let pi = LABELS.iter().position(|l| row["label"] == *l).unwrap();
        confusion[gi][pi] += 1;
    }
    assert_eq!(a.confusion, confusion);
    assert_eq!(a.without_gold, without);
    let n: usize = confusion.iter().flatten().sum();
    assert_eq!(a.rows, n);
    let po = (0..3).map(|c| confusion[c][c]).sum::<usize>() as f64 / n as f64;
    assert!((a.accuracy - po).abs() < 1e-12);
    let pe: f64 = (0..3)
        .map(|c| {
            let row: usize = confusion[c].iter().sum();
            let col: usize = confusion.iter().map(|r| r[c]).sum();
            row as f64 * col as f64 / (n * n) as f64
        })
        .sum();
    match a.kappa {
        Some(k) => assert!((k - (po - pe) / (1.0 - pe)).abs() < 1e-12),
        None => assert!((1.0 - pe).abs() < 1e-12),
    }
    let f1: f64 = (0..3)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let denom =
                confusion[c].iter().sum::<usize>() + confusion.iter().map(|r| r[c]).sum::<usize>();
            if denom == 0 {
                0.0
            } else {
                2.0 * tp / denom as f64
            }
        })
        .sum::<f64>()
        / 3.0;
    assert!((a.macro_f1 - f1).abs() < 1e-12);
}
