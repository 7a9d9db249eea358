//! What several commands share: the model flags, printing, reading line files, applying
//! `--adapter`, and turning the flags that were given into run-config keys.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;
use tilpass::models::{DecoderLm, HasLinears, Seq2SeqLm};
use tilpass::peft::{PeftModel, PromptAdapter, is_prompt_adapter, load_causal_lm};
use tilpass::tokenize::{TokenizeError, Tokenizer};
use tilpass::train::runs::{self, RunConfig};
use tilpass::{Error, Result};

/// `--model`, `--device`, `--adapter`.
#[derive(Args)]
pub struct ModelArgs {
    /// Model directory (config.json + safetensors; tokenizer files for text input).
    #[arg(long)]
    pub model: PathBuf,
    /// Device: flex (CPU), wgpu, wgpu-cpu, wgpu:N, cuda:N.
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// An adapter directory (HF PEFT format): LoRA / DoRA on any model; prefix / prompt /
    /// P-tuning where the command supports it (decoders; BERT classifiers and T5 in `logits`).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

/// Lines of a failed command's log (a training run's progress) printed after its cause, so
/// the cause is the first line of stderr.
static AFTER_ERROR: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Holds `lines` to be printed after the cause of the error the command returns.
pub fn after_error(lines: Vec<String>) {
    if let Ok(mut l) = AFTER_ERROR.lock() {
        l.extend(lines);
    }
}

/// The lines held by [`after_error`].
pub fn take_after_error() -> Vec<String> {
    AFTER_ERROR
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

/// Prints one JSON value on a line of stdout.
pub fn print(v: &Value) {
    println!("{v}");
}

/// Prints a serialisable value as one JSON line.
pub fn print_json(v: &impl serde::Serialize) -> Result<()> {
    let v = serde_json::to_value(v).map_err(|e| Error::invalid(e.to_string()))?;
    print(&v);
    Ok(())
}

/// The lines of a text file ([`tilpass::core::TextLines`]: a BOM dropped; bad UTF-8 and
/// over-long lines are errors naming the file and line).
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    tilpass::core::TextLines::open(path)?
        .map(|l| l.map(|(_, text)| text))
        .collect()
}

/// Applies `--adapter` (if given, a LoRA / DoRA adapter) to a freshly loaded model.
pub fn with_adapter<M: HasLinears>(model: M, args: &ModelArgs) -> Result<M> {
    let Some(dir) = &args.adapter else {
        return Ok(model);
    };
    if is_prompt_adapter(dir)? {
        return Err(Error::invalid(format!(
            "{}: a prompt-learning adapter (prefix / prompt / P-tuning) applies here to \
             decoders and encoder-decoders (logits, generate, chat) and, in `tilpass logits`, \
             to BERT sequence classifiers; this command takes LoRA / DoRA adapters for this \
             model",
            dir.display()
        )));
    }
    let mut peft = PeftModel::new(model);
    peft.load_adapter(dir, "default")?;
    tracing::info!("adapter {}: {}", dir.display(), peft.trainable_parameters());
    Ok(peft.into_model())
}

/// An encoder-decoder (T5, NorT5) with `--adapter` applied: LoRA adapters go into its
/// layers; a prompt-learning adapter (prompt / P-tuning; prefix tuning on T5) is returned
/// beside it (apply it with `tilpass::train::PromptSeq2Seq`).
pub fn load_seq2seq(args: &ModelArgs) -> Result<(Seq2SeqLm, Option<PromptAdapter>)> {
    let device = tilpass::device(&args.device)?;
    let model = Seq2SeqLm::load(&args.model, &device)?;
    match &args.adapter {
        Some(dir) if is_prompt_adapter(dir)? => {
            let p = PromptAdapter::load_seq2seq(dir, &model, &device)?;
            Ok((model, Some(p)))
        }
        _ => Ok((with_adapter(model, args)?, None)),
    }
}

/// A decoder with `--adapter` applied: LoRA adapters go into its layers; a prompt-learning
/// adapter (prefix / prompt / P-tuning) is returned beside it.
pub fn load_decoder(args: &ModelArgs) -> Result<(DecoderLm, Option<PromptAdapter>)> {
    let device = tilpass::device(&args.device)?;
    Ok(load_causal_lm(
        &args.model,
        args.adapter.as_deref(),
        &device,
    )?)
}

/// The tokenizer in a model directory; `None` when it has none and `required` is false.
pub fn model_tokenizer(dir: &Path, required: bool) -> Result<Option<Tokenizer>> {
    match Tokenizer::from_dir(dir) {
        Ok(t) => Ok(Some(t)),
        Err(TokenizeError::MissingTokenizer { .. }) if !required => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The flags that were given, as a JSON object of run-config keys (a flag's key is its
/// snake_case name; flags not given are left out, so the config file and the run type's
/// defaults supply them).
pub fn given_flags(flags: &impl serde::Serialize) -> Result<Value> {
    let mut v = serde_json::to_value(flags).map_err(|e| Error::invalid(e.to_string()))?;
    if let Value::Object(m) = &mut v {
        m.retain(|_, v| !v.is_null());
    }
    Ok(v)
}

/// How a job's flags and `--config` combine, after its flags in `--help`.
pub const RUN_CONFIG_HELP: &str = "Every flag is a key of the job's JSON run config \
(`--eval-steps` = `eval_steps`). --config FILE supplies settings, flags win, the job's \
defaults fill the rest: --print-config prints the result (and so the defaults).";

/// [`RUN_CONFIG_HELP`] for the training jobs.
pub const TRAIN_CONFIG_HELP: &str = "Every flag is a key of the job's JSON run config \
(`--eval-steps` = `eval_steps`; the LoRA flags set its `lora` section, PEFT's LoraConfig). \
--config FILE supplies settings, flags win, the job's defaults fill the rest: --print-config \
prints the result (and so the defaults). A run writes its config to OUT/run_config.json; \
--config with that file repeats the run.";

/// `--config FILE` and `--print-config` of a job.
#[derive(Args, Clone, serde::Serialize)]
pub struct ConfigArgs {
    /// Settings as JSON (a run config: `--print-config` shows one; the run_config.json of an
    /// earlier run repeats it). Flags given on the command line win.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the resolved settings (config file, flags, defaults) as JSON and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
}

impl ConfigArgs {
    /// The job's config from `--config` and the given `flags`; `None` after printing it
    /// for `--print-config`.
    pub fn resolve<R: RunConfig>(&self, flags: &impl serde::Serialize) -> Result<Option<R>> {
        let run: R = runs::resolve(self.config.as_deref(), given_flags(flags)?)?;
        if self.print_config {
            println!(
                "{}",
                serde_json::to_string_pretty(&run.to_json()?)
                    .map_err(|e| Error::invalid(e.to_string()))?
            );
            return Ok(None);
        }
        Ok(Some(run))
    }
}

/// A number flag of a run config: JSON has no NaN or infinity (they would turn into `null`,
/// i.e. "not given"), so non-finite values are refused here, naming the flag.
pub fn finite_f64(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number")),
        Err(e) => Err(format!("`{s}`: {e}")),
    }
}

/// Parses `key=value,key=value` (`--rank-pattern q_proj=4`) into a JSON object.
pub fn parse_pattern(s: &str) -> std::result::Result<serde_json::Map<String, Value>, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("`{p}` is not KEY=VALUE (e.g. q_proj=4)"))?;
            let v: Value =
                serde_json::from_str(v).map_err(|_| format!("`{v}` in `{p}` is not a number"))?;
            Ok((k.to_string(), v))
        })
        .collect()
}

/// Refuses to replace a file that already exists at `path` (the output named by flag `flag`)
/// unless `overwrite` (`--overwrite`): a data command never destroys an existing file the user
/// did not hand over. With `--overwrite` the new file replaces the old one atomically.
pub fn check_new_file(flag: &str, path: &Path, overwrite: bool) -> Result<()> {
    if !overwrite && std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::invalid(format!(
            "--{flag} {}: the file exists; expected a new path (pass --overwrite to replace it)",
            path.display()
        )));
    }
    Ok(())
}
