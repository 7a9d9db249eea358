//! Data cards: a Markdown description of a dataset (`README.md`) with its counts per format,
//! languages and written forms (by [`LangId`]), length histograms as SVG and PNG (drawn with
//! `plotters`), the filter and dedup reports summarised by rule, and a licence field.
//!
//! Words are counted in each row's text as the quality filters see it
//! ([`crate::quality::record_text`]: all fields, white-space separated); turns are messages per
//! conversational row. Reports are JSONL files with one object per removed row or finding; they
//! are summarised by their `rule` field (or `reason`, or `kind`), counting lines and distinct
//! `line` values.
//!
//! Text in the PNG files is drawn with a TrueType font found on the system (`TILPASS_FONT`, or
//! DejaVu Sans / Liberation Sans / Arial in the usual places); without one the PNG bars are
//! drawn without labels (the SVG and the card's tables carry the numbers either way).
//!
//! [`write_card`] writes the directory whole or not at all (built next to it, then renamed) and
//! refuses a directory that exists.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::langid::LangId;
use crate::quality::{gopher::words, record_text};
use crate::record::{Content, Record};
use crate::stats::Summary;

/// What the card says about the dataset besides what it measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CardOptions {
    /// The dataset's name (the card's title).
    pub name: String,
    /// Where it was read from (a path or `builtin:...`).
    pub source: String,
    /// Its licence (SPDX identifier or text); `None`: "not stated".
    pub license: Option<String>,
    /// Filter / dedup reports (JSONL) to summarise.
    pub reports: Vec<PathBuf>,
}

/// A histogram: bins `[start, start + width)` and their counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Histogram {
    /// Width of every bin.
    pub width: usize,
    /// `(start, count)` per bin, in order, covering the smallest to the largest value.
    pub bins: Vec<(usize, usize)>,
}

impl Histogram {
    /// About `target` equal bins (width rounded up to an integer) over `values`.
    pub fn of(values: &[usize], target: usize) -> Self {
        let (Some(&lo), Some(&hi)) = (values.iter().min(), values.iter().max()) else {
            return Self::default();
        };
        let width = (hi - lo + 1).div_ceil(target.max(1)).max(1);
        let start = lo - lo % width;
        let n = (hi - start) / width + 1;
        let mut bins: Vec<(usize, usize)> = (0..n).map(|i| (start + i * width, 0)).collect();
        for v in values {
            bins[(v - start) / width].1 += 1;
        }
        Self { width, bins }
    }
}

/// A report file summarised.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReportSummary {
    /// The file.
    pub path: PathBuf,
    /// Entries per rule.
    pub rules: BTreeMap<String, usize>,
    /// Distinct rows (`line` values) named.
    pub rows: usize,
    /// Entries in all.
    pub entries: usize,
}

/// What a card measures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CardStats {
    /// Rows.
    pub rows: usize,
    /// Rows per format (`language_modeling`, `preference`, ...).
    pub formats: BTreeMap<String, usize>,
    /// Rows made of message lists.
    pub conversational_rows: usize,
    /// Messages per role.
    pub messages_per_role: BTreeMap<String, usize>,
    /// Rows per predicted language / written form (`nb`, `nn`, `sv`, `da`, `en`, ...).
    pub languages: BTreeMap<String, usize>,
    /// Words per row.
    pub words: Summary,
    /// Turns per conversational row.
    pub turns: Summary,
    /// Histogram of words per row.
    pub words_histogram: Histogram,
    /// Histogram of turns per conversational row.
    pub turns_histogram: Histogram,
    /// The reports, summarised.
    pub reports: Vec<ReportSummary>,
}

/// Measures `records` for a card (reports are read by [`write_card`]).
pub fn card_stats(records: &[Record], langid: &LangId) -> CardStats {
    let mut b = CardStatsBuilder::new(langid);
    for r in records {
        b.add(r);
    }
    b.finish()
}

