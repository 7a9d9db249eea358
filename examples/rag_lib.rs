//! The `rag` example's flow: build a knowledge base from the embedded Norwegian corpus, ask it
//! a few questions in Bokmål and Nynorsk, show the retrieved passages and the prompt, and —
//! with a decoder — generate answers whose `[n]` citations point into the documents.

use std::path::{Path, PathBuf};

use tilpass::models::GenerateConfig;
use tilpass::rag::{
    Answer, ChunkerConfig, Document, KnowledgeBase, PromptConfig, PromptLang, PromptPassage,
    RagPrompt, build_prompt, generate_answer, prompt::plain_prompt,
};
use tilpass::tokenize::Tokenizer;

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
                    repetition_penalty: Some(1.2),
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
