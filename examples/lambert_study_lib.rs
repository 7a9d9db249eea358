//! The LamBERT study example as a function (the `lambert_study` example runs it; `--check`
//! with CI's sizes).
//!
//! 1. models: the MiniLM sentence encoder of `artefacts/minilm` as the BERT when it is there
//!    (and not `tiny`), else a tiny random-init BERT with a WordPiece tokenizer trained on the
//!    embedded `norsk-topic` text; the LLM is a tiny Llama (byte-level BPE tokenizer on the
//!    same text) taught the task briefly on the training items *after* the first `items`, so
//!    that it labels the study's items from what it saw elsewhere, noisily — the LamBERT
//!    setting (an `llm` directory replaces it);
//! 2. the study, [`StudyRun`] — the same library call as `tilpass study lambert` — on
//!    `builtin:norsk-topic`: annotate the first `items` training items, train every method
//!    x seed on the LLM labels, evaluate on the 204 gold test items; writes `results.jsonl`,
//!    `results.md` and the plots under `out/study`.
//!
//! With tiny models the numbers show the pipeline, not what the methods can do.

use std::path::{Path, PathBuf};

use tilpass::core::{SaveDtype, SplitMix64, save_safetensors};
use tilpass::data::embedded::norsk_topic;
use tilpass::data::{Content, Record};
use tilpass::models::bert::bert_params;
use tilpass::models::init::init_tensors;
use tilpass::models::{BertConfig, BertHeadKind, DecoderLm, LlamaConfig, create_llama};
use tilpass::peft::PeftModel;
use tilpass::tokenize::{SftConfig, SftEncoder, Tokenizer, TokenizerKind, train_tokenizer};
use tilpass::train::runs::study::Methods;
use tilpass::train::{
    ScheduleKind, StudyOutcome, StudyRun, Target, TrainConfig, sft_batches, train_lm_with_samples,
};

/// Error type of the example.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The annotation prompt (the LLM is taught `prompt + " " + label`).
pub const TEMPLATE: &str = "Tekst: {text}\nKategori:";

/// Sizes of the example.
#[derive(Debug, Clone)]
pub struct LambertStudyConfig {
    /// Where the models and the study go.
    pub out: PathBuf,
    /// Training items annotated by the LLM and trained on (N).
    pub items: usize,
    /// Seeds per method.
    pub seeds: Vec<u64>,
    /// Classifier training steps.
    pub steps: usize,
    /// Steps that teach the tiny LLM the task.
    pub llm_steps: usize,
    /// Use tiny random-init models even when `artefacts/minilm` is there.
    pub tiny: bool,
    /// An LLM directory to annotate with instead of the tiny Llama.
    pub llm: Option<PathBuf>,
    /// Width of the tiny models.
    pub hidden_size: usize,
    /// Layers of the tiny models.
    pub layers: usize,
}

impl Default for LambertStudyConfig {
    fn default() -> Self {
        Self {
            out: PathBuf::from("lambert-study-out"),
            items: 300,
            seeds: vec![0, 1, 2],
            steps: 60,
            llm_steps: 200,
            tiny: false,
            llm: None,
            hidden_size: 64,
            layers: 2,
        }
    }
}

impl LambertStudyConfig {
    /// CI's sizes: tiny models, 2 seeds, a few steps (well under a minute in release on two
    /// cores).
    pub fn check(out: PathBuf) -> Self {
        Self {
            out,
            items: 96,
            seeds: vec![0, 1],
            steps: 60,
            llm_steps: 400,
            tiny: true,
            llm: None,
            hidden_size: 32,
            layers: 1,
        }
    }
}

fn say(quiet: bool, text: &str) {
    if !quiet {
        eprintln!("{text}");
    }
}

/// The MiniLM encoder of the workspace's `artefacts/`, if downloaded.
pub fn minilm() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../artefacts/minilm");
    dir.join("model.safetensors").is_file().then_some(dir)
}

/// Writes the embedded topic texts to `path`, one per line (tokenizer training corpus).
fn write_corpus(path: &Path) -> Result<(), BoxError> {
    let text: String = norsk_topic(None)?
        .iter()
        .map(|t| format!("{}\n", t.text))
        .collect();
    std::fs::write(path, text)?;
    Ok(())
}

/// A tiny random-init BERT (`BertModel`) with a WordPiece tokenizer in `dir`.
fn tiny_bert(dir: &Path, corpus: &Path, cfg: &LambertStudyConfig) -> Result<(), BoxError> {
    let tok = train_tokenizer(
        &[corpus.to_path_buf()],
        &tilpass::tokenize::TrainConfig {
            kind: TokenizerKind::WordPiece,
            vocab_size: 1500,
            show_progress: false,
            ..Default::default()
        },
    )?;
    std::fs::create_dir_all(dir)?;
    tok.save(dir)?;
    let tok = Tokenizer::from_dir(dir)?;
    let config = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": tok.vocab_size(),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.hidden_size * 2,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
        "type_vocab_size": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12,
        "initializer_range": 0.02,
        "pad_token_id": tok.pad_id().unwrap_or(0),
    });
    let bc: BertConfig = serde_json::from_value(config.clone())?;
    let mut rng = SplitMix64::from_state(0xBE27);
    let tensors = init_tensors(&bert_params(&bc, BertHeadKind::Base, true, true), |n| {
        rng.normal_vec(n, 0.02)
    })?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    save_safetensors(
        dir.join("model.safetensors"),
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        SaveDtype::F32,
        None,
    )?;
    Ok(())
}

