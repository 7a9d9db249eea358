//! The training loop for causal-LM fine-tuning of adapters: gradient accumulation, clipping,
//! the schedule, evaluation with early stopping, NaN detection, atomic checkpoints every N
//! steps (keep the last K) and exact resume, metrics appended as JSON lines.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tilpass_core::{Checkpoint, HostTensor, SaveDtype, save_safetensors};
use tilpass_models::{DecoderInput, DecoderLm, HasLinears};
use tilpass_peft::PeftModel;

use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWConfig, NamedGrads, clip_global_norm, collect_grads};
use crate::schedule::{LrSchedule, ScheduleKind};

/// Settings of a training run (HF `TrainingArguments` names where they exist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Schedule after warmup.
    pub lr_scheduler_type: ScheduleKind,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// Optimiser steps.
    pub max_steps: usize,
    /// Batches per optimiser step.
    pub gradient_accumulation_steps: usize,
    /// Global-norm clipping (`None`: off).
    pub max_grad_norm: Option<f64>,
    /// AdamW settings.
    pub adamw: AdamWConfig,
    /// Evaluate every this many steps (with an eval set).
    pub eval_steps: Option<usize>,
    /// Stop after this many evaluations without improvement.
    pub early_stopping_patience: Option<usize>,
    /// Write a checkpoint every this many steps (needs `output_dir`).
    pub save_steps: Option<usize>,
    /// Checkpoints to keep.
    pub save_total_limit: usize,
    /// Where checkpoints and `metrics.jsonl` go.
    pub output_dir: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            learning_rate: 2e-4,
            lr_scheduler_type: ScheduleKind::Linear,
            warmup_steps: 0,
            max_steps: 100,
            gradient_accumulation_steps: 1,
            max_grad_norm: Some(1.0),
            adamw: AdamWConfig::default(),
            eval_steps: None,
            early_stopping_patience: None,
            save_steps: None,
            save_total_limit: 2,
            output_dir: None,
        }
    }
}

impl TrainConfig {
    /// Checks every setting before any work (ranges and finiteness); errors are
    /// [`TrainError::InvalidSetting`] naming the field and the accepted range. [`train_loop`]
    /// calls it first.
    pub fn validate(&self) -> Result<()> {
        let finite = |name: &str, v: f64, min: f64, strict: bool| -> Result<()> {
            let ok = v.is_finite() && if strict { v > min } else { v >= min };
            if ok {
                return Ok(());
            }
            let op = if strict { ">" } else { ">=" };
            Err(TrainError::setting(
                name,
                v,
                format!("a finite number {op} {min}"),
            ))
        };
        let count = |name: &str, v: usize| -> Result<()> {
            if v >= 1 {
                return Ok(());
            }
            Err(TrainError::setting(name, v, "an integer >= 1"))
        };
        finite("learning_rate", self.learning_rate, 0.0, false)?;
        count("max_steps", self.max_steps)?;
        count(
            "gradient_accumulation_steps",
            self.gradient_accumulation_steps,
        )?;
        if let Some(n) = self.max_grad_norm {
            finite("max_grad_norm", n, 0.0, true)?;
        }
        for (name, b) in [
            ("adamw.beta1", self.adamw.beta1),
            ("adamw.beta2", self.adamw.beta2),
        ] {
            if !(b.is_finite() && (0.0..1.0).contains(&b)) {
                return Err(TrainError::setting(name, b, "a number in [0, 1)"));
            }
        }
        finite("adamw.eps", self.adamw.eps, 0.0, true)?;
        finite("adamw.weight_decay", self.adamw.weight_decay, 0.0, false)?;
        for (name, v) in [
            ("eval_steps", self.eval_steps),
            ("early_stopping_patience", self.early_stopping_patience),
            ("save_steps", self.save_steps),
        ] {
            if let Some(v) = v {
                count(name, v)?;
            }
        }
        count("save_total_limit", self.save_total_limit)
    }
}

/// One training batch: model input and labels (`[batch, seq]`, -100 = not supervised).
#[derive(Debug, Clone)]
pub struct LmBatch {
    /// The tokens.
    pub input: DecoderInput,
    /// Next-token targets at each position (shifted inside the loss, as transformers).
    pub labels: Vec<i64>,
}

