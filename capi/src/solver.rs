//! A solver in caller-provided memory: the method's state, the hyperparameters `x`, the outer
//! step rule and the oracle-call counts, checked by a magic word on every call.

use bilevel::algo::nbo::{Nbo, NboConfig};
use bilevel::algo::nsbo::{Nsbo, NsboConfig};
use bilevel::algo::qnbo::{QnboConfig, QnboLbfgs, QnboSr1};
use bilevel::problem::{Counted, OracleCounts};
use bilevel::run::{Diagnostics, Outer, Solver, StepReport, step};
use bilevel::sample::{Minibatches, Order};
use bilevel::{Error, Problem};

use crate::problem::{DX, DY};
use crate::status::{BL_ERR_CONFIG, BL_ERR_KIND};

/// Method: NBO-GD (inexact Newton, gradient-descent inner solver; deterministic).
pub const BL_METHOD_NBO_GD: u32 = 1;
/// Method: NSBO-SGD (NBO-GD on minibatches, shuffled epochs; the stochastic outer loop).
pub const BL_METHOD_NSBO_SGD: u32 = 2;
/// Method: qNBO-BFGS (the BFGS two-loop recursion on the newest 8 secant pairs; no
/// Hessian-vector products). `inner_step` is the warm-up step, `inner_steps` the quasi-Newton
/// steps per outer step.
pub const BL_METHOD_QNBO_BFGS: u32 = 3;
/// Method: qNBO-SR1 (matrix-free inverse SR1 on up to 16 pairs).
pub const BL_METHOD_QNBO_SR1: u32 = 4;

/// Secant pairs of qNBO-BFGS in the C library.
const BFGS_PAIRS: usize = 8;
/// Secant pairs of qNBO-SR1 in the C library.
const SR1_PAIRS: usize = 16;

/// Solver configuration. `bl_default_config` fills one.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlConfig {
    /// `BL_METHOD_*`.
    pub method: u32,
    /// Inner step `β` of the Newton/adjoint solves (`≤ 1/L` of `∇_y g`). Default 0.1.
    pub inner_step: f32,
    /// Inner steps `T` per outer step: NBO-GD takes `T + 1` (default 1), qNBO `T`
    /// quasi-Newton steps (default 3).
    pub inner_steps: u32,
    /// Outer step `α` on `x`. Default 0.1.
    pub outer_step: f32,
    /// Minibatch size of stochastic methods. Default 32.
    pub batch_size: u32,
    /// Seed of stochastic methods. Default 1.
    pub seed: u64,
    /// Non-zero: keep every `x_i` in `[lower_bound, upper_bound]`. Default 0.
    pub use_bounds: u32,
    /// Lower end of the box.
    pub lower_bound: f32,
    /// Upper end of the box.
    pub upper_bound: f32,
}

impl BlConfig {
    pub(crate) fn default_for(method: u32) -> Self {
        let qnbo = method == BL_METHOD_QNBO_BFGS || method == BL_METHOD_QNBO_SR1;
        BlConfig {
            method,
            inner_step: 0.1,
            inner_steps: if qnbo { 3 } else { 1 },
            outer_step: 0.1,
            batch_size: 32,
            seed: 1,
            use_bounds: 0,
            lower_bound: -12.0,
            upper_bound: 12.0,
        }
    }
}

/// What a step or run did, for the caller.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlReport {
    /// Outer iterations taken by this solver so far.
    pub iterations: u32,
    /// `‖h‖` of the last hypergradient estimate.
    pub hypergradient_norm: f32,
    /// Step size of the last outer step.
    pub step_size: f32,
    /// Inner steps of the last outer step.
    pub inner_steps: u32,
    /// Lower-gradient calls so far.
    pub lower_grad_calls: u64,
    /// Upper-gradient calls so far.
    pub upper_grad_calls: u64,
    /// Hessian-vector products so far.
    pub lower_hvp_calls: u64,
    /// Cross products so far.
    pub lower_cross_calls: u64,
}

/// The method's state. No heap on a device: the enum is as large as its largest variant,
/// which is what `bl_solver_size` reports.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
enum Method {
    NboGd(Nbo<f32, DY>),
    NsboSgd(Nsbo<f32, DX, DY, Minibatches>),
    QnboBfgs(QnboLbfgs<f32, DY, BFGS_PAIRS>),
    QnboSr1(QnboSr1<f32, DY, SR1_PAIRS>),
}

