//! `tilpass metrics METRIC ...`: sacrebleu-exact BLEU / chrF / chrF++, ROUGE, SQuAD EM/F1,
//! chat-response statistics, retrieval metrics, language identification and pairwise
//! LLM-as-judge, from text files (one segment per line).

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use tilpass::metrics as m;

use tilpass::{Error, Result};

use crate::common::print;

/// Arguments of `tilpass metrics`.
#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// bleu, chrf, chrf++, ter, rouge, squad, chat, retrieval, langid, perplexity or judge.
    pub metric: String,
    /// Hypotheses / predictions / responses: one per line (UTF-8).
    #[arg(long)]
    pub hyp: Option<PathBuf>,
    /// References, one per line, aligned with --hyp; repeat for several reference sets (an
    /// empty line means "no reference" for that segment when several are given).
    #[arg(long = "ref")]
    pub refs: Vec<PathBuf>,
    /// BLEU tokenizer: 13a, intl, char, none.
    #[arg(long, default_value = "13a")]
    pub tokenize: String,
    /// BLEU smoothing: exp, floor, add-k, none.
    #[arg(long, default_value = "exp")]
    pub smooth: String,
    /// BLEU smoothing value (floor / add-k).
    #[arg(long)]
    pub smooth_value: Option<f64>,
    /// Lower-case first (BLEU, chrF).
    #[arg(long)]
    pub lowercase: bool,
    /// BLEU effective order (for sentence-level use).
    #[arg(long)]
    pub effective_order: bool,
    /// TER: keep case.
    #[arg(long)]
    pub case_sensitive: bool,
    /// TER: tercom normalisation.
    #[arg(long)]
    pub normalized: bool,
    /// TER: remove punctuation.
    #[arg(long)]
    pub no_punct: bool,
    /// ROUGE tokenizer: unicode (default; keeps æ/ø/å) or rouge-score (ASCII only, the
    /// reference's numbers).
    #[arg(long, default_value = "unicode")]
    pub rouge_tokenizer: String,
    /// ROUGE stemming: none, porter (rouge-score tokenizer), norwegian / swedish / danish /
    /// english (Snowball, unicode tokenizer).
    #[arg(long, default_value = "none")]
    pub stem: String,
    /// ROUGE variants, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rouge1,rouge2,rougeL,rougeLsum"
    )]
    pub rouge_types: Vec<String>,
    /// SQuAD articles to drop: english, norwegian, both, none.
    #[arg(long, default_value = "english")]
    pub articles: String,
    /// Text for `langid` (repeatable); or --hyp FILE with one text per line.
    #[arg(long)]
    pub text: Vec<String>,
    /// TREC qrels (`qid 0 docid grade`) for `retrieval`.
    #[arg(long)]
    pub qrels: Option<PathBuf>,
    /// TREC run (`qid Q0 docid rank score tag`) for `retrieval`.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Retrieval cutoffs.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5,10,100")]
    pub cutoffs: Vec<usize>,
    /// Model directory: the judge for `judge` (a decoder, its chat template used when it has
    /// one), the language model for `perplexity`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Pairs for `judge`: JSONL with "question", "answer", "baseline".
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Judge prompt template file ({question}, {answer_a}, {answer_b}).
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Device for `judge`.
    #[arg(long, default_value = "flex")]
    pub device: String,
    /// Bootstrap seed for `judge`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The lines of a UTF-8 text file ([`m::read_lines`]: a BOM dropped; bad UTF-8, over-long
/// lines and an empty file are errors naming the file and line).
pub fn read_text_lines(path: &Path) -> Result<Vec<String>> {
    Ok(m::read_lines(path)?)
}

fn need<'a>(v: &'a Option<PathBuf>, flag: &str, metric: &str) -> Result<&'a PathBuf> {
    v.as_ref()
        .ok_or_else(|| Error::invalid(format!("`metrics {metric}` needs {flag}")))
}

/// Reference streams: `refs[k][i]` is the k-th reference of segment i.
type RefStreams = Vec<Vec<Option<String>>>;