/// What one optimiser step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// Step number (1-based: steps done).
    pub step: usize,
    /// Mean loss over the accumulated batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Supervised tokens in the step.
    pub tokens: usize,
    /// Tokens (all, not only supervised) per second of the step's wall-clock time. An online
    /// trainer (GRPO / RLOO) sets it through [`LoopHooks::step_log`]: its prompt and completion
    /// tokens per second of training time, generation excluded.
    pub tokens_per_s: f64,
    /// Further metrics of the step by name (e.g. DPO's `rewards/chosen`), each the mean over
    /// the step's accumulated batches of what [`BatchLoss::metrics`] reported; empty for
    /// causal-LM and classification runs. Written as top-level keys of the metrics line.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// An evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLog {
    /// After this many steps.
    pub step: usize,
    /// Mean loss per supervised token.
    pub eval_loss: f64,
    /// `exp(eval_loss)`.
    pub perplexity: f64,
    /// Sample generations made at this evaluation (see [`train_lm_with_samples`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<String>,
    /// Further named metrics of the evaluation (e.g. a preference trainer's
    /// `eval_rewards/accuracies`), written as top-level keys of the metrics line.
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// Progress reported to the caller (for progress bars).
#[derive(Debug)]
pub enum Event<'a> {
    /// A step finished.
    Step(&'a StepLog),
    /// An evaluation finished.
    Eval(&'a EvalLog),
    /// A checkpoint was written.
    Checkpoint(&'a Path),
    /// Early stopping ended the run.
    EarlyStop {
        /// The step it stopped at.
        step: usize,
    },
    /// A line for the user about the run (the trainable-parameter count, packing, labels).
    Message(&'a str),
    /// A detail for logs (what encoding did); the CLI shows it with `TILPASS_LOG=info`.
    Detail(&'a str),
    /// Rows processed so far by an annotation or prediction job.
    Rows {
        /// Rows written.
        done: usize,
        /// Seconds since the job started.
        seconds: f64,
    },
}

/// What a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// One named adapter of the [`PeftModel`]; the base model stays frozen.
    Adapter(&'a str),
    /// Every parameter of the model (full fine-tuning; the model must be on an autodiff
    /// device). Checkpoints hold the whole model (`model.safetensors`, burn parameter paths).
    Full,
}

impl<'a> From<&'a str> for Target<'a> {
    fn from(name: &'a str) -> Self {
        Target::Adapter(name)
    }
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Adapter(a) => write!(f, "adapter `{a}`"),
            Target::Full => write!(f, "the full model"),
        }
    }
}

/// Where a run is: saved in `trainer_state.json` for resuming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainerState {
    /// Optimiser steps done.
    pub step: usize,
    /// Next training batch (index into the training set, wrapping around).
    pub batch_cursor: usize,
    /// Best evaluation loss so far.
    pub best_eval_loss: Option<f64>,
    /// Evaluations since the best.
    pub evals_without_improvement: usize,
    /// The adapter trained (empty for full fine-tuning).
    pub adapter: String,
    /// Whether the run trains every parameter.
    #[serde(default)]
    pub full: bool,
    /// The prompt-learning method trained (`PROMPT_TUNING`, `P_TUNING`, `PREFIX_TUNING`);
    /// absent for LoRA and full fine-tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peft_type: Option<String>,
    /// Identifies the run (kept on resume): checkpoint rotation only removes checkpoints
    /// whose state carries this id, never another run's.
    #[serde(default)]
    pub run_id: String,
}

/// A new run id: the time in nanoseconds and the process id, in hex.
fn new_run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}-{:x}", std::process::id())
}

/// The file a run logs its steps and evaluations to, one JSON object per line, in its output
/// directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Appends one JSON line to `path`: the whole line (with its newline) in one write, flushed,
/// so a kill leaves at most a torn last line, which [`truncate_metrics`] drops.
pub fn append_json_line(path: &Path, v: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| tilpass_core::Error::io(path, e))?;
    write_line(&mut f, path, v)
}

fn write_line(f: &mut std::fs::File, path: &Path, v: &serde_json::Value) -> Result<()> {
    let line = format!("{v}\n");
    f.write_all(line.as_bytes())
        .and_then(|()| f.flush())
        .map_err(|e| tilpass_core::Error::io(path, e).into())
}

