//! `tilpass data self-instruct`: new Norwegian instructions with answers from seed tasks and a
//! local model, after Self-Instruct (Wang et al. 2022, arXiv:2212.10560).
//!
//! Attempt `j` shows the model `num_examples` seed tasks drawn without replacement by a
//! generator seeded with `(seed, j)` — `Oppgave: ...` / `Svar: ...` pairs (Nynorsk: `Oppgåve`)
//! after a header line, as raw text — and takes the first line the model writes after the
//! final `Oppgave:` as the new instruction. The model then answers it: the instruction as a
//! user turn of its chat template (`prompt_format`), or, without one, `Oppgave: ... Svar:`.
//! (Two steps rather than Self-Instruct's one, so that a small chat model, which answers a
//! question but does not continue a few-shot list, still gives answers.)
//!
//! A candidate is rejected (with its reason, in `OUT.rejects.jsonl`) when the instruction is
//! empty (`empty_instruction`) or has fewer than `min_words` or more than `max_words` words
//! (`instruction_length`; Self-Instruct keeps 3–150), when the answer is empty
//! (`empty_answer`), when the language identifier does not read the task and answer as the
//! target written form (`language` / `written_form`), when the extra filter says so
//! (`filter`), or when its ROUGE-L F-measure against any instruction so far (the seeds and
//! every accepted one) reaches `rouge_threshold` (`rouge_l`, 0.7 as in Self-Instruct;
//! rouge-score's LCS with Unicode word tokens, so that æ, ø and å count). Unlike
//! Self-Instruct, examples are drawn from the seeds only, so an attempt's prompt does not
//! depend on what earlier attempts produced.
//!
//! The instructions are held in a [`RougePool`], an inverted index that finds the most similar
//! one (the same score and instruction as scoring each in turn) without scoring every seed, so
//! that a pool of 100,000 seeds costs milliseconds per candidate.
//!
//! Accepted tasks are written in TRL's conversational format (`messages`: user, assistant) or
//! as `prompt` / `completion`, each with a `self_instruct` object (`attempt`, `rouge_l_max`,
//! `lang`, `lang_prob`). Attempts stop at `num` accepted tasks or `max_attempts`. Both files are
//! appended attempt by attempt and resume like translation's output ([`super::append`]).
//!
//! With [`SelfInstructRun::quality`] set, the quality rules of `tilpass_data::quality`
//! (language, length, ratios, Gopher repetition rules) check each task's instruction and answer
//! together (reason `quality`, with the failed rules); [`SelfInstructRun::run_with_filter`] takes
//! any further filter (e.g. perplexity under a reference model) as a hook.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tilpass_data::{Content, LangId, Record, Role};
use tilpass_metrics::{Rouge, RougeTokenizer, RougeType};

use super::append::{open_resumable, with_suffix};
use super::rouge_pool::RougePool;
use super::textgen::{PromptFormat, TextGenOptions, TextModel};
use super::translate::WrittenForm;
use super::{RunConfig, check};
use crate::error::{Result, TrainError};

/// How accepted tasks are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskFormat {
    /// `{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`.
    #[default]
    Chat,
    /// `{"prompt": ..., "completion": ...}`.
    PromptCompletion,
}

/// Settings of a self-instruct job; field names are the `tilpass data self-instruct` flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelfInstructRun {
    /// The model's directory (a causal LM or an encoder-decoder, with its tokenizer).
    pub model: Option<PathBuf>,
    /// A LoRA / DoRA adapter for the model.
    pub adapter: Option<PathBuf>,
    /// Device the CLI runs on.
    pub device: String,
    /// Seed tasks (JSONL): Alpaca rows, conversations (first user turn and the assistant turn
    /// after it), prompt-completion or prompt-only rows (plain text).
    pub seeds: Option<PathBuf>,
    /// Output JSONL of accepted tasks; rejects go to `OUT.rejects.jsonl`.
    pub out: Option<PathBuf>,
    /// Accepted tasks wanted.
    pub num: usize,
    /// Attempts at most (default 20 × `num`).
    pub max_attempts: Option<usize>,
    /// Seed of the example draws and the sampler.
    pub seed: u64,
    /// Seed tasks shown per prompt.
    pub num_examples: usize,
    /// Written form of the new tasks.
    pub lang: WrittenForm,
    /// The instruction line heading the prompt (default: one for `lang`).
    pub header: Option<String>,
    /// Output layout.
    pub format: TaskFormat,
    /// How a decoder receives the answer prompt (the instruction prompt is raw text).
    pub prompt_format: PromptFormat,
    /// Attempts generated together.
    pub batch_size: usize,
    /// New tokens at most per attempt.
    pub max_new_tokens: usize,
    /// Sample (true) or decode greedily.
    pub do_sample: bool,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Reject a task whose ROUGE-L F-measure with an earlier instruction reaches this.
    pub rouge_threshold: f64,
    /// Fewest words of an instruction.
    pub min_words: usize,
    /// Most words of an instruction.
    pub max_words: usize,
    /// Reject tasks the language identifier does not read as `lang`.
    pub check_language: bool,
    /// Quality rules every task (instruction and answer, joined by a blank line) must pass
    /// (`None`: none). The Gopher defaults are made for web documents: short chat answers fail
    /// their 50-word minimum and top n-gram rules, so a chat job sets e.g. `"min_words": 3` and
    /// `"max_top_ngram": []` (see docs/data-quality.md).
    pub quality: Option<tilpass_data::quality::QualityConfig>,
}

