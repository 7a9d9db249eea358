//! The `rag` example's flow: build a knowledge base from the embedded Norwegian corpus, ask it
//! a few questions in Bokmål and Nynorsk, show the retrieved passages and the prompt, and —
//! with a decoder — generate answers whose `[n]` citations point into the documents.
//!
//! [`finetune`] teaches a small chat model (the quickstart's) to cite: LoRA SFT on chat
//! examples built by tilpass-rag's [`build_rag_sft`] from the `norsk-rag` queries that are not
//! the example's questions (the prompt `rag ask` builds, answered with a sentence of the
//! judged passage and its `[n]`), every [`HELD_OUT_EVERY`]-th query held out; then it answers
//! the example's questions and the held-out queries through the path of `tilpass rag ask
//! --adapter` and scores the citations against the judgements (tilpass-metrics' citation
//! precision and recall).

use std::path::{Path, PathBuf};

use tilpass::data::DatasetSpec;
use tilpass::data::embedded::{NORSK_RAG, NORSK_RAG_QRELS, NORSK_RAG_QUERIES_JSONL};
use tilpass::metrics::citation::{CitationScores, citation_scores};
use tilpass::models::{DecoderLm, GenerateConfig};
use tilpass::peft::LoraConfig;
use tilpass::rag::eval::{EvalQuery, parse_qrels, parse_queries};
use tilpass::rag::{
    Answer, ChunkerConfig, Document, KnowledgeBase, PromptConfig, PromptLang, PromptPassage,
    RagPrompt, RagSftConfig, RagSftExample, RagSftReport, build_prompt, build_rag_sft,
    generate_answer, prompt::plain_prompt,
};
use tilpass::tokenize::{Tokenizer, Truncation};
use tilpass::train::{Progress, ScheduleKind, SftRun};

type BoxError = Box<dyn std::error::Error>;

/// The corpus: the embedded Norwegian retrieval set `norsk-rag` (502 CC0 passages on Norwegian
/// public life, Bokmål and Nynorsk; `data/rag/`, `data/README.md`), one knowledge-base
/// document per passage.
pub const CORPUS: &str = tilpass::data::embedded::NORSK_RAG_PASSAGES_JSONL;

/// The questions asked: `(language, question, id of the passage that answers it)`, queries
/// q020, q106, q052 and q125 of `norsk-rag` with the passage its judgements grade 2.
pub const QUESTIONS: [(PromptLang, &str, &str); 4] = [
    (
        PromptLang::Nb,
        "hvilket nummer ringer jeg til legevakten",
        "fastlege-3",
    ),
    (
        PromptLang::Nb,
        "hvem ble valgt til konge på Eidsvoll",
        "grunnlova-2",
    ),
    (
        PromptLang::Nn,
        "Kvifor er Bryggen i Bergen på verdsarvlista?",
        "bergen-1",
    ),
    (
        PromptLang::Nn,
        "Kor langt frå eit hus må teltet stå?",
        "allemannsrett-2",
    ),
];

/// Settings of the example.
#[derive(Debug, Clone)]
pub struct RagExampleConfig {
    /// Output directory (the knowledge base goes in `OUT/kb`).
    pub out: PathBuf,
    /// A decoder directory with its tokenizer (e.g. the quickstart's `chat-model`); `None`:
    /// retrieval and prompts only.
    pub model: Option<PathBuf>,
    /// A LoRA adapter for `model`.
    pub adapter: Option<PathBuf>,
    /// Passages per question.
    pub k: usize,
    /// New tokens per answer at most.
    pub max_new_tokens: usize,
}

impl Default for RagExampleConfig {
    fn default() -> Self {
        Self {
            out: PathBuf::from("rag-out"),
            model: None,
            adapter: None,
            k: 3,
            max_new_tokens: 48,
        }
    }
}

/// What happened to one question.
#[derive(Debug, Clone)]
pub struct Asked {
    /// The question.
    pub question: String,
    /// The document that answers it.
    pub expected: String,
    /// The passages in the prompt, `[1]` first.
    pub passages: Vec<PromptPassage>,
    /// The prompt text.
    pub prompt: String,
    /// The answer, when a model was given.
    pub answer: Option<Answer>,
}