/// Cuts a metrics log back to what a checkpoint at `step` had seen: lines with a `step`
/// above it are dropped (a resumed run logs them again), and so are lines that are not whole
/// JSON (a torn last line of a killed run). Rewritten atomically; a missing file is fine.
pub fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(tilpass_core::Error::io(path, e).into()),
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut kept = String::new();
    let mut rest: &str = &text;
    while let Some(i) = rest.find('\n') {
        let line = &rest[..i];
        rest = &rest[i + 1..];
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v.get("step")
            .and_then(|s| s.as_u64())
            .is_some_and(|s| s > step as u64)
        {
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    // `rest` is a last line without its newline: torn by a kill, dropped.
    if kept.len() == bytes.len() {
        return Ok(());
    }
    tilpass_core::write_atomic(path, kept.as_bytes())?;
    Ok(())
}

/// Whether `name` is exactly a checkpoint directory's name, `checkpoint-<step>` (the step in
/// plain decimal), and the step.
pub fn checkpoint_step(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("checkpoint-")?;
    let step: usize = digits.parse().ok()?;
    (step.to_string() == digits).then_some(step)
}

/// The run id in a checkpoint directory's `trainer_state.json`, if it is one.
pub fn checkpoint_run_id(dir: &Path) -> Option<String> {
    let state: TrainerState = tilpass_core::read_json(dir.join(STATE_FILE)).ok()?;
    Some(state.run_id)
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Steps done.
    pub steps: usize,
    /// Loss of the first and last step.
    pub first_loss: f64,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Last evaluation, if any.
    pub last_eval: Option<EvalLog>,
    /// Whether early stopping ended it.
    pub early_stopped: bool,
}

/// transformers' causal-LM loss of one batch: the mean next-token NLL over labels != -100,
/// and the number of supervised tokens.
///
/// On the CPU with a frozen head (adapter training) the head is fused with the loss
/// ([`tilpass_models::head_loss`]: no `[batch, seq, vocab]` logits, none for unsupervised
/// positions); otherwise the logits go through [`crate::fused_ce::causal_lm_cross_entropy`].
pub fn causal_lm_loss(model: &DecoderLm, batch: &LmBatch) -> Result<(Tensor<1>, usize)> {
    let hidden = model.forward_hidden(&batch.input, None)?;
    crate::fused_ce::causal_lm_loss_from_hidden(model, hidden, &batch.labels)
}

fn add_grads(acc: &mut Option<NamedGrads>, g: NamedGrads) {
    match acc {
        None => *acc = Some(g),
        Some(a) => {
            for ((_, x), (_, y)) in a.iter_mut().zip(g) {
                *x = x.clone() + y;
            }
        }
    }
}

const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const FULL_MODEL_FILE: &str = "model.safetensors";

/// Every float parameter of the model, flattened, by burn path.
fn model_params<M: HasLinears>(model: &mut M) -> Vec<(String, Tensor<1>, usize)> {
    let mut out = Vec::new();
    model.map_params(None, &mut |path, v, rank, _| {
        out.push((path.to_string(), v, rank));
        None
    });
    out
}

/// Gradients of every tracked parameter (full fine-tuning).
fn full_grads<M: HasLinears>(model: &mut M, grads: &burn::tensor::Gradients) -> NamedGrads {
    let mut out = Vec::new();
    model.map_params(Some(grads), &mut |path, _, _, g| {
        if let Some(g) = g {
            out.push((path.to_string(), g));
        }
        None
    });
    out
}

/// Sizes of the trainable parameters of `target`, by the names the optimiser uses.
fn trainable_sizes<M: HasLinears>(
    model: &mut PeftModel<M>,
    target: Target<'_>,
) -> std::collections::BTreeMap<String, usize> {
    match target {
        Target::Full => model_params(&mut **model)
            .into_iter()
            .map(|(n, v, _)| (n, v.dims()[0]))
            .collect(),
        Target::Adapter(_) => model
            .trainable_params_mut()
            .into_iter()
            .map(|(n, p)| {
                let numel = match p {
                    tilpass_peft::ParamMut::D1(p) => p.val().dims()[0],
                    tilpass_peft::ParamMut::D2(p) => p.val().dims().iter().product(),
                };
                (n, numel)
            })
            .collect(),
    }
}

/// Trains `target` of `model` — one adapter (`"default"`, its base frozen) or
/// [`Target::Full`] — on `train`, evaluating on `eval`. With `resume`, continues from a
/// checkpoint directory written by an earlier run (for an adapter, load it from that directory
/// into `model` first; full weights are restored here): optimiser state, step and data position
/// are restored, so the run continues exactly where it stopped.
pub fn train_lm<'t>(
    model: &mut PeftModel<DecoderLm>,
    target: impl Into<Target<'t>>,
    train: &[LmBatch],
    eval: &[LmBatch],
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    train_lm_with_samples(model, target, train, eval, None, cfg, resume, on_event)
}

/// Makes sample generations with the model being trained (e.g. answers to a few held-out
/// prompts), logged with each evaluation.
pub type Sampler<'a> = &'a dyn Fn(&DecoderLm) -> Result<Vec<String>>;

/// [`train_lm`] that also logs `sampler`'s generations at every evaluation
/// ([`EvalLog::samples`]).
#[allow(clippy::too_many_arguments)]
pub fn train_lm_with_samples<'t>(
    model: &mut PeftModel<DecoderLm>,
    target: impl Into<Target<'t>>,
    train: &[LmBatch],
    eval: &[LmBatch],
    sampler: Option<Sampler<'_>>,
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    for (i, b) in train.iter().enumerate() {
        if b.labels.iter().all(|l| *l < 0) {
            return Err(TrainError::NoSupervision { batch: i });
        }
    }
    let tokens: Vec<usize> = train.iter().map(|b| b.input.input_ids.len()).collect();
    train_loop(
        model,
        target,
        &tokens,
        &|m: &DecoderLm, i: usize| causal_lm_loss(m, &train[i]),
        &|m: &DecoderLm, step: usize| {
            if eval.is_empty() {
                return Ok(None);
            }
            let mut log = evaluate(m, eval, step)?;
            if let Some(sample) = sampler {
                log.samples = sample(m)?;
            }
            Ok(Some(log))
        },
        cfg,
        resume,
        on_event,
    )
}

/// Per-batch loss: the mean loss of batch `i` and the number of items it averages over.
pub type LossFn<'a, M> = &'a dyn Fn(&M, usize) -> Result<(Tensor<1>, usize)>;
/// Evaluation after `step` steps (`None`: no evaluation set).
pub type EvalFn<'a, M> = &'a dyn Fn(&M, usize) -> Result<Option<EvalLog>>;

/// What the loss of one training batch gives the loop ([`train_loop_with`]).
#[derive(Debug, Clone)]
pub struct BatchLoss {
    /// The batch's loss, `[1]`, differentiable w.r.t. the trained parameters.
    pub loss: Tensor<1>,
    /// Items it averages over (supervised tokens; completion tokens for preference losses),
    /// summed into [`StepLog::tokens`].
    pub items: usize,
    /// Named metrics of the batch, averaged over the step's accumulated batches into
    /// [`StepLog::metrics`] (TRL averages its logged metrics over the `compute_loss` calls
    /// of a logging window the same way).
    pub metrics: Vec<(String, f64)>,
}

