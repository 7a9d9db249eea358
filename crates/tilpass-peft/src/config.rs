//! `adapter_config.json` of HF PEFT's LoRA (`LoraConfig`), read and written field for field.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{PeftError, Result};

/// `target_modules` / `exclude_modules`: a regex that must match a whole module path, a list
/// of names (exact path or last components), or `"all-linear"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Names: a module matches when its path equals one or ends with `"." + name`.
    List(Vec<String>),
    /// A regex (`re.fullmatch` on the path), or `all-linear`.
    Pattern(String),
}

impl TargetModules {
    /// Whether the module at `path` is selected (PEFT's `check_target_module_exists`).
    pub fn matches(&self, path: &str) -> Result<bool> {
        Ok(match self {
            Self::List(names) => names
                .iter()
                .any(|n| path == n || path.ends_with(&format!(".{n}"))),
            Self::Pattern(p) if p == "all-linear" => true,
            Self::Pattern(p) => regex::Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| PeftError::Config(format!("target_modules regex `{p}`: {e}")))?
                .is_match(path),
        })
    }

    /// `all-linear`?
    pub fn is_all_linear(&self) -> bool {
        matches!(self, Self::Pattern(p) if p == "all-linear")
    }
}

/// HF PEFT's `LoraConfig` (the fields tilpass implements; any other field read from a file is
/// kept in `other` and written back unchanged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Always `LORA` here.
    #[serde(default = "lora")]
    pub peft_type: String,
    /// `CAUSAL_LM`, `SEQ_CLS`, `SEQ_2_SEQ_LM`, `TOKEN_CLS`, `FEATURE_EXTRACTION`, ...
    #[serde(default)]
    pub task_type: Option<String>,
    /// Rank of the update.
    #[serde(default = "eight")]
    pub r: usize,
    /// Scale numerator: the update is multiplied by `lora_alpha / r` (`/ √r` with rsLoRA).
    #[serde(default = "eight_f")]
    pub lora_alpha: f64,
    /// Dropout on the adapter's input during training.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Which linear layers get an adapter (default: the model family's, as PEFT).
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    /// Layers never adapted (wins over `target_modules`).
    #[serde(default)]
    pub exclude_modules: Option<TargetModules>,
    /// Only `none` is implemented.
    #[serde(default = "none")]
    pub bias: String,
    /// rsLoRA scale `lora_alpha / √r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA: a learned magnitude per output feature.
    #[serde(default)]
    pub use_dora: bool,
    /// Set for GPT-2's Conv1D layers (weights stored `[in, out]`).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Modules trained and saved whole (e.g. a classifier head).
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Per-module rank overrides (regex keys matched against the end of the path).
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alpha overrides.
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// `true` (A Kaiming-uniform, B zero: no change at start), `"gaussian"` (A ~ N(0, 1/r)),
    /// or `false` (A and B both random, for tests).
    #[serde(default = "yes")]
    pub init_lora_weights: Value,
    /// Where the base model came from.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Written `true` on save, as PEFT does.
    #[serde(default)]
    pub inference_mode: bool,
    /// Every other field of the file.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

fn lora() -> String {
    "LORA".into()
}
fn eight() -> usize {
    8
}
fn eight_f() -> f64 {
    8.0
}
fn none() -> String {
    "none".into()
}
fn yes() -> Value {
    Value::Bool(true)
}

impl Default for LoraConfig {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults deserialize")
    }
}

/// The PEFT types of `adapter_config.json`.
pub const PEFT_TYPES: [&str; 4] = ["LORA", "PREFIX_TUNING", "P_TUNING", "PROMPT_TUNING"];

impl LoraConfig {
    /// A LoRA config with rank `r`, `lora_alpha` and target module names.
    pub fn new(r: usize, lora_alpha: f64, targets: &[&str]) -> Self {
        Self {
            r,
            lora_alpha,
            target_modules: Some(TargetModules::List(
                targets.iter().map(|t| t.to_string()).collect(),
            )),
            ..Default::default()
        }
    }