impl Asked {
    /// Whether the answering document was retrieved first (`[1]` of the prompt).
    pub fn retrieved_first(&self) -> bool {
        self.passages.first().is_some_and(|p| p.id == self.expected)
    }

    /// Whether the answer cites the answering document.
    pub fn cited(&self) -> bool {
        self.answer
            .as_ref()
            .is_some_and(|a| a.citations.iter().any(|c| c.id == self.expected))
    }
}

/// Builds (or refreshes) the knowledge base in `OUT/kb` from [`CORPUS`].
pub fn build_kb(out: &Path) -> Result<KnowledgeBase, BoxError> {
    let dir = out.join("kb");
    let kb = KnowledgeBase::open_or_create(&dir, Default::default(), ChunkerConfig::default())?;
    let mut w = kb.writer()?;
    for (i, line) in CORPUS.lines().enumerate() {
        let doc: Document = serde_json::from_str(line)?;
        doc.validate(&format!("builtin:norsk-rag passage {}", i + 1))?;
        w.upsert(&doc)?;
    }
    w.commit()?;
    w.close()?;
    Ok(kb)
}

/// Runs the example: every question of [`QUESTIONS`], answered when `cfg.model` is given;
/// `on_text` receives the answers' text as it is generated.
pub fn run(cfg: &RagExampleConfig, on_text: &mut dyn FnMut(&str)) -> Result<Vec<Asked>, BoxError> {
    let kb = build_kb(&cfg.out)?;
    let model = match &cfg.model {
        Some(dir) => {
            let device = tilpass::device("flex")?;
            let (model, prompt_adapter) =
                tilpass::peft::load_causal_lm(dir, cfg.adapter.as_deref(), &device)?;
            if prompt_adapter.is_some() {
                return Err(
                    "the rag example takes LoRA adapters (`tilpass rag ask` takes \
                            prompt-learning ones too)"
                        .into(),
                );
            }
            Some((model, Tokenizer::from_dir(dir)?))
        }
        None => None,
    };
    let mut asked = Vec::new();
    for (lang, question, expected) in QUESTIONS {
        let hits = kb.search(question, cfg.k)?;
        let pcfg = PromptConfig {
            lang,
            max_passages: cfg.k,
            answer_tokens: cfg.max_new_tokens,
            ..Default::default()
        };
        let (prompt, answer) = match &model {
            Some((m, tok)) => {
                let p: RagPrompt =
                    build_prompt(&pcfg, tok, question, &hits, Some(m.max_positions()))?;
                let gen_cfg = GenerateConfig {
                    max_new_tokens: cfg.max_new_tokens,
                    // A fine-tuned adapter copies from its sources (greedy, as `rag ask`); the
                    // bare chat model repeats itself without a penalty.
                    repetition_penalty: if cfg.adapter.is_some() {
                        None
                    } else {
                        Some(1.2)
                    },
                    ..Default::default()
                };
                let a = generate_answer(m, tok, &p, &gen_cfg, None, on_text)?;
                (p.text, Some((a, p.passages)))
            }
            None => {
                let passages: Vec<PromptPassage> = hits
                    .iter()
                    .enumerate()
                    .map(|(i, h)| PromptPassage::from_hit(i + 1, h))
                    .collect();
                let text = plain_prompt(lang, lang.instructions(), question, &passages);
                (text, None)
            }
        };
        let (answer, passages) = match answer {
            Some((a, p)) => (Some(a), p),
            None => (
                None,
                hits.iter()
                    .enumerate()
                    .map(|(i, h)| PromptPassage::from_hit(i + 1, h))
                    .collect(),
            ),
        };
        asked.push(Asked {
            question: question.to_string(),
            expected: expected.to_string(),
            passages,
            prompt,
            answer,
        });
    }
    Ok(asked)
}

/// Every this many-th `norsk-rag` query (in file order, counting from the first) is held out
/// of the fine-tuning data and scored after it.
pub const HELD_OUT_EVERY: usize = 10;

