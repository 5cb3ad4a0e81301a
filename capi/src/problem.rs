//! Problems as C describes them: callbacks with a context pointer, or the built-in logistic
//! regression on caller-owned arrays. Both are seen by the solvers at the fixed maximum sizes
//! (`BL_MAX_DX`, `BL_MAX_DY`); the unused coordinates are inert (`g` adds `½‖y_unused‖²`, which
//! keeps them at 0, and nothing depends on unused `x`), so the used ones follow the same
//! iterates as at their own size.

use core::ffi::c_void;

use bilevel::problem::FiniteDiff;
use bilevel::problems::{Logistic, Ridge, Samples};
use bilevel::smoothness::Smoothness;
use bilevel::{Batch, Error, Oracle, Problem};

/// Largest upper-level dimension.
pub const BL_MAX_DX: u32 = 32;
/// Largest lower-level dimension.
pub const BL_MAX_DY: u32 = 32;
/// Feature columns of a built-in logistic-regression row (pad unused columns with 0; the lower
/// variable holds these weights and the bias).
pub const BL_LOGREG_FEATURES: u32 = 31;

pub(crate) const DX: usize = BL_MAX_DX as usize;
pub(crate) const DY: usize = BL_MAX_DY as usize;
const FEATURES: usize = BL_LOGREG_FEATURES as usize;

/// Problem kind: C callbacks.
pub const BL_PROBLEM_CALLBACKS: u32 = 1;
/// Problem kind: built-in logistic regression, one L2 strength (`dx = 1`).
pub const BL_PROBLEM_LOGISTIC: u32 = 2;
/// Problem kind: built-in logistic regression, one L2 strength per feature (`dx = 31`).
pub const BL_PROBLEM_LOGISTIC_PER_FEATURE: u32 = 3;
/// Problem kind: built-in ridge regression (squared loss), one L2 strength (`dx = 1`).
pub const BL_PROBLEM_RIDGE: u32 = 4;

/// `∇_y g(x, y)` into `out` (`dy` floats). `start`, `len`: the minibatch of lower-level samples
/// (`len = 0`: all samples). Returns 0, or a non-zero code that stops the step.
pub type BlLowerGrad = Option<
    unsafe extern "C" fn(ctx: *mut c_void, x: *const f32, y: *const f32, start: u32, len: u32, out: *mut f32) -> i32,
>;
/// `∇_x f(x, y)` into `gx` (`dx` floats) and `∇_y f(x, y)` into `gy` (`dy` floats), on the
/// minibatch `start`, `len` of upper-level samples.
pub type BlUpperGrad = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        x: *const f32,
        y: *const f32,
        start: u32,
        len: u32,
        gx: *mut f32,
        gy: *mut f32,
    ) -> i32,
>;
/// A product with a second derivative of `g`: `∇²_yy g · v` (`dy` floats out) or
/// `∇²_xy g · v` (`dx` floats out).
pub type BlProduct = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        x: *const f32,
        y: *const f32,
        v: *const f32,
        start: u32,
        len: u32,
        out: *mut f32,
    ) -> i32,
>;

/// A problem given by C functions. `lower_grad` and `upper_grad` are required; without
/// `lower_hvp` / `lower_cross` the products are central differences of `lower_grad` (the cross
/// product then costs `2·BL_MAX_DX` gradient calls).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlCallbacks {
    /// Passed unchanged to every callback.
    pub ctx: *mut c_void,
    /// Upper-level dimension (1 to `BL_MAX_DX`).
    pub dx: u32,
    /// Lower-level dimension (1 to `BL_MAX_DY`).
    pub dy: u32,
    /// Lower-level samples (for minibatch methods; 0 if the callbacks ignore batches).
    pub n_lower: u32,
    /// Upper-level samples (0 if the callbacks ignore batches).
    pub n_upper: u32,
    /// Lipschitz constant `L` of `∇_y g` (an upper bound); the default lower-level steps are
    /// `1/L`. 0 if unknown: `bl_default_config` then refuses, and the steps must be set.
    pub lower_smoothness: f32,
    /// ∇_y g.
    pub lower_grad: BlLowerGrad,
    /// ∇_x f and ∇_y f.
    pub upper_grad: BlUpperGrad,
    /// ∇²_yy g · v, optional.
    pub lower_hvp: BlProduct,
    /// ∇²_xy g · v, optional.
    pub lower_cross: BlProduct,
}

