//! `tilpass plot RUN/metrics.jsonl [--out DIR]`: the curves of a training run's metrics log
//! as SVG and PNG (plotters): `loss` (training loss and, when logged, `eval_loss`), `lr`
//! (learning rate), `grad_norm`, and `eval` (the other `eval_*` metrics), each against the
//! optimiser step. Files appear whole or not at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use plotters::prelude::*;
use serde_json::{Value, json};
use tilpass::Result;
use tilpass::core::Error;

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
type Series = (String, Vec<(f64, f64)>);

/// The charts of a metrics log: `(file stem, y-axis title, curves)`, charts without points
/// left out.
fn charts(rows: &[(usize, Value)]) -> Vec<(&'static str, &'static str, Vec<Series>)> {
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
    let mut take = |keys: &[&str]| -> Vec<Series> {
        keys.iter()
            .filter_map(|k| by_key.remove(*k).map(|p| (k.to_string(), p)))
            .collect()
    };
    let loss = take(&["loss", "eval_loss"]);
    let lr = take(&["lr"]);
    let grad = take(&["grad_norm"]);
    let _ = take(&["perplexity"]); // exp(eval_loss): the loss chart has it
    let eval: Vec<Series> = by_key
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

/// Registers a sans-serif font for the PNG text (plotters' bitmap backend draws text with
/// ab_glyph): the first of a few common system fonts that exists; without one the PNG has
/// curves and no text (the SVG names its fonts and needs none).
fn register_font() -> bool {
    const FONTS: &[&str] = &[
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/Library/Fonts/Arial.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "C:\\Windows\\Fonts\\arial.ttf",
    ];
    for f in FONTS {
        if let Ok(bytes) = std::fs::read(f) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Draws one chart on any plotters backend.
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_title: &str,
    series: &[Series],
    text: bool,
) -> std::result::Result<(), String> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = if y1 > y0 {
        (y1 - y0) * 0.05
    } else {
        y0.abs().max(1.0) * 0.05
    };
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(70);
    } else {
        builder.x_label_area_size(8).y_label_area_size(8);
    }
    let mut chart = builder
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(e)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc("step").y_desc(y_title);
    if !text {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(e)?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let drawn = chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(e)?;
        if text {
            drawn
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
        }
        if pts.len() <= 40 {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(e)?;
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)
}

/// A temporary name beside `target` that keeps its extension (the PNG encoder goes by it).
fn temp_beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{}.tmp-{}.png", name, std::process::id()))
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
    let text = register_font();
    let mut written = Vec::new();
    let points: usize = charts
        .iter()
        .flat_map(|(_, _, s)| s.iter().map(|(_, p)| p.len()))
        .sum();
    for (stem, y_title, series) in &charts {
        let title = format!("{stem}: {}", a.metrics.display());
        let svg_path = dir.join(format!("{stem}.svg"));
        let mut svg = String::new();
        draw(
            SVGBackend::with_string(&mut svg, (900, 540)).into_drawing_area(),
            &title,
            y_title,
            series,
            true,
        )
        .map_err(|m| Error::invalid(format!("{}: {m}", svg_path.display())))?;
        tilpass::core::write_atomic(&svg_path, svg.as_bytes())?;
        let png_path = dir.join(format!("{stem}.png"));
        let tmp = temp_beside(&png_path);
        let drawn = draw(
            BitMapBackend::new(&tmp, (900, 540)).into_drawing_area(),
            &title,
            y_title,
            series,
            text,
        )
        .map_err(|m| Error::invalid(format!("{}: {m}", png_path.display())))
        .and_then(|()| std::fs::rename(&tmp, &png_path).map_err(|e| Error::io(&png_path, e)));
        if let Err(e) = drawn {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        written.push(svg_path.display().to_string());
        written.push(png_path.display().to_string());
    }
    print(&json!({"plots": written, "points": points, "png_text": text}));
    Ok(())
}
