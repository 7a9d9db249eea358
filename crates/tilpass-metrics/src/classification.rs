//! Classification metrics with scikit-learn's definitions (`accuracy_score`,
//! `precision_recall_fscore_support` with `zero_division=0`, `matthews_corrcoef`,
//! `confusion_matrix`).

use serde::{Deserialize, Serialize};

/// Per-class and averaged scores of a single-label classification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Fraction of correct predictions.
    pub accuracy: f64,
    /// Precision per class.
    pub precision: Vec<f64>,
    /// Recall per class.
    pub recall: Vec<f64>,
    /// F1 per class.
    pub f1: Vec<f64>,
    /// True instances per class.
    pub support: Vec<usize>,
    /// Unweighted mean of the per-class F1.
    pub macro_f1: f64,
    /// Unweighted mean of the per-class precision.
    pub macro_precision: f64,
    /// Unweighted mean of the per-class recall.
    pub macro_recall: f64,
    /// F1 of the pooled counts (equals accuracy for single-label data).
    pub micro_f1: f64,
    /// Support-weighted mean of the per-class F1.
    pub weighted_f1: f64,
    /// Matthews correlation coefficient (multi-class form).
    pub mcc: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

/// Errors of the classification metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClassificationError {
    /// Different numbers of gold labels and predictions.
    #[error("{gold} gold labels but {pred} predictions")]
    LengthMismatch {
        /// Gold labels.
        gold: usize,
        /// Predictions.
        pred: usize,
    },
    /// No instance at all.
    #[error("no instances to score")]
    Empty,
    /// A label outside `0..num_classes`.
    #[error("label {label} at position {index} is not below the number of classes {classes}")]
    LabelOutOfRange {
        /// The label.
        label: usize,
        /// Its position.
        index: usize,
        /// Classes.
        classes: usize,
    },
}

fn div(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// Scores `pred` against `gold` (class ids below `num_classes`).
pub fn classification_report(
    gold: &[usize],
    pred: &[usize],
    num_classes: usize,
) -> Result<ClassificationReport, ClassificationError> {
    if gold.len() != pred.len() {
        return Err(ClassificationError::LengthMismatch {
            gold: gold.len(),
            pred: pred.len(),
        });
    }
    if gold.is_empty() {
        return Err(ClassificationError::Empty);
    }
    for (i, &l) in gold.iter().chain(pred).enumerate() {
        if l >= num_classes {
            return Err(ClassificationError::LabelOutOfRange {
                label: l,
                index: i % gold.len(),
                classes: num_classes,
            });
        }
    }
    let k = num_classes;
    let mut confusion = vec![vec![0usize; k]; k];
    for (&g, &p) in gold.iter().zip(pred) {
        confusion[g][p] += 1;
    }
    let n = gold.len() as f64;
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let support: Vec<usize> = (0..k).map(|c| confusion[c].iter().sum()).collect();
    let predicted: Vec<usize> = (0..k)
        .map(|c| (0..k).map(|g| confusion[g][c]).sum())
        .collect();
    let precision: Vec<f64> = (0..k)
        .map(|c| div(confusion[c][c] as f64, predicted[c] as f64))
        .collect();
    let recall: Vec<f64> = (0..k)
        .map(|c| div(confusion[c][c] as f64, support[c] as f64))
        .collect();
    let f1: Vec<f64> = (0..k)
        .map(|c| {
            div(
                2.0 * confusion[c][c] as f64,
                (predicted[c] + support[c]) as f64,
            )
        })
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / k as f64;
    let weighted_f1 = f1
        .iter()
        .zip(&support)
        .map(|(f, s)| f * *s as f64)
        .sum::<f64>()
        / n;
    // MCC: (c·s − Σ p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²)) (sklearn's multi-class form).
    let (c, s) = (correct as f64, n);
    let pt: f64 = (0..k)
        .map(|i| predicted[i] as f64 * support[i] as f64)
        .sum();
    let pp: f64 = predicted.iter().map(|p| (*p as f64).powi(2)).sum();
    let tt: f64 = support.iter().map(|t| (*t as f64).powi(2)).sum();
    let denom = ((s * s - pp) * (s * s - tt)).sqrt();
    let mcc = if denom == 0.0 {
        0.0
    } else {
        (c * s - pt) / denom
    };
    Ok(ClassificationReport {
        accuracy: c / n,
        macro_f1: mean(&f1),
        macro_precision: mean(&precision),
        macro_recall: mean(&recall),
        micro_f1: c / n,
        weighted_f1,
        mcc,
        precision,
        recall,
        f1,
        support,
        confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_typed() {
        assert_eq!(
            classification_report(&[0, 1], &[0], 2).unwrap_err(),
            ClassificationError::LengthMismatch { gold: 2, pred: 1 }
        );
        assert_eq!(
            classification_report(&[], &[], 2).unwrap_err(),
            ClassificationError::Empty
        );
        assert!(matches!(
            classification_report(&[0, 3], &[0, 1], 2),
            Err(ClassificationError::LabelOutOfRange { label: 3, .. })
        ));
    }
}
