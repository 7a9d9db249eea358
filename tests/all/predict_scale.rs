//! `predict` at scale (`tilpass::train::runs::stream`): windows sorted by length, resuming an
//! interrupted output, `--shard i/n` parts merged back. The reference for every output here is
//! the same job run uninterrupted in one process (whose probabilities
//! `runs::classify_then_predict_runs_agree_with_single_forwards` checks against one unpadded
//! forward per row).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tilpass::train::runs::{Shard, Sidecar, merge_shards};
use tilpass::train::{ClassifyRun, PredictRun};
use tilpass_tests::test_device;

use crate::runs::{with_tokenizer, write_jsonl};

/// A word-level BERT fixture with a classifier adapter trained for two steps, and rows of
/// 1..=24 words (lengths mixed, so that sorting inside a window reorders them).
struct Setup {
    _model: tempfile::TempDir,
    work: tempfile::TempDir,
    run: PredictRun,
}

fn setup(rows: usize) -> Setup {
    let model = with_tokenizer("encoders/bert_cls");
    let work = tempfile::tempdir().unwrap();
    let train: Vec<Value> = (0..12)
        .map(|i| json!({"text": format!("t{} t{}", 10 + i % 2, 30 + i), "label": (["nb", "nn"][i % 2])}))
        .collect();
    let train = write_jsonl(&work.path().join("train.jsonl"), &train);
    let o = ClassifyRun {
        model: Some(model.path().into()),
        data: Some(train),
        out: Some(work.path().join("cls")),
        batch_size: 6,
        steps: 2,
        ..Default::default()
    }
    .run(&test_device(), &mut |_| {})
    .unwrap();
    let texts: Vec<Value> = (0..rows)
        .map(|i| {
            let n = 1 + (i * 7) % 24;
            let words: Vec<String> = (0..n)
                .map(|j| format!("t{}", (i * 13 + j * 5) % 250 + 3))
                .collect();
            json!({"id": i, "text": words.join(" ")})
        })
        .collect();
    let mut text: String = texts.iter().map(|r| format!("{r}\n")).collect();
    text.insert(0, '\n'); // a blank line is not a row
    let data = work.path().join("rows.jsonl");
    std::fs::write(&data, text).unwrap();
    let run = PredictRun {
        model: Some(model.path().into()),
        adapter: Some(o.adapter),
        data: Some(data),
        batch_size: 5,
        window: 16,
        ..Default::default()
    };
    Setup {
        _model: model,
        work,
        run,
    }
}