/// Settings of [`finetune`].
#[derive(Debug, Clone)]
pub struct FinetuneConfig {
    /// The chat model (e.g. the quickstart's `chat-model`) with its tokenizer.
    pub model: PathBuf,
    /// Output directory: `OUT/rag-sft/{train,eval}.jsonl`, the run's `adapter/`, metrics.
    pub out: PathBuf,
    /// Passages per prompt.
    pub k: usize,
    /// New tokens per answer at most (and the room the prompts keep for it).
    pub max_new_tokens: usize,
    /// LoRA SFT steps.
    pub steps: usize,
    /// Conversations per batch.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// LoRA rank.
    pub lora_r: usize,
    /// Also train on "the sources do not hold the answer" for queries whose prompt holds no
    /// relevant passage ([`RagSftConfig::abstain`]).
    pub abstain: bool,
    /// Open the answers with their citation (`[n] sentence`, [`RagSftConfig::cite_first`]).
    pub cite_first: bool,
    /// Held-out queries answered and scored at most (`None`: all).
    pub max_held_out: Option<usize>,
    /// Seed of the run.
    pub seed: u64,
}

impl FinetuneConfig {
    /// The defaults for `model`, writing under `out`.
    pub fn new(model: PathBuf, out: PathBuf) -> Self {
        Self {
            model,
            out,
            k: 3,
            max_new_tokens: 48,
            steps: 150,
            batch_size: 8,
            lr: 2e-3,
            lora_r: 16,
            abstain: false,
            cite_first: true,
            max_held_out: Some(40),
            seed: 0,
        }
    }
}

/// One question answered by the fine-tuned model.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The query id (`norsk-rag`).
    pub query_id: String,
    /// The question.
    pub question: String,
    /// The answer and its citations.
    pub answer: Answer,
    /// The prompt's passages.
    pub passages: Vec<PromptPassage>,
}

/// What [`finetune`] did and measured.
#[derive(Debug, Clone)]
pub struct FinetuneReport {
    /// The training examples made (and the queries left out).
    pub train: RagSftReport,
    /// The held-out examples made (their eval loss; the held-out queries are all answered).
    pub held_out: RagSftReport,
    /// Training loss of the first and last step.
    pub loss: (f64, f64),
    /// Held-out loss before and after.
    pub eval_loss: (f64, f64),
    /// The adapter (HF PEFT layout; `tilpass rag ask --model MODEL --adapter ADAPTER`).
    pub adapter: PathBuf,
    /// The answers of the fine-tuned model and their citation scores.
    pub evaluation: Evaluation,
    /// Seconds of the fine-tuning (data and training).
    pub seconds: f64,
}

/// Answers of a model (with an adapter or not) and their citation scores ([`evaluate`]).
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Citation scores of the example's questions.
    pub questions: CitationScores,
    /// Citation scores of the held-out queries.
    pub held_out: CitationScores,
    /// The example's questions answered.
    pub question_answers: Vec<Scored>,
    /// The held-out queries answered.
    pub held_out_answers: Vec<Scored>,
    /// Seconds the answering took.
    pub seconds: f64,
}

/// The `norsk-rag` queries split into (training, held-out): the example's [`QUESTIONS`] are in
/// neither; every [`HELD_OUT_EVERY`]-th of the others (in file order) is held out.
pub fn split_queries() -> Result<(Vec<EvalQuery>, Vec<EvalQuery>), BoxError> {
    let all = parse_queries(&format!("builtin:{NORSK_RAG}"), NORSK_RAG_QUERIES_JSONL)?;
    let (mut train, mut held) = (Vec::new(), Vec::new());
    let rest = all
        .into_iter()
        .filter(|q| !QUESTIONS.iter().any(|(_, text, _)| *text == q.text));
    for (i, q) in rest.enumerate() {
        if i % HELD_OUT_EVERY == 0 {
            held.push(q);
        } else {
            train.push(q);
        }
    }
    Ok((train, held))
}

fn lang_of(q: &EvalQuery) -> PromptLang {
    match q.lang.as_deref() {
        Some("nn") => PromptLang::Nn,
        _ => PromptLang::Nb,
    }
}

/// Writes examples as TRL conversational JSONL (`{"messages": [...]}`, the assistant's answer
/// last), or prompt-completion rows when the tokenizer has no chat template.
fn write_jsonl(path: &Path, examples: &[RagSftExample]) -> Result<(), BoxError> {
    let mut body = String::new();
    for e in examples {
        body.push_str(&e.to_json().to_string());
        body.push('\n');
    }
    std::fs::write(path, body)?;
    Ok(())
}

