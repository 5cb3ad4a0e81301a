//! The computations the firmware runs, written against `bilevel` and `core` only.
//!
//! The host runs this same file (`tests/tests/device_bits.rs` and the `device_report`
//! example of `bilevel-tests` include it by path), so a firmware report and a host report
//! can be compared line for line: the same code, the same `libm`, the same summation order
//! give the same `f32` bits. Lines that only the device can print (RAM, stack, pin reads)
//! start with `device:` and are left out of the comparison.
//!
//! Float math here goes through [`bilevel::Real`] called by path (never `x.exp()` on a bare
//! `f32`, which is std's `expf` on the host).

use core::cell::{Cell, RefCell};
use core::fmt::{self, Write};
use core::ops::ControlFlow;

use bilevel::algo::aid::{Aid, AidConfig};
use bilevel::algo::nbo::{Nbo, NboConfig};
use bilevel::algo::nsbo::{Nsbo, NsboConfig};
use bilevel::algo::qnbo::{QnboConfig, QnboLbfgs};
use bilevel::checkpoint::{self, Checkpoint, MaxSize, SLOT_HEADER_BYTES, Slots};
use bilevel::linalg;
use bilevel::problem::{Counted, OracleCounts};
use bilevel::problems::{Logistic, Quadratic, Samples, penalty};
use bilevel::registry::Method;
use bilevel::rng::Rng128;
use bilevel::run::{self, Budget, Outcome, Outer, RunReport, Solver, StepReport};
use bilevel::sample::Ring;
use bilevel::schedule::Schedule;
use bilevel::{Batch, Error, Problem, Real};
use embedded_storage::nor_flash::NorFlash;

/// Upper dimension of the quadratic the firmware tunes.
pub const QUADRATIC_DX: usize = 4;
/// Lower dimension of the quadratic the firmware tunes.
pub const QUADRATIC_DY: usize = 6;
/// Seed of the quadratic instance.
pub const QUADRATIC_SEED: u64 = 2;
/// Condition number of the quadratic's lower Hessian.
pub const QUADRATIC_KAPPA: f64 = 18.0;
/// Upper ridge weight of the quadratic.
pub const QUADRATIC_RHO: f64 = 0.1;
/// Outer iterations at most.
pub const QUADRATIC_MAX_ITERATIONS: u32 = 4000;
/// Stop when the hypergradient estimate's norm is at most this.
pub const QUADRATIC_TOLERANCE: f32 = 1e-5;
/// A tuned `x` must be this close to the closed-form `x*` (relative distance).
pub const QUADRATIC_ACCEPT: f32 = 1e-3;

/// The quadratic instance, in `f32`.
pub type TunedQuadratic = Quadratic<f32, QUADRATIC_DX, QUADRATIC_DY>;
/// The NBO state the firmware carries for the quadratic.
pub type QuadraticNbo = Nbo<f32, QUADRATIC_DY>;
/// The AID state the firmware carries for the quadratic.
pub type QuadraticAid = Aid<f32, QUADRATIC_DY>;

/// A failed computation: a library error, or a result that missed its acceptance test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Failure {
    /// The library returned an error.
    Library(Error),
    /// A result missed its acceptance test (`what`).
    Check {
        /// Which test.
        what: &'static str,
    },
    /// Writing the report failed.
    Output,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Library(e)
    }
}

impl From<fmt::Error> for Failure {
    fn from(_: fmt::Error) -> Self {
        Failure::Output
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Library(e) => write!(f, "error: {e}"),
            Failure::Check { what } => write!(f, "check failed: {what}"),
            Failure::Output => write!(f, "writing the report failed"),
        }
    }
}

/// What tuning the quadratic with one solver gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuadraticResult {
    /// The tuned upper variable.
    pub x: [f32; QUADRATIC_DX],
    /// `F(x)` at the tuned `x` (closed form).
    pub value: f32,
    /// The run's summary.
    pub report: RunReport<f32>,
    /// Relative distance to the closed-form `x*`.
    pub relative_error: f32,
}

/// Writes `v` as space-separated `to_bits` hex words.
pub fn write_bits<W: Write>(out: &mut W, v: &[f32]) -> fmt::Result {
    for (i, b) in v.iter().enumerate() {
        if i > 0 {
            out.write_char(' ')?;
        }
        write!(out, "{:08x}", b.to_bits())?;
    }
    Ok(())
}

fn write_counts<W: Write>(out: &mut W, c: &OracleCounts) -> fmt::Result {
    write!(
        out,
        "{} (lower_grad {}, upper_grad {}, lower_hvp {}, lower_cross {})",
        c.total(),
        c.lower_grad,
        c.upper_grad,
        c.lower_hvp,
        c.lower_cross
    )
}

/// Tunes `x` of `q` with `solver` from `x = 0` with outer step `c / L_Φ`, and measures the
/// distance to the closed-form `x*` ([`check_quadratic`] judges it).
pub fn tune<S: Solver<f32, QUADRATIC_DX, QUADRATIC_DY>>(
    q: &TunedQuadratic,
    solver: &mut S,
    c: f32,
) -> Result<QuadraticResult, Failure> {
    let l_phi = q.hypergradient_lipschitz()?;
    let problem = Counted::new(q);
    let mut x = [0.0f32; QUADRATIC_DX];
    let report = run::run(
        solver,
        &problem,
        &mut x,
        &Outer::constant(c / l_phi),
        Budget::iterations(QUADRATIC_MAX_ITERATIONS),
        QUADRATIC_TOLERANCE,
        |_, _| ControlFlow::Continue(()),
    )?;
    let x_star = q.solution()?;
    let relative_error = linalg::dist(&x, &x_star) / linalg::norm(&x_star);
    Ok(QuadraticResult {
        x,
        value: q.value(&x)?,
        report,
        relative_error,
    })
}