impl Default for SelfInstructRun {
    fn default() -> Self {
        Self {
            model: None,
            adapter: None,
            device: "flex".into(),
            seeds: None,
            out: None,
            num: 100,
            max_attempts: None,
            seed: 0,
            num_examples: 3,
            lang: WrittenForm::Nb,
            header: None,
            format: TaskFormat::Chat,
            prompt_format: PromptFormat::Auto,
            batch_size: 8,
            max_new_tokens: 256,
            do_sample: true,
            temperature: 0.7,
            top_p: Some(0.9),
            rouge_threshold: 0.7,
            min_words: 3,
            max_words: 150,
            check_language: true,
            quality: None,
        }
    }
}

impl RunConfig for SelfInstructRun {
    const JOB: &'static str = "self-instruct";

    fn validate(&self) -> Result<()> {
        check::path("model", &self.model)?;
        check::path("seeds", &self.seeds)?;
        check::path("out", &self.out)?;
        check::at_least("num", self.num, 1)?;
        check::opt_at_least("max_attempts", self.max_attempts, 1)?;
        check::at_least("num_examples", self.num_examples, 1)?;
        check::at_least("batch_size", self.batch_size, 1)?;
        check::at_least("max_new_tokens", self.max_new_tokens, 1)?;
        check::positive("temperature", f64::from(self.temperature))?;
        if let Some(p) = self.top_p
            && !(p.is_finite() && p > 0.0 && p <= 1.0)
        {
            return Err(TrainError::setting("top_p", p, "a number in (0, 1]"));
        }
        let t = self.rouge_threshold;
        if !(t.is_finite() && t > 0.0 && t <= 1.0) {
            return Err(TrainError::setting(
                "rouge_threshold",
                t,
                "a number in (0, 1]",
            ));
        }
        if self.max_words < self.min_words {
            return Err(TrainError::setting(
                "max_words",
                self.max_words,
                format!("at least min_words ({})", self.min_words),
            ));
        }
        Ok(())
    }
}

/// What a self-instruct job did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SelfInstructOutcome {
    /// Accepted tasks in the output (earlier runs included).
    pub accepted: usize,
    /// Rejected attempts in the report (earlier runs included).
    pub rejected: usize,
    /// Attempts of this run.
    pub attempts: usize,
    /// Rejects by reason (earlier runs included).
    pub reasons: std::collections::BTreeMap<String, usize>,
    /// The rejects report.
    pub rejects: PathBuf,
    /// Seconds it took.
    pub seconds: f64,
}

/// A seed task.
#[derive(Debug, Clone, PartialEq)]
struct Seed {
    instruction: String,
    answer: Option<String>,
}

fn content_text(c: &Content) -> Option<String> {
    match c {
        Content::Text(t) => Some(t.clone()),
        Content::Messages(m) => m.first().map(|m| m.content.clone()),
    }
}

