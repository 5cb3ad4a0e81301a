//! The summary as JSON and the trace as CSV.

use std::fmt::Write as _;

use super::*;

/// A JSON string literal. By hand: `serde_json` would switch on `serde`'s `std` feature for
/// the whole workspace, and with it `std` in the `no_std` C library's build.
fn json_string(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn json_number(v: f64) -> String {
    if v.is_finite() { format!("{v:?}") } else { "null".into() }
}

impl TuneSummary {
    /// The machine-readable summary.
    pub fn to_json(&self) -> String {
        let c = &self.oracle_calls;
        let x: Vec<String> = self.x.iter().map(|&v| json_number(v)).collect();
        let mut s = String::from("{\n");
        let _ = writeln!(s, "  \"problem\": \"{}\",", self.problem);
        let _ = writeln!(s, "  \"method\": \"{}\",", self.method);
        let _ = writeln!(s, "  \"precision\": \"{}\",", self.precision);
        let _ = writeln!(s, "  \"status\": {:?},", self.status);
        let _ = writeln!(s, "  \"iterations\": {},", self.iterations);
        let _ = writeln!(
            s,
            "  \"oracle_calls\": {{\"lower_grad\": {}, \"upper_grad\": {}, \"lower_hvp\": {}, \"lower_cross\": {}, \"lower_grad_x\": {}, \"lower_value\": {}, \"upper_value\": {}}},",
            c.lower_grad, c.upper_grad, c.lower_hvp, c.lower_cross, c.lower_grad_x, c.lower_value, c.upper_value
        );
        let _ = writeln!(s, "  \"x\": [{}],", x.join(", "));
        let _ = writeln!(s, "  \"x_meaning\": \"{}\",", self.x_meaning);
        let _ = writeln!(s, "  \"upper_value\": {},", json_number(self.upper_value));
        let _ = writeln!(s, "  \"hypergradient_norm\": {},", json_number(self.hypergradient_norm));
        let _ = writeln!(
            s,
            "  \"relative_hypergradient_norm\": {},",
            json_number(self.relative_hypergradient_norm)
        );
        let _ = writeln!(
            s,
            "  \"relative_lower_residual\": {},",
            json_number(self.relative_lower_residual)
        );
        let _ = writeln!(s, "  \"held_iterations\": {},", self.held_iterations);
        if let Some(t) = self.test {
            let _ = writeln!(
                s,
                "  \"test\": {{\"loss\": {}, \"{}\": {}}},",
                json_number(t.loss),
                t.metric,
                json_number(t.value)
            );
        }
        for (k, v) in &self.extra {
            let _ = writeln!(s, "  \"{k}\": {v},");
        }
        let _ = writeln!(
            s,
            "  \"features\": {}, \"compiled_width\": {},",
            self.features.0, self.features.1
        );
        if !self.data.is_empty() {
            let files: Vec<String> = self
                .data
                .iter()
                .map(|f| {
                    let classes = f.classes.map_or("null".to_string(), |c| c.to_string());
                    format!(
                        "{{\"role\": \"{}\", \"file\": {}, \"layout\": {}, \"rows\": {}, \"features\": {}, \"classes\": {classes}}}",
                        f.role,
                        json_string(&f.file),
                        json_string(&f.layout),
                        f.rows,
                        f.features
                    )
                })
                .collect();
            let _ = writeln!(s, "  \"data\": [{}],", files.join(", "));
        }
        if !self.labels.is_empty() {
            let pairs: Vec<String> = self
                .labels
                .iter()
                .map(|(l, c)| format!("{}: {c}", json_string(l)))
                .collect();
            let _ = writeln!(s, "  \"labels\": {{{}}},", pairs.join(", "));
        }
        let warnings: Vec<String> = self.warnings.iter().map(|w| json_string(w)).collect();
        let _ = writeln!(s, "  \"warnings\": [{}],", warnings.join(", "));
        let _ = writeln!(s, "  \"wall_time_s\": {:?}", self.wall_time_s);
        s.push_str("}\n");
        s
    }

    /// The trace as CSV: one row per outer step.
    pub fn trace_csv(&self) -> String {
        let exact = self.trace.iter().any(|r| !r.exact_value.is_nan());
        let mut s = String::from(TraceRow::csv_header(exact));
        for r in &self.trace {
            s.push_str(&r.csv_line(exact));
        }
        s
    }
}

impl TraceRow {
    /// The trace's CSV header (with the exact columns when a target is set).
    pub fn csv_header(exact: bool) -> &'static str {
        if exact {
            "iteration,held,hypergradient_norm,validation_loss,oracle_calls,seconds,exact_value,exact_gradient_norm\n"
        } else {
            "iteration,held,hypergradient_norm,validation_loss,oracle_calls,seconds\n"
        }
    }

    /// The row as a CSV line, newline included.
    pub fn csv_line(&self, exact: bool) -> String {
        let mut s = format!(
            "{},{},{:?},{:?},{},{:?}",
            self.iteration,
            u8::from(self.held),
            self.hypergradient_norm,
            self.validation_loss,
            self.oracle_calls,
            self.seconds
        );
        if exact {
            let _ = write!(s, ",{:?},{:?}", self.exact_value, self.exact_gradient_norm);
        }
        s.push('\n');
        s
    }
}
