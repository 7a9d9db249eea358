//! The LamBERT study (`StudyRun`, `tilpass study lambert`) on the tiny fixtures: settings
//! checked before any work, an interrupted study resumed with its earlier lines unchanged, the
//! table's mean ± std recomputed here from `results.jsonl`, LLM-vs-gold agreement recounted from
//! the annotation, and methods a family cannot take skipped under `methods: "all"`.

use std::path::Path;

use serde_json::{Value, json};
use tilpass::train::runs::RunConfig;
use tilpass::train::runs::study::{LabelSource, Methods, files};
use tilpass::train::{ClassifyMethod, StudyRun};
use tilpass_tests::test_device;

use crate::runs::{with_tokenizer, write_jsonl};

/// Word-level rows (`t<id>` tokens): two gold classes, told apart by their first word.
fn rows(n: usize, offset: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let j = i + offset;
            let (first, label) = if j.is_multiple_of(2) {
                (10, "t5")
            } else {
                (11, "t9")
            };
            json!({"text": format!("t{first} t{} t{}", 30 + j % 50, 90 + j % 7), "label": label})
        })
        .collect()
}

struct Setup {
    work: tempfile::TempDir,
    bert: tempfile::TempDir,
    llm: tempfile::TempDir,
}

fn setup(encoder: &str) -> Setup {
    let work = tempfile::tempdir().unwrap();
    write_jsonl(&work.path().join("train.jsonl"), &rows(16, 0));
    write_jsonl(&work.path().join("test.jsonl"), &rows(8, 100));
    Setup {
        work,
        bert: with_tokenizer(encoder),
        llm: with_tokenizer("models/llama_gqa"),
    }
}

