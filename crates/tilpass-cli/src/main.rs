//! The `tilpass` command. Machine-readable results go to stdout as JSON; progress and logs go
//! to stderr. Exit code 0 on success, 2 on bad input with a one-line cause on stderr.

/// mimalloc keeps freed tensor buffers for reuse; glibc's malloc returns large ones to the OS
/// and pays page faults to get them back (about 25% of a decoder prefill on Flex).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tells mimalloc to keep freed memory for reuse instead of purging it back to the OS: large
/// tensors are freed and reallocated on every step, and re-faulting their zeroed pages cost
/// ~25% of a training step (docs/benchmarks.md).
fn keep_freed_memory() {
    // SAFETY: mi_option_set only stores an option value; 15 is `mi_option_purge_delay` in
    // mimalloc v2 and v3 (`include/mimalloc.h`), -1 = never purge.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
}

use std::path::PathBuf;
use std::process::ExitCode;

mod metrics_cmd;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tilpass::data::{
    DedupKey, LengthFilter, ReadOptions, RecordKind, dedup, read_dataset, stats, write_jsonl,
};
use tilpass::models::{
    AnyModel, DecoderInput, DecoderLm, EncoderInput, EncoderModel, GenerateConfig, HasLinears,
    Head, Logits, ModelKind, PoolingMode, SentenceEmbedder, Seq2SeqConfig, Seq2SeqLm,
    VirtualPrefix, generate, generate_seq2seq, generate_text_with_prefix, generate_with_prefix,
};
use tilpass::peft::{PeftModel, PromptAdapter, PromptMethod};
use tilpass::tokenize::{
    ExtendConfig, MaskMode, RenderOptions, Tokenizer, TokenizerKind, TrainConfig, encode_chat,
    extend_vocabulary, fertility, train_tokenizer,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(
    name = "tilpass",
    version,
    about = "Adapt language models to Norwegian and other low-resource languages"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize text or a conversation: prints {"ids", "text", "assistant_mask"}.
    Tokenize(TokenizeArgs),
    /// Inspect and clean datasets (JSONL or JSON, TRL formats).
    #[command(subcommand)]
    Data(DataCommand),
    /// Train tokenizers, extend vocabularies, measure fertility.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Logits for one sequence of any model: prints {"shape": [...], "logits": [...]}.
    ///
    /// Values are row-major f32. The head named by config.json's `architectures` decides the
    /// shape: causal and masked LMs [1, seq, vocab], sequence classifiers [1, num_labels],
    /// token classifiers [1, seq, num_labels], encoder-decoders (T5, NorT5) [1, dec_seq,
    /// vocab] over --decoder-ids. Non-finite logits (NaN/inf) exit 2.
    Logits(LogitsArgs),
    /// Generate from a text prompt (--prompt) or token ids (--ids); --json for a JSON object.
    ///
    /// Decoders and encoder-decoders. Text is streamed to stdout; without a tokenizer (--ids)
    /// the new ids are printed; --json prints {"ids", "prompt_ids", "text"}.
    Generate(GenerateArgs),
    /// Chat with a model on stdin/stdout through its chat template.
    Chat(ChatArgs),
    /// Label texts with an instruction LLM by scoring each label's verbalisation (LamBERT
    /// step 1): reads JSONL rows with a text field, writes them back with "label",
    /// "confidence" and "probabilities".
    Annotate(AnnotateArgs),
    /// Label a JSONL stream with a classifier trained by `tilpass train classify` (LamBERT
    /// step 3); prints throughput.
    Predict(PredictArgs),
    /// Train adapters (LoRA SFT on a decoder, BERT classifiers).
    #[command(subcommand)]
    Train(TrainCommand),
    /// Inspect or merge LoRA / DoRA adapters (HF PEFT format).
    #[command(subcommand)]
    Peft(PeftCommand),
    /// Evaluation metrics: BLEU / chrF / chrF++ (sacrebleu-exact), ROUGE, SQuAD EM/F1, chat
    /// statistics, retrieval (trec_eval), language identification, pairwise LLM-as-judge.
    Metrics(metrics_cmd::MetricsArgs),
    /// Sentence embeddings from an encoder (BERT, NorBERT3): one --text prints
    /// {"dim", "embedding"}; several texts or --file print one JSON line per text.
    Embed(EmbedArgs),
}

#[derive(Args)]
struct AnnotateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Input JSONL (one object per line).
    #[arg(long)]
    data: PathBuf,
    /// Field holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// The labels, comma-separated (their words are scored as continuations).
    #[arg(long, value_delimiter = ',', required = true)]
    labels: Vec<String>,
    /// Prompt with `{text}` where the text goes.
    #[arg(long, default_value = "Tekst: {text}\nKategori:")]
    template: String,
    /// Output JSONL.
    #[arg(long)]
    out: PathBuf,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
}

fn annotate_cmd(a: AnnotateArgs) -> Result<(), BoxError> {
    use std::io::Write;
    use tilpass::train::{label_probabilities, score_labels};
    let (model, _) = load_model(&a.model)?;
    let tok = Tokenizer::from_dir(&a.model.model)?;
    let verbal = a
        .labels
        .iter()
        .map(|l| tok.encode(&format!(" {l}"), false))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = tilpass::core::TextLines::open(&a.data)?;
    let tmp = a.out.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?,
    );
    let template = a.template.replace("\\n", "\n");
    let start = std::time::Instant::now();
    let mut done = 0usize;
    let mut pending: Vec<(serde_json::Value, Vec<u32>)> = Vec::new();
    let flush = |pending: &mut Vec<(serde_json::Value, Vec<u32>)>,
                 out: &mut std::io::BufWriter<std::fs::File>|
     -> Result<(), BoxError> {
        let prompts: Vec<Vec<u32>> = pending.iter().map(|(_, p)| p.clone()).collect();
        let scores = score_labels(&model, &prompts, &verbal, a.batch_size)?;
        for ((mut row, _), s) in pending.drain(..).zip(scores) {
            let (best, probs) = label_probabilities(&s);
            row["label"] = json!(a.labels[best]);
            row["confidence"] = json!(probs[best]);
            row["probabilities"] = json!(
                a.labels
                    .iter()
                    .zip(&probs)
                    .map(|(l, p)| (l.clone(), json!(p)))
                    .collect::<serde_json::Map<_, _>>()
            );
            writeln!(out, "{row}")?;
        }
        Ok(())
    };
    for row in rows {
        let (n, line) = row?;
        if line.trim().is_empty() {
            continue;
        }
        let row: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("{}:{n}: {e}", a.data.display()))?;
        let text = row[&a.text_field].as_str().ok_or_else(|| {
            format!(
                "{}:{n}: no string field `{}`",
                a.data.display(),
                a.text_field
            )
        })?;
        let prompt = tok.encode(&template.replace("{text}", text), true)?;
        pending.push((row, prompt));
        if pending.len() >= a.batch_size {
            flush(&mut pending, &mut out)?;
            done += a.batch_size;
            tracing::info!(
                "{done} texts, {:.1}/s",
                done as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    flush(&mut pending, &mut out)?;
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, &a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    Ok(())
}

#[derive(Subcommand)]
enum TrainCommand {
    /// LoRA supervised fine-tuning of a decoder on a chat / prompt-completion dataset (TRL
    /// formats); writes the adapter (HF PEFT format), checkpoints and metrics.jsonl to --out.
    Sft(SftArgs),
    /// Train a BERT sequence classifier (LoRA + a new classifier head) on labelled JSONL
    /// (LamBERT step 2); prints accuracy and macro-F1 on a held-out split.
    Classify(ClassifyArgs),
}

#[derive(Args)]
struct ClassifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Labelled JSONL (e.g. from `tilpass annotate`).
    #[arg(long)]
    data: PathBuf,
    /// Field holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Field holding the label.
    #[arg(long, default_value = "label")]
    label_field: String,
    /// Output directory (adapter/ with labels.json, metrics.jsonl).
    #[arg(long)]
    out: PathBuf,
    /// Fraction of the rows (the last ones) held out for evaluation.
    #[arg(long, default_value_t = 0.1)]
    eval_split: f64,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    lora_r: usize,
    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f64,
    /// Rows per batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Optimiser steps.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Truncate texts to this many tokens.
    #[arg(long, default_value_t = 128)]
    max_length: usize,
}

