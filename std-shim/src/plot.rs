//! Convergence plots with `plotters`: SVG or PNG by the file extension. Text uses the bundled
//! DejaVu Sans Mono (see `std-shim/data/fonts`), so no system font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::tune::TraceRow;

static FONT: Once = Once::new();

fn register() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../data/fonts/DejaVuSansMono.ttf");
        // The bundled font is valid; a failure would only lose the text.
        let _ = register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// One line of a panel.
pub struct Line {
    /// Legend text.
    pub name: String,
    /// Points `(x, y)`; non-finite ones (and non-positive ones on a log axis) are left out.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure.
pub struct Panel {
    /// Caption.
    pub title: String,
    /// Horizontal axis label.
    pub x_label: String,
    /// Vertical axis label.
    pub y_label: String,
    /// Logarithmic vertical axis.
    pub log_y: bool,
    /// The lines.
    pub lines: Vec<Line>,
}

/// The plot format of `path`: `svg` or `png`, by its extension.
pub fn format_of(path: &Path) -> Result<&'static str, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "svg" => Ok("svg"),
        "png" => Ok("png"),
        _ => Err(format!("{}: the plot file must end in .svg or .png", path.display())),
    }
}

/// Draws `panels` in a grid of `columns` into `path` (`.svg` or `.png`).
pub fn draw(path: &Path, panels: &[Panel], columns: usize) -> Result<(), String> {
    register();
    let rows = panels.len().div_ceil(columns.max(1));
    let size = (560 * columns as u32, 400 * rows as u32);
    let fail = |e: String| format!("{}: {e}", path.display());
    match format_of(path)? {
        "svg" => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            grid(&root, panels, rows, columns).map_err(fail)?;
            root.present().map_err(|e| fail(e.to_string()))
        }
        _ => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            grid(&root, panels, rows, columns).map_err(fail)?;
            root.present().map_err(|e| fail(e.to_string()))
        }
    }
}

fn grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[Panel],
    rows: usize,
    columns: usize,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((rows, columns));
    for (area, panel) in areas.iter().zip(panels) {
        chart(area, panel)?;
    }
    Ok(())
}

/// Finite data bounds, widened when flat.
fn bounds(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return if log { (1e-3, 1.0) } else { (0.0, 1.0) };
    }
    if log {
        if hi > lo {
            (lo / 1.5, hi * 1.5)
        } else {
            (lo / 2.0, lo * 2.0)
        }
    } else {
        let pad = if hi > lo {
            0.05 * (hi - lo)
        } else {
            0.5 * lo.abs().max(1e-9)
        };
        (lo - pad, hi + pad)
    }
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

macro_rules! draw_lines {
    ($chart:expr, $panel:expr, $log:expr) => {{
        for (i, line) in $panel.lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let points: Vec<(f64, f64)> = line
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!$log || *y > 0.0))
                .collect();
            $chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(line.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        if $panel.lines.len() > 1 {
            $chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(|e| e.to_string())?;
        }
    }};
}

fn chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> Result<(), String> {
    let xs = bounds(panel.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)), false);
    let ys = bounds(
        panel.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)),
        panel.log_y,
    );
    let span = xs.1 - xs.0;
    let x_format = move |v: &f64| {
        if span >= 20.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    if panel.log_y {
        let mut c = builder
            .build_cartesian_2d(xs.0..xs.1, (ys.0..ys.1).log_scale())
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc(&panel.x_label)
            .y_desc(&panel.y_label)
            .y_labels(12)
            .y_label_formatter(&|v| {
                if (1e-2..1e4).contains(v) {
                    format!("{v:.3}")
                } else {
                    format!("{v:.0e}")
                }
            })
            .x_label_formatter(&x_format)
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| e.to_string())?;
        draw_lines!(c, panel, true);
    } else {
        let mut c = builder
            .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc(&panel.x_label)
            .y_desc(&panel.y_label)
            .x_label_formatter(&x_format)
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| e.to_string())?;
        draw_lines!(c, panel, false);
    }
    Ok(())
}

/// The four panels of `bilevel tune --plot`: validation loss and hypergradient norm against
/// outer steps and against oracle calls.
pub fn tune_panels(name: &str, trace: &[TraceRow]) -> Vec<Panel> {
    let line = |f: &dyn Fn(&TraceRow) -> (f64, f64)| {
        vec![Line {
            name: name.to_string(),
            points: trace.iter().map(f).collect(),
        }]
    };
    let steps = |r: &TraceRow| f64::from(r.iteration + 1);
    let calls = |r: &TraceRow| r.oracle_calls as f64;
    vec![
        Panel {
            title: "validation loss f(y_k)".into(),
            x_label: "outer step".into(),
            y_label: "F".into(),
            log_y: false,
            lines: line(&|r| (steps(r), r.validation_loss)),
        },
        Panel {
            title: "validation loss f(y_k)".into(),
            x_label: "oracle calls".into(),
            y_label: "F".into(),
            log_y: false,
            lines: line(&|r| (calls(r), r.validation_loss)),
        },
        Panel {
            title: "hypergradient norm".into(),
            x_label: "outer step".into(),
            y_label: "|h|".into(),
            log_y: true,
            lines: line(&|r| (steps(r), r.hypergradient_norm)),
        },
        Panel {
            title: "hypergradient norm".into(),
            x_label: "oracle calls".into(),
            y_label: "|h|".into(),
            log_y: true,
            lines: line(&|r| (calls(r), r.hypergradient_norm)),
        },
    ]
}
