//! Compares NBO-GD/NBO-CG with the deterministic baselines (AID-CG, AID-Neumann, ITD,
//! AmIGO with Q = 1 and Q = 10): oracle calls by kind and wall time until the exact
//! hypergradient norm falls to `1e-6` of its start, and the final upper value.
//!
//! ```text
//! cargo run --release -p bilevel-tests --example compare [logistic]
//! ```
//!
//! Every method gets its outer step from a grid `c/L_Φ` (the one reaching the target with
//! the fewest oracle calls in total); inner steps are `1/L`. Wall time is measured on a
//! second, unmonitored run of exactly the iterations the first one needed (best of three).
//! A problem is a [`Case`]: add one by building a `Case` and calling [`compare`].

use bilevel::algo::aid::{Aid, AidConfig};
use bilevel::algo::itd::{ItdConfig, ItdReverse};
use bilevel::algo::nbo::{Nbo, NboConfig};
use bilevel::algo::qnbo::{QnboBfgs, QnboConfig, QnboSr1};
use bilevel::linalg;
use bilevel::problem::Problem;
use bilevel::problems::Quadratic;
use bilevel::run::Solver;
use bilevel_tests::runs::{TargetRun, run_to_target, time_iterations};

/// Outer steps tried, as multiples of `1/L_Φ`.
const STEP_GRID: [f64; 10] = [1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001];

/// One problem to compare the methods on.
struct Case<'a, P, const DX: usize, const DY: usize> {
    name: &'static str,
    problem: &'a P,
    x0: [f64; DX],
    y0: [f64; DY],
    /// Lipschitz constant of `∇_y g` (inner steps are `1/L`).
    lower_lipschitz: f64,
    /// Lipschitz constant of `∇F` (outer steps are `c/L_Φ`).
    hypergradient_lipschitz: f64,
    /// The exact hypergradient.
    hypergradient: &'a dyn Fn(&[f64; DX]) -> [f64; DX],
    /// `F(x) = f(x, y*(x))`.
    value: &'a dyn Fn(&[f64; DX]) -> f64,
    /// Relative hypergradient-norm target.
    target: f64,
    max_iterations: u32,
}

