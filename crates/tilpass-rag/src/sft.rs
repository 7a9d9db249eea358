//! Fine-tuning data for cited answers: chat examples whose user turn is the retrieval-augmented
//! prompt `tilpass rag ask` builds ([`build_prompt`]: the `k` best BM25 passages numbered
//! before the question, under the Norwegian instructions) and whose assistant turn answers with
//! text from the passage the judgements grade highest, followed by its number: `… [n]` (or
//! preceded by it, [`RagSftConfig::cite_first`]).
//!
//! A model fine-tuned on them (e.g. LoRA SFT with tilpass-train's `SftRun` on the JSONL
//! [`RagSftExample::record`] rows) learns the answer format `rag ask` expects: a sentence taken
//! from a source and the source's number in brackets.
//!
//! Per query: the hits of [`KnowledgeBase::search`] (`k` of them) go through [`build_prompt`]
//! with the query's language (`nn` gives Nynorsk instructions, anything else Bokmål) and the
//! model's context; the answering passage is the first passage of the prompt whose document has
//! the query's highest grade (at least [`RagSftConfig::min_grade`]); the answer is the sentence
//! of that passage sharing the most analysed terms (lower-cased, stemmed as the knowledge base
//! does) with the question (the earliest on ties), then ` [n]`. A query whose prompt holds no
//! such passage is skipped and counted ([`RagSftReport`]) or, with [`RagSftConfig::abstain`] and
//! no relevant passage in its prompt at all, answered with "the sources do not hold the answer"
//! as the instructions ask.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use tilpass_data::{Content, Message, Record, Role};
use tilpass_metrics::retrieval::Qrels;
use tilpass_tokenize::Tokenizer;

use crate::answer::AnswerError;
use crate::eval::EvalQuery;
use crate::kb::KnowledgeBase;
use crate::prompt::{PromptConfig, PromptLang, PromptPassage, build_prompt};
use crate::{AnalysisConfig, analysis::analyze};

/// Settings of [`build_rag_sft`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RagSftConfig {
    /// The prompt (as `rag ask` builds it; `max_passages` is `k`, `answer_tokens` the room kept
    /// for the answer); its `lang` is replaced by each query's.
    pub prompt: PromptConfig,
    /// Lowest grade that makes a passage an answer (default 2: "answers the question").
    pub min_grade: i64,
    /// Also make examples for queries whose prompt holds no relevant passage (none judged 1
    /// or more): the answer says the sources do not hold it ([`NOT_FOUND_NB`] /
    /// [`NOT_FOUND_NN`], as the instructions ask), without a citation. Default off.
    pub abstain: bool,
    /// Put the citation before the quoted sentence (`[n] sentence`) instead of after it
    /// (`sentence [n]`, the default). A model too small to copy a sentence reliably still
    /// learns to open its answer with the marker; with the marker last, greedy decoding of such
    /// a model can derail before it reaches it.
    pub cite_first: bool,
}

/// The answer of an abstaining example in Bokmål.
pub const NOT_FOUND_NB: &str = "Jeg finner ikke svaret i kildene.";
/// The answer of an abstaining example in Nynorsk.
pub const NOT_FOUND_NN: &str = "Eg finn ikkje svaret i kjeldene.";

impl Default for RagSftConfig {
    fn default() -> Self {
        Self {
            prompt: PromptConfig {
                max_passages: 3,
                answer_tokens: 48,
                ..Default::default()
            },
            min_grade: 2,
            abstain: false,
            cite_first: false,
        }
    }
}

