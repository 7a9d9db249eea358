//! Reward models: `tilpass train reward` (flags into a [`tilpass::preference::RewardRun`]) and
//! `tilpass reward score` (one score per JSONL row from a decoder or encoder sequence
//! classifier).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{Value, json};
use tilpass::Error;
use tilpass::Result;
use tilpass::data::{Content, Record};
use tilpass::models::{
    DecoderClassifier, DecoderInput, EncoderModel, HasLinears, ModelError, ScoreInit,
    SequenceClassifier,
};
use tilpass::peft::PeftModel;
use tilpass::peft::classifier_defaults;
use tilpass::preference::{RewardModel, RewardRun, is_encoder_reward_model};
use tilpass::tokenize::{PreferenceConfig, Tokenizer, encode_preference};
use tilpass::train::{Progress, RunConfig};

use crate::common::{ConfigArgs, ModelArgs, finite_f64, print};
use crate::train::{LoraFlags, OptimFlags};

/// The flags of `train reward` (TRL's RewardConfig names; the defaults: `--print-config`).
#[derive(Args, Serialize)]
#[command(after_help = crate::common::TRAIN_CONFIG_HELP)]
pub struct RewardTrainArgs {
    #[command(flatten)]
    #[serde(skip)]
    config: ConfigArgs,
    /// Model directory (config.json, safetensors, tokenizer files): a Llama / Mistral / GPT-2
    /// causal LM (a new score head is drawn) or a *ForSequenceClassification reward model; or
    /// a BERT / NorBERT3 encoder (a new one-score head unless it has one; LoRA only).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Preference data (JSONL / JSON rows with prompt, chosen, rejected and an optional
    /// margin; TRL formats), or `builtin:norsk-pref` (`builtin:norsk-pref:eval` is its
    /// held-out split).
    #[arg(long)]
    data: Option<String>,
    /// Held-out pairs evaluated before training, every --eval-steps and after training
    /// (eval_loss, eval_accuracy, eval_margin, ...), e.g. builtin:norsk-pref:eval.
    #[arg(long)]
    eval_data: Option<String>,
    /// Evaluate on --eval-data every N steps (besides before and after training).
    #[arg(long)]
    eval_steps: Option<usize>,
    /// Stop after N evaluations without a lower eval loss.
    #[arg(long)]
    early_stopping_patience: Option<usize>,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Resume from a checkpoint directory of an earlier run.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Replace an earlier run in a non-empty --out; without it a non-empty --out is refused
    /// unless resuming.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    overwrite_output_dir: Option<bool>,
    /// Device: flex (CPU), wgpu, wgpu-cpu, wgpu:N, cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Chat template for conversational rows (the model's, or a named one).
    #[arg(long)]
    chat_template: Option<String>,
    /// Pairs with a sequence longer than this many tokens are dropped (TRL: 1024).
    #[arg(long)]
    max_length: Option<usize>,
    /// Pad batches to a multiple of this many columns.
    #[arg(long)]
    pad_to_multiple_of: Option<usize>,
    /// Coefficient of mean((r_chosen + r_rejected)^2), centring the rewards (TRL: none; 0.01
    /// suggested).
    #[arg(long, allow_negative_numbers = true, value_parser = finite_f64)]
    center_rewards_coefficient: Option<f64>,
    /// Full fine-tuning: train every parameter; the model is saved in transformers' layout.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    full: Option<bool>,
    #[command(flatten)]
    #[serde(flatten)]
    lora: LoraFlags,
    #[command(flatten)]
    #[serde(flatten)]
    optim: OptimFlags,
    #[command(flatten)]
    #[serde(flatten)]
    adam: crate::train::AdamFlags,
    #[command(flatten)]
    #[serde(flatten)]
    checkpoints: crate::train::CheckpointFlags,
}

/// Runs `tilpass train reward`.
pub fn train_reward_cmd(a: &RewardTrainArgs) -> Result<()> {
    let Some(run) = a.config.resolve::<RewardRun>(a)? else {
        return Ok(());
    };
    let device = tilpass::device(&run.device)?;
    let mut bar = Progress::new(RewardRun::JOB, run.steps);
    let o = run
        .run(&device, &mut |e| crate::train::show(&mut bar, e))
        .inspect_err(|_| crate::common::after_error(bar.take_held()))?;
    bar.finish(&o.summary);
    let key = if run.full { "model" } else { "adapter" };
    print(&json!({
        "summary": o.summary,
        "initial_eval": o.initial_eval,
        "final_eval": o.final_eval,
        key: o.saved.display().to_string(),
    }));
    Ok(())
}