/// Rows of a JSONL file with their 1-based line numbers.
fn read_jsonl(path: &std::path::Path) -> Result<Vec<(usize, serde_json::Value)>, BoxError> {
    let mut rows = Vec::new();
    for row in tilpass::core::TextLines::open(path)? {
        let (n, l) = row?;
        if l.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(&l).map_err(|e| format!("{}:{n}: {e}", path.display()))?;
        rows.push((n, v));
    }
    Ok(rows)
}

fn field<'a>(
    row: &'a serde_json::Value,
    name: &str,
    path: &std::path::Path,
    line: usize,
) -> Result<&'a str, BoxError> {
    row[name]
        .as_str()
        .ok_or_else(|| format!("{}:{line}: no string field `{name}`", path.display()).into())
}

/// A BERT or LTG-BERT (NorBERT3) encoder turned into a fresh classifier over `labels`, with the
/// LoRA targets and the head's module name for `modules_to_save`.
fn load_classifier(
    args: &ModelArgs,
    labels: &[String],
    device: &tilpass::burn::tensor::Device,
) -> Result<
    (
        tilpass::models::EncoderModel,
        [&'static str; 2],
        &'static str,
    ),
    BoxError,
> {
    let m = tilpass::models::EncoderModel::load(&args.model, device)?;
    let (targets, head) = match &m {
        tilpass::models::EncoderModel::Bert(_) => (["query", "value"], "classifier"),
        tilpass::models::EncoderModel::LtgBert(_) => (["in_proj_qk", "in_proj_v"], "head"),
    };
    Ok((m.with_new_classifier(labels, 0)?, targets, head))
}

fn encode_texts(
    tok: &Tokenizer,
    texts: &[&str],
    max_length: usize,
) -> Result<Vec<Vec<u32>>, BoxError> {
    texts
        .iter()
        .map(|t| {
            let mut ids = tok.encode(t, true)?;
            ids.truncate(max_length.max(2));
            Ok(ids)
        })
        .collect()
}

fn train_classify_cmd(a: ClassifyArgs) -> Result<(), BoxError> {
    use tilpass::train::{TrainConfig, cls_batches, evaluate_classifier, train_classifier};
    let rows = read_jsonl(&a.data)?;
    let mut texts = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    for (line, r) in &rows {
        texts.push(field(r, &a.text_field, &a.data, *line)?);
        labels.push(field(r, &a.label_field, &a.data, *line)?.to_string());
    }
    let mut names: Vec<String> = labels.clone();
    names.sort();
    names.dedup();
    if names.len() < 2 {
        return Err(format!(
            "{}: need at least two distinct labels, found {names:?}",
            a.data.display()
        )
        .into());
    }
    let ids: Vec<usize> = labels
        .iter()
        .map(|l| names.iter().position(|n| n == l).unwrap_or(0))
        .collect();
    let device = tilpass::device(&a.model.device)?.autodiff();
    let tok = Tokenizer::from_dir(&a.model.model)?;
    let (bert, targets, head) = load_classifier(&a.model, &names, &device)?;
    let pad = bert.pad_token_id();
    let encoded = encode_texts(&tok, &texts, a.max_length)?;
    let n_eval = ((rows.len() as f64) * a.eval_split).round() as usize;
    let n_train = rows.len() - n_eval;
    let examples: Vec<(Vec<u32>, usize)> = encoded.into_iter().zip(ids).collect();
    let train = cls_batches(&examples[..n_train], a.batch_size, pad)?;
    let eval = cls_batches(&examples[n_train..], a.batch_size, pad)?;
    let mut peft = PeftModel::new(bert);
    let mut cfg = tilpass::peft::LoraConfig::new(a.lora_r, a.lora_alpha, &targets);
    cfg.modules_to_save = Some(vec![head.into()]);
    cfg.task_type = Some("SEQ_CLS".into());
    cfg.base_model_name_or_path = Some(a.model.model.display().to_string());
    peft.add_adapter("default", &cfg, 0)?;
    peft.freeze_base();
    eprintln!(
        "{} labels {names:?}; {}",
        names.len(),
        peft.trainable_parameters()
    );
    let tc = TrainConfig {
        learning_rate: a.lr,
        max_steps: a.steps,
        output_dir: Some(a.out.clone()),
        ..Default::default()
    };
    let mut progress = tilpass::train::Progress::new("classify", a.steps);
    let summary = train_classifier(&mut peft, "default", &train, &tc, None, &mut |e| {
        progress.on_event(&e)
    })?;
    progress.finish(&summary);
    let report = if eval.is_empty() {
        None
    } else {
        Some(evaluate_classifier(peft.model(), &eval)?)
    };
    let adapter = a.out.join("adapter");
    peft.save_adapter("default", &adapter)?;
    tilpass::core::write_atomic(adapter.join("labels.json"), serde_json::to_string(&names)?)?;
    print(
        &json!({"summary": summary, "labels": names, "eval": report, "adapter": adapter.display().to_string()}),
    );
    Ok(())
}

#[derive(Args)]
struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSONL with a text field.
    #[arg(long)]
    data: PathBuf,
    /// Field holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Output JSONL (rows with "label" and "probabilities" added).
    #[arg(long)]
    out: PathBuf,
    /// Rows per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Truncate texts to this many tokens.
    #[arg(long, default_value_t = 128)]
    max_length: usize,
}

fn predict_cmd(a: PredictArgs) -> Result<(), BoxError> {
    use std::io::Write;
    let adapter = a
        .model
        .adapter
        .clone()
        .ok_or("predict needs --adapter (from `tilpass train classify`)")?;
    let names: Vec<String> = tilpass::core::read_json(adapter.join("labels.json"))?;
    let device = tilpass::device(&a.model.device)?;
    let tok = Tokenizer::from_dir(&a.model.model)?;
    let (bert, _, _) = load_classifier(&a.model, &names, &device)?;
    let pad = bert.pad_token_id();
    let mut peft = PeftModel::new(bert);
    peft.load_adapter(&adapter, "default")?;
    let model = peft.into_model();
    let rows = read_jsonl(&a.data)?;
    let tmp = a.out.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?,
    );
    let start = std::time::Instant::now();
    for chunk in rows.chunks(a.batch_size.max(1)) {
        let texts = chunk
            .iter()
            .map(|(line, r)| field(r, &a.text_field, &a.data, *line))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = encode_texts(&tok, &texts, a.max_length)?;
        let input = EncoderInput::right_padded(&ids, pad)?;
        let preds = tilpass::train::predict(&model, &[input])?;
        for ((_, row), (best, probs)) in chunk.iter().zip(preds) {
            let mut row = row.clone();
            row["label"] = json!(names[best]);
            row["probabilities"] = json!(
                names
                    .iter()
                    .zip(&probs)
                    .map(|(n, p)| (n.clone(), json!(p)))
                    .collect::<serde_json::Map<_, _>>()
            );
            writeln!(out, "{row}")?;
        }
    }
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, &a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let secs = start.elapsed().as_secs_f64();
    print(
        &json!({"rows": rows.len(), "seconds": secs, "rows_per_s": rows.len() as f64 / secs.max(1e-9)}),
    );
    Ok(())
}

