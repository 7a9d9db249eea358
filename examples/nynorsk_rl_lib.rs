//! The `nynorsk_rl` example as a library function: GRPO on the quickstart's chat model with
//! the written-form reward — asked in Nynorsk, it should answer in Nynorsk.
//!
//! Prompts are Nynorsk questions from the embedded data: the user turns of the Nynorsk
//! `norsk-chat` conversations and the Nynorsk queries of the RAG benchmark. The `eval` split of
//! `norsk-chat` and every fifth RAG query are held out. [`run`] measures the Nynorsk share of
//! the model's greedy answers to the held-out prompts (the built-in language identifier's
//! verdict), trains a LoRA adapter with [`GrpoRun`] — the same library call as `tilpass train
//! grpo` — on the training prompts with the rewards `lang=nn` (the identifier's probability of
//! Nynorsk) and a small length window, and measures the share again with the adapter.

use std::path::{Path, PathBuf};

use tilpass::data::embedded::{NORSK_RAG_QUERIES_JSONL, norsk_chat};
use tilpass::data::{DatasetSpec, LangId, Message, Role};
use tilpass::models::DecoderLm;
use tilpass::peft::{LoraConfig, PeftModel};
use tilpass::preference::{GrpoRun, OnlineKind};
use tilpass::tokenize::{RenderOptions, Tokenizer};
use tilpass::train::{Event, Summary, sample_answers};

/// Error type of the example.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Settings of the example run.
#[derive(Debug, Clone)]
pub struct NynorskRlConfig {
    /// The chat model (HF layout with tokenizer and chat template), by default the
    /// quickstart's `quickstart-out/chat-model`.
    pub model: PathBuf,
    /// Where the prompts, the run (`grpo/`: adapter, checkpoints, metrics) go.
    pub out: PathBuf,
    /// GRPO steps.
    pub steps: usize,
    /// Completions per prompt, G.
    pub num_generations: usize,
    /// Prompts per step (each gets G completions).
    pub prompts_per_step: usize,
    /// Most new tokens per completion (and per held-out answer).
    pub max_completion_length: usize,
    /// Learning rate of the LoRA adapter.
    pub lr: f64,
    /// LoRA rank.
    pub lora_r: usize,
    /// Weight of the length window next to `lang=nn` (weight 1).
    pub length_weight: f64,
    /// Held-out prompts used for the before / after share (at most; `None`: all).
    pub held_out: Option<usize>,
    /// Seed of the adapter, the prompt order and the sampler.
    pub seed: u64,
}

impl Default for NynorskRlConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("quickstart-out/chat-model"),
            out: PathBuf::from("nynorsk-rl-out"),
            steps: 40,
            num_generations: 8,
            prompts_per_step: 4,
            max_completion_length: 40,
            lr: 2e-3,
            lora_r: 16,
            length_weight: 0.2,
            held_out: None,
            seed: 0,
        }
    }
}

/// The Nynorsk share of a set of answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// Answers the language identifier calls Nynorsk.
    pub nynorsk: usize,
    /// Answers.
    pub total: usize,
    /// Mean probability of Nynorsk over the answers (0 for an answer without letters).
    pub mean_nn_probability: f64,
}

impl Share {
    /// `nynorsk / total`.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.nynorsk as f64 / self.total as f64
        }
    }

    /// The share of `answers`.
    pub fn of(answers: &[String]) -> Self {
        let id = LangId::builtin();
        let mut nynorsk = 0;
        let mut prob = 0.0;
        for a in answers {
            if !a.chars().any(char::is_alphabetic) {
                continue;
            }
            let p = id.predict(a);
            nynorsk += usize::from(p.lang == "nn");
            prob += p
                .probabilities
                .iter()
                .find(|(l, _)| l == "nn")
                .map_or(0.0, |(_, p)| *p);
        }
        Self {
            nynorsk,
            total: answers.len(),
            mean_nn_probability: if answers.is_empty() {
                0.0
            } else {
                prob / answers.len() as f64
            },
        }
    }
}

/// What the example measured.
#[derive(Debug, Clone)]
pub struct NynorskRlReport {
    /// Training and held-out prompts.
    pub prompts: (usize, usize),
    /// The held-out share before training.
    pub before: Share,
    /// The held-out share with the trained adapter.
    pub after: Share,
    /// A few held-out questions with the answers before and after.
    pub examples: Vec<(String, String, String)>,
    /// The run's steps and losses.
    pub summary: Summary,
    /// The adapter (HF PEFT layout; load it on the chat model).
    pub adapter: PathBuf,
    /// Seconds of the GRPO run alone.
    pub train_seconds: f64,
}

/// The Nynorsk questions: (training, held-out).
pub fn nynorsk_prompts() -> Result<(Vec<String>, Vec<String>), BoxError> {
    let question = |messages: &[Message]| {
        messages
            .iter()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.trim().to_string())
    };
    let mut train = Vec::new();
    let mut held = Vec::new();
    for (split, set) in [("train", &mut train), ("eval", &mut held)] {
        for c in norsk_chat(Some(split))? {
            if c.lang == "nn"
                && let Some(q) = question(&c.messages)
            {
                set.push(q);
            }
        }
    }
    let mut n = 0;
    for line in NORSK_RAG_QUERIES_JSONL
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)?;
        if v["lang"] != "nn" {
            continue;
        }
        let Some(q) = v["text"].as_str() else {
            continue;
        };
        // Every fifth Nynorsk query is held out.
        if n % 5 == 4 {
            held.push(q.trim().to_string());
        } else {
            train.push(q.trim().to_string());
        }
        n += 1;
    }
    Ok((train, held))
}

