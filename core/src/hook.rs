//! The oracle seam: [`Hooked`] forwards every oracle of a [`Problem`] and lets a [`Hook`] act
//! before each call (refuse it, count it, change its batch) and after it (check or rewrite
//! its outputs). Counting, finiteness checks and training on the first rows of padded data
//! are hooks ([`Counter`], [`Finite`], [`FirstRows`]), as are the tests' fault injectors, so
//! a new oracle is forwarded once, here, and every wrapper has it.

use core::cell::Cell;

use crate::error::{Error, Oracle};
use crate::problem::{Batch, OracleCounts, Problem};
use crate::scalar::Real;

/// One call through the seam: the oracle method called (fused calls have their own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Call {
    /// [`Problem::lower_grad`].
    LowerGrad,
    /// [`Problem::upper_grad`].
    UpperGrad,
    /// [`Problem::lower_hvp`].
    LowerHvp,
    /// [`Problem::lower_grad_hvp`].
    LowerGradHvp,
    /// [`Problem::lower_hvp2`].
    LowerHvp2,
    /// [`Problem::lower_cross`].
    LowerCross,
    /// [`Problem::lower_grad_x`].
    LowerGradX,
    /// [`Problem::lower_value`].
    LowerValue,
    /// [`Problem::upper_value`].
    UpperValue,
}

impl Call {
    /// Every call, in declaration order.
    pub const ALL: [Call; 9] = [
        Call::LowerGrad,
        Call::UpperGrad,
        Call::LowerHvp,
        Call::LowerGradHvp,
        Call::LowerHvp2,
        Call::LowerCross,
        Call::LowerGradX,
        Call::LowerValue,
        Call::UpperValue,
    ];

    /// The oracle calls this call stands for: a fused call counts as each of its parts.
    pub const fn oracles(self) -> &'static [Oracle] {
        match self {
            Call::LowerGrad => &[Oracle::LowerGrad],
            Call::UpperGrad => &[Oracle::UpperGrad],
            Call::LowerHvp => &[Oracle::LowerHvp],
            Call::LowerGradHvp => &[Oracle::LowerGrad, Oracle::LowerHvp],
            Call::LowerHvp2 => &[Oracle::LowerHvp, Oracle::LowerHvp],
            Call::LowerCross => &[Oracle::LowerCross],
            Call::LowerGradX => &[Oracle::LowerGradX],
            Call::LowerValue => &[Oracle::LowerValue],
            Call::UpperValue => &[Oracle::UpperValue],
        }
    }

    /// The oracle that writes each output, in argument order (`∇_x f` and `∇_y f` are both
    /// the upper gradient's).
    pub const fn outputs(self) -> &'static [Oracle] {
        match self {
            Call::UpperGrad => &[Oracle::UpperGrad, Oracle::UpperGrad],
            other => other.oracles(),
        }
    }

    /// Whether the call is one of the lower level `g` (its batches are lower-level samples).
    pub const fn is_lower(self) -> bool {
        !matches!(self, Call::UpperGrad | Call::UpperValue)
    }
}

/// What a [`Hooked`] problem does around each oracle call. Every method has a default that
/// does nothing, so a hook names only what it changes.
pub trait Hook {
    /// Before `call` on `batch`: the batch the problem is called on, or an error that stops
    /// the call before the problem sees it.
    fn before(&self, call: Call, batch: Batch) -> Result<Batch, Error> {
        let _ = call;
        Ok(batch)
    }

    /// After a successful `call`, with its outputs in argument order (a value is an output of
    /// one entry): an error here is the call's error.
    fn after<T: Real>(&self, call: Call, outputs: &mut [&mut [T]]) -> Result<(), Error> {
        let _ = (call, outputs);
        Ok(())
    }

    /// The sample counts the callers see, from the problem's.
    fn samples(&self, samples: (usize, usize)) -> (usize, usize) {
        samples
    }
}