#[derive(Subcommand)]
pub enum RewardCommand {
    /// Score JSONL rows with a reward model (a decoder *ForSequenceClassification, or a causal
    /// LM with a reward adapter from `tilpass train reward`; or a BERT / NorBERT3
    /// *ForSequenceClassification with one label, or such an encoder with a reward adapter
    /// that carries its head): prompt/completion rows print
    /// {"line", "score"}, chosen/rejected rows {"line", "chosen", "rejected"}, one JSON line
    /// per row, after every row was read and scored.
    ///
    /// Each sequence is encoded as TRL's RewardTrainer encodes it: prompt + completion with
    /// EOS appended to plain text (unless present) and the tokenizer's special tokens, or the
    /// conversation through the chat template; the score is read at its last token that is not
    /// the pad id (for an encoder: its pooled first token).
    Score(ScoreArgs),
}

/// The flags of `reward score`.
#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSONL rows: {"prompt", "completion"} or {"prompt"?, "chosen", "rejected"} (text or
    /// conversations, TRL formats).
    #[arg(long)]
    data: PathBuf,
    /// Chat template for conversational rows (the model's, or a named one).
    #[arg(long)]
    chat_template: Option<String>,
}

/// One row to score: its line and the sequences (1 or chosen + rejected).
struct Row {
    line: usize,
    pair: bool,
    seqs: Vec<Vec<u32>>,
}

/// Reads and encodes every row of `path` (errors name the file and line).
fn read_rows(path: &Path, tok: &Tokenizer, chat_template: Option<&str>) -> Result<Vec<Row>> {
    let cfg = PreferenceConfig {
        max_length: None,
        chat_template: chat_template.map(str::to_string),
        ..Default::default()
    };
    let at = |line: usize, message: String| {
        Error::invalid(format!("{}:{line}: {message}", path.display()))
    };
    let mut rows = Vec::new();
    for (i, row) in tilpass::data::JsonlRows::open(path)?.enumerate() {
        let (loc, value) = row?;
        let line = match loc {
            tilpass::data::Location::Line(n) => n,
            tilpass::data::Location::Item(n) => n,
        };
        let value: Value = value.map_err(|e| at(line, format!("not JSON: {e}")))?;
        let record = Record::from_json(&value, None).map_err(|e| at(line, e.to_string()))?;
        let (prompt, chosen, rejected, pair) = match record {
            Record::PromptCompletion { prompt, completion } => {
                (Some(prompt), completion.clone(), completion, false)
            }
            Record::Preference {
                prompt,
                chosen,
                rejected,
            } => (prompt, chosen, rejected, true),
            other => {
                return Err(at(
                    line,
                    format!(
                        "expected a prompt/completion or a chosen/rejected row, found a {} row",
                        other.kind().as_str()
                    ),
                ));
            }
        };
        let empty = |c: &Content| match c {
            Content::Text(t) => t.trim().is_empty(),
            Content::Messages(m) => m.is_empty(),
        };
        if empty(&chosen) || empty(&rejected) {
            return Err(at(line, "an empty completion has nothing to score".into()));
        }
        let r = Record::Preference {
            prompt,
            chosen,
            rejected,
        };
        let e = encode_preference(tok, &r, &cfg, i).map_err(|e| at(line, e.to_string()))?;
        let c = [e.prompt_ids.as_slice(), &e.chosen_ids].concat();
        let mut seqs = vec![c];
        if pair {
            seqs.push([e.prompt_ids.as_slice(), &e.rejected_ids].concat());
        }
        rows.push(Row { line, pair, seqs });
    }
    if rows.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no rows to score",
            path.display()
        )));
    }
    Ok(rows)
}

/// A reward model to score with: a decoder classifier, or a BERT / NorBERT3 classifier.
enum Scorer {
    Decoder(Box<DecoderClassifier>),
    Encoder(EncoderModel),
}

impl Scorer {
    /// The scores `[rows, num_labels]` of right-padded rows.
    fn scores(&self, input: &DecoderInput) -> Result<Vec<f32>> {
        let t = match self {
            Self::Decoder(m) => m.scores(input)?,
            Self::Encoder(m) => RewardModel::row_scores(m, input)?,
        };
        t.into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| Error::invalid(format!("reading scores: {e:?}")))
    }

    fn num_labels(&self) -> usize {
        match self {
            Self::Decoder(m) => m.num_labels(),
            Self::Encoder(m) => SequenceClassifier::num_labels(m),
        }
    }
}