/// Answers `queries` with `model` as `tilpass rag ask` does (BM25 top `k`, [`build_prompt`]
/// with the query's language, greedy decoding).
fn answer_all(
    kb: &KnowledgeBase,
    model: &DecoderLm,
    tok: &Tokenizer,
    queries: &[(String, String, PromptLang)],
    k: usize,
    max_new_tokens: usize,
) -> Result<Vec<Scored>, BoxError> {
    let mut out = Vec::new();
    for (id, text, lang) in queries {
        let hits = kb.search(text, k)?;
        let pcfg = PromptConfig {
            lang: *lang,
            max_passages: k,
            answer_tokens: max_new_tokens,
            ..Default::default()
        };
        let prompt = build_prompt(&pcfg, tok, text, &hits, Some(model.max_positions()))?;
        let gen_cfg = GenerateConfig {
            max_new_tokens,
            ..Default::default()
        };
        let answer = generate_answer(model, tok, &prompt, &gen_cfg, None, &mut |_| {})?;
        out.push(Scored {
            query_id: id.clone(),
            question: text.clone(),
            answer,
            passages: prompt.passages,
        });
    }
    Ok(out)
}

/// Citation precision / recall of answers against the `norsk-rag` judgements.
fn score(answers: &[Scored], qrels: &tilpass::metrics::retrieval::Qrels) -> CitationScores {
    let empty = Default::default();
    let pairs: Vec<_> = answers
        .iter()
        .map(|a| {
            (
                a.answer.cited_ids(),
                qrels.get(&a.query_id).unwrap_or(&empty),
            )
        })
        .collect();
    citation_scores(&pairs)
}

/// Fine-tunes `cfg.model` to answer with citations (see the module docs) and scores it;
/// progress on stderr unless `quiet`.
pub fn finetune(cfg: &FinetuneConfig, quiet: bool) -> Result<FinetuneReport, BoxError> {
    let started = std::time::Instant::now();
    let kb = build_kb(&cfg.out)?;
    let qrels = parse_qrels(&format!("builtin:{NORSK_RAG}"), NORSK_RAG_QRELS)?;
    let (train_q, held_q) = split_queries()?;
    let tok = Tokenizer::from_dir(&cfg.model)?;
    let context =
        tilpass::core::ModelDir::open(&cfg.model)?.config_json()["max_position_embeddings"]
            .as_u64()
            .map(|n| n as usize);
    let scfg = RagSftConfig {
        prompt: PromptConfig {
            max_passages: cfg.k,
            answer_tokens: cfg.max_new_tokens,
            ..Default::default()
        },
        abstain: cfg.abstain,
        cite_first: cfg.cite_first,
        ..Default::default()
    };
    let (train, train_report) = build_rag_sft(&kb, &tok, &train_q, &qrels, &scfg, context)?;
    let (held, held_report) = build_rag_sft(&kb, &tok, &held_q, &qrels, &scfg, context)?;
    let dir = cfg.out.join("rag-sft");
    std::fs::create_dir_all(&dir)?;
    let (train_file, eval_file) = (dir.join("train.jsonl"), dir.join("eval.jsonl"));
    write_jsonl(&train_file, &train)?;
    write_jsonl(&eval_file, &held)?;
    if !quiet {
        eprintln!(
            "rag fine-tuning data: {} training examples from {} queries ({} without the judged \
             passage in the top {}), {} held-out examples; cited positions {:?}",
            train.len(),
            train_report.queries,
            train_report.not_retrieved,
            cfg.k,
            held.len(),
            train_report.by_position
        );
    }
    let run = SftRun {
        model: Some(cfg.model.clone()),
        data: Some(DatasetSpec::File(train_file)),
        eval_data: Some(DatasetSpec::File(eval_file)),
        out: Some(dir.clone()),
        overwrite_output_dir: true,
        max_length: context,
        // An example longer than the context would lose its answer's citation: left out.
        truncation: Truncation::Drop,
        lora: LoraConfig::builder()
            .r(cfg.lora_r)
            .lora_alpha(2.0 * cfg.lora_r as f64)
            .target_modules("all-linear")
            .task_type("CAUSAL_LM")
            .build()?,
        batch_size: cfg.batch_size,
        lr: cfg.lr,
        lr_scheduler_type: ScheduleKind::Cosine,
        steps: cfg.steps,
        warmup: cfg.steps / 10,
        eval_steps: Some(cfg.steps.max(1)),
        eval_on_start: true,
        eval_samples: 0,
        seed: cfg.seed,
        ..Default::default()
    };
    let device = tilpass::device("flex")?.autodiff();
    let mut progress = Progress::new("rag-sft", cfg.steps);
    let tuned = run.run(&device, &mut |e| {
        if !quiet {
            progress.on_event(&e)
        }
    })?;
    if !quiet {
        progress.finish(&tuned.summary);
    }
    let eval_loss =
        |e: &Option<tilpass::train::EvalLog>| e.as_ref().map_or(f64::NAN, |e| e.eval_loss);
    let seconds = started.elapsed().as_secs_f64();
    drop(tuned.model);
    let evaluation = evaluate(cfg, Some(&tuned.saved))?;
    Ok(FinetuneReport {
        train: train_report,
        held_out: held_report,
        loss: (tuned.summary.first_loss, tuned.summary.last_loss),
        eval_loss: (eval_loss(&tuned.initial_eval), eval_loss(&tuned.final_eval)),
        adapter: tuned.saved,
        evaluation,
        seconds,
    })
}

