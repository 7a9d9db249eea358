//! The quickstart's whole flow as a function (the `quickstart` example runs it with the
//! defaults; the test below with a few steps).
//!
//! 1. train a byte-level BPE tokenizer on the embedded `norsk-chat` conversations;
//! 2. create a tiny Llama-style model and pre-train it briefly on the same text (full
//!    fine-tuning, causal-LM loss on every token);
//! 3. LoRA-fine-tune it for chat (built-in `norsk` template, loss on assistant tokens only),
//!    evaluating loss / perplexity and sample answers on the held-out split — with
//!    [`SftRun`], the same library call as `tilpass train sft`;
//! 4. save the base model (HF layout) and the adapter (HF PEFT layout), and answer a few
//!    held-out questions in Bokmål and Nynorsk;
//! 5. preference optimisation: merge the chat adapter into the base (`chat-model/`) and train a
//!    DPO adapter on the embedded `norsk-pref` pairs (train split) with [`DpoRun`], the same
//!    library call as `tilpass train dpo`, reporting TRL's reward accuracy and margin on the
//!    held-out split before and after; the reference log-probs are precomputed and cached in
//!    `ref-logps/` (a rerun with the same chat model reuses them).

use std::path::{Path, PathBuf};

use tilpass::data::embedded::{ChatExample, norsk_chat};
use tilpass::data::{DatasetSpec, Record, Role};
use tilpass::models::{DecoderLm, HasLinears, LlamaConfig, create_llama};
use tilpass::peft::{LoraConfig, PeftModel};
use tilpass::preference::{DpoEval, DpoRun};
use tilpass::tokenize::chat_template::NORSK_TEMPLATE;
use tilpass::tokenize::{SftConfig, SftEncoder, Tokenizer, TokenizerKind, train_tokenizer};
use tilpass::train::{
    EvalLog, Progress, ScheduleKind, SftRun, Target, TrainConfig, prompt_of, sample_answers,
    sft_batches, train_lm_with_samples,
};

/// Error type of the quickstart.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sizes and lengths of the quickstart run.
#[derive(Debug, Clone)]
pub struct QuickstartConfig {
    /// Where the tokenizer, base model and adapter go.
    pub out: PathBuf,
    /// Tokenizer vocabulary.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Pre-training steps (full model).
    pub base_steps: usize,
    /// Chat fine-tuning steps (LoRA).
    pub chat_steps: usize,
    /// DPO steps on `norsk-pref` (LoRA; 0: no preference stage).
    pub dpo_steps: usize,
    /// Preference pairs per DPO batch.
    pub dpo_batch_size: usize,
    /// Conversations per batch.
    pub batch_size: usize,
    /// LoRA rank.
    pub lora_r: usize,
    /// Seed of the model initialisation.
    pub seed: u64,
}

impl Default for QuickstartConfig {
    fn default() -> Self {
        Self {
            out: PathBuf::from("quickstart-out"),
            vocab_size: 2000,
            hidden_size: 192,
            layers: 4,
            heads: 4,
            base_steps: 300,
            chat_steps: 150,
            dpo_steps: 40,
            dpo_batch_size: 8,
            batch_size: 16,
            lora_r: 16,
            seed: 0,
        }
    }
}

/// What the run measured.
#[derive(Debug, Clone)]
pub struct QuickstartReport {
    /// Pre-training loss of the first and last step.
    pub base_loss: (f64, f64),
    /// Chat fine-tuning loss of the first and last step.
    pub chat_loss: (f64, f64),
    /// Held-out chat loss before and after the LoRA fine-tuning.
    pub eval_loss: (f64, f64),
    /// Held-out questions and the fine-tuned model's answers.
    pub answers: Vec<(String, String)>,
    /// The base model directory (HF layout, with the tokenizer).
    pub base_dir: PathBuf,
    /// The adapter directory (HF PEFT layout).
    pub adapter_dir: PathBuf,
    /// The DPO stage's result (`None` with `dpo_steps` 0).
    pub dpo: Option<DpoReport>,
}