/// Writes one solver's result: outcome, iterations, oracle calls, `x`, `F`, and their bits.
pub fn write_quadratic_result<W: Write>(out: &mut W, name: &str, r: &QuadraticResult) -> fmt::Result {
    writeln!(
        out,
        "{name}: {} after {} iterations, |h| = {:e}",
        Outcome::name(r.report.outcome),
        r.report.iterations,
        r.report.hypergradient_norm
    )?;
    write!(out, "{name}: oracle calls ")?;
    write_counts(out, &r.report.oracle_calls)?;
    writeln!(out)?;
    writeln!(out, "{name}: x = {:?}", r.x)?;
    writeln!(out, "{name}: F = {:e}, |x - x*|/|x*| = {:e}", r.value, r.relative_error)?;
    write!(out, "bits {name} x: ")?;
    write_bits(out, &r.x)?;
    writeln!(out)?;
    writeln!(out, "bits {name} F: {:08x}", r.value.to_bits())
}

/// The quadratic instance the firmware tunes.
pub fn quadratic() -> TunedQuadratic {
    TunedQuadratic::random(QUADRATIC_SEED, QUADRATIC_KAPPA, QUADRATIC_RHO)
}

/// NBO-GD (`T = 1`, `β = 1/L`, outer step `0.2/L_Φ`) on `q`.
pub fn tune_nbo(q: &TunedQuadratic) -> Result<QuadraticResult, Failure> {
    let beta = 1.0 / q.lower_lipschitz();
    let mut nbo = QuadraticNbo::new(NboConfig::gradient_descent(beta, 1), [0.0; QUADRATIC_DY]);
    tune(q, &mut nbo, 0.2)
}

/// AID-CG (5 lower steps with `1/L`, 5 warm-started CG steps, outer step `0.5/L_Φ`) on `q`.
pub fn tune_aid(q: &TunedQuadratic) -> Result<QuadraticResult, Failure> {
    let beta = 1.0 / q.lower_lipschitz();
    let mut aid = QuadraticAid::new(AidConfig::conjugate_gradient(beta, 5, 5), [0.0; QUADRATIC_DY]);
    tune(q, &mut aid, 0.5)
}

/// Fails unless `r` is within [`QUADRATIC_ACCEPT`] of the closed-form `x*`.
pub fn check_quadratic(r: &QuadraticResult) -> Result<(), Failure> {
    if r.relative_error <= QUADRATIC_ACCEPT {
        Ok(())
    } else {
        Err(Failure::Check {
            what: "tuned x within 1e-3 of the closed-form x*",
        })
    }
}

/// The firmware's main computation: tune the `f32` quadratic with NBO-GD and, for
/// comparison, AID-CG, write the report, and check both against the closed-form `x*`.
pub fn tune_quadratic<W: Write>(out: &mut W) -> Result<[QuadraticResult; 2], Failure> {
    let q = quadratic();
    writeln!(
        out,
        "problem: quadratic f32 DX={QUADRATIC_DX} DY={QUADRATIC_DY} seed={QUADRATIC_SEED} kappa={QUADRATIC_KAPPA} rho={QUADRATIC_RHO}"
    )?;
    let nbo = tune_nbo(&q)?;
    write_quadratic_result(out, Method::NboGd.name(), &nbo)?;
    let aid = tune_aid(&q)?;
    write_quadratic_result(out, Method::AidCg.name(), &aid)?;
    check_quadratic(&nbo)?;
    check_quadratic(&aid)?;
    Ok([nbo, aid])
}

// ---------------------------------------------------------------------------------------
// Streaming: ridge regression's L2 strength, tuned one minibatch at a time.
// ---------------------------------------------------------------------------------------

/// Features per sample in the stream (plus a constant-1 bias column).
pub const STREAM_FEATURES: usize = 4;
/// Lower dimension: the weights and the bias.
pub const STREAM_DY: usize = STREAM_FEATURES + 1;
/// Samples per minibatch.
pub const STREAM_BATCH: usize = 8;
/// Outer steps, each on its own fresh minibatches.
pub const STREAM_STEPS: u32 = 200;
/// Seed of the sample stream.
pub const STREAM_SEED: u64 = 11;
/// Samples in the fixed evaluation sets (streamed once into their Gram matrices).
pub const STREAM_EVAL_SAMPLES: usize = 256;

/// The weights (and bias, last) that generate the stream's targets.
pub const STREAM_TEACHER: [f32; STREAM_DY] = [1.0, -0.5, 0.25, 0.0, 0.3];
/// Standard deviation of the target noise.
pub const STREAM_NOISE: f32 = 1.5;

/// A row of the stream: the features and a constant 1 for the bias.
pub type Row = [f32; STREAM_DY];

/// Where minibatches come from: a sensor, a serial line, a generator. One minibatch is in
/// memory at a time.
pub trait SampleSource {
    /// Fills `rows` and `targets` with the next samples.
    fn fill(&mut self, rows: &mut [Row], targets: &mut [f32]) -> Result<(), Failure>;
}

/// A synthetic linear-regression stream: Gaussian features, targets from
/// [`STREAM_TEACHER`] plus Gaussian noise, drawn with the library's seeded generator (the
/// same samples on every target).
#[derive(Clone, Debug)]
pub struct TeacherStream {
    rng: Rng128,
}

impl TeacherStream {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        TeacherStream { rng: Rng128::new(seed) }
    }

    /// The generator's state: where the stream stands (for a checkpoint).
    pub fn position(&self) -> Rng128 {
        self.rng.clone()
    }

    /// The stream continued from a saved [`TeacherStream::position`].
    pub fn resume(rng: Rng128) -> Self {
        TeacherStream { rng }
    }
}

