//! Building blocks shared by the stochastic methods: a Hessian operator that draws a fresh
//! minibatch per product, lower-level SGD with a fresh batch per step, the moving average
//! of MA-SOBA / MA-NSBO, and SAGA tables with a problem wrapper that replaces every oracle
//! output by its SAGA estimate (SABA, NSBO-SAGA).

use core::cell::RefCell;

use crate::error::{Error, ensure};
use crate::inner;
use crate::linsolve::SymmetricOperator;
use crate::problem::{Batch, Checked, Problem};
use crate::run::Diagnostics;
use crate::sample::BatchSource;
use crate::scalar::Real;
use crate::schedule::Schedule;

/// `∇²_yy g(x, y)` applied with a fresh minibatch from `source` for every product (one
/// batch for both vectors of a fused product): the stochastic Hessian of NSBO-SGD and
/// stocBiO's Neumann series.
pub struct SampledHessian<'a, 'p, 's, P, T, S, const DX: usize, const DY: usize> {
    /// Checked oracle access.
    pub oracles: Checked<'p, P>,
    /// Upper variable.
    pub x: &'a [T; DX],
    /// Lower variable.
    pub y: &'a [T; DY],
    source: RefCell<&'s mut S>,
}

impl<'a, 'p, 's, P, T, S, const DX: usize, const DY: usize> SampledHessian<'a, 'p, 's, P, T, S, DX, DY>
where
    P: Problem<T, DX, DY>,
    T: Real,
    S: BatchSource,
{
    /// The Hessian at `(x, y)` sampling its batches from `source`.
    pub fn new(oracles: Checked<'p, P>, x: &'a [T; DX], y: &'a [T; DY], source: &'s mut S) -> Self {
        SampledHessian {
            oracles,
            x,
            y,
            source: RefCell::new(source),
        }
    }

    fn draw(&self) -> Result<Batch, Error> {
        match self.source.try_borrow_mut() {
            Ok(mut s) => s.next_batch(),
            Err(_) => Err(Error::Breakdown {
                stage: "minibatch source already in use",
            }),
        }
    }
}

impl<P, T, S, const DX: usize, const DY: usize> SymmetricOperator<T, DY> for SampledHessian<'_, '_, '_, P, T, S, DX, DY>
where
    P: Problem<T, DX, DY>,
    T: Real,
    S: BatchSource,
{
    fn apply(&self, v: &[T; DY], out: &mut [T; DY]) -> Result<(), Error> {
        let batch = self.draw()?;
        self.oracles.lower_hvp(self.x, self.y, v, batch, out)
    }

    fn apply2(&self, v1: &[T; DY], v2: &[T; DY], out1: &mut [T; DY], out2: &mut [T; DY]) -> Result<(), Error> {
        let batch = self.draw()?;
        self.oracles.lower_hvp2(self.x, self.y, v1, v2, batch, out1, out2)
    }

    fn samples_each_product(&self) -> bool {
        true
    }
}

/// `steps` stochastic gradient steps `y ← y − β ∇_y g(x, y; ξ_t)`, a fresh batch `ξ_t`
/// from `source` per step (the shared [`inner::gradient_descent`] one step at a time).
pub fn stochastic_gradient_descent<P, S, T, const DX: usize, const DY: usize>(
    oracles: Checked<'_, P>,
    x: &[T; DX],
    y: &mut [T; DY],
    beta: T,
    steps: u32,
    source: &mut S,
) -> Result<(), Error>
where
    P: Problem<T, DX, DY>,
    S: BatchSource,
    T: Real,
{
    for _ in 0..steps {
        let batch = source.next_batch()?;
        inner::gradient_descent(oracles, x, y, beta, 1, batch)?;
    }
    Ok(())
}

/// Doubles the minibatches of both levels ([`crate::run::Solver::reduce_noise`] of the
/// SGD-type methods); `false` when neither can grow.
pub(crate) fn grow_both<S: BatchSource>(lower: &mut S, upper: &mut S) -> bool {
    let lower = lower.grow();
    let upper = upper.grow();
    lower || upper
}

