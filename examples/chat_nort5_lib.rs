//! The ChatNorT5 example's flow as a function (the `chat_nort5` example runs it with the
//! defaults; the test below with a few steps).
//!
//! 1. train a byte-level BPE tokenizer on the embedded `norsk-chat` conversations, with NorT5's
//!    special tokens at NorT5's ids (`[UNK] [CLS] [SEP] [PAD] [MASK] [BOS] [EOS]` = 0..6);
//! 2. create a tiny NorT5-architecture encoder-decoder from scratch and pre-train it briefly
//!    (every weight) as a **prefix LM**: each training conversation, as plain text, is cut at
//!    two seeded points between a quarter and three quarters of its tokens; the encoder reads
//!    the part before the cut, the decoder learns the rest (ending in `[EOS]`);
//! 3. LoRA-fine-tune it for chat on `builtin:norsk-chat` with [`SftRun::run_seq2seq`], the same
//!    library call as `tilpass train sft` on an encoder-decoder directory: the dialogue so far
//!    goes to the encoder in the plain `user: ...` / `assistant:` layout (the tokenizer has no
//!    chat template), each assistant turn is a decoder target; held-out loss before and after;
//! 4. answer the held-out conversations' last user turns (greedy, repetition penalty 1.2) and
//!    score the answers against the reference answers with chrF and ROUGE-L
//!    ([`tilpass::metrics`]); save the base model (HF layout) and the adapter (HF PEFT layout,
//!    task `SEQ_2_SEQ_LM`).

use std::path::{Path, PathBuf};

use tilpass::core::{SaveDtype, SplitMix64};
use tilpass::data::embedded::norsk_chat;
use tilpass::data::{DatasetSpec, Message, Role};
use tilpass::metrics::{Chrf, ChrfConfig, Rouge, RougeTokenizer, RougeType};
use tilpass::models::nort5::nort5_params;
use tilpass::models::{
    EncoderInput, HasLinears, NorT5Config, Seq2SeqConfig, Seq2SeqLm, Seq2SeqModel, generate_seq2seq,
};
use tilpass::peft::{LoraConfig, PeftModel};
use tilpass::tokenize::{
    Seq2SeqEncoder, Seq2SeqExample, Seq2SeqSftConfig, Tokenizer, TokenizerKind, train_tokenizer,
};
use tilpass::train::{
    Progress, ScheduleKind, SftRun, Target, TrainConfig, seq2seq_train_batches, train_seq2seq,
};

use crate::quickstart::BoxError;

/// NorT5's special tokens in id order (its `cls/sep/pad/bos/eos_token_id` defaults 1, 2, 3, 5, 6).
pub const NORT5_SPECIALS: [&str; 7] = [
    "[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[BOS]", "[EOS]",
];

/// Sizes and lengths of the ChatNorT5 run.
#[derive(Debug, Clone)]
pub struct ChatNorT5Config {
    /// Where the tokenizer, base model and adapter go.
    pub out: PathBuf,
    /// Tokenizer vocabulary.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Layers of the encoder and of the decoder.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Pre-training steps (full model, prefix LM).
    pub base_steps: usize,
    /// Chat fine-tuning steps (LoRA).
    pub chat_steps: usize,
    /// Examples per batch.
    pub batch_size: usize,
    /// LoRA rank.
    pub lora_r: usize,
    /// Longest encoder input and decoder target in tokens.
    pub max_length: usize,
    /// Held-out conversations answered and scored (all 45 by default).
    pub answers: usize,
    /// New tokens per answer at most.
    pub max_new_tokens: usize,
    /// Seed of the model initialisation and the prefix-LM cuts.
    pub seed: u64,
}

impl Default for ChatNorT5Config {
    fn default() -> Self {
        Self {
            out: PathBuf::from("chat-nort5-out"),
            vocab_size: 2000,
            hidden_size: 128,
            layers: 2,
            heads: 4,
            base_steps: 400,
            chat_steps: 150,
            batch_size: 16,
            lora_r: 16,
            max_length: 128,
            answers: 45,
            max_new_tokens: 40,
            seed: 0,
        }
    }
}