#[derive(Args, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct SftArgs {
    /// Settings as JSON (flags given on the command line win).
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Base model directory (config.json, safetensors, tokenizer files).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Training data (JSONL / JSON, TRL formats), or `builtin:norsk-chat` (the embedded
    /// Norwegian chat set; `builtin:norsk-chat:eval` is its held-out split).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Evaluation data (eval loss, perplexity and sample answers every --eval-steps).
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Resume from a checkpoint directory of an earlier run.
    #[arg(long)]
    #[serde(skip)]
    resume: Option<PathBuf>,
    /// Chat template (the model's, or chatml / norsk / a named one).
    #[arg(long)]
    chat_template: Option<String>,
    /// Truncate examples to this many tokens (keeping the start).
    #[arg(long)]
    max_length: Option<usize>,
    /// Full fine-tuning: train every parameter (no adapter); the model is saved in HF layout.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    full: Option<bool>,
    /// Pack several examples into each row (best-fit decreasing, rows of --max-length or the
    /// model's context up to 2048 tokens; attention stays within each example).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    packing: Option<bool>,
    /// LoRA rank.
    #[arg(long)]
    lora_r: Option<usize>,
    /// LoRA alpha.
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// Layers to adapt (comma-separated names; default: the model family's, as PEFT).
    #[arg(long, value_delimiter = ',')]
    target_modules: Option<Vec<String>>,
    /// Rows per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Batches per optimiser step.
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Warmup steps.
    #[arg(long)]
    warmup: Option<usize>,
    /// Evaluate every N steps.
    #[arg(long)]
    eval_steps: Option<usize>,
    /// Checkpoint every N steps.
    #[arg(long)]
    save_steps: Option<usize>,
    /// Device.
    #[arg(long)]
    device: Option<String>,
}

impl Default for SftArgs {
    fn default() -> Self {
        Self {
            config: None,
            model: None,
            data: None,
            eval_data: None,
            out: None,
            resume: None,
            chat_template: None,
            max_length: None,
            full: Some(false),
            packing: Some(false),
            lora_r: Some(16),
            lora_alpha: Some(32.0),
            target_modules: None,
            batch_size: Some(4),
            grad_accum: Some(1),
            lr: Some(2e-4),
            steps: Some(100),
            warmup: Some(0),
            eval_steps: None,
            save_steps: None,
            device: None,
        }
    }
}

impl SftArgs {
    /// Flags over the JSON config over the defaults.
    fn resolve(self) -> Result<Self, BoxError> {
        let base: SftArgs = match &self.config {
            Some(p) => tilpass::core::read_json(p)?,
            None => SftArgs::default(),
        };
        macro_rules! pick { ($($f:ident),*) => { SftArgs { $($f: self.$f.clone().or(base.$f.clone()),)* config: None, resume: self.resume.clone() } } }
        Ok(pick!(
            model,
            data,
            eval_data,
            out,
            chat_template,
            max_length,
            full,
            packing,
            lora_r,
            lora_alpha,
            target_modules,
            batch_size,
            grad_accum,
            lr,
            steps,
            warmup,
            eval_steps,
            save_steps,
            device
        ))
    }
}

/// Records of an SFT data argument: a JSONL/JSON file, or `builtin:norsk-chat[:train|:eval]`
/// (the embedded dataset; its `train` split when none is named).
fn sft_records(p: &std::path::Path) -> Result<Vec<tilpass::data::Record>, BoxError> {
    let s = p.to_string_lossy();
    if let Some(name) = s.strip_prefix("builtin:") {
        let (name, split) = name.split_once(':').unwrap_or((name, "train"));
        if name != tilpass::data::embedded::NORSK_CHAT {
            return Err(format!(
                "unknown built-in dataset `{name}`: the one built in is `builtin:norsk-chat` \
                 (splits :train, :eval)"
            )
            .into());
        }
        return Ok(tilpass::data::embedded::norsk_chat(Some(split))?
            .iter()
            .map(|c| c.record())
            .collect());
    }
    Ok(read_dataset(p, &ReadOptions::default())?.records)
}

fn train_sft_cmd(a: SftArgs) -> Result<(), BoxError> {
    use tilpass::tokenize::{SftConfig, SftEncoder, Truncation};
    use tilpass::train::{
        Progress, Target, TrainConfig, prompt_of, sample_answers, sft_batches,
        train_lm_with_samples,
    };
    let a = a.resolve()?;
    let need =
        |v: &Option<PathBuf>, flag: &str| v.clone().ok_or_else(|| format!("missing --{flag}"));
    let (model_dir, data, out) = (
        need(&a.model, "model")?,
        need(&a.data, "data")?,
        need(&a.out, "out")?,
    );
    let device = tilpass::device(&a.device.clone().unwrap_or_else(|| "flex".into()))?.autodiff();
    let tok = Tokenizer::from_dir(&model_dir)?;
    let base = DecoderLm::load(&model_dir, &device)?;
    let max_positions = base.max_positions();
    let sft = SftConfig {
        chat_template: a.chat_template.clone(),
        max_length: a.max_length,
        truncation: if a.max_length.is_some() {
            Truncation::KeepStart
        } else {
            SftConfig::default().truncation
        },
        ..Default::default()
    };
    let encoder = SftEncoder::new(&tok, sft)?;
    let encode = |p: &PathBuf| -> Result<Vec<tilpass::tokenize::SftExample>, BoxError> {
        let records = sft_records(p)?;
        let (examples, report) = encoder.encode_all(&records)?;
        tracing::info!("{}: {} examples ({report:?})", p.display(), examples.len());
        Ok(examples)
    };
    let pad = tok.pad_id().unwrap_or(0);
    let bs = a.batch_size.unwrap_or(4);
    let train_examples = encode(&data)?;
    let train = if a.packing.unwrap_or(false) {
        let len = a.max_length.unwrap_or(max_positions.min(2048));
        let packed = tilpass::train::packed_batches(&train_examples, len, bs, pad, max_positions)?;
        eprintln!(
            "packing: {} examples into {} batches of up to {bs} rows × {len} tokens",
            train_examples.len(),
            packed.len()
        );
        packed
    } else {
        sft_batches(&train_examples, bs, pad, max_positions)?
    };
    let eval_examples = match &a.eval_data {
        Some(p) => encode(p)?,
        None => Vec::new(),
    };
    let eval = if eval_examples.is_empty() {
        Vec::new()
    } else {
        sft_batches(&eval_examples, bs, pad, max_positions)?
    };
    let full = a.full.unwrap_or(false);
    let mut peft = PeftModel::new(base);
    match (&a.resume, full) {
        (_, true) => {}
        (Some(dir), false) => {
            peft.load_adapter(dir, "default")?;
        }
        (None, false) => {
            let mut cfg = tilpass::peft::LoraConfig::new(
                a.lora_r.unwrap_or(16),
                a.lora_alpha.unwrap_or(32.0),
                &[],
            );
            cfg.target_modules = a
                .target_modules
                .clone()
                .map(tilpass::peft::TargetModules::List);
            cfg.task_type = Some("CAUSAL_LM".into());
            cfg.base_model_name_or_path = Some(model_dir.display().to_string());
            peft.add_adapter("default", &cfg, 0)?;
        }
    }
    if full {
        eprintln!("full fine-tuning: {} parameters", peft.parameter_count());
    } else {
        peft.freeze_base();
        eprintln!("{}", peft.trainable_parameters());
    }
    let cfg = TrainConfig {
        learning_rate: a.lr.unwrap_or(2e-4),
        warmup_steps: a.warmup.unwrap_or(0),
        max_steps: a.steps.unwrap_or(100),
        gradient_accumulation_steps: a.grad_accum.unwrap_or(1),
        eval_steps: a.eval_steps,
        save_steps: a.save_steps,
        output_dir: Some(out.clone()),
        ..Default::default()
    };
    // Sample answers to the first two held-out prompts at each evaluation.
    let sample_prompts: Vec<Vec<u32>> = eval_examples
        .iter()
        .take(2)
        .map(|e| prompt_of(e).to_vec())
        .collect();
    let sampler = |m: &DecoderLm| sample_answers(m, &tok, &sample_prompts, 48);
    let mut progress = Progress::new("sft", cfg.max_steps);
    let target = if full {
        Target::Full
    } else {
        Target::Adapter("default")
    };
    let summary = train_lm_with_samples(
        &mut peft,
        target,
        &train,
        &eval,
        Some(&sampler),
        &cfg,
        a.resume.as_deref(),
        &mut |e| progress.on_event(&e),
    )?;
    progress.finish(&summary);
    let saved = if full {
        let dir = out.join("model");
        peft.save(&dir, tilpass::core::SaveDtype::F32)?;
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            let src = model_dir.join(f);
            if src.is_file() {
                std::fs::copy(&src, dir.join(f)).map_err(|e| tilpass::core::Error::io(&src, e))?;
            }
        }
        dir
    } else {
        let dir = out.join("adapter");
        peft.save_adapter("default", &dir)?;
        dir
    };
    print(
        &json!({"summary": summary, if full { "model" } else { "adapter" }: saved.display().to_string()}),
    );
    Ok(())
}