/// [`card_stats`] a record at a time, for a dataset streamed from disk: keeps two counts per
/// row (words, turns), not the rows.
pub struct CardStatsBuilder<'a> {
    langid: &'a LangId,
    stats: CardStats,
    word_counts: Vec<usize>,
    turns: Vec<usize>,
}

impl<'a> CardStatsBuilder<'a> {
    /// An empty measurement, predicting languages with `langid`.
    pub fn new(langid: &'a LangId) -> Self {
        Self {
            langid,
            stats: CardStats::default(),
            word_counts: Vec::new(),
            turns: Vec::new(),
        }
    }

    /// Records added so far.
    pub fn rows(&self) -> usize {
        self.stats.rows
    }

    /// Counts one record.
    pub fn add(&mut self, r: &Record) {
        let s = &mut self.stats;
        s.rows += 1;
        *s.formats.entry(r.kind().as_str().to_string()).or_default() += 1;
        let text = record_text(r);
        self.word_counts.push(words(&text).len());
        *s.languages
            .entry(self.langid.predict(&text).lang)
            .or_default() += 1;
        let contents = r.contents();
        if r.is_conversational() {
            s.conversational_rows += 1;
            self.turns.push(contents.iter().map(Content::turns).sum());
        }
        for c in &contents {
            if let Content::Messages(ms) = c {
                for m in ms {
                    *s.messages_per_role
                        .entry(m.role.as_str().to_string())
                        .or_default() += 1;
                }
            }
        }
    }

    /// The measurement of every record added (no reports yet).
    pub fn finish(self) -> CardStats {
        let mut s = self.stats;
        s.words = Summary::of(&self.word_counts);
        s.turns = Summary::of(&self.turns);
        s.words_histogram = Histogram::of(&self.word_counts, 30);
        s.turns_histogram = Histogram::of(&self.turns, 30);
        s
    }
}

/// Reads a report file (JSONL) and counts its entries by `rule` (or `reason`, or `kind`).
pub fn summarise_report(path: &Path) -> Result<ReportSummary> {
    let mut out = ReportSummary {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let mut lines = std::collections::HashSet::new();
    for row in crate::reader::JsonlRows::open(path)? {
        let (location, parsed) = row?;
        let v = parsed.map_err(|message| DataError::Json {
            path: path.to_path_buf(),
            location,
            message,
        })?;
        let rule = ["rule", "reason", "kind"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|x| x.as_str()))
            .unwrap_or("(unnamed)");
        *out.rules.entry(rule.to_string()).or_default() += 1;
        out.entries += 1;
        if let Some(l) = v.get("line") {
            lines.insert(l.to_string());
        }
    }
    out.rows = lines.len();
    Ok(out)
}

