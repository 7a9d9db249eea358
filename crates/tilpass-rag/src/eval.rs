//! Retrieval evaluation of a knowledge base: queries (JSONL `{"id", "text", "lang"?}`),
//! relevance judgements in TREC qrels format (`qid 0 docid grade`, one per line), a run of
//! every query through a search function, and nDCG@10, MRR@10 and recall@100 computed by
//! `tilpass-metrics` with pytrec_eval's semantics.
//!
//! Judgements name **knowledge-base document ids** (the `id` of an indexed row). A document cut
//! into several passages is ranked by its best passage (its first hit), so a run holds each
//! document at most once, as trec_eval expects.
//!
//! Query sets follow trec_eval / pytrec_eval: only queries that are in the run (here: in the
//! query file) *and* have judgements are evaluated; judged query ids absent from the query file
//! are ignored (trec_eval without `-c`) and reported in [`EvalReport::qrels_without_query`]; a
//! query without judgements is skipped and listed in [`EvalReport::unjudged_queries`]. A query
//! that retrieves nothing (e.g. only stop words) is evaluated with an empty ranking and scores
//! 0, as pytrec_eval scores a query whose run is an empty dict.
//!
//! ```
//! use tilpass_rag::eval::{parse_qrels, parse_queries};
//! let q = parse_queries("q.jsonl", "{\"id\": \"q1\", \"text\": \"Kva er NAV?\", \"lang\": \"nn\"}\n").unwrap();
//! assert_eq!(q[0].id, "q1");
//! let j = parse_qrels("qrels", "q1 0 nav-1 2\nq1 0 nav-2 1\n").unwrap();
//! assert_eq!(j["q1"]["nav-1"], 2);
//! assert!(parse_qrels("qrels", "q1 0 nav-1\n").unwrap_err().to_string().starts_with("qrels:1:"));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tilpass_metrics::retrieval::{Qrels, RetrievalScores, Run, evaluate_run, ranked};

use crate::kb::Hit;

/// The cutoff of nDCG and MRR (`ndcg_cut_10`, `recip_rank` over the top 10).
pub const CUTOFF_TOP: usize = 10;
/// The cutoff of recall (`recall_100`); also the default number of hits retrieved per query.
pub const CUTOFF_RECALL: usize = 100;

