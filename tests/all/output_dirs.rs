//! Output directories keep what they hold: a fresh run refuses a used `out` unless told to
//! replace it (and then no file of the earlier run remains among the new run's), checkpoint
//! rotation removes only the current run's checkpoints, a resume cuts `metrics.jsonl` back to
//! the checkpoint (a torn last line included) and refuses settings that differ from the run
//! it continues, and job outputs never replace their input.

use std::path::Path;

use tilpass::data::DatasetSpec;
use tilpass::train::runs::{self, prepare_output_dir};
use tilpass::train::trainer::truncate_metrics;
use tilpass::train::{AnnotateRun, SftRun, TrainError, train_lm};
use tilpass_tests::{fixture_path, test_device};

use crate::runs::{reference_rows, with_tokenizer, write_jsonl};
use crate::train_parity::{fresh_model, reference_batches, reference_config};

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// A directory that looks like `checkpoint-N` of another run (its own run id).
fn foreign_checkpoint(dir: &Path, name: &str) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("trainer_state.json"),
        r#"{"step": 1, "batch_cursor": 0, "best_eval_loss": null,
            "evals_without_improvement": 0, "adapter": "default", "run_id": "someone-else"}"#,
    )
    .unwrap();
}

#[test]
fn a_used_output_directory_is_refused_unless_resuming_or_overwriting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    prepare_output_dir(&out, false, false, &[]).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    prepare_output_dir(&out, false, false, &[]).unwrap();
    // A run that stopped before writing anything but its config (bad data): starting again
    // there is allowed.
    std::fs::write(out.join(runs::RUN_CONFIG_FILE), "{}").unwrap();
    prepare_output_dir(&out, false, false, &[]).unwrap();
    std::fs::remove_file(out.join(runs::RUN_CONFIG_FILE)).unwrap();
    foreign_checkpoint(&out, "checkpoint-4");
    foreign_checkpoint(&out, "checkpoint-04");
    std::fs::create_dir_all(out.join("adapter")).unwrap();
    std::fs::write(out.join("adapter/adapter_model.safetensors"), "old").unwrap();
    std::fs::write(out.join("metrics.jsonl"), "{\"step\": 1}\n").unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let err = prepare_output_dir(&out, false, false, &[]).unwrap_err();
    assert!(
        matches!(&err, TrainError::InvalidSetting { setting, .. } if setting == "out"),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("--overwrite-output-dir") && msg.contains("adapter"),
        "{msg}"
    );
    assert_eq!(names(&out).len(), 5, "nothing removed");
    prepare_output_dir(&out, false, true, &[]).unwrap();
    assert_eq!(names(&out).len(), 5, "resuming removes nothing");
    // An input inside what would be removed (training on from the earlier adapter): an
    // error, nothing removed.
    let err = prepare_output_dir(&out, true, false, &[out.join("adapter").as_path()]).unwrap_err();
    assert!(err.to_string().contains("overwrite_output_dir"), "{err}");
    assert_eq!(names(&out).len(), 5, "nothing removed");
    prepare_output_dir(&out, true, false, &[out.join("notes.txt").as_path()]).unwrap();
    // The earlier run's outputs are gone; what is not a run's output stays.
    assert_eq!(names(&out), ["checkpoint-04", "notes.txt"]);
}

#[test]
fn metrics_are_cut_back_to_the_checkpoint_and_a_torn_line_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("metrics.jsonl");
    std::fs::write(
        &p,
        "{\"step\":0,\"eval_loss\":2.0}\n{\"step\":1,\"loss\":1.0}\n{\"step\":2,\"loss\":0.9}\n\
         {\"step\":3,\"loss\":0.8}\n{\"step\":4,\"lo",
    )
    .unwrap();
    truncate_metrics(&p, 2).unwrap();
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "{\"step\":0,\"eval_loss\":2.0}\n{\"step\":1,\"loss\":1.0}\n{\"step\":2,\"loss\":0.9}\n"
    );
    truncate_metrics(&dir.path().join("missing.jsonl"), 2).unwrap();
    assert_eq!(names(dir.path()), ["metrics.jsonl"], "no temporary left");
}

/// Rotation (`save_total_limit`) deletes only this run's checkpoints: another run's
/// `checkpoint-0` (older than every checkpoint of this run) and a `checkpoint-007` survive;
/// another run's checkpoint where this run would write one is an error, and it stays intact.
#[test]
fn checkpoint_rotation_removes_only_this_runs_checkpoints() {
    let out = tempfile::tempdir().unwrap();
    foreign_checkpoint(out.path(), "checkpoint-0");
    foreign_checkpoint(out.path(), "checkpoint-007");
    let cfg = tilpass::train::TrainConfig {
        max_steps: 4,
        save_steps: Some(1),
        save_total_limit: 2,
        output_dir: Some(out.path().to_path_buf()),
        ..reference_config()
    };
    let batches = reference_batches();
    let mut m = fresh_model(&fixture_path("train/lora_sft/initial"));
    train_lm(&mut m, "default", &batches, &[], &cfg, None, &mut |_| {}).unwrap();
    assert_eq!(
        names(out.path()),
        [
            "checkpoint-0",
            "checkpoint-007",
            "checkpoint-3",
            "checkpoint-4",
            "metrics.jsonl"
        ]
    );
    let out2 = tempfile::tempdir().unwrap();
    foreign_checkpoint(out2.path(), "checkpoint-2");
    let cfg2 = tilpass::train::TrainConfig {
        output_dir: Some(out2.path().to_path_buf()),
        ..cfg
    };
    let mut m = fresh_model(&fixture_path("train/lora_sft/initial"));
    let err = train_lm(&mut m, "default", &batches, &[], &cfg2, None, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("checkpoint-2"), "{err}");
    assert!(
        std::fs::read_to_string(out2.path().join("checkpoint-2/trainer_state.json"))
            .unwrap()
            .contains("someone-else")
    );
    assert!(
        !names(out2.path()).iter().any(|n| n.contains(".tmp")),
        "{:?}",
        names(out2.path())
    );
}

