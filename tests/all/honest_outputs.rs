//! Weights must fit the model exactly: an adapter with tensors for modules the model does not
//! have, and a config with fewer layers than its checkpoint, are errors listing a few of the
//! tensors that would be silently unused.

use std::path::Path;

use tilpass::core::{Checkpoint, HostTensor, SaveDtype, save_safetensors};
use tilpass::models::DecoderLm;
use tilpass::peft::PeftModel;
use tilpass_tests::{fixture_path, test_device};

fn copy_dir(src: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Rewrites `file` with its tensors plus `extra` (each a copy of `like`'s values).
fn add_tensors(file: &Path, like: &str, extra: &[&str]) {
    let ck = Checkpoint::open(file).unwrap();
    let mut tensors: Vec<(String, HostTensor)> = ck
        .keys()
        .map(|k| (k.to_string(), ck.read_f32(k).unwrap()))
        .collect();
    let t = ck.read_f32(like).unwrap();
    for k in extra {
        tensors.push((k.to_string(), t.clone()));
    }
    drop(ck);
    save_safetensors(
        file,
        tensors.iter().map(|(k, t)| (k.as_str(), t)),
        SaveDtype::F32,
        None,
    )
    .unwrap();
}

#[test]
fn an_adapter_with_tensors_the_model_cannot_use_is_an_error_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("adapter");
    copy_dir(&fixture_path("train/lora_sft/initial"), &adapter);
    let weights = adapter.join("adapter_model.safetensors");
    let ck = Checkpoint::open(&weights).unwrap();
    let like = ck
        .keys()
        .find(|k| k.ends_with("lora_A.weight"))
        .unwrap()
        .to_string();
    drop(ck);
    let model = || DecoderLm::load(fixture_path("models/llama_gqa"), &test_device()).unwrap();
    // The unchanged adapter loads.
    PeftModel::new(model())
        .load_adapter(&adapter, "default")
        .unwrap();
    let extra = "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight";
    add_tensors(&weights, &like, &[extra]);
    let err = PeftModel::new(model())
        .load_adapter(&adapter, "default")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(extra) && err.contains("adapter_model.safetensors"),
        "{err}"
    );
}

#[test]
fn a_config_with_fewer_layers_than_its_checkpoint_is_an_error_naming_tensors() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_path("models/llama_gqa"), dir.path());
    DecoderLm::load(dir.path(), &test_device()).unwrap();
    let p = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 1.into();
    std::fs::write(&p, cfg.to_string()).unwrap();
    let err = DecoderLm::load(dir.path(), &test_device())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`num_hidden_layers` is 1") && err.contains("model.layers.1."),
        "{err}"
    );
}
