//! Jobs as library types: each job of the `tilpass` command — [`SftRun`] (`train sft`),
//! [`ClassifyRun`] (`train classify`), [`AnnotateRun`] (`annotate`), [`PredictRun`]
//! (`predict`), [`StudyRun`] (`study lambert`) — is a serde run config with one set of defaults (its `Default`) and a
//! `run(&self, device, progress)` that the CLI, the examples and your program share.
//!
//! A run config is read from JSON with [`RunConfig`]'s rules: unknown keys are errors naming
//! the key; settings given on the command line are merged over the file's
//! ([`resolve`]: flags win), a flag being the kebab-case form of the key (`--eval-steps` =
//! `eval_steps`). `run()` checks every setting first ([`RunConfig::validate`]) and writes the
//! resolved config to [`RUN_CONFIG_FILE`] in its output directory, so that file given back
//! as `--config` repeats the run.
//!
//! ```no_run
//! use tilpass_train::runs::{SftRun, RunConfig};
//! # fn demo(device: &burn::tensor::Device) -> Result<(), Box<dyn std::error::Error>> {
//! let mut run = SftRun {
//!     model: Some("normistral".into()),
//!     data: Some("builtin:norsk-chat".parse()?),
//!     out: Some("run".into()),
//!     steps: 300,
//!     ..Default::default()
//! };
//! run.lora.use_dora = true;
//! let outcome = run.run(device, &mut |_event| {})?;
//! println!("loss {} -> {}", outcome.summary.first_loss, outcome.summary.last_loss);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Result, TrainError};

pub mod annotate;
pub mod append;
pub mod classify;
pub mod fewshot;
mod jsonl;
pub mod merge;
pub mod perplexity;
pub mod predict;
pub mod protect;
pub mod rouge_pool;
pub mod self_instruct;
pub mod sft;
pub mod sft_prompt;
pub mod stream;
pub mod study;
pub mod textgen;
pub mod translate;

pub use annotate::{AnnotateOutcome, AnnotateReport, AnnotateRun};
pub use classify::{ClassifyOutcome, ClassifyRun};
pub use merge::{MergeOutcome, merge_shards};
pub use perplexity::{TextPerplexity, text_perplexity};
pub use predict::{PredictOutcome, PredictRun, Predictor};
pub use self_instruct::{SelfInstructOutcome, SelfInstructRun, TaskFormat};
pub use sft::{Seq2SeqSftOutcome, SftOutcome, SftRun};
pub use sft_prompt::{PeftMethod, PromptSftOutcome};
pub use stream::{Shard, Sidecar, StreamOutcome, remove_partial_outputs};
pub use study::{StudyOutcome, StudyResult, StudyRun};
pub use textgen::{PromptFormat, TextModel};
pub use translate::{TranslateOutcome, TranslateRun, WrittenForm};

/// The file a run writes its resolved config to, in its output directory.
pub const RUN_CONFIG_FILE: &str = "run_config.json";

/// The LoRA settings that a run config also takes at its top level (the `tilpass train`
/// flags): `(key, field of the nested lora config)`. `lora_r` is `lora.r`; the others keep
/// PEFT's names.
pub const LORA_SHORTHANDS: &[(&str, &str)] = &[
    ("lora_r", "r"),
    ("lora_alpha", "lora_alpha"),
    ("lora_dropout", "lora_dropout"),
    ("target_modules", "target_modules"),
    ("exclude_modules", "exclude_modules"),
    ("use_rslora", "use_rslora"),
    ("use_dora", "use_dora"),
    ("rank_pattern", "rank_pattern"),
    ("alpha_pattern", "alpha_pattern"),
    ("modules_to_save", "modules_to_save"),
    ("init_lora_weights", "init_lora_weights"),
];

/// A job's settings: serde with `deny_unknown_fields` and `#[serde(default)]`, so a JSON
/// object of any subset of the keys is a complete config.
pub trait RunConfig: Serialize + DeserializeOwned + Default {
    /// The job (`sft`, `classify`, ...), for messages and progress bars.
    const JOB: &'static str;

    /// Top-level shorthand keys for settings of a nested section: `(key, section, field)`.
    /// They are folded into the section before the config is deserialised.
    fn shorthands() -> Vec<(&'static str, &'static str, &'static str)> {
        Vec::new()
    }

    /// Checks every setting (ranges, finiteness, required paths); `run()` calls it before
    /// any work starts. Errors are [`TrainError::InvalidSetting`] /
    /// [`TrainError::MissingSetting`] naming the setting.
    fn validate(&self) -> Result<()>;