impl SampleSource for TeacherStream {
    fn fill(&mut self, rows: &mut [Row], targets: &mut [f32]) -> Result<(), Failure> {
        for (row, t) in rows.iter_mut().zip(targets.iter_mut()) {
            for v in row.iter_mut().take(STREAM_FEATURES) {
                *v = self.rng.gaussian();
            }
            row[STREAM_FEATURES] = 1.0;
            let noise: f32 = self.rng.gaussian();
            *t = linalg::dot(row, &STREAM_TEACHER) + STREAM_NOISE * noise;
        }
        Ok(())
    }
}

/// Ridge regression on the minibatches in memory: `g = 1/(2m) Σ_ξ (aᵀy − b)² + ½ e^x ‖w‖²`
/// over a training minibatch `ξ`, `f = 1/(2m) Σ_ζ (aᵀy − b)²` over a validation minibatch
/// `ζ` (each oracle call names its minibatch as a [`Batch::Range`] of the rows), with
/// `x = ln λ` and the bias (last entry of `y`) not penalized.
#[derive(Clone, Copy, Debug)]
pub struct MinibatchRidge<'a> {
    /// The training minibatches (lower level).
    pub train: Samples<'a, f32, STREAM_DY>,
    /// The validation minibatches (upper level).
    pub validation: Samples<'a, f32, STREAM_DY>,
}

/// `out ← 1/m Σ (aᵀv − b) a` over the `m` rows `a` and targets `b` (the loss gradient at
/// `v = y`), or without the targets `1/m Σ (aᵀv) a` (the Hessian times `v`) when
/// `with_targets` is false.
fn least_squares<const D: usize>(
    rows: &[[f32; D]],
    targets: &[f32],
    v: &[f32; D],
    with_targets: bool,
    out: &mut [f32; D],
) {
    let inv = if rows.is_empty() { 0.0 } else { 1.0 / rows.len() as f32 };
    *out = [0.0; D];
    for (a, b) in rows.iter().zip(targets) {
        let mut r = linalg::dot(a, v);
        if with_targets {
            r -= *b;
        }
        linalg::axpy(r * inv, a, out);
    }
}

impl Problem<f32, 1, STREAM_DY> for MinibatchRidge<'_> {
    fn lower_grad(
        &self,
        x: &[f32; 1],
        y: &[f32; STREAM_DY],
        batch: Batch,
        out: &mut [f32; STREAM_DY],
    ) -> Result<(), Error> {
        let (rows, targets, _) = self.train.batch(batch);
        least_squares(rows, targets, y, true, out);
        penalty::add_scaled(x, y, out);
        Ok(())
    }

    fn upper_grad(
        &self,
        _: &[f32; 1],
        y: &[f32; STREAM_DY],
        batch: Batch,
        gx: &mut [f32; 1],
        gy: &mut [f32; STREAM_DY],
    ) -> Result<(), Error> {
        gx[0] = 0.0;
        let (rows, targets, _) = self.validation.batch(batch);
        least_squares(rows, targets, y, true, gy);
        Ok(())
    }

    fn lower_hvp(
        &self,
        x: &[f32; 1],
        _: &[f32; STREAM_DY],
        v: &[f32; STREAM_DY],
        batch: Batch,
        out: &mut [f32; STREAM_DY],
    ) -> Result<(), Error> {
        let (rows, targets, _) = self.train.batch(batch);
        least_squares(rows, targets, v, false, out);
        penalty::add_scaled(x, v, out);
        Ok(())
    }

    fn lower_cross(
        &self,
        x: &[f32; 1],
        y: &[f32; STREAM_DY],
        v: &[f32; STREAM_DY],
        _: Batch,
        out: &mut [f32; 1],
    ) -> Result<(), Error> {
        penalty::cross(x, y, v, out);
        Ok(())
    }
}

/// Sufficient statistics of a least-squares loss `1/(2n) Σ (aᵀy − b)²`: the Gram matrix,
/// `Aᵀb` and `bᵀb`, all divided by `n`. Lets the firmware evaluate a large fixed set
/// without storing its samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeastSquaresStats {
    gram: [[f32; STREAM_DY]; STREAM_DY],
    atb: [f32; STREAM_DY],
    btb: f32,
}

impl LeastSquaresStats {
    /// Streams `n` samples of `source` into the statistics, one minibatch at a time.
    pub fn collect<S: SampleSource>(source: &mut S, n: usize) -> Result<Self, Failure> {
        let mut s = LeastSquaresStats {
            gram: [[0.0; STREAM_DY]; STREAM_DY],
            atb: [0.0; STREAM_DY],
            btb: 0.0,
        };
        let inv = 1.0 / n as f32;
        let mut rows = [[0.0f32; STREAM_DY]; STREAM_BATCH];
        let mut targets = [0.0f32; STREAM_BATCH];
        let mut left = n;
        while left > 0 {
            let m = left.min(STREAM_BATCH);
            source.fill(&mut rows[..m], &mut targets[..m])?;
            for (a, b) in rows[..m].iter().zip(&targets[..m]) {
                for (gram_row, ai) in s.gram.iter_mut().zip(a) {
                    linalg::axpy(inv * *ai, a, gram_row);
                }
                linalg::axpy(inv * *b, a, &mut s.atb);
                s.btb += inv * *b * *b;
            }
            left -= m;
        }
        Ok(s)
    }

    /// `½ (yᵀG y − 2 yᵀAᵀb + bᵀb)`.
    pub fn loss(&self, y: &[f32; STREAM_DY]) -> f32 {
        let mut gy = [0.0f32; STREAM_DY];
        linalg::matvec(&self.gram, y, &mut gy);
        0.5 * (linalg::dot(y, &gy) - 2.0 * linalg::dot(y, &self.atb) + self.btb)
    }