/// What the run measured.
#[derive(Debug, Clone)]
pub struct ChatNorT5Report {
    /// Pre-training loss of the first and last step.
    pub base_loss: (f64, f64),
    /// Chat fine-tuning loss of the first and last step.
    pub chat_loss: (f64, f64),
    /// Held-out chat loss before and after the LoRA fine-tuning.
    pub eval_loss: (f64, f64),
    /// Corpus chrF (chrF2, 0-100) of the held-out answers against the references.
    pub chrf: f64,
    /// Mean ROUGE-L F1 (0-1, Unicode tokenizer) of the held-out answers.
    pub rouge_l: f64,
    /// Held-out questions, the model's answers and the reference answers.
    pub answers: Vec<(String, String, String)>,
    /// The base model directory (HF layout, with the tokenizer).
    pub base_dir: PathBuf,
    /// The adapter directory (HF PEFT layout).
    pub adapter_dir: PathBuf,
    /// Seconds the whole run took.
    pub seconds: f64,
}

fn say(quiet: bool, text: &str) {
    if !quiet {
        eprintln!("{text}");
    }
}

/// Writes a new NorT5 model to `dir`: `config` with NorT5's `model_type` and class name, and
/// weights drawn as `init_tensors` draws them (linear and embedding weights normal with standard
/// deviation `sqrt(2 / (5 hidden))`, as NorT5's modelling code scales its initialisation;
/// biases zero, LayerNorm weights one), from `seed`.
pub fn create_nort5(dir: &Path, config: &NorT5Config, seed: u64) -> Result<(), BoxError> {
    let std = (2.0 / (5.0 * config.hidden_size as f64)).sqrt();
    let mut rng = SplitMix64::from_state(seed ^ 0x0005_EED5_0B72);
    let tensors =
        tilpass::models::init::init_tensors(&nort5_params(config), |n| rng.normal_vec(n, std))?;
    std::fs::create_dir_all(dir)?;
    let mut cfg = serde_json::to_value(config)?;
    if let Some(o) = cfg.as_object_mut() {
        o.insert("model_type".into(), "nort5".into());
        o.insert(
            "architectures".into(),
            serde_json::json!(["NorT5ForConditionalGeneration"]),
        );
        o.insert("is_encoder_decoder".into(), true.into());
    }
    tilpass::core::write_atomic(dir.join("config.json"), serde_json::to_string_pretty(&cfg)?)?;
    tilpass::core::save_safetensors(
        dir.join("model.safetensors"),
        tensors.iter().map(|(n, x)| (n.as_str(), x)),
        SaveDtype::F32,
        None,
    )?;
    Ok(())
}

/// Prefix-LM examples of one text's token ids: cut at `cuts` seeded points in the middle half;
/// the part before is the encoder input (its last `max_len` tokens), the rest the target (its
/// first `max_len - 1` tokens and `eos`).
fn prefix_lm(
    ids: &[u32],
    cuts: usize,
    eos: u32,
    max_len: usize,
    rng: &mut SplitMix64,
) -> Vec<Seq2SeqExample> {
    if ids.len() < 4 {
        return Vec::new();
    }
    (0..cuts)
        .map(|_| {
            let lo = ids.len() / 4;
            let span = (ids.len() / 2).max(1);
            let cut = (lo + (rng.uniform() * span as f64) as usize).clamp(1, ids.len() - 1);
            let src = &ids[cut.saturating_sub(max_len)..cut];
            let mut tgt: Vec<u32> = ids[cut..].iter().copied().take(max_len - 1).collect();
            tgt.push(eos);
            Seq2SeqExample {
                input_ids: src.to_vec(),
                labels: tgt,
            }
        })
        .collect()
}