/// The chat prompt of `question` as the model sees it (its template with the generation
/// prompt), tokenised without special tokens, as `GRPOTrainer` renders conversations.
fn prompt_ids(tok: &Tokenizer, question: &str) -> Result<Vec<u32>, BoxError> {
    let t = tok.chat_template(None)?;
    let text = t
        .render(
            &[Message::new(Role::User, question)],
            &RenderOptions {
                add_generation_prompt: true,
                ..Default::default()
            },
        )?
        .text;
    Ok(tok.encode(&text, false)?)
}

/// Greedy answers of `model` to `questions`.
fn answers(
    model: &DecoderLm,
    tok: &Tokenizer,
    questions: &[String],
    max_new_tokens: usize,
) -> Result<Vec<String>, BoxError> {
    let ids = questions
        .iter()
        .map(|q| prompt_ids(tok, q))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(32) {
        out.extend(sample_answers(model, tok, chunk, max_new_tokens)?);
    }
    Ok(out)
}

/// Runs the example (see the module docs); GRPO's progress goes to `progress`.
pub fn run(
    cfg: &NynorskRlConfig,
    progress: &mut dyn FnMut(Event),
) -> Result<NynorskRlReport, BoxError> {
    let model_dir = &cfg.model;
    if !model_dir.join("config.json").is_file() {
        return Err(format!(
            "{}: no model there (run `cargo run --release --example quickstart` first, or give \
             the path of a chat model)",
            model_dir.display()
        )
        .into());
    }
    let (train, mut held) = nynorsk_prompts()?;
    if let Some(n) = cfg.held_out {
        held.truncate(n);
    }
    std::fs::create_dir_all(&cfg.out)?;
    let data = cfg.out.join("prompts.jsonl");
    let rows: String = train
        .iter()
        .map(|q| {
            serde_json::json!({"prompt": [{"role": "user", "content": q}], "lang": "nn"})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&data, rows)?;

    let device = tilpass::device("flex")?;
    let tok = Tokenizer::from_dir(model_dir)?;
    let before_answers = {
        let model = DecoderLm::load(model_dir, &device)?;
        answers(&model, &tok, &held, cfg.max_completion_length)?
    };
    let before = Share::of(&before_answers);

    let run = GrpoRun {
        algorithm: OnlineKind::Grpo,
        model: Some(model_dir.clone()),
        data: Some(DatasetSpec::File(data)),
        rewards: vec![
            "lang=nn".into(),
            format!("length=20..200:{}", cfg.length_weight),
        ],
        out: Some(cfg.out.join("grpo")),
        overwrite_output_dir: true,
        num_generations: Some(cfg.num_generations),
        max_completion_length: cfg.max_completion_length,
        batch_size: cfg.num_generations * cfg.prompts_per_step,
        lora: LoraConfig::builder()
            .r(cfg.lora_r)
            .lora_alpha(2.0 * cfg.lora_r as f64)
            .target_modules("all-linear")
            .task_type("CAUSAL_LM")
            .build()?,
        lr: cfg.lr,
        steps: cfg.steps,
        seed: cfg.seed,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let outcome = run.run(&device, progress)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let summary = outcome.summary.clone();
    drop(outcome);

    // The adapter as a user loads it: the chat model + out/grpo/adapter.
    let adapter = cfg.out.join("grpo").join("adapter");
    let mut tuned = PeftModel::new(DecoderLm::load(model_dir, &device)?);
    tuned.load_adapter(&adapter, "default")?;
    let after_answers = answers(tuned.model(), &tok, &held, cfg.max_completion_length)?;
    let after = Share::of(&after_answers);
    let examples = held
        .iter()
        .zip(before_answers.iter().zip(&after_answers))
        .take(4)
        .map(|(q, (b, a))| (q.clone(), b.clone(), a.clone()))
        .collect();
    Ok(NynorskRlReport {
        prompts: (train.len(), held.len()),
        before,
        after,
        examples,
        summary,
        adapter,
        train_seconds,
    })
}

/// Whether `dir` holds a model (for the example's default location).
pub fn has_model(dir: &Path) -> bool {
    dir.join("config.json").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_prompts_are_nynorsk_and_disjoint_from_training() {
        let (train, held) = nynorsk_prompts().unwrap();
        assert!(
            train.len() > 200 && held.len() > 50,
            "{} / {}",
            train.len(),
            held.len()
        );
        for q in &held {
            assert!(!train.contains(q), "held-out prompt in training: {q}");
        }
        // The identifier agrees the questions are mostly Nynorsk (the goal the reward sets).
        let share = Share::of(&held);
        assert!(share.fraction() > 0.6, "{share:?}");
    }

    #[test]
    fn a_missing_model_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NynorskRlConfig {
            model: dir.path().join("none"),
            out: dir.path().join("out"),
            ..Default::default()
        };
        let err = run(&cfg, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("--example quickstart"), "{err}");
    }
}
