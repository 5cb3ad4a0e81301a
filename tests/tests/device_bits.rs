//! The firmware's computations (`examples-cortex-m/src/scenario.rs`, included here by path)
//! run on the host: their results against closed forms, and — when `.ci/firmware` has
//! captured the firmware's reports — the host report against the device report, line for
//! line and bit for bit.
//!
//! `.ci/firmware` writes the QEMU output to `target/firmware/<target>/<bin>.out` and runs
//! this test with `BILEVEL_FIRMWARE_REPORTS=target/firmware`; with that variable set, a
//! missing report is a failure, so the comparison cannot pass silently. Without it the
//! comparison is skipped (the script also diffs the reports itself).

#[allow(dead_code)]
#[path = "../../examples-cortex-m/src/scenario.rs"]
mod scenario;

use std::path::PathBuf;

use bilevel::linalg;
use bilevel::problems::Quadratic;

/// The report lines that host and device share (device-only lines start with `device:`).
fn shared_lines(report: &str) -> Vec<&str> {
    report.lines().filter(|l| !l.starts_with("device:")).collect()
}

fn host_quadratic_report() -> (String, [scenario::QuadraticResult; 2]) {
    let mut out = String::new();
    let results = scenario::tune_quadratic(&mut out).unwrap();
    (out, results)
}