impl Solver<f32, DX, DY> for Method {
    fn hypergradient<P: Problem<f32, DX, DY>>(
        &mut self,
        p: &P,
        x: &[f32; DX],
        h: &mut [f32; DX],
    ) -> Result<Diagnostics, Error> {
        match self {
            Method::NboGd(s) => s.hypergradient(p, x, h),
            Method::NsboSgd(s) => s.hypergradient(p, x, h),
            Method::QnboBfgs(s) => s.hypergradient(p, x, h),
            Method::QnboSr1(s) => s.hypergradient(p, x, h),
        }
    }
    fn lower(&self) -> &[f32; DY] {
        match self {
            Method::NboGd(s) => Solver::<f32, DX, DY>::lower(s),
            Method::NsboSgd(s) => s.lower(),
            Method::QnboBfgs(s) => Solver::<f32, DX, DY>::lower(s),
            Method::QnboSr1(s) => Solver::<f32, DX, DY>::lower(s),
        }
    }
}

/// "BLVS": marks initialized solver memory.
pub(crate) const MAGIC: u32 = 0x5356_4C42;

/// The solver memory's contents.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub(crate) magic: u32,
    pub(crate) dx: u32,
    pub(crate) dy: u32,
    iteration: u32,
    x: [f32; DX],
    outer: Outer<f32>,
    method: Method,
    calls: OracleCounts,
}

impl Slot {
    /// A solver at `x0` (the first `dx` entries used) for a problem with `samples`.
    pub(crate) fn new(cfg: &BlConfig, x0: &[f32], dy: u32, samples: (usize, usize)) -> Result<Self, u32> {
        let mut x = [0.0; DX];
        x.iter_mut().zip(x0).for_each(|(o, v)| *o = *v);
        if !x0.iter().all(|v| v.is_finite()) {
            return Err(BL_ERR_CONFIG);
        }
        let outer = Outer {
            schedule: bilevel::schedule::Schedule::Constant(cfg.outer_step),
            bounds: (cfg.use_bounds != 0).then_some((cfg.lower_bound, cfg.upper_bound)),
        };
        let code = |e: Error| crate::status::code(&e);
        outer.validate().map_err(code)?;
        let method = match cfg.method {
            BL_METHOD_NBO_GD => {
                let c = NboConfig::gradient_descent(cfg.inner_step, cfg.inner_steps);
                c.validate().map_err(code)?;
                Method::NboGd(Nbo::new(c, [0.0; DY]))
            }
            BL_METHOD_NSBO_SGD => {
                let c = NsboConfig::constant(cfg.inner_step, cfg.inner_steps);
                c.validate().map_err(code)?;
                let [lower, upper] =
                    Minibatches::for_levels(samples, cfg.batch_size as usize, Order::Shuffled, cfg.seed)
                        .map_err(code)?;
                Method::NsboSgd(Nsbo::new(c, [0.0; DY], lower, upper))
            }
            BL_METHOD_QNBO_BFGS | BL_METHOD_QNBO_SR1 => {
                let steps = cfg.inner_steps.max(1);
                let c = QnboConfig {
                    warmup_step: cfg.inner_step,
                    qn_steps: steps,
                    ..QnboConfig::default()
                };
                c.validate().map_err(code)?;
                if cfg.method == BL_METHOD_QNBO_BFGS {
                    Method::QnboBfgs(QnboLbfgs::new(c, [0.0; DY]))
                } else {
                    Method::QnboSr1(QnboSr1::new(c, [0.0; DY]))
                }
            }
            _ => return Err(BL_ERR_KIND),
        };
        Ok(Slot {
            magic: MAGIC,
            dx: x0.len() as u32,
            dy,
            iteration: 0,
            x,
            outer,
            method,
            calls: OracleCounts::default(),
        })
    }

    /// One outer step on `p`; on error nothing changes.
    pub(crate) fn step<P: Problem<f32, DX, DY>>(&mut self, p: &P) -> Result<BlReport, Error> {
        let counted = Counted::new(p);
        let r: StepReport<f32> = step(&mut self.method, &counted, &mut self.x, &self.outer, self.iteration)?;
        self.iteration += 1;
        let c = counted.counts();
        self.calls.lower_grad += c.lower_grad;
        self.calls.upper_grad += c.upper_grad;
        self.calls.lower_hvp += c.lower_hvp;
        self.calls.lower_cross += c.lower_cross;
        Ok(BlReport {
            iterations: self.iteration,
            hypergradient_norm: r.hypergradient_norm,
            step_size: r.step_size,
            inner_steps: r.diagnostics.inner_steps,
            lower_grad_calls: self.calls.lower_grad,
            upper_grad_calls: self.calls.upper_grad,
            lower_hvp_calls: self.calls.lower_hvp,
            lower_cross_calls: self.calls.lower_cross,
        })
    }

    pub(crate) fn x(&self) -> &[f32; DX] {
        &self.x
    }

    pub(crate) fn y(&self) -> &[f32; DY] {
        self.method.lower()
    }
}
