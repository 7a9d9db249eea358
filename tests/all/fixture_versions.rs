//! Every fixture says which reference libraries made it, and they are the pinned ones.
//!
//! The convention (all generators under tests/fixtures/ follow it): each JSON file a generator
//! writes has a top-level `"versions"` object (PyPI distribution name, spelled as in the pin
//! file, to `importlib.metadata.version(name)`) and `"requirements"`, the pin file under
//! tests/fixtures/ it must match (`requirements.txt`, or `requirements-transformers4.txt` for
//! the transformers-4 fixtures). This test fails when
//! - a recorded version differs from its pin (a local build suffix such as `+cu132` on either
//!   side is ignored), a recorded library is not pinned there, or the pin file does not exist;
//! - a JSON file that is not a model/tokenizer/adapter file as transformers or PEFT write them
//!   (`config.json`, `tokenizer.json`, `adapter_config.json`, ...) has no version record;
//! - a directory holding `.safetensors` files has no JSON with a version record in it (or, for a
//!   sub-directory of a fixture such as train/lora_sft/final, in its parent): the generator's
//!   record of how the weights and expectations were made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Files transformers / PEFT / tokenizers / sentence-transformers write as part of a model,
/// adapter or tokenizer directory: not fixture records.
const MODEL_FILES: [&str; 14] = [
    "config.json",
    "generation_config.json",
    "adapter_config.json",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "added_tokens.json",
    "chat_template.json",
    "preprocessor_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
];

/// PEP 503 normalisation: `Jinja2` = `jinja2`, `rouge_score` = `rouge-score`.
fn normalise(name: &str) -> String {
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The public part of a version (`2.15.0+cu132` -> `2.15.0`).
fn public(version: &str) -> &str {
    version.split('+').next().unwrap_or(version)
}

/// `name==version` pins of a requirements file, by normalised name.
pub fn parse_pins(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut pins = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (name, version) = line
            .split_once("==")
            .ok_or_else(|| format!("line {}: `{line}` is not `name==version`", i + 1))?;
        let name = name.split('[').next().unwrap_or(name).trim();
        if pins
            .insert(normalise(name), version.trim().to_string())
            .is_some()
        {
            return Err(format!("line {}: `{name}` is pinned twice", i + 1));
        }
    }
    Ok(pins)
}

/// Problems with one JSON record against the pin files (empty when it conforms).
pub fn check_record(
    record: &Value,
    pin_files: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(versions) = record.get("versions").and_then(Value::as_object) else {
        return vec!["no top-level \"versions\" object".into()];
    };
    if versions.is_empty() {
        problems.push("\"versions\" is empty".into());
    }
    let Some(file) = record.get("requirements").and_then(Value::as_str) else {
        problems.push("no \"requirements\" naming the pin file".into());
        return problems;
    };
    let Some(pins) = pin_files.get(file) else {
        problems.push(format!(
            "\"requirements\": `{file}` is not a pin file under tests/fixtures"
        ));
        return problems;
    };
    for (name, version) in versions {
        let Some(version) = version.as_str() else {
            problems.push(format!("version of `{name}` is not a string"));
            continue;
        };
        match pins.get(&normalise(name)) {
            None => problems.push(format!("`{name}` is not pinned in {file}")),
            Some(pin) if public(pin) != public(version) => problems.push(format!(
                "`{name}` {version} was used, {file} pins {pin}: regenerate with the pinned \
                 environment"
            )),
            Some(_) => {}
        }
    }
    problems
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn has_record(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| {
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.extension().is_some_and(|x| x == "json")
                && !MODEL_FILES.contains(&name)
                && std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .is_some_and(|v| v.get("versions").is_some())
        })
    })
}

#[test]
fn fixtures_record_the_pinned_versions() {
    let root = tilpass_tests::fixture_path("");
    let rel = |p: &Path| {
        p.strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/")
    };
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut pin_files = BTreeMap::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if f.parent() == Some(root.as_path())
            && name.starts_with("requirements")
            && name.ends_with(".txt")
        {
            let pins = parse_pins(&std::fs::read_to_string(f).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            pin_files.insert(name, pins);
        }
    }
    assert!(
        pin_files.contains_key("requirements.txt"),
        "no requirements.txt"
    );
    let mut problems = Vec::new();
    let mut records = 0;
    let mut weight_dirs = std::collections::BTreeSet::new();
    for f in &files {
        let r = rel(f);
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".safetensors") {
            weight_dirs.insert(f.parent().unwrap().to_path_buf());
        }
        if !name.ends_with(".json") || MODEL_FILES.contains(&name.as_str()) {
            continue;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap())
            .unwrap_or_else(|e| panic!("{r}: {e}"));
        if v.get("versions").is_none() {
            problems.push(format!("{r}: no \"versions\" record"));
            continue;
        }
        records += 1;
        problems.extend(
            check_record(&v, &pin_files)
                .into_iter()
                .map(|p| format!("{r}: {p}")),
        );
    }
    for d in weight_dirs {
        let r = rel(&d);
        // A parent's record counts for the sub-directories of a fixture (train/lora_sft/final),
        // not for the fixtures of an area (encoders/t5_v1_0 under encoders/).
        let parent_counts = r.matches('/').count() >= 2;
        let recorded = has_record(&d) || (parent_counts && d.parent().is_some_and(has_record));
        if !recorded {
            problems.push(format!(
                "{r}/: weights without a version record (a JSON with \"versions\" here or in the parent)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(records >= 15, "only {records} version records found");
}

#[test]
fn version_records_are_checked_against_the_pins() {
    let pins = parse_pins("# c\ntorch==2.15.0\nJinja2==3.1.6  # x\nrouge_score==0.1.2\n").unwrap();
    let files = BTreeMap::from([("requirements.txt".to_string(), pins)]);
    let ok = serde_json::json!({
        "versions": {"torch": "2.15.0+cu132", "jinja2": "3.1.6", "rouge-score": "0.1.2"},
        "requirements": "requirements.txt"
    });
    assert!(check_record(&ok, &files).is_empty());
    let stale = serde_json::json!({
        "versions": {"torch": "2.14.0"}, "requirements": "requirements.txt"
    });
    assert!(check_record(&stale, &files)[0].contains("2.14.0"));
    let unpinned = serde_json::json!({
        "versions": {"numpy": "2.4.6"}, "requirements": "requirements.txt"
    });
    assert!(check_record(&unpinned, &files)[0].contains("not pinned"));
    let other_file = serde_json::json!({
        "versions": {"torch": "2.15.0"}, "requirements": "requirements-models.txt"
    });
    assert!(check_record(&other_file, &files)[0].contains("not a pin file"));
    assert!(!check_record(&serde_json::json!({"torch": "2.15.0"}), &files).is_empty());
    assert!(parse_pins("torch>=2").is_err());
    assert!(parse_pins("torch==1\ntorch==2").is_err());
}
