//! The `tilpass` command on a table of hostile inputs: bad and non-finite settings, a used
//! output directory, an output that is the input, a resume that contradicts its run, bad
//! adapters, files with a BOM or invalid UTF-8. Each must exit 2 with a one-line cause naming
//! the file or setting, leave no file behind in the directories involved and leave every input
//! byte-identical. Ctrl-C during a job leaves neither its output nor a temporary file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::tilpass;

/// Every file under `dir` with a hash of its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, u64> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), 0);
                stack.push(p);
            } else {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&p).unwrap().hash(&mut h);
                out.insert(p, h.finish());
            }
        }
    }
    out
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// A copy of a tiny fixture model with a word-level tokenizer (`tN` = id N).
fn model_with_tokenizer(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join("model");
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(fixture_dir(name)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
    let vocab: serde_json::Map<String, Value> = (0..256)
        .map(|i| (format!("t{i}"), Value::from(i)))
        .collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}
    });
    std::fs::write(to.join("tokenizer.json"), tok.to_string()).unwrap();
    to
}

/// Hostile invocations: the arguments, split at spaces (`{w}` is the work directory, `{m}`
/// the model), and a piece of text the one-line cause must contain.
const CASES: &[(&str, &str)] = &[
    // Settings out of range or not finite, named with the accepted range (NaN in a run-config
    // flag is refused by the flag's parser: JSON cannot carry it).
    (
        "train sft --model {m} --data {w}/rows.jsonl --out {w}/new --lr NaN",
        "--lr",
    ),
    (
        "train sft --model {m} --data {w}/rows.jsonl --out {w}/new --lr -1",
        "`lr`",
    ),
    (
        "train sft --model {m} --data {w}/rows.jsonl --out {w}/new --batch-size 0",
        "`batch_size`",
    ),
    (
        "train sft --model {m} --data {w}/rows.jsonl --out {w}/new --grad-accum 0",
        "`grad_accum`",
    ),
    (
        "train sft --model {m} --data {w}/rows.jsonl --out {w}/new --steps 0",
        "`steps`",
    ),
    (
        "train sft --model {m} --data {w}/rows.jsonl --out {w}/new --max-length 0",
        "`max_length`",
    ),
    (
        "train classify --model {m} --data {w}/rows.jsonl --out {w}/new --eval-split 1.5",
        "`eval_split`",
    ),
    (
        "train sft --config {w}/unknown_key.json --model {m} --data {w}/rows.jsonl --out {w}/new",
        "learning_rat",
    ),
    (
        "generate --model {m} --ids 1,2,3 --temperature -1",
        "--temperature",
    ),
    (
        "generate --model {m} --ids 1,2,3 --temperature NaN",
        "--temperature",
    ),
    (
        "generate --model {m} --ids 1,2,3 --temperature 1 --top-p 0",
        "`top_p`",
    ),
    (
        "generate --model {m} --ids 1,2,3 --temperature 1 --top-p 1.5",
        "`top_p`",
    ),
    ("generate --model {m} --ids 1,2,3 --top-k 0", "`top_k`"),
    (
        "generate --model {m} --ids 1,2,3 --repetition-penalty 0",
        "`repetition_penalty`",
    ),
    (
        "generate --model {m} --ids 1,2,3 --max-new-tokens 0",
        "`max_new_tokens`",
    ),
    (
        "data dedup {w}/chat.jsonl --out {w}/clean.jsonl --min-chars 10 --max-chars 5",
        "`min_chars`",
    ),
    // Labels and templates.
    (
        "annotate --model {m} --data {w}/rows.jsonl --labels t5,t5 --out {w}/o.jsonl",
        "`labels`",
    ),
    (
        "annotate --model {m} --data {w}/rows.jsonl --labels t5,t6 --template t1 --out {w}/o.jsonl",
        "`template`",
    ),
    // Outputs: the input itself, a used directory, a resume that contradicts its run.
    (
        "annotate --model {m} --data {w}/rows.jsonl --labels t5,t6 --out {w}/./rows.jsonl",
        "`out`",
    ),
    (
        "predict --model {m} --adapter {w}/used --data {w}/rows.jsonl --out {w}/rows.jsonl",
        "`out`",
    ),
    ("data dedup {w}/chat.jsonl --out {w}/./chat.jsonl", "`out`"),
    (
        "peft merge --model {m} --adapter {w}/wide_adapter --out {m}/",
        "`out`",
    ),
    (
        "tokenizer extend --tokenizer {m} --corpus {w}/rows.jsonl --out {m}",
        "`out`",
    ),
    (
        "train sft --model {m} --data {w}/rows.jsonl --out {w}/used",
        "--overwrite-output-dir",
    ),
    (
        "train classify --model {m} --data {w}/rows.jsonl --out {w}/used",
        "--overwrite-output-dir",
    ),
    (
        "train sft --model {m} --data {w}/rows.jsonl --out {w}/used --resume {w}/used/checkpoint-2 --lr 0.1",
        "`lr`",
    ),
    // Files: invalid UTF-8 and broken rows name the file and line; a bad adapter names its file.
    (
        "annotate --model {m} --data {w}/bad_utf8.jsonl --labels t5,t6 --out {w}/o.jsonl",
        "bad_utf8.jsonl:2",
    ),
    (
        "annotate --model {m} --data {w}/bom_broken.jsonl --labels t5,t6 --out {w}/o.jsonl",
        "bom_broken.jsonl:2",
    ),
    (
        "peft info {w}/wide_adapter --model {m}",
        "layers.7.self_attn.q_proj.lora_A.weight",
    ),
    (
        "logits --model {m} --adapter {w}/wide_adapter --ids 1,2",
        "layers.7.self_attn.q_proj.lora_A.weight",
    ),
    ("logits --model {w}/short --ids 1,2", "model.layers.1."),
    (
        "logits --model {m} --adapter {w}/bad_adapter --ids 1,2",
        "adapter_config.json",
    ),
];