/// One row of the table.
fn measure<P, S, const DX: usize, const DY: usize>(case: &Case<'_, P, DX, DY>, name: &str, make: impl Fn() -> S)
where
    P: Problem<f64, DX, DY>,
    S: Solver<f64, DX, DY>,
{
    let mut best: Option<(f64, TargetRun<DX>)> = None;
    let mut closest: Option<(f64, TargetRun<DX>)> = None;
    for c in STEP_GRID {
        let alpha = c / case.hypergradient_lipschitz;
        let run = run_to_target(
            &mut make(),
            case.problem,
            case.x0,
            alpha,
            case.max_iterations,
            case.hypergradient,
            case.target,
        );
        match (&run.reached, &best) {
            (Some(r), Some((_, b))) if b.reached.is_some_and(|b| b.calls.total() <= r.calls.total()) => {}
            (Some(_), _) => best = Some((c, run)),
            (None, _) => {
                if closest
                    .as_ref()
                    .is_none_or(|(_, b)| run.best_relative < b.best_relative)
                {
                    closest = Some((c, run));
                }
            }
        }
    }
    let g0 = linalg::norm(&(case.hypergradient)(&case.x0));
    match best {
        Some((c, run)) => {
            let Some(r) = run.reached else { return };
            let alpha = c / case.hypergradient_lipschitz;
            let mut seconds = f64::INFINITY;
            let mut x_end = run.x;
            for _ in 0..3 {
                if let Ok((t, x)) = time_iterations(&mut make(), case.problem, case.x0, alpha, r.iterations) {
                    seconds = seconds.min(t.as_secs_f64());
                    x_end = x;
                }
            }
            let rel = linalg::norm(&(case.hypergradient)(&x_end)) / g0;
            println!(
                "| {name} | {c} | {} | {} | {} | {} | {} | {} | {:.2} | {:.10e} | {:.1e} |",
                r.iterations,
                r.calls.lower_grad,
                r.calls.upper_grad,
                r.calls.lower_hvp,
                r.calls.lower_cross,
                r.calls.total(),
                seconds * 1e3,
                (case.value)(&x_end),
                rel,
            );
        }
        None => {
            let Some((c, run)) = closest else { return };
            let how = match run.outcome {
                _ if run.diverged => "diverged",
                Ok(bilevel::run::Outcome::IterationBudget) => "budget",
                _ => "stalled",
            };
            println!(
                "| {name} | {c} | not reached ({how}) | | | | | | | {:.10e} | best {:.1e} |",
                (case.value)(&run.x),
                run.best_relative,
            );
        }
    }
}

/// Every method on one case.
fn compare<P: Problem<f64, DX, DY>, const DX: usize, const DY: usize>(case: &Case<'_, P, DX, DY>) {
    let step = 1.0 / case.lower_lipschitz;
    let y0 = case.y0;
    println!(
        "\n### {}: L = {:.4}, L_Φ = {:.4}, target ‖∇F(x)‖ ≤ {:e}·‖∇F(x₀)‖, at most {} iterations\n",
        case.name, case.lower_lipschitz, case.hypergradient_lipschitz, case.target, case.max_iterations
    );
    println!(
        "| method | step·L_Φ | iterations | ∇_y g | ∇f | ∇²_yy g·v | ∇²_xy g·v | total | time (ms) | final F | final ‖∇F‖ rel |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    measure(case, "NBO-GD (T=1)", || {
        Nbo::new(NboConfig::gradient_descent(step, 1), y0)
    });
    measure(case, "NBO-CG (T=2)", || Nbo::new(NboConfig::conjugate_gradient(2), y0));
    measure(case, "NBO-CG (T=5)", || Nbo::new(NboConfig::conjugate_gradient(5), y0));
    measure(case, "AID-CG (D=N=5)", || {
        Aid::new(AidConfig::conjugate_gradient(step, 5, 5), y0)
    });
    measure(case, "AID-Neumann (D=5, Q=50)", || {
        Aid::new(AidConfig::neumann(step, 5, step, 50), y0)
    });
    measure(case, "ITD (D=50)", || {
        ItdReverse::<f64, DY, 50>::new(
            ItdConfig {
                lower_step: step,
                lower_steps: 50,
            },
            y0,
        )
    });
    measure(case, "AmIGO-GD (T=Q=1)", || {
        Aid::new(AidConfig::amigo_gd(step, 1, 1), y0)
    });
    measure(case, "AmIGO-GD (T=Q=10)", || {
        Aid::new(AidConfig::amigo_gd(step, 10, 10), y0)
    });
    let qnbo = QnboConfig {
        warmup_step: step,
        ..QnboConfig::default()
    };
    measure(case, "qNBO-BFGS (P=2, T=3, Q_k≤32)", || QnboBfgs::new(qnbo, y0));
    measure(case, "qNBO-SR1 (P=2, T=3, Q_k≤32)", || {
        QnboSr1::<f64, DY, 34>::new(qnbo, y0)
    });
}

/// `‖∇F(x + εv) − ∇F(x − εv)‖ / 2ε‖v‖` maximized by a few power steps: an estimate of `L_Φ`
/// where no closed form exists.
fn estimate_lipschitz<const DX: usize>(grad: &dyn Fn(&[f64; DX]) -> [f64; DX], x: &[f64; DX]) -> f64 {
    let mut v = [1.0 / libm::sqrt(DX as f64); DX];
    let mut l = 0.0;
    for _ in 0..8 {
        let eps = 1e-4;
        let (mut xp, mut xm) = (*x, *x);
        linalg::axpy(eps, &v, &mut xp);
        linalg::axpy(-eps, &v, &mut xm);
        let mut hv = [0.0; DX];
        linalg::sub(&grad(&xp), &grad(&xm), &mut hv);
        linalg::scale(0.5 / eps, &mut hv);
        l = linalg::norm(&hv);
        if l == 0.0 {
            break;
        }
        v = hv;
        linalg::scale(1.0 / l, &mut v);
    }
    l
}