#[derive(Subcommand)]
enum PeftCommand {
    /// Prints an adapter's config summary; with --model, the layers it adapts and PEFT's
    /// trainable-parameter count.
    Info {
        /// The adapter directory.
        adapter: PathBuf,
        /// A model directory to check the adapter against.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Folds an adapter into a decoder's weights and saves the plain model (HF layout).
    Merge {
        /// The base model directory.
        #[arg(long)]
        model: PathBuf,
        /// The adapter directory.
        #[arg(long)]
        adapter: PathBuf,
        /// Where to write the merged model (config.json + model.safetensors).
        #[arg(long)]
        out: PathBuf,
    },
}

fn peft_cmd(c: PeftCommand) -> Result<(), BoxError> {
    use tilpass::peft::LoraConfig;
    match c {
        PeftCommand::Info { adapter, model } => {
            let cfg = LoraConfig::read(&adapter)?;
            let ckpt =
                tilpass::core::Checkpoint::open(adapter.join(tilpass::peft::ADAPTER_WEIGHTS))?;
            let params: usize = ckpt
                .keys()
                .map(|k| {
                    ckpt.info(k)
                        .map(|i| i.shape.iter().product::<usize>())
                        .unwrap_or(0)
                })
                .sum();
            let mut out = json!({
                "peft_type": cfg.peft_type, "task_type": cfg.task_type, "r": cfg.r,
                "lora_alpha": cfg.lora_alpha, "use_rslora": cfg.use_rslora, "use_dora": cfg.use_dora,
                "target_modules": cfg.target_modules, "modules_to_save": cfg.modules_to_save,
                "tensors": ckpt.len(), "parameters": params,
            });
            if let Some(dir) = model {
                let device = tilpass::device("flex")?;
                fn report<M: HasLinears>(
                    m: M,
                    adapter: &std::path::Path,
                ) -> Result<serde_json::Value, BoxError> {
                    let mut p = PeftModel::new(m);
                    p.load_adapter(adapter, "default")?;
                    let targets = p.targets(&p.adapters()["default"].clone())?;
                    let r = p.trainable_parameters();
                    Ok(
                        json!({"adapted_modules": targets, "trainable_parameters": r.trainable,
                              "total_parameters": r.total, "trainable_percent": r.percent()}),
                    )
                }
                out["model"] = report(AnyModel::load(&dir, &device)?, &adapter)?;
            }
            print(&out);
            Ok(())
        }
        PeftCommand::Merge {
            model,
            adapter,
            out,
        } => {
            let device = tilpass::device("flex")?;
            let base = DecoderLm::load(&model, &device)?;
            let mut peft = PeftModel::new(base);
            peft.load_adapter(&adapter, "default")?;
            let merged = peft.merge_and_unload()?;
            merged.save(&out, tilpass::core::SaveDtype::F32)?;
            print(&json!({"merged": out.display().to_string()}));
            Ok(())
        }
    }
}

#[derive(Args)]
struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Text to embed (repeatable).
    #[arg(long)]
    text: Vec<String>,
    /// A file with one text per line.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Pooling (default: the directory's sentence-transformers config, else mean).
    #[arg(long, value_parser = ["mean", "cls", "max"])]
    pooling: Option<String>,
    /// L2-normalise the embeddings (default: as the directory's modules.json says).
    #[arg(long)]
    normalize: bool,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

#[derive(Args)]
struct ModelArgs {
    /// Model directory (config.json + safetensors; tokenizer files for text input).
    #[arg(long)]
    model: PathBuf,
    /// Device: flex (CPU), wgpu, wgpu-cpu, wgpu:N, cuda:N.
    #[arg(long, default_value = "flex")]
    device: String,
    /// An adapter directory (HF PEFT format): LoRA / DoRA on any model; prefix / prompt /
    /// P-tuning where the command supports it (decoders; BERT classifiers and T5 in `logits`).
    #[arg(long)]
    adapter: Option<PathBuf>,
}

/// Applies `--adapter` (if given) to a freshly loaded model.
fn with_adapter<M: HasLinears>(model: M, args: &ModelArgs) -> Result<M, BoxError> {
    let Some(dir) = &args.adapter else {
        return Ok(model);
    };
    if is_prompt_adapter(dir)? {
        return Err(format!(
            "{}: a prompt-learning adapter (prefix / prompt / P-tuning) applies here to \
             decoders (logits, generate, chat) and, in `tilpass logits`, to BERT sequence \
             classifiers and T5; this command takes LoRA / DoRA adapters for this model",
            dir.display()
        )
        .into());
    }
    let mut peft = PeftModel::new(model);
    peft.load_adapter(dir, "default")?;
    tracing::info!("adapter {}: {}", dir.display(), peft.trainable_parameters());
    Ok(peft.into_model())
}

#[derive(Args)]
#[command(
    after_help = "Output shapes by the head config.json's `architectures` names:
  *ForCausalLM / *LMHeadModel (Llama, Mistral, GPT-2)   [1, seq, vocab]
  *ForMaskedLM (BERT, NorBERT3 / LTG-BERT)              [1, seq, vocab]
  *ForSequenceClassification (BERT, NorBERT3)           [1, num_labels]
  *ForTokenClassification (BERT)                        [1, seq, num_labels]
  *ForConditionalGeneration (T5, mT5, NorT5)            [1, dec_seq, vocab]
Without `architectures` a model loads with its language-model head (causal, masked or
seq2seq). A bare encoder (BertModel) has no logits: use `tilpass embed`.
--adapter takes LoRA / DoRA adapters on every model, and prefix / prompt / P-tuning adapters
on decoders (logits include prompt tuning's virtual columns), BERT sequence classifiers and T5.
Non-finite logits (NaN/inf) exit 2."
)]
struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Token ids, comma-separated, used as given (no special tokens added); the encoder input
    /// of encoder-decoder models.
    #[arg(long, value_delimiter = ',', required = true)]
    ids: Vec<u32>,
    /// Decoder token ids for encoder-decoder models (T5, NorT5), comma-separated (default: the
    /// decoder start token alone).
    #[arg(long, value_delimiter = ',')]
    decoder_ids: Option<Vec<u32>>,
    /// BERT segment ids, one per --ids value (default: zeros).
    #[arg(long, value_delimiter = ',')]
    token_type_ids: Option<Vec<u32>>,
}

#[derive(Args, Clone)]
struct SamplingArgs {
    /// New tokens at most.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample among the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample among the most likely tokens holding this much probability.
    #[arg(long)]
    top_p: Option<f32>,
    /// Repetition penalty (e.g. 1.1).
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the output contains this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Chat template name or built-in (`chatml`, `norsk`).
    #[arg(long)]
    chat_template: Option<String>,
}

impl SamplingArgs {
    fn config(&self) -> GenerateConfig {
        GenerateConfig {
            max_new_tokens: self.max_new_tokens,
            do_sample: self.temperature > 0.0,
            temperature: if self.temperature > 0.0 {
                self.temperature
            } else {
                1.0
            },
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            ..Default::default()
        }
    }
}