fn seed_of(v: &Value) -> std::result::Result<Seed, String> {
    let rec = Record::from_json(v, None).map_err(|e| e.to_string())?;
    let (instruction, answer) = match &rec {
        Record::Conversation { messages } => {
            let u = messages
                .iter()
                .position(|m| m.role == Role::User)
                .ok_or("a conversation without a user turn")?;
            let a = messages[u + 1..]
                .iter()
                .find(|m| m.role == Role::Assistant)
                .map(|m| m.content.clone());
            (messages[u].content.clone(), a)
        }
        Record::PromptCompletion { prompt, completion }
        | Record::Unpaired {
            prompt, completion, ..
        } => (
            content_text(prompt).unwrap_or_default(),
            content_text(completion),
        ),
        Record::PromptOnly { prompt } => (content_text(prompt).unwrap_or_default(), None),
        _ => {
            return Err(format!(
                "a {} row holds no instruction; seed tasks are Alpaca, conversation, \
                 prompt-completion or prompt-only rows",
                rec.kind().as_str()
            ));
        }
    };
    if instruction.trim().is_empty() {
        return Err("the instruction is empty".into());
    }
    Ok(Seed {
        instruction: instruction.trim().to_string(),
        answer: answer.map(|a| a.trim().to_string()),
    })
}

/// The task and answer labels of a written form.
fn labels(lang: WrittenForm) -> (&'static str, &'static str) {
    match lang {
        WrittenForm::Nb => ("Oppgave:", "Svar:"),
        WrittenForm::Nn => ("Oppgåve:", "Svar:"),
    }
}

/// The default header line of a written form.
pub fn default_header(lang: WrittenForm) -> &'static str {
    match lang {
        WrittenForm::Nb => {
            "Her er noen oppgaver med svar. Skriv en ny oppgave på norsk bokmål som er \
             annerledes enn disse, og svar på den."
        }
        WrittenForm::Nn => {
            "Her er nokre oppgåver med svar. Skriv ei ny oppgåve på nynorsk som er \
             annleis enn desse, og svar på henne."
        }
    }
}

