//! `tilpass data stats|validate|dedup`: inspecting and cleaning datasets in TRL's formats;
//! `near-dedup` and `pii` are in `data_clean.rs`, `filter` and `card` in `data_quality.rs`,
//! `translate` and `self-instruct` in `data_gen.rs`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use tilpass::Result;
use tilpass::data::{
    DedupKey, LengthFilter, ReadOptions, RecordKind, dedup, read_dataset, stats, write_jsonl,
};

use crate::common::print;

/// A dataset file and how to read it.
#[derive(Args)]
pub struct ReadArgs {
    /// Dataset file (.jsonl, or .json holding an array).
    file: PathBuf,
    /// Force the record kind (language_modeling, prompt_only, prompt_completion, preference,
    /// unpaired_preference, alpaca); by default the first row decides.
    #[arg(long)]
    format: Option<RecordKind>,
    /// Drop invalid rows (counted and reported) instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
}

impl ReadArgs {
    fn options(&self, skip_invalid: bool) -> ReadOptions {
        ReadOptions {
            kind: self.format,
            skip_invalid: skip_invalid || self.skip_invalid,
            max_reported: Some(20),
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
/// `tilpass data` subcommands.
pub enum DataCommand {
    /// Rows, kinds, turns and characters of a dataset.
    Stats(ReadArgs),
    /// Check every row; prints a report and exits 2 when any row is invalid.
    Validate(ReadArgs),
    /// Remove duplicates (and optionally too short/long rows); writes JSONL.
    Dedup {
        #[command(flatten)]
        read: ReadArgs,
        /// Output JSONL file.
        #[arg(long)]
        out: PathBuf,
        /// What makes two rows duplicates: exact, normalized (case and white space) or prompt.
        #[arg(long, default_value = "exact", value_parser = parse_dedup_key)]
        key: DedupKey,
        /// Drop rows with fewer characters.
        #[arg(long)]
        min_chars: Option<usize>,
        /// Drop rows with more characters.
        #[arg(long)]
        max_chars: Option<usize>,
        /// Replace an existing `--out` file (without it such a file is an error).
        #[arg(long)]
        overwrite: bool,
    },
    /// Quality filters (language, length, ratios, Gopher repetition rules, perplexity) with a
    /// report of every failed rule; writes the kept rows unchanged.
    Filter(crate::data_quality::FilterArgs),
    /// A Markdown data card (counts, languages, length histograms as SVG/PNG, reports).
    Card(crate::data_quality::CardArgs),
    /// Remove near-duplicates (MinHash + LSH, equal to datasketch): keeps the first row of
    /// each cluster, unchanged; --report lists {"line", "kept_line", "jaccard", "reason"}.
    NearDedup(crate::data_clean::NearDedupArgs),
    /// Redact personal data (`[EPOST]`, `[TELEFON]`, `[FØDSELSNUMMER]`, `[KONTONUMMER]`,
    /// `[URL]`) in every text field; other fields and unchanged rows pass through as they are.
    Pii(crate::data_clean::CleanIo),
    /// Translate a dataset into Bokmål or Nynorsk with a local model (resumable).
    Translate(crate::data_gen::TranslateArgs),
    /// Generate new instructions and answers from seed tasks with a local model (resumable).
    SelfInstruct(crate::data_gen::SelfInstructArgs),
}

fn parse_dedup_key(s: &str) -> Result<DedupKey, String> {
    serde_json::from_value(json!(s))
        .map_err(|_| format!("unknown dedup key `{s}`; expected exact, normalized or prompt"))
}

/// Runs `tilpass data ...`; `Ok(false)` when `validate` found invalid rows (exit 2).
pub fn data_cmd(cmd: DataCommand) -> Result<bool> {
    match cmd {
        DataCommand::Translate(a) => crate::data_gen::translate_cmd(a)?,
        DataCommand::SelfInstruct(a) => crate::data_gen::self_instruct_cmd(a)?,
        DataCommand::Stats(r) => {
            let ds = read_dataset(&r.file, &r.options(false))?;
            print(&json!({"stats": stats(&ds.records), "read": ds.report}));
        }
        DataCommand::Validate(r) => {
            let ds = read_dataset(&r.file, &r.options(true))?;
            let bad = ds.report.skipped_count;
            print(&json!({"valid": bad == 0, "read": ds.report}));
            if bad > 0 {
                let first = &ds.report.skipped[0];
                eprintln!(
                    "error: {}: {bad} invalid row(s) of {}; first at {}: {}",
                    r.file.display(),
                    ds.report.rows,
                    first.location,
                    first.reason
                );
                return Ok(false);
            }
        }
        DataCommand::Dedup {
            read,
            out,
            key,
            min_chars,
            max_chars,
            overwrite,
        } => {
            let filter = LengthFilter {
                min_chars,
                max_chars,
            };
            filter.validate()?;
            tilpass::core::check_output_is_not_input("out", &out, &[&read.file])?;
            crate::common::check_new_file("out", &out, overwrite)?;
            let ds = read_dataset(&read.file, &read.options(false))?;
            let mut records = ds.records;
            let removed_length = filter.apply(&mut records);
            let report = dedup(&mut records, key);
            write_jsonl(&out, &records)?;
            print(&json!({
                "read": ds.report,
                "removed_by_length": removed_length,
                "dedup": report,
                "written": records.len(),
                "out": out,
            }));
        }
        DataCommand::Filter(a) => crate::data_quality::filter_cmd(a)?,
        DataCommand::Card(a) => crate::data_quality::card_cmd(a)?,
        DataCommand::NearDedup(a) => crate::data_clean::near_dedup_cmd(a)?,
        DataCommand::Pii(a) => crate::data_clean::pii_cmd(a)?,
    }
    Ok(true)
}