/// One fine-tuning example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RagSftExample {
    /// The query's id.
    pub query_id: String,
    /// The question.
    pub question: String,
    /// The prompt's messages (system instructions, then sources and question) or, for a
    /// tokenizer without a chat template, empty (then `prompt_text` is the prompt).
    pub messages: Vec<Message>,
    /// The prompt as rendered for the model (chat template with the generation prompt, or the
    /// plain layout).
    pub prompt_text: String,
    /// The passages of the prompt, `[1]` first.
    pub passages: Vec<PromptPassage>,
    /// The assistant's answer: a sentence of the answering passage and ` [n]` (`[n] ` before it
    /// with [`RagSftConfig::cite_first`]).
    pub answer: String,
    /// The number of the answering passage in the prompt (0 for an abstaining example).
    pub cited: usize,
    /// Its document id (empty for an abstaining example).
    pub cited_id: String,
}

impl RagSftExample {
    /// The example as a training record: a conversation (the prompt's messages and the
    /// assistant's answer) when the prompt used a chat template, else prompt-completion.
    pub fn record(&self) -> Record {
        if self.messages.is_empty() {
            Record::PromptCompletion {
                prompt: Content::Text(self.prompt_text.clone()),
                completion: Content::Text(format!(" {}", self.answer)),
            }
        } else {
            let mut messages = self.messages.clone();
            messages.push(Message::new(Role::Assistant, self.answer.clone()));
            Record::Conversation { messages }
        }
    }

    /// The example as a TRL JSONL row: `{"messages": [..., {"role": "assistant", "content":
    /// answer}]}`, or `{"prompt", "completion"}` for the plain layout (what
    /// `tilpass train sft --data FILE.jsonl` reads).
    pub fn to_json(&self) -> serde_json::Value {
        if self.messages.is_empty() {
            serde_json::json!({"prompt": self.prompt_text, "completion": format!(" {}", self.answer)})
        } else {
            let mut messages = self.messages.clone();
            messages.push(Message::new(Role::Assistant, self.answer.clone()));
            serde_json::json!({ "messages": messages })
        }
    }
}

/// What [`build_rag_sft`] made and left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RagSftReport {
    /// Queries read.
    pub queries: usize,
    /// Examples made.
    pub examples: usize,
    /// Queries without judgements of at least `min_grade`.
    pub unjudged: usize,
    /// Queries whose prompt held no answering passage (BM25 did not find it in the top `k`,
    /// or the budget dropped it); with [`RagSftConfig::abstain`] those whose prompt holds no
    /// relevant passage at all become abstaining examples.
    pub not_retrieved: usize,
    /// Examples per cited number: `by_position[i]` cite `[i + 1]`.
    pub by_position: Vec<usize>,
    /// Abstaining examples made (with [`RagSftConfig::abstain`]; also in `examples`).
    pub abstaining: usize,
}