fn font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = std::env::var_os("TILPASS_FONT")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/Library/Fonts/Arial.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ] {
            candidates.push(PathBuf::from(p));
        }
        for p in candidates {
            if let Ok(bytes) = std::fs::read(&p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn draw_histogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    h: &Histogram,
    title: &str,
    x_desc: &str,
    text: bool,
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let x_lo = h.bins.first().map_or(0, |b| b.0);
    let x_hi = h.bins.last().map_or(1, |b| b.0 + h.width);
    let y_hi = h.bins.iter().map(|b| b.1).max().unwrap_or(0).max(1);
    let mut builder = ChartBuilder::on(root);
    builder.margin(15);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(45)
            .y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d(x_lo..x_hi, 0..y_hi + y_hi / 10 + 1)
        .map_err(e)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh();
    if text {
        mesh.x_desc(x_desc).y_desc("rows");
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(e)?;
    chart
        .draw_series(h.bins.iter().map(|&(s, c)| {
            Rectangle::new([(s, 0), (s + h.width, c)], RGBColor(70, 110, 180).filled())
        }))
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

fn plot(dir: &Path, stem: &str, h: &Histogram, title: &str, x_desc: &str) -> Result<()> {
    let size = (800, 450);
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    let text = font();
    let err = |path: &Path, m: String| {
        DataError::Invalid(format!(
            "{}: cannot draw the histogram: {m}",
            path.display()
        ))
    };
    draw_histogram(
        &SVGBackend::new(&svg, size).into_drawing_area(),
        h,
        title,
        x_desc,
        text,
    )
    .map_err(|m| err(&svg, m))?;
    draw_histogram(
        &BitMapBackend::new(&png, size).into_drawing_area(),
        h,
        title,
        x_desc,
        text,
    )
    .map_err(|m| err(&png, m))?;
    Ok(())
}

fn summary_line(s: &Summary) -> String {
    format!(
        "min {}, median {}, mean {:.1}, max {}, total {}",
        s.min, s.median, s.mean, s.max, s.total
    )
}

fn histogram_table(h: &Histogram, unit: &str) -> String {
    let mut t = format!("| {unit} | rows |\n| --- | ---: |\n");
    for (s, c) in &h.bins {
        if h.width == 1 {
            let _ = writeln!(t, "| {s} | {c} |");
        } else {
            let _ = writeln!(t, "| {s}–{} | {c} |", s + h.width - 1);
        }
    }
    t
}

/// The card's Markdown.
pub fn render_card(stats: &CardStats, opts: &CardOptions) -> String {
    let mut md = String::new();
    let name = if opts.name.is_empty() {
        "Dataset"
    } else {
        &opts.name
    };
    let _ = writeln!(md, "# {name}\n");
    let _ = writeln!(md, "- **Source:** `{}`", opts.source);
    let _ = writeln!(
        md,
        "- **Licence:** {}",
        opts.license.as_deref().unwrap_or("not stated")
    );
    let _ = writeln!(md, "- **Rows:** {}", stats.rows);
    let _ = writeln!(
        md,
        "- **Conversational rows:** {}\n",
        stats.conversational_rows
    );
    md.push_str("## Formats\n\n| format | rows |\n| --- | ---: |\n");
    for (k, v) in &stats.formats {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    if !stats.messages_per_role.is_empty() {
        md.push_str("\n## Messages per role\n\n| role | messages |\n| --- | ---: |\n");
        for (k, v) in &stats.messages_per_role {
            let _ = writeln!(md, "| {k} | {v} |");
        }
    }
    md.push_str(
        "\n## Languages and written forms\n\nPredicted per row by tilpass's language identifier \
         (`nb` Bokmål, `nn` Nynorsk, `sv`, `da`, `en`).\n\n| language | rows | share |\n| --- | ---: | ---: |\n",
    );
    for (k, v) in &stats.languages {
        let share = 100.0 * *v as f64 / stats.rows.max(1) as f64;
        let _ = writeln!(md, "| {k} | {v} | {share:.1}% |");
    }
    let _ = writeln!(
        md,
        "\n## Words per row\n\n{}\n\n![words per row](words.svg)\n\n(also [words.png](words.png))\n\n{}",
        summary_line(&stats.words),
        histogram_table(&stats.words_histogram, "words")
    );
    if stats.conversational_rows > 0 {
        let _ = writeln!(
            md,
            "## Turns per conversation\n\n{}\n\n![turns per conversation](turns.svg)\n\n(also [turns.png](turns.png))\n\n{}",
            summary_line(&stats.turns),
            histogram_table(&stats.turns_histogram, "turns")
        );
    }
    if !stats.reports.is_empty() {
        md.push_str("## Filter and dedup reports\n\n");
        for r in &stats.reports {
            let file = r.path.file_name().map_or_else(
                || r.path.display().to_string(),
                |f| f.to_string_lossy().into(),
            );
            let _ = writeln!(
                md,
                "### {file}\n\n{} entries, {} distinct rows.\n\n| rule | entries |\n| --- | ---: |",
                r.entries, r.rows
            );
            for (k, v) in &r.rules {
                let _ = writeln!(md, "| {k} | {v} |");
            }
            md.push('\n');
        }
    }
    md.push_str("---\nWritten by `tilpass data card`.\n");
    md
}

/// Writes a card for `records` into the new directory `dir`: `README.md`, `stats.json`,
/// `words.svg`/`.png` and, for conversations, `turns.svg`/`.png`. Refuses an existing `dir`;
/// the directory appears whole or not at all.
pub fn write_card(
    dir: &Path,
    records: &[Record],
    langid: &LangId,
    opts: &CardOptions,
) -> Result<CardStats> {
    check_card_dir(dir)?;
    write_card_stats(dir, card_stats(records, langid), opts)
}

fn check_card_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        return Err(DataError::Invalid(format!(
            "{}: the card directory exists; choose a new one",
            dir.display()
        )));
    }
    Ok(())
}

/// [`write_card`] from a measurement already made ([`card_stats`], or a
/// [`CardStatsBuilder`] fed a streamed dataset); the reports of `opts` are read here.
pub fn write_card_stats(dir: &Path, mut stats: CardStats, opts: &CardOptions) -> Result<CardStats> {
    check_card_dir(dir)?;
    for r in &opts.reports {
        stats.reports.push(summarise_report(r)?);
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "card".into());
    let tmp = dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let io = |path: &Path, e: std::io::Error| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let result = (|| {
        plot(
            &tmp,
            "words",
            &stats.words_histogram,
            "Words per row",
            "words",
        )?;
        if stats.conversational_rows > 0 {
            plot(
                &tmp,
                "turns",
                &stats.turns_histogram,
                "Turns per conversation",
                "turns",
            )?;
        }
        let readme = tmp.join("README.md");
        std::fs::write(&readme, render_card(&stats, opts)).map_err(|e| io(&readme, e))?;
        let js = tmp.join("stats.json");
        let body = serde_json::to_string_pretty(&stats).unwrap_or_default();
        std::fs::write(&js, body + "\n").map_err(|e| io(&js, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| io(dir, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|_| stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Message, Role};

    #[test]
    fn histogram_bins_cover_every_value() {
        let h = Histogram::of(&[0, 1, 1, 5, 59], 30);
        assert_eq!(h.width, 2);
        assert_eq!(h.bins.first(), Some(&(0, 3)));
        assert_eq!(h.bins.iter().map(|b| b.1).sum::<usize>(), 5);
        assert_eq!(h.bins.last(), Some(&(58, 1)));
        let h = Histogram::of(&[3, 4, 4], 30);
        assert_eq!((h.width, h.bins.clone()), (1, vec![(3, 1), (4, 2)]));
        assert_eq!(Histogram::of(&[], 30), Histogram::default());
    }

    #[test]
    fn card_is_written_whole_and_refuses_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![
            Record::Conversation {
                messages: vec![
                    Message::new(Role::User, "Kva heiter du?"),
                    Message::new(Role::Assistant, "Eg heiter Tilpass."),
                ],
            },
            Record::Conversation {
                messages: vec![Message::new(Role::User, "Hei")],
            },
        ];
        let report = dir.path().join("r.jsonl");
        std::fs::write(
            &report,
            "{\"line\": 1, \"rule\": \"min_words\"}\n{\"line\": 1, \"rule\": \"language\"}\n{\"line\": 4, \"rule\": \"min_words\"}\n",
        )
        .unwrap();
        let out = dir.path().join("card");
        let opts = CardOptions {
            name: "Test".into(),
            source: "test.jsonl".into(),
            license: Some("CC0-1.0".into()),
            reports: vec![report],
        };
        let s = write_card(&out, &recs, crate::LangId::builtin(), &opts).unwrap();
        assert_eq!(s.turns.max, 2);
        assert_eq!(s.reports[0].rules["min_words"], 2);
        assert_eq!(s.reports[0].rows, 2);
        for f in [
            "README.md",
            "stats.json",
            "words.svg",
            "words.png",
            "turns.svg",
            "turns.png",
        ] {
            assert!(out.join(f).is_file(), "{f}");
        }
        let png = std::fs::read(out.join("words.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let md = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(md.contains("**Licence:** CC0-1.0"), "{md}");
        assert!(md.contains("| min_words | 2 |"), "{md}");
        assert!(write_card(&out, &recs, crate::LangId::builtin(), &opts).is_err());
        // Nothing but the card and the report is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