impl Setup {
    fn out(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// The job writing to `name`, with changes.
    fn job(&self, name: &str, f: impl FnOnce(&mut PredictRun)) -> PredictRun {
        let mut r = self.run.clone();
        r.out = Some(self.out(name));
        f(&mut r);
        r
    }
}

fn sidecar(out: &Path) -> Sidecar {
    let p = tilpass::train::runs::stream::sidecar_path(out);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn shards_merged_equal_the_single_process_output_byte_for_byte() {
    let s = setup(150);
    let dev = test_device();
    let single = s.out("single.jsonl");
    let o = s
        .job("single.jsonl", |_| {})
        .run(&dev, &mut |_| {})
        .unwrap();
    assert_eq!((o.rows, o.complete), (150, true));
    let want = std::fs::read(&single).unwrap();
    // Input order, every row once, texts sorted by length inside windows only for batching.
    let ids: Vec<u64> = String::from_utf8(want.clone())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (0..150).collect::<Vec<u64>>());
    let side = sidecar(&single);
    assert_eq!(
        (side.complete, side.rows, side.input_rows),
        (true, Some(150), Some(150))
    );

    let n = 3;
    let mut parts = Vec::new();
    for i in (0..n).rev() {
        let name = format!("part-{i}.jsonl");
        let o = s
            .job(&name, |r| r.shard = Some(Shard { index: i, count: n }))
            .run(&dev, &mut |_| {})
            .unwrap();
        assert!(o.complete);
        parts.push(s.out(&name));
    }
    // 150 rows in windows of 16: windows 0..=9, shard i holds windows i, i+3, ...
    let rows: Vec<usize> = parts.iter().map(|p| sidecar(p).rows.unwrap()).collect();
    assert_eq!(rows, [3 * 16, 3 * 16, 16 + 16 + 16 + 6]);
    let merged = s.out("merged.jsonl");
    let m = merge_shards(&parts, &merged).unwrap();
    assert_eq!((m.rows, m.shards), (150, 3));
    assert!(
        std::fs::read(&merged).unwrap() == want,
        "merged != single-process output"
    );

    // Completeness: a missing or doubled shard, or a shard of other settings, is refused and
    // nothing is written.
    let bad = s.out("bad.jsonl");
    let err = merge_shards(&parts[..2], &bad).unwrap_err().to_string();
    assert!(err.contains("shard 0/3 is missing"), "{err}");
    let twice = [parts[0].clone(), parts[1].clone(), parts[1].clone()];
    let err = merge_shards(&twice, &bad).unwrap_err().to_string();
    assert!(err.contains("given twice"), "{err}");
    let other = s
        .job("other-0.jsonl", |r| {
            r.shard = Some(Shard { index: 2, count: 3 });
            r.max_length = 8;
        })
        .run(&dev, &mut |_| {})
        .unwrap();
    assert!(other.complete);
    let mixed = [parts[0].clone(), parts[1].clone(), s.out("other-0.jsonl")];
    let err = merge_shards(&mixed, &bad).unwrap_err().to_string();
    assert!(err.contains("other settings"), "{err}");
    let unfinished = s
        .job("unfinished.jsonl", |r| {
            r.shard = Some(Shard { index: 2, count: 3 });
            r.max_rows = Some(3);
        })
        .run(&dev, &mut |_| {})
        .unwrap();
    assert!(!unfinished.complete);
    let with_partial = [
        parts[0].clone(),
        parts[1].clone(),
        s.out("unfinished.jsonl"),
    ];
    let err = merge_shards(&with_partial, &bad).unwrap_err().to_string();
    assert!(
        err.contains("sidecar") || err.contains("incomplete"),
        "{err}"
    );
    assert!(!bad.exists());
}

#[test]
fn an_interrupted_predict_resumes_to_the_uninterrupted_output() {
    let s = setup(90);
    let dev = test_device();
    s.job("single.jsonl", |_| {})
        .run(&dev, &mut |_| {})
        .unwrap();
    let want = std::fs::read(s.out("single.jsonl")).unwrap();

    // Stopped after 37 rows (inside the third window), then continued.
    let out = s.out("resumed.jsonl");
    let part = tilpass::train::runs::stream::partial_path(&out);
    let first = s
        .job("resumed.jsonl", |r| r.max_rows = Some(37))
        .run(&dev, &mut |_| {})
        .unwrap();
    assert_eq!((first.rows, first.complete), (37, false));
    assert!(!out.exists() && part.exists());
    assert_eq!(
        std::fs::read(&part).unwrap(),
        want[..nth_line_end(&want, 37)]
    );
    // A kill in the middle of a line: a torn line is cut off and redone.
    let mut torn = want[..nth_line_end(&want, 37)].to_vec();
    torn.extend_from_slice(&want[nth_line_end(&want, 37)..nth_line_end(&want, 38) - 9]);
    std::fs::write(&part, &torn).unwrap();
    // Other settings are refused, naming the setting; the partial output is kept.
    let err = s
        .job("resumed.jsonl", |r| r.batch_size = 4)
        .run(&dev, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("`batch_size` = 5 (now 4)"), "{err}");
    assert_eq!(std::fs::read(&part).unwrap(), torn);
    // The same settings continue it (a second stop on the way).
    let second = s
        .job("resumed.jsonl", |r| r.max_rows = Some(20))
        .run(&dev, &mut |_| {})
        .unwrap();
    assert_eq!(
        (second.resumed_from, second.rows, second.complete),
        (37, 20, false)
    );
    let last = s
        .job("resumed.jsonl", |_| {})
        .run(&dev, &mut |_| {})
        .unwrap();
    assert_eq!(
        (last.resumed_from, last.rows, last.complete),
        (57, 33, true)
    );
    assert!(
        std::fs::read(&out).unwrap() == want,
        "resumed != uninterrupted output"
    );
    assert!(!part.exists());
    // Done is done: the same job again writes nothing.
    let again = s
        .job("resumed.jsonl", |_| {})
        .run(&dev, &mut |_| {})
        .unwrap();
    assert_eq!((again.rows, again.complete), (0, true));
    // Another input under the same partial output is refused.
    let other = s.out("rows2.jsonl");
    write_jsonl(&other, &[json!({"text": "t5"})]);
    s.job("x.jsonl", |r| r.max_rows = Some(5))
        .run(&dev, &mut |_| {})
        .unwrap();
    let err = s
        .job("x.jsonl", |r| r.data = Some(other.clone()))
        .run(&dev, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("another input"), "{err}");
}

/// The byte offset after the `n`-th newline of `bytes`.
fn nth_line_end(bytes: &[u8], n: usize) -> usize {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map(|(i, _)| i + 1)
        .unwrap()
}

#[test]
fn shard_settings_are_checked() {
    for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
    assert_eq!(
        "2/8".parse::<Shard>().unwrap(),
        Shard { index: 2, count: 8 }
    );
    let err = tilpass::train::runs::from_json::<PredictRun>(json!({"shard": "4/4"}), "p.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("i/n"), "{err}");
    let err = PredictRun {
        model: Some("m".into()),
        adapter: Some("a".into()),
        data: Some("d".into()),
        out: Some("o".into()),
        window: 0,
        ..Default::default()
    }
    .run(&test_device(), &mut |_| {})
    .unwrap_err()
    .to_string();
    assert!(err.contains("`window`"), "{err}");
}