/// A problem whose oracle calls pass through `hook`.
///
/// ```
/// use bilevel::hook::{Call, Hook, Hooked};
/// use bilevel::problem::{Batch, Problem};
/// use bilevel::problems::Quadratic;
/// use bilevel::{Error, Real};
///
/// /// Doubles every lower gradient.
/// struct Double;
/// impl Hook for Double {
///     fn after<T: Real>(&self, call: Call, outputs: &mut [&mut [T]]) -> Result<(), Error> {
///         if call == Call::LowerGrad {
///             outputs.iter_mut().flat_map(|o| o.iter_mut()).for_each(|v| *v += *v);
///         }
///         Ok(())
///     }
/// }
/// let q = Quadratic::<f64, 2, 3>::random(7, 10.0, 0.1);
/// let (mut g, mut h) = ([0.0; 3], [0.0; 3]);
/// q.lower_grad(&[0.5; 2], &[1.0; 3], Batch::Full, &mut g).unwrap();
/// Hooked::wrap(&q, Double).lower_grad(&[0.5; 2], &[1.0; 3], Batch::Full, &mut h).unwrap();
/// assert_eq!(h, g.map(|v| 2.0 * v));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Hooked<P, H> {
    /// The problem.
    pub inner: P,
    /// What happens around its calls.
    pub hook: H,
}

impl<P, H> Hooked<P, H> {
    /// `inner` with `hook` around its calls.
    pub const fn wrap(inner: P, hook: H) -> Self {
        Hooked { inner, hook }
    }
}

impl<T: Real, const DX: usize, const DY: usize, P: Problem<T, DX, DY>, H: Hook> Problem<T, DX, DY> for Hooked<P, H> {
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], b: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let b = self.hook.before(Call::LowerGrad, b)?;
        self.inner.lower_grad(x, y, b, out)?;
        self.hook.after(Call::LowerGrad, &mut [out])
    }
    fn upper_grad(&self, x: &[T; DX], y: &[T; DY], b: Batch, gx: &mut [T; DX], gy: &mut [T; DY]) -> Result<(), Error> {
        let b = self.hook.before(Call::UpperGrad, b)?;
        self.inner.upper_grad(x, y, b, gx, gy)?;
        self.hook.after(Call::UpperGrad, &mut [gx, gy])
    }
    fn lower_hvp(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], b: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let b = self.hook.before(Call::LowerHvp, b)?;
        self.inner.lower_hvp(x, y, v, b, out)?;
        self.hook.after(Call::LowerHvp, &mut [out])
    }
    fn lower_grad_hvp(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        v: &[T; DY],
        b: Batch,
        grad: &mut [T; DY],
        hvp: &mut [T; DY],
    ) -> Result<(), Error> {
        let b = self.hook.before(Call::LowerGradHvp, b)?;
        self.inner.lower_grad_hvp(x, y, v, b, grad, hvp)?;
        self.hook.after(Call::LowerGradHvp, &mut [grad, hvp])
    }
    fn lower_hvp2(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        v1: &[T; DY],
        v2: &[T; DY],
        b: Batch,
        o1: &mut [T; DY],
        o2: &mut [T; DY],
    ) -> Result<(), Error> {
        let b = self.hook.before(Call::LowerHvp2, b)?;
        self.inner.lower_hvp2(x, y, v1, v2, b, o1, o2)?;
        self.hook.after(Call::LowerHvp2, &mut [o1, o2])
    }
    fn lower_cross(&self, x: &[T; DX], y: &[T; DY], v: &[T; DY], b: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let b = self.hook.before(Call::LowerCross, b)?;
        self.inner.lower_cross(x, y, v, b, out)?;
        self.hook.after(Call::LowerCross, &mut [out])
    }
    fn lower_grad_x(&self, x: &[T; DX], y: &[T; DY], b: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        let b = self.hook.before(Call::LowerGradX, b)?;
        self.inner.lower_grad_x(x, y, b, out)?;
        self.hook.after(Call::LowerGradX, &mut [out])
    }
    fn lower_value(&self, x: &[T; DX], y: &[T; DY], b: Batch) -> Result<T, Error> {
        let b = self.hook.before(Call::LowerValue, b)?;
        let mut v = self.inner.lower_value(x, y, b)?;
        self.hook
            .after(Call::LowerValue, &mut [core::slice::from_mut(&mut v)])?;
        Ok(v)
    }
    fn upper_value(&self, x: &[T; DX], y: &[T; DY], b: Batch) -> Result<T, Error> {
        let b = self.hook.before(Call::UpperValue, b)?;
        let mut v = self.inner.upper_value(x, y, b)?;
        self.hook
            .after(Call::UpperValue, &mut [core::slice::from_mut(&mut v)])?;
        Ok(v)
    }
    fn samples(&self) -> (usize, usize) {
        self.hook.samples(self.inner.samples())
    }
}

/// Counts every oracle call, a fused call as its parts (the x-axis of every comparison).
#[derive(Debug, Default)]
pub struct Counter(Cell<OracleCounts>);