/// Answers the example's [`QUESTIONS`] and the held-out queries (at most
/// [`FinetuneConfig::max_held_out`]) with `cfg.model` and `adapter` through the path of
/// `tilpass rag ask --model MODEL --adapter ADAPTER` (BM25 top `k`, [`build_prompt`] with the
/// query's language, greedy decoding) and scores their citations against the judgements.
pub fn evaluate(cfg: &FinetuneConfig, adapter: Option<&Path>) -> Result<Evaluation, BoxError> {
    let started = std::time::Instant::now();
    let kb = build_kb(&cfg.out)?;
    let qrels = parse_qrels(&format!("builtin:{NORSK_RAG}"), NORSK_RAG_QRELS)?;
    let (_, held_q) = split_queries()?;
    let tok = Tokenizer::from_dir(&cfg.model)?;
    let device = tilpass::device("flex")?;
    let (model, prompt_adapter) = tilpass::peft::load_causal_lm(&cfg.model, adapter, &device)?;
    if prompt_adapter.is_some() {
        return Err("the rag example takes LoRA adapters".into());
    }
    let all = parse_queries(&format!("builtin:{NORSK_RAG}"), NORSK_RAG_QUERIES_JSONL)?;
    let questions: Vec<(String, String, PromptLang)> = QUESTIONS
        .iter()
        .map(|(lang, text, _)| {
            let id = all
                .iter()
                .find(|q| q.text == *text)
                .map(|q| q.id.clone())
                .ok_or_else(|| format!("{text:?} is not a norsk-rag query"))?;
            Ok((id, text.to_string(), *lang))
        })
        .collect::<Result<_, BoxError>>()?;
    let held_list: Vec<(String, String, PromptLang)> = held_q
        .iter()
        .take(cfg.max_held_out.unwrap_or(usize::MAX))
        .map(|q| (q.id.clone(), q.text.clone(), lang_of(q)))
        .collect();
    let question_answers = answer_all(&kb, &model, &tok, &questions, cfg.k, cfg.max_new_tokens)?;
    let held_out_answers = answer_all(&kb, &model, &tok, &held_list, cfg.k, cfg.max_new_tokens)?;
    Ok(Evaluation {
        questions: score(&question_answers, &qrels),
        held_out: score(&held_out_answers, &qrels),
        question_answers,
        held_out_answers,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_question_retrieves_its_document_first() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RagExampleConfig {
            out: dir.path().to_path_buf(),
            ..Default::default()
        };
        let asked = run(&cfg, &mut |_| {}).unwrap();
        assert_eq!(asked.len(), QUESTIONS.len());
        for a in &asked {
            assert!(a.retrieved_first(), "{}: {:?}", a.question, a.passages);
            assert!(a.prompt.contains(&format!("Spørsmål: {}", a.question)));
            assert!(a.answer.is_none());
        }
        // Running again refreshes the same knowledge base (ids replaced, not duplicated).
        let again = run(&cfg, &mut |_| {}).unwrap();
        assert_eq!(again[0].passages.len(), asked[0].passages.len());
        let kb = KnowledgeBase::open(dir.path().join("kb")).unwrap();
        assert_eq!(kb.num_passages(), CORPUS.lines().count() as u64);
    }
}
