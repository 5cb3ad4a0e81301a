//! Prints on the host the reports the firmware in `examples-cortex-m` prints on the device,
//! computed by the same source file (`examples-cortex-m/src/scenario.rs`). `.ci/firmware`
//! diffs the two.
//!
//! ```text
//! cargo run --release -p bilevel-tests --example device_report -- quadratic
//! cargo run --release -p bilevel-tests --example device_report -- stream
//! ```

#[allow(dead_code)]
#[path = "../../examples-cortex-m/src/scenario.rs"]
mod scenario;

use std::process::ExitCode;

fn main() -> ExitCode {
    let which = std::env::args().nth(1).unwrap_or_default();
    let mut out = String::new();
    let result = match which.as_str() {
        "quadratic" => scenario::tune_quadratic(&mut out).map(|_| ()),
        "stream" => {
            let (mut source, mut eval) = scenario::stream_sources();
            scenario::tune_stream(&mut out, &mut source, &mut eval, |_, _| Ok(())).map(|_| ())
        }
        _ => {
            eprintln!("usage: device_report quadratic|stream");
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