    /// The config as a JSON object, every setting present (what `--print-config` prints
    /// and [`RUN_CONFIG_FILE`] holds).
    fn to_json(&self) -> Result<Value> {
        serde_json::to_value(self).map_err(|e| TrainError::Config(e.to_string()))
    }
}

/// Moves the shorthand keys of `value` (an object) into their sections; a shorthand and the
/// same setting in its section both given is an error.
fn fold_shorthands<R: RunConfig>(value: &mut Map<String, Value>, source: &str) -> Result<()> {
    for (key, section, field) in R::shorthands() {
        let Some(v) = value.remove(key) else {
            continue;
        };
        let sec = value
            .entry(section.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(sec) = sec else {
            return Err(TrainError::RunConfig {
                source_name: source.into(),
                message: format!("`{section}` must be a JSON object"),
            });
        };
        if sec.contains_key(field) {
            return Err(TrainError::RunConfig {
                source_name: source.into(),
                message: format!("`{key}` and `{section}.{field}` are the same setting: give one"),
            });
        }
        sec.insert(field.to_string(), v);
    }
    Ok(())
}

fn as_object(value: Value, source: &str) -> Result<Map<String, Value>> {
    match value {
        Value::Object(m) => Ok(m),
        other => Err(TrainError::RunConfig {
            source_name: source.into(),
            message: format!("a run config is a JSON object, not {other}"),
        }),
    }
}

/// Merges `over` onto `base`: keys of `over` win; where both hold an object (a nested
/// section such as `lora`), the section is merged key by key the same way.
pub fn merge(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Object(b)), Value::Object(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// A run config from a JSON value: its settings over the job's defaults (nested sections
/// merged key by key, shorthands folded); unknown keys are errors naming the key, prefixed
/// by `source`.
pub fn from_json<R: RunConfig>(value: Value, source: &str) -> Result<R> {
    let mut map = as_object(value, source)?;
    fold_shorthands::<R>(&mut map, source)?;
    from_folded(map, source)
}

/// Deserialises settings merged over the job's defaults (so a partial nested section, e.g.
/// `"lora": {"use_dora": true}`, keeps the job's other LoRA defaults, not PEFT's).
fn from_folded<R: RunConfig>(map: Map<String, Value>, source: &str) -> Result<R> {
    let mut full = match R::default().to_json()? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    merge(&mut full, map);
    serde_json::from_value(Value::Object(full)).map_err(|e| TrainError::RunConfig {
        source_name: source.into(),
        message: e.to_string(),
    })
}

/// Reads a run config file (JSON).
pub fn load<R: RunConfig>(path: impl AsRef<Path>) -> Result<R> {
    let path = path.as_ref();
    let value: Value = tilpass_core::read_json(path)?;
    from_json(value, &path.display().to_string())
}

/// The config of a run: the file's settings (if any) with `overrides` (e.g. the flags given
/// on the command line, as a JSON object of config keys) merged over them, over the job's
/// defaults. Not validated: `run()` does that.
pub fn resolve<R: RunConfig>(file: Option<&Path>, overrides: Value) -> Result<R> {
    const FLAGS: &str = "command-line flags";
    let mut over = as_object(overrides, FLAGS)?;
    fold_shorthands::<R>(&mut over, FLAGS)?;
    let (mut base, source) = match file {
        Some(p) => {
            let source = p.display().to_string();
            let mut m = as_object(tilpass_core::read_json(p)?, &source)?;
            fold_shorthands::<R>(&mut m, &source)?;
            (m, source)
        }
        None => (Map::new(), FLAGS.to_string()),
    };
    merge(&mut base, over);
    from_folded(base, &source)
}

/// Writes `run`'s config to `dir/run_config.json` (pretty JSON, atomically).
pub fn write_run_config<R: RunConfig>(run: &R, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
    let text = serde_json::to_string_pretty(&run.to_json()?)
        .map_err(|e| TrainError::Config(e.to_string()))?;
    tilpass_core::write_atomic(dir.join(RUN_CONFIG_FILE), text.as_bytes())?;
    Ok(())
}

/// Takes back the start of a fresh run that fails before it wrote anything but its config:
/// on drop, when `dir` holds no run output besides [`RUN_CONFIG_FILE`] (no checkpoint, adapter,
/// model or metrics), the config goes, and so does `dir` when the run made it and it is empty.
/// Made after [`prepare_output_dir`], so every run output in `dir` is this run's.
pub struct FreshStart {
    dir: PathBuf,
    made_dir: bool,
}

impl FreshStart {
    /// Before the run writes into `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            made_dir: !dir.exists(),
        }
    }
}