/// Training and validation data of the built-in problems: caller-owned rows of
/// `BL_LOGREG_FEATURES` floats (row-major) and one target per row (0/1 labels for logistic
/// regression, real targets for ridge regression). Both problems use mean losses and the L2
/// strength `e^x` on the weights, bias unpenalized.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlDataset {
    /// `n_train × BL_LOGREG_FEATURES` features.
    pub train_features: *const f32,
    /// `n_train` labels.
    pub train_labels: *const f32,
    /// Training rows (the lower level).
    pub n_train: u32,
    /// `n_val × BL_LOGREG_FEATURES` features.
    pub val_features: *const f32,
    /// `n_val` labels.
    pub val_labels: *const f32,
    /// Validation rows (the upper level).
    pub n_val: u32,
}

/// A problem: `kind` selects which member is read.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlProblem {
    /// `BL_PROBLEM_CALLBACKS`, `BL_PROBLEM_LOGISTIC` or `BL_PROBLEM_LOGISTIC_PER_FEATURE`.
    pub kind: u32,
    /// For `BL_PROBLEM_CALLBACKS`.
    pub callbacks: BlCallbacks,
    /// For the built-in kinds (logistic and ridge regression).
    pub data: BlDataset,
}

/// `(start, len)` of a batch for C (`len = 0`: all samples).
fn batch_args(batch: Batch) -> (u32, u32) {
    match batch {
        Batch::Full => (0, 0),
        Batch::Range { start, len, .. } => (start, len.max(1)),
    }
}

fn failed(oracle: Oracle, code: i32) -> Result<(), Error> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::OracleFailed { oracle, code })
    }
}

/// The callbacks as a problem at the maximum sizes.
pub(crate) struct CallbackProblem<'a> {
    cb: &'a BlCallbacks,
    dx: usize,
    dy: usize,
}

impl<'a> CallbackProblem<'a> {
    /// Checks dimensions and the required callbacks.
    pub(crate) fn new(cb: &'a BlCallbacks) -> Result<Self, u32> {
        use crate::status::{BL_ERR_NULL, BL_ERR_SIZE};
        if cb.dx == 0 || cb.dx > BL_MAX_DX || cb.dy == 0 || cb.dy > BL_MAX_DY {
            return Err(BL_ERR_SIZE);
        }
        if cb.lower_grad.is_none() || cb.upper_grad.is_none() {
            return Err(BL_ERR_NULL);
        }
        Ok(CallbackProblem {
            cb,
            dx: cb.dx as usize,
            dy: cb.dy as usize,
        })
    }
}

