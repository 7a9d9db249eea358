//! The metrics that run a model: `tilpass metrics perplexity` (scored by
//! [`tilpass::train::runs::text_perplexity`]) and `tilpass metrics judge` (a local decoder
//! judges answer pairs in both orders).

use serde_json::{Value, json};
use tilpass::data::{JsonlRows, Message, Role};
use tilpass::metrics as m;
use tilpass::models::DecoderLm;
use tilpass::tokenize::{RenderOptions, Tokenizer};
use tilpass::train::runs::text_perplexity;
use tilpass::{Error, Result};

use crate::generate::{SamplingArgs, run_generation};
use crate::metrics::{MetricsArgs, read_text_lines};

/// `tilpass metrics perplexity`: a decoder's perplexity, word / byte perplexity and bits per
/// byte over the lines of --hyp (each scored with the tokenizer's special tokens, truncated to
/// the model's context).
pub fn perplexity_cmd(a: &MetricsArgs) -> Result<Value> {
    let model_dir = a
        .model
        .clone()
        .ok_or_else(|| Error::invalid("`metrics perplexity` needs --model DIR"))?;
    let path = a
        .hyp
        .clone()
        .ok_or_else(|| Error::invalid("`metrics perplexity` needs --hyp FILE (one text a line)"))?;
    let texts = read_text_lines(&path)?;
    let device = tilpass::device(&a.device)?;
    let model = DecoderLm::load(&model_dir, &device)?;
    let tok = Tokenizer::from_dir(&model_dir)?;
    let p = text_perplexity(&model, &tok, &texts)?;
    let s = p.scores;
    Ok(
        json!({"metric": "perplexity", "texts": p.texts, "truncated": p.truncated,
              "perplexity": s.perplexity, "mean_text_perplexity": s.mean_text_perplexity,
              "word_perplexity": s.word_perplexity, "byte_perplexity": s.byte_perplexity,
              "bits_per_byte": s.bits_per_byte, "tokens": s.tokens}),
    )
}

/// The answer pairs of `tilpass metrics judge` (JSONL with "question", "answer", "baseline").
fn read_pairs(path: &std::path::Path) -> Result<Vec<m::JudgePair>> {
    let mut pairs = Vec::new();
    for row in JsonlRows::open(path)? {
        let (location, parsed) = row?;
        let (tilpass::data::Location::Line(line) | tilpass::data::Location::Item(line)) = location;
        let at = |message: String| Error::invalid(format!("{}:{line}: {message}", path.display()));
        let row = parsed.map_err(at)?;
        let get = |k: &str| {
            row[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| at(format!("no string field `{k}`")))
        };
        pairs.push(m::JudgePair {
            question: get("question")?,
            answer: get("answer")?,
            baseline: get("baseline")?,
        });
    }
    Ok(pairs)
}

/// `tilpass metrics judge`: a local decoder judges answer pairs in both orders.
pub fn judge_cmd(a: &MetricsArgs) -> Result<Value> {
    let model_dir = a
        .model
        .clone()
        .ok_or_else(|| Error::invalid("`metrics judge` needs --model JUDGE_DIR"))?;
    let data = a.data.clone().ok_or_else(|| {
        Error::invalid("`metrics judge` needs --data PAIRS.jsonl (question, answer, baseline)")
    })?;
    let template = match &a.template {
        Some(p) => tilpass::core::read_text(p)?,
        None => m::DEFAULT_JUDGE_TEMPLATE.to_string(),
    };
    let pairs = read_pairs(&data)?;
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
    let mut judge = |prompt: &str| -> Result<String> {
        let messages = [Message::new(Role::User, prompt)];
        let opts = RenderOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        let ids = match &chat {
            Some(c) => tok.encode(&c.render(&messages, &opts)?.text, false)?,
            None => tok.encode(prompt, true)?,
        };
        let text = run_generation(&model, None, Some(&tok), ids, &sampling, false)?.text;
        done += 1;
        eprint!("\rjudged {done}/{total}");
        Ok(text.unwrap_or_default())
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
