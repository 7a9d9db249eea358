//! `tilpass data filter` (quality rules with a report of what was removed and why) and
//! `tilpass data card` (a Markdown data card with histograms).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};
use tilpass::data::card::{CardOptions, CardStatsBuilder, write_card_stats};
use tilpass::data::quality::{
    NgramLm, NgramLmConfig, PerplexityScorer, QualityConfig, QualityFilter, RowVerdict, TextScope,
    apply_perplexity_cutoff, check_row, record_text,
};
use tilpass::data::raw_rows::{for_each_raw_row, write_selected_rows};
use tilpass::data::{DatasetSpec, LangId, Location, RecordKind};
use tilpass::train::{count_bar, count_spinner};
use tilpass::{Error, Result};

use crate::common::print;

/// Arguments of `tilpass data filter`.
#[derive(Args)]
pub struct FilterArgs {
    /// Dataset: a file (.jsonl, or .json holding an array) in any TRL format, or
    /// `builtin:NAME[:SPLIT]` (e.g. `builtin:norsk-chat`).
    file: String,
    /// Output JSONL: the kept rows, unchanged (every field), in input order.
    #[arg(long)]
    out: PathBuf,
    /// Report JSONL: one line per failed rule, {"line", "rule", "value", "threshold"}.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Replace existing `--out` / `--report` files (without it such a file is an error).
    #[arg(long)]
    overwrite: bool,
    /// Quality settings (JSON, the fields of `QualityConfig`; unknown fields are errors); flags
    /// below override it. Default: the Gopher rules and languages nb, nn.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Force the record kind; by default the first row decides.
    #[arg(long)]
    format: Option<RecordKind>,
    /// Languages (written forms) to keep, comma-separated (`nb,nn`); `any` turns the rule off.
    #[arg(long, value_delimiter = ',')]
    lang: Option<Vec<String>>,
    /// Fewest non-symbol words (Gopher: 50).
    #[arg(long)]
    min_words: Option<usize>,
    /// Most non-symbol words (Gopher: 100000).
    #[arg(long)]
    max_words: Option<usize>,
    /// Fewest characters.
    #[arg(long)]
    min_chars: Option<usize>,
    /// Most characters.
    #[arg(long)]
    max_chars: Option<usize>,
    /// Which text is checked: joined (all fields of a row) or per_field.
    #[arg(long, value_parser = parse_scope)]
    scope: Option<TextScope>,
    /// Score perplexity with this tilpass decoder (model directory with its tokenizer).
    #[arg(long, conflicts_with = "ngram_train")]
    perplexity_model: Option<PathBuf>,
    /// Device for --perplexity-model (cpu, ...).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Score perplexity with a character n-gram model trained on this text file (one
    /// sequence a line).
    #[arg(long)]
    ngram_train: Option<PathBuf>,
    /// Order of the n-gram model.
    #[arg(long, default_value_t = 5)]
    ngram_order: usize,
    /// Drop this percentage of rows, those of highest perplexity (needs a perplexity model).
    #[arg(long)]
    perplexity_drop_pct: Option<f64>,
}

fn parse_scope(s: &str) -> Result<TextScope, String> {
    serde_json::from_value(json!(s))
        .map_err(|_| format!("unknown scope `{s}`; expected joined or per_field"))
}

/// Arguments of `tilpass data card`.
#[derive(Args)]
pub struct CardArgs {
    /// Dataset: a file (.jsonl / .json, any TRL format) or `builtin:NAME[:SPLIT]`.
    data: String,
    /// The card directory to create (README.md, stats.json, SVG and PNG histograms).
    #[arg(long)]
    out: PathBuf,
    /// Filter / dedup reports (JSONL) to summarise by rule.
    #[arg(long, num_args = 1..)]
    reports: Vec<PathBuf>,
    /// Licence of the dataset.
    #[arg(long)]
    license: Option<String>,
    /// Name of the dataset (the card's title); default: the file name.
    #[arg(long)]
    name: Option<String>,
}

