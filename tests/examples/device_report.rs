//! Prints on the host the reports the firmware in `examples-cortex-m` prints on the device,
//! computed by the same source file (`examples-cortex-m/src/scenario.rs`). `.ci/firmware`
//! diffs the two.
//!
//! ```text
//! cargo run --release -p bilevel-tests --example device_report -- quadratic
//! cargo run --release -p bilevel-tests --example device_report -- logreg
//! cargo run --release -p bilevel-tests --example device_report -- stream
//! cargo run --release -p bilevel-tests --example device_report -- stream-samples > samples.bin
//! ```
//!
//! `stream-samples` writes the samples `stream` consumes from its training stream in the serial wire format of
//! `examples-cortex-m/src/serial.rs` (the magic `BLV1`, the sample count as `u32`, then per
//! sample the features and the target as little-endian `f32`), for `tune_stream_uart`.

#[allow(dead_code)]
#[path = "../../examples-cortex-m/src/scenario.rs"]
mod scenario;

use std::io::Write;
use std::process::ExitCode;

use scenario::SampleSource;

/// A source that keeps a copy of every sample it hands out.
struct Recording<S> {
    inner: S,
    samples: Vec<(scenario::Row, f32)>,
}

impl<S: SampleSource> SampleSource for Recording<S> {
    fn fill(&mut self, rows: &mut [scenario::Row], targets: &mut [f32]) -> Result<(), scenario::Failure> {
        self.inner.fill(rows, targets)?;
        self.samples.extend(rows.iter().copied().zip(targets.iter().copied()));
        Ok(())
    }
}

/// The training samples `tune_stream` consumes (recorded from a run of it), in the serial
/// wire format.
fn stream_samples() -> Result<Vec<u8>, scenario::Failure> {
    let (source, mut eval) = scenario::stream_sources();
    let mut recording = Recording {
        inner: source,
        samples: Vec::new(),
    };
    scenario::stream_run(&mut recording, &mut eval, |_, _| Ok(()))?;
    let mut out = b"BLV1".to_vec();
    out.extend_from_slice(&(recording.samples.len() as u32).to_le_bytes());
    for (row, t) in &recording.samples {
        for v in &row[..scenario::STREAM_FEATURES] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&t.to_le_bytes());
    }
    Ok(out)
}

fn main() -> ExitCode {
    let which = std::env::args().nth(1).unwrap_or_default();
    if which == "stream-samples" {
        let written = stream_samples()
            .map_err(|e| e.to_string())
            .and_then(|b| std::io::stdout().write_all(&b).map_err(|e| e.to_string()));
        return match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut out = String::new();
    let result = match which.as_str() {
        "quadratic" => scenario::tune_quadratic(&mut out).map(|_| ()),
        "logreg" => scenario::tune_logreg(&mut out).map(|_| ()),
        "stream" => {
            let (mut source, mut eval) = scenario::stream_sources();
            scenario::tune_stream(&mut out, &mut source, &mut eval, |_, _| Ok(())).map(|_| ())
        }
        _ => {
            eprintln!("usage: device_report quadratic|logreg|stream|stream-samples");
            return ExitCode::from(2);
        }
    };
    print!("{out}");
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
