//! `tilpass rag ask`: retrieve passages from a knowledge base, build a prompt with them
//! numbered before the question, generate the answer with a decoder and map its `[n]` markers
//! to the cited documents. JSON on stdout; with `--stream` the answer's text also goes to
//! stderr as it is generated.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use tilpass::models::{Head, ModelKind, VirtualPrefix};
use tilpass::peft::PromptMethod;
use tilpass::rag::{KnowledgeBase, PromptConfig, PromptLang, RagError, build_prompt};
use tilpass::tokenize::Tokenizer;
use tilpass::{Error, Result};

use crate::common::{ModelArgs, load_decoder, print};
use crate::generate::SamplingArgs;

/// `rag ask` flags.
#[derive(Args)]
#[command(
    after_help = "The k best passages (BM25) are numbered [1]..[k] before the question \
under instructions (Bokmål or Nynorsk, --lang) to answer only from them, cite them as [n] and \
say so when they do not answer; with --rerank MODEL_DIR the top --rerank-top BM25 hits are \
first re-ordered by a cross-encoder and the k best of them are used; the prompt goes through the tokenizer's chat template when it \
has one (--chat-template plain for none). Lowest-ranked passages are dropped, then the best one \
cut, to leave --max-new-tokens (at most half the context) for the answer. Prints {\"answer\", \
\"citations\": [{\"n\", \"id\", \"title\", \"start\", \"end\"}], \"invalid_citations\": [{\"n\", \
\"passages\"}], \"passages\": [...], \"stop_reason\", \"prompt_tokens\"}: citations in the order \
first cited, start/end the character span of the passage in its document; a marker naming no \
passage given is an invalid citation."
)]
pub struct AskArgs {
    /// Knowledge-base directory.
    #[arg(long)]
    kb: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// The question.
    #[arg(long)]
    query: String,
    /// Passages retrieved and put in the prompt (at most).
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Language of the instructions: nb (Bokmål) or nn (Nynorsk).
    #[arg(long, default_value = "nb", value_parser = ["nb", "nn"])]
    lang: String,
    /// Instructions replacing the default ones.
    #[arg(long)]
    instructions: Option<String>,
    /// Token budget of prompt and answer (default: the model's context; the smaller wins).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Stream the answer's text to stderr as it is generated (stdout keeps the JSON).
    #[arg(long)]
    stream: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    rerank: crate::rag_rerank::RerankArgs,
}

/// Runs `tilpass rag ask`.
pub fn ask_cmd(a: AskArgs) -> Result<()> {
    // Every input is checked before the model is read.
    if a.query.trim().is_empty() {
        return Err(RagError::EmptyQuery.into());
    }
    if a.k == 0 {
        return Err(Error::invalid(
            "invalid setting `--k` = 0: expected an integer >= 1",
        ));
    }
    let gen_cfg = a.sampling.config()?;
    let cfg = PromptConfig {
        lang: PromptLang::parse(&a.lang).unwrap_or_default(),
        instructions: a.instructions.clone(),
        max_passages: a.k,
        max_tokens: a.max_tokens,
        answer_tokens: a.sampling.max_new_tokens,
        chat_template: a.sampling.chat_template.clone(),
    };
    cfg.validate()?;
    a.rerank.check()?;
    let kb = KnowledgeBase::open(&a.kb)?;
    let kind = ModelKind::from_dir(&a.model.model)?;
    if kind.head != Head::CausalLm {
        return Err(Error::invalid(format!(
            "{}: `rag ask` needs a causal LM (*ForCausalLM); this is {} ({})",
            a.model.model.display(),
            kind.class_name(),
            kind.head.describe()
        )));
    }
    let tok = Tokenizer::from_dir(&a.model.model)?;
    let reranker = a.rerank.load()?;
    let mut hits = kb.search(&a.query, a.rerank.depth(a.k))?;
    if let Some(ce) = &reranker {
        hits = crate::rag_rerank::rerank_hits(ce, &a.query, hits, a.rerank.rerank_top, a.k)?
            .into_iter()
            .map(|r| r.hit)
            .collect();
    }
    let (model, adapter) = load_decoder(&a.model)?;
    let virtual_tokens = adapter.as_ref().map(|p| p.len()).unwrap_or(0);
    let context = model.max_positions().saturating_sub(virtual_tokens);
    let prompt = build_prompt(&cfg, &tok, &a.query, &hits, Some(context))?;
    if prompt.dropped > 0 {
        eprintln!(
            "rag ask: {} of {} passages left out to fit {} prompt tokens",
            prompt.dropped,
            hits.len().min(a.k),
            prompt.prompt_limit.unwrap_or(context)
        );
    }
    let cache = |b: usize| {
        adapter
            .as_ref()
            .map(|a| a.prefix_cache(b))
            .unwrap_or_default()
    };
    let embeds = |b: usize| {
        adapter
            .as_ref()
            .map(|a| a.prompt_embeds(b))
            .expect("only built when an adapter is present")
    };
    let prefix = adapter.as_ref().map(|a| match a.method {
        PromptMethod::Prefix => VirtualPrefix::Cache {
            n: a.len(),
            make: &cache,
        },
        _ => VirtualPrefix::Embeds {
            n: a.len(),
            make: &embeds,
        },
    });
    let gen_cfg = tilpass::models::GenerateConfig {
        stop_strings: a.sampling.stop.clone(),
        ..gen_cfg
    };
    let stream = a.stream;
    let answer = tilpass::rag::generate_answer(
        &model,
        &tok,
        &prompt,
        &gen_cfg,
        prefix.as_ref(),
        &mut |chunk| {
            if stream {
                eprint!("{chunk}");
                let _ = std::io::stderr().flush();
            }
        },
    )?;
    if stream {
        eprintln!();
    }
    print(&json!({
        "answer": answer.text,
        "citations": val(&answer.citations)?,
        "invalid_citations": val(&answer.invalid_citations)?,
        "passages": val(&prompt.passages)?,
        "stop_reason": val(&answer.stop_reason)?,
        "prompt_tokens": prompt.ids.len(),
        "template": prompt.template,
    }));
    Ok(())
}

/// A value as JSON.
fn val<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::invalid(e.to_string()))
}