    /// The ridge solution `(G + λ D) y = Aᵀb` with `λ = e^x` and `D` penalizing the weights
    /// only.
    pub fn ridge_solution(&self, x: f32) -> Result<[f32; STREAM_DY], Failure> {
        let mut m = self.gram;
        let lambda = Real::exp(x);
        for (j, row) in m.iter_mut().enumerate().take(STREAM_FEATURES) {
            row[j] += lambda;
        }
        let mut y = self.atb;
        if linalg::spd_solve(&m, &mut y) {
            Ok(y)
        } else {
            Err(Failure::Check {
                what: "evaluation Gram matrix positive definite",
            })
        }
    }
}

/// What the streaming run gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamResult {
    /// The tuned `x = ln λ`.
    pub x: f32,
    /// The lower iterate the solver tracked.
    pub y: [f32; STREAM_DY],
    /// Evaluation loss (validation set, ridge solution on the training set) at `x = 0`.
    pub loss_start: f32,
    /// The same at the tuned `x`.
    pub loss_end: f32,
    /// Oracle calls over all minibatches.
    pub oracle_calls: OracleCounts,
}

/// The outer update of the stream: `α_t = 0.5/√(t+1)` on `x = ln λ ∈ [−8, 3]`.
pub fn stream_outer() -> Outer<f32> {
    Outer {
        schedule: Schedule::Decay { c: 0.5, exponent: 0.5 },
        bounds: Some((-8.0, 3.0)),
    }
}

/// NSBO's `T`: each outer step takes `T + 1` inner gradient steps, each with its Hessian
/// product on a fresh training minibatch.
pub const STREAM_INNER_STEPS: u32 = 1;
/// NSBO's inner step `β` (the minibatch Hessians reach `L` ≈ 3; with `β = 0.2` a solve on
/// sampled products tripped the divergence test after 100 steps).
pub const STREAM_BETA: f32 = 0.1;
/// Training minibatches NSBO-SGD draws per outer step (at most): `∇_y g`, the cross
/// product `∇²_xy g·u`, and one per Hessian product.
pub const STREAM_LOWER_BATCHES: usize = STREAM_INNER_STEPS as usize + 3;
/// Validation minibatches per outer step: the right-hand side `∇_y f` of the adjoint
/// system and `∇_x f`, `∇_y f` at the new lower iterate.
pub const STREAM_UPPER_BATCHES: usize = 2;

/// NSBO-SGD drawing its training and validation minibatches from two arrival rings.
pub type StreamNsbo = Nsbo<f32, 1, STREAM_DY, Ring>;

const TRAIN_ROWS: usize = STREAM_LOWER_BATCHES * STREAM_BATCH;
const VAL_ROWS: usize = STREAM_UPPER_BATCHES * STREAM_BATCH;

/// The minibatches in memory: a ring of [`STREAM_LOWER_BATCHES`] training slots and one
/// of [`STREAM_UPPER_BATCHES`] validation slots, [`STREAM_BATCH`] samples each, and how
/// many minibatches each level has received.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamMemory {
    train_rows: [Row; TRAIN_ROWS],
    train_targets: [f32; TRAIN_ROWS],
    val_rows: [Row; VAL_ROWS],
    val_targets: [f32; VAL_ROWS],
    /// Minibatches received so far: training, validation.
    pub received: [u32; 2],
}

/// Which level a minibatch belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Train = 0,
    Validation = 1,
}

impl StreamMemory {
    /// Empty slots; `received` counts the minibatches each level already consumed (0 at the
    /// start, the solver's ring counters when resuming).
    pub fn new(received: [u32; 2]) -> Self {
        StreamMemory {
            train_rows: [[0.0; STREAM_DY]; TRAIN_ROWS],
            train_targets: [0.0; TRAIN_ROWS],
            val_rows: [[0.0; STREAM_DY]; VAL_ROWS],
            val_targets: [0.0; VAL_ROWS],
            received,
        }
    }

    /// Receives minibatches of `level` from `source` until minibatch `id` has arrived, and
    /// returns its rows and targets.
    fn batch<S: SampleSource>(&mut self, source: &mut S, level: Level, id: u32) -> Result<(&[Row], &[f32]), Failure> {
        let (rows, targets): (&mut [Row], &mut [f32]) = match level {
            Level::Train => (&mut self.train_rows, &mut self.train_targets),
            Level::Validation => (&mut self.val_rows, &mut self.val_targets),
        };
        let slots = (rows.len() / STREAM_BATCH) as u32;
        let received = &mut self.received[level as usize];
        while *received <= id {
            let at = (*received % slots) as usize * STREAM_BATCH;
            let (Some(r), Some(t)) = (
                rows.get_mut(at..at + STREAM_BATCH),
                targets.get_mut(at..at + STREAM_BATCH),
            ) else {
                break;
            };
            source.fill(r, t)?;
            *received += 1;
        }
        // Received, and not overwritten since by a later minibatch in the same slot.
        if id >= *received || *received - id > slots {
            return Err(Failure::Check {
                what: "a drawn minibatch is in memory when used",
            });
        }
        let at = (id % slots) as usize * STREAM_BATCH;
        match (rows.get(at..at + STREAM_BATCH), targets.get(at..at + STREAM_BATCH)) {
            (Some(r), Some(t)) => Ok((r, t)),
            _ => Err(Failure::Check {
                what: "a drawn minibatch is in memory when used",
            }),
        }
    }
}