impl Problem<f32, DX, DY> for CallbackProblem<'_> {
    fn lower_grad(&self, x: &[f32; DX], y: &[f32; DY], batch: Batch, out: &mut [f32; DY]) -> Result<(), Error> {
        let f = self.cb.lower_grad.ok_or(Error::Unsupported {
            oracle: Oracle::LowerGrad,
        })?;
        let (start, len) = batch_args(batch);
        // SAFETY: the caller promised a callback that reads `dx`/`dy` floats from `x`/`y` and
        // writes `dy` floats to `out`; all three arrays hold the maxima.
        let code = unsafe { f(self.cb.ctx, x.as_ptr(), y.as_ptr(), start, len, out.as_mut_ptr()) };
        failed(Oracle::LowerGrad, code)?;
        out.iter_mut().zip(y).skip(self.dy).for_each(|(o, y)| *o = *y);
        Ok(())
    }

    fn upper_grad(
        &self,
        x: &[f32; DX],
        y: &[f32; DY],
        batch: Batch,
        gx: &mut [f32; DX],
        gy: &mut [f32; DY],
    ) -> Result<(), Error> {
        let f = self.cb.upper_grad.ok_or(Error::Unsupported {
            oracle: Oracle::UpperGrad,
        })?;
        let (start, len) = batch_args(batch);
        // SAFETY: as in `lower_grad`, with `dx` floats to `gx` and `dy` floats to `gy`.
        let code = unsafe {
            f(
                self.cb.ctx,
                x.as_ptr(),
                y.as_ptr(),
                start,
                len,
                gx.as_mut_ptr(),
                gy.as_mut_ptr(),
            )
        };
        failed(Oracle::UpperGrad, code)?;
        gx.iter_mut().skip(self.dx).for_each(|g| *g = 0.0);
        gy.iter_mut().skip(self.dy).for_each(|g| *g = 0.0);
        Ok(())
    }

    fn lower_hvp(
        &self,
        x: &[f32; DX],
        y: &[f32; DY],
        v: &[f32; DY],
        batch: Batch,
        out: &mut [f32; DY],
    ) -> Result<(), Error> {
        let Some(f) = self.cb.lower_hvp else {
            return FiniteDiff(self).lower_hvp(x, y, v, batch, out);
        };
        let (start, len) = batch_args(batch);
        // SAFETY: as in `lower_grad`, reading `dy` floats from `v`.
        let code = unsafe {
            f(
                self.cb.ctx,
                x.as_ptr(),
                y.as_ptr(),
                v.as_ptr(),
                start,
                len,
                out.as_mut_ptr(),
            )
        };
        failed(Oracle::LowerHvp, code)?;
        out.iter_mut().zip(v).skip(self.dy).for_each(|(o, v)| *o = *v);
        Ok(())
    }

    fn lower_cross(
        &self,
        x: &[f32; DX],
        y: &[f32; DY],
        v: &[f32; DY],
        batch: Batch,
        out: &mut [f32; DX],
    ) -> Result<(), Error> {
        let Some(f) = self.cb.lower_cross else {
            return FiniteDiff(self).lower_cross(x, y, v, batch, out);
        };
        let (start, len) = batch_args(batch);
        // SAFETY: as in `lower_hvp`, writing `dx` floats to `out`.
        let code = unsafe {
            f(
                self.cb.ctx,
                x.as_ptr(),
                y.as_ptr(),
                v.as_ptr(),
                start,
                len,
                out.as_mut_ptr(),
            )
        };
        failed(Oracle::LowerCross, code)?;
        out.iter_mut().skip(self.dx).for_each(|o| *o = 0.0);
        Ok(())
    }

    fn samples(&self) -> (usize, usize) {
        (self.cb.n_lower as usize, self.cb.n_upper as usize)
    }
}

/// A problem with `DXI ≤ BL_MAX_DX` hyperparameters seen at `BL_MAX_DX`: the unused
/// coordinates of `x` have zero derivatives.
pub(crate) struct PadX<P, const DXI: usize>(pub P);

impl<P, const DXI: usize> PadX<P, DXI> {
    fn x(x: &[f32; DX]) -> [f32; DXI] {
        core::array::from_fn(|i| x[i])
    }
    fn widen(inner: &[f32; DXI], out: &mut [f32; DX]) {
        *out = [0.0; DX];
        out.iter_mut().zip(inner).for_each(|(o, v)| *o = *v);
    }
}