/// Per-batch loss with the whole adapted model at hand (to run it with its adapters disabled,
/// as a preference loss's reference does): the loss of training batch `i`.
pub type ModelLossFn<'a, M> = &'a mut dyn FnMut(&mut PeftModel<M>, usize) -> Result<BatchLoss>;
/// Evaluation after `step` steps with the whole adapted model at hand (`None`: no evaluation).
pub type ModelEvalFn<'a, M> =
    &'a mut dyn FnMut(&mut PeftModel<M>, usize) -> Result<Option<EvalLog>>;

/// The training loop over any adapted model: `loss(model, i)` gives the loss of training
/// batch `i` (of `batch_tokens.len()`, each with that many input tokens), `eval(model, step)`
/// an evaluation. See [`train_lm`] for what it does; [`train_loop_with`] is the same loop for
/// losses that need the [`PeftModel`] itself or log metrics.
#[allow(clippy::too_many_arguments)]
pub fn train_loop<'t, M: HasLinears>(
    model: &mut PeftModel<M>,
    target: impl Into<Target<'t>>,
    batch_tokens: &[usize],
    loss_of: LossFn<'_, M>,
    eval_of: EvalFn<'_, M>,
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    train_loop_with(
        model,
        target,
        batch_tokens,
        &mut |m: &mut PeftModel<M>, i| {
            let (loss, items) = loss_of(m, i)?;
            Ok(BatchLoss {
                loss,
                items,
                metrics: Vec::new(),
            })
        },
        &mut |m: &mut PeftModel<M>, step| eval_of(m, step),
        cfg,
        resume,
        on_event,
    )
}

/// [`train_loop`] for a loss that gets the [`PeftModel`] itself (e.g. to compute a reference
/// with its adapters disabled) and reports metrics per batch, logged in [`StepLog::metrics`]
/// and `metrics.jsonl` under their names.
#[allow(clippy::too_many_arguments)]
pub fn train_loop_with<'t, M: HasLinears>(
    model: &mut PeftModel<M>,
    target: impl Into<Target<'t>>,
    batch_tokens: &[usize],
    loss_of: ModelLossFn<'_, M>,
    eval_of: ModelEvalFn<'_, M>,
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    train_loop_with_hooks(
        model,
        target,
        batch_tokens,
        loss_of,
        eval_of,
        cfg,
        resume,
        LoopHooks::default(),
        on_event,
    )
}

/// Writes further files into a checkpoint's temporary directory (see
/// [`LoopHooks::checkpoint_extras`]).
pub type CheckpointExtrasFn<'a> = &'a mut dyn FnMut(&Path) -> Result<()>;
/// Amends a step's log after its optimiser update (see [`LoopHooks::step_log`]).
pub type StepLogFn<'a> = &'a mut dyn FnMut(&mut StepLog);

/// Optional hooks into the training loop ([`train_loop_with_hooks`],
/// [`train_trainable_with_hooks`]); the default has none, as [`train_loop_with`] and
/// [`train_trainable`] run it.
#[derive(Default)]
pub struct LoopHooks<'a> {
    /// Called with a checkpoint's temporary directory after the loop has written its own files
    /// there and before the directory is renamed to `checkpoint-<step>`: what it writes is in
    /// the checkpoint as soon as the checkpoint exists (e.g. an online trainer's generation
    /// batch). An error fails the save (and the run); no checkpoint directory is left behind.
    pub checkpoint_extras: Option<CheckpointExtrasFn<'a>>,
    /// Called with each step's log right after the step's optimiser update, before the log is
    /// written to `metrics.jsonl` and reported ([`Event::Step`]): the caller may fill in what
    /// only it knows (e.g. an online trainer's tokens per second of training time, or timing
    /// that must include the update).
    pub step_log: Option<StepLogFn<'a>>,
}

/// [`train_loop_with`] with [`LoopHooks`]: extra files written into every checkpoint before it
/// appears, and a step log amended before it is logged.
#[allow(clippy::too_many_arguments)]
pub fn train_loop_with_hooks<'t, M: HasLinears>(
    model: &mut PeftModel<M>,
    target: impl Into<Target<'t>>,
    batch_tokens: &[usize],
    loss_of: ModelLossFn<'_, M>,
    eval_of: ModelEvalFn<'_, M>,
    cfg: &TrainConfig,
    resume: Option<&Path>,
    hooks: LoopHooks<'_>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    cfg.validate()?;
    let target = target.into();
    if let Target::Adapter(a) = target
        && !model.adapters().contains_key(a)
    {
        return Err(TrainError::Config(format!(
            "the model has no adapter `{a}`"
        )));
    }
    let mut subject = PeftTarget { model, target };
    train_trainable_with_hooks(
        &mut subject,
        batch_tokens,
        &mut |s: &mut PeftTarget<'_, '_, M>, i| loss_of(s.model, i),
        &mut |s: &mut PeftTarget<'_, '_, M>, step| s.model.with_eval_mode(|m| eval_of(m, step)),
        cfg,
        resume,
        hooks,
        on_event,
    )
}

