//! The computations of the C example `capi/c/tune.c` through the Rust API, at their own
//! sizes: prints the same `bits …` lines, which `.ci/capi` compares with the C program's
//! output on the host and on the Cortex-M4F.
//!
//! ```text
//! cargo run --release -p bilevel-tests --example capi_reference
//! ```

use bilevel::algo::nbo::{Nbo, NboConfig};
use bilevel::problem::Counted;
use bilevel::problems::{Logistic, Ridge, Samples};
use bilevel::registry::{Method, SettingError, Settings, Start, Visit};
use bilevel::run::{Adaptive, Budget, Driver, Outer, Solver, Stopping};
use bilevel::schedule::Schedule;
use bilevel::{Batch, Error, Oracle, Problem};

const A: [[f32; 3]; 3] = [[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]];
const B: [[f32; 2]; 3] = [[1.0, 0.0], [0.5, -1.0], [0.0, 2.0]];
const C: [f32; 3] = [0.1, -0.2, 0.3];
const TARGET: [f32; 3] = [1.0, -1.0, 0.5];
const RHO: f32 = 0.1;

/// The C example's quadratic, each oracle in the C code's order of operations; `fail_after`
/// lower gradients it fails with code 42, like the C example's failing callback.
struct CQuadratic {
    lower_grads: core::cell::Cell<u32>,
    fail_after: u32,
}

impl Problem<f32, 2, 3> for CQuadratic {
    fn lower_grad(&self, x: &[f32; 2], y: &[f32; 3], _: Batch, out: &mut [f32; 3]) -> Result<(), Error> {
        if self.lower_grads.get() >= self.fail_after {
            return Err(Error::OracleFailed {
                oracle: Oracle::LowerGrad,
                code: 42,
            });
        }
        self.lower_grads.set(self.lower_grads.get() + 1);
        for i in 0..3 {
            let mut s = 0.0f32;
            for j in 0..3 {
                s += A[i][j] * y[j];
            }
            let mut bx = 0.0f32;
            for k in 0..2 {
                bx += B[i][k] * x[k];
            }
            out[i] = s - bx + C[i];
        }
        Ok(())
    }
    fn upper_grad(
        &self,
        x: &[f32; 2],
        y: &[f32; 3],
        _: Batch,
        gx: &mut [f32; 2],
        gy: &mut [f32; 3],
    ) -> Result<(), Error> {
        for k in 0..2 {
            gx[k] = RHO * x[k];
        }
        for i in 0..3 {
            gy[i] = y[i] - TARGET[i];
        }
        Ok(())
    }
    fn lower_hvp(&self, _: &[f32; 2], _: &[f32; 3], v: &[f32; 3], _: Batch, out: &mut [f32; 3]) -> Result<(), Error> {
        for i in 0..3 {
            let mut s = 0.0f32;
            for j in 0..3 {
                s += A[i][j] * v[j];
            }
            out[i] = s;
        }
        Ok(())
    }
    fn lower_cross(&self, _: &[f32; 2], _: &[f32; 3], v: &[f32; 3], _: Batch, out: &mut [f32; 2]) -> Result<(), Error> {
        for k in 0..2 {
            let mut s = 0.0f32;
            for i in 0..3 {
                s += B[i][k] * v[i];
            }
            out[k] = -s;
        }
        Ok(())
    }
}

fn bits(name: &str, v: &[f32]) {
    let hex: Vec<String> = v.iter().map(|f| format!("{:08x}", f.to_bits())).collect();
    println!("{name} {}", hex.join(" "));
}

/// `bl_run` with a fixed outer step and no tracking: the driver steps until `‖h‖` has fallen
/// to `tol` times the first estimate's and the lower residual as far (never for `tol < 0`),
/// the budget, or an error (steps before it are kept).
fn run<P: Problem<f32, DX, DY>, S: Solver<f32, DX, DY>, const DX: usize, const DY: usize>(
    solver: &mut S,
    p: &P,
    x: &mut [f32; DX],
    outer: &Outer<f32>,
    max: u32,
    tol: f32,
) -> Result<(), Error> {
    let stopping = if tol > 0.0 {
        Stopping::relative(tol)
    } else {
        Stopping::never()
    };
    let mut driver = Driver::new(*outer, Budget::iterations(max), stopping)?;
    driver.run(solver, &Counted::new(p), x, |_, _, _| {
        core::ops::ControlFlow::Continue(())
    })?;
    Ok(())
}