/// Runs the example; progress goes to stderr unless `quiet`.
pub fn run(cfg: &ChatNorT5Config, quiet: bool) -> Result<ChatNorT5Report, BoxError> {
    let started = std::time::Instant::now();
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

    // 1. Tokenizer with NorT5's special tokens at NorT5's ids.
    let corpus = cfg.out.join("corpus.txt");
    let text: String = train_set
        .iter()
        .flat_map(|c| c.messages.iter().map(|m| m.content.clone() + "\n"))
        .collect();
    std::fs::write(&corpus, &text)?;
    let tok = train_tokenizer(
        &[corpus],
        &tilpass::tokenize::TrainConfig {
            kind: TokenizerKind::Bpe,
            vocab_size: cfg.vocab_size,
            special_tokens: NORT5_SPECIALS.map(String::from).to_vec(),
            show_progress: false,
            ..Default::default()
        },
    )?;
    tok.save(&base_dir)?;
    let tok = Tokenizer::from_dir(&base_dir)?;
    say(
        quiet,
        &format!("1/4 tokenizer: BPE, {} tokens", tok.vocab_size()),
    );

    // 2. A tiny NorT5 from scratch, pre-trained as a prefix LM on the conversations' text.
    let model_cfg: NorT5Config = serde_json::from_value(serde_json::json!({
        "vocab_size": tok.vocab_size(),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.hidden_size * 2,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "position_bucket_size": 32,
    }))?;
    create_nort5(&base_dir, &model_cfg, cfg.seed)?;
    let base_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base_dir.join("config.json"))?)?;
    let device = tilpass::device("flex")?.autodiff();
    device.seed(cfg.seed);
    let mut model = PeftModel::new(Seq2SeqLm::load(&base_dir, &device)?);
    let (pad, start) = (model.pad_token_id(), model.decoder_start_token_id());
    let eos = model_cfg.eos_token_id;
    say(
        quiet,
        &format!(
            "2/4 base model: NorT5, hidden {}, {}+{} layers, {} parameters; prefix-LM \
             pre-training {} steps",
            cfg.hidden_size,
            cfg.layers,
            cfg.layers,
            model.parameter_count(),
            cfg.base_steps
        ),
    );
    let mut rng = SplitMix64::from_state(cfg.seed ^ 0x00C0_FFEE);
    let mut lm_examples = Vec::new();
    for c in &train_set {
        let joined: Vec<&str> = c.messages.iter().map(|m| m.content.as_str()).collect();
        let ids = tok.encode(&joined.join("\n"), false)?;
        lm_examples.extend(prefix_lm(&ids, 2, eos, cfg.max_length, &mut rng));
    }
    let lm_batches = seq2seq_train_batches(&lm_examples, cfg.batch_size, pad, start, None)?;
    let mut progress = Progress::new("base", cfg.base_steps);
    let base = train_seq2seq(
        &mut model,
        Target::Full,
        &lm_batches,
        &[],
        None,
        &TrainConfig {
            learning_rate: 2e-3,
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
    model
        .into_model()
        .save(&base_dir, SaveDtype::F32, Some(&base_config))?;

    // 3. LoRA chat fine-tuning: the same library call as `tilpass train sft --model BASE`.
    let run = SftRun {
        model: Some(base_dir.clone()),
        data: Some(DatasetSpec::norsk_chat(Some("train"))),
        eval_data: Some(DatasetSpec::norsk_chat(Some("eval"))),
        out: Some(cfg.out.clone()),
        overwrite_output_dir: true,
        max_length: Some(cfg.max_length),
        lora: LoraConfig::builder()
            .r(cfg.lora_r)
            .lora_alpha(2.0 * cfg.lora_r as f64)
            .target_modules("all-linear")
            .task_type("SEQ_2_SEQ_LM")
            .build()?,
        batch_size: cfg.batch_size,
        lr: 3e-3,
        lr_scheduler_type: ScheduleKind::Cosine,
        steps: cfg.chat_steps,
        warmup: cfg.chat_steps / 10,
        eval_steps: Some(cfg.chat_steps.max(1)),
        eval_on_start: true,
        seed: cfg.seed,
        ..Default::default()
    };
    say(
        quiet,
        &format!(
            "3/4 chat fine-tuning: LoRA r={} on all linear layers of both stacks; {} steps",
            cfg.lora_r, cfg.chat_steps
        ),
    );
    let mut progress = Progress::new("chat", cfg.chat_steps);
    let tuned = run.run_seq2seq(&device, &mut |e| {
        if !quiet {
            progress.on_event(&e)
        }
    })?;
    if !quiet {
        progress.finish(&tuned.summary);
    }
    let loss = |e: &Option<tilpass::train::EvalLog>| e.as_ref().map_or(f64::NAN, |e| e.eval_loss);
    let eval_loss = (loss(&tuned.initial_eval), loss(&tuned.final_eval));

    // 4. Answer the held-out conversations' last user turn; chrF and ROUGE-L against the
    //    reference answers.
    let encoder = Seq2SeqEncoder::new(
        &tok,
        Seq2SeqSftConfig {
            eos_id: Some(eos),
            ..run.seq2seq_config()
        },
    )?;
    let decoding = Seq2SeqConfig {
        max_new_tokens: cfg.max_new_tokens,
        repetition_penalty: Some(1.2),
        ..Default::default()
    };
    // The saved base model and adapter, loaded as a user would (no autodiff).
    let chat_model = load_result(&base_dir, &tuned.saved)?;
    let mut answers = Vec::new();
    for c in eval_set.iter().take(cfg.answers) {
        let Some(last) = c.messages.iter().rposition(|m| m.role == Role::Assistant) else {
            continue;
        };
        let history: &[Message] = &c.messages[..last];
        let (source, _) = encoder.source(history)?;
        let input = EncoderInput {
            attention_mask: vec![1; source.len()],
            token_type_ids: vec![0; source.len()],
            seq: source.len(),
            input_ids: source,
            batch: 1,
        };
        let ids = generate_seq2seq(chat_model.model(), &input, &decoding)?.remove(0);
        let answer = tok.decode(&ids, true)?.trim().to_string();
        let question = history
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        answers.push((question, answer, c.messages[last].content.clone()));
    }
    let hyps: Vec<&str> = answers.iter().map(|a| a.1.as_str()).collect();
    let refs: Vec<Vec<Option<&str>>> = vec![answers.iter().map(|a| Some(a.2.as_str())).collect()];
    let chrf = Chrf::new(ChrfConfig::default())
        .corpus_score(&hyps, &refs)?
        .score;
    let rouge = Rouge::new(&[RougeType::L], RougeTokenizer::default()).corpus_mean(&hyps, &refs)?;
    let rouge_l = rouge.scores.get("rougeL").map_or(f64::NAN, |s| s.fmeasure);
    let adapter_dir = tuned.saved;
    let seconds = started.elapsed().as_secs_f64();
    say(
        quiet,
        &format!(
            "4/4 {} held-out answers scored; saved {} (base) and {} (adapter) in {seconds:.0}s",
            answers.len(),
            base_dir.display(),
            adapter_dir.display(),
        ),
    );
    Ok(ChatNorT5Report {
        base_loss: (base.first_loss, base.last_loss),
        chat_loss: (tuned.summary.first_loss, tuned.summary.last_loss),
        eval_loss,
        chrf,
        rouge_l,
        answers,
        base_dir,
        adapter_dir,
        seconds,
    })
}

/// Loads the result the way a user would: base model directory + adapter.
pub fn load_result(base: &Path, adapter: &Path) -> Result<PeftModel<Seq2SeqLm>, BoxError> {
    let device = tilpass::device("flex")?;
    let mut m = PeftModel::new(Seq2SeqLm::load(base, &device)?);
    m.load_adapter(adapter, "default")?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few steps of the whole flow: every stage runs, files land where the README says, the
    /// held-out loss falls, the answers are scored and the saved adapter loads back.
    #[test]
    fn the_chat_nort5_flow_runs_and_its_held_out_loss_falls() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ChatNorT5Config {
            out: dir.path().to_path_buf(),
            vocab_size: 600,
            hidden_size: 64,
            layers: 1,
            heads: 2,
            base_steps: 10,
            chat_steps: 10,
            batch_size: 8,
            lora_r: 4,
            max_length: 64,
            answers: 3,
            max_new_tokens: 8,
            seed: 1,
        };
        let r = run(&cfg, true).unwrap();
        assert!(r.base_loss.1 < r.base_loss.0, "{:?}", r.base_loss);
        assert!(r.eval_loss.1 < r.eval_loss.0, "{:?}", r.eval_loss);
        assert_eq!(r.answers.len(), 3);
        assert!(r.chrf.is_finite() && r.rouge_l.is_finite());
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(r.base_dir.join(f).is_file(), "{f}");
        }
        let m = load_result(&r.base_dir, &r.adapter_dir).unwrap();
        assert_eq!(m.active(), ["default"]);
    }
}