fn host_stream_report() -> (String, scenario::StreamResult) {
    let mut out = String::new();
    let (mut source, mut eval) = scenario::stream_sources();
    let mut steps = 0;
    let result = scenario::tune_stream(&mut out, &mut source, &mut eval, |t, _| {
        assert_eq!(t, steps);
        steps += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(steps, scenario::STREAM_STEPS);
    (out, result)
}

#[test]
fn quadratic_tuned_in_f32_reaches_the_f64_closed_form() {
    let (report, results) = host_quadratic_report();
    let q64 = Quadratic::<f64, 4, 6>::random(
        scenario::QUADRATIC_SEED,
        scenario::QUADRATIC_KAPPA,
        scenario::QUADRATIC_RHO,
    );
    let x_star = q64.solution().unwrap();
    let f_star = q64.value(&x_star).unwrap();
    for r in &results {
        let x = r.x.map(f64::from);
        let d = linalg::dist(&x, &x_star) / linalg::norm(&x_star);
        // Measured 6.8e-5 for both solvers: the f32 rounding of the instance and the
        // stopping tolerance, far inside the firmware's 1e-3 acceptance test.
        assert!(d < 2e-4, "relative distance to x*: {d:e}");
        assert!(
            (f64::from(r.value) - f_star).abs() < 1e-5 * f_star.abs(),
            "F = {}",
            r.value
        );
        assert!(r.report.iterations < scenario::QUADRATIC_MAX_ITERATIONS);
    }
    // NBO-GD (T = 1): per iteration one ∇_y g, two upper gradients, one cross product and
    // at most 2(T+1) − 1 = 3 Hessian-vector products (the first Newton product is skipped,
    // v = 0; a solve whose residual is already at roundoff stops early, measured 9 times in
    // 2964 iterations).
    let nbo = &results[0].report;
    let n = u64::from(nbo.iterations);
    assert_eq!(nbo.oracle_calls.lower_grad, n);
    assert_eq!(nbo.oracle_calls.upper_grad, 2 * n);
    assert_eq!(nbo.oracle_calls.lower_cross, n);
    assert!(nbo.oracle_calls.lower_hvp <= 3 * n && nbo.oracle_calls.lower_hvp + 20 >= 3 * n);
    assert!(report.contains("bits nbo-gd x: "));
}

#[test]
fn streamed_ridge_strength_improves_the_evaluation_loss() {
    let (_, r) = host_stream_report();
    assert!(r.loss_end < r.loss_start, "{} vs {}", r.loss_end, r.loss_start);
    // NSBO-SGD on the stream lowers the strength below 1 (measured ln λ = −1.23) and stays
    // inside the outer box.
    assert!(r.x < 0.0 && r.x > -8.0, "ln lambda = {}", r.x);
    // The tracked weights approach the teacher's (measured distance 0.44).
    let d = linalg::dist(&r.y, &scenario::STREAM_TEACHER);
    assert!(d < 0.6, "distance to the teacher: {d}");
}

#[test]
fn minibatch_ridge_hypergradient_matches_the_closed_form() {
    // On one minibatch: the exact hypergradient from the ridge solution, against central
    // differences of F(x) = f(y*(x)), both through the stream's sufficient statistics.
    let (mut source, _) = scenario::stream_sources();
    let train = scenario::LeastSquaresStats::collect(&mut source, scenario::STREAM_BATCH).unwrap();
    let val = scenario::LeastSquaresStats::collect(&mut source, scenario::STREAM_BATCH).unwrap();
    let (mut source, _) = scenario::stream_sources();
    let mut rows = [[0.0f32; scenario::STREAM_DY]; scenario::STREAM_BATCH];
    let mut targets = [0.0f32; scenario::STREAM_BATCH];
    let mut vrows = rows;
    let mut vtargets = targets;
    use scenario::SampleSource;
    source.fill(&mut rows, &mut targets).unwrap();
    source.fill(&mut vrows, &mut vtargets).unwrap();
    let problem = scenario::MinibatchRidge {
        train: bilevel::problems::Samples::new(&rows, &targets).unwrap(),
        validation: bilevel::problems::Samples::new(&vrows, &vtargets).unwrap(),
    };
    let x = [-0.5f32];
    let h = bilevel::reference::reference_hypergradient(
        &problem,
        &x,
        &[0.0; scenario::STREAM_DY],
        &bilevel::reference::ReferenceConfig::default(),
    )
    .unwrap();
    let f = |v: f32| val.loss(&train.ridge_solution(v).unwrap());
    let e = 1e-2f32;
    let fd = (f(x[0] + e) - f(x[0] - e)) / (2.0 * e);
    assert!(
        (h.hypergradient[0] - fd).abs() < 2e-3 * (1.0 + fd.abs()),
        "{} vs {fd}",
        h.hypergradient[0]
    );
}

/// The logistic firmware's answer, run on the host in `f32` (its bits are the device's, by
/// the test below): the run converges, and `ln λ` and the validation loss land on the `f64`
/// reference optimum of the same split (`bilevel_std::demo`, seed 2026, the data
/// `bilevel export` wrote for the firmware), within what `f32` resolves on this flat
/// optimum.
#[test]
fn logistic_firmware_run_lands_on_the_f64_optimum() {
    use bilevel::registry::Method;
    use bilevel_std::demo;
    let r = scenario::logreg_run().unwrap();
    let split = demo::breast_cancer_split(demo::SEED).unwrap();
    let best = demo::tune_with(&split, Method::Reference).unwrap();
    let loss = demo::validation_loss(&split, f64::from(r.ln_lambda)).unwrap();
    println!(
        "f32 firmware: {:?} after {} iterations, ln λ = {}, validation loss {} (f64 at its x: {loss}); f64 reference: ln λ = {}, loss {}",
        r.report.outcome, r.report.iterations, r.ln_lambda, r.validation_loss, best.ln_lambda, best.validation_loss
    );
    assert_eq!(r.report.outcome, bilevel::run::Outcome::Converged);
    // Measured: 1.9e-3 from the f64 optimum in ln λ, 5.5e-7 above its loss (the loss is flat:
    // 0.01 in ln λ costs about 1e-5 of it). A dense-BFGS f32 run once ended at ln λ = −10.11
    // and passed the firmware's own check (test accuracy above 0.9).
    assert!(
        (f64::from(r.ln_lambda) - best.ln_lambda).abs() < 0.01,
        "ln λ {} against {}",
        r.ln_lambda,
        best.ln_lambda
    );
    assert!(
        loss <= best.validation_loss * (1.0 + 1e-5),
        "{loss} against {}",
        best.validation_loss
    );
    // The firmware's own model is qNBO's lower iterate, not y*(x): its loss is within 1 %
    // (measured 0.17 %).
    assert!(
        (f64::from(r.validation_loss) - loss).abs() <= 1e-2 * loss,
        "f32 model's loss {} against {loss} at y*(x)",
        r.validation_loss
    );
}

#[test]
fn firmware_reports_equal_the_host_bit_for_bit() {
    // Only with reports captured by the same run: stale ones from an older build would
    // fail a plain `cargo test` for the wrong reason.
    let Some(dir) = std::env::var_os("BILEVEL_FIRMWARE_REPORTS").map(PathBuf::from) else {
        return;
    };
    let required = true;
    let (quadratic, _) = host_quadratic_report();
    let (stream, _) = host_stream_report();
    let mut logreg = String::new();
    scenario::tune_logreg(&mut logreg).unwrap();
    let mut compared = 0;
    let targets =
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect::<Vec<_>>());
    for target in targets.unwrap_or_default() {
        for (bin, host) in [
            ("tune_quadratic", &quadratic),
            ("tune_stream", &stream),
            ("tune_logreg", &logreg),
        ] {
            let path = target.join(format!("{bin}.out"));
            let Ok(device) = std::fs::read_to_string(&path) else {
                assert!(!required, "missing firmware report {}", path.display());
                continue;
            };
            assert_eq!(
                shared_lines(&device),
                shared_lines(host),
                "{} differs from the host",
                path.display()
            );
            assert!(device.lines().any(|l| l.starts_with("bits ")));
            compared += 1;
        }
        // The run cut by a reset and resumed: the result lines of the uninterrupted stream.
        let path = target.join("tune_resume.out");
        let Ok(device) = std::fs::read_to_string(&path) else {
            assert!(!required, "missing firmware report {}", path.display());
            continue;
        };
        let result = |r: &str| -> Vec<String> {
            r.lines()
                .filter(|l| l.starts_with("stream:") || l.starts_with("bits "))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            result(&device),
            result(&stream),
            "{} differs from the host",
            path.display()
        );
        assert!(device.contains("resume: boot: checkpoint 6 found, resuming at step 96"));
    }
    assert!(!required || compared > 0, "no firmware reports in {}", dir.display());
}

/// RAM standing in for NOR flash (erase to 0xFF, writes clear bits), which loses power
/// after `budget` more bytes erased or written: the write in progress stops there.
struct CutFlash {
    mem: Vec<u8>,
    budget: Option<usize>,
}

#[derive(Debug)]
struct PowerLost;

impl embedded_storage::nor_flash::NorFlashError for PowerLost {
    fn kind(&self) -> embedded_storage::nor_flash::NorFlashErrorKind {
        embedded_storage::nor_flash::NorFlashErrorKind::Other
    }
}

impl embedded_storage::nor_flash::ErrorType for CutFlash {
    type Error = PowerLost;
}

impl CutFlash {
    fn touch(&mut self, at: usize, f: impl Fn(u8) -> u8) -> Result<(), PowerLost> {
        match &mut self.budget {
            Some(0) => return Err(PowerLost),
            Some(b) => *b -= 1,
            None => {}
        }
        self.mem[at] = f(self.mem[at]);
        Ok(())
    }
}

impl embedded_storage::nor_flash::ReadNorFlash for CutFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), PowerLost> {
        let at = offset as usize;
        bytes.copy_from_slice(&self.mem[at..at + bytes.len()]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl embedded_storage::nor_flash::NorFlash for CutFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 256;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), PowerLost> {
        (from as usize..to as usize).try_for_each(|i| self.touch(i, |_| 0xFF))
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), PowerLost> {
        let at = offset as usize;
        bytes
            .iter()
            .enumerate()
            .try_for_each(|(i, &b)| self.touch(at + i, |old| old & b))
    }
}