/// The decoder as a [`PerplexityScorer`]: token perplexity of each text (NaN for a text of
/// fewer than two tokens, which the cut-off counts as the highest).
struct DecoderScorer {
    model: tilpass::models::DecoderLm,
    tokenizer: tilpass::tokenize::Tokenizer,
}

impl PerplexityScorer for DecoderScorer {
    fn perplexity(&self, text: &str) -> f64 {
        tilpass::train::runs::text_perplexity(&self.model, &self.tokenizer, &[text.to_string()])
            .map_or(f64::NAN, |p| p.scores.perplexity)
    }
}

/// The line (JSONL, 1-based) or item (JSON array, 0-based) of a row.
fn location_index(l: Location) -> usize {
    match l {
        Location::Line(n) | Location::Item(n) => n,
    }
}

/// Runs `tilpass data filter`.
pub fn filter_cmd(a: FilterArgs) -> Result<()> {
    let mut config: QualityConfig = match &a.config {
        Some(p) => {
            let text = tilpass::core::read_text(p)?;
            serde_json::from_str(&text).map_err(|e| {
                Error::invalid(format!("{}: invalid quality config: {e}", p.display()))
            })?
        }
        None => QualityConfig::default(),
    };
    if let Some(l) = &a.lang {
        config.languages = if l.len() == 1 && l[0] == "any" {
            None
        } else {
            Some(l.clone())
        };
    }
    for (slot, v) in [
        (&mut config.min_words, a.min_words),
        (&mut config.max_words, a.max_words),
        (&mut config.min_chars, a.min_chars),
        (&mut config.max_chars, a.max_chars),
    ] {
        if v.is_some() {
            *slot = v;
        }
    }
    if let Some(s) = a.scope {
        config.scope = s;
    }
    let filter = QualityFilter::new(config)?;
    let has_model = a.perplexity_model.is_some() || a.ngram_train.is_some();
    match (has_model, a.perplexity_drop_pct) {
        (true, None) => {
            return Err(Error::invalid(
                "--perplexity-model / --ngram-train need --perplexity-drop-pct P",
            ));
        }
        (false, Some(_)) => {
            return Err(Error::invalid(
                "--perplexity-drop-pct needs --perplexity-model DIR or --ngram-train FILE",
            ));
        }
        (_, Some(p)) if !(0.0..=100.0).contains(&p) => {
            return Err(Error::invalid(format!(
                "--perplexity-drop-pct {p}: expected a percentage in [0, 100]"
            )));
        }
        _ => {}
    }
    let spec: DatasetSpec = a.file.parse()?;
    let mut inputs: Vec<&Path> = Vec::new();
    if let DatasetSpec::File(p) = &spec {
        inputs.push(p);
    }
    tilpass::core::check_output_is_not_input("out", &a.out, &inputs)?;
    crate::common::check_new_file("out", &a.out, a.overwrite)?;
    if let Some(r) = &a.report {
        inputs.push(&a.out);
        tilpass::core::check_output_is_not_input("report", r, &inputs)?;
        crate::common::check_new_file("report", r, a.overwrite)?;
    }
    // Pass 1: every row checked (a bad row is an error naming file and line, before a
    // perplexity model is loaded or anything is written) and judged by the rules; only the
    // verdicts and locations are kept, not the rows.
    let mut verdicts: Vec<RowVerdict> = Vec::new();
    let mut locations: Vec<Location> = Vec::new();
    let mut progress = count_spinner("filter");
    let read = for_each_raw_row(&spec, a.format, |row| -> Result<()> {
        verdicts.push(check_row(&row.record, &filter, None));
        locations.push(row.location);
        progress(Some(locations.len()));
        Ok(())
    })?;
    progress(None);
    let scorer: Option<Box<dyn PerplexityScorer>> = if let Some(p) = &a.ngram_train {
        Some(Box::new(NgramLm::train_file(
            p,
            NgramLmConfig {
                order: a.ngram_order,
            },
        )?))
    } else if let Some(dir) = &a.perplexity_model {
        let device = tilpass::device(&a.device)?;
        Some(Box::new(DecoderScorer {
            model: tilpass::models::DecoderLm::load(dir, &device)?,
            tokenizer: tilpass::tokenize::Tokenizer::from_dir(dir)?,
        }))
    } else {
        None
    };
    if let Some(scorer) = &scorer {
        // Pass 1b: each row's perplexity, then the dataset-wide cut-off.
        let mut bar = count_bar("perplexity");
        let mut i = 0;
        let seen = for_each_raw_row(&spec, a.format, |row| -> Result<()> {
            let Some(v) = verdicts.get_mut(i) else {
                return Err(Error::invalid(format!(
                    "{spec}: the dataset changed while it was being filtered (the first pass \
                     read {read} rows)"
                )));
            };
            v.perplexity = Some(scorer.perplexity(&record_text(&row.record)));
            i += 1;
            bar(i, read);
            Ok(())
        })?;
        if seen != read {
            return Err(Error::invalid(format!(
                "{spec}: the dataset changed while it was being filtered (the first pass read \
                 {read} rows, the second {seen})"
            )));
        }
        apply_perplexity_cutoff(&mut verdicts, a.perplexity_drop_pct.unwrap_or(0.0))?;
    }
    let mut rules: BTreeMap<String, usize> = BTreeMap::new();
    let mut cutoff = Value::Null;
    // Pass 2: the kept rows, as they were written, into `--out` (whole or not at all).
    let kept = write_selected_rows(&spec, a.format, read, &a.out, |i| verdicts[i].kept())?;
    for f in verdicts.iter().flat_map(|v| &v.failures) {
        *rules.entry(f.rule.clone()).or_default() += 1;
        if f.rule == "perplexity" {
            cutoff = f.threshold.clone();
        }
    }
    if let Some(r) = &a.report {
        tilpass::core::write_atomic_with(r, |w| {
            for (v, loc) in verdicts.iter().zip(&locations) {
                for f in &v.failures {
                    let mut o = json!({"line": location_index(*loc), "rule": f.rule, "value": f.value, "threshold": f.threshold});
                    if let Some(field) = &f.field {
                        o["field"] = json!(field);
                    }
                    serde_json::to_writer(&mut *w, &o)?;
                    w.write_all(b"\n")?;
                }
            }
            Ok(())
        })?;
    }
    print(&json!({
        "read": read,
        "kept": kept,
        "removed": read - kept,
        "rules": rules,
        "perplexity_cutoff": cutoff,
        "config": filter.config(),
        "out": a.out,
        "report": a.report,
    }));
    Ok(())
}