/// When the moving average enters the outer step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
pub enum AverageOrder {
    /// `x_{t+1} = x_t − α h_t`, then `h_{t+1} = h_t + θ(D_x − h_t)` (the MA-SOBA paper's
    /// box, spec §3.10). The first step uses `h_0 = 0`.
    StepWithPrevious,
    /// `h_{t+1} = h_t + θ(D_x − h_t)`, then `x_{t+1} = x_t − α h_{t+1}` (the public
    /// MA-SOBA implementation, spec §3.10; the default).
    StepWithUpdated,
}

/// A moving average `h` of the upper-level direction (momentum on the hypergradient:
/// MA-SOBA, MA-NSBO-SAGA). `h` starts at 0.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct MovingAverage<T> {
    /// Weight `θ_t ∈ (0, 1]` of the new direction (1 disables the averaging).
    pub weight: Schedule<T>,
    /// Which average the outer step uses.
    pub order: AverageOrder,
}

impl<T: Real> MovingAverage<T> {
    /// Constant weight `theta`, stepping with the updated average.
    pub fn constant(theta: T) -> Self {
        MovingAverage {
            weight: Schedule::Constant(theta),
            order: AverageOrder::StepWithUpdated,
        }
    }

    /// Checks `0 < θ_t ≤ 1` (schedules only decrease, so `θ_0` bounds them).
    pub fn validate(&self) -> Result<(), Error> {
        self.weight.validate("moving-average weight θ")?;
        ensure(self.weight.at(0) <= T::ONE, "moving-average weight θ", "≤ 1")
    }

    /// The direction for the outer step at iteration `t` given the new estimate `d` and the
    /// current average; returns `(direction, updated average)`.
    pub fn apply<const DX: usize>(&self, t: u32, average: &[T; DX], d: &[T; DX]) -> ([T; DX], [T; DX]) {
        let theta = self.weight.at(t);
        let mut next = *average;
        for j in 0..DX {
            next[j] += theta * (d[j] - average[j]);
        }
        match self.order {
            AverageOrder::StepWithPrevious => (*average, next),
            AverageOrder::StepWithUpdated => (next, next),
        }
    }
}

/// Applies an optional moving average: `(direction, new average)`; without one the
/// direction is `d` and the average is kept as it was.
pub(crate) fn averaged<T: Real, const DX: usize>(
    average: Option<&MovingAverage<T>>,
    t: u32,
    h: &[T; DX],
    d: &[T; DX],
) -> ([T; DX], [T; DX]) {
    match average {
        Some(m) => m.apply(t, h, d),
        None => (*d, *h),
    }
}

/// One SAGA table: the last value seen for each of `R` minibatches and their weighted
/// mean.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct SagaTable<T, const D: usize, const R: usize> {
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::matrix"))]
    rows: [[T; D]; R],
    #[cfg_attr(feature = "serde", serde(with = "crate::checkpoint::array"))]
    mean: [T; D],
}

impl<T: Real, const D: usize, const R: usize> Default for SagaTable<T, D, R> {
    fn default() -> Self {
        SagaTable {
            rows: [[T::ZERO; D]; R],
            mean: [T::ZERO; D],
        }
    }
}

impl<T: Real, const D: usize, const R: usize> SagaTable<T, D, R> {
    /// The SAGA step for batch `id` with weight `w` (its share of the samples), benchopt's
    /// `variance_reduction`:
    ///
    /// ```text
    /// diff ← new − table[id];  direction ← diff + mean;  mean ← mean + w·diff;  table[id] ← new
    /// ```
    ///
    /// `value` holds `new` on entry and the direction on return. An `id` beyond the table is
    /// [`Error::Capacity`].
    pub fn estimate(&mut self, id: u32, w: T, value: &mut [T; D], what: &'static str) -> Result<(), Error> {
        let row = self
            .rows
            .get_mut(id as usize)
            .ok_or(Error::Capacity { what, capacity: R })?;
        for k in 0..D {
            let diff = value[k] - row[k];
            row[k] = value[k];
            value[k] = diff + self.mean[k];
            self.mean[k] += w * diff;
        }
        Ok(())
    }

    /// The running weighted mean of the rows.
    pub fn mean(&self) -> &[T; D] {
        &self.mean
    }
}