impl Counter {
    /// The counts so far.
    pub fn counts(&self) -> OracleCounts {
        self.0.get()
    }
}

impl Hook for Counter {
    /// [`Call::oracles`] written out: a loop over that table costs the C library about 2.4 KB
    /// of flash per method (`tests::the_counter_counts_what_each_call_stands_for`).
    fn before(&self, call: Call, batch: Batch) -> Result<Batch, Error> {
        let mut c = self.0.get();
        match call {
            Call::LowerGrad => c.lower_grad += 1,
            Call::UpperGrad => c.upper_grad += 1,
            Call::LowerHvp => c.lower_hvp += 1,
            Call::LowerGradHvp => {
                c.lower_grad += 1;
                c.lower_hvp += 1;
            }
            Call::LowerHvp2 => c.lower_hvp += 2,
            Call::LowerCross => c.lower_cross += 1,
            Call::LowerGradX => c.lower_grad_x += 1,
            Call::LowerValue => c.lower_value += 1,
            Call::UpperValue => c.upper_value += 1,
        }
        self.0.set(c);
        Ok(batch)
    }
}

/// A problem that counts every oracle call made through it.
///
/// ```
/// use bilevel::problem::{Batch, Counted, Problem};
/// use bilevel::problems::Quadratic;
/// let q = Counted::new(Quadratic::<f64, 2, 3>::random(7, 10.0, 0.1));
/// let mut g = [0.0; 3];
/// q.lower_grad(&[0.0; 2], &[0.0; 3], Batch::Full, &mut g).unwrap();
/// assert_eq!(q.counts().lower_grad, 1);
/// ```
pub type Counted<P> = Hooked<P, Counter>;

impl<P> Hooked<P, Counter> {
    /// Wraps a problem with all counts at zero.
    pub fn new(inner: P) -> Self {
        Hooked::wrap(inner, Counter::default())
    }
    /// The counts so far.
    pub fn counts(&self) -> OracleCounts {
        self.hook.counts()
    }
    /// Sets all counts to zero.
    pub fn reset(&self) {
        self.hook.0.set(OracleCounts::default());
    }
    /// The wrapped problem.
    pub fn inner(&self) -> &P {
        &self.inner
    }
    /// Unwraps the problem.
    pub fn into_inner(self) -> P {
        self.inner
    }
}

/// Turns a NaN or infinite output into [`Error::NonFinite`] naming the oracle and `stage`.
#[derive(Clone, Copy, Debug)]
pub struct Finite {
    /// The solver stage reported in errors.
    pub stage: &'static str,
}

impl Hook for Finite {
    fn after<T: Real>(&self, call: Call, outputs: &mut [&mut [T]]) -> Result<(), Error> {
        for (out, &oracle) in outputs.iter().zip(call.outputs()) {
            if !out.iter().all(|v| v.is_finite()) {
                return Err(Error::NonFinite {
                    oracle: Some(oracle),
                    stage: self.stage,
                });
            }
        }
        Ok(())
    }
}

/// Oracle calls that check their outputs (the [`Finite`] hook). Solvers call problems only
/// through this, so a bad sample never reaches their state.
pub type Checked<'p, P> = Hooked<&'p P, Finite>;

impl<'p, P> Hooked<&'p P, Finite> {
    /// Wraps `problem`, naming `stage` in errors.
    pub const fn new(problem: &'p P, stage: &'static str) -> Self {
        Hooked::wrap(problem, Finite { stage })
    }

    /// The solver stage reported in errors.
    pub const fn stage(&self) -> &'static str {
        self.hook.stage
    }
}

/// Training on the first `rows` lower-level samples of a problem padded with more: every
/// lower-level full-batch call becomes the batch of those rows, and [`Problem::samples`]
/// counts only them, so samplers never draw the padding. Upper-level calls are unchanged.
#[derive(Clone, Copy, Debug)]
pub struct FirstRows {
    /// The real rows (the first ones).
    pub rows: u32,
}