impl Setup {
    fn run(&self, out: &str) -> StudyRun {
        let mut r = StudyRun {
            llm: Some(self.llm.path().into()),
            model: Some(self.bert.path().into()),
            data: self.work.path().join("train.jsonl").display().to_string(),
            test_data: Some(self.work.path().join("test.jsonl")),
            labels: LabelSource::Gold,
            template: "t1 {text} t2".into(),
            methods: Methods::List(vec![
                ClassifyMethod::Lora,
                ClassifyMethod::Prompt,
                ClassifyMethod::Full,
            ]),
            seeds: vec![0, 1],
            num_virtual_tokens: 2,
            out: Some(self.work.path().join(out)),
            ..Default::default()
        };
        r.classify.steps = 3;
        r.classify.batch_size = 8;
        r.classify.lr = 5e-3;
        r.classify.max_length = 16;
        r
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn results(out: &Path) -> Vec<Value> {
    read(&out.join(files::RESULTS))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn study_settings_are_checked_before_any_work() {
    let s = setup("encoders/bert_cls");
    let err = |r: StudyRun| {
        let e = r.run(&test_device(), &mut |_| {}).unwrap_err().to_string();
        assert!(!s.work.path().join("o").exists(), "no output before: {e}");
        e
    };
    let e = tilpass::train::runs::from_json::<StudyRun>(
        json!({"methods": ["lora", "lorra"]}),
        "study.json",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("methods") && e.contains("lorra") && e.contains("p-tuning"),
        "{e}"
    );
    let e = err(StudyRun {
        seeds: vec![],
        ..s.run("o")
    });
    assert!(e.contains("seeds"), "{e}");
    let e = err(StudyRun {
        items: Some(17),
        ..s.run("o")
    });
    assert!(
        e.contains("items") && e.contains("16 training items"),
        "{e}"
    );
    let e = err(StudyRun {
        labels: LabelSource::Llm,
        llm: None,
        ..s.run("o")
    });
    assert!(e.contains("llm"), "{e}");
    let mut r = s.run("o");
    r.classify.steps = 0;
    let e = err(r);
    assert!(e.contains("classify.steps"), "{e}");
    // An explicit method the family cannot take: an error naming it, before any work.
    let ltg = setup("encoders/ltg_bert_mlm");
    let r = StudyRun {
        methods: Methods::List(vec![ClassifyMethod::Lora, ClassifyMethod::Prefix]),
        out: Some(ltg.work.path().join("o")),
        ..ltg.run("o")
    };
    let e = r.run(&test_device(), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("method") && e.contains("prefix"), "{e}");
    assert!(!ltg.work.path().join("o").exists());
}

/// Parses `mean ± std` of a table cell.
fn mean_std_cell(cell: &str) -> (f64, f64) {
    let (m, s) = cell.trim().split_once(" ± ").unwrap();
    (m.parse().unwrap(), s.parse().unwrap())
}

#[test]
fn an_interrupted_study_resumes_and_its_table_is_computed_from_the_results() {
    let s = setup("encoders/bert_cls");
    let out = s.work.path().join("study");
    let first = StudyRun {
        stop_after: Some(1),
        ..s.run("study")
    }
    .run(&test_device(), &mut |_| {})
    .unwrap();
    assert!(!first.complete);
    assert_eq!(first.results.len(), 1);
    let line1 = read(&out.join(files::RESULTS));
    assert_eq!(line1.lines().count(), 1);
    // Another study in the same directory is refused; the same one continues.
    let mut other = s.run("study");
    other.classify.steps = 4;
    let e = other
        .run(&test_device(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("out") && e.contains("fingerprint"), "{e}");
    let mut lines = Vec::new();
    let done = s
        .run("study")
        .run(&test_device(), &mut |l| lines.push(l.to_string()))
        .unwrap();
    assert!(done.complete);
    assert_eq!(done.resumed_from, 1);
    assert!(lines.iter().any(|l| l.contains("resumed")), "{lines:?}");
    let all = read(&out.join(files::RESULTS));
    assert!(all.starts_with(&line1), "earlier line unchanged");
    let rows = results(&out);
    assert_eq!(rows.len(), 6);
    let mut pairs: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["seed"].as_u64().unwrap(),
            )
        })
        .collect();
    pairs.sort();
    pairs.dedup();
    assert_eq!(pairs.len(), 6, "each method x seed once");
    // Every file of the report.
    for f in [
        "results.md",
        "accuracy_vs_params.svg",
        "accuracy_vs_params.png",
        "learning_curves.svg",
        "learning_curves.png",
    ] {
        assert!(std::fs::metadata(out.join(f)).unwrap().len() > 0, "{f}");
    }
    // The table: mean and sample standard deviation of results.jsonl, computed here.
    let table = read(&out.join(files::TABLE));
    for method in ["lora", "prompt", "full"] {
        let of: Vec<&Value> = rows.iter().filter(|r| r["method"] == method).collect();
        assert_eq!(of.len(), 2);
        let stats = |key: &str| {
            let v: Vec<f64> = of.iter().map(|r| r[key].as_f64().unwrap()).collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (v.len() - 1) as f64;
            (mean, var.sqrt())
        };
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {method} |")))
            .unwrap_or_else(|| panic!("{method} in\n{table}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[2], of[0]["trainable_parameters"].to_string());
        for (cell, key) in [(cells[3], "accuracy"), (cells[4], "macro_f1")] {
            let (m, sd) = mean_std_cell(cell);
            let (want_m, want_sd) = stats(key);
            assert!(
                (m - want_m).abs() < 6e-5 && (sd - want_sd).abs() < 6e-5,
                "{method} {key}: {cell} vs {want_m} ± {want_sd}"
            );
        }
        for r in &of {
            let acc = r["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc));
            assert!(r["train_seconds"].as_f64().unwrap() > 0.0);
            assert!(r["predict_items_per_s"].as_f64().unwrap() > 0.0);
        }
    }
    // Trainable parameters: the prompt table + head < LoRA + head < every weight.
    let params = |m: &str| {
        rows.iter().find(|r| r["method"] == m).unwrap()["trainable_parameters"]
            .as_u64()
            .unwrap()
    };
    assert!(params("prompt") < params("lora") && params("lora") < params("full"));
    // Accuracy recounted from a run's saved predictions.
    let preds = read(&out.join("runs/lora-seed0/test_predictions.jsonl"));
    let (mut right, mut n) = (0, 0);
    for l in preds.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        n += 1;
        right += usize::from(v["label"] == v["gold"]);
    }
    let lora0 = rows
        .iter()
        .find(|r| r["method"] == "lora" && r["seed"] == 0)
        .unwrap();
    assert_eq!(n, 8);
    assert!((lora0["accuracy"].as_f64().unwrap() - right as f64 / 8.0).abs() < 1e-12);
    // A finished study run again changes nothing.
    let again = s.run("study").run(&test_device(), &mut |_| {}).unwrap();
    assert_eq!(again.resumed_from, 6);
    assert_eq!(read(&out.join(files::RESULTS)), all);
}

#[test]
fn llm_labels_are_annotated_with_agreement_and_unsupported_methods_are_skipped() {
    let s = setup("encoders/ltg_bert_mlm");
    let out = s.work.path().join("llm");
    let mut run = StudyRun {
        labels: LabelSource::Llm,
        methods: Methods::All,
        seeds: vec![3],
        items: Some(12),
        label_names: vec!["t5".into(), "t9".into(), "t7".into()],
        ..s.run("llm")
    };
    run.classify.steps = 2;
    run.validate().unwrap();
    let o = run.run(&test_device(), &mut |_| {}).unwrap();
    // Agreement recounted from the annotation and the gold labels of the first 12 items.
    let gold: Vec<String> = rows(12, 0)
        .iter()
        .map(|r| r["label"].as_str().unwrap().to_string())
        .collect();
    let annotated: Vec<String> = read(&out.join(files::ANNOTATED))
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["label"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(annotated.len(), 12);
    let agree = gold.iter().zip(&annotated).filter(|(g, a)| g == a).count();
    let a = o.agreement.unwrap();
    assert_eq!(a.items, 12);
    assert!((a.accuracy - agree as f64 / 12.0).abs() < 1e-12);
    let saved: Value = serde_json::from_str(&read(&out.join(files::AGREEMENT))).unwrap();
    assert_eq!(saved["accuracy"].as_f64().unwrap(), a.accuracy);
    // The classifiers trained on the LLM's labels.
    let train: Vec<String> = read(&out.join(files::TRAIN_LABELS))
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["label"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(train, annotated);
    // NorBERT3 / LTG-BERT takes lora, dora and full; the prompt methods are listed as skipped.
    let methods: Vec<&str> = results(&out)
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .map(|m| match m {
            "lora" => "lora",
            "dora" => "dora",
            "full" => "full",
            other => panic!("{other} ran on LTG-BERT"),
        })
        .collect();
    // `full` saves a `…ForSequenceClassification` NorBERT3 directory that predict loads back.
    assert_eq!(methods, ["lora", "dora", "full"]);
    assert!(o.complete);
    let table = read(&out.join(files::TABLE));
    for m in ["prefix", "p-tuning", "prompt"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {m} |")))
            .unwrap();
        assert!(row.contains("skipped") && row.contains("LTG-BERT"), "{row}");
    }
}