/// Runs the logistic problem from `ln λ = −2` with the solver it is handed, as the C example.
struct Logreg<'a, P>(&'a P);

impl<P: Problem<f32, DX, 32>, const DX: usize> Visit<f32, DX, 32> for Logreg<'_, P> {
    type Output = (f32, [f32; 32]);
    fn visit<S: Solver<f32, DX, 32> + Clone + std::fmt::Debug>(self, mut solver: S) -> Self::Output {
        let outer = Outer {
            schedule: Schedule::Constant(2.0),
            bounds: Some((-12.0, 12.0)),
        };
        let mut lam = [0.0f32; DX];
        lam[0] = -2.0;
        run(&mut solver, self.0, &mut lam, &outer, 300, 1e-5).unwrap();
        (lam[0], *solver.lower())
    }
}

/// One strength seen as the C library's 32 hyperparameters (the rest inert): PZOBO draws its
/// random directions in the space of `x`, so its bits depend on that space's size.
struct Padded<P>(P);

impl<P: Problem<f32, 1, 32>> Problem<f32, 32, 32> for Padded<P> {
    fn lower_grad(&self, x: &[f32; 32], y: &[f32; 32], b: Batch, out: &mut [f32; 32]) -> Result<(), Error> {
        self.0.lower_grad(&[x[0]], y, b, out)
    }
    fn upper_grad(
        &self,
        x: &[f32; 32],
        y: &[f32; 32],
        b: Batch,
        gx: &mut [f32; 32],
        gy: &mut [f32; 32],
    ) -> Result<(), Error> {
        let mut g = [0.0];
        self.0.upper_grad(&[x[0]], y, b, &mut g, gy)?;
        *gx = [0.0; 32];
        gx[0] = g[0];
        Ok(())
    }
    fn samples(&self) -> (usize, usize) {
        self.0.samples()
    }
}

/// The methods of the C example's logistic runs, one of every family.
const LOGISTIC_METHODS: [Method; 12] = [
    Method::NboGd,
    Method::NsboSgd,
    Method::QnboLbfgs,
    Method::QnboSr1,
    Method::Shine,
    Method::AidCg,
    Method::AmigoGd,
    Method::Itd,
    Method::Soba,
    Method::StocBio,
    Method::F2sa,
    Method::Pzobo,
];

fn hash(mut v: u32) -> u32 {
    v ^= v >> 16;
    v = v.wrapping_mul(0x7feb_352d);
    v ^= v >> 15;
    v = v.wrapping_mul(0x846c_a68b);
    v ^= v >> 16;
    v
}

/// The C example's generated rows (31 columns, 4 used) and labels.
fn rows(n: u32, salt: u32) -> (Vec<[f32; 31]>, Vec<f32>) {
    let w = [3i32, -2, 1, 0];
    (0..n)
        .map(|i| {
            let mut score = (hash(salt.wrapping_add(1000 * i)) % 8001) as i32 - 4000;
            let mut x = [0.0f32; 31];
            for j in 0..4u32 {
                let q = (hash(salt.wrapping_add(1000 * i).wrapping_add(1 + j)) % 2001) as i32 - 1000;
                x[j as usize] = q as f32 / 500.0;
                score += w[j as usize] * q;
            }
            (x, if score > 0 { 1.0 } else { 0.0 })
        })
        .unzip()
}

