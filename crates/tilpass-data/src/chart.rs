//! Line and point charts written as SVG and PNG (plotters), shared by `tilpass plot` (a run's
//! metrics curves) and the LamBERT study (accuracy against trainable parameters, learning
//! curves). Each file appears whole or not at all: the SVG is drawn in memory and written
//! atomically, the PNG drawn beside its target under a temporary name and renamed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::error::{DataError, Result};

/// One curve or point set of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// `(x, y)` points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Joined by a line (true) or drawn as points only.
    pub line: bool,
}

impl Series {
    /// A curve through `points`.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            line: true,
        }
    }

    /// Points without a line.
    pub fn points(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            line: false,
        }
    }
}

/// A chart: title, axis titles, the x scale and the series.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    /// Caption above the plot.
    pub title: &'a str,
    /// X-axis title.
    pub x_desc: &'a str,
    /// Y-axis title.
    pub y_desc: &'a str,
    /// A base-10 logarithmic x axis (every x must then be > 0).
    pub log_x: bool,
    /// The curves / point sets (empty ones are skipped).
    pub series: &'a [Series],
}

/// Registers a sans-serif font for the PNG text (plotters' bitmap backend draws text with
/// ab_glyph), once per process: the first of a few common system fonts that exists. Without
/// one the PNG has curves and no text (the SVG names its fonts and needs none); the result
/// says whether PNGs get text.
pub fn register_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
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
    })
}

/// The x value as drawn: its base-10 logarithm on a log axis.
fn x_of(chart: &Chart, x: f64) -> f64 {
    if chart.log_x { x.log10() } else { x }
}

/// Draws `chart` on any plotters backend; `text` false leaves out captions, labels and legend
/// (a PNG without a font).
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
    text: bool,
) -> std::result::Result<(), String> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for s in chart.series {
        for &(x, y) in &s.points {
            let x = x_of(chart, x);
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x1 < x0 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let xpad = if x1 > x0 {
        (x1 - x0) * 0.05
    } else {
        x0.abs().max(1.0) * 0.05
    };
    let ypad = if y1 > y0 {
        (y1 - y0) * 0.05
    } else {
        y0.abs().max(1.0) * 0.05
    };
    let (x0, x1) = if chart.log_x {
        (x0 - xpad, x1 + xpad)
    } else if x1 > x0 {
        (x0, x1)
    } else {
        (x0, x0 + 1.0)
    };
    let mut builder = ChartBuilder::on(&root);
    builder.margin(16);
    if text {
        builder
            .caption(chart.title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(70);
    } else {
        builder.x_label_area_size(8).y_label_area_size(8);
    }
    let mut plot = builder
        .build_cartesian_2d(x0..x1, (y0 - ypad)..(y1 + ypad))
        .map_err(e)?;
    let log_label = |v: &f64| {
        let p = 10f64.powf(*v);
        if p >= 1e6 {
            format!("{:.1}M", p / 1e6)
        } else if p >= 1e3 {
            format!("{:.0}k", p / 1e3)
        } else {
            format!("{p:.0}")
        }
    };
    let mut mesh = plot.configure_mesh();
    mesh.x_desc(chart.x_desc).y_desc(chart.y_desc);
    if chart.log_x {
        mesh.x_label_formatter(&log_label);
    }
    if !text {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(e)?;
    for (i, s) in chart.series.iter().enumerate() {
        if s.points.is_empty() {
            continue;
        }
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (x_of(chart, x), y)).collect();
        let drawn = if s.line {
            plot.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(e)?
        } else {
            plot.draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled())))
                .map_err(e)?
        };
        if text {
            drawn
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
        }
        if s.line && pts.len() <= 40 {
            plot.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(e)?;
        }
    }
    if text {
        plot.configure_series_labels()
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

/// Writes `chart` to `dir/<stem>.svg` and `dir/<stem>.png` (900 x 540); returns both paths.
/// A log x axis with an x <= 0 or a non-finite point is an error naming the series.
pub fn write_chart(dir: &Path, stem: &str, chart: &Chart) -> Result<[PathBuf; 2]> {
    for s in chart.series {
        if let Some(&(x, y)) = s
            .points
            .iter()
            .find(|(x, y)| !x.is_finite() || !y.is_finite() || (chart.log_x && *x <= 0.0))
        {
            return Err(DataError::Invalid(format!(
                "{stem}: series `{}` has the point ({x}, {y}): expected finite values{}",
                s.name,
                if chart.log_x {
                    " and x > 0 (log axis)"
                } else {
                    ""
                }
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| DataError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let text = register_font();
    let svg_path = dir.join(format!("{stem}.svg"));
    let mut svg = String::new();
    draw(
        SVGBackend::with_string(&mut svg, (900, 540)).into_drawing_area(),
        chart,
        true,
    )
    .map_err(|m| DataError::Invalid(format!("{}: {m}", svg_path.display())))?;
    tilpass_core::write_atomic(&svg_path, svg.as_bytes())?;
    let png_path = dir.join(format!("{stem}.png"));
    let tmp = temp_beside(&png_path);
    let drawn = draw(
        BitMapBackend::new(&tmp, (900, 540)).into_drawing_area(),
        chart,
        text,
    )
    .map_err(|m| DataError::Invalid(format!("{}: {m}", png_path.display())))
    .and_then(|()| {
        std::fs::rename(&tmp, &png_path).map_err(|e| DataError::Io {
            path: png_path.clone(),
            source: e,
        })
    });
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok([svg_path, png_path])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_axis_refuses_non_positive_x_and_writes_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let bad = [Series::points("lora", vec![(0.0, 0.5)])];
        let chart = Chart {
            title: "t",
            x_desc: "x",
            y_desc: "y",
            log_x: true,
            series: &bad,
        };
        let err = write_chart(dir.path(), "c", &chart)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lora") && err.contains("x > 0"), "{err}");
        assert!(!dir.path().join("c.svg").exists());
        let good = [
            Series::points("lora", vec![(1200.0, 0.5)]),
            Series::line("full", vec![(10.0, 0.2), (1e6, 0.9)]),
        ];
        let chart = Chart {
            series: &good,
            ..chart
        };
        let [svg, png] = write_chart(dir.path(), "c", &chart).unwrap();
        let text = std::fs::read_to_string(svg).unwrap();
        assert!(text.contains("<svg") && text.contains("full"));
        assert!(std::fs::metadata(png).unwrap().len() > 100);
    }
}