/// Ridge regression (as [`MinibatchRidge`]) on minibatches that arrive from `source` one at
/// a time: an oracle call on [`Batch::Range`] `{ id: n, .. }` of a level first receives
/// that level's minibatches up to the `n`-th (NSBO's [`Ring`] names them in draw order),
/// so each sample is used once, in arrival order, with one outer step's minibatches in
/// memory. A failing source makes the oracle fail with [`Error::InvalidData`]; the
/// source's own [`Failure`] is kept ([`StreamRidge::failure`]).
pub struct StreamRidge<'s, S> {
    source: RefCell<&'s mut S>,
    memory: RefCell<StreamMemory>,
    failure: Cell<Option<Failure>>,
}

impl<'s, S: SampleSource> StreamRidge<'s, S> {
    /// Reads minibatches from `source` into `memory`.
    pub fn new(source: &'s mut S, memory: StreamMemory) -> Self {
        StreamRidge {
            source: RefCell::new(source),
            memory: RefCell::new(memory),
            failure: Cell::new(None),
        }
    }

    /// Minibatches received so far: training, validation.
    pub fn received(&self) -> [u32; 2] {
        self.memory.try_borrow().map(|m| m.received).unwrap_or([u32::MAX; 2])
    }

    /// Runs `f` on the source between oracle calls (`None` during one).
    pub fn inspect<R>(&self, f: impl FnOnce(&S) -> R) -> Option<R> {
        self.source.try_borrow().ok().map(|s| f(&**s))
    }

    /// Why the last oracle failed, if the source or the slots made it fail.
    pub fn failure(&self) -> Option<Failure> {
        self.failure.get()
    }

    /// Runs `f` on the rows and targets of minibatch `batch` of `level`, receiving it first.
    fn with_batch<R>(&self, level: Level, batch: Batch, f: impl FnOnce(&[Row], &[f32]) -> R) -> Result<R, Error> {
        let Batch::Range { id, .. } = batch else {
            return Err(Error::InvalidData {
                reason: "a stream has no full batch",
            });
        };
        let failed = |f: Failure, cell: &Cell<Option<Failure>>| {
            cell.set(Some(f));
            Error::InvalidData {
                reason: "the sample stream failed",
            }
        };
        let (Ok(mut source), Ok(mut memory)) = (self.source.try_borrow_mut(), self.memory.try_borrow_mut()) else {
            return Err(Error::Breakdown {
                stage: "sample stream already in use",
            });
        };
        let (rows, targets) = memory
            .batch(&mut **source, level, id)
            .map_err(|e| failed(e, &self.failure))?;
        Ok(f(rows, targets))
    }
}

impl<S: SampleSource> Problem<f32, 1, STREAM_DY> for StreamRidge<'_, S> {
    fn lower_grad(
        &self,
        x: &[f32; 1],
        y: &[f32; STREAM_DY],
        batch: Batch,
        out: &mut [f32; STREAM_DY],
    ) -> Result<(), Error> {
        self.with_batch(Level::Train, batch, |rows, targets| {
            least_squares(rows, targets, y, true, out);
            penalty::add_scaled(x, y, out);
        })
    }

    fn upper_grad(
        &self,
        _: &[f32; 1],
        y: &[f32; STREAM_DY],
        batch: Batch,
        gx: &mut [f32; 1],
        gy: &mut [f32; STREAM_DY],
    ) -> Result<(), Error> {
        self.with_batch(Level::Validation, batch, |rows, targets| {
            gx[0] = 0.0;
            least_squares(rows, targets, y, true, gy);
        })
    }

    fn lower_hvp(
        &self,
        x: &[f32; 1],
        _: &[f32; STREAM_DY],
        v: &[f32; STREAM_DY],
        batch: Batch,
        out: &mut [f32; STREAM_DY],
    ) -> Result<(), Error> {
        self.with_batch(Level::Train, batch, |rows, targets| {
            least_squares(rows, targets, v, false, out);
            penalty::add_scaled(x, v, out);
        })
    }

    fn lower_cross(
        &self,
        x: &[f32; 1],
        y: &[f32; STREAM_DY],
        v: &[f32; STREAM_DY],
        batch: Batch,
        out: &mut [f32; 1],
    ) -> Result<(), Error> {
        // ∇²_xy g·v = e^x wᵀv needs no samples, but the drawn minibatch still arrives (and
        // is skipped), so the stream stays aligned with the draws.
        self.with_batch(Level::Train, batch, |_, _| penalty::cross(x, y, v, out))
    }
}

/// The resumable state of the streaming run: the solver (iterates, adjoint, ring
/// counters), `x = ln λ`, the next outer step and the oracle calls so far.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamTuner {
    /// NSBO-SGD.
    pub solver: StreamNsbo,
    /// `x = ln λ`.
    pub x: [f32; 1],
    /// The next outer step.
    pub t: u32,
    /// Oracle calls so far.
    pub calls: OracleCounts,
}

impl StreamTuner {
    /// NSBO-SGD (`T` = [`STREAM_INNER_STEPS`], `β` = [`STREAM_BETA`]) from `y = 0`, `u = 0`,
    /// `ln λ = 0`, nothing drawn.
    pub fn new() -> Result<Self, Failure> {
        Ok(StreamTuner {
            solver: StreamNsbo::new(
                NsboConfig::constant(STREAM_BETA, STREAM_INNER_STEPS),
                [0.0; STREAM_DY],
                Ring::new(STREAM_LOWER_BATCHES, STREAM_BATCH)?,
                Ring::new(STREAM_UPPER_BATCHES, STREAM_BATCH)?,
            ),
            x: [0.0],
            t: 0,
            calls: OracleCounts::default(),
        })
    }

    /// Minibatches the solver has drawn: training, validation.
    pub fn drawn(&self) -> [u32; 2] {
        let (lower, upper) = self.solver.sources();
        [lower.drawn(), upper.drawn()]
    }