/// Runs `tilpass data card`.
pub fn card_cmd(a: CardArgs) -> Result<()> {
    let spec: DatasetSpec = a.data.parse()?;
    if a.out.exists() {
        return Err(Error::invalid(format!(
            "{}: the card directory exists; choose a new one",
            a.out.display()
        )));
    }
    // The rows are streamed (a JSONL file a line at a time): only a few counts per row are
    // kept. Every row must be a record (errors name file and line); rows of different formats
    // are counted per format.
    let mut builder = CardStatsBuilder::new(LangId::builtin());
    let mut progress = count_spinner("card");
    for_each_raw_row(&spec, None, |row| -> Result<()> {
        builder.add(&row.record);
        progress(Some(builder.rows()));
        Ok(())
    })?;
    progress(None);
    let measured = builder.finish();
    let name = a.name.clone().unwrap_or_else(|| match &spec {
        DatasetSpec::File(p) => p
            .file_stem()
            .map_or_else(|| a.data.clone(), |s| s.to_string_lossy().into_owned()),
        DatasetSpec::Builtin { name, .. } => name.clone(),
    });
    let opts = CardOptions {
        name,
        source: a.data.clone(),
        license: a.license.clone(),
        reports: a.reports.clone(),
    };
    let start = std::time::Instant::now();
    let stats = write_card_stats(&a.out, measured, &opts)?;
    print(&json!({
        "out": a.out,
        "rows": stats.rows,
        "formats": stats.formats,
        "languages": stats.languages,
        "reports": stats.reports.len(),
        "seconds": start.elapsed().as_secs_f64(),
    }));
    Ok(())
}
