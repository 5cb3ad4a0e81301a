//! Few-shot meta-learning by biased regularization (iMAML, spec §5.4 M2) on linear
//! regression tasks: learn a shared prior `x` from which each task's model, fitted on a few
//! support samples while kept near `x`, predicts that task's query samples well.
//!
//! ```text
//! g(x, y) = (1/T) Σ_i [ Lˢᵢ(yᵢ) + (λ/2)‖yᵢ − x‖² ]        Lᵢ(y) = 1/(2m) Σ_rows (â·y − t)²
//! f(x, y) = (1/T) Σ_i Lᵠᵢ(yᵢ)                             (ˢ support, ᵠ query set of task i)
//! ```
//!
//! Each model `yᵢ = [wᵢ, bᵢ]` is affine with `DX = D + 1` entries (bias last, regularized
//! towards the prior's bias like the weights); `y` concatenates the `T` task models,
//! `DY = T·(D + 1)`, task `i` at `y[i·DX .. (i + 1)·DX]`. The loss is the halved mean squared
//! error (regression tasks), so every task's lower problem is a ridge regression centred at
//! `x` with closed form `yᵢ* = (Gᵢ + λI)⁻¹(rᵢ + λx)`, `Gᵢ`, `rᵢ` the support means of
//! `ââᵀ` and `t·â`, and
//!
//! ```text
//! ∇F(x) = (λ/T) Σ_i (Gᵢ + λI)⁻¹ ∇Lᵠᵢ(yᵢ*)
//! ```
//!
//! `g` averages over tasks rather than summing (the same `y*` and hypergradient), so a
//! minibatch [`Batch::Range`] is a meta-batch of tasks whose oracles are the mean over its
//! tasks; the blocks of tasks outside the batch are zero. `λ` is fixed in the problem.

use crate::error::{Error, ensure};
use crate::linalg;
use crate::problem::{Batch, Problem};
use crate::problems::data::{Samples, affine_gram};
use crate::problems::ridge::{half_mse, least_squares};
use crate::scalar::Real;

/// One few-shot task: the support set the task model is fitted on and the query set it is
/// scored on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Task<'a, T, const D: usize> {
    /// Samples of the task's lower-level fit.
    pub support: Samples<'a, T, D>,
    /// Samples of the task's upper-level score.
    pub query: Samples<'a, T, D>,
}

/// Biased-regularization meta-learning over `TASKS` linear regression tasks with `D`
/// features (see the module docs).
///
/// ```
/// use bilevel::problems::{MetaLearning, Samples, Task};
/// let rows = [[1.0], [-1.0], [2.0]];
/// let (t0, t1) = ([1.0, -1.0, 2.0], [3.0, 1.0, 4.0]); // t = a and t = a + 2
/// let task = |t| Task { support: Samples::new(&rows, t).unwrap(), query: Samples::new(&rows, t).unwrap() };
/// // One feature, two tasks: the prior x = [w, b], y = [w₀, b₀, w₁, b₁].
/// let p: MetaLearning<'_, f64, 1, 2, 2, 4> = MetaLearning::new([task(&t0), task(&t1)], 0.5).unwrap();
/// // The best prior sits between the two task models [1, 0] and [1, 2].
/// let g = p.hypergradient(&[1.0, 1.0]).unwrap();
/// assert!(g[0].abs() < 1e-12 && g[1].abs() < 1e-12);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetaLearning<'a, T, const D: usize, const TASKS: usize, const DX: usize, const DY: usize> {
    /// The tasks, in the order minibatches of tasks index them.
    pub tasks: [Task<'a, T, D>; TASKS],
    /// Strength `λ` of the pull of every task model towards the prior.
    pub lambda: T,
    /// The tasks in use: the first ones (the rest is capacity, never read).
    used: usize,
}

/// Task `i`'s model: entries `i·DX .. (i + 1)·DX` of `y`.
#[inline]
fn block<T: Real, const DX: usize, const DY: usize>(y: &[T; DY], i: usize) -> [T; DX] {
    core::array::from_fn(|j| y.get(i * DX + j).copied().unwrap_or(T::ZERO))
}