fn sft_base(model: &Path, work: &Path) -> SftRun {
    let data = write_jsonl(&work.join("train.jsonl"), &reference_rows());
    let mut run = SftRun {
        model: Some(model.into()),
        data: Some(DatasetSpec::File(data)),
        out: Some(work.join("run")),
        batch_size: 4,
        lr: 5e-3,
        steps: 4,
        save_steps: Some(2),
        save_total_limit: 5,
        ..Default::default()
    };
    run.lora.target_modules = Some(["q_proj", "v_proj"].into());
    run
}

fn metric_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// `SftRun`: a second fresh run into the same `out` is refused before any work; with
/// `overwrite_output_dir` it replaces the first (no old checkpoint, no old metrics line); a
/// resume cuts the log back to its checkpoint and logs each later step once; a resume with a
/// different learning rate is refused naming `lr`.
#[test]
fn sft_runs_refuse_replace_and_resume_an_output_directory() {
    let model = with_tokenizer("models/llama_gqa");
    let work = tempfile::tempdir().unwrap();
    let run = sft_base(model.path(), work.path());
    let out = run.out.clone().unwrap();
    run.run(&test_device(), &mut |_| {}).unwrap();
    assert_eq!(metric_steps(&out), [1, 2, 3, 4]);
    let before = names(&out);
    let err = run.run(&test_device(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("--overwrite-output-dir"), "{err}");
    assert_eq!(names(&out), before);
    assert_eq!(metric_steps(&out), [1, 2, 3, 4], "nothing appended");

    // Resume from step 2 after a kill that tore the last line.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(out.join("metrics.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"step\": 5, \"lo").unwrap();
    drop(f);
    let resumed = SftRun {
        resume: Some(out.join("checkpoint-2")),
        ..run.clone()
    };
    let o = resumed.run(&test_device(), &mut |_| {}).unwrap();
    assert_eq!(o.summary.steps, 4);
    assert_eq!(
        metric_steps(&out),
        [1, 2, 3, 4],
        "each step once, no torn line"
    );
    let conflicting = SftRun {
        lr: 1e-3,
        ..resumed.clone()
    };
    let err = conflicting.run(&test_device(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, TrainError::InvalidSetting { setting, .. } if setting == "lr"),
        "{err}"
    );

    // Overwrite with a shorter run: only its own checkpoint and metrics remain.
    let again = SftRun {
        overwrite_output_dir: true,
        steps: 2,
        ..run.clone()
    };
    again.run(&test_device(), &mut |_| {}).unwrap();
    assert_eq!(metric_steps(&out), [1, 2]);
    assert_eq!(
        names(&out),
        [
            "adapter",
            "checkpoint-2",
            "metrics.jsonl",
            "run_config.json"
        ]
    );
    let back: SftRun = runs::load(out.join("run_config.json")).unwrap();
    assert_eq!(back, again);
}

/// An annotation job whose output is its input is refused before any work, the input
/// unchanged.
#[test]
fn a_job_output_never_replaces_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rows.jsonl");
    std::fs::write(&data, "{\"text\": \"hei\"}\n").unwrap();
    let run = AnnotateRun {
        model: Some(dir.path().join("no-model")),
        data: Some(data.clone()),
        out: Some(dir.path().join(".").join("rows.jsonl")),
        labels: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    let err = run.run(&test_device(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, TrainError::InvalidSetting { setting, .. } if setting == "out"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&data).unwrap(),
        "{\"text\": \"hei\"}\n"
    );
    assert_eq!(names(dir.path()), ["rows.jsonl"]);
}

/// A fresh run that fails before it trained (here: the model has no tokenizer) takes its start
/// back: no `out` directory is left where there was none, and a directory given empty stays
/// empty.
#[test]
fn a_run_that_fails_before_training_leaves_no_output() {
    let work = tempfile::tempdir().unwrap();
    let no_tokenizer = fixture_path("models/llama_gqa");
    let run = sft_base(&no_tokenizer, work.path());
    let out = work.path().join("run");
    let err = run.run(&test_device(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("tokenizer"), "{err}");
    assert!(!out.exists(), "{:?}", names(work.path()));
    std::fs::create_dir(&out).unwrap();
    run.run(&test_device(), &mut |_| {}).unwrap_err();
    assert!(names(&out).is_empty(), "{:?}", names(&out));
}