/// `k` distinct indices below `n`, drawn by a generator seeded with `(seed, attempt)`.
fn draw(n: usize, k: usize, seed: u64, attempt: usize) -> Vec<usize> {
    let mut rng = tilpass_core::SplitMix64::from_state(
        seed ^ (attempt as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut idx: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    for i in 0..k {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}

/// The instruction in a generated line: cut before an answer label, trimmed.
fn instruction_of(text: &str, answer_label: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    line.split(answer_label)
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// An extra filter: `Some(reason)` rejects a task `(instruction, answer)`.
pub type TaskFilter<'a> = &'a dyn Fn(&str, &str) -> Option<String>;

impl SelfInstructRun {
    /// The settings a resumed run must share with the run it continues.
    pub fn resume_key(&self) -> Result<Value> {
        let mut v = self.to_json()?;
        if let Value::Object(m) = &mut v {
            m.remove("out");
            m.remove("device");
        }
        Ok(v)
    }

    /// The rejects report beside `out`.
    pub fn rejects_path(&self) -> Result<PathBuf> {
        Ok(with_suffix(
            check::path("out", &self.out)?,
            ".rejects.jsonl",
        ))
    }

    fn prompt(&self, seeds: &[Seed], picks: &[usize]) -> String {
        let (task, answer) = labels(self.lang);
        let mut p = self
            .header
            .clone()
            .unwrap_or_else(|| default_header(self.lang).to_string());
        p.push_str("\n\n");
        for &i in picks {
            let s = &seeds[i];
            p.push_str(&format!("{task} {}\n", s.instruction));
            if let Some(a) = &s.answer {
                p.push_str(&format!("{answer} {a}\n"));
            }
            p.push('\n');
        }
        p.push_str(task);
        p
    }

    /// [`Self::run_with_filter`] without an extra filter.
    pub fn run(
        &self,
        device: &Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<SelfInstructOutcome> {
        self.run_with_filter(device, None, progress)
    }

    /// Generates tasks until `num` are accepted (or `max_attempts`), calling
    /// `progress(accepted, num)` after each batch; `filter` (e.g. the quality filters) runs
    /// after the language check and before ROUGE-L. Bad seed rows are
    /// [`TrainError::Row`] naming file and line, before any work.
    pub fn run_with_filter(
        &self,
        device: &Device,
        filter: Option<TaskFilter>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<SelfInstructOutcome> {
        self.validate()?;
        let quality = self
            .quality
            .clone()
            .map(tilpass_data::quality::QualityFilter::new)
            .transpose()?;
        let start = Instant::now();
        let seeds_path = check::path("seeds", &self.seeds)?;
        let out = check::path("out", &self.out)?;
        let model_dir = check::path("model", &self.model)?;
        // Streamed: only the seed texts are kept, not the parsed rows.
        let mut seeds = Vec::new();
        for r in tilpass_data::JsonlRows::open(seeds_path)? {
            let (line, v) = super::jsonl::row(seeds_path, r?)?;
            seeds.push(seed_of(&v).map_err(|message| TrainError::Row {
                path: seeds_path.display().to_string(),
                line,
                message,
            })?);
        }
        if seeds.is_empty() {
            return Err(TrainError::setting(
                "seeds",
                seeds_path.display(),
                "a file with at least one seed task",
            ));
        }
        let rejects_path = self.rejects_path()?;
        let (done, mut writers) = open_resumable(
            "self-instruct",
            &[out, &rejects_path],
            &self.resume_key()?,
            &[seeds_path],
        )?;
        let attempt_of = |v: &Value| -> Option<usize> {
            v.get("self_instruct")
                .unwrap_or(v)
                .get("attempt")
                .and_then(Value::as_u64)
                .map(|a| a as usize)
        };
        let mut instructions: Vec<String> = seeds.iter().map(|s| s.instruction.clone()).collect();
        let mut accepted = done[0].len();
        let mut reasons = std::collections::BTreeMap::<String, usize>::new();
        for r in &done[1] {
            let reason = r["reason"].as_str().unwrap_or("?").to_string();
            *reasons.entry(reason).or_default() += 1;
        }
        let mut rejected = done[1].len();
        let mut next = 0usize;
        for (k, rows) in done.iter().enumerate() {
            for v in rows {
                let a = attempt_of(v).ok_or_else(|| TrainError::Resume {
                    path: if k == 0 { out } else { &rejects_path }
                        .display()
                        .to_string(),
                    message: "a row without its attempt number: not a self-instruct output".into(),
                })?;
                next = next.max(a + 1);
            }
        }
        if next != accepted + rejected {
            return Err(TrainError::Resume {
                path: out.display().to_string(),
                message: format!(
                    "{accepted} accepted and {rejected} rejected rows but attempts up to {next}: \
                     the output and its rejects report do not belong together"
                ),
            });
        }
        for v in &done[0] {
            let text = match self.format {
                TaskFormat::Chat => v["messages"][0]["content"].as_str(),
                TaskFormat::PromptCompletion => v["prompt"].as_str(),
            };
            instructions.push(text.unwrap_or_default().to_string());
        }
        let rouge = Rouge::new(&[RougeType::L], RougeTokenizer::default());
        let mut pool = RougePool::for_rouge(&rouge);
        for i in &instructions {
            pool.push(i);
        }
        let max_attempts = self.max_attempts.unwrap_or(self.num.saturating_mul(20));
        let mut attempts = 0usize;
        progress(accepted.min(self.num), self.num);
        if accepted >= self.num || next >= max_attempts {
            return Ok(SelfInstructOutcome {
                accepted,
                rejected,
                attempts,
                reasons,
                rejects: rejects_path,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        let model = TextModel::load(
            model_dir,
            self.adapter.as_deref(),
            self.prompt_format,
            device,
        )?;
        let (task_label, answer_label) = labels(self.lang);
        let bs = self.batch_size;
        let mut b0 = next / bs * bs;
        while accepted < self.num && next < max_attempts {
            let b1 = (b0 + bs).min(max_attempts);
            let prompts: Vec<String> = (b0..b1)
                .map(|a| self.prompt(&seeds, &draw(seeds.len(), self.num_examples, self.seed, a)))
                .collect();
            let opts = TextGenOptions {
                max_new_tokens: self.max_new_tokens,
                do_sample: self.do_sample,
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed.wrapping_add(b0 as u64),
                stop: vec!["\n".into()],
                raw: true,
            };
            let lines = model.generate(&prompts, &opts)?;
            // Instructions that pass the checks of their own get an answer (all together).
            let mut verdicts: Vec<std::result::Result<(String, Option<String>), Value>> = lines
                .iter()
                .map(|l| {
                    let i = instruction_of(l, answer_label);
                    self.check_instruction(&i).map(|()| (i, None))
                })
                .collect();
            // Also those of attempts a resumed run has done: the batch is the same as the
            // uninterrupted run's, so the sampled answers are too.
            let asked: Vec<usize> = (0..verdicts.len())
                .filter(|&k| verdicts[k].is_ok())
                .collect();
            let chat = model.uses_chat_template();
            let answer_prompts: Vec<String> = asked
                .iter()
                .map(|&k| {
                    let i = &verdicts[k]
                        .as_ref()
                        .map(|v| v.0.clone())
                        .unwrap_or_default();
                    if chat {
                        i.clone()
                    } else {
                        format!("{task_label} {i}\n{answer_label}")
                    }
                })
                .collect();
            let answer_opts = TextGenOptions {
                seed: opts.seed ^ 0x5DEE_CE66_D1CE_4E5B,
                stop: vec![format!("\n{task_label}")],
                raw: !chat,
                ..opts
            };
            let answers = model.generate(&answer_prompts, &answer_opts)?;
            for (&k, ans) in asked.iter().zip(answers) {
                if let Ok((_, a)) = &mut verdicts[k] {
                    *a = Some(ans);
                }
            }
            for ((a, verdict), line) in (b0..b1).zip(verdicts).zip(lines) {
                if a < next || accepted >= self.num {
                    continue;
                }
                attempts += 1;
                next = a + 1;
                let verdict = verdict.and_then(|(i, ans)| {
                    self.judge(
                        i,
                        ans.unwrap_or_default(),
                        (&instructions, &pool),
                        quality.as_ref(),
                        filter,
                    )
                });
                match verdict {
                    Ok((instruction, answer, info)) => {
                        let mut row = match self.format {
                            TaskFormat::Chat => json!({"messages": [
                                {"role": "user", "content": instruction},
                                {"role": "assistant", "content": answer},
                            ]}),
                            TaskFormat::PromptCompletion => {
                                json!({"prompt": instruction, "completion": answer})
                            }
                        };
                        let mut info = info;
                        info["attempt"] = json!(a);
                        row["self_instruct"] = info;
                        writers[0].push(&row)?;
                        pool.push(&instruction);
                        instructions.push(instruction);
                        accepted += 1;
                    }
                    Err(mut reject) => {
                        reject["attempt"] = json!(a);
                        if reject.get("instruction").is_none() {
                            reject["text"] = json!(line);
                        }
                        let reason = reject["reason"].as_str().unwrap_or("?").to_string();
                        *reasons.entry(reason).or_default() += 1;
                        writers[1].push(&reject)?;
                        rejected += 1;
                    }
                }
            }
            progress(accepted.min(self.num), self.num);
            b0 = b1;
        }
        Ok(SelfInstructOutcome {
            accepted,
            rejected,
            attempts,
            reasons,
            rejects: rejects_path,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The checks of an instruction on its own: not empty, `min_words..=max_words` words.
    fn check_instruction(&self, instruction: &str) -> std::result::Result<(), Value> {
        if instruction.is_empty() {
            return Err(json!({"reason": "empty_instruction"}));
        }
        let words = instruction.split_whitespace().count();
        if words < self.min_words || words > self.max_words {
            return Err(json!({"reason": "instruction_length", "words": words,
                              "instruction": instruction}));
        }
        Ok(())
    }

    /// Accepts `(instruction, answer, self_instruct info)` or rejects with `{reason, ...}`.
    fn judge(
        &self,
        instruction: String,
        answer: String,
        (instructions, pool): (&[String], &RougePool),
        quality: Option<&tilpass_data::quality::QualityFilter>,
        filter: Option<TaskFilter>,
    ) -> std::result::Result<(String, String, Value), Value> {
        self.check_instruction(&instruction)?;
        let answer = answer.trim().to_string();
        if answer.is_empty() {
            return Err(json!({"reason": "empty_answer", "instruction": instruction}));
        }
        let p = LangId::builtin().predict(&format!("{instruction}\n{answer}"));
        let prob = p.probabilities.first().map_or(0.0, |x| x.1);
        if self.check_language && p.lang != self.lang.code() {
            let reason = if matches!(p.lang.as_str(), "nb" | "nn") {
                "written_form"
            } else {
                "language"
            };
            return Err(json!({"reason": reason, "lang": p.lang, "lang_prob": prob,
                              "instruction": instruction, "answer": answer}));
        }
        if let Some(q) = quality {
            let failed = q.check_text(&format!("{instruction}\n\n{answer}"));
            if !failed.is_empty() {
                return Err(json!({"reason": "quality", "failed": failed,
                                  "instruction": instruction, "answer": answer}));
            }
        }
        if let Some(f) = filter
            && let Some(why) = f(&instruction, &answer)
        {
            return Err(
                json!({"reason": "filter", "detail": why, "instruction": instruction,
                              "answer": answer}),
            );
        }
        // The first instruction with the highest ROUGE-L, as scoring each in turn finds it.
        let (f, k) = pool.best(&instruction);
        let best: (f64, Option<&String>) = (f, k.map(|k| &instructions[k]));
        if best.0 >= self.rouge_threshold {
            return Err(json!({"reason": "rouge_l", "rouge_l": best.0,
                              "most_similar": best.1, "instruction": instruction,
                              "answer": answer}));
        }
        Ok((
            instruction,
            answer,
            json!({"rouge_l_max": best.0, "lang": p.lang, "lang_prob": prob}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_of_each_format_and_draws_are_distinct_and_seeded() {
        let s =
            seed_of(&json!({"instruction": "Skriv et dikt", "input": "", "output": "Ja"})).unwrap();
        assert_eq!(s.instruction, "Skriv et dikt");
        assert_eq!(s.answer.as_deref(), Some("Ja"));
        let s = seed_of(&json!({"prompt": "P", "completion": "C"})).unwrap();
        assert_eq!(
            (s.instruction.as_str(), s.answer.as_deref()),
            ("P", Some("C"))
        );
        assert!(seed_of(&json!({"text": "x"})).is_err());
        let d = draw(10, 4, 3, 5);
        let mut u = d.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), 4);
        assert_eq!(d, draw(10, 4, 3, 5));
        assert_ne!(d, draw(10, 4, 3, 6));
        assert_eq!(draw(2, 5, 0, 0).len(), 2);
    }

    #[test]
    fn rouge_length_and_emptiness_reject_candidates() {
        let run = SelfInstructRun {
            check_language: false,
            ..Default::default()
        };
        let rouge = Rouge::new(&[RougeType::L], RougeTokenizer::default());
        let seen = vec!["Skriv et kort dikt om høsten i Bergen".to_string()];
        let mut pool = RougePool::for_rouge(&rouge);
        pool.push(&seen[0]);
        let judge = |i: &str, a: &str| run.judge(i.into(), a.into(), (&seen, &pool), None, None);
        let r = judge("Skriv et kort dikt om høsten i Oslo", "...").unwrap_err();
        assert_eq!(r["reason"], "rouge_l");
        // LCS 7 of 8 tokens each way: F = 0.875.
        assert!(
            (r["rouge_l"].as_f64().unwrap() - 0.875).abs() < 1e-12,
            "{r}"
        );
        assert_eq!(r["most_similar"], seen[0]);
        let ok = judge(
            "Forklar hvordan fotosyntese virker",
            " Lys blir til energi. ",
        )
        .unwrap();
        assert_eq!(ok.0, "Forklar hvordan fotosyntese virker");
        assert_eq!(ok.1, "Lys blir til energi.");
        assert_eq!(
            judge("Hei der", "x").unwrap_err()["reason"],
            "instruction_length"
        );
        assert_eq!(judge("", "x").unwrap_err()["reason"], "empty_instruction");
        assert_eq!(
            judge("Forklar hvordan fotosyntese virker", " ").unwrap_err()["reason"],
            "empty_answer"
        );
        let only_nn = |_: &str, a: &str| (!a.contains("ikkje")).then(|| "no ikkje".to_string());
        let r = run
            .judge(
                "Forklar hvordan fotosyntese virker".into(),
                "Ja".into(),
                (&seen, &pool),
                None,
                Some(&only_nn),
            )
            .unwrap_err();
        assert_eq!(
            (r["reason"].as_str(), r["detail"].as_str()),
            (Some("filter"), Some("no ikkje"))
        );
        let nb = SelfInstructRun::default();
        let r = nb
            .judge(
                "What is the capital of Norway today".into(),
                "It is Oslo, of course.".into(),
                (&seen, &pool),
                None,
                None,
            )
            .unwrap_err();
        assert_eq!(r["reason"], "language");
        // The quality rules: a repeated answer fails the Gopher duplicate-line rule.
        let config = tilpass_data::quality::QualityConfig {
            languages: None,
            min_words: Some(1),
            ..Default::default()
        };
        let q = tilpass_data::quality::QualityFilter::new(config).unwrap();
        let repeated = "Sol i dag.\n".repeat(20);
        let r = run
            .judge(
                "Forklar hvordan fotosyntese virker".into(),
                repeated,
                (&seen, &pool),
                Some(&q),
                None,
            )
            .unwrap_err();
        assert_eq!(r["reason"], "quality", "{r}");
        let rules: Vec<_> = r["failed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["rule"].as_str().unwrap().to_string())
            .collect();
        assert!(rules.iter().any(|x| x.starts_with("dup_line")), "{rules:?}");
        assert_eq!(
            instruction_of("  Lag en liste Svar: nei\nmer", "Svar:"),
            "Lag en liste"
        );
    }
}