/// Sentences of `text`: cut after `.`, `!` or `?` followed by whitespace; trimmed, non-empty.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (i, &(b, c)) in chars.iter().enumerate() {
        let end_here =
            matches!(c, '.' | '!' | '?') && chars.get(i + 1).is_none_or(|(_, n)| n.is_whitespace());
        if end_here {
            let e = b + c.len_utf8();
            out.push(text[start..e].trim());
            start = e;
        }
    }
    out.push(text[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// The sentence of `passage` sharing the most analysed terms with `question` (the earliest on
/// ties); the whole passage when it has no sentence.
pub fn answer_sentence(
    analysis: &AnalysisConfig,
    question: &str,
    passage: &str,
) -> crate::Result<String> {
    let mut analyzer = analysis.analyzer()?;
    let q: BTreeSet<String> = analyze(&mut analyzer, question).into_iter().collect();
    let mut best: Option<(usize, &str)> = None;
    for s in sentences(passage) {
        let terms: BTreeSet<String> = analyze(&mut analyzer, s).into_iter().collect();
        let overlap = terms.intersection(&q).count();
        if best.is_none_or(|(b, _)| overlap > b) {
            best = Some((overlap, s));
        }
    }
    Ok(best.map_or_else(|| passage.trim().to_string(), |(_, s)| s.to_string()))
}

/// Builds one example per query of `queries` that has a passage graded at least
/// `cfg.min_grade` in `qrels` among its prompt's passages (see the module docs); `tok` is the
/// model's tokenizer (chat template, token counts), `context` its context length.
pub fn build_rag_sft(
    kb: &KnowledgeBase,
    tok: &Tokenizer,
    queries: &[EvalQuery],
    qrels: &Qrels,
    cfg: &RagSftConfig,
    context: Option<usize>,
) -> Result<(Vec<RagSftExample>, RagSftReport), AnswerError> {
    cfg.prompt.validate()?;
    let analysis = kb.manifest().analysis.clone();
    let mut report = RagSftReport {
        queries: queries.len(),
        by_position: vec![0; cfg.prompt.max_passages],
        ..Default::default()
    };
    let mut out = Vec::new();
    for q in queries {
        let Some(judged) = qrels.get(&q.id) else {
            report.unjudged += 1;
            continue;
        };
        let Some(top) = judged
            .values()
            .copied()
            .max()
            .filter(|g| *g >= cfg.min_grade)
        else {
            report.unjudged += 1;
            continue;
        };
        let lang = match q.lang.as_deref() {
            Some("nn") => PromptLang::Nn,
            _ => PromptLang::Nb,
        };
        let pcfg = PromptConfig {
            lang,
            ..cfg.prompt.clone()
        };
        let hits = kb.search(&q.text, pcfg.max_passages)?;
        let prompt = build_prompt(&pcfg, tok, &q.text, &hits, context)?;
        let Some(p) = prompt
            .passages
            .iter()
            .find(|p| judged.get(&p.id) == Some(&top))
        else {
            report.not_retrieved += 1;
            let none_relevant = prompt
                .passages
                .iter()
                .all(|p| judged.get(&p.id).is_none_or(|g| *g < 1));
            if cfg.abstain && none_relevant {
                report.abstaining += 1;
                out.push(RagSftExample {
                    query_id: q.id.clone(),
                    question: q.text.clone(),
                    messages: prompt.messages.clone(),
                    prompt_text: prompt.text.clone(),
                    answer: match lang {
                        PromptLang::Nn => NOT_FOUND_NN,
                        PromptLang::Nb => NOT_FOUND_NB,
                    }
                    .to_string(),
                    cited: 0,
                    cited_id: String::new(),
                    passages: prompt.passages.clone(),
                });
            }
            continue;
        };
        let sentence = answer_sentence(&analysis, &q.text, &p.text)?;
        report.by_position[p.n - 1] += 1;
        out.push(RagSftExample {
            query_id: q.id.clone(),
            question: q.text.clone(),
            messages: prompt.messages.clone(),
            prompt_text: prompt.text.clone(),
            answer: if cfg.cite_first {
                format!("[{}] {sentence}", p.n)
            } else {
                format!("{sentence} [{}]", p.n)
            },
            cited: p.n,
            cited_id: p.id.clone(),
            passages: prompt.passages.clone(),
        });
    }
    report.examples = out.len();
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_and_the_best_one() {
        assert_eq!(
            sentences("Ring 116 117. Legevakten er åpen hele døgnet! Hva da?"),
            [
                "Ring 116 117.",
                "Legevakten er åpen hele døgnet!",
                "Hva da?"
            ]
        );
        assert_eq!(sentences("Kl. 3.5 i dag"), ["Kl.", "3.5 i dag"]);
        let a = AnalysisConfig::default();
        let s = answer_sentence(
            &a,
            "hvilket nummer ringer jeg til legevakten",
            "Fastlegen har ansvar. Legevakten har telefonnummer 116 117. Ring 113 ved fare.",
        )
        .unwrap();
        assert_eq!(s, "Legevakten har telefonnummer 116 117.");
        // No overlap: the first sentence.
        let s = answer_sentence(&a, "xyz", "En. To.").unwrap();
        assert_eq!(s, "En.");
    }
}