impl<P: Problem<f32, DXI, DY>, const DXI: usize> Problem<f32, DX, DY> for PadX<P, DXI> {
    fn lower_grad(&self, x: &[f32; DX], y: &[f32; DY], b: Batch, out: &mut [f32; DY]) -> Result<(), Error> {
        self.0.lower_grad(&Self::x(x), y, b, out)
    }
    fn upper_grad(
        &self,
        x: &[f32; DX],
        y: &[f32; DY],
        b: Batch,
        gx: &mut [f32; DX],
        gy: &mut [f32; DY],
    ) -> Result<(), Error> {
        let mut g = [0.0; DXI];
        self.0.upper_grad(&Self::x(x), y, b, &mut g, gy)?;
        Self::widen(&g, gx);
        Ok(())
    }
    fn lower_hvp(
        &self,
        x: &[f32; DX],
        y: &[f32; DY],
        v: &[f32; DY],
        b: Batch,
        out: &mut [f32; DY],
    ) -> Result<(), Error> {
        self.0.lower_hvp(&Self::x(x), y, v, b, out)
    }
    fn lower_grad_hvp(
        &self,
        x: &[f32; DX],
        y: &[f32; DY],
        v: &[f32; DY],
        b: Batch,
        grad: &mut [f32; DY],
        hvp: &mut [f32; DY],
    ) -> Result<(), Error> {
        self.0.lower_grad_hvp(&Self::x(x), y, v, b, grad, hvp)
    }
    fn lower_hvp2(
        &self,
        x: &[f32; DX],
        y: &[f32; DY],
        v1: &[f32; DY],
        v2: &[f32; DY],
        b: Batch,
        o1: &mut [f32; DY],
        o2: &mut [f32; DY],
    ) -> Result<(), Error> {
        self.0.lower_hvp2(&Self::x(x), y, v1, v2, b, o1, o2)
    }
    fn lower_cross(
        &self,
        x: &[f32; DX],
        y: &[f32; DY],
        v: &[f32; DY],
        b: Batch,
        out: &mut [f32; DX],
    ) -> Result<(), Error> {
        let mut c = [0.0; DXI];
        self.0.lower_cross(&Self::x(x), y, v, b, &mut c)?;
        Self::widen(&c, out);
        Ok(())
    }
    fn lower_grad_x(&self, x: &[f32; DX], y: &[f32; DY], b: Batch, out: &mut [f32; DX]) -> Result<(), Error> {
        let mut c = [0.0; DXI];
        self.0.lower_grad_x(&Self::x(x), y, b, &mut c)?;
        Self::widen(&c, out);
        Ok(())
    }
    fn lower_value(&self, x: &[f32; DX], y: &[f32; DY], b: Batch) -> Result<f32, Error> {
        self.0.lower_value(&Self::x(x), y, b)
    }
    fn upper_value(&self, x: &[f32; DX], y: &[f32; DY], b: Batch) -> Result<f32, Error> {
        self.0.upper_value(&Self::x(x), y, b)
    }
    fn samples(&self) -> (usize, usize) {
        self.0.samples()
    }
}

/// Rows and labels from C pointers.
///
/// # Safety
/// `features` must point to `n·BL_LOGREG_FEATURES` floats and `labels` to `n` floats, valid
/// for `'a`.
unsafe fn samples<'a>(features: *const f32, labels: *const f32, n: u32) -> Result<Samples<'a, f32, FEATURES>, u32> {
    use crate::status::{BL_ERR_DATA, BL_ERR_NULL};
    if features.is_null() || labels.is_null() {
        return Err(BL_ERR_NULL);
    }
    let n = n as usize;
    // SAFETY: the caller's promise above.
    let flat = unsafe { core::slice::from_raw_parts(features, n * FEATURES) };
    // SAFETY: as above.
    let labels = unsafe { core::slice::from_raw_parts(labels, n) };
    let (rows, _) = flat.as_chunks::<FEATURES>();
    Samples::new(rows, labels).map_err(|_| BL_ERR_DATA)
}

