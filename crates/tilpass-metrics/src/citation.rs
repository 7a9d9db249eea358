//! Citation quality of retrieval-augmented answers against relevance judgements: citation
//! precision (the share of an answer's citations that point to a relevant document) and
//! citation recall (the share of relevant documents the answer cites). Relevant means a grade
//! of at least 1, as trec_eval's binary measures.
//!
//! ```
//! use std::collections::BTreeMap;
//! use tilpass_metrics::citation::{citation_precision, citation_recall};
//! let qrels = BTreeMap::from([("kommune".to_string(), 2), ("fylke".to_string(), 0)]);
//! // Two passages cited: one relevant, one judged not relevant.
//! let cited = [Some("kommune"), Some("fylke")];
//! assert_eq!(citation_precision(&cited, &qrels), Some(0.5));
//! assert_eq!(citation_recall(&cited, &qrels), Some(1.0));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Whether `id` is relevant in `qrels` (grade >= 1).
fn relevant(qrels: &BTreeMap<String, i64>, id: &str) -> bool {
    qrels.get(id).is_some_and(|&g| g >= 1)
}

/// Citation precision: of the answer's citations (one entry per distinct cited passage: its
/// document id, or `None` for a marker naming no passage given to the model), the share whose
/// document is relevant in `qrels` (document id → grade). Two cited passages of one relevant
/// document count twice; an invalid marker counts as a citation of nothing relevant. `None`
/// when the answer cites nothing (precision is undefined; report such answers separately).
pub fn citation_precision(cited: &[Option<&str>], qrels: &BTreeMap<String, i64>) -> Option<f64> {
    if cited.is_empty() {
        return None;
    }
    let hits = cited
        .iter()
        .filter(|id| id.is_some_and(|id| relevant(qrels, id)))
        .count();
    Some(hits as f64 / cited.len() as f64)
}

/// Citation recall: the share of the relevant documents of `qrels` (grade >= 1) that the
/// answer cites at least once. `None` when `qrels` holds no relevant document. Pass the full
/// judgements for end-to-end recall, or only those of the documents given to the model for
/// the generator's own recall.
pub fn citation_recall(cited: &[Option<&str>], qrels: &BTreeMap<String, i64>) -> Option<f64> {
    let wanted: BTreeSet<&str> = qrels
        .iter()
        .filter(|(_, g)| **g >= 1)
        .map(|(id, _)| id.as_str())
        .collect();
    if wanted.is_empty() {
        return None;
    }
    let found: BTreeSet<&str> = cited
        .iter()
        .flatten()
        .copied()
        .filter(|id| wanted.contains(id))
        .collect();
    Some(found.len() as f64 / wanted.len() as f64)
}

/// Citation scores over several answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CitationScores {
    /// Mean citation precision over the answers that cite something (`None` if none does).
    pub precision: Option<f64>,
    /// Mean citation recall over the answers whose query has a relevant document.
    pub recall: Option<f64>,
    /// Answers scored.
    pub answers: usize,
    /// Answers without any citation (left out of `precision`).
    pub uncited: usize,
}

/// One answer's citations (document ids, `None` for an invalid marker) and its query's
/// relevance judgements (document id to grade).
pub type CitedAnswer<'a> = (Vec<Option<&'a str>>, &'a BTreeMap<String, i64>);

/// Means of [`citation_precision`] and [`citation_recall`] over `(cited, qrels)` pairs, one per
/// answer.
pub fn citation_scores(answers: &[CitedAnswer<'_>]) -> CitationScores {
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let p: Vec<f64> = answers
        .iter()
        .filter_map(|(c, q)| citation_precision(c, q))
        .collect();
    let r: Vec<f64> = answers
        .iter()
        .filter_map(|(c, q)| citation_recall(c, q))
        .collect();
    CitationScores {
        uncited: answers.iter().filter(|(c, _)| c.is_empty()).count(),
        answers: answers.len(),
        precision: mean(p),
        recall: mean(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qrels(rows: &[(&str, i64)]) -> BTreeMap<String, i64> {
        rows.iter().map(|(k, g)| (k.to_string(), *g)).collect()
    }

    #[test]
    fn precision_counts_cited_passages_with_a_relevant_document() {
        let q = qrels(&[("a", 2), ("b", 1), ("c", 0)]);
        // a relevant, c judged 0, d unjudged, None an invalid marker: 1 of 4.
        assert_eq!(
            citation_precision(&[Some("a"), Some("c"), Some("d"), None], &q),
            Some(0.25)
        );
        // Two passages of relevant documents and one not: 2 of 3.
        assert_eq!(
            citation_precision(&[Some("a"), Some("a"), Some("c")], &q),
            Some(2.0 / 3.0)
        );
        assert_eq!(citation_precision(&[Some("b")], &q), Some(1.0));
        assert_eq!(citation_precision(&[], &q), None);
        assert_eq!(citation_precision(&[Some("a")], &qrels(&[])), Some(0.0));
    }

    #[test]
    fn recall_counts_relevant_documents_cited() {
        let q = qrels(&[("a", 2), ("b", 1), ("c", 0)]);
        assert_eq!(
            citation_recall(&[Some("a"), Some("a"), None], &q),
            Some(0.5)
        );
        assert_eq!(citation_recall(&[Some("a"), Some("b")], &q), Some(1.0));
        assert_eq!(citation_recall(&[Some("c")], &q), Some(0.0));
        assert_eq!(citation_recall(&[], &q), Some(0.0));
        assert_eq!(citation_recall(&[Some("a")], &qrels(&[("c", 0)])), None);
    }

    #[test]
    fn scores_average_over_answers() {
        let q1 = qrels(&[("a", 1)]);
        let q2 = qrels(&[("b", 1), ("c", 1)]);
        let s = citation_scores(&[
            (vec![Some("a"), Some("x")], &q1),
            (vec![Some("b")], &q2),
            (vec![], &q2),
        ]);
        assert_eq!(s.answers, 3);
        assert_eq!(s.uncited, 1);
        // precision: (0.5 + 1.0) / 2; recall: (1.0 + 0.5 + 0.0) / 3.
        assert_eq!(s.precision, Some(0.75));
        assert_eq!(s.recall, Some(0.5));
        assert_eq!(citation_scores(&[]).precision, None);
    }
}