/// What the DPO stage measured on the held-out `norsk-pref` pairs (TRL's `eval_` metrics).
#[derive(Debug, Clone)]
pub struct DpoReport {
    /// `eval_rewards/accuracies` before and after: the share of held-out pairs whose chosen
    /// answer gains more (relative to the reference) than the rejected one. Before training
    /// the policy is the reference, every pair ties and the accuracy is 0.
    pub accuracy: (f64, f64),
    /// `eval_rewards/margins` before and after (mean of beta times the gain difference).
    pub margin: (f64, f64),
    /// `eval_loss` before and after.
    pub loss: (f64, f64),
    /// The merged chat model DPO started from (HF layout, with the tokenizer).
    pub model_dir: PathBuf,
    /// The DPO adapter (HF PEFT layout; load it on `model_dir`).
    pub adapter_dir: PathBuf,
    /// Seconds the stage took.
    pub seconds: f64,
}

fn say(quiet: bool, text: &str) {
    if !quiet {
        eprintln!("{text}");
    }
}

fn first_question(c: &ChatExample) -> String {
    c.messages
        .iter()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// Runs the quickstart; progress goes to stderr unless `quiet`.
pub fn run(cfg: &QuickstartConfig, quiet: bool) -> Result<QuickstartReport, BoxError> {
    let started = std::time::Instant::now();
    let stages = if cfg.dpo_steps > 0 { 5 } else { 4 };
    let train_set = norsk_chat(Some("train"))?;
    let eval_set = norsk_chat(Some("eval"))?;
    say(
        quiet,
        &format!(
            "norsk-chat: {} training and {} held-out conversations",
            train_set.len(),
            eval_set.len()
        ),
    );
    let base_dir = cfg.out.join("base");
    std::fs::create_dir_all(&base_dir)?;

    // 1. Tokenizer.
    let corpus = cfg.out.join("corpus.txt");
    let text: String = train_set
        .iter()
        .flat_map(|c| c.messages.iter().map(|m| m.content.clone() + "\n"))
        .collect();
    std::fs::write(&corpus, &text)?;
    let mut tok = train_tokenizer(
        &[corpus],
        &tilpass::tokenize::TrainConfig {
            kind: TokenizerKind::Bpe,
            vocab_size: cfg.vocab_size,
            show_progress: false,
            ..Default::default()
        },
    )?;
    tok.set_chat_template("default", NORSK_TEMPLATE);
    tok.save(&base_dir)?;
    let tok = Tokenizer::from_dir(&base_dir)?;
    say(
        quiet,
        &format!("1/{stages} tokenizer: BPE, {} tokens", tok.vocab_size()),
    );

    // 2. A tiny Llama, pre-trained briefly on the conversations as plain text.
    let model_cfg: LlamaConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": tok.vocab_size(),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.hidden_size * 8 / 3,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "max_position_embeddings": 512,
        "tie_word_embeddings": true,
        "bos_token_id": tok.bos_id(),
        "eos_token_id": tok.eos_id(),
        "pad_token_id": tok.pad_id(),
    }))?;
    create_llama(&base_dir, &model_cfg, 0.02, cfg.seed)?;
    let device = tilpass::device("flex")?.autodiff();
    let mut model = PeftModel::new(DecoderLm::load(&base_dir, &device)?);
    say(
        quiet,
        &format!(
            "2/{stages} base model: Llama, hidden {}, {} layers, {} parameters; pre-training {} steps",
            cfg.hidden_size,
            cfg.layers,
            model.parameter_count(),
            cfg.base_steps
        ),
    );
    let pad = tok.pad_id().unwrap_or(0);
    let max_pos = model.max_positions();
    let plain: Vec<Record> = train_set
        .iter()
        .map(|c| Record::Text {
            text: c
                .messages
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        })
        .collect();
    let lm = SftEncoder::new(&tok, SftConfig::default())?;
    let (lm_examples, _) = lm.encode_all(&plain)?;
    let lm_batches = sft_batches(&lm_examples, cfg.batch_size, pad, max_pos)?;
    let mut progress = Progress::new("base", cfg.base_steps);
    let base = train_lm_with_samples(
        &mut model,
        Target::Full,
        &lm_batches,
        &[],
        None,
        &TrainConfig {
            learning_rate: 3e-3,
            lr_scheduler_type: ScheduleKind::Cosine,
            warmup_steps: cfg.base_steps / 10,
            max_steps: cfg.base_steps,
            ..Default::default()
        },
        None,
        &mut |e| {
            if !quiet {
                progress.on_event(&e)
            }
        },
    )?;
    if !quiet {
        progress.finish(&base);
    }
    model.save(&base_dir, tilpass::core::SaveDtype::F32)?;

    // 3. LoRA chat fine-tuning with the `norsk` template, assistant tokens only: the same
    //    library call as `tilpass train sft` (run_config.json in the output directory repeats
    //    it with `tilpass train sft --config`).
    let run = SftRun {
        model: Some(base_dir.clone()),
        data: Some(DatasetSpec::norsk_chat(Some("train"))),
        eval_data: Some(DatasetSpec::norsk_chat(Some("eval"))),
        out: Some(cfg.out.clone()),
        // The directory holds this program's own base model and corpus; a rerun replaces the
        // earlier run's adapter, checkpoints and metrics (the base model is an input: kept).
        overwrite_output_dir: true,
        max_length: SftConfig::default().max_length,
        lora: LoraConfig::builder()
            .r(cfg.lora_r)
            .lora_alpha(2.0 * cfg.lora_r as f64)
            .target_modules("all-linear")
            .task_type("CAUSAL_LM")
            .build()?,
        batch_size: cfg.batch_size,
        lr: 2e-3,
        lr_scheduler_type: ScheduleKind::Cosine,
        steps: cfg.chat_steps,
        warmup: cfg.chat_steps / 10,
        eval_steps: Some((cfg.chat_steps / 3).max(1)),
        eval_on_start: true,
        sample_max_new_tokens: 32,
        seed: cfg.seed,
        ..Default::default()
    };
    say(
        quiet,
        &format!(
            "3/{stages} chat fine-tuning: LoRA r={} on all linear layers; {} steps",
            cfg.lora_r, cfg.chat_steps
        ),
    );
    let mut progress = Progress::new("chat", cfg.chat_steps);
    let tuned = run.run(&device, &mut |e| {
        if !quiet {
            progress.on_event(&e)
        }
    })?;
    if !quiet {
        progress.finish(&tuned.summary);
    }
    let eval_loss = |e: &Option<EvalLog>| e.as_ref().map(|e| e.eval_loss).unwrap_or(f64::NAN);
    let (before, after) = (eval_loss(&tuned.initial_eval), eval_loss(&tuned.final_eval));

    // 4. Answer held-out questions (two in Bokmål, two in Nynorsk) with the tuned model.
    let chat = SftEncoder::new(&tok, run.sft_config())?;
    let questions: Vec<&ChatExample> = ["nb", "nn"]
        .iter()
        .flat_map(|l| eval_set.iter().filter(move |c| c.lang == *l).take(2))
        .collect();
    let prompts: Vec<Vec<u32>> = questions
        .iter()
        .map(|c| {
            let (ex, _) = chat.encode_all(&[c.record()])?;
            Ok(prompt_of(&ex[0]).to_vec())
        })
        .collect::<Result<_, BoxError>>()?;
    let answers = sample_answers(&tuned.model, &tok, &prompts, 40)?;
    let answers: Vec<(String, String)> = questions
        .iter()
        .map(|c| first_question(c))
        .zip(answers)
        .collect();
    let adapter_dir = tuned.saved;
    say(
        quiet,
        &format!(
            "4/{stages} saved {} (base) and {} (adapter) in {:.0}s",
            base_dir.display(),
            adapter_dir.display(),
            started.elapsed().as_secs_f64()
        ),
    );
    let dpo = if cfg.dpo_steps > 0 {
        Some(dpo_stage(cfg, &base_dir, &adapter_dir, &device, quiet)?)
    } else {
        None
    };
    Ok(QuickstartReport {
        base_loss: (base.first_loss, base.last_loss),
        chat_loss: (tuned.summary.first_loss, tuned.summary.last_loss),
        eval_loss: (before, after),
        answers,
        base_dir,
        adapter_dir,
        dpo,
    })
}