/// A tiny Llama in `dir` taught `prompt + " " + label` on the training items after the first
/// `items` (full fine-tuning, causal-LM loss).
fn tiny_llm(
    dir: &Path,
    corpus: &Path,
    cfg: &LambertStudyConfig,
    quiet: bool,
) -> Result<(), BoxError> {
    let tok = train_tokenizer(
        &[corpus.to_path_buf()],
        &tilpass::tokenize::TrainConfig {
            kind: TokenizerKind::Bpe,
            vocab_size: 1500,
            show_progress: false,
            ..Default::default()
        },
    )?;
    std::fs::create_dir_all(dir)?;
    tok.save(dir)?;
    let tok = Tokenizer::from_dir(dir)?;
    let model_cfg: LlamaConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": tok.vocab_size(),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.hidden_size * 2,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": 4,
        "max_position_embeddings": 256,
        "tie_word_embeddings": true,
        "bos_token_id": tok.bos_id(),
        "eos_token_id": tok.eos_id(),
        "pad_token_id": tok.pad_id(),
    }))?;
    create_llama(dir, &model_cfg, 0.02, 7)?;
    let device = tilpass::device("flex")?.autodiff();
    device.seed(7);
    let mut model = PeftModel::new(DecoderLm::load(dir, &device)?);
    let teach: Vec<Record> = norsk_topic(Some("train"))?
        .iter()
        .skip(cfg.items)
        // The loss on the label alone (prompt-completion, completion-only loss), so the
        // few steps go to the task rather than to modelling the texts.
        .map(|t| Record::PromptCompletion {
            prompt: Content::Text(TEMPLATE.replace("{text}", &t.text)),
            completion: Content::Text(format!(" {}", t.label)),
        })
        .collect();
    let enc = SftEncoder::new(&tok, SftConfig::default())?;
    let (examples, _) = enc.encode_all(&teach)?;
    let batches = sft_batches(
        &examples,
        16,
        tok.pad_id().unwrap_or(0),
        model.max_positions(),
    )?;
    let s = train_lm_with_samples(
        &mut model,
        Target::Full,
        &batches,
        &[],
        None,
        &TrainConfig {
            learning_rate: 3e-3,
            lr_scheduler_type: ScheduleKind::Cosine,
            warmup_steps: cfg.llm_steps / 10,
            max_steps: cfg.llm_steps,
            ..Default::default()
        },
        None,
        &mut |_| {},
    )?;
    model.save(dir, SaveDtype::F32)?;
    say(
        quiet,
        &format!(
            "LLM: tiny Llama taught on {} other training items, loss {:.3} -> {:.3}",
            teach.len(),
            s.first_loss,
            s.last_loss
        ),
    );
    Ok(())
}

/// Runs the example; progress on stderr unless `quiet`.
pub fn run(cfg: &LambertStudyConfig, quiet: bool) -> Result<StudyOutcome, BoxError> {
    let models = cfg.out.join("models");
    std::fs::create_dir_all(&models)?;
    let corpus = models.join("corpus.txt");
    write_corpus(&corpus)?;
    let bert = match minilm().filter(|_| !cfg.tiny) {
        Some(dir) => {
            say(quiet, &format!("BERT: {}", dir.display()));
            dir
        }
        None => {
            let dir = models.join("bert");
            tiny_bert(&dir, &corpus, cfg)?;
            say(
                quiet,
                &format!(
                    "BERT: tiny random-init (hidden {}, {} layers) in {}",
                    cfg.hidden_size,
                    cfg.layers,
                    dir.display()
                ),
            );
            dir
        }
    };
    let llm = match &cfg.llm {
        Some(dir) => dir.clone(),
        None => {
            let dir = models.join("llm");
            tiny_llm(&dir, &corpus, cfg, quiet)?;
            dir
        }
    };
    let mut study = StudyRun {
        llm: Some(llm),
        model: Some(bert),
        template: TEMPLATE.into(),
        items: Some(cfg.items),
        methods: Methods::All,
        seeds: cfg.seeds.clone(),
        num_virtual_tokens: 4,
        out: Some(cfg.out.join("study")),
        // The models above are made again on every run: start the study afresh.
        overwrite: true,
        ..Default::default()
    };
    study.classify.steps = cfg.steps;
    study.classify.warmup = cfg.steps / 10;
    study.classify.lr = 5e-3;
    study.classify.batch_size = 16;
    study.classify.max_length = 64;
    let device = tilpass::device("flex")?;
    Ok(study.run(&device, &mut |l| say(quiet, l))?)
}