/// What a training run updates, for [`train_trainable`]: its trainable parameters by stable
/// names (for the optimiser state), how they are saved into and restored from a checkpoint,
/// and how the run is named in `trainer_state.json`. Implemented for a [`PeftModel`] with its
/// [`Target`] ([`PeftTarget`]: one LoRA adapter, or every weight) and for a prompt-learning
/// model (`crate::prompt::PromptModel`).
pub trait Trainable {
    /// How `trainer_state.json` names the run: `(adapter, full, peft_type)`; a resumed run
    /// must match.
    fn tag(&self) -> (String, bool, Option<String>);
    /// What is trained, for messages (`adapter `default``).
    fn describe(&self) -> String;
    /// Called once before the first step (full fine-tuning: every weight made trainable).
    fn prepare(&mut self) {}
    /// Sizes of the trainable parameters by name.
    fn param_sizes(&mut self) -> BTreeMap<String, usize>;
    /// The gradients of the trainable parameters in `grads`, flattened, by name.
    fn grads(&mut self, grads: &burn::tensor::Gradients) -> NamedGrads;
    /// One optimiser update of the trainable parameters with `grads` at `lr`.
    fn update(&mut self, opt: &mut AdamW, grads: &NamedGrads, lr: f64);
    /// Writes the trained weights into a checkpoint directory.
    fn save_weights(&mut self, dir: &Path) -> Result<()>;
    /// Restores the trained weights from a checkpoint directory written by
    /// [`Self::save_weights`] (before the optimiser state is loaded).
    fn restore_weights(&mut self, dir: &Path) -> Result<()>;
    /// Whether a checkpoint's optimiser state may cover a subset of the parameters (full
    /// fine-tuning: parameters without gradients have none); otherwise it must be exact.
    fn partial_state(&self) -> bool {
        false
    }
    /// The device the parameters live on.
    fn device(&mut self) -> burn::tensor::Device;
}

/// A [`PeftModel`] and what of it a run trains.
pub struct PeftTarget<'m, 't, M> {
    /// The model with its adapters.
    pub model: &'m mut PeftModel<M>,
    /// One adapter or every weight.
    pub target: Target<'t>,
}

impl<M: HasLinears> Trainable for PeftTarget<'_, '_, M> {
    fn tag(&self) -> (String, bool, Option<String>) {
        match self.target {
            Target::Adapter(a) => (a.into(), false, None),
            Target::Full => (String::new(), true, None),
        }
    }
    fn describe(&self) -> String {
        self.target.to_string()
    }
    fn prepare(&mut self) {
        if self.target == Target::Full {
            self.model.unfreeze_all();
        }
    }
    fn param_sizes(&mut self) -> BTreeMap<String, usize> {
        trainable_sizes(self.model, self.target)
    }
    fn grads(&mut self, g: &burn::tensor::Gradients) -> NamedGrads {
        match self.target {
            Target::Full => full_grads(&mut **self.model, g),
            Target::Adapter(_) => collect_grads(&self.model.trainable_params_mut(), g),
        }
    }
    fn update(&mut self, opt: &mut AdamW, grads: &NamedGrads, lr: f64) {
        match self.target {
            Target::Full => {
                opt.begin_step();
                let by_name: BTreeMap<&str, &Tensor<1>> =
                    grads.iter().map(|(n, g)| (n.as_str(), g)).collect();
                self.model.map_params(None, &mut |path, v, rank, _| {
                    let g = by_name.get(path)?;
                    Some(opt.update(path, v, g, lr, crate::optim::decays(path, rank)))
                });
            }
            Target::Adapter(_) => {
                let mut params = self.model.trainable_params_mut();
                opt.step(&mut params, grads, lr);
            }
        }
    }
    fn save_weights(&mut self, dir: &Path) -> Result<()> {
        match self.target {
            Target::Full => {
                let params = model_params(&mut **self.model);
                let host: Vec<(String, HostTensor)> = params
                    .iter()
                    .map(|(n, v, _)| (n.clone(), HostTensor::from_tensor(v)))
                    .collect();
                save_safetensors(
                    dir.join(FULL_MODEL_FILE),
                    host.iter().map(|(k, t)| (k.as_str(), t)),
                    SaveDtype::F32,
                    None,
                )?;
            }
            Target::Adapter(a) => self.model.save_adapter(a, dir)?,
        }
        Ok(())
    }
    fn restore_weights(&mut self, dir: &Path) -> Result<()> {
        // An adapter is loaded from the checkpoint by the caller (it names the adapter).
        if self.target == Target::Full {
            let sizes = trainable_sizes(self.model, self.target);
            restore_full(self.model, &dir.join(FULL_MODEL_FILE), &sizes)?;
        }
        Ok(())
    }
    fn partial_state(&self) -> bool {
        self.target == Target::Full
    }
    fn device(&mut self) -> burn::tensor::Device {
        model_params(&mut **self.model)
            .into_iter()
            .next()
            .map(|(_, v, _)| v.device())
            .unwrap_or_default()
    }
}

/// The loss of training batch `i` for a [`Trainable`] `S`.
pub type SubjectLossFn<'a, S> = &'a mut dyn FnMut(&mut S, usize) -> Result<BatchLoss>;
/// An evaluation after `step` steps for a [`Trainable`] `S` (`None`: no evaluation set); it
/// runs the model in evaluation mode itself.
pub type SubjectEvalFn<'a, S> = &'a mut dyn FnMut(&mut S, usize) -> Result<Option<EvalLog>>;