/// Hypotheses and aligned reference streams (empty reference lines become "no reference"
/// when there are several streams).
fn hyps_and_refs(a: &MetricsArgs) -> Result<(Vec<String>, RefStreams)> {
    let hyp_path = need(&a.hyp, "--hyp FILE", &a.metric)?;
    let hyps = read_text_lines(hyp_path)?;
    if a.refs.is_empty() {
        return Err(Error::invalid(format!(
            "`metrics {}` needs at least one --ref FILE",
            a.metric
        )));
    }
    let several = a.refs.len() > 1;
    let mut streams = Vec::new();
    for r in &a.refs {
        let lines = read_text_lines(r)?;
        if lines.len() != hyps.len() {
            return Err(Error::invalid(format!(
                "{} has {} lines but {} has {}: hypotheses and references must align line by line",
                r.display(),
                lines.len(),
                hyp_path.display(),
                hyps.len()
            )));
        }
        streams.push(
            lines
                .into_iter()
                .map(|l| {
                    if several && l.is_empty() {
                        None
                    } else {
                        Some(l)
                    }
                })
                .collect(),
        );
    }
    Ok((hyps, streams))
}

/// Runs `tilpass metrics`.
pub fn metrics_cmd(a: MetricsArgs) -> Result<()> {
    let out = match a.metric.as_str() {
        "bleu" => {
            let (hyps, refs) = hyps_and_refs(&a)?;
            let cfg = m::BleuConfig {
                lowercase: a.lowercase,
                tokenize: m::SacreTokenizer::from_name(&a.tokenize).ok_or_else(|| {
                    Error::invalid(format!(
                        "unknown --tokenize `{}`: 13a, intl, char or none",
                        a.tokenize
                    ))
                })?,
                smooth_method: m::Smooth::from_name(&a.smooth).ok_or_else(|| {
                    Error::invalid(format!(
                        "unknown --smooth `{}`: exp, floor, add-k or none",
                        a.smooth
                    ))
                })?,
                smooth_value: a.smooth_value,
                effective_order: a.effective_order,
                ..Default::default()
            };
            let s = m::Bleu::new(cfg).corpus_score(&hyps, &refs)?;
            json!({"metric": "bleu", "score": s.score, "signature": s.signature,
                   "precisions": s.precisions, "bp": s.bp, "sys_len": s.sys_len,
                   "ref_len": s.ref_len, "verbose": s.to_string()})
        }
        "chrf" | "chrf++" => {
            let (hyps, refs) = hyps_and_refs(&a)?;
            let cfg = m::ChrfConfig {
                word_order: if a.metric == "chrf++" { 2 } else { 0 },
                lowercase: a.lowercase,
                ..Default::default()
            };
            let s = m::Chrf::new(cfg).corpus_score(&hyps, &refs)?;
            json!({"metric": a.metric, "name": s.name, "score": s.score, "signature": s.signature})
        }
        "ter" => {
            let (hyps, refs) = hyps_and_refs(&a)?;
            let cfg = m::TerConfig {
                case_sensitive: a.case_sensitive,
                normalized: a.normalized,
                no_punct: a.no_punct,
            };
            let s = m::Ter::new(cfg).corpus_score(&hyps, &refs)?;
            json!({"metric": "ter", "score": s.score, "signature": s.signature,
                   "num_edits": s.num_edits, "ref_length": s.ref_length})
        }
        "rouge" => {
            let (hyps, refs) = hyps_and_refs(&a)?;
            let tokenizer = match (a.rouge_tokenizer.as_str(), a.stem.as_str()) {
                ("rouge-score", "none") => m::RougeTokenizer::Ascii { stem: false },
                ("rouge-score", "porter") => m::RougeTokenizer::Ascii { stem: true },
                ("unicode", s) => m::RougeTokenizer::Unicode {
                    stem: match s {
                        "none" => None,
                        "norwegian" => Some(m::StemLanguage::Norwegian),
                        "swedish" => Some(m::StemLanguage::Swedish),
                        "danish" => Some(m::StemLanguage::Danish),
                        "english" => Some(m::StemLanguage::English),
                        other => {
                            return Err(Error::invalid(format!(
                                "--stem {other} does not go with the unicode tokenizer: none, \
                                 norwegian, swedish, danish or english"
                            )));
                        }
                    },
                },
                (t, s) => {
                    return Err(Error::invalid(format!(
                        "--rouge-tokenizer {t} --stem {s}: use unicode with none/norwegian/\
                         swedish/danish/english, or rouge-score with none/porter"
                    )));
                }
            };
            let types = a
                .rouge_types
                .iter()
                .map(|t| m::RougeType::parse(t))
                .collect::<Result<Vec<_>, _>>()?;
            let s = m::Rouge::new(&types, tokenizer).corpus_mean(&hyps, &refs)?;
            json!({"metric": "rouge", "scores": s.scores, "tokenizer": s.tokenizer,
                   "aggregate": "mean over segments; best reference per segment"})
        }
        "squad" => {
            let (hyps, refs) = hyps_and_refs(&a)?;
            let articles: m::Articles = serde_json::from_value(json!(a.articles))
                .map_err(|_| Error::invalid(format!("unknown --articles `{}`", a.articles)))?;
            let golds: Vec<Vec<&str>> = (0..hyps.len())
                .map(|i| refs.iter().filter_map(|r| r[i].as_deref()).collect())
                .collect();
            let h: Vec<&str> = hyps.iter().map(String::as_str).collect();
            let s = m::squad_scores(&h, &golds, &articles)?;
            json!({"metric": "squad", "exact_match": s.exact_match, "f1": s.f1,
                   "articles": a.articles})
        }
        "chat" => {
            let lines = read_text_lines(need(&a.hyp, "--hyp FILE", "chat")?)?;
            let r: Vec<&str> = lines.iter().map(String::as_str).collect();
            json!({"metric": "chat", "length": m::length_stats(&r)?,
                   "distinct_1": m::distinct_n(&r, 1), "distinct_2": m::distinct_n(&r, 2),
                   "repetition_4": m::repetition_rate(&r, 4),
                   "languages": m::language_shares(&r),
                   "self_bleu": if r.len() > 1 { Some(m::self_bleu(&r)?) } else { None }})
        }
        "langid" => {
            let texts: Vec<String> = match (&a.hyp, a.text.is_empty()) {
                (Some(p), _) => read_text_lines(p)?,
                (None, false) => a.text.clone(),
                (None, true) => {
                    return Err(Error::invalid(
                        "`metrics langid` needs --text TEXT or --hyp FILE",
                    ));
                }
            };
            let model = m::LangId::builtin();
            let preds: Vec<_> = texts.iter().map(|t| model.predict(t)).collect();
            if preds.len() == 1 {
                let p = &preds[0];
                json!({"metric": "langid", "lang": p.lang, "probabilities": p.probabilities})
            } else {
                let mut counts = std::collections::BTreeMap::new();
                for p in &preds {
                    *counts.entry(p.lang.clone()).or_insert(0usize) += 1;
                }
                json!({"metric": "langid", "counts": counts,
                       "langs": preds.iter().map(|p| p.lang.clone()).collect::<Vec<_>>()})
            }
        }
        "retrieval" => {
            let qrels = m::read_qrels(need(&a.qrels, "--qrels FILE", "retrieval")?)?;
            let run = m::read_run(need(&a.run, "--run FILE", "retrieval")?)?;
            let (per, mean) = m::evaluate_run(&qrels, &run, &a.cutoffs)?;
            json!({"metric": "retrieval", "queries": per.len(), "mean": mean})
        }
        "judge" => crate::metrics_lm::judge_cmd(&a)?,
        "perplexity" => crate::metrics_lm::perplexity_cmd(&a)?,
        other => {
            return Err(Error::invalid(format!(
                "unknown metric `{other}`: bleu, chrf, chrf++, ter, rouge, squad, chat, retrieval, \
                 langid, perplexity or judge"
            )));
        }
    };
    print(&out);
    Ok(())
}