    /// Whether all [`STREAM_STEPS`] outer steps are done.
    pub fn finished(&self) -> bool {
        self.t >= STREAM_STEPS
    }

    /// One outer step of NSBO-SGD on the minibatches `problem` receives, then a check that
    /// every minibatch the step drew has arrived.
    pub fn step<S: SampleSource>(&mut self, problem: &StreamRidge<'_, S>) -> Result<StepReport<f32>, Failure> {
        let counted = Counted::new(problem);
        let r = run::step(&mut self.solver, &counted, &mut self.x, &stream_outer(), self.t)
            .map_err(|e| problem.failure().unwrap_or(Failure::Library(e)))?;
        let c = counted.counts();
        self.calls.lower_grad += c.lower_grad;
        self.calls.upper_grad += c.upper_grad;
        self.calls.lower_hvp += c.lower_hvp;
        self.calls.lower_cross += c.lower_cross;
        self.t += 1;
        if problem.received() != self.drawn() {
            return Err(Failure::Check {
                what: "every drawn minibatch arrives within its outer step",
            });
        }
        Ok(r)
    }

    /// Evaluates `λ = 1` and the tuned `λ` on fixed evaluation sets streamed from
    /// `eval_source`, and checks that the tuned one is no worse.
    pub fn finish<E: SampleSource>(&self, eval_source: &mut E) -> Result<StreamResult, Failure> {
        let eval_train = LeastSquaresStats::collect(eval_source, STREAM_EVAL_SAMPLES)?;
        let eval_val = LeastSquaresStats::collect(eval_source, STREAM_EVAL_SAMPLES)?;
        let loss_start = eval_val.loss(&eval_train.ridge_solution(0.0)?);
        let loss_end = eval_val.loss(&eval_train.ridge_solution(self.x[0])?);
        let result = StreamResult {
            x: self.x[0],
            y: *Solver::<f32, 1, STREAM_DY>::lower(&self.solver),
            loss_start,
            loss_end,
            oracle_calls: self.calls,
        };
        // Written so that a NaN loss fails the check.
        if loss_end <= loss_start {
            Ok(result)
        } else {
            Err(Failure::Check {
                what: "tuned lambda no worse than lambda = 1 on the evaluation sets",
            })
        }
    }
}

/// Tunes ridge regression's `ln λ` on a stream with NSBO-SGD: every outer step draws its
/// own minibatches ([`STREAM_LOWER_BATCHES`] training and [`STREAM_UPPER_BATCHES`]
/// validation minibatches of [`STREAM_BATCH`] samples, fewer at the first step where the
/// zero adjoint skips a product), each received from `source` when first used
/// ([`StreamRidge`]), takes one step (`y` and the adjoint `u` carried across minibatches),
/// and calls `on_step` with the step's report and the new `ln λ` (the firmware toggles a
/// pin there). Then evaluates `λ = 1` and the tuned `λ` on fixed
/// evaluation sets streamed from `eval_source` ([`StreamTuner::finish`]). No text output:
/// see [`tune_stream`].
pub fn stream_run<S, E, F>(source: &mut S, eval_source: &mut E, mut on_step: F) -> Result<StreamResult, Failure>
where
    S: SampleSource,
    E: SampleSource,
    F: FnMut(&StepReport<f32>, f32) -> Result<(), Failure>,
{
    let mut tuner = StreamTuner::new()?;
    let problem = StreamRidge::new(source, StreamMemory::new([0, 0]));
    while !tuner.finished() {
        let r = tuner.step(&problem)?;
        on_step(&r, tuner.x[0])?;
    }
    tuner.finish(eval_source)
}

/// [`stream_run`] with its report: progress every 50 steps, the tuned `λ`, `y`, oracle
/// calls, the evaluation losses, and their bits.
pub fn tune_stream<W, S, E, F>(
    out: &mut W,
    source: &mut S,
    eval_source: &mut E,
    mut on_step: F,
) -> Result<StreamResult, Failure>
where
    W: Write,
    S: SampleSource,
    E: SampleSource,
    F: FnMut(u32, f32) -> Result<(), Failure>,
{
    writeln!(
        out,
        "problem: streaming ridge f32 features={STREAM_FEATURES} batch={STREAM_BATCH} steps={STREAM_STEPS} seed={STREAM_SEED}"
    )?;
    writeln!(
        out,
        "solver: nsbo-sgd T={STREAM_INNER_STEPS} beta={STREAM_BETA}, {STREAM_LOWER_BATCHES} training + {STREAM_UPPER_BATCHES} validation minibatches per step"
    )?;
    let result = stream_run(source, eval_source, |r, x| {
        on_step(r.iteration, x)?;
        if r.iteration % 50 == 49 {
            writeln!(
                out,
                "step {:>3}: ln lambda = {:e}, |h| = {:e}",
                r.iteration + 1,
                x,
                r.hypergradient_norm
            )?;
        }
        Ok(())
    })?;
    write_stream_result(out, &result)?;
    Ok(result)
}

/// Writes the streaming run's result: the tuned `λ`, `y`, oracle calls, the evaluation
/// losses, and their bits.
pub fn write_stream_result<W: Write>(out: &mut W, result: &StreamResult) -> fmt::Result {
    writeln!(
        out,
        "stream: ln lambda = {:e}, lambda = {:e}",
        result.x,
        Real::exp(result.x)
    )?;
    writeln!(out, "stream: y = {:?}", result.y)?;
    write!(out, "stream: oracle calls ")?;
    write_counts(out, &result.oracle_calls)?;
    writeln!(out)?;
    writeln!(
        out,
        "stream: evaluation loss {:e} at lambda = 1, {:e} tuned",
        result.loss_start, result.loss_end
    )?;
    write!(out, "bits stream x y: ")?;
    write_bits(out, &[result.x])?;
    out.write_char(' ')?;
    write_bits(out, &result.y)?;
    writeln!(out)?;
    writeln!(
        out,
        "bits stream loss: {:08x} {:08x}",
        result.loss_start.to_bits(),
        result.loss_end.to_bits()
    )?;
    Ok(())
}