/// The training loop over anything [`Trainable`] — one LoRA adapter, every weight, or a
/// prompt-learning adapter — with the same AdamW, schedule, accumulation, clipping,
/// evaluation with early stopping, NaN detection, checkpoints (keep the last K), exact resume
/// from `resume` and `metrics.jsonl`. `loss_of(subject, i)` gives the loss of training batch
/// `i` (of `batch_tokens.len()`, each with that many input tokens).
#[allow(clippy::too_many_arguments)]
pub fn train_trainable<S: Trainable>(
    subject: &mut S,
    batch_tokens: &[usize],
    loss_of: SubjectLossFn<'_, S>,
    eval_of: SubjectEvalFn<'_, S>,
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    train_trainable_with_hooks(
        subject,
        batch_tokens,
        loss_of,
        eval_of,
        cfg,
        resume,
        LoopHooks::default(),
        on_event,
    )
}

/// [`train_trainable`] with [`LoopHooks`].
#[allow(clippy::too_many_arguments)]
pub fn train_trainable_with_hooks<S: Trainable>(
    subject: &mut S,
    batch_tokens: &[usize],
    loss_of: SubjectLossFn<'_, S>,
    eval_of: SubjectEvalFn<'_, S>,
    cfg: &TrainConfig,
    resume: Option<&Path>,
    hooks: LoopHooks<'_>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let LoopHooks {
        mut checkpoint_extras,
        mut step_log,
    } = hooks;
    cfg.validate()?;
    let n_train = batch_tokens.len();
    if n_train == 0 {
        return Err(TrainError::Config("the training set is empty".into()));
    }
    subject.prepare();
    let (adapter, full, peft_type) = subject.tag();
    let accum = cfg.gradient_accumulation_steps.max(1);
    let schedule = LrSchedule {
        base_lr: cfg.learning_rate,
        kind: cfg.lr_scheduler_type,
        warmup_steps: cfg.warmup_steps,
        total_steps: cfg.max_steps,
    };
    let mut opt = AdamW::new(cfg.adamw);
    let mut state = TrainerState {
        adapter: adapter.clone(),
        full,
        peft_type: peft_type.clone(),
        run_id: new_run_id(),
        ..Default::default()
    };
    if let Some(dir) = resume {
        let path = dir.join(STATE_FILE);
        state = tilpass_core::read_json(&path)?;
        if state.run_id.is_empty() {
            // A checkpoint from before run ids: its siblings are never rotated away.
            state.run_id = new_run_id();
        }
        if state.adapter != adapter || state.full != full || state.peft_type != peft_type {
            let was = if state.full {
                Target::Full.to_string()
            } else {
                let kind = state.peft_type.as_deref().unwrap_or("LORA");
                format!("{} ({kind})", Target::Adapter(&state.adapter))
            };
            let now = match &peft_type {
                Some(t) => format!("{} ({t})", subject.describe()),
                None if full => subject.describe(),
                None => format!("{} (LORA)", subject.describe()),
            };
            return Err(TrainError::Resume {
                path: path.display().to_string(),
                message: format!("the checkpoint trained {was}, not {now}"),
            });
        }
        subject.restore_weights(dir)?;
        let sizes = subject.param_sizes();
        let ck = Checkpoint::open(dir.join(OPTIMIZER_FILE))?;
        let tensors: Vec<(String, HostTensor)> = ck
            .keys()
            .map(|k| Ok((k.to_string(), ck.read_f32(k)?)))
            .collect::<tilpass_core::Result<_>>()?;
        // The checkpoint must hold state for exactly these parameters, same sizes (full
        // fine-tuning: for parameters of this model, same sizes).
        let saved: BTreeMap<String, usize> = tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix("m.").map(|n| (n.to_string(), t.numel())))
            .collect();
        let mismatch: Vec<&String> = if subject.partial_state() {
            saved
                .keys()
                .filter(|k| sizes.get(*k) != saved.get(*k))
                .take(3)
                .collect()
        } else {
            sizes
                .keys()
                .chain(saved.keys())
                .filter(|k| sizes.get(*k) != saved.get(*k))
                .take(3)
                .collect()
        };
        if !mismatch.is_empty() {
            return Err(TrainError::Resume {
                path: dir.display().to_string(),
                message: format!(
                    "the optimiser state does not match {} of this model (e.g. \
                     {mismatch:?}): another model, adapter or rank",
                    subject.describe()
                ),
            });
        }
        let device = subject.device();
        let step = ck
            .metadata()
            .get("step")
            .and_then(|s| s.parse().ok())
            .unwrap_or(state.step as u64);
        opt.load_state(step, &tensors, &device)?;
    }
    let mut metrics = match &cfg.output_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
            let p = dir.join(METRICS_FILE);
            if resume.is_some() {
                truncate_metrics(&p, state.step)?;
            }
            Some((
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .map_err(|e| tilpass_core::Error::io(&p, e))?,
                p,
            ))
        }
        None => None,
    };
    let mut log_line = |v: serde_json::Value| -> Result<()> {
        if let Some((f, p)) = &mut metrics {
            write_line(f, p, &v)?;
        }
        Ok(())
    };
    let mut first_loss = None;
    let mut last_loss = f64::NAN;
    let mut last_eval = None;
    let mut early_stopped = false;
    while state.step < cfg.max_steps {
        let started = Instant::now();
        let mut grads: Option<NamedGrads> = None;
        let (mut loss_sum, mut tokens, mut all_tokens) = (0f64, 0usize, 0usize);
        let mut step_metrics: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for _ in 0..accum {
            let bi = state.batch_cursor % n_train;
            state.batch_cursor += 1;
            let BatchLoss {
                loss,
                items: n,
                metrics: batch_metrics,
            } = loss_of(subject, bi)?;
            for (name, v) in batch_metrics {
                let e = step_metrics.entry(name).or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
            let value: f32 = loss.clone().inner().into_scalar::<f32>();
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    step: state.step,
                    batch: bi,
                    value,
                });
            }
            // On the Rayon pool: the backward's kernels then split without waking the pool
            // from outside for each (see tilpass_models::pool).
            let device = loss.device();
            let g =
                tilpass_models::pool::on_pool(&device, || loss.div_scalar(accum as f64).backward());
            add_grads(&mut grads, subject.grads(&g));
            loss_sum += f64::from(value);
            tokens += n;
            all_tokens += batch_tokens[bi];
        }
        let mut grads = grads.unwrap_or_default();
        let grad_norm = match cfg.max_grad_norm {
            Some(m) => clip_global_norm(&mut grads, m),
            None => crate::optim::global_norm(&grads),
        };
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: state.step,
                batch: state.batch_cursor.saturating_sub(1) % n_train,
                value: grad_norm as f32,
            });
        }
        let lr = schedule.lr(state.step);
        subject.update(&mut opt, &grads, lr);
        state.step += 1;
        let mut log = StepLog {
            step: state.step,
            loss: loss_sum / accum as f64,
            lr,
            grad_norm,
            tokens,
            tokens_per_s: all_tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
            metrics: step_metrics
                .into_iter()
                .map(|(k, (sum, n))| (k, sum / n.max(1) as f64))
                .collect(),
        };
        if let Some(f) = step_log.as_mut() {
            f(&mut log);
        }
        first_loss.get_or_insert(log.loss);
        last_loss = log.loss;
        log_line(serde_json::to_value(&log).unwrap_or_default())?;
        on_event(Event::Step(&log));
        if let Some(every) = cfg.eval_steps
            && state.step.is_multiple_of(every)
            && let Some(e) = eval_of(subject, state.step)?
        {
            log_line(serde_json::to_value(&e).unwrap_or_default())?;
            on_event(Event::Eval(&e));
            if state.best_eval_loss.is_none_or(|b| e.eval_loss < b) {
                state.best_eval_loss = Some(e.eval_loss);
                state.evals_without_improvement = 0;
            } else {
                state.evals_without_improvement += 1;
            }
            last_eval = Some(e);
            if cfg
                .early_stopping_patience
                .is_some_and(|p| state.evals_without_improvement >= p)
            {
                early_stopped = true;
                on_event(Event::EarlyStop { step: state.step });
            }
        }
        if let (Some(every), Some(dir)) = (cfg.save_steps, &cfg.output_dir)
            && (state.step.is_multiple_of(every) || early_stopped)
        {
            let p = save_checkpoint_with_extras(
                subject,
                &opt,
                &state,
                dir,
                cfg.save_total_limit,
                checkpoint_extras
                    .as_mut()
                    .map(|f| &mut **f as &mut dyn FnMut(&Path) -> Result<()>),
            )?;
            on_event(Event::Checkpoint(&p));
        }
        if early_stopped {
            break;
        }
    }
    Ok(Summary {
        steps: state.step,
        first_loss: first_loss.unwrap_or(f64::NAN),
        last_loss,
        last_eval,
        early_stopped,
    })
}