/// The five SAGA tables of SABA (spec §3.9): per lower-level batch (`NI` rows) `∇_y g`,
/// `∇²_yy g·v` and `∇²_xy g·v`; per upper-level batch (`NO` rows) `∇_y f` and `∇_x f`.
/// Zero-initialised (benchopt's `mode_init_memory = "zero"`). Memory:
/// `NI·(2·DY + DX) + NO·(DY + DX)` floats plus one mean row per table.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize, postcard::experimental::max_size::MaxSize)
)]
#[cfg_attr(
    feature = "serde",
    serde(bound(serialize = "T: serde::Serialize", deserialize = "T: Real + serde::Deserialize<'de>"))
)]
pub struct SagaTables<T, const DX: usize, const DY: usize, const NI: usize, const NO: usize> {
    lower_grad: SagaTable<T, DY, NI>,
    lower_hvp: SagaTable<T, DY, NI>,
    lower_cross: SagaTable<T, DX, NI>,
    upper_grad_y: SagaTable<T, DY, NO>,
    upper_grad_x: SagaTable<T, DX, NO>,
}

impl<T: Real, const DX: usize, const DY: usize, const NI: usize, const NO: usize> Default
    for SagaTables<T, DX, DY, NI, NO>
{
    fn default() -> Self {
        SagaTables {
            lower_grad: SagaTable::default(),
            lower_hvp: SagaTable::default(),
            lower_cross: SagaTable::default(),
            upper_grad_y: SagaTable::default(),
            upper_grad_x: SagaTable::default(),
        }
    }
}

impl<T: Real, const DX: usize, const DY: usize, const NI: usize, const NO: usize> SagaTables<T, DX, DY, NI, NO> {
    /// Zero tables for `batches = (lower, upper)` minibatches; [`Error::Capacity`] when they
    /// exceed `NI` or `NO` rows.
    pub fn new(batches: (usize, usize)) -> Result<Self, Error> {
        if batches.0 > NI {
            return Err(Error::Capacity {
                what: "SAGA rows for lower-level minibatches",
                capacity: NI,
            });
        }
        if batches.1 > NO {
            return Err(Error::Capacity {
                what: "SAGA rows for upper-level minibatches",
                capacity: NO,
            });
        }
        Ok(Self::default())
    }

    /// The running mean of the `∇_y g` table (the SAGA estimate of the full gradient).
    pub fn lower_grad_mean(&self) -> &[T; DY] {
        self.lower_grad.mean()
    }
}

/// A problem whose oracles return SAGA estimates: each call computes the minibatch value,
/// then replaces it by `new − table[batch] + mean` and updates its table (the batch id is
/// the row; its weight is `len / n` for the level's `n` samples). Wrap a problem for one
/// outer step, then take the tables back with [`Saga::into_tables`] once the step has
/// succeeded.
///
/// Tabled oracles: `lower_grad`, `lower_hvp` (the products of one tracked vector, as
/// SABA's `v`), the second product of `lower_hvp2` (its first passes through), `lower_cross`,
/// `upper_grad`. Values and `lower_grad_x` pass through unchanged. A SAGA estimate
/// `new − table[j] + mean` is unbiased for the full-batch value at the current point
/// whatever the rows hold (batches drawn with probability equal to their weight); stale
/// rows only add variance, which vanishes as the iterates settle.
pub struct Saga<'p, P, T, const DX: usize, const DY: usize, const NI: usize, const NO: usize> {
    problem: &'p P,
    tables: RefCell<SagaTables<T, DX, DY, NI, NO>>,
}