/// Stream seeds: the tuning stream and the evaluation stream.
pub fn stream_sources() -> (TeacherStream, TeacherStream) {
    (TeacherStream::new(STREAM_SEED), TeacherStream::new(STREAM_SEED + 1))
}

// ---------------------------------------------------------------------------------------
// Checkpoint, reset, resume: the streaming run carried across a reset in two flash slots.
// ---------------------------------------------------------------------------------------

/// A checkpoint is written after every this many outer steps.
pub const RESUME_PERIOD: u32 = 16;

/// A checkpoint of the streaming run: the next outer step, `ln λ`, the solver (iterates,
/// adjoint, ring counters), the training stream's generator, and the oracle calls so far
/// (`∇_y g`, upper gradients, Hessian products, cross products).
pub type StreamCheckpoint = Checkpoint<(StreamNsbo, Rng128, [u64; 4]), f32, 1>;

/// Largest encoded [`StreamCheckpoint`], known at compile time.
pub const STREAM_CHECKPOINT_BYTES: usize = <StreamCheckpoint as MaxSize>::POSTCARD_MAX_SIZE;

/// Bytes of one checkpoint slot (a multiple of the flash's erase size).
pub const CHECKPOINT_SLOT_BYTES: u32 = 256;

/// Bytes of flash the two slots take.
pub const CHECKPOINT_FLASH_BYTES: usize = 2 * CHECKPOINT_SLOT_BYTES as usize;

const _: () = assert!(STREAM_CHECKPOINT_BYTES + SLOT_HEADER_BYTES <= CHECKPOINT_SLOT_BYTES as usize);

/// What happens during a resumable run, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeEvent {
    /// No valid checkpoint: the run starts at step 0.
    Fresh,
    /// Resuming from checkpoint `sequence`, taken before outer step `step`.
    Resumed {
        /// Its sequence number.
        sequence: u32,
        /// The outer step it resumes at.
        step: u32,
    },
    /// A checkpoint of `bytes` bytes before outer step `step` is about to be written.
    Saving {
        /// The next outer step.
        step: u32,
        /// Encoded size.
        bytes: usize,
    },
    /// It was written as checkpoint `sequence`.
    Saved {
        /// Its sequence number.
        sequence: u32,
        /// The next outer step.
        step: u32,
    },
}

/// The streaming run of [`stream_run`] with checkpoints: starts from the newest valid
/// checkpoint in the two slots at the start of `flash` (from step 0 when there is none),
/// writes a checkpoint after every [`RESUME_PERIOD`] outer steps, and evaluates the result
/// as [`StreamTuner::finish`]. A run cut at any point (a reset, a power loss in the middle
/// of a flash write) and started again with the same flash ends with the same bits as one
/// that was never cut. `observer` sees every [`ResumeEvent`] with the flash (so a test can
/// cut the next write).
pub fn stream_resumable<F, O>(flash: &mut F, mut observer: O) -> Result<StreamResult, Failure>
where
    F: NorFlash,
    O: FnMut(ResumeEvent, &mut F) -> Result<(), Failure>,
{
    let mut buf = [0u8; STREAM_CHECKPOINT_BYTES];
    let mut scratch = [0u8; STREAM_CHECKPOINT_BYTES];
    let loaded = Slots::new(&mut *flash, 0, CHECKPOINT_SLOT_BYTES)?.load(&mut buf)?;
    let (mut tuner, mut source) = match loaded {
        None => {
            observer(ResumeEvent::Fresh, flash)?;
            (StreamTuner::new()?, stream_sources().0)
        }
        Some((sequence, bytes)) => {
            let saved: StreamCheckpoint = checkpoint::decode(bytes)?;
            let (solver, rng, [lower_grad, upper_grad, lower_hvp, lower_cross]) = saved.solver;
            let tuner = StreamTuner {
                solver,
                x: saved.x,
                t: saved.iteration,
                calls: OracleCounts {
                    lower_grad,
                    upper_grad,
                    lower_hvp,
                    lower_cross,
                    ..OracleCounts::default()
                },
            };
            observer(
                ResumeEvent::Resumed {
                    sequence,
                    step: tuner.t,
                },
                flash,
            )?;
            (tuner, TeacherStream::resume(rng))
        }
    };
    let problem = StreamRidge::new(&mut source, StreamMemory::new(tuner.drawn()));
    while !tuner.finished() {
        tuner.step(&problem)?;
        if tuner.t % RESUME_PERIOD != 0 || tuner.finished() {
            continue;
        }
        let rng = problem.inspect(TeacherStream::position).ok_or(Failure::Check {
            what: "the stream is idle between outer steps",
        })?;
        let c = tuner.calls;
        let state = StreamCheckpoint {
            iteration: tuner.t,
            x: tuner.x,
            solver: (
                tuner.solver.clone(),
                rng,
                [c.lower_grad, c.upper_grad, c.lower_hvp, c.lower_cross],
            ),
        };
        let bytes = checkpoint::encode(&state, &mut buf)?;
        observer(
            ResumeEvent::Saving {
                step: tuner.t,
                bytes: bytes.len(),
            },
            flash,
        )?;
        let sequence = Slots::new(&mut *flash, 0, CHECKPOINT_SLOT_BYTES)?.save(bytes, &mut scratch)?;
        observer(
            ResumeEvent::Saved {
                sequence,
                step: tuner.t,
            },
            flash,
        )?;
    }
    tuner.finish(&mut stream_sources().1)
}