/// Mean loss per supervised token over `eval`.
pub fn evaluate(model: &DecoderLm, eval: &[LmBatch], step: usize) -> Result<EvalLog> {
    token_mean_eval(step, eval.iter().map(|b| causal_lm_loss(model, b)))
}

/// The evaluation log of per-batch `(mean loss, supervised tokens)`: their token-weighted mean
/// (a non-finite mean is an error naming the step).
pub(crate) fn token_mean_eval(
    step: usize,
    losses: impl Iterator<Item = Result<(Tensor<1>, usize)>>,
) -> Result<EvalLog> {
    let (mut total, mut count) = (0f64, 0usize);
    for l in losses {
        let (loss, n) = l?;
        total += f64::from(loss.inner().into_scalar::<f32>()) * n as f64;
        count += n;
    }
    let eval_loss = total / count.max(1) as f64;
    if !eval_loss.is_finite() {
        return Err(TrainError::NonFiniteOutput {
            what: format!("evaluation loss after step {step}"),
            value: eval_loss,
        });
    }
    Ok(EvalLog {
        step,
        eval_loss,
        perplexity: eval_loss.exp(),
        samples: Vec::new(),
        metrics: BTreeMap::new(),
    })
}

/// Writes `dir/checkpoint-<step>/` atomically (a temporary directory renamed into place):
/// the adapter in PEFT's format (full fine-tuning: every parameter in `model.safetensors`), the optimiser state and `trainer_state.json`; then removes the
/// oldest checkpoints beyond `keep`.
pub fn save_checkpoint<M: HasLinears>(
    model: &mut PeftModel<M>,
    opt: &AdamW,
    state: &TrainerState,
    dir: &Path,
    keep: usize,
) -> Result<PathBuf> {
    let target = if state.full {
        Target::Full
    } else {
        Target::Adapter(&state.adapter)
    };
    save_checkpoint_of(&mut PeftTarget { model, target }, opt, state, dir, keep)
}

