//! `tilpass plot RUN/metrics.jsonl [--out DIR]`: the curves of a training run's metrics log
//! as SVG and PNG (plotters): `loss` (training loss and, when logged, `eval_loss`), `lr`
//! (learning rate), `grad_norm`, and `eval` (the other `eval_*` metrics), each against the
//! optimiser step, drawn by [`tilpass::data::chart`]. Files appear whole or not at all.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};
use tilpass::Result;
use tilpass::core::Error;
use tilpass::data::chart::{self, Chart, Series};

use crate::common::print;

/// The flags of `plot`.
#[derive(Args)]
pub struct PlotArgs {
    /// A run's metrics log (`metrics.jsonl` in the output directory of `tilpass train ...`).
    metrics: PathBuf,
    /// Directory for the plots (default: the directory of the metrics file).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One curve: its name and `(step, value)` points in step order.
type Curve = (String, Vec<(f64, f64)>);

/// The charts of a metrics log: `(file stem, y-axis title, curves)`, charts without points
/// left out.
fn charts(rows: &[(usize, Value)]) -> Vec<(&'static str, &'static str, Vec<Curve>)> {
    let mut by_key: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (_, row) in rows {
        let Some(step) = row.get("step").and_then(Value::as_f64) else {
            continue;
        };
        if let Value::Object(m) = row {
            for (k, v) in m {
                if let Some(x) = v.as_f64().filter(|x| x.is_finite())
                    && !matches!(k.as_str(), "step" | "tokens" | "tokens_per_s")
                {
                    by_key.entry(k.clone()).or_default().push((step, x));
                }
            }
        }
    }
    let mut take = |keys: &[&str]| -> Vec<Curve> {
        keys.iter()
            .filter_map(|k| by_key.remove(*k).map(|p| (k.to_string(), p)))
            .collect()
    };
    let loss = take(&["loss", "eval_loss"]);
    let lr = take(&["lr"]);
    let grad = take(&["grad_norm"]);
    let _ = take(&["perplexity"]); // exp(eval_loss): the loss chart has it
    let eval: Vec<Curve> = by_key
        .into_iter()
        .filter(|(k, _)| k.starts_with("eval_"))
        .collect();
    [
        ("loss", "loss", loss),
        ("lr", "learning rate", lr),
        ("grad_norm", "gradient norm", grad),
        ("eval", "evaluation metric", eval),
    ]
    .into_iter()
    .filter(|(_, _, s)| !s.is_empty())
    .collect()
}

/// Runs `tilpass plot`: writes the charts, prints `{"plots": [...], "points": n}`.
pub fn plot_cmd(a: PlotArgs) -> Result<()> {
    let rows: Vec<(usize, Value)> = crate::common::read_lines(&a.metrics)?
        .into_iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(&l)
                .map(|v| (i + 1, v))
                .map_err(|e| Error::invalid(format!("{}:{}: {e}", a.metrics.display(), i + 1)))
        })
        .collect::<Result<_>>()?;
    let charts = charts(&rows);
    if charts.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no line with a `step` and a numeric metric (loss, lr, eval_loss, ...) to plot",
            a.metrics.display()
        )));
    }
    let dir = match &a.out {
        Some(d) => d.clone(),
        None => match a.metrics.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let text = chart::register_font();
    let mut written = Vec::new();
    let points: usize = charts
        .iter()
        .flat_map(|(_, _, s)| s.iter().map(|(_, p)| p.len()))
        .sum();
    for (stem, y_title, series) in charts {
        let title = format!("{stem}: {}", a.metrics.display());
        let series: Vec<Series> = series
            .into_iter()
            .map(|(name, pts)| Series::line(name, pts))
            .collect();
        let files = chart::write_chart(
            &dir,
            stem,
            &Chart {
                title: &title,
                x_desc: "step",
                y_desc: y_title,
                log_x: false,
                series: &series,
            },
        )?;
        written.extend(files.iter().map(|f| f.display().to_string()));
    }
    print(&json!({"plots": written, "points": points, "png_text": text}));
    Ok(())
}
