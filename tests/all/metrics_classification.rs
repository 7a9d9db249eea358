//! Classification metrics equal scikit-learn's (tests/fixtures/metrics/classification.json,
//! made by tests/fixtures/generate_metrics.py), including zero-division classes.

use tilpass::metrics::classification_report;
use tilpass_tests::fixture_json;

#[test]
fn classification_metrics_match_scikit_learn() {
    let fx = fixture_json("metrics/classification.json");
    for (i, c) in fx["cases"].as_array().unwrap().iter().enumerate() {
        let gold: Vec<usize> = serde_json::from_value(c["gold"].clone()).unwrap();
        let pred: Vec<usize> = serde_json::from_value(c["pred"].clone()).unwrap();
        let k = c["num_classes"].as_u64().unwrap() as usize;
        let r = classification_report(&gold, &pred, k).unwrap();
        let close = |a: f64, key: &str| {
            let b = c[key].as_f64().unwrap();
            assert!((a - b).abs() < 1e-12, "case {i} {key}: {a} vs {b}");
        };
        close(r.accuracy, "accuracy");
        close(r.macro_f1, "macro_f1");
        close(r.macro_precision, "macro_precision");
        close(r.macro_recall, "macro_recall");
        close(r.micro_f1, "micro_f1");
        close(r.weighted_f1, "weighted_f1");
        close(r.mcc, "mcc");
        let vec = |key: &str| -> Vec<f64> { serde_json::from_value(c[key].clone()).unwrap() };
        for (key, ours) in [
            ("precision", &r.precision),
            ("recall", &r.recall),
            ("f1", &r.f1),
        ] {
            for (a, b) in ours.iter().zip(vec(key)) {
                assert!((a - b).abs() < 1e-12, "case {i} {key}");
            }
        }
        let confusion: Vec<Vec<usize>> = serde_json::from_value(c["confusion"].clone()).unwrap();
        assert_eq!(r.confusion, confusion, "case {i}");
    }
}