    /// Checks the values tilpass relies on.
    pub fn validate(&self) -> Result<()> {
        if self.peft_type != "LORA" {
            return Err(if PEFT_TYPES.contains(&self.peft_type.as_str()) {
                PeftError::Config(format!(
                    "peft_type `{}` is not implemented yet (LORA is)",
                    self.peft_type
                ))
            } else {
                PeftError::Config(format!(
                    "unknown peft_type `{}` (PEFT's are {})",
                    self.peft_type,
                    PEFT_TYPES.join(", ")
                ))
            });
        }
        if self.r == 0 || self.rank_pattern.values().any(|r| *r == 0) {
            return Err(PeftError::Config("the rank r must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(PeftError::Config(format!(
                "lora_dropout {} is not in [0, 1)",
                self.lora_dropout
            )));
        }
        if self.bias != "none" {
            return Err(PeftError::Config(format!(
                "bias `{}` is not implemented (none is)",
                self.bias
            )));
        }
        for key in ["lora_bias", "use_qalora", "use_bdlora"] {
            if self
                .other
                .get(key)
                .is_some_and(|v| v.as_bool() == Some(true))
            {
                return Err(PeftError::Config(format!("`{key}` is not implemented")));
            }
        }
        for key in [
            "layers_to_transform",
            "layer_replication",
            "target_parameters",
        ] {
            if self.other.get(key).is_some_and(|v| !v.is_null()) {
                return Err(PeftError::Config(format!("`{key}` is not implemented")));
            }
        }
        Ok(())
    }

    /// Rank and scale of the adapter on the module at `path` (`rank_pattern` / `alpha_pattern`
    /// keys match the end of the path, as PEFT's `get_pattern_key`).
    pub fn rank_and_scale(&self, path: &str) -> (usize, f64) {
        fn hit(key: &str, path: &str) -> bool {
            regex::Regex::new(&format!(r"^(?:.*\.)?(?:{key})$"))
                .map(|re| re.is_match(path))
                .unwrap_or(false)
        }
        let r = self
            .rank_pattern
            .iter()
            .find(|(k, _)| hit(k, path))
            .map(|(_, v)| *v)
            .unwrap_or(self.r);
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(k, _)| hit(k, path))
            .map(|(_, v)| *v)
            .unwrap_or(self.lora_alpha);
        let scale = if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        };
        (r, scale)
    }

    /// Reads `dir/adapter_config.json`.
    pub fn read(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(ADAPTER_CONFIG);
        let v: Value = tilpass_core::read_json(&path)?;
        let peft_type = v["peft_type"].as_str().unwrap_or("LORA").to_string();
        let cfg: Self = serde_json::from_value(v).map_err(|e| PeftError::Mismatch {
            path: path.display().to_string(),
            message: format!("not a LoRA adapter config ({peft_type}): {e}"),
        })?;
        cfg.validate().map_err(|e| PeftError::Mismatch {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// Writes `dir/adapter_config.json` as PEFT does (sorted keys, 2-space indent,
    /// `inference_mode: true`).
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<()> {
        let mut cfg = self.clone();
        cfg.inference_mode = true;
        let mut v = serde_json::to_value(&cfg).map_err(|e| PeftError::Config(e.to_string()))?;
        // PEFT writes `json.dumps(..., indent=2, sort_keys=True)`; the workspace's serde_json
        // keeps insertion order (`preserve_order`), so sort explicitly.
        v.sort_all_objects();
        let text =
            serde_json::to_string_pretty(&v).map_err(|e| PeftError::Config(e.to_string()))?;
        tilpass_core::write_atomic(dir.as_ref().join(ADAPTER_CONFIG), text.as_bytes())?;
        Ok(())
    }
}

/// File name of the adapter config.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// File name of the adapter weights.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// PEFT's default `target_modules` for a `model_type` (`utils/constants.py`).
pub fn default_targets(model_type: &str) -> Option<Vec<&'static str>> {
    Some(match model_type {
        "llama" | "mistral" | "mixtral" | "gemma" | "qwen2" | "opt" | "gptj" | "bart" => {
            vec!["q_proj", "v_proj"]
        }
        "bert" | "roberta" | "xlm-roberta" => vec!["query", "value"],
        "t5" | "mt5" => vec!["q", "v"],
        "gpt2" => vec!["c_attn"],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_written_with_sorted_keys_as_peft_does() {
        let mut c = LoraConfig::new(4, 8.0, &["v_proj", "q_proj"]);
        c.other.insert("zeta_field".into(), Value::Bool(true));
        c.other
            .insert("auto_mapping".into(), serde_json::json!({"b": 1, "a": 2}));
        let dir = tempfile::tempdir().unwrap();
        c.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(ADAPTER_CONFIG)).unwrap();
        let keys: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("  \"")) // top-level keys (2-space indent)
            .map(|l| l.trim().split('"').nth(1).unwrap().to_string())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(keys.len() > 10 && keys.contains(&"zeta_field".to_string()));
        assert!(
            text.find("\"a\"").unwrap() < text.find("\"b\"").unwrap(),
            "nested too"
        );
        // Lists keep their order; only object keys are sorted.
        assert!(text.find("\"v_proj\"").unwrap() < text.find("\"q_proj\"").unwrap());
        assert_eq!(LoraConfig::read(dir.path()).unwrap().r, 4);
    }

    #[test]
    fn scales_follow_peft() {
        let mut c = LoraConfig::new(8, 16.0, &["q_proj"]);
        assert_eq!(
            c.rank_and_scale("model.layers.0.self_attn.q_proj"),
            (8, 2.0)
        );
        c.use_rslora = true;
        let (_, s) = c.rank_and_scale("x");
        assert!((s - 16.0 / 8f64.sqrt()).abs() < 1e-12 && (s - 5.657).abs() < 1e-3);
        c.rank_pattern.insert("v_proj".into(), 4);
        assert_eq!(c.rank_and_scale("model.layers.1.self_attn.v_proj").0, 4);
        assert_eq!(c.rank_and_scale("model.layers.1.self_attn.q_proj").0, 8);
    }

    #[test]
    fn targets_match_as_peft() {
        let list = TargetModules::List(vec!["q".into(), "self_attn.v_proj".into()]);
        assert!(
            list.matches("encoder.block.0.layer.0.SelfAttention.q")
                .unwrap()
        );
        assert!(
            !list
                .matches("encoder.block.0.layer.0.SelfAttention.qq")
                .unwrap()
        );
        assert!(list.matches("model.layers.3.self_attn.v_proj").unwrap());
        let re = TargetModules::Pattern(r".*\.(q|v)$".into());
        assert!(
            re.matches("decoder.block.1.layer.1.EncDecAttention.v")
                .unwrap()
        );
        assert!(
            !re.matches("decoder.block.1.layer.1.EncDecAttention.o")
                .unwrap()
        );
        assert!(TargetModules::Pattern("(".into()).matches("x").is_err());
    }

    #[test]
    fn invalid_configs_are_named() {
        let mut c = LoraConfig::new(0, 8.0, &["q"]);
        assert!(c.validate().unwrap_err().to_string().contains("rank"));
        c.r = 4;
        c.peft_type = "PREFIX_TUNING".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("not implemented")
        );
        c.peft_type = "FOO".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("unknown peft_type")
        );
    }
}