/// Stage 5: DPO of the chat model on `norsk-pref`.
fn dpo_stage(
    cfg: &QuickstartConfig,
    base_dir: &Path,
    chat_adapter: &Path,
    device: &tilpass::burn::tensor::Device,
    quiet: bool,
) -> Result<DpoReport, BoxError> {
    let started = std::time::Instant::now();
    // The chat model as one HF directory: the base with the chat adapter merged in (what
    // `tilpass peft merge` writes), plus the tokenizer and its `norsk` chat template.
    let model_dir = cfg.out.join("chat-model");
    let mut chat = PeftModel::new(DecoderLm::load(base_dir, device)?);
    chat.load_adapter(chat_adapter, "default")?;
    chat.merge_and_unload()?
        .save(&model_dir, tilpass::core::SaveDtype::F32)?;
    for e in std::fs::read_dir(base_dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("tokenizer") || name.starts_with("special_tokens") {
            std::fs::copy(&p, model_dir.join(name))?;
        }
    }
    let run = DpoRun {
        model: Some(model_dir.clone()),
        data: Some(DatasetSpec::norsk_pref(Some("train"))),
        eval_data: Some(DatasetSpec::norsk_pref(Some("eval"))),
        out: Some(cfg.out.join("dpo")),
        // A rerun replaces the earlier DPO run.
        overwrite_output_dir: true,
        lora: LoraConfig::builder()
            .r(cfg.lora_r)
            .lora_alpha(2.0 * cfg.lora_r as f64)
            .target_modules("all-linear")
            .task_type("CAUSAL_LM")
            .build()?,
        batch_size: cfg.dpo_batch_size,
        lr: 2e-3,
        steps: cfg.dpo_steps,
        precompute_ref_log_probs: true,
        ref_cache_dir: Some(cfg.out.join("ref-logps")),
        seed: cfg.seed,
        ..Default::default()
    };
    say(
        quiet,
        &format!(
            "5/5 preference optimisation: DPO (beta {}, sigmoid) on norsk-pref, LoRA r={}; {} steps",
            run.beta, cfg.lora_r, cfg.dpo_steps
        ),
    );
    let mut progress = Progress::new("dpo", cfg.dpo_steps);
    let tuned = run.run(device, &mut |e| {
        if !quiet {
            progress.on_event(&e)
        }
    })?;
    if !quiet {
        progress.finish(&tuned.summary);
    }
    let get = |e: &Option<DpoEval>, name: &str| {
        e.as_ref().and_then(|e| e.metric(name)).unwrap_or(f64::NAN)
    };
    let loss = |e: &Option<DpoEval>| e.as_ref().map(|e| e.eval_loss).unwrap_or(f64::NAN);
    let (first, last) = (&tuned.initial_eval, &tuned.final_eval);
    Ok(DpoReport {
        accuracy: (
            get(first, "rewards/accuracies"),
            get(last, "rewards/accuracies"),
        ),
        margin: (get(first, "rewards/margins"), get(last, "rewards/margins")),
        loss: (loss(first), loss(last)),
        model_dir,
        adapter_dir: tuned.saved,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Loads the quickstart's result the way a user would: base model directory + adapter.
pub fn load_result(base: &Path, adapter: &Path) -> Result<PeftModel<DecoderLm>, BoxError> {
    let device = tilpass::device("flex")?;
    let mut m = PeftModel::new(DecoderLm::load(base, &device)?);
    m.load_adapter(adapter, "default")?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few steps of the whole flow: every stage runs, files land where the README says, the
    /// losses fall and the saved adapter loads back.
    #[test]
    fn the_quickstart_flow_runs_and_its_losses_fall() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = QuickstartConfig {
            out: dir.path().to_path_buf(),
            vocab_size: 600,
            hidden_size: 64,
            layers: 2,
            heads: 2,
            base_steps: 12,
            chat_steps: 12,
            dpo_steps: 4,
            dpo_batch_size: 4,
            batch_size: 8,
            lora_r: 4,
            seed: 1,
        };
        let r = run(&cfg, true).unwrap();
        assert!(r.base_loss.1 < r.base_loss.0, "{:?}", r.base_loss);
        assert!(r.eval_loss.1 < r.eval_loss.0, "{:?}", r.eval_loss);
        assert_eq!(r.answers.len(), 4);
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(r.base_dir.join(f).is_file(), "{f}");
        }
        let m = load_result(&r.base_dir, &r.adapter_dir).unwrap();
        assert_eq!(m.active(), ["default"]);
        // The DPO stage: TRL's held-out metrics before (policy = reference: 0) and after, and
        // an adapter that loads on the merged chat model.
        let d = r.dpo.expect("a DPO stage");
        assert_eq!(d.accuracy.0, 0.0);
        assert_eq!(d.margin.0, 0.0);
        assert!(d.accuracy.1.is_finite() && d.margin.1.is_finite(), "{d:?}");
        let m = load_result(&d.model_dir, &d.adapter_dir).unwrap();
        assert_eq!(m.active(), ["default"]);
    }
}