/// The inputs the cases read.
fn write_inputs(w: &Path) {
    let rows: String = (0..4)
        .map(|i| {
            format!(
                "{{\"text\": \"t{} t{}\", \"label\": \"t{}\"}}\n",
                10 + i,
                20 + i,
                5 + i % 2
            )
        })
        .collect();
    std::fs::write(w.join("rows.jsonl"), rows).unwrap();
    std::fs::write(
        w.join("chat.jsonl"),
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Hei\"},{\"role\":\"assistant\",\"content\":\"Hei!\"}]}\n",
    )
    .unwrap();
    std::fs::write(w.join("unknown_key.json"), r#"{"learning_rat": 0.1}"#).unwrap();
    std::fs::write(
        w.join("bad_utf8.jsonl"),
        b"{\"text\": \"t1\"}\n{\"text\": \"t2 \xff\"}\n".as_slice(),
    )
    .unwrap();
    std::fs::write(
        w.join("bom_broken.jsonl"),
        "\u{FEFF}{\"text\": \"t1\"}\n{\"text\": \n",
    )
    .unwrap();
    let used = w.join("used");
    std::fs::create_dir_all(used.join("checkpoint-2")).unwrap();
    std::fs::write(used.join("metrics.jsonl"), "{\"step\":1,\"loss\":1.0}\n").unwrap();
    std::fs::write(used.join("run_config.json"), r#"{"lr": 0.005}"#).unwrap();
    std::fs::write(
        used.join("checkpoint-2/trainer_state.json"),
        r#"{"step": 2, "batch_cursor": 2, "adapter": "default", "run_id": "x"}"#,
    )
    .unwrap();
    // An adapter with a tensor for a layer the model does not have.
    let wide = w.join("wide_adapter");
    copy_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/train/lora_sft/initial"),
        &wide,
    );
    let file = wide.join("adapter_model.safetensors");
    let ck = tilpass::core::Checkpoint::open(&file).unwrap();
    let mut tensors: Vec<(String, tilpass::core::HostTensor)> = ck
        .keys()
        .map(|k| (k.to_string(), ck.read_f32(k).unwrap()))
        .collect();
    let a = tensors
        .iter()
        .find(|(k, _)| k.ends_with("q_proj.lora_A.weight"))
        .unwrap()
        .1
        .clone();
    tensors.push((
        "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight".into(),
        a,
    ));
    drop(ck);
    tilpass::core::save_safetensors(
        &file,
        tensors.iter().map(|(k, t)| (k.as_str(), t)),
        tilpass::core::SaveDtype::F32,
        None,
    )
    .unwrap();
    // A config with fewer layers than its checkpoint.
    let short = w.join("short");
    copy_files(&fixture_dir("llama_gqa"), &short);
    let cfg = std::fs::read_to_string(short.join("config.json"))
        .unwrap()
        .replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
    std::fs::write(short.join("config.json"), cfg).unwrap();
    std::fs::create_dir_all(w.join("bad_adapter")).unwrap();
    std::fs::write(w.join("bad_adapter/adapter_config.json"), "{\"r\": ").unwrap();
}

#[test]
fn hostile_inputs_exit_2_with_a_one_line_cause_and_change_nothing() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let m = model_with_tokenizer(w, "llama_gqa");
    write_inputs(w);
    let (w_s, m_s) = (w.to_str().unwrap(), m.to_str().unwrap());
    let mut failures = Vec::new();
    for (line, cause) in CASES {
        let args: Vec<String> = line
            .split(' ')
            .map(|a| a.replace("{w}", w_s).replace("{m}", m_s))
            .collect();
        let before = snapshot(w);
        let out = tilpass(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let after = snapshot(w);
        let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
        let first = err.lines().next().unwrap_or_default();
        let problems: Vec<String> = [
            (out.status.code() != Some(2)).then(|| format!("exit {:?}", out.status.code())),
            (err.lines().count() != 1).then(|| "not a one-line cause".to_string()),
            (!first.starts_with("error: ") || !first.contains(cause))
                .then(|| format!("cause does not name {cause:?}")),
            (!out.stdout.is_empty()).then(|| "stdout not empty".to_string()),
            (before != after).then(|| {
                let changed: Vec<_> = after
                    .iter()
                    .filter(|(p, h)| before.get(*p) != Some(h))
                    .map(|(p, _)| p.display().to_string())
                    .chain(
                        before
                            .keys()
                            .filter(|p| !after.contains_key(*p))
                            .map(|p| format!("removed {}", p.display())),
                    )
                    .collect();
                format!("files changed: {changed:?}")
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            failures.push(format!("{line}: {problems:?}; stderr: {err}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Ctrl-C while `annotate` writes: exit 130, no output, no temporary file, input unchanged.
#[test]
fn ctrl_c_leaves_no_partial_output_or_temporary_file() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let m = model_with_tokenizer(w, "llama_gqa");
    let rows: String = (0..20_000)
        .map(|i| format!("{{\"text\": \"t{} t{} t{}\"}}\n", i % 200, (i / 7) % 200, 3))
        .collect();
    std::fs::write(w.join("rows.jsonl"), &rows).unwrap();
    let jobs = w.join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let before = snapshot(w);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tilpass"))
        .args([
            "annotate",
            "--model",
            m.to_str().unwrap(),
            "--data",
            w.join("rows.jsonl").to_str().unwrap(),
            "--labels",
            "t5,t6",
            "--batch-size",
            "1",
            "--out",
            jobs.join("out.jsonl").to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the job writes its temporary output, then interrupt it.
    let started = std::time::Instant::now();
    loop {
        let writing = std::fs::read_dir(&jobs).unwrap().next().is_some();
        if writing {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before it was interrupted"
        );
        assert!(started.elapsed().as_secs() < 60, "no output started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.lines()
            .next()
            .unwrap_or_default()
            .contains("interrupted"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&jobs).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(snapshot(w), before, "inputs unchanged");
}

/// A training run that fails mid-way (a file of the user's is where its step-2 checkpoint
/// would go: kept, even with --overwrite-output-dir) puts its cause on the first line of
/// stderr, before the progress it had printed, and prints nothing on stdout.
#[test]
fn a_failed_training_run_puts_its_cause_first() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let m = model_with_tokenizer(w, "llama_gqa");
    let rows: String = (0..8)
        .map(|i| {
            format!(
                "{{\"prompt\": \"t{} t{}\", \"completion\": \" t{} t2\"}}\n",
                10 + i,
                20 + i,
                40 + i
            )
        })
        .collect();
    std::fs::write(w.join("sft.jsonl"), rows).unwrap();
    std::fs::create_dir_all(w.join("run")).unwrap();
    std::fs::write(w.join("run/checkpoint-2"), "mine").unwrap();
    let out = tilpass(&[
        "train",
        "sft",
        "--model",
        m.to_str().unwrap(),
        "--data",
        w.join("sft.jsonl").to_str().unwrap(),
        "--out",
        w.join("run").to_str().unwrap(),
        "--overwrite-output-dir",
        "--save-steps",
        "2",
        "--steps",
        "4",
        "--batch-size",
        "2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: ") && first.contains("checkpoint-2"),
        "the cause first: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(w.join("run/checkpoint-2")).unwrap(),
        "mine"
    );
    assert!(
        err.contains("trainable params"),
        "the run's log follows: {err}"
    );
}

/// Every command that succeeds prints exactly one JSON document on stdout, with no blank line.
#[test]
fn successful_commands_print_one_json_document() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let m = model_with_tokenizer(w, "llama_gqa");
    write_inputs(w);
    let sft: String = (0..4)
        .map(|i| {
            format!(
                "{{\"prompt\": \"t{i} t9\", \"completion\": \" t{} t2\"}}\n",
                40 + i
            )
        })
        .collect();
    std::fs::write(w.join("sft.jsonl"), sft).unwrap();
    let (w_s, m_s) = (w.to_str().unwrap(), m.to_str().unwrap());
    for line in [
        "annotate --model {m} --data {w}/rows.jsonl --labels t5,t6 --out {w}/labelled.jsonl",
        "data stats {w}/chat.jsonl",
        "logits --model {m} --ids 1,2,3",
        "generate --model {m} --ids 1,2,3 --max-new-tokens 2 --json",
        "peft info {w}/wide_adapter",
        "train sft --model {m} --data {w}/sft.jsonl --out {w}/run --steps 1 --batch-size 2",
        "train sft --print-config",
    ] {
        let args: Vec<String> = line
            .split(' ')
            .map(|a| a.replace("{w}", w_s).replace("{m}", m_s))
            .collect();
        let out = tilpass(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{line}: {stderr}");
        let docs: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{line}: stdout is not JSON ({e}): {stdout}"));
        assert_eq!(docs.len(), 1, "{line}: {stdout}");
        assert!(
            !stdout.lines().any(|l| l.trim().is_empty()),
            "{line}: a blank line on stdout: {stdout:?}"
        );
    }
}