#[derive(Args)]
#[command(
    after_help = "Decoders (Llama, Mistral, GPT-2; *ForCausalLM) and encoder-decoders (T5, \
NorT5; *ForConditionalGeneration, greedy or --num-beams). Give exactly one of --prompt (text, \
encoded with the model's tokenizer) and --ids (token ids, for a model without a tokenizer). \
--json prints {\"ids\": new ids, \"prompt_ids\", \"text\"}, \"text\" only when the model \
has a tokenizer; without --json the text is streamed, or without a tokenizer the new ids are \
printed space-separated."
)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "ids"])))]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt text (needs the model's tokenizer).
    #[arg(long)]
    prompt: Option<String>,
    /// The prompt as token ids, comma-separated, used as given (no special tokens added).
    #[arg(long, value_delimiter = ',', conflicts_with = "chat")]
    ids: Option<Vec<u32>>,
    /// Treat the prompt as a user message and apply the chat template.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print {"ids", "prompt_ids", "text"} (no "text" without a tokenizer) instead of
    /// streaming.
    #[arg(long)]
    json: bool,
    /// Beam search with this many beams (encoder-decoder models).
    #[arg(long, default_value_t = 1)]
    num_beams: usize,
    /// Length penalty of beam search.
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f32,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A system message to start the conversation with.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(Args)]
struct TokenizeArgs {
    /// Tokenizer directory (tokenizer.json, tokenizer_config.json, ...).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Text to tokenize.
    #[arg(
        long,
        conflicts_with = "messages",
        required_unless_present = "messages"
    )]
    text: Option<String>,
    /// JSON file with a list of {"role", "content"} messages (or a row with "messages").
    #[arg(long)]
    messages: Option<PathBuf>,
    /// Append the assistant header so the model answers next.
    #[arg(long, requires = "messages")]
    add_generation_prompt: bool,
    /// Chat template: a name the tokenizer carries, or a built-in (`chatml`, `norsk`).
    #[arg(long)]
    chat_template: Option<String>,
    /// How assistant tokens are found: auto, generation_blocks or prefix.
    #[arg(long, default_value = "auto", value_parser = parse_mask_mode)]
    mask_mode: MaskMode,
    /// Do not add the tokenizer's special tokens (BOS, `[CLS]`/`[SEP]`) to --text.
    #[arg(long)]
    no_special_tokens: bool,
}

#[derive(Args)]
struct ReadArgs {
    /// Dataset file (.jsonl, or .json holding an array).
    file: PathBuf,
    /// Force the record kind (language_modeling, prompt_only, prompt_completion, preference,
    /// unpaired_preference, alpaca); by default the first row decides.
    #[arg(long)]
    format: Option<RecordKind>,
    /// Drop invalid rows (counted and reported) instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
}