/// [`save_checkpoint`] for anything [`Trainable`].
pub fn save_checkpoint_of<S: Trainable>(
    subject: &mut S,
    opt: &AdamW,
    state: &TrainerState,
    dir: &Path,
    keep: usize,
) -> Result<PathBuf> {
    save_checkpoint_with_extras(subject, opt, state, dir, keep, None)
}

/// [`save_checkpoint_of`] that lets `extras` write further files into the temporary directory
/// after the checkpoint's own files and before it is renamed into place, so that they are in
/// the checkpoint as soon as it exists; an error from `extras` leaves no checkpoint (nor the
/// temporary directory) behind.
pub fn save_checkpoint_with_extras<S: Trainable>(
    subject: &mut S,
    opt: &AdamW,
    state: &TrainerState,
    dir: &Path,
    keep: usize,
    extras: Option<CheckpointExtrasFn<'_>>,
) -> Result<PathBuf> {
    let final_dir = dir.join(format!("checkpoint-{}", state.step));
    if final_dir.exists() && checkpoint_run_id(&final_dir).as_deref() != Some(&state.run_id) {
        return Err(TrainError::Resume {
            path: final_dir.display().to_string(),
            message: "a checkpoint of another run (or not a checkpoint) is in the way; \
                      refusing to replace it: use another output directory"
                .into(),
        });
    }
    let tmp = tilpass_core::temp_dir_for(&final_dir)?;
    let written = write_checkpoint(subject, opt, state, &tmp).and_then(|()| {
        if let Some(f) = extras {
            f(&tmp)?;
        }
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir)
                .map_err(|e| tilpass_core::Error::io(&final_dir, e))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(|e| tilpass_core::Error::io(&final_dir, e))?;
        Ok(())
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    tilpass_core::forget_temp(&tmp);
    written?;
    // Keep the newest `keep` checkpoints of this run; other directories are never touched.
    let mut existing: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| tilpass_core::Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let step = checkpoint_step(&e.file_name().to_string_lossy())?;
            let p = e.path();
            (p.is_dir() && checkpoint_run_id(&p).as_deref() == Some(&state.run_id))
                .then_some((step, p))
        })
        .collect();
    existing.sort();
    while existing.len() > keep.max(1) {
        let (_, p) = existing.remove(0);
        let _ = std::fs::remove_dir_all(p);
    }
    Ok(final_dir)
}

/// Writes a checkpoint's files into `tmp`.
fn write_checkpoint<S: Trainable>(
    subject: &mut S,
    opt: &AdamW,
    state: &TrainerState,
    tmp: &Path,
) -> Result<()> {
    subject.save_weights(tmp)?;
    let tensors = opt.state_tensors();
    let meta = [("step".to_string(), opt.step.to_string())]
        .into_iter()
        .collect();
    save_safetensors(
        tmp.join(OPTIMIZER_FILE),
        tensors.iter().map(|(k, t)| (k.as_str(), t)),
        SaveDtype::F32,
        Some(meta),
    )?;
    let json =
        serde_json::to_string_pretty(state).map_err(|e| TrainError::Config(e.to_string()))?;
    tilpass_core::write_atomic(tmp.join(STATE_FILE), json.as_bytes())?;
    Ok(())
}

/// Loads full-model weights written by [`save_checkpoint`] into `model`, after checking that
/// the file holds exactly this model's parameters with the same sizes.
fn restore_full<M: HasLinears>(
    model: &mut PeftModel<M>,
    path: &Path,
    sizes: &std::collections::BTreeMap<String, usize>,
) -> Result<()> {
    let ck = Checkpoint::open(path)?;
    let mut saved = std::collections::BTreeMap::new();
    for k in ck.keys() {
        saved.insert(k.to_string(), ck.read_f32(k)?);
    }
    let mismatch: Vec<&String> = sizes
        .keys()
        .chain(saved.keys())
        .filter(|k| sizes.get(*k).copied() != saved.get(*k).map(|t| t.numel()))
        .take(3)
        .collect();
    if !mismatch.is_empty() {
        return Err(TrainError::Resume {
            path: path.display().to_string(),
            message: format!(
                "the saved weights do not match this model (e.g. {mismatch:?}): another \
                 architecture or config"
            ),
        });
    }
    let mut failed = None;
    model.map_params(None, &mut |name, v, _, _| {
        let t = saved.get(name)?;
        match HostTensor::new(vec![t.numel()], t.data.clone())
            .and_then(|h| h.to_tensor::<1>(&v.device()))
        {
            Ok(t) => Some(t),
            Err(e) => {
                failed.get_or_insert(e);
                None
            }
        }
    });
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
