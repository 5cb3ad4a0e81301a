//! Settings of a run: the method's (from the registry) and the problem's, with `--set`.

use std::fmt::Write as _;

use bilevel::problems::HyperCleaning;
use bilevel::registry::{Method, SettingError, Settings};
use bilevel::smoothness::Smoothness;

use super::*;

/// A method with its settings (registry defaults, then `--set` overrides) and the problem's
/// settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// The method.
    pub method: Method,
    /// Its settings.
    pub settings: Settings,
    /// The problem's settings.
    pub problem: Vec<(&'static str, f64)>,
}

impl Params {
    /// The value of a problem setting `key` (NaN if the problem has none).
    pub fn get(&self, key: &str) -> f64 {
        self.problem
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(f64::NAN, |&(_, v)| v)
    }

    /// Every key `--set` accepts: the method's, then the problem's.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.settings
            .iter()
            .map(|(s, _)| s.key)
            .chain(self.problem.iter().map(|(k, _)| *k))
    }
}

/// Every method name, comma-separated (for messages and help).
pub fn method_list() -> String {
    Method::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
}

/// Problem settings accepted by `--set` besides the method's.
pub fn problem_defaults(problem: ProblemKind) -> Vec<(&'static str, f64)> {
    match problem {
        ProblemKind::HyperClean => vec![("noise", 0.0), ("l2", HyperCleaning::<f64, 1, 2, 1, 4>::DEFAULT_L2)],
        ProblemKind::Meta => vec![("lambda", 1.0)],
        _ => vec![],
    }
}

/// Every method with its family, summary and settings (defaults in terms of the lower
/// level's smoothness `L`).
pub fn methods_table() -> String {
    use bilevel::registry::{Initial, Kind};
    let mut s = String::new();
    for m in Method::ALL {
        let info = m.info();
        let outer = match info.estimates {
            bilevel::registry::Estimates::Converged => {
                "Barzilai–Borwein outer step, holds x until y (and an adjoint it keeps) catch up"
            }
            bilevel::registry::Estimates::Tracked => "Barzilai–Borwein outer step, holds x until y and u catch up",
            bilevel::registry::Estimates::Truncated => {
                "Barzilai–Borwein outer step, deepens the truncation until u is accurate"
            }
            bilevel::registry::Estimates::VarianceReduced => {
                "variance-reduced, Barzilai–Borwein outer step, holds x until the tables, y and u catch up"
            }
            bilevel::registry::Estimates::GrowingBatch => {
                "growing minibatches, Barzilai–Borwein outer step, holds x until y and u catch up, doubling the batch when noise stops them (with --tracking 0: stochastic, AdaGrad-norm)"
            }
            bilevel::registry::Estimates::Stochastic => "stochastic, AdaGrad-norm outer step",
        };
        let _ = writeln!(s, "{} ({}, {outer}): {}", info.name, info.family.name(), info.summary);
        for setting in info.settings {
            let default = match setting.initial {
                Initial::Value(v) => format!("{v}"),
                Initial::OverLipschitz(1.0) => "1/L".to_string(),
                Initial::OverLipschitz(c) => format!("{c}/L"),
                Initial::TimesLipschitz(1.0) => "L".to_string(),
                Initial::TimesLipschitz(c) => format!("{c}·L"),
            };
            let range = match setting.kind {
                Kind::Count { min, max } if max == u32::MAX => format!("whole, ≥ {min}"),
                Kind::Count { min, max } => format!("whole, {min}..={max}"),
                Kind::Positive => "> 0".to_string(),
                Kind::Fraction => "in [0, 1]".to_string(),
            };
            let _ = writeln!(
                s,
                "    {:<18} {} (default {default}; {range})",
                setting.key, setting.doc
            );
        }
    }
    s
}

/// The method's and the problem's settings with `overrides` applied, for a lower level of
/// `smoothness`; an unknown key is an error naming it and listing the valid ones.
pub fn params(
    problem: ProblemKind,
    method: &str,
    smoothness: impl Into<Smoothness>,
    overrides: &[(String, f64)],
) -> Result<Params, String> {
    let Some(m) = Method::from_name(method) else {
        return Err(format!("unknown method {method:?}; one of: {}", method_list()));
    };
    let mut p = Params {
        method: m,
        settings: Settings::new(m, smoothness),
        problem: problem_defaults(problem),
    };
    for (key, value) in overrides {
        if let Some(entry) = p.problem.iter_mut().find(|(k, _)| k == key) {
            entry.1 = *value;
            continue;
        }
        match p.settings.set(key, *value) {
            Ok(()) => {}
            Err(SettingError::Unknown) => {
                let valid: Vec<&str> = p.keys().collect();
                let valid = if valid.is_empty() {
                    "none".to_string()
                } else {
                    valid.join(", ")
                };
                return Err(format!(
                    "unknown --set key {key:?} for {} with {method}; valid keys: {valid}",
                    problem.name()
                ));
            }
            Err(SettingError::Invalid(e)) => return Err(format!("--set {key}={value}: {e}")),
        }
    }
    Ok(p)
}

/// Parses one `key=value` of `--set`.
pub fn parse_setting(s: &str) -> Result<(String, f64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("--set {s:?}: expected key=value"))?;
    let v: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("--set {s:?}: {v:?} is not a number"))?;
    Ok((k.trim().to_string(), v))
}