/// Per-feature L2 logistic regression on the bundled breast-cancer data (the demo's split):
/// ∇F and F from the reference solver, solved to tolerance at every point.
fn logistic_case() {
    use bilevel::problems::{Logistic, Samples};
    use bilevel::reference::{ReferenceConfig, reference_hypergradient, reference_value};
    const D: usize = 30;
    let split = bilevel_std::demo::breast_cancer_split(bilevel_std::demo::SEED).unwrap();
    let train = Samples::new(&split.train.rows, &split.train.targets).unwrap();
    let val = Samples::new(&split.validation.rows, &split.validation.targets).unwrap();
    let p: Logistic<'_, f64, D, D, { D + 1 }> = Logistic::new(train, val).unwrap();
    let cfg = ReferenceConfig::default();
    let grad =
        |x: &[f64; D]| reference_hypergradient(&p, x, &[0.0; D + 1], &cfg).map_or([f64::NAN; D], |r| r.hypergradient);
    let value = |x: &[f64; D]| reference_value(&p, x, &[0.0; D + 1], &cfg).map_or(f64::NAN, |v| v.0);
    let x0 = [-4.0; D];
    compare(&Case {
        name: "Logistic regression, per-feature L2 (breast cancer, dx = 30, dy = 31, x₀ = −4)",
        problem: &p,
        x0,
        y0: [0.0; D + 1],
        lower_lipschitz: p.lower_lipschitz(&x0),
        hypergradient_lipschitz: estimate_lipschitz(&grad, &x0),
        hypergradient: &grad,
        value: &value,
        target: 1e-2,
        max_iterations: 400,
    });
}

fn main() {
    // `compare logistic` runs only the logistic-regression case.
    if std::env::args().nth(1).as_deref() == Some("logistic") {
        logistic_case();
        return;
    }
    const DX: usize = 5;
    const DY: usize = 20;
    let q = Quadratic::<f64, DX, DY>::random(0, 1000.0, 1.0);
    // ∇F is affine on the quadratic: ∇F(x) = M x + m, with M and m from the closed form at
    // 0 and the unit vectors (exact up to rounding, and cheap enough to check every step).
    let m0 = q.hypergradient(&[0.0; DX]).unwrap_or([f64::NAN; DX]);
    let mut columns = [[0.0; DX]; DX];
    for (j, col) in columns.iter_mut().enumerate() {
        let mut e = [0.0; DX];
        e[j] = 1.0;
        *col = q.hypergradient(&e).unwrap_or([f64::NAN; DX]);
        for i in 0..DX {
            col[i] -= m0[i];
        }
    }
    let grad = |x: &[f64; DX]| {
        let mut g = m0;
        for j in 0..DX {
            linalg::axpy(x[j], &columns[j], &mut g);
        }
        g
    };
    let value = |x: &[f64; DX]| q.value(x).unwrap_or(f64::NAN);
    let x_star = q.solution().unwrap_or([f64::NAN; DX]);
    compare(&Case {
        name: "Quadratic (κ = 1000, dx = 5, dy = 20, ρ = 1, seed 0)",
        problem: &q,
        x0: [0.0; DX],
        y0: [0.0; DY],
        lower_lipschitz: q.lower_lipschitz(),
        hypergradient_lipschitz: q.hypergradient_lipschitz().unwrap_or(f64::NAN),
        hypergradient: &grad,
        value: &value,
        target: 1e-6,
        max_iterations: 400_000,
    });
    println!("\nF(x*) = {:.10e}", value(&x_star));
    logistic_case();
}
