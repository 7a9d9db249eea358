//! The files of a study's output directory.

/// The study's settings and fingerprint (`{"fingerprint", "config"}`), written first.
pub const STUDY_FILE: &str = "study.json";
/// The training items with their gold labels (`{"text", "label"}`), the input of annotation.
pub const TRAIN_ITEMS: &str = "train_items.jsonl";
/// The gold test items (`{"text", "label"}`).
pub const TEST_ITEMS: &str = "test_items.jsonl";
/// The LLM's annotation of the training items (`tilpass annotate` output).
pub const ANNOTATED: &str = "annotated.jsonl";
/// The labels the classifiers train on (`{"text", "label"}`: the LLM's, or gold).
pub const TRAIN_LABELS: &str = "train_labels.jsonl";
/// LLM-vs-gold agreement on the training items (`{"items", "accuracy", "macro_f1"}`).
pub const AGREEMENT: &str = "agreement.json";
/// The classifier runs, `runs/<method>-seed<seed>/` (`tilpass train classify` outputs and
/// `test_predictions.jsonl`).
pub const RUNS: &str = "runs";
/// One line per method x seed.
pub const RESULTS: &str = "results.jsonl";
/// The Markdown table.
pub const TABLE: &str = "results.md";
/// Accuracy against trainable parameters (log x), `.svg` and `.png`.
pub const ACCURACY_PLOT: &str = "accuracy_vs_params";
/// Mean training loss per step per method, `.svg` and `.png`.
pub const CURVES_PLOT: &str = "learning_curves";

/// Every entry a study writes in its output directory (what `overwrite` removes).
pub fn outputs() -> Vec<String> {
    let mut v: Vec<String> = [
        STUDY_FILE,
        TRAIN_ITEMS,
        TEST_ITEMS,
        ANNOTATED,
        TRAIN_LABELS,
        AGREEMENT,
        RUNS,
        RESULTS,
        TABLE,
    ]
    .map(String::from)
    .to_vec();
    v.push(format!("{ANNOTATED}.partial"));
    v.push(format!("{ANNOTATED}.run.json"));
    for stem in [ACCURACY_PLOT, CURVES_PLOT] {
        v.push(format!("{stem}.svg"));
        v.push(format!("{stem}.png"));
    }
    v
}