/// The breast-cancer data set split and standardized on the host, written by
/// `bilevel export --format rust` (regenerated and compared by `.ci/firmware`).
#[rustfmt::skip]
#[allow(clippy::unreadable_literal, clippy::excessive_precision)]
pub mod breast_cancer {
    include!("breast_cancer.rs");
}

/// Features of the breast-cancer data.
pub const LOGREG_FEATURES: usize = 30;
/// Weights and bias.
pub const LOGREG_DY: usize = LOGREG_FEATURES + 1;
/// Starting `ln λ`.
pub const LOGREG_X0: f32 = 0.0;
/// Outer step on `ln λ`.
pub const LOGREG_STEP: f32 = 50.0;
/// Outer iterations at most.
pub const LOGREG_MAX_ITERATIONS: u32 = 400;
/// Stop when `|h|` is at most this.
pub const LOGREG_TOLERANCE: f32 = 1e-7;

/// The logistic-regression problem the firmware tunes (one L2 strength).
pub type TunedLogistic<'a> = Logistic<'a, f32, LOGREG_FEATURES, 1, LOGREG_DY>;
/// Secant pairs kept by the BFGS two-loop recursion (the paper's Algorithm 4 on a ring of
/// this many pairs): 2·4·31 floats instead of a dense 31×31 inverse Hessian.
pub const LOGREG_PAIRS: usize = 4;
/// The qNBO-BFGS state the firmware carries.
pub type LogregQnbo = QnboLbfgs<f32, LOGREG_DY, LOGREG_PAIRS>;

/// What tuning the L2 strength gave.
#[derive(Clone, Copy, Debug)]
pub struct LogregResult {
    /// `ln λ`.
    pub ln_lambda: f32,
    /// The trained model `[w, b]`.
    pub model: [f32; LOGREG_DY],
    /// Validation loss at the final model.
    pub validation_loss: f32,
    /// Test accuracy of the final model.
    pub test_accuracy: f32,
    /// The run.
    pub report: RunReport<f32>,
}

/// Tunes `ln λ` of logistic regression on the breast-cancer data with qNBO-BFGS (no output:
/// the panic check runs exactly this).
pub fn logreg_run() -> Result<LogregResult, Failure> {
    use breast_cancer as data;
    let train = Samples::new(&data::TRAIN_FEATURES[..], &data::TRAIN_LABELS[..])?;
    let validation = Samples::new(&data::VALIDATION_FEATURES[..], &data::VALIDATION_LABELS[..])?;
    let test = Samples::new(&data::TEST_FEATURES[..], &data::TEST_LABELS[..])?;
    let problem = TunedLogistic::new(train, validation)?;
    let mut x = [LOGREG_X0];
    // Warm-up steps at 1/L of the lower level; quasi-Newton steps of 1 (the defaults).
    let config = QnboConfig {
        warmup_step: 1.0 / problem.lower_lipschitz(&x),
        ..QnboConfig::default()
    };
    let mut solver = LogregQnbo::new(config, [0.0; LOGREG_DY]);
    let counted = Counted::new(&problem);
    let outer = Outer {
        schedule: Schedule::Constant(LOGREG_STEP),
        bounds: Some((-12.0, 12.0)),
    };
    let report = run::run(
        &mut solver,
        &counted,
        &mut x,
        &outer,
        Budget::iterations(LOGREG_MAX_ITERATIONS),
        LOGREG_TOLERANCE,
        |_, _| ControlFlow::Continue(()),
    )?;
    let y = *Solver::<f32, 1, LOGREG_DY>::lower(&solver);
    let validation_loss = problem.upper_value(&x, &y, Batch::Full)?;
    let test_accuracy = TunedLogistic::accuracy(&test, &y);
    Ok(LogregResult {
        ln_lambda: x[0],
        model: y,
        validation_loss,
        test_accuracy,
        report,
    })
}

/// [`logreg_run`] with its report printed; fails unless the test accuracy exceeds 0.9.
pub fn tune_logreg<W: Write>(out: &mut W) -> Result<LogregResult, Failure> {
    use breast_cancer as data;
    writeln!(
        out,
        "problem: logistic regression f32, breast cancer {}/{}/{} rows, {} features, qnbo-bfgs",
        data::TRAIN_ROWS,
        data::VALIDATION_ROWS,
        data::TEST_ROWS,
        LOGREG_FEATURES
    )?;
    let r = logreg_run()?;
    let report = r.report;
    writeln!(
        out,
        "qnbo-bfgs: {} after {} iterations, |h| = {:e}",
        Outcome::name(report.outcome),
        report.iterations,
        report.hypergradient_norm
    )?;
    write!(out, "qnbo-bfgs: oracle calls ")?;
    write_counts(out, &report.oracle_calls)?;
    writeln!(out)?;
    writeln!(
        out,
        "qnbo-bfgs: ln lambda = {:e}, lambda = {:e}",
        r.ln_lambda,
        bilevel::Real::exp(r.ln_lambda)
    )?;
    writeln!(
        out,
        "qnbo-bfgs: validation loss = {:e}, test accuracy = {:e}",
        r.validation_loss, r.test_accuracy
    )?;
    write!(out, "bits qnbo-bfgs x loss accuracy: ")?;
    write_bits(out, &[r.ln_lambda, r.validation_loss, r.test_accuracy])?;
    write!(out, "\nbits qnbo-bfgs y: ")?;
    write_bits(out, &r.model)?;
    writeln!(out)?;
    if r.test_accuracy.is_nan() || r.test_accuracy <= 0.9 {
        return Err(Failure::Check {
            what: "test accuracy above 0.9",
        });
    }
    Ok(r)
}
