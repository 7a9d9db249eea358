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

/// Cohen's kappa of two labellings given as a confusion matrix (`confusion[a][b]`: items
/// labelled `a` by the first rater and `b` by the second; square, `[k, k]`), as
/// scikit-learn's `cohen_kappa_score` (unweighted): `κ = (p_o − p_e) / (1 − p_e)` with the
/// observed agreement `p_o = Σ_c n_cc / n` and the agreement expected by chance
/// `p_e = Σ_c (n_c· / n)(n_·c / n)`. When `p_e = 1` (both raters use one and the same class)
/// κ is undefined and, as in scikit-learn, NaN.
pub fn cohen_kappa_from_confusion(confusion: &[Vec<usize>]) -> Result<f64, ClassificationError> {
    let k = confusion.len();
    if let Some((i, r)) = confusion.iter().enumerate().find(|(_, r)| r.len() != k) {
        return Err(ClassificationError::LengthMismatch {
            gold: k,
            pred: if i < k { r.len() } else { k },
        });
    }
    let n: usize = confusion.iter().flatten().sum();
    if n == 0 {
        return Err(ClassificationError::Empty);
    }
    let n = n as f64;
    let po = (0..k).map(|c| confusion[c][c] as f64).sum::<f64>() / n;
    let pe = (0..k)
        .map(|c| {
            let row: usize = confusion[c].iter().sum();
            let col: usize = confusion.iter().map(|r| r[c]).sum();
            (row as f64 / n) * (col as f64 / n)
        })
        .sum::<f64>();
    if (1.0 - pe).abs() == 0.0 {
        return Ok(f64::NAN);
    }
    Ok((po - pe) / (1.0 - pe))
}

/// Cohen's kappa of `pred` against `gold` (class ids below `num_classes`); see
/// [`cohen_kappa_from_confusion`].
pub fn cohen_kappa(
    gold: &[usize],
    pred: &[usize],
    num_classes: usize,
) -> Result<f64, ClassificationError> {
    let report = classification_report(gold, pred, num_classes)?;
    cohen_kappa_from_confusion(&report.confusion)
}

#[cfg(test)]
mod tests {
    /// The worked example of Wikipedia's "Cohen's kappa" article (section "Simple example";
    /// 50 grant proposals, readers A and B): 20 yes/yes, 5 A-yes/B-no, 10 A-no/B-yes,
    /// 15 no/no gives p_o = 0.7, p_e = 0.5·0.6 + 0.5·0.4 = 0.5 and κ = 0.4. The second case is
    /// the same article's "Same percentages but different numbers" table (45/15/25/15 of 100:
    /// p_o = 0.60, p_e = 0.54, κ = 0.1304) — derivable by hand, not from this code.
    #[test]
    fn kappa_matches_the_textbook_examples() {
        let k = cohen_kappa_from_confusion(&[vec![20, 5], vec![10, 15]]).unwrap();
        assert!((k - 0.4).abs() < 1e-12, "{k}");
        let k = cohen_kappa_from_confusion(&[vec![45, 15], vec![25, 15]]).unwrap();
        assert!((k - (0.60 - 0.54) / (1.0 - 0.54)).abs() < 1e-12, "{k}");
        // The same from label lists (A = gold, B = prediction; yes = 0).
        let mut gold = Vec::new();
        let mut pred = Vec::new();
        for (g, p, n) in [(0, 0, 20), (0, 1, 5), (1, 0, 10), (1, 1, 15)] {
            gold.extend(std::iter::repeat_n(g, n));
            pred.extend(std::iter::repeat_n(p, n));
        }
        assert!((cohen_kappa(&gold, &pred, 2).unwrap() - 0.4).abs() < 1e-12);
        // Perfect agreement is 1; one class for both raters is undefined (NaN, as sklearn).
        assert_eq!(cohen_kappa(&[0, 1, 2], &[0, 1, 2], 3).unwrap(), 1.0);
        assert!(cohen_kappa(&[1, 1], &[1, 1], 2).unwrap().is_nan());
        assert_eq!(
            cohen_kappa_from_confusion(&[vec![0, 0], vec![0, 0]]).unwrap_err(),
            ClassificationError::Empty
        );
        assert!(cohen_kappa_from_confusion(&[vec![1, 0], vec![0]]).is_err());
    }

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
