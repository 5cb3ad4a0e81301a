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
    }
    assert!(!required || compared > 0, "no firmware reports in {}", dir.display());
}