impl ReadArgs {
    fn options(&self, skip_invalid: bool) -> ReadOptions {
        ReadOptions {
            kind: self.format,
            skip_invalid: skip_invalid || self.skip_invalid,
            max_reported: Some(20),
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
enum DataCommand {
    /// Rows, kinds, turns and characters of a dataset.
    Stats(ReadArgs),
    /// Check every row; prints a report and exits 2 when any row is invalid.
    Validate(ReadArgs),
    /// Remove duplicates (and optionally too short/long rows); writes JSONL.
    Dedup {
        #[command(flatten)]
        read: ReadArgs,
        /// Output JSONL file.
        #[arg(long)]
        out: PathBuf,
        /// What makes two rows duplicates: exact, normalized (case and white space) or prompt.
        #[arg(long, default_value = "exact", value_parser = parse_dedup_key)]
        key: DedupKey,
        /// Drop rows with fewer characters.
        #[arg(long)]
        min_chars: Option<usize>,
        /// Drop rows with more characters.
        #[arg(long)]
        max_chars: Option<usize>,
    },
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Train a new tokenizer on text files (one document per line).
    Train {
        /// Training text files.
        #[arg(long, num_args = 1.., required = true)]
        files: Vec<PathBuf>,
        /// bpe (byte-level), unigram or wordpiece.
        #[arg(long, default_value = "bpe")]
        kind: TokenizerKind,
        /// Vocabulary size, special tokens included.
        #[arg(long, default_value_t = 32000)]
        vocab_size: usize,
        /// Minimum frequency of a merge (BPE, WordPiece).
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// Chat template to store with the tokenizer (`chatml`, `norsk`).
        #[arg(long)]
        chat_template: Option<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add frequent, badly split words of a corpus to a tokenizer.
    Extend {
        /// Tokenizer directory.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Corpus file (one text per line).
        #[arg(long)]
        corpus: PathBuf,
        /// Add at most this many tokens.
        #[arg(long, default_value_t = 1000)]
        max_new_tokens: usize,
        /// Only words seen at least this often.
        #[arg(long, default_value_t = 5)]
        min_frequency: usize,
        /// Only words split into at least this many pieces.
        #[arg(long, default_value_t = 3)]
        min_pieces: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Tokens per word of a tokenizer on a corpus.
    Fertility {
        /// Tokenizer directory.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Corpus file (one text per line).
        #[arg(long)]
        corpus: PathBuf,
    },
}

fn parse_mask_mode(s: &str) -> Result<MaskMode, String> {
    serde_json::from_value(json!(s))
        .map_err(|_| format!("unknown mask mode `{s}`; expected auto, generation_blocks or prefix"))
}

fn parse_dedup_key(s: &str) -> Result<DedupKey, String> {
    serde_json::from_value(json!(s))
        .map_err(|_| format!("unknown dedup key `{s}`; expected exact, normalized or prompt"))
}

fn print(v: &serde_json::Value) {
    println!("{}", serde_json::to_string(v).expect("JSON value"));
}

fn read_lines(path: &PathBuf) -> Result<Vec<String>, BoxError> {
    Ok(tilpass::core::TextLines::open(path)?
        .map(|l| l.map(|(_, text)| text))
        .collect::<Result<_, _>>()?)
}

fn tokenize(a: TokenizeArgs) -> Result<(), BoxError> {
    let tok = tilpass::tokenize::Tokenizer::from_dir(&a.tokenizer)?;
    if let Some(text) = a.text {
        let ids = tok.encode(&text, !a.no_special_tokens)?;
        print(&json!({"ids": ids, "text": text, "assistant_mask": null}));
        return Ok(());
    }
    let path = a.messages.expect("clap requires --text or --messages");
    let value: serde_json::Value = {
        let text = tilpass::core::read_text(&path)?;
        serde_json::from_str(&text).map_err(|e| format!("{}: invalid JSON: {e}", path.display()))?
    };
    let list = value.get("messages").cloned().unwrap_or(value);
    let messages = tilpass::data::parse_messages(&list)
        .map_err(|e| format!("{}: {}", path.display(), e.within("messages")))?;
    let template = tok.chat_template(a.chat_template.as_deref())?;
    let opts = RenderOptions {
        add_generation_prompt: a.add_generation_prompt,
        ..Default::default()
    };
    let enc = encode_chat(&tok, &template, &messages, &opts, a.mask_mode)?;
    print(&json!({"ids": enc.ids, "text": enc.text, "assistant_mask": enc.assistant_mask}));
    Ok(())
}

fn data(cmd: DataCommand) -> Result<bool, BoxError> {
    match cmd {
        DataCommand::Stats(r) => {
            let ds = read_dataset(&r.file, &r.options(false))?;
            print(&json!({"stats": stats(&ds.records), "read": ds.report}));
        }
        DataCommand::Validate(r) => {
            let ds = read_dataset(&r.file, &r.options(true))?;
            let bad = ds.report.skipped_count;
            print(&json!({"valid": bad == 0, "read": ds.report}));
            if bad > 0 {
                let first = &ds.report.skipped[0];
                eprintln!(
                    "error: {}: {bad} invalid row(s) of {}; first at {}: {}",
                    r.file.display(),
                    ds.report.rows,
                    first.location,
                    first.reason
                );
                return Ok(false);
            }
        }
        DataCommand::Dedup {
            read,
            out,
            key,
            min_chars,
            max_chars,
        } => {
            let ds = read_dataset(&read.file, &read.options(false))?;
            let mut records = ds.records;
            let filter = LengthFilter {
                min_chars,
                max_chars,
            };
            let removed_length = filter.apply(&mut records);
            let report = dedup(&mut records, key);
            write_jsonl(&out, &records)?;
            print(&json!({
                "read": ds.report,
                "removed_by_length": removed_length,
                "dedup": report,
                "written": records.len(),
                "out": out,
            }));
        }
    }
    Ok(true)
}

fn tokenizer_cmd(cmd: TokenizerCommand) -> Result<(), BoxError> {
    match cmd {
        TokenizerCommand::Train {
            files,
            kind,
            vocab_size,
            min_frequency,
            chat_template,
            out,
        } => {
            let cfg = TrainConfig {
                kind,
                vocab_size,
                min_frequency,
                show_progress: true,
                ..Default::default()
            };
            let mut tok = train_tokenizer(&files, &cfg)?;
            if let Some(name) = chat_template {
                let src = tilpass::tokenize::chat_template::builtin(&name).ok_or_else(|| {
                    format!("unknown built-in chat template `{name}`; expected chatml or norsk")
                })?;
                tok.set_chat_template("default", src);
            }
            tok.save(&out)?;
            print(&json!({"out": out, "vocab_size": tok.vocab_size(), "kind": kind}));
        }
        TokenizerCommand::Extend {
            tokenizer,
            corpus,
            max_new_tokens,
            min_frequency,
            min_pieces,
            out,
        } => {
            let mut tok = tilpass::tokenize::Tokenizer::from_dir(&tokenizer)?;
            let lines = read_lines(&corpus)?;
            let cfg = ExtendConfig {
                max_new_tokens,
                min_frequency,
                min_pieces,
                ..Default::default()
            };
            let report = extend_vocabulary(&mut tok, &lines, &cfg)?;
            tok.save(&out)?;
            eprintln!(
                "added {} tokens; fertility {:.3} -> {:.3} tokens/word",
                report.added.len(),
                report.before.fertility,
                report.after.fertility
            );
            print(&serde_json::to_value(&report)?);
        }
        TokenizerCommand::Fertility { tokenizer, corpus } => {
            let tok = tilpass::tokenize::Tokenizer::from_dir(&tokenizer)?;
            let lines = read_lines(&corpus)?;
            print(&serde_json::to_value(fertility(&tok, &lines)?)?);
        }
    }
    Ok(())
}

/// A decoder with `--adapter` applied: LoRA adapters go into its layers; a prompt-learning
/// adapter (prefix / prompt / P-tuning) is returned beside it.
fn load_model(args: &ModelArgs) -> Result<(DecoderLm, Option<PromptAdapter>), BoxError> {
    let device = tilpass::device(&args.device)?;
    let kind = ModelKind::from_dir(&args.model)?;
    let not_causal = || {
        format!(
            "{}: this command needs a causal LM (*ForCausalLM / *LMHeadModel); this is {} ({})",
            args.model.display(),
            kind.class_name(),
            kind.head.describe()
        )
    };
    if kind.head != Head::CausalLm {
        return Err(not_causal().into());
    }
    let AnyModel::CausalLm(model) = AnyModel::load_kind(&kind, &device)? else {
        return Err(not_causal().into());
    };
    if let Some(dir) = &args.adapter
        && is_prompt_adapter(dir)?
    {
        let adapter = PromptAdapter::load(dir, &model)?;
        return Ok((model, Some(adapter)));
    }
    Ok((with_adapter(model, args)?, None))
}

fn is_prompt_adapter(dir: &std::path::Path) -> Result<bool, BoxError> {
    let cfg: serde_json::Value = tilpass::core::read_json(dir.join(tilpass::peft::ADAPTER_CONFIG))?;
    Ok(matches!(
        cfg["peft_type"].as_str(),
        Some("PREFIX_TUNING" | "PROMPT_TUNING" | "P_TUNING")
    ))
}

fn embed_cmd(a: EmbedArgs) -> Result<(), BoxError> {
    let mut texts = a.text.clone();
    if let Some(f) = &a.file {
        texts.extend(read_lines(f)?);
    }
    if texts.is_empty() {
        return Err("give --text TEXT or --file FILE".into());
    }
    let device = tilpass::device(&a.model.device)?;
    let mut embedder = SentenceEmbedder::load(&a.model.model, &device)?;
    embedder.model = with_adapter(embedder.model, &a.model)?;
    if let Some(p) = &a.pooling {
        embedder.pooling.mode = match p.as_str() {
            "cls" => PoolingMode::Cls,
            "max" => PoolingMode::Max,
            _ => PoolingMode::Mean,
        };
    }
    embedder.pooling.normalize |= a.normalize;
    let tok = tilpass::tokenize::Tokenizer::from_dir(&a.model.model)?;
    let start = std::time::Instant::now();
    let single = texts.len() == 1 && a.file.is_none();
    let mut done = 0usize;
    for chunk in texts.chunks(a.batch_size.max(1) * 8) {
        let ids = chunk
            .iter()
            .map(|t| tok.encode(t, true))
            .collect::<Result<Vec<_>, _>>()?;
        let vectors = embedder.embed_ids(&ids, a.batch_size)?;
        for (t, v) in chunk.iter().zip(vectors) {
            if single {
                print(&json!({"dim": v.len(), "embedding": v}));
            } else {
                println!("{}", json!({"text": t, "embedding": v}));
            }
        }
        done += chunk.len();
        tracing::info!(
            "{done}/{} texts, {:.1}/s",
            texts.len(),
            done as f64 / start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// One sequence's encoder input: `ids` unpadded with `token_type_ids` (zeros when absent).
fn encoder_input(ids: &[u32], token_type_ids: Option<&[u32]>) -> Result<EncoderInput, BoxError> {
    let mut input = EncoderInput::right_padded(&[ids.to_vec()], 0)?;
    if let Some(tt) = token_type_ids {
        if tt.len() != ids.len() {
            return Err(format!(
                "--token-type-ids has {} values for {} --ids",
                tt.len(),
                ids.len()
            )
            .into());
        }
        input.token_type_ids = tt.to_vec();
    }
    Ok(input)
}

/// Logits of a model with a prompt-learning adapter (prefix / prompt / P-tuning) at `dir`, as
/// PEFT's forward computes them: decoders `[1, n + seq, vocab]` (prompt / P-tuning include the
/// virtual columns; prefix tuning `[1, seq, vocab]`), BERT sequence classifiers `[1,
/// num_labels]` (with the adapter's saved classifier), T5 `[1, dec_seq, vocab]`.
fn prompt_adapter_logits(
    model: AnyModel,
    dir: &std::path::Path,
    a: &LogitsArgs,
    device: &tilpass::burn::tensor::Device,
) -> Result<Logits, BoxError> {
    use tilpass::peft::PromptDims;
    let no_flag = |set: bool, flag: &str, what: &str| -> Result<(), BoxError> {
        if set {
            return Err(format!("{flag} is for {what}").into());
        }
        Ok(())
    };
    let tt = a.token_type_ids.as_deref();
    match model {
        AnyModel::CausalLm(m) => {
            no_flag(tt.is_some(), "--token-type-ids", "BERT models")?;
            no_flag(
                a.decoder_ids.is_some(),
                "--decoder-ids",
                "encoder-decoder models (T5, NorT5)",
            )?;
            let p = PromptAdapter::load(dir, &m)?;
            Ok(Logits::PerToken(p.forward(
                &m,
                &DecoderInput::unpadded(std::slice::from_ref(&a.ids))?,
            )?))
        }
        AnyModel::SequenceClassifier(EncoderModel::Bert(mut m)) => {
            no_flag(
                a.decoder_ids.is_some(),
                "--decoder-ids",
                "encoder-decoder models (T5, NorT5)",
            )?;
            let c = m.config();
            let dims = PromptDims {
                hidden: c.hidden_size,
                layers: c.num_hidden_layers,
                kv_heads: c.num_attention_heads,
                head_dim: c.hidden_size / c.num_attention_heads.max(1),
            };
            let p = PromptAdapter::load_with(dir, dims, device)?;
            p.apply_saved_modules(m.as_mut())?;
            Ok(Logits::PerSequence(
                p.forward_classifier(&m, &encoder_input(&a.ids, tt)?)?,
            ))
        }
        AnyModel::Seq2SeqLm(Seq2SeqLm::T5(m)) => {
            no_flag(tt.is_some(), "--token-type-ids", "BERT models")?;
            let c = m.config();
            let dims = PromptDims {
                hidden: c.d_model,
                layers: m.num_decoder_layers(),
                kv_heads: c.num_heads,
                head_dim: c.d_kv,
            };
            let p = PromptAdapter::load_with(dir, dims, device)?;
            let dec = a
                .decoder_ids
                .clone()
                .unwrap_or_else(|| vec![m.decoder_start_token_id()]);
            Ok(Logits::PerToken(p.forward_seq2seq(
                &m,
                &encoder_input(&a.ids, None)?,
                &[dec],
            )?))
        }
        other => Err(format!(
            "{}: prompt-learning adapters (prefix / prompt / P-tuning) run on decoders, BERT \
             sequence classifiers and T5; this model is a {} {:?}",
            dir.display(),
            other.model_type(),
            other.head()
        )
        .into()),
    }
}

fn logits_cmd(a: LogitsArgs) -> Result<(), BoxError> {
    let device = tilpass::device(&a.model.device)?;
    let kind = ModelKind::from_dir(&a.model.model)?;
    if kind.head == Head::Base {
        return Err(format!(
            "{}: {} is a bare encoder without a head: it gives hidden states, not logits \
             (`tilpass embed` pools them); a directory whose config.json `architectures` names \
             a head (*ForMaskedLM, *ForSequenceClassification, *ForTokenClassification) has \
             logits",
            a.model.model.display(),
            kind.class_name()
        )
        .into());
    }
    let model = AnyModel::load_kind(&kind, &device)?;
    let logits = match &a.model.adapter {
        Some(dir) if is_prompt_adapter(dir)? => prompt_adapter_logits(model, dir, &a, &device)?,
        _ => with_adapter(model, &a.model)?.logits(
            &a.ids,
            a.token_type_ids.as_deref(),
            a.decoder_ids.as_deref(),
        )?,
    };
    let shape = logits.dims();
    let values = logits.into_vec()?;
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        let first = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(format!(
            "non-finite logits (NaN/inf) were produced: {bad} of {} values (the first, {}, at \
             flat index {first} of shape {shape:?}); the model's weights or config are broken",
            values.len(),
            values[first]
        )
        .into());
    }
    print(&json!({"shape": shape, "logits": values}));
    Ok(())
}

/// Generates from `prompt_ids` with a decoder. With a tokenizer, decoded text is streamed to
/// stdout as tokens arrive (when `stream`) and generation stops at any stop string; without
/// one, the new ids are streamed, space-separated. Returns the new ids and, with a tokenizer,
/// their text (stop string removed).
fn run_generation(
    model: &DecoderLm,
    adapter: Option<&PromptAdapter>,
    tok: Option<&Tokenizer>,
    prompt_ids: Vec<u32>,
    sampling: &SamplingArgs,
    stream: bool,
) -> Result<(Vec<u32>, Option<String>), BoxError> {
    use std::io::Write;
    let mut cfg = sampling.config();
    let virtual_tokens = adapter.map(PromptAdapter::len).unwrap_or(0);
    let room = model
        .max_positions()
        .saturating_sub(prompt_ids.len() + virtual_tokens);
    if room == 0 {
        return Err(format!(
            "the prompt has {} tokens, the model's context is {}",
            prompt_ids.len(),
            model.max_positions()
        )
        .into());
    }
    if cfg.max_new_tokens > room {
        tracing::info!("max_new_tokens lowered to {room} to fit the context");
        cfg.max_new_tokens = room;
    }
    if cfg.eos_token_ids.is_none() {
        let mut eos = model.eos_token_ids();
        eos.extend(tok.and_then(Tokenizer::eos_id));
        cfg.eos_token_ids = Some(eos);
    }
    let cache = |b: usize| adapter.map(|a| a.prefix_cache(b)).unwrap_or_default();
    let embeds = |b: usize| adapter.map(|a| a.prompt_embeds(b)).expect("prompt adapter");
    let prefix = adapter.map(|a| match a.method {
        PromptMethod::Prefix => VirtualPrefix::Cache {
            n: a.len(),
            make: &cache,
        },
        _ => VirtualPrefix::Embeds {
            n: a.len(),
            make: &embeds,
        },
    });
    let Some(tok) = tok else {
        if !sampling.stop.is_empty() {
            return Err(
                "--stop needs the model's tokenizer (stop strings match decoded text); this \
                 model directory has none"
                    .into(),
            );
        }
        let mut first = true;
        let mut on_token = |_: usize, t: u32| {
            if stream {
                print!("{}{t}", if first { "" } else { " " });
                let _ = std::io::stdout().flush();
                first = false;
            }
            true
        };
        let prompts = [prompt_ids];
        let mut rows = match &prefix {
            Some(p) => generate_with_prefix(model, &prompts, &cfg, p, &mut on_token)?,
            None => generate(model, &prompts, &cfg, &mut on_token)?,
        };
        if stream {
            println!();
        }
        return Ok((rows.remove(0), None));
    };
    cfg.stop_strings = sampling.stop.clone();
    let decode = |ids: &[u32]| tok.decode(ids, true).map_err(|e| e.to_string());
    let mut rows = generate_text_with_prefix(
        model,
        &[prompt_ids],
        &cfg,
        prefix.as_ref(),
        &decode,
        &mut |_, chunk| {
            if stream {
                print!("{chunk}");
                let _ = std::io::stdout().flush();
            }
        },
    )?;
    if stream {
        println!();
    }
    let row = rows.remove(0);
    Ok((row.ids, Some(row.text)))
}

/// The tokenizer in a model directory; `None` when it has none and `required` is false.
fn model_tokenizer(dir: &std::path::Path, required: bool) -> Result<Option<Tokenizer>, BoxError> {
    match Tokenizer::from_dir(dir) {
        Ok(t) => Ok(Some(t)),
        Err(tilpass::tokenize::TokenizeError::MissingTokenizer { .. }) if !required => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Prints a generation: `{"ids", "prompt_ids", "text"}` with --json ("text" only with a
/// tokenizer); else the text, or the ids space-separated without a tokenizer.
fn print_generation(json_out: bool, ids: &[u32], prompt_ids: &[u32], text: Option<String>) {
    if json_out {
        let mut v = json!({"ids": ids, "prompt_ids": prompt_ids});
        if let Some(t) = text {
            v["text"] = json!(t);
        }
        print(&v);
    } else if let Some(t) = text {
        println!("{t}");
    } else {
        let words: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", words.join(" "));
    }
}

fn generate_seq2seq_cmd(a: GenerateArgs) -> Result<(), BoxError> {
    let device = tilpass::device(&a.model.device)?;
    let model = with_adapter(Seq2SeqLm::load(&a.model.model, &device)?, &a.model)?;
    let tok = model_tokenizer(&a.model.model, a.ids.is_none())?;
    let prompt_ids = match (&a.ids, &tok, &a.prompt) {
        (Some(ids), _, _) => ids.clone(),
        (None, Some(tok), Some(p)) => tok.encode(p, true)?,
        _ => return Err("give --prompt TEXT or --ids 1,2,3".into()),
    };
    if !a.sampling.stop.is_empty() {
        return Err("--stop is implemented for decoders; encoder-decoders stop at EOS".into());
    }
    let cfg = Seq2SeqConfig {
        max_new_tokens: a.sampling.max_new_tokens,
        num_beams: a.num_beams,
        length_penalty: a.length_penalty,
        ..Default::default()
    };
    if a.sampling.temperature > 0.0 || a.sampling.top_k.is_some() || a.sampling.top_p.is_some() {
        return Err(
            "sampling is not implemented for encoder-decoder models: use greedy or --num-beams"
                .into(),
        );
    }
    let input = EncoderInput::right_padded(std::slice::from_ref(&prompt_ids), 0)?;
    let ids = generate_seq2seq(&model, &input, &cfg)?.remove(0);
    let text = tok.map(|t| t.decode(&ids, true)).transpose()?;
    print_generation(a.json, &ids, &prompt_ids, text);
    Ok(())
}

fn generate_cmd(a: GenerateArgs) -> Result<(), BoxError> {
    let kind = ModelKind::from_dir(&a.model.model)?;
    match kind.head {
        Head::Seq2SeqLm => return generate_seq2seq_cmd(a),
        Head::CausalLm => {}
        head => {
            return Err(format!(
                "{}: `generate` needs a causal LM or an encoder-decoder; this is {} ({})",
                a.model.model.display(),
                kind.class_name(),
                head.describe()
            )
            .into());
        }
    }
    if a.num_beams != 1 {
        return Err("--num-beams is implemented for encoder-decoder models (T5) only".into());
    }
    let (model, adapter) = load_model(&a.model)?;
    let tok = model_tokenizer(&a.model.model, a.ids.is_none())?;
    let prompt_ids = match (&a.ids, &tok, &a.prompt) {
        (Some(ids), _, _) => ids.clone(),
        (None, Some(tok), Some(p)) if a.chat => {
            let t = tok.chat_template(a.sampling.chat_template.as_deref())?;
            let msgs = [tilpass::data::Message::new(
                tilpass::data::Role::User,
                p.clone(),
            )];
            let opts = RenderOptions {
                add_generation_prompt: true,
                ..Default::default()
            };
            tok.encode(&t.render(&msgs, &opts)?.text, false)?
        }
        (None, Some(tok), Some(p)) => tok.encode(p, true)?,
        _ => return Err("give --prompt TEXT or --ids 1,2,3".into()),
    };
    let (ids, text) = run_generation(
        &model,
        adapter.as_ref(),
        tok.as_ref(),
        prompt_ids.clone(),
        &a.sampling,
        !a.json,
    )?;
    if a.json {
        print_generation(true, &ids, &prompt_ids, text);
    }
    Ok(())
}

/// `tilpass metrics perplexity`: a decoder's perplexity, word / byte perplexity and bits per
/// byte over the lines of --hyp (each scored with the tokenizer's special tokens, truncated to
/// the model's context).
fn perplexity_cmd(a: &metrics_cmd::MetricsArgs) -> Result<serde_json::Value, BoxError> {
    use tilpass::metrics as m;
    let model_dir = a
        .model
        .clone()
        .ok_or("`metrics perplexity` needs --model DIR")?;
    let path = a
        .hyp
        .clone()
        .ok_or("`metrics perplexity` needs --hyp FILE (one text a line)")?;
    let texts = metrics_cmd::read_text_lines(&path)?;
    let device = tilpass::device(&a.device)?;
    let model = DecoderLm::load(&model_dir, &device)?;
    let tok = Tokenizer::from_dir(&model_dir)?;
    let ctx = model.max_positions();
    let mut logprobs: Vec<Vec<f64>> = Vec::with_capacity(texts.len());
    let mut truncated = 0usize;
    for text in &texts {
        let mut ids = tok.encode(text, true)?;
        if ids.len() > ctx {
            ids.truncate(ctx);
            truncated += 1;
        }
        if ids.len() < 2 {
            logprobs.push(Vec::new());
            continue;
        }
        let labels: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        let logits = model.forward(&DecoderInput::unpadded(&[ids])?, None)?;
        let (lp, _) = tilpass::models::shifted_log_probs(logits, &labels)?;
        logprobs.push(
            lp.into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| format!("{e:?}"))?
                .into_iter()
                .map(f64::from)
                .collect(),
        );
    }
    let scored: Vec<m::ScoredText> = texts
        .iter()
        .zip(&logprobs)
        .map(|(t, l)| m::ScoredText {
            logprobs: l,
            text: t,
        })
        .collect();
    let s = m::lm_scores(&scored)?;
    Ok(
        json!({"metric": "perplexity", "texts": texts.len(), "truncated": truncated,
              "perplexity": s.perplexity, "mean_text_perplexity": s.mean_text_perplexity,
              "word_perplexity": s.word_perplexity, "byte_perplexity": s.byte_perplexity,
              "bits_per_byte": s.bits_per_byte, "tokens": s.tokens}),
    )
}

/// `tilpass metrics judge`: a local decoder judges answer pairs in both orders.
fn judge_cmd(a: &metrics_cmd::MetricsArgs) -> Result<serde_json::Value, BoxError> {
    use tilpass::data::{Message, Role};
    use tilpass::metrics as m;
    let model_dir = a
        .model
        .clone()
        .ok_or("`metrics judge` needs --model JUDGE_DIR")?;
    let data = a
        .data
        .clone()
        .ok_or("`metrics judge` needs --data PAIRS.jsonl (question, answer, baseline)")?;
    let template = match &a.template {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => m::DEFAULT_JUDGE_TEMPLATE.to_string(),
    };
    let mut pairs = Vec::new();
    for (line, row) in read_jsonl(&data)? {
        let get = |k: &str| field(&row, k, &data, line).map(str::to_string);
        pairs.push(m::JudgePair {
            question: get("question")?,
            answer: get("answer")?,
            baseline: get("baseline")?,
        });
    }
    let device = tilpass::device(&a.device)?;
    let model = DecoderLm::load(&model_dir, &device)?;
    let tok = Tokenizer::from_dir(&model_dir)?;
    // The judge's chat template when it has one; else the prompt as plain text.
    let chat = tok.chat_template(None).ok();
    let sampling = SamplingArgs {
        max_new_tokens: 256,
        temperature: 0.0,
        top_k: None,
        top_p: None,
        repetition_penalty: None,
        seed: 0,
        stop: Vec::new(),
        chat_template: None,
    };
    let total = pairs.len() * 2;
    let mut done = 0usize;
    let mut judge = |prompt: &str| -> Result<String, BoxError> {
        let messages = [Message::new(Role::User, prompt)];
        let opts = RenderOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        let ids = match &chat {
            Some(c) => tok.encode(&c.render(&messages, &opts)?.text, false)?,
            None => tok.encode(prompt, true)?,
        };
        let (_, text) = run_generation(&model, None, Some(&tok), ids, &sampling, false)?;
        let text = text.unwrap_or_default();
        done += 1;
        eprint!("\rjudged {done}/{total}");
        Ok(text)
    };
    let outcomes = m::judge_pairs(&pairs, &template, &mut judge)?;
    eprintln!();
    let unparsed = outcomes
        .iter()
        .map(|o| usize::from(o.first.is_none()) + usize::from(o.second.is_none()))
        .sum::<usize>();
    let w = m::win_rate(&outcomes, &pairs, a.seed)?;
    Ok(
        json!({"metric": "judge", "pairs": pairs.len(), "win_rate": w.win_rate, "ci95": w.ci95,
              "length_controlled_win_rate": w.length_controlled, "wins": w.wins, "ties": w.ties,
              "losses": w.losses, "order_consistency": w.consistency,
              "unparsed_verdicts": unparsed}),
    )
}

fn chat_cmd(a: ChatArgs) -> Result<(), BoxError> {
    use std::io::BufRead;
    use tilpass::data::{Message, Role};
    let (model, adapter) = load_model(&a.model)?;
    let tok = Tokenizer::from_dir(&a.model.model)?;
    let template = tok.chat_template(a.sampling.chat_template.as_deref())?;
    let mut messages: Vec<Message> = a
        .system
        .iter()
        .map(|s| Message::new(Role::System, s.clone()))
        .collect();
    eprintln!("tilpass chat: type a message and press Enter; an empty line or Ctrl-D ends.");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            break;
        }
        messages.push(Message::new(Role::User, line));
        let opts = RenderOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        let prompt = tok.encode(&template.render(&messages, &opts)?.text, false)?;
        let (_, text) = run_generation(
            &model,
            adapter.as_ref(),
            Some(&tok),
            prompt,
            &a.sampling,
            true,
        )?;
        let text = text.unwrap_or_default();
        messages.push(Message::new(Role::Assistant, text.trim().to_string()));
    }
    Ok(())
}

fn main() -> ExitCode {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TILPASS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tokenize(a) => tokenize(a).map(|()| true),
        Command::Data(d) => data(d),
        Command::Tokenizer(t) => tokenizer_cmd(t).map(|()| true),
        Command::Logits(a) => logits_cmd(a).map(|()| true),
        Command::Generate(a) => generate_cmd(a).map(|()| true),
        Command::Chat(a) => chat_cmd(a).map(|()| true),
        Command::Embed(a) => embed_cmd(a).map(|()| true),
        Command::Peft(c) => peft_cmd(c).map(|()| true),
        Command::Annotate(a) => annotate_cmd(a).map(|()| true),
        Command::Train(TrainCommand::Sft(a)) => train_sft_cmd(a).map(|()| true),
        Command::Train(TrainCommand::Classify(a)) => train_classify_cmd(a).map(|()| true),
        Command::Predict(a) => predict_cmd(a).map(|()| true),
        Command::Metrics(a) => metrics_cmd::metrics_cmd(a).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