/// The built-in logistic problem of `l` with `DXI` strengths (1 or 31).
///
/// # Safety
/// As for [`samples`], for both the training and the validation arrays.
pub(crate) unsafe fn logistic<'a, const DXI: usize>(
    l: &BlDataset,
) -> Result<PadX<Logistic<'a, f32, FEATURES, DXI, DY>, DXI>, u32> {
    // SAFETY: forwarded from the caller.
    let train = unsafe { samples(l.train_features, l.train_labels, l.n_train)? };
    // SAFETY: as above.
    let val = unsafe { samples(l.val_features, l.val_labels, l.n_val)? };
    let p = Logistic::new(train, val).map_err(|_| crate::status::BL_ERR_DATA)?;
    Ok(PadX(p))
}

/// The built-in ridge problem of `l` (one strength).
///
/// # Safety
/// As for [`samples`], for both the training and the validation arrays.
pub(crate) unsafe fn ridge<'a>(l: &BlDataset) -> Result<PadX<Ridge<'a, f32, FEATURES, 1, DY>, 1>, u32> {
    // SAFETY: forwarded from the caller.
    let train = unsafe { samples(l.train_features, l.train_labels, l.n_train)? };
    // SAFETY: as above.
    let val = unsafe { samples(l.val_features, l.val_labels, l.n_val)? };
    let p = Ridge::new(train, val).map_err(|_| crate::status::BL_ERR_DATA)?;
    Ok(PadX(p))
}

/// Checks `problem` and returns its `(dx, dy, samples)`.
///
/// # Safety
/// The problem's pointers must be valid as documented on `BlProblem`.
pub(crate) unsafe fn shape(problem: &BlProblem) -> Result<(u32, u32, (usize, usize)), u32> {
    use crate::status::BL_ERR_KIND;
    match problem.kind {
        BL_PROBLEM_CALLBACKS => {
            let p = CallbackProblem::new(&problem.callbacks)?;
            Ok((problem.callbacks.dx, problem.callbacks.dy, p.samples()))
        }
        // SAFETY: forwarded.
        BL_PROBLEM_LOGISTIC => Ok((1, BL_MAX_DY, unsafe { logistic::<1>(&problem.data)? }.samples())),
        // SAFETY: forwarded.
        BL_PROBLEM_RIDGE => Ok((1, BL_MAX_DY, unsafe { ridge(&problem.data)? }.samples())),
        BL_PROBLEM_LOGISTIC_PER_FEATURE => {
            // SAFETY: forwarded.
            let p = unsafe { logistic::<FEATURES>(&problem.data)? };
            Ok((BL_LOGREG_FEATURES, BL_MAX_DY, p.samples()))
        }
        _ => Err(BL_ERR_KIND),
    }
}

/// The smoothness of `∇_y g` at `x` (the first `dx` entries used), as the problem knows it:
/// the built-in problems for the whole data set and for minibatches, a callback problem one
/// constant `L`.
///
/// # Safety
/// As for [`shape`].
pub(crate) unsafe fn lower_smoothness(problem: &BlProblem, x: &[f32]) -> Result<Smoothness, u32> {
    use crate::status::{BL_ERR_CONFIG, BL_ERR_KIND};
    let at = |i: usize| x.get(i).copied().unwrap_or(0.0);
    let s = match problem.kind {
        BL_PROBLEM_CALLBACKS => Smoothness::uniform(f64::from(problem.callbacks.lower_smoothness)),
        // SAFETY: forwarded.
        BL_PROBLEM_LOGISTIC => unsafe { logistic::<1>(&problem.data)? }.0.lower_smoothness(&[at(0)]),
        // SAFETY: forwarded.
        BL_PROBLEM_RIDGE => unsafe { ridge(&problem.data)? }.0.lower_smoothness(&[at(0)]),
        BL_PROBLEM_LOGISTIC_PER_FEATURE => {
            // SAFETY: forwarded.
            let p = unsafe { logistic::<FEATURES>(&problem.data)? };
            p.0.lower_smoothness(&core::array::from_fn(at))
        }
        _ => return Err(BL_ERR_KIND),
    };
    if s.full.is_finite() && s.full > 0.0 && s.row.is_finite() {
        Ok(s)
    } else {
        Err(BL_ERR_CONFIG)
    }
}