impl<'p, P, T, const DX: usize, const DY: usize, const NI: usize, const NO: usize> Saga<'p, P, T, DX, DY, NI, NO>
where
    P: Problem<T, DX, DY>,
    T: Real,
{
    /// Wraps `problem` with `tables`.
    pub fn new(problem: &'p P, tables: SagaTables<T, DX, DY, NI, NO>) -> Self {
        Saga {
            problem,
            tables: RefCell::new(tables),
        }
    }

    /// The updated tables.
    pub fn into_tables(self) -> SagaTables<T, DX, DY, NI, NO> {
        self.tables.into_inner()
    }

    fn weight(batch: Batch, n: usize) -> T {
        T::from_f64(batch.range(n).len() as f64 / n.max(1) as f64)
    }

    fn with_tables(
        &self,
        f: impl FnOnce(&mut SagaTables<T, DX, DY, NI, NO>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        match self.tables.try_borrow_mut() {
            Ok(mut t) => f(&mut t),
            Err(_) => Err(Error::Breakdown {
                stage: "SAGA tables already in use",
            }),
        }
    }
}

const LOWER_ROWS: &str = "SAGA rows for lower-level minibatches";
const UPPER_ROWS: &str = "SAGA rows for upper-level minibatches";

impl<P, T, const DX: usize, const DY: usize, const NI: usize, const NO: usize> Problem<T, DX, DY>
    for Saga<'_, P, T, DX, DY, NI, NO>
where
    P: Problem<T, DX, DY>,
    T: Real,
{
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], b: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        self.problem.lower_grad(x, y, b, out)?;
        let w = Self::weight(b, self.problem.samples().0);
        self.with_tables(|t| t.lower_grad.estimate(b.id(), w, out, LOWER_ROWS))
    }

    fn upper_grad(&self, x: &[T; DX], y: &[T; DY], b: Batch, gx: &mut [T; DX], gy: &mut [T; DY]) -> Result<(), Error> {
        self.problem.upper_grad(x, y, b, gx, gy)?;
        let w = Self::weight(b, self.problem.samples().1);
        self.with_tables(|t| {
            t.upper_grad_x.estimate(b.id(), w, gx, UPPER_ROWS)?;
            t.upper_grad_y.estimate(b.id(), w, gy, UPPER_ROWS)
        })
    }

    fn lower_hvp(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], b: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        self.problem.lower_hvp(x, y, v, b, out)?;
        let w = Self::weight(b, self.problem.samples().0);
        self.with_tables(|t| t.lower_hvp.estimate(b.id(), w, out, LOWER_ROWS))
    }

    /// The first product is plain, the second is tabled (the tracked vector: NBO's
    /// adjoint `u` is the second of its pair).
    fn lower_hvp2(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        v1: &[T; DY],
        v2: &[T; DY],
        b: Batch,
        out1: &mut [T; DY],
        out2: &mut [T; DY],
    ) -> Result<(), Error> {
        self.problem.lower_hvp2(x, y, v1, v2, b, out1, out2)?;
        let w = Self::weight(b, self.problem.samples().0);
        self.with_tables(|t| t.lower_hvp.estimate(b.id(), w, out2, LOWER_ROWS))
    }

    fn lower_cross(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], b: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        self.problem.lower_cross(x, y, v, b, out)?;
        let w = Self::weight(b, self.problem.samples().0);
        self.with_tables(|t| t.lower_cross.estimate(b.id(), w, out, LOWER_ROWS))
    }

    fn lower_grad_x(&self, x: &[T; DX], y: &[T; DY], b: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        self.problem.lower_grad_x(x, y, b, out)
    }

    fn lower_value(&self, x: &[T; DX], y: &[T; DY], b: Batch) -> Result<T, Error> {
        self.problem.lower_value(x, y, b)
    }

    fn upper_value(&self, x: &[T; DX], y: &[T; DY], b: Batch) -> Result<T, Error> {
        self.problem.upper_value(x, y, b)
    }

    fn samples(&self) -> (usize, usize) {
        self.problem.samples()
    }
}