impl Drop for FreshStart {
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let produced = names.iter().any(|n| {
            (n != RUN_CONFIG_FILE && RUN_OUTPUTS.contains(&n.as_str()))
                || crate::trainer::checkpoint_step(n).is_some()
        });
        if produced || !names.iter().any(|n| n == RUN_CONFIG_FILE) {
            return;
        }
        let _ = std::fs::remove_file(self.dir.join(RUN_CONFIG_FILE));
        if self.made_dir {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// What a training run writes into its output directory besides its checkpoints.
pub const RUN_OUTPUTS: &[&str] = &[
    "adapter",
    "model",
    crate::trainer::METRICS_FILE,
    RUN_CONFIG_FILE,
];

/// Readies a training run's output directory before any work starts. A missing or empty
/// directory is fine, and so is any directory when `resuming` (the run continues there). A
/// directory holding anything else is an error naming a few of its entries, unless
/// `overwrite` (`overwrite_output_dir`, as transformers): then the earlier run's outputs are
/// removed — its `checkpoint-N` directories (exact name, with a `trainer_state.json`),
/// [`RUN_OUTPUTS`] and leftover temporary checkpoint directories — so that no file of it
/// mixes with the new run's. Other files are left alone, and nothing is removed when one of
/// the run's `inputs` (model, data, initial adapter, ...) lies in what would be removed: that
/// is an error naming it.
pub fn prepare_output_dir(
    dir: &Path,
    overwrite: bool,
    resuming: bool,
    inputs: &[&Path],
) -> Result<()> {
    let entries: Vec<std::fs::DirEntry> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(tilpass_core::Error::io(dir, e).into()),
    };
    // A directory holding only a run config is a run that stopped before it wrote anything
    // (bad data, a model that failed to load): starting again there loses nothing.
    let only_config = entries.iter().all(|e| e.file_name() == RUN_CONFIG_FILE);
    if entries.is_empty() || resuming || only_config {
        return Ok(());
    }
    if !overwrite {
        let mut names: Vec<String> = entries
            .iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let more = names.len().saturating_sub(3);
        names.truncate(3);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        return Err(TrainError::setting(
            "out",
            dir.display(),
            format!(
                "an empty or new directory: it holds {}{more}; give --overwrite-output-dir \
                 (`overwrite_output_dir`) to replace an earlier run, --resume to continue \
                 it, or another --out",
                names.join(", ")
            ),
        ));
    }
    let doomed: Vec<std::path::PathBuf> = entries
        .iter()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_checkpoint = crate::trainer::checkpoint_step(&name).is_some()
                && e.path().join("trainer_state.json").is_file();
            let is_temp = name.starts_with(".checkpoint-") && name.contains(".tmp");
            is_checkpoint || is_temp || RUN_OUTPUTS.contains(&name.as_str())
        })
        .map(|e| e.path())
        .collect();
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    for input in inputs {
        let input_c = canonical(input);
        if let Some(d) = doomed.iter().find(|d| input_c.starts_with(canonical(d))) {
            return Err(TrainError::setting(
                "overwrite_output_dir",
                true,
                format!(
                    "no input inside what it removes: {} is in {} of the earlier run",
                    input.display(),
                    d.display()
                ),
            ));
        }
    }
    for path in doomed {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| tilpass_core::Error::io(&path, e))?;
    }
    Ok(())
}