fn main() {
    let quad = CQuadratic {
        lower_grads: 0.into(),
        fail_after: u32::MAX,
    };
    let mut nbo = Nbo::new(NboConfig::gradient_descent(0.2f32, 1), [0.0; 3]);
    let mut x = [0.0f32; 2];
    run(&mut nbo, &quad, &mut x, &Outer::constant(0.3), 400, 1e-6).unwrap();
    bits("bits quadratic-nbo-gd x", &x);
    bits("bits quadratic-nbo-gd y", Solver::<f32, 2, 3>::lower(&nbo));

    let failing = CQuadratic {
        lower_grads: 0.into(),
        fail_after: 3,
    };
    let mut nbo = Nbo::new(NboConfig::gradient_descent(0.2f32, 1), [0.0; 3]);
    let mut x = [0.0f32; 2];
    let e = run(&mut nbo, &failing, &mut x, &Outer::constant(0.3), 10, -1.0).unwrap_err();
    assert_eq!(
        e,
        Error::OracleFailed {
            oracle: Oracle::LowerGrad,
            code: 42
        }
    );
    bits("bits failing x", &x);

    let (tx, tt) = rows(96, 1);
    let (vx, vt) = rows(64, 777_777);
    let p: Logistic<'_, f32, 31, 1, 32> =
        Logistic::new(Samples::new(&tx, &tt).unwrap(), Samples::new(&vx, &vt).unwrap()).unwrap();
    // The C library's defaults: its steps are 1/L at the start (at the default batch size), stored as floats.
    let smoothness = p.lower_smoothness(&[-2.0]);
    for m in LOGISTIC_METHODS {
        let mut settings = Settings::new(m, smoothness);
        let defaults: Vec<(&str, f64)> = settings.iter().map(|(s, v)| (s.key, f64::from(v as f32))).collect();
        for (key, v) in defaults {
            settings.set(key, v).unwrap();
        }
        for (key, v) in [
            ("lower_step", 0.25),
            ("warmup_step", 0.25),
            ("rho", 0.25),
            ("batch_size", 16.0),
        ] {
            match settings.set(key, v) {
                Ok(()) | Err(SettingError::Unknown) => {}
                Err(e) => panic!("{key}: {e}"),
            }
        }
        let start = Start::new([0.0; 32], p.samples(), 1);
        let (lam, w) = if m == Method::Pzobo {
            m.build(&settings, &start, Logreg(&Padded(&p))).unwrap()
        } else {
            m.build(&settings, &start, Logreg(&p)).unwrap()
        };
        let label = format!("bits logistic-{}", m.name());
        bits(&label, &[lam]);
        bits(&label, &w[..4]);
    }

    // The defaults alone: steps 1/L at ln λ = 0, the adaptive outer step, no box.
    let mut settings = Settings::new(Method::NboCg, p.lower_smoothness(&[0.0]));
    let defaults: Vec<(&str, f64)> = settings.iter().map(|(s, v)| (s.key, f64::from(v as f32))).collect();
    for (key, v) in defaults {
        settings.set(key, v).unwrap();
    }
    struct Defaults<'a, P>(&'a P);
    impl<P: Problem<f32, 1, 32>> Visit<f32, 1, 32> for Defaults<'_, P> {
        type Output = f32;
        fn visit<S: Solver<f32, 1, 32> + Clone + std::fmt::Debug>(self, mut solver: S) -> f32 {
            let estimates = Method::NboCg.info().estimates;
            let rule = Adaptive::for_estimates(estimates, estimates.default_tracking(), 1.0);
            let tracking = estimates.default_tracking() as f32;
            let mut driver = Driver::adaptive(rule, None, Budget::iterations(300), Stopping::relative(1e-5))
                .and_then(|d| d.tracking(tracking))
                .unwrap();
            let mut lam = [0.0f32];
            let r = driver
                .run(&mut solver, &Counted::new(self.0), &mut lam, |_, _, _| {
                    core::ops::ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(r.outcome, bilevel::run::Outcome::Converged);
            lam[0]
        }
    }
    let start = Start::new([0.0; 32], p.samples(), 1);
    let lam = Method::NboCg.build(&settings, &start, Defaults(&p)).unwrap();
    bits("bits logistic-defaults", &[lam]);

    let rt: Vec<f32> = tx
        .iter()
        .zip(&tt)
        .map(|(x, t)| x[0] - 0.5 * x[1] + 2.0 * (t - 0.5))
        .collect();
    let rv: Vec<f32> = vx.iter().map(|x| x[0] - 0.5 * x[1]).collect();
    let ridge: Ridge<'_, f32, 31, 1, 32> =
        Ridge::new(Samples::new(&tx, &rt).unwrap(), Samples::new(&vx, &rv).unwrap()).unwrap();
    let mut nbo = Nbo::new(NboConfig::gradient_descent(0.2f32, 1), [0.0; 32]);
    let mut lam = [0.0f32];
    let outer = Outer {
        schedule: Schedule::Constant(1.0),
        bounds: Some((-12.0, 12.0)),
    };
    run(&mut nbo, &ridge, &mut lam, &outer, 300, 1e-6).unwrap();
    bits("bits ridge-nbo-gd", &lam);
    bits("bits ridge-nbo-gd", &Solver::<f32, 1, 32>::lower(&nbo)[..4]);
}
