//! The run commands: `tune` and `bench`, their output files checked before and written after.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use bilevel_std::{bench, tune};

/// Fails now, before a run, if `path` cannot be written (a missing directory, no
/// permission); an existing file is left as it is until the run writes it.
fn check_writable(path: &Path) -> Result<(), String> {
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Checks the output files of a run before it starts.
pub(crate) fn check_outputs(data: &[Option<&PathBuf>], plot: Option<&PathBuf>) -> Result<(), String> {
    if let Some(p) = plot {
        bilevel_std::plot::format_of(p)?;
    }
    data.iter()
        .copied()
        .flatten()
        .chain(plot)
        .try_for_each(|p| check_writable(p))
}

/// The files as read, the label mapping and the warnings about the data.
fn print_data(s: &tune::TuneSummary) {
    for f in &s.data {
        let classes = match f.classes {
            Some(1) => ", 1 class".to_string(),
            Some(c) => format!(", {c} classes"),
            None => String::new(),
        };
        out!(
            "{} {}: {} rows, {} features{classes} ({})",
            f.role,
            f.file,
            f.rows,
            f.features,
            f.layout
        );
    }
    if !s.labels.is_empty() {
        let pairs: Vec<String> = s.labels.iter().map(|(l, c)| format!("{l} → {c}")).collect();
        out!("labels: {}", pairs.join(", "));
    }
    for w in &s.warnings {
        eprintln!("bilevel: warning: {w}");
    }
}

pub(crate) fn run_tune(
    mut req: tune::TuneRequest,
    json: Option<&PathBuf>,
    trace: Option<&PathBuf>,
    plot: Option<&PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    check_outputs(&[json, trace], plot)?;
    let tolerance = req.tolerance;
    req.trace = trace.cloned();
    let s = tune::with_large_stack(move || tune::tune(&req)).map_err(|e| e.to_string())?;
    print_data(&s);
    let c = s.oracle_calls;
    let held = if s.held_iterations > 0 {
        format!(", {} of them holding x", s.held_iterations)
    } else {
        String::new()
    };
    out!(
        "{} with {} ({}): {} after {} iterations{held} ({} features, compiled width {})",
        s.problem,
        s.method,
        s.precision,
        s.status,
        s.iterations,
        s.features.0,
        s.features.1
    );
    let shown: Vec<String> = s.x.iter().take(8).map(|v| format!("{v:.4}")).collect();
    let more = if s.x.len() > 8 {
        format!(", … ({} values)", s.x.len())
    } else {
        String::new()
    };
    out!("{} = [{}{more}]", s.x_meaning, shown.join(", "));
    out!(
        "validation loss = {:.9}, |h| = {:.3e}",
        s.upper_value,
        s.hypergradient_norm
    );
    if let Some(t) = s.test {
        if t.metric == "accuracy" {
            out!("test loss = {:.6}, test accuracy = {:.2} %", t.loss, 100.0 * t.value);
        } else {
            out!("test loss = {:.6}, test R² = {:.4}", t.loss, t.value);
        }
    }
    for note in &s.notes {
        out!("{note}");
    }
    out!(
        "oracle calls: {} ∇_y g, {} ∇f, {} ∇²_yy g·v, {} ∇²_xy g·v, {} ∇_x g, {} g, {} f; {:.3} s",
        c.lower_grad,
        c.upper_grad,
        c.lower_hvp,
        c.lower_cross,
        c.lower_grad_x,
        c.lower_value,
        c.upper_value,
        s.wall_time_s
    );
    if let Some(path) = json {
        std::fs::write(path, s.to_json()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = plot {
        let name = format!("{} on {}", s.method, s.problem);
        bilevel_std::plot::draw(path, &bilevel_std::plot::tune_panels(&name, &s.trace), 2)?;
    }
    if !s.ok() {
        return Err(format!("{} with {}: {}", s.problem, s.method, s.status).into());
    }
    if !s.finished() {
        let measures = if s.iterations == 0 {
            "no step taken".to_string()
        } else if !s.relative_hypergradient_norm.is_finite() {
            "x never moved: every iteration held it while the inner state caught up; raise --iters to go on".to_string()
        } else {
            let mut m = format!(
                "the hypergradient estimate is at {:.1e} of the first (--tol {tolerance:e})",
                s.relative_hypergradient_norm
            );
            if s.relative_lower_residual.is_finite() {
                m += &format!(", the lower residual at {:.1e} of its start", s.relative_lower_residual);
            }
            m + "; raise --iters to go on"
        };
        eprintln!("bilevel: warning: not converged ({}): {measures}", s.status);
    }
    Ok(())
}

pub(crate) fn run_bench(
    req: &bench::BenchRequest,
    json: Option<&PathBuf>,
    plot: Option<&PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    check_outputs(&[json], plot)?;
    let results = bench::bench(req).map_err(|e| e.to_string())?;
    out!(
        "{}: {} run(s) per method, at most {} outer iterations, target {}",
        req.base.problem.name(),
        req.repeats.max(1),
        req.base.iterations,
        bench::target_text(req.base.stop)
    );
    out!("{}", bench::table(&results).trim_end());
    if let Some(path) = json {
        std::fs::write(path, bench::to_json(req, &results)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = plot {
        bilevel_std::plot::draw(path, &bench::panels(&results), 2)?;
    }
    Ok(())
}