/// Loads an encoder reward model: a one-label `*ForSequenceClassification` BERT / NorBERT3
/// directory, or any such encoder with an adapter from `tilpass train reward` that carries
/// the one-score head (`modules_to_save` with `classifier` / `head`).
fn load_encoder_reward_model(args: &ModelArgs) -> Result<EncoderModel> {
    let device = tilpass::device(&args.device)?;
    let mut model = EncoderModel::load(&args.model, &device)?;
    let Some(dir) = &args.adapter else {
        return Ok(model);
    };
    let head = classifier_defaults(&model.model_type()).map_or("classifier", |d| d.head);
    let file = dir.join("adapter_model.safetensors");
    let ck = tilpass::core::Checkpoint::open(&file)?;
    let carried = ck
        .keys()
        .any(|n| n.starts_with(&format!("base_model.model.{head}.")));
    if SequenceClassifier::num_labels(&model) != 1 {
        if !carried {
            return Err(Error::invalid(format!(
                "{}: the model's classifier has {} outputs and the adapter {} carries no head \
                 (`modules_to_save` with `{head}`): it is not a reward model",
                args.model.display(),
                SequenceClassifier::num_labels(&model),
                dir.display()
            )));
        }
        // The adapter's saved one-score head replaces this new one.
        model = model.with_new_classifier(&["LABEL_0".to_string()], 0)?;
    }
    let mut peft = PeftModel::new(model);
    peft.load_adapter(dir, "default")?;
    Ok(peft.into_model())
}

/// Loads the reward model of `args`: a `*ForSequenceClassification` directory, or any decoder
/// with an adapter that carries the score head (`modules_to_save = ["score"]`).
fn load_reward_model(args: &ModelArgs) -> Result<DecoderClassifier> {
    let device = tilpass::device(&args.device)?;
    let model = match DecoderClassifier::load(&args.model, &device) {
        Ok(m) => m,
        Err(ModelError::MissingHead { .. }) if args.adapter.is_some() => {
            let dir = args.adapter.as_deref().unwrap_or(Path::new("."));
            let file = dir.join("adapter_model.safetensors");
            let ck = tilpass::core::Checkpoint::open(&file)?;
            if !ck.contains("base_model.model.score.weight") {
                return Err(Error::invalid(format!(
                    "{}: the model has no score head and the adapter {} does not carry one \
                     (`modules_to_save` with `score`): it is not a reward model",
                    args.model.display(),
                    dir.display()
                )));
            }
            let init = ScoreInit::NewIfMissing {
                num_labels: 1,
                seed: 0,
            };
            DecoderClassifier::load_with(&args.model, init, &device)?
        }
        Err(e) => return Err(e.into()),
    };
    let Some(dir) = &args.adapter else {
        return Ok(model);
    };
    let mut peft = PeftModel::new(model);
    peft.load_adapter(dir, "default")?;
    Ok(peft.into_model())
}

/// Runs `tilpass reward score`.
pub fn reward_cmd(c: RewardCommand) -> Result<()> {
    let RewardCommand::Score(a) = c;
    let tok = Tokenizer::from_dir(&a.model.model)?;
    let rows = read_rows(&a.data, &tok, a.chat_template.as_deref())?;
    let model = if is_encoder_reward_model(&a.model.model) {
        Scorer::Encoder(load_encoder_reward_model(&a.model)?)
    } else {
        let mut model = load_reward_model(&a.model)?;
        if model.pad_token_id().is_none() {
            // TRL's rule: the tokenizer's pad token, else its EOS.
            model.set_pad_token_id(tok.pad_id().or(tok.eos_id()));
        }
        Scorer::Decoder(Box::new(model))
    };
    if model.num_labels() != 1 {
        return Err(Error::invalid(format!(
            "{}: a reward model has one output; this classifier has {}",
            a.model.model.display(),
            model.num_labels()
        )));
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let mut scores = Vec::with_capacity(r.seqs.len());
        for s in &r.seqs {
            let input = DecoderInput::unpadded(std::slice::from_ref(s))?;
            let v = model.scores(&input)?;
            let v = f64::from(v[0]);
            if !v.is_finite() {
                return Err(Error::invalid(format!(
                    "{}:{}: the model gave a non-finite score ({v}); its weights are broken",
                    a.data.display(),
                    r.line
                )));
            }
            scores.push(v);
        }
        out.push(if r.pair {
            json!({"line": r.line, "chosen": scores[0], "rejected": scores[1]})
        } else {
            json!({"line": r.line, "score": scores[0]})
        });
    }
    for v in &out {
        print(v);
    }
    Ok(())
}