#[test]
fn streamed_run_cut_while_writing_a_checkpoint_resumes_to_the_same_bits() {
    let (_, uninterrupted) = host_stream_report();
    // Power-on RAM is whatever it is: start from garbage, not from a clean erase.
    let garbage: Vec<u8> = (0..scenario::CHECKPOINT_FLASH_BYTES)
        .map(|i| (i * 37 % 251) as u8)
        .collect();
    // The first boot loses power while writing the checkpoint before step 112 (the 7th),
    // after `cut` bytes of the erase, the payload or the header (every byte of the save,
    // and past it); the second boot resumes.
    let slot = scenario::CHECKPOINT_SLOT_BYTES as usize;
    let save = slot + scenario::STREAM_CHECKPOINT_BYTES + bilevel::checkpoint::SLOT_HEADER_BYTES;
    for cut in 0..=save + 4 {
        let mut flash = CutFlash {
            mem: garbage.clone(),
            budget: None,
        };
        let mut events = Vec::new();
        let first = scenario::stream_resumable(&mut flash, |e, f: &mut CutFlash| {
            events.push(e);
            match e {
                scenario::ResumeEvent::Saving { step: 112, .. } => f.budget = Some(cut),
                scenario::ResumeEvent::Saved { step: 112, .. } => f.budget = None,
                _ => {}
            }
            Ok(())
        });
        assert_eq!(events[0], scenario::ResumeEvent::Fresh);
        flash.budget = None;
        let cut_short = first.is_err();
        let mut resumed = Vec::new();
        let second = scenario::stream_resumable(&mut flash, |e, _: &mut CutFlash| {
            resumed.push(e);
            Ok(())
        })
        .unwrap();
        if cut_short {
            // The torn record is ignored: the step-96 checkpoint (the 6th) is the newest.
            assert_eq!(resumed[0], scenario::ResumeEvent::Resumed { sequence: 6, step: 96 });
        } else {
            // The power lasted through the write (and the rest of the run).
            assert_eq!(first.unwrap(), uninterrupted);
            assert!(matches!(resumed[0], scenario::ResumeEvent::Resumed { step: 192, .. }));
        }
        assert_eq!(second, uninterrupted, "cut after {cut} bytes");
        assert_eq!(second.x.to_bits(), uninterrupted.x.to_bits());
    }
}