/// Diagnostics of a single-loop method: one lower step and one adjoint step.
pub(crate) fn single_loop_diagnostics() -> Diagnostics {
    Diagnostics {
        inner_steps: 1,
        linear_steps: 1,
        ..Diagnostics::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::problems::FiniteSum;
    use crate::sample::{Minibatches, Order};

    #[test]
    fn one_epoch_of_saga_from_zero_leaves_the_full_mean_with_a_short_last_batch() {
        // 10 samples in batches of 4: weights 0.4, 0.4, 0.2.
        let p = FiniteSum::<f64, 2, 3, 10>::random(3, 5.0, 0.1, 0.2).unwrap();
        let (x, y) = ([0.2, -0.4], [1.0, 0.5, -1.0]);
        let mut s = Minibatches::new(10, 4, Order::Shuffled, 5).unwrap();
        let saga = Saga::new(&p, SagaTables::<f64, 2, 3, 3, 3>::new((3, 3)).unwrap());
        let mut g = [0.0; 3];
        for _ in 0..3 {
            saga.lower_grad(&x, &y, s.next_batch().unwrap(), &mut g).unwrap();
        }
        // The second epoch at the same point: every row is current, so each direction is
        // the full gradient.
        saga.lower_grad(&x, &y, s.next_batch().unwrap(), &mut g).unwrap();
        let tables = saga.into_tables();
        let mut full = [0.0; 3];
        p.lower_grad(&x, &y, Batch::Full, &mut full).unwrap();
        assert!(crate::linalg::dist(tables.lower_grad_mean(), &full) < 1e-14);
        assert!(crate::linalg::dist(&g, &full) < 1e-14);
    }

    #[test]
    fn saga_estimates_average_to_the_full_batch_value_whatever_the_tables_hold() {
        // Tables filled at other points; then at (x, y) each batch's SAGA estimate, weighted
        // by its share of the samples, sums to the full-batch value (unbiased when batches
        // are drawn with probability equal to their weight).
        let p = FiniteSum::<f64, 2, 3, 10>::random(4, 5.0, 0.1, 0.2).unwrap();
        let mut s = Minibatches::new(10, 4, Order::Shuffled, 2).unwrap();
        let saga = Saga::new(&p, SagaTables::<f64, 2, 3, 3, 3>::new((3, 3)).unwrap());
        let mut g = [0.0; 3];
        let mut gx = [0.0; 2];
        for k in 0..7 {
            let (x, y) = ([0.1 * k as f64, -0.3], [1.0, k as f64, -1.0]);
            let b = s.next_batch().unwrap();
            saga.lower_grad(&x, &y, b, &mut g).unwrap();
            saga.upper_grad(&x, &y, b, &mut gx, &mut g).unwrap();
        }
        let tables = saga.into_tables();
        let (x, y) = ([0.7, 0.2], [-0.5, 0.5, 2.0]);
        let (mut sum, mut sum_f) = ([0.0; 3], [0.0; 3]);
        for (id, start, len) in [(0u32, 0u32, 4u32), (1, 4, 4), (2, 8, 2)] {
            let b = Batch::Range { id, start, len };
            let w = f64::from(len) / 10.0;
            let one = Saga::new(&p, tables.clone());
            one.lower_grad(&x, &y, b, &mut g).unwrap();
            crate::linalg::axpy(w, &g, &mut sum);
            one.upper_grad(&x, &y, b, &mut gx, &mut g).unwrap();
            crate::linalg::axpy(w, &g, &mut sum_f);
        }
        let (mut full, mut full_f) = ([0.0; 3], [0.0; 3]);
        p.lower_grad(&x, &y, Batch::Full, &mut full).unwrap();
        p.upper_grad(&x, &y, Batch::Full, &mut gx, &mut full_f).unwrap();
        assert!(crate::linalg::dist(&sum, &full) < 1e-13);
        assert!(crate::linalg::dist(&sum_f, &full_f) < 1e-13);
        // A single estimate is not the full value.
        assert!(crate::linalg::dist(&g, &full_f) > 1e-3);
    }

    #[test]
    fn tables_too_small_are_capacity_errors() {
        assert!(matches!(
            SagaTables::<f32, 1, 1, 2, 2>::new((3, 1)),
            Err(Error::Capacity { capacity: 2, .. })
        ));
        let mut t = SagaTable::<f32, 1, 2>::default();
        assert!(matches!(
            t.estimate(2, 0.5, &mut [1.0], "rows"),
            Err(Error::Capacity { capacity: 2, .. })
        ));
    }

    #[test]
    fn moving_average_orders() {
        let m = MovingAverage {
            weight: Schedule::Constant(0.25f64),
            order: AverageOrder::StepWithPrevious,
        };
        let (d, h) = m.apply(0, &[4.0], &[8.0]);
        assert_eq!((d, h), ([4.0], [5.0]));
        let (d, h) = MovingAverage::constant(0.25f64).apply(0, &[4.0], &[8.0]);
        assert_eq!((d, h), ([5.0], [5.0]));
        assert!(MovingAverage::constant(1.5f64).validate().is_err());
    }
}