/// On resume, the settings in `keys` must be those of the run being resumed: its
/// `run_config.json` (in the checkpoint's parent directory, when there is one) is compared
/// with `run`, and a difference is an error naming the setting and both values.
pub fn check_resume_settings<R: RunConfig>(
    run: &R,
    checkpoint: &Path,
    keys: &[&str],
) -> Result<()> {
    let Some(saved_path) = checkpoint.parent().map(|p| p.join(RUN_CONFIG_FILE)) else {
        return Ok(());
    };
    if !saved_path.is_file() {
        return Ok(());
    }
    let saved: Value = tilpass_core::read_json(&saved_path)?;
    let now = run.to_json()?;
    for k in keys {
        let (Some(was), Some(is)) = (saved.get(*k), now.get(*k)) else {
            continue;
        };
        if was != is {
            return Err(TrainError::setting(
                *k,
                is,
                format!(
                    "{was}, as in the run being resumed ({}): settings that shape the \
                     training cannot change on resume (give --config with that file)",
                    saved_path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks shared by the jobs' `validate`.
pub(crate) mod check {
    use std::path::PathBuf;

    use crate::error::{Result, TrainError};

    /// A setting that must be present.
    pub fn required<'a, T>(name: &str, v: &'a Option<T>) -> Result<&'a T> {
        v.as_ref().ok_or_else(|| TrainError::MissingSetting {
            setting: name.into(),
            flag: name.replace('_', "-"),
        })
    }

    /// A path setting that must be present.
    pub fn path<'a>(name: &str, v: &'a Option<PathBuf>) -> Result<&'a PathBuf> {
        required(name, v)
    }

    /// A finite number > 0.
    pub fn positive(name: &str, v: f64) -> Result<()> {
        if v.is_finite() && v > 0.0 {
            return Ok(());
        }
        Err(TrainError::setting(name, v, "a finite number > 0"))
    }

    /// A finite number >= 0.
    pub fn non_negative(name: &str, v: f64) -> Result<()> {
        if v.is_finite() && v >= 0.0 {
            return Ok(());
        }
        Err(TrainError::setting(name, v, "a finite number >= 0"))
    }

    /// A count of at least `min`.
    pub fn at_least(name: &str, v: usize, min: usize) -> Result<()> {
        if v >= min {
            return Ok(());
        }
        Err(TrainError::setting(name, v, format!("an integer >= {min}")))
    }

    /// An optional count: when set, at least `min`.
    pub fn opt_at_least(name: &str, v: Option<usize>, min: usize) -> Result<()> {
        v.map_or(Ok(()), |v| at_least(name, v, min))
    }

    /// A fraction in `[lo, 1)` (`lo` is 0 or a tiny positive bound).
    pub fn fraction(name: &str, v: f64, zero_ok: bool) -> Result<()> {
        let ok = v.is_finite() && v < 1.0 && if zero_ok { v >= 0.0 } else { v > 0.0 };
        if ok {
            return Ok(());
        }
        let range = if zero_ok { "[0, 1)" } else { "(0, 1)" };
        Err(TrainError::setting(name, v, format!("a number in {range}")))
    }

    /// A β of Adam: in `[0, 1)`.
    pub fn beta(name: &str, v: f64) -> Result<()> {
        fraction(name, v, true)
    }

    /// The nested LoRA config: PEFT's checks, and no key tilpass does not know.
    pub fn lora(cfg: &tilpass_peft::LoraConfig) -> Result<()> {
        if let Some(key) = cfg.other.keys().next() {
            return Err(TrainError::UnknownSetting {
                setting: format!("lora.{key}"),
                known: "r, lora_alpha, lora_dropout, target_modules, exclude_modules, \
                        use_rslora, use_dora, rank_pattern, alpha_pattern, modules_to_save, \
                        init_lora_weights, fan_in_fan_out, bias, task_type, \
                        base_model_name_or_path"
                    .into(),
            });
        }
        at_least("lora.r", cfg.r, 1)?;
        if !cfg.lora_alpha.is_finite() {
            return Err(TrainError::setting(
                "lora.lora_alpha",
                cfg.lora_alpha,
                "a finite number",
            ));
        }
        fraction("lora.lora_dropout", cfg.lora_dropout, true)?;
        for (k, r) in &cfg.rank_pattern {
            at_least(&format!("lora.rank_pattern.{k}"), *r, 1)?;
        }
        for (k, a) in &cfg.alpha_pattern {
            if !a.is_finite() {
                return Err(TrainError::setting(
                    format!("lora.alpha_pattern.{k}"),
                    a,
                    "a finite number",
                ));
            }
        }
        Ok(cfg.validate()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_merge_over_the_file_section_by_section() {
        let mut base: Map<String, Value> = serde_json::from_str(
            r#"{"steps": 2, "lr": 0.1, "lora": {"r": 4, "lora_alpha": 8, "rank_pattern": {"q": 2}}}"#,
        )
        .unwrap();
        let over: Map<String, Value> =
            serde_json::from_str(r#"{"steps": 6, "lora": {"r": 8}}"#).unwrap();
        merge(&mut base, over);
        assert_eq!(
            Value::Object(base),
            serde_json::json!({"steps": 6, "lr": 0.1, "lora": {"r": 8, "lora_alpha": 8, "rank_pattern": {"q": 2}}})
        );
    }
}
