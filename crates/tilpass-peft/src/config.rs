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

    /// A builder starting from PEFT's defaults (`r` 8, `lora_alpha` 8, no dropout, the model
    /// family's `target_modules`, ...); [`LoraConfigBuilder::build`] validates.
    ///
    /// ```
    /// use tilpass_peft::LoraConfig;
    /// let cfg = LoraConfig::builder()
    ///     .r(16)
    ///     .lora_alpha(32.0)
    ///     .target_modules(["q_proj", "v_proj"])
    ///     .use_dora(true)
    ///     .rank_pattern("v_proj", 4)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(cfg.rank_and_scale("model.layers.0.self_attn.v_proj").0, 4);
    /// assert!(LoraConfig::builder().lora_dropout(1.5).build().is_err());
    /// ```
    pub fn builder() -> LoraConfigBuilder {
        LoraConfigBuilder {
            cfg: Self::default(),
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
        if let Some((key, a)) = std::iter::once(("lora_alpha", &self.lora_alpha))
            .chain(self.alpha_pattern.iter().map(|(k, a)| (k.as_str(), a)))
            .find(|(_, a)| !a.is_finite())
        {
            return Err(PeftError::Config(format!(
                "lora_alpha {a} (of `{key}`) is not a finite number"
            )));
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

/// Builds a [`LoraConfig`] field by field (PEFT's field names); see [`LoraConfig::builder`].
/// Fields not set keep PEFT's defaults, so the written `adapter_config.json` is PEFT's.
#[derive(Debug, Clone)]
#[must_use]
pub struct LoraConfigBuilder {
    cfg: LoraConfig,
}

impl LoraConfigBuilder {
    /// Rank of the update.
    pub fn r(mut self, r: usize) -> Self {
        self.cfg.r = r;
        self
    }

    /// Scale numerator (`lora_alpha / r`, or `/ √r` with rsLoRA).
    pub fn lora_alpha(mut self, alpha: f64) -> Self {
        self.cfg.lora_alpha = alpha;
        self
    }

    /// Dropout on the adapter's input while training, in `[0, 1)`.
    pub fn lora_dropout(mut self, p: f64) -> Self {
        self.cfg.lora_dropout = p;
        self
    }

    /// The layers to adapt: names (`["q_proj", "v_proj"]`), a regex, or `"all-linear"` (a
    /// string is a pattern, a list names modules).
    pub fn target_modules(mut self, targets: impl Into<TargetModules>) -> Self {
        self.cfg.target_modules = Some(targets.into());
        self
    }

    /// Layers never adapted (wins over `target_modules`).
    pub fn exclude_modules(mut self, modules: impl Into<TargetModules>) -> Self {
        self.cfg.exclude_modules = Some(modules.into());
        self
    }

    /// rsLoRA: scale `lora_alpha / √r`.
    pub fn use_rslora(mut self, on: bool) -> Self {
        self.cfg.use_rslora = on;
        self
    }

    /// DoRA: a learned magnitude per output feature.
    pub fn use_dora(mut self, on: bool) -> Self {
        self.cfg.use_dora = on;
        self
    }

    /// Modules trained and saved whole (e.g. a classifier head).
    pub fn modules_to_save<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.cfg.modules_to_save = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// A rank for the modules whose path ends with `key` (a regex).
    pub fn rank_pattern(mut self, key: impl Into<String>, r: usize) -> Self {
        self.cfg.rank_pattern.insert(key.into(), r);
        self
    }

    /// An alpha for the modules whose path ends with `key` (a regex).
    pub fn alpha_pattern(mut self, key: impl Into<String>, alpha: f64) -> Self {
        self.cfg.alpha_pattern.insert(key.into(), alpha);
        self
    }

    /// `true` (PEFT's default), `"gaussian"`, or `false` (both matrices random).
    pub fn init_lora_weights(mut self, init: impl Into<Value>) -> Self {
        self.cfg.init_lora_weights = init.into();
        self
    }

    /// GPT-2's Conv1D layout (set automatically for GPT-2 when the adapter is added).
    pub fn fan_in_fan_out(mut self, on: bool) -> Self {
        self.cfg.fan_in_fan_out = on;
        self
    }

    /// PEFT's `task_type` (`CAUSAL_LM`, `SEQ_CLS`, ...).
    pub fn task_type(mut self, task: impl Into<String>) -> Self {
        self.cfg.task_type = Some(task.into());
        self
    }

    /// Where the base model came from (written into `adapter_config.json`).
    pub fn base_model_name_or_path(mut self, path: impl Into<String>) -> Self {
        self.cfg.base_model_name_or_path = Some(path.into());
        self
    }

    /// The config, after [`LoraConfig::validate`].
    pub fn build(self) -> Result<LoraConfig> {
        self.cfg.validate()?;
        Ok(self.cfg)
    }
}

impl From<Vec<String>> for TargetModules {
    fn from(names: Vec<String>) -> Self {
        Self::List(names)
    }
}

impl From<&[&str]> for TargetModules {
    fn from(names: &[&str]) -> Self {
        Self::List(names.iter().map(|n| n.to_string()).collect())
    }
}

impl<const N: usize> From<[&str; N]> for TargetModules {
    fn from(names: [&str; N]) -> Self {
        Self::List(names.iter().map(|n| n.to_string()).collect())
    }
}

impl From<&str> for TargetModules {
    /// A regex, or `all-linear`.
    fn from(pattern: &str) -> Self {
        Self::Pattern(pattern.to_string())
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

/// The `peft_type` of the adapter in `dir` (its `adapter_config.json`; PEFT's default `LORA`
/// when the field is absent).
pub fn adapter_peft_type(dir: impl AsRef<Path>) -> Result<String> {
    let cfg: Value = tilpass_core::read_json(dir.as_ref().join(ADAPTER_CONFIG))?;
    Ok(cfg["peft_type"].as_str().unwrap_or("LORA").to_string())
}

/// Whether the adapter in `dir` is a prompt-learning adapter (prefix tuning, prompt tuning or
/// P-tuning: [`crate::PromptAdapter`]) rather than LoRA / DoRA ([`crate::PeftModel`]).
pub fn is_prompt_adapter(dir: impl AsRef<Path>) -> Result<bool> {
    Ok(matches!(
        adapter_peft_type(dir)?.as_str(),
        "PREFIX_TUNING" | "PROMPT_TUNING" | "P_TUNING"
    ))
}

/// What a sequence classifier of one model family adapts when it learns a new task with LoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassifierDefaults {
    /// The LoRA `target_modules` (BERT: PEFT's own defaults).
    pub target_modules: &'static [&'static str],
    /// The classifier head's module, trained whole (`modules_to_save`).
    pub head: &'static str,
}

/// The classifier defaults of an encoder family by `model_type`: BERT adapts `query` and
/// `value` (PEFT's defaults) and trains `classifier`; LTG-BERT / NorBERT3 (`ltgbert`, no PEFT
/// default) adapts its fused `in_proj_qk` and `in_proj_v` and trains `head`.
pub fn classifier_defaults(model_type: &str) -> Option<ClassifierDefaults> {
    Some(match model_type {
        "bert" | "roberta" | "xlm-roberta" => ClassifierDefaults {
            target_modules: &["query", "value"],
            head: "classifier",
        },
        "ltgbert" | "norbert" => ClassifierDefaults {
            target_modules: &["in_proj_qk", "in_proj_v"],
            head: "head",
        },
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

    #[test]
    fn the_builder_keeps_peft_defaults_and_checks_values() {
        let built = LoraConfig::builder()
            .r(4)
            .lora_alpha(8.0)
            .target_modules(["v_proj", "q_proj"])
            .build()
            .unwrap();
        assert_eq!(built, LoraConfig::new(4, 8.0, &["v_proj", "q_proj"]));
        let none = LoraConfig::builder()
            .r(16)
            .lora_alpha(32.0)
            .build()
            .unwrap();
        assert_eq!(none.target_modules, None, "the family's defaults");
        assert_eq!(
            (none.lora_dropout, none.use_dora, none.bias.as_str()),
            (0.0, false, "none")
        );
        for bad in [
            LoraConfig::builder().r(0),
            LoraConfig::builder().lora_alpha(f64::NAN),
            LoraConfig::builder().alpha_pattern("q", f64::INFINITY),
            LoraConfig::builder().lora_dropout(1.0),
            LoraConfig::builder().rank_pattern("q", 0),
        ] {
            assert!(bad.build().is_err());
        }
    }

    #[test]
    fn prompt_adapters_are_told_from_lora_by_peft_type() {
        let dir = tempfile::tempdir().unwrap();
        let write = |v: &str| std::fs::write(dir.path().join(ADAPTER_CONFIG), v).unwrap();
        write(r#"{"peft_type": "PREFIX_TUNING"}"#);
        assert!(is_prompt_adapter(dir.path()).unwrap());
        write(r#"{"r": 4}"#);
        assert!(!is_prompt_adapter(dir.path()).unwrap());
        assert_eq!(adapter_peft_type(dir.path()).unwrap(), "LORA");
        assert!(is_prompt_adapter(dir.path().join("missing")).is_err());
        assert_eq!(classifier_defaults("ltgbert").unwrap().head, "head");
        assert_eq!(
            classifier_defaults("bert").unwrap().target_modules,
            default_targets("bert").unwrap().as_slice()
        );
    }
}
