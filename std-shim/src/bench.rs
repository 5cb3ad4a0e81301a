//! `bilevel bench`: several methods on one problem in one run, each to a common target
//! (relative exact hypergradient norm or validation loss, both evaluated by the reference
//! after every step, untimed and uncounted — see [`StopAt`]) within the same iteration
//! budget, repeated with seeds `seed, seed + 1, …`; a table, JSON and a plot of the
//! validation loss against oracle calls and time.

use std::fmt::Write as _;

use crate::plot::{Line, Panel};
use crate::tune::{self, BoxError, StopAt, TuneRequest, TuneSummary};

/// What `bilevel bench` was asked to do.
#[derive(Clone, Debug)]
pub struct BenchRequest {
    /// Problem, files, budget, target and settings; its `method` is ignored.
    pub base: TuneRequest,
    /// The methods, in table order.
    pub methods: Vec<String>,
    /// Runs per method (seeds `base.seed + r`).
    pub repeats: u32,
}

/// The runs of one method.
#[derive(Clone, Debug)]
pub struct MethodRuns {
    /// Method name.
    pub method: String,
    /// One summary per repeat.
    pub runs: Vec<TuneSummary>,
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

impl MethodRuns {
    /// `"target 3/3"`, `"iteration budget 2/2"`, … (the commonest status first).
    pub fn status(&self) -> String {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for r in &self.runs {
            let key = if r.status.starts_with("failed") {
                "failed".to_string()
            } else {
                r.status.clone()
            };
            match counts.iter_mut().find(|(k, _)| *k == key) {
                Some(c) => c.1 += 1,
                None => counts.push((key, 1)),
            }
        }
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        counts
            .iter()
            .map(|(k, c)| format!("{k} {c}/{}", self.runs.len()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn mean_of(&self, f: impl Fn(&TuneSummary) -> f64) -> f64 {
        mean(self.runs.iter().map(f))
    }

    /// Mean outer iterations.
    pub fn iterations(&self) -> f64 {
        self.mean_of(|r| f64::from(r.iterations))
    }

    /// Mean seconds per outer step.
    pub fn step_time(&self) -> f64 {
        self.mean_of(|r| r.wall_time_s / f64::from(r.iterations.max(1)))
    }
}

/// Checks the methods and the `--set` keys (each must belong to at least one of the methods
/// or to the problem), then runs every method `repeats` times.
pub fn bench(req: &BenchRequest) -> Result<Vec<MethodRuns>, BoxError> {
    if req.methods.is_empty() {
        return Err("--methods lists no method".into());
    }
    for m in &req.methods {
        tune::params(req.base.problem, m, 1.0, &[])?;
    }
    for (key, _) in &req.base.settings {
        let known = req
            .methods
            .iter()
            .any(|m| tune::params(req.base.problem, m, 1.0, &[]).is_ok_and(|p| p.keys().any(|k| k == key)));
        if !known {
            let mut valid: Vec<&str> = Vec::new();
            for m in &req.methods {
                if let Ok(p) = tune::params(req.base.problem, m, 1.0, &[]) {
                    for k in p.keys() {
                        if !valid.contains(&k) {
                            valid.push(k);
                        }
                    }
                }
            }
            return Err(format!(
                "unknown --set key {key:?} for {} with {}; valid keys: {}",
                req.base.problem.name(),
                req.methods.join(", "),
                valid.join(", ")
            )
            .into());
        }
    }
    let mut out = Vec::new();
    for m in &req.methods {
        let known = tune::params(req.base.problem, m, 1.0, &[])?;
        let mut runs = Vec::new();
        for r in 0..req.repeats.max(1) {
            let mut one = req.base.clone();
            one.method = m.clone();
            one.seed = req.base.seed + u64::from(r);
            one.settings.retain(|(k, _)| known.keys().any(|name| name == k));
            runs.push(tune::with_large_stack(move || tune::tune(&one))?);
        }
        out.push(MethodRuns {
            method: m.clone(),
            runs,
        });
    }
    Ok(out)
}

/// The target in words.
pub fn target_text(stop: Option<StopAt>) -> String {
    match stop {
        Some(StopAt::RelativeGradient(e)) => format!("‖∇F(x_k)‖ ≤ {e:e}·‖∇F(x_0)‖"),
        Some(StopAt::Loss(v)) => format!("F(x_k) ≤ {v}"),
        None => "none (full budget)".into(),
    }
}

/// The printed table (Markdown): means over the repeats.
pub fn table(results: &[MethodRuns]) -> String {
    let mut s = String::from(
        "| method | status | iterations | ∇_y g | ∇f | ∇²_yy g·v | ∇²_xy g·v | ∇_x g | g | time/step (ms) | final F | final ‖h‖ |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in results {
        let c = |f: fn(&bilevel::problem::OracleCounts) -> u64| m.mean_of(|r| f(&r.oracle_calls) as f64);
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} | {:.6} | {:.2e} |",
            m.method,
            m.status(),
            m.iterations(),
            c(|o| o.lower_grad),
            c(|o| o.upper_grad),
            c(|o| o.lower_hvp),
            c(|o| o.lower_cross),
            c(|o| o.lower_grad_x),
            c(|o| o.lower_value),
            1e3 * m.step_time(),
            m.mean_of(|r| r.upper_value),
            m.mean_of(|r| r.hypergradient_norm),
        );
    }
    s
}

fn json_number(v: f64) -> String {
    if v.is_finite() { format!("{v:?}") } else { "null".into() }
}

/// The JSON report: every run of every method (without traces) and the means.
pub fn to_json(req: &BenchRequest, results: &[MethodRuns]) -> String {
    let mut s = String::from("{\n");
    let _ = writeln!(s, "  \"problem\": \"{}\",", req.base.problem.name());
    let target = match req.base.stop {
        Some(StopAt::RelativeGradient(e)) => format!("{{\"relative_hypergradient_norm\": {}}}", json_number(e)),
        Some(StopAt::Loss(v)) => format!("{{\"validation_loss\": {}}}", json_number(v)),
        None => "null".into(),
    };
    let _ = writeln!(s, "  \"target\": {target},");
    let _ = writeln!(s, "  \"max_iterations\": {},", req.base.iterations);
    let _ = writeln!(s, "  \"repeats\": {},", req.repeats.max(1));
    s.push_str("  \"methods\": [\n");
    for (i, m) in results.iter().enumerate() {
        let _ = writeln!(s, "    {{\"method\": \"{}\", \"status\": {:?},", m.method, m.status());
        let _ = writeln!(
            s,
            "     \"mean\": {{\"iterations\": {}, \"step_time_s\": {}, \"upper_value\": {}, \"hypergradient_norm\": {}}},",
            json_number(m.iterations()),
            json_number(m.step_time()),
            json_number(m.mean_of(|r| r.upper_value)),
            json_number(m.mean_of(|r| r.hypergradient_norm))
        );
        s.push_str("     \"runs\": [\n");
        for (j, r) in m.runs.iter().enumerate() {
            let c = &r.oracle_calls;
            let _ = write!(
                s,
                "       {{\"seed\": {}, \"status\": {:?}, \"iterations\": {}, \"oracle_calls\": {{\"lower_grad\": {}, \"upper_grad\": {}, \"lower_hvp\": {}, \"lower_cross\": {}, \"lower_grad_x\": {}, \"lower_value\": {}, \"upper_value\": {}}}, \"upper_value\": {}, \"hypergradient_norm\": {}, \"wall_time_s\": {}}}",
                req.base.seed + j as u64,
                r.status,
                r.iterations,
                c.lower_grad,
                c.upper_grad,
                c.lower_hvp,
                c.lower_cross,
                c.lower_grad_x,
                c.lower_value,
                c.upper_value,
                json_number(r.upper_value),
                json_number(r.hypergradient_norm),
                json_number(r.wall_time_s)
            );
            s.push_str(if j + 1 < m.runs.len() { ",\n" } else { "\n" });
        }
        s.push_str("     ]}");
        s.push_str(if i + 1 < results.len() { ",\n" } else { "\n" });
    }
    s.push_str("  ]\n}\n");
    s
}

/// Validation loss of each method's first run against oracle calls and against time (the
/// exact `F(x_k)` when a target was set, else `f(x_k, y_k)`).
pub fn panels(results: &[MethodRuns]) -> Vec<Panel> {
    let lines = |by_time: bool| {
        results
            .iter()
            .filter_map(|m| m.runs.first().map(|r| (m, r)))
            .map(|(m, r)| Line {
                name: m.method.clone(),
                points: r
                    .trace
                    .iter()
                    .map(|t| {
                        let x = if by_time { t.seconds } else { t.oracle_calls as f64 };
                        let f = if t.exact_value.is_nan() {
                            t.validation_loss
                        } else {
                            t.exact_value
                        };
                        (x, f)
                    })
                    .collect(),
            })
            .collect()
    };
    let exact = results
        .iter()
        .any(|m| m.runs.iter().any(|r| r.trace.iter().any(|t| !t.exact_value.is_nan())));
    let title = if exact {
        "validation loss F(x_k)".to_string()
    } else {
        "validation loss f(y_k)".to_string()
    };
    vec![
        Panel {
            title: title.clone(),
            x_label: "oracle calls".into(),
            y_label: "F".into(),
            log_y: true,
            lines: lines(false),
        },
        Panel {
            title: title.clone(),
            x_label: "time (s)".into(),
            y_label: "F".into(),
            log_y: true,
            lines: lines(true),
        },
    ]
}