/// Writes task `i`'s block of `out`.
#[inline]
fn put_block<T: Real, const DX: usize, const DY: usize>(out: &mut [T; DY], i: usize, v: &[T; DX]) {
    for (o, &vj) in out.iter_mut().skip(i * DX).zip(v) {
        *o = vj;
    }
}

impl<'a, T: Real, const D: usize, const TASKS: usize, const DX: usize, const DY: usize>
    MetaLearning<'a, T, D, TASKS, DX, DY>
{
    /// The problem over `tasks` with prior strength `lambda` ([`Error::InvalidConfig`] unless
    /// positive and finite). Sizes are checked at compile time: `TASKS ≥ 1`, `DX = D + 1`,
    /// `DY = TASKS·DX`.
    pub fn new(tasks: [Task<'a, T, D>; TASKS], lambda: T) -> Result<Self, Error> {
        const {
            assert!(TASKS >= 1, "at least one task");
            assert!(DX == D + 1, "the prior is one affine model: DX = D + 1");
            assert!(DY == TASKS * DX, "y holds one model per task: DY = TASKS·(D + 1)");
        }
        ensure(lambda > T::ZERO && lambda.is_finite(), "lambda", "positive and finite")?;
        Ok(MetaLearning {
            tasks,
            lambda,
            used: TASKS,
        })
    }

    /// The problem over the first `n` tasks only (`1 ≤ n ≤ TASKS`, else
    /// [`Error::InvalidConfig`]): `F`, `g`, every oracle, [`Problem::samples`] and the full
    /// batch are those of the `n`-task problem, and the models of the other tasks stay zero.
    /// So one compiled task count serves any smaller one.
    pub fn first_tasks(self, n: usize) -> Result<Self, Error> {
        ensure(
            n >= 1 && n <= TASKS,
            "tasks in use",
            "between 1 and the compiled task count",
        )?;
        Ok(MetaLearning { used: n, ..self })
    }

    /// The tasks in use.
    pub fn tasks_in_use(&self) -> &[Task<'a, T, D>] {
        self.tasks.get(..self.used).unwrap_or(&self.tasks)
    }

    /// The tasks of `batch` (among those in use) and `1/len`; an empty batch is an error.
    fn task_batch(&self, batch: Batch) -> Result<(core::ops::Range<usize>, T), Error> {
        let r = batch.range(self.used);
        if r.is_empty() {
            return Err(Error::InvalidData {
                reason: "empty minibatch",
            });
        }
        let inv = T::ONE / T::from_f64(r.len() as f64);
        Ok((r, inv))
    }

    /// Fits a task's model from the prior `x`: `argmin_y Lˢ(y) + (λ/2)‖y − x‖²` in closed
    /// form, for a training task or a new one at meta-test time.
    pub fn adapt(&self, task: &Task<'_, T, D>, x: &[T; DX]) -> Result<[T; DX], Error> {
        let mut y = [T::ZERO; DX];
        // −∇Lˢ(0) = rᵢ.
        least_squares(&task.support, &[T::ZERO; DX], true, Batch::Full, &mut y)?;
        linalg::scale(-T::ONE, &mut y);
        linalg::axpy(self.lambda, x, &mut y);
        self.solve_task(task, &mut y)?;
        Ok(y)
    }

    /// `rhs ← (G + λI)⁻¹ rhs` with `G` the task's support Gram matrix.
    fn solve_task(&self, task: &Task<'_, T, D>, rhs: &mut [T; DX]) -> Result<(), Error> {
        let (rows, _, inv) = task.support.batch(Batch::Full);
        let mut h = affine_gram::<T, D, DX>(rows, inv);
        for (j, h_row) in h.iter_mut().enumerate() {
            h_row[j] += self.lambda;
        }
        if linalg::spd_solve(&h, rhs) {
            Ok(())
        } else {
            Err(Error::InvalidData {
                reason: "meta-learning task Hessian is not positive definite",
            })
        }
    }

    /// The exact lower solution: every task adapted from `x`.
    pub fn lower_solution(&self, x: &[T; DX]) -> Result<[T; DY], Error> {
        let mut y = [T::ZERO; DY];
        for (i, task) in self.tasks_in_use().iter().enumerate() {
            put_block(&mut y, i, &self.adapt(task, x)?);
        }
        Ok(y)
    }

    /// `F(x)`: the mean query loss of the adapted models.
    pub fn value(&self, x: &[T; DX]) -> Result<T, Error> {
        self.upper_value(x, &self.lower_solution(x)?, Batch::Full)
    }

    /// The exact hypergradient `∇F(x) = (λ/T) Σ_i (Gᵢ + λI)⁻¹ ∇Lᵠᵢ(yᵢ*)`.
    pub fn hypergradient(&self, x: &[T; DX]) -> Result<[T; DX], Error> {
        let mut out = [T::ZERO; DX];
        for task in self.tasks_in_use() {
            let y = self.adapt(task, x)?;
            let mut u = [T::ZERO; DX];
            least_squares(&task.query, &y, true, Batch::Full, &mut u)?;
            self.solve_task(task, &mut u)?;
            linalg::axpy(T::ONE, &u, &mut out);
        }
        linalg::scale(self.lambda / T::from_f64(self.used as f64), &mut out);
        Ok(out)
    }
}

impl<T: Real, const D: usize, const TASKS: usize, const DX: usize, const DY: usize> Problem<T, DX, DY>
    for MetaLearning<'_, T, D, TASKS, DX, DY>
{
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let (range, inv) = self.task_batch(batch)?;
        *out = [T::ZERO; DY];
        for (i, task) in self.tasks.iter().enumerate().take(range.end).skip(range.start) {
            let yi = block::<T, DX, DY>(y, i);
            let mut g = [T::ZERO; DX];
            least_squares(&task.support, &yi, true, Batch::Full, &mut g)?;
            for j in 0..DX {
                g[j] = inv * (g[j] + self.lambda * (yi[j] - x[j]));
            }
            put_block(out, i, &g);
        }
        Ok(())
    }

    fn upper_grad(
        &self,
        _: &[T; DX],
        y: &[T; DY],
        batch: Batch,
        gx: &mut [T; DX],
        gy: &mut [T; DY],
    ) -> Result<(), Error> {
        let (range, inv) = self.task_batch(batch)?;
        *gx = [T::ZERO; DX];
        *gy = [T::ZERO; DY];
        for (i, task) in self.tasks.iter().enumerate().take(range.end).skip(range.start) {
            let mut g = [T::ZERO; DX];
            least_squares(&task.query, &block::<T, DX, DY>(y, i), true, Batch::Full, &mut g)?;
            linalg::scale(inv, &mut g);
            put_block(gy, i, &g);
        }
        Ok(())
    }

    fn lower_hvp(&self, _: &[T; DX], _: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let (range, inv) = self.task_batch(batch)?;
        *out = [T::ZERO; DY];
        for (i, task) in self.tasks.iter().enumerate().take(range.end).skip(range.start) {
            let vi = block::<T, DX, DY>(v, i);
            let mut h = [T::ZERO; DX];
            least_squares(&task.support, &vi, false, Batch::Full, &mut h)?;
            for j in 0..DX {
                h[j] = inv * (h[j] + self.lambda * vi[j]);
            }
            put_block(out, i, &h);
        }
        Ok(())
    }

    /// `−(λ/|B|) Σ_{i∈B} vᵢ`: the prior term is the only coupling.
    fn lower_cross(&self, _: &[T; DX], _: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let (range, inv) = self.task_batch(batch)?;
        *out = [T::ZERO; DX];
        for i in range {
            linalg::axpy(T::ONE, &block::<T, DX, DY>(v, i), out);
        }
        linalg::scale(-self.lambda * inv, out);
        Ok(())
    }

    /// `−(λ/|B|) Σ_{i∈B} (yᵢ − x)`.
    fn lower_grad_x(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let (range, inv) = self.task_batch(batch)?;
        *out = [T::ZERO; DX];
        for i in range {
            let yi = block::<T, DX, DY>(y, i);
            for j in 0..DX {
                out[j] += yi[j] - x[j];
            }
        }
        linalg::scale(-self.lambda * inv, out);
        Ok(())
    }

    fn lower_value(&self, x: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        let (range, inv) = self.task_batch(batch)?;
        let mut s = T::ZERO;
        for (i, task) in self.tasks.iter().enumerate().take(range.end).skip(range.start) {
            let yi = block::<T, DX, DY>(y, i);
            let mut d = [T::ZERO; DX];
            linalg::sub(&yi, x, &mut d);
            s += half_mse(&task.support, &yi, Batch::Full)? + T::from_f64(0.5) * self.lambda * linalg::dot(&d, &d);
        }
        Ok(s * inv)
    }

    fn upper_value(&self, _: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        let (range, inv) = self.task_batch(batch)?;
        let mut s = T::ZERO;
        for (i, task) in self.tasks.iter().enumerate().take(range.end).skip(range.start) {
            s += half_mse(&task.query, &block::<T, DX, DY>(y, i), Batch::Full)?;
        }
        Ok(s * inv)
    }

    /// Tasks at both levels: a minibatch is a meta-batch.
    fn samples(&self) -> (usize, usize) {
        (self.used, self.used)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ROWS: [[f64; 1]; 3] = [[1.0], [-1.0], [2.0]];
    const T0: [f64; 3] = [1.0, -1.0, 2.0];
    const T1: [f64; 3] = [3.0, 1.0, 4.0];

    type P<'a> = MetaLearning<'a, f64, 1, 2, 2, 4>;

    fn problem() -> P<'static> {
        let s0 = Samples::new(&ROWS, &T0).unwrap();
        let s1 = Samples::new(&ROWS, &T1).unwrap();
        let tasks = [Task { support: s0, query: s0 }, Task { support: s1, query: s1 }];
        P::new(tasks, 0.5).unwrap()
    }

    #[test]
    fn the_first_tasks_of_a_larger_capacity_are_the_smaller_problem() {
        const T2: [f64; 3] = [0.5, 2.0, -1.0];
        let (s0, s1, s2) = (
            Samples::new(&ROWS, &T0).unwrap(),
            Samples::new(&ROWS, &T1).unwrap(),
            Samples::new(&ROWS, &T2).unwrap(),
        );
        let (t0, t1, t2) = (
            Task { support: s0, query: s1 },
            Task { support: s1, query: s2 },
            Task { support: s2, query: s0 },
        );
        let three: MetaLearning<'_, f64, 1, 3, 2, 6> = MetaLearning::new([t0, t1, t2], 0.7).unwrap();
        // Capacity 5, the padding a copy of task 1 (its data must never count).
        let padded: MetaLearning<'_, f64, 1, 5, 2, 10> = MetaLearning::new([t0, t1, t2, t1, t1], 0.7)
            .unwrap()
            .first_tasks(3)
            .unwrap();
        let x = [0.3, -0.4];
        assert_eq!(padded.samples(), (3, 3));
        assert_eq!(padded.hypergradient(&x).unwrap(), three.hypergradient(&x).unwrap());
        assert_eq!(padded.value(&x).unwrap(), three.value(&x).unwrap());
        let y3 = three.lower_solution(&x).unwrap();
        let y5 = padded.lower_solution(&x).unwrap();
        assert_eq!(y5[..6], y3[..]);
        assert_eq!(y5[6..], [0.0; 4]);
        let y: [f64; 10] = core::array::from_fn(|i| 0.1 * i as f64 - 0.3);
        let y_three: [f64; 6] = core::array::from_fn(|i| y[i]);
        for batch in [
            Batch::Full,
            Batch::Range {
                id: 1,
                start: 1,
                len: 2,
            },
        ] {
            let (mut g5, mut g3) = ([0.0; 10], [0.0; 6]);
            padded.lower_grad(&x, &y, batch, &mut g5).unwrap();
            three.lower_grad(&x, &y_three, batch, &mut g3).unwrap();
            assert_eq!(g5[..6], g3[..], "{batch:?}");
            assert_eq!(g5[6..], [0.0; 4], "{batch:?}");
            let (mut gx5, mut gy5, mut gx3, mut gy3) = ([0.0; 2], [0.0; 10], [0.0; 2], [0.0; 6]);
            padded.upper_grad(&x, &y, batch, &mut gx5, &mut gy5).unwrap();
            three.upper_grad(&x, &y_three, batch, &mut gx3, &mut gy3).unwrap();
            assert_eq!((gx5, &gy5[..6]), (gx3, &gy3[..]), "{batch:?}");
            assert_eq!(
                padded.lower_value(&x, &y, batch).unwrap(),
                three.lower_value(&x, &y_three, batch).unwrap()
            );
        }
        // A batch past the tasks in use is empty, hence an error.
        let past = Batch::Range {
            id: 2,
            start: 3,
            len: 2,
        };
        assert!(padded.lower_grad(&x, &y, past, &mut [0.0; 10]).is_err());
        assert!(three.first_tasks(0).is_err());
        assert!(three.first_tasks(4).is_err());
    }

    #[test]
    fn values_by_hand() {
        // Task 0 is t = a (model [1, 0]), task 1 is t = a + 2 (model [1, 2]): both fit with
        // zero loss, and g is the mean of λ/2·‖yᵢ − x‖² = ¼ each.
        let p = problem();
        let y = [1.0, 0.0, 1.0, 2.0];
        let x = [1.0, 1.0];
        let g = p.lower_value(&x, &y, Batch::Full).unwrap();
        assert!((g - 0.5 * (0.25 * 1.0 + 0.25 * 1.0)).abs() < 1e-15, "{g}");
        assert_eq!(p.upper_value(&x, &y, Batch::Full).unwrap(), 0.0);
        // With a vanishing pull each task recovers its own model.
        let p = P::new(p.tasks, 1e-9).unwrap();
        let ys = p.lower_solution(&[0.0, 0.0]).unwrap();
        assert!(linalg::dist(&ys, &y) < 1e-6, "{ys:?}");
    }

    #[test]
    fn a_batch_of_one_task_touches_only_its_block() {
        let p = problem();
        let (x, y) = ([0.3, -0.2], [0.5, 0.1, -0.4, 0.9]);
        let mut g = [1.0; 4];
        p.lower_grad(
            &x,
            &y,
            Batch::Range {
                id: 1,
                start: 1,
                len: 1,
            },
            &mut g,
        )
        .unwrap();
        assert!(g[0] == 0.0 && g[1] == 0.0 && g[2] != 0.0 && g[3] != 0.0);
        let mut c = [0.0; 2];
        p.lower_cross(
            &x,
            &y,
            &y,
            Batch::Range {
                id: 1,
                start: 1,
                len: 1,
            },
            &mut c,
        )
        .unwrap();
        assert_eq!(c, [-0.5 * -0.4, -0.5 * 0.9]);
    }

    #[test]
    fn the_adapted_models_zero_the_gradient() {
        let p = problem();
        let x = [0.7, -1.3];
        let y = p.lower_solution(&x).unwrap();
        let mut g = [0.0; 4];
        p.lower_grad(&x, &y, Batch::Full, &mut g).unwrap();
        assert!(linalg::norm(&g) < 1e-14, "{g:?}");
    }

    #[test]
    fn bad_strengths_are_rejected() {
        let p = problem();
        for bad in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(matches!(
                P::new(p.tasks, bad),
                Err(Error::InvalidConfig { field: "lambda", .. })
            ));
        }
    }
}