impl Hook for FirstRows {
    fn before(&self, call: Call, batch: Batch) -> Result<Batch, Error> {
        Ok(match batch {
            Batch::Full if call.is_lower() => Batch::Range {
                id: 0,
                start: 0,
                len: self.rows,
            },
            other => other,
        })
    }
    fn samples(&self, samples: (usize, usize)) -> (usize, usize) {
        (self.rows as usize, samples.1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::problems::Quadratic;

    #[test]
    fn every_oracle_passes_the_hooks_with_its_batch_and_outputs() {
        let q = Quadratic::<f64, 2, 3>::random(3, 10.0, 0.5);
        let p = Counted::new(Hooked::wrap(&q, FirstRows { rows: 1 }));
        let (x, y, v) = ([0.3, -0.2], [0.1, 0.4, -0.5], [1.0, 0.0, 2.0]);
        let (mut a, mut b, mut gx, mut c) = ([0.0; 3], [0.0; 3], [0.0; 2], [0.0; 3]);
        p.lower_grad(&x, &y, Batch::Full, &mut a).unwrap();
        p.upper_grad(&x, &y, Batch::Full, &mut gx, &mut b).unwrap();
        p.lower_hvp(&x, &y, &v, Batch::Full, &mut a).unwrap();
        p.lower_grad_hvp(&x, &y, &v, Batch::Full, &mut a, &mut b).unwrap();
        p.lower_hvp2(&x, &y, &v, &y, Batch::Full, &mut a, &mut c).unwrap();
        p.lower_cross(&x, &y, &v, Batch::Full, &mut gx).unwrap();
        p.lower_grad_x(&x, &y, Batch::Full, &mut gx).unwrap();
        p.lower_value(&x, &y, Batch::Full).unwrap();
        p.upper_value(&x, &y, Batch::Full).unwrap();
        let n = p.counts();
        let expected = OracleCounts {
            lower_grad: 2,
            upper_grad: 1,
            lower_hvp: 4,
            lower_cross: 1,
            lower_grad_x: 1,
            lower_value: 1,
            upper_value: 1,
        };
        assert_eq!(n, expected);
        assert_eq!(p.samples(), (1, 1));

        // The product of the first rows is the product on the batch of those rows.
        let mut direct = [0.0; 3];
        let rows = Batch::Range {
            id: 0,
            start: 0,
            len: 1,
        };
        q.lower_hvp(&x, &y, &v, rows, &mut direct).unwrap();
        p.lower_hvp(&x, &y, &v, Batch::Full, &mut a).unwrap();
        assert_eq!(a, direct);
    }

    #[test]
    fn the_counter_counts_what_each_call_stands_for() {
        for call in Call::ALL {
            let (counter, mut expected) = (Counter::default(), OracleCounts::default());
            counter.before(call, Batch::Full).unwrap();
            for &o in call.oracles() {
                *expected.of_mut(o) += 1;
            }
            assert_eq!(counter.counts(), expected, "{call:?}");
        }
    }

    #[test]
    fn a_non_finite_output_names_its_oracle_and_stage() {
        struct Poison(Call, usize);
        impl Hook for Poison {
            fn after<T: Real>(&self, call: Call, outputs: &mut [&mut [T]]) -> Result<(), Error> {
                if call == self.0
                    && let Some(o) = outputs.get_mut(self.1)
                {
                    o.fill(T::from_f64(f64::NAN));
                }
                Ok(())
            }
        }
        let q = Quadratic::<f64, 2, 3>::random(3, 10.0, 0.5);
        let (x, y, v) = ([0.3, -0.2], [0.1, 0.4, -0.5], [1.0, 0.0, 2.0]);
        for (call, i, oracle) in [
            (Call::LowerGradHvp, 0, Oracle::LowerGrad),
            (Call::LowerGradHvp, 1, Oracle::LowerHvp),
            (Call::UpperGrad, 1, Oracle::UpperGrad),
            (Call::LowerHvp2, 1, Oracle::LowerHvp),
        ] {
            let poisoned = Hooked::wrap(&q, Poison(call, i));
            let checked = Checked::new(&poisoned, "test");
            let (mut a, mut b, mut gx) = ([0.0; 3], [0.0; 3], [0.0; 2]);
            let r = match call {
                Call::LowerGradHvp => checked.lower_grad_hvp(&x, &y, &v, Batch::Full, &mut a, &mut b),
                Call::UpperGrad => checked.upper_grad(&x, &y, Batch::Full, &mut gx, &mut a),
                _ => checked.lower_hvp2(&x, &y, &v, &y, Batch::Full, &mut a, &mut b),
            };
            assert_eq!(
                r,
                Err(Error::NonFinite {
                    oracle: Some(oracle),
                    stage: "test"
                }),
                "{call:?} output {i}"
            );
        }
    }
}