/// What is wrong with evaluation input.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A line of a query or qrels file is malformed.
    #[error("{source_name}:{line}: {message}")]
    Line {
        /// The file (or `builtin:NAME`).
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A file holds nothing to evaluate, or the run and the judgements share no query.
    #[error("{source_name}: {message}")]
    Empty {
        /// The file, or `run` for the run.
        source_name: String,
        /// What was expected.
        message: String,
    },
    /// A setting is out of range (`k` below the recall cutoff, ...).
    #[error("{setting}: {message}")]
    Setting {
        /// The setting.
        setting: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Searching failed.
    #[error(transparent)]
    Search(#[from] crate::error::RagError),
    /// A file could not be read.
    #[error(transparent)]
    File(#[from] tilpass_core::Error),
}

impl From<EvalError> for tilpass_core::Error {
    fn from(e: EvalError) -> Self {
        tilpass_core::Error::Component(Box::new(e))
    }
}

/// Result of evaluation.
pub type EvalResult<T> = std::result::Result<T, EvalError>;

/// One query of an evaluation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalQuery {
    /// Query id (the first field of a qrels line).
    pub id: String,
    /// The query text.
    pub text: String,
    /// Written standard or language (`nb`, `nn`, ...), when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

fn line_err(source_name: &str, line: usize, message: impl Into<String>) -> EvalError {
    EvalError::Line {
        source_name: source_name.into(),
        line,
        message: message.into(),
    }
}

/// Parses queries from numbered lines (blank lines skipped): each a JSON object with a
/// non-empty `id` and `text`; ids unique. Errors name `source_name:line`.
pub fn parse_query_lines(
    source_name: &str,
    lines: impl IntoIterator<Item = tilpass_core::Result<(usize, String)>>,
) -> EvalResult<Vec<EvalQuery>> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines {
        let (n, text) = l?;
        if text.trim().is_empty() {
            continue;
        }
        let q: EvalQuery = serde_json::from_str(&text).map_err(|e| {
            line_err(
                source_name,
                n,
                format!("{e}; expected {{\"id\": string, \"text\": string, \"lang\"?: string}}"),
            )
        })?;
        if q.id.trim().is_empty() || q.id.chars().any(char::is_whitespace) {
            return Err(line_err(
                source_name,
                n,
                format!(
                    "query id {:?}: expected a non-empty id without spaces",
                    q.id
                ),
            ));
        }
        if q.text.trim().is_empty() {
            return Err(line_err(
                source_name,
                n,
                format!("query {:?} has an empty text", q.id),
            ));
        }
        if let Some(first) = seen.insert(q.id.clone(), n) {
            return Err(line_err(
                source_name,
                n,
                format!("query id {:?} already given on line {first}", q.id),
            ));
        }
        out.push(q);
    }
    if out.is_empty() {
        return Err(EvalError::Empty {
            source_name: source_name.into(),
            message: "no queries (expected JSONL rows {\"id\", \"text\"})".into(),
        });
    }
    Ok(out)
}

/// Parses queries from a JSONL text (see [`parse_query_lines`]).
pub fn parse_queries(source_name: &str, text: &str) -> EvalResult<Vec<EvalQuery>> {
    parse_query_lines(
        source_name,
        text.lines()
            .enumerate()
            .map(|(i, l)| Ok((i + 1, l.to_string()))),
    )
}

/// Reads a query JSONL file (see [`parse_query_lines`]).
pub fn read_queries(path: &Path) -> EvalResult<Vec<EvalQuery>> {
    let name = path.display().to_string();
    parse_query_lines(&name, tilpass_core::TextLines::open(path)?)
}

/// Parses TREC qrels from numbered lines: `qid iteration docid grade`, whitespace-separated,
/// `grade` an integer (trec_eval reads it as one; 0 or negative = not relevant). Blank lines
/// are skipped; a line with another number of fields, a non-integer grade or a (qid, docid)
/// judged twice is an error naming `source_name:line`.
pub fn parse_qrels_lines(
    source_name: &str,
    lines: impl IntoIterator<Item = tilpass_core::Result<(usize, String)>>,
) -> EvalResult<Qrels> {
    let mut out = Qrels::new();
    let mut at: BTreeMap<(String, String), usize> = BTreeMap::new();
    for l in lines {
        let (n, text) = l?;
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() != 4 {
            return Err(line_err(
                source_name,
                n,
                format!(
                    "{} fields; expected 4: `query_id iteration doc_id grade` (e.g. `q1 0 doc-3 2`)",
                    f.len()
                ),
            ));
        }
        let grade: i64 = f[3].parse().map_err(|_| {
            line_err(
                source_name,
                n,
                format!("grade {:?} is not an integer (expected e.g. 0, 1, 2)", f[3]),
            )
        })?;
        if let Some(first) = at.insert((f[0].to_string(), f[2].to_string()), n) {
            return Err(line_err(
                source_name,
                n,
                format!(
                    "query {:?} and document {:?} already judged on line {first}",
                    f[0], f[2]
                ),
            ));
        }
        out.entry(f[0].to_string())
            .or_default()
            .insert(f[2].to_string(), grade);
    }
    if out.is_empty() {
        return Err(EvalError::Empty {
            source_name: source_name.into(),
            message: "no judgements (expected lines `query_id 0 doc_id grade`)".into(),
        });
    }
    Ok(out)
}

/// Parses a qrels text (see [`parse_qrels_lines`]).
pub fn parse_qrels(source_name: &str, text: &str) -> EvalResult<Qrels> {
    parse_qrels_lines(
        source_name,
        text.lines()
            .enumerate()
            .map(|(i, l)| Ok((i + 1, l.to_string()))),
    )
}

/// Reads a qrels file (see [`parse_qrels_lines`]).
pub fn read_qrels(path: &Path) -> EvalResult<Qrels> {
    let name = path.display().to_string();
    parse_qrels_lines(&name, tilpass_core::TextLines::open(path)?)
}

/// One query's ranking from `hits` (best first): each document id once, with the score of its
/// first (best) hit.
pub fn hits_to_ranking(hits: &[Hit]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for h in hits {
        out.entry(h.id.clone()).or_insert(h.score as f64);
    }
    out
}

/// Runs every query through `search(text, k)` (hits best first) and collects the run; calls
/// `progress(done, total)` after each query.
pub fn run_queries(
    queries: &[EvalQuery],
    k: usize,
    mut search: impl FnMut(&str, usize) -> crate::Result<Vec<Hit>>,
    mut progress: impl FnMut(usize, usize),
) -> EvalResult<Run> {
    if k < CUTOFF_RECALL {
        return Err(EvalError::Setting {
            setting: "k".into(),
            message: format!(
                "{k} hits per query; recall@{CUTOFF_RECALL} needs at least {CUTOFF_RECALL}"
            ),
        });
    }
    let mut run = Run::new();
    for (i, q) in queries.iter().enumerate() {
        let hits = search(&q.text, k)?;
        run.insert(q.id.clone(), hits_to_ranking(&hits));
        progress(i + 1, queries.len());
    }
    Ok(run)
}

/// The reported metrics of one query or their mean over the evaluated queries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalScores {
    /// nDCG@10 (pytrec_eval `ndcg_cut_10`: gain = grade, ideal from every judged document).
    pub ndcg_at_10: f64,
    /// MRR@10 (pytrec_eval `recip_rank` on the run cut to its top 10).
    pub mrr_at_10: f64,
    /// Recall@100 (pytrec_eval `recall_100`; relevant = grade ≥ 1).
    pub recall_at_100: f64,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean over the evaluated queries.
    pub mean: EvalScores,
    /// Number of evaluated queries (in the run and judged).
    pub queries: usize,
    /// Queries of the run without judgements (skipped).
    pub unjudged_queries: Vec<String>,
    /// Judged query ids that are not in the run (ignored, as trec_eval does without `-c`).
    pub qrels_without_query: Vec<String>,
    /// Per-query scores of the evaluated queries.
    pub per_query: BTreeMap<String, EvalScores>,
}

/// The run cut to each query's top `k` in trec_eval's order (score descending, ties by id
/// descending).
pub fn cut_run(run: &Run, k: usize) -> Run {
    run.iter()
        .map(|(q, docs)| {
            let top = ranked(docs)
                .into_iter()
                .take(k)
                .map(|(d, s)| (d.to_string(), s))
                .collect();
            (q.clone(), top)
        })
        .collect()
}

/// nDCG@10, MRR@10 and recall@100 of `run` against `qrels` (per query and mean), through
/// [`tilpass_metrics::retrieval::evaluate_run`].
pub fn evaluate(qrels: &Qrels, run: &Run) -> EvalResult<EvalReport> {
    let invalid = |e: tilpass_metrics::error::MetricsError| EvalError::Empty {
        source_name: "run".into(),
        message: e.to_string(),
    };
    let (per, _) = evaluate_run(qrels, run, &[CUTOFF_TOP, CUTOFF_RECALL]).map_err(invalid)?;
    let (per_top, _) =
        evaluate_run(qrels, &cut_run(run, CUTOFF_TOP), &[CUTOFF_TOP]).map_err(invalid)?;
    let pick = |s: &RetrievalScores, top: &RetrievalScores| EvalScores {
        ndcg_at_10: s.ndcg_cut[&CUTOFF_TOP],
        mrr_at_10: top.recip_rank,
        recall_at_100: s.recall[&CUTOFF_RECALL],
    };
    let per_query: BTreeMap<String, EvalScores> = per
        .iter()
        .map(|(q, s)| (q.clone(), pick(s, &per_top[q])))
        .collect();
    let n = per_query.len() as f64;
    let mut mean = EvalScores {
        ndcg_at_10: 0.0,
        mrr_at_10: 0.0,
        recall_at_100: 0.0,
    };
    for s in per_query.values() {
        mean.ndcg_at_10 += s.ndcg_at_10 / n;
        mean.mrr_at_10 += s.mrr_at_10 / n;
        mean.recall_at_100 += s.recall_at_100 / n;
    }
    let in_run: BTreeSet<&String> = run.keys().collect();
    Ok(EvalReport {
        mean,
        queries: per_query.len(),
        unjudged_queries: run
            .keys()
            .filter(|q| !qrels.contains_key(*q))
            .cloned()
            .collect(),
        qrels_without_query: qrels
            .keys()
            .filter(|q| !in_run.contains(q))
            .cloned()
            .collect(),
        per_query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32) -> Hit {
        Hit {
            id: id.into(),
            score,
            passage: String::new(),
            start: 0,
            end: 0,
            title: None,
            ord: 0,
            meta: None,
        }
    }

    #[test]
    fn qrels_errors_name_the_line() {
        let e = parse_qrels("q.txt", "q1 0 d1 2\n\nq1 0 d1 1\n").unwrap_err();
        assert!(e.to_string().starts_with("q.txt:3: "), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = parse_qrels("q.txt", "q1 0 d1 2.5\n").unwrap_err();
        assert!(e.to_string().starts_with("q.txt:1: "), "{e}");
        assert!(parse_qrels("q.txt", "\n \n").is_err());
        // trec_eval reads any integer grade; 0 and negative grades are not relevant.
        let j = parse_qrels("q.txt", "q1 0 d1 -1\nq1\t0\td2\t0\n").unwrap();
        assert_eq!(j["q1"].len(), 2);
    }

    #[test]
    fn query_errors_name_the_line() {
        let bad = [
            "{\"id\": \"a\", \"text\": \"  \"}",
            "{\"id\": \"a b\", \"text\": \"x\"}",
            "{\"id\": \"a\", \"text\": \"x\", \"extra\": 1}",
            "not json",
        ];
        for b in bad {
            let e = parse_queries("q.jsonl", &format!("\n{b}\n")).unwrap_err();
            assert!(e.to_string().starts_with("q.jsonl:2: "), "{b}: {e}");
        }
        assert!(parse_queries("q.jsonl", "").is_err());
    }

    #[test]
    fn a_document_ranks_by_its_first_hit() {
        let r = hits_to_ranking(&[hit("a", 3.0), hit("b", 2.0), hit("a", 1.0)]);
        assert_eq!(r.len(), 2);
        assert_eq!(r["a"], 3.0);
    }

    #[test]
    fn query_sets_follow_trec_eval() {
        let qrels = parse_qrels("q", "q1 0 a 1\nq3 0 a 1\n").unwrap();
        let qs = parse_queries(
            "q",
            "{\"id\": \"q1\", \"text\": \"x\"}\n{\"id\": \"q2\", \"text\": \"y\"}\n",
        )
        .unwrap();
        let run = run_queries(&qs, 100, |_, _| Ok(vec![hit("a", 1.0)]), |_, _| {}).unwrap();
        let r = evaluate(&qrels, &run).unwrap();
        assert_eq!(r.queries, 1);
        assert_eq!(r.unjudged_queries, ["q2"]);
        assert_eq!(r.qrels_without_query, ["q3"]);
        assert!(run_queries(&qs, 99, |_, _| Ok(vec![]), |_, _| {}).is_err());
        // No judged query in the run.
        let none = parse_qrels("q", "q9 0 a 1\n").unwrap();
        assert!(evaluate(&none, &run).is_err());
    }

    #[test]
    fn cut_run_keeps_trec_eval_order() {
        let mut run = Run::new();
        run.insert(
            "q".into(),
            [("a", 1.0), ("b", 1.0), ("c", 2.0)]
                .iter()
                .map(|(d, s)| (d.to_string(), *s))
                .collect(),
        );
        let cut = cut_run(&run, 2);
        // c (highest), then the tie a/b broken by id descending: b.
        assert_eq!(cut["q"].keys().collect::<Vec<_>>(), ["b", "c"]);
    }
}
