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
//! `stream-samples` writes the training stream of `stream` in the serial wire format of
//! `examples-cortex-m/src/serial.rs` (the magic `BLV1`, the sample count as `u32`, then per
//! sample the features and the target as little-endian `f32`), for `tune_stream_uart`.

#[allow(dead_code)]
#[path = "../../examples-cortex-m/src/scenario.rs"]
mod scenario;

use std::io::Write;
use std::process::ExitCode;

use scenario::SampleSource;

/// The training samples `tune_stream` consumes, in the serial wire format.
fn stream_samples() -> Vec<u8> {
    let (mut source, _) = scenario::stream_sources();
    let n = scenario::STREAM_STEPS as usize * 2 * scenario::STREAM_BATCH;
    let mut out = b"BLV1".to_vec();
    out.extend_from_slice(&(n as u32).to_le_bytes());
    let mut rows = [[0.0f32; scenario::STREAM_DY]; scenario::STREAM_BATCH];
    let mut targets = [0.0f32; scenario::STREAM_BATCH];
    for _ in 0..n / scenario::STREAM_BATCH {
        if source.fill(&mut rows, &mut targets).is_err() {
            unreachable!("the generator never fails");
        }
        for (row, t) in rows.iter().zip(&targets) {
            for v in &row[..scenario::STREAM_FEATURES] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&t.to_le_bytes());
        }
    }
    out
}

fn main() -> ExitCode {
    let which = std::env::args().nth(1).unwrap_or_default();
    if which == "stream-samples" {
        return match std::io::stdout().write_all(&stream_samples()) {
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
