//! A finite-sum quadratic bilevel problem for stochastic methods: `N` sample quadratics
//! whose mean is a [`Quadratic`] (spec Q1), so every minibatch oracle is a noisy estimate
//! of an oracle with a closed-form hypergradient.
//!
//! ```text
//! g_i(x, y) = ½ yᵀA_i y − yᵀB_i x + c_iᵀy          g = (1/N) Σ_i g_i
//! f_i(x, y) = ½ ‖y − ŷ_i‖² + (ρ/2) ‖x‖²            f = (1/N) Σ_i f_i
//! ```
//!
//! A minibatch [`Batch::Range`] averages the samples of its range. The mean problem
//! ([`FiniteSum::mean`]) has `A = mean A_i`, `B = mean B_i`, `c = mean c_i`,
//! `ŷ = mean ŷ_i`: its hypergradient, solution and adjoint are the finite sum's. (Its upper
//! value differs from the finite sum's by the constant spread of the `ŷ_i`.)

use crate::error::Error;
use crate::linalg;
use crate::problem::{Batch, Problem};
use crate::problems::Quadratic;
use crate::rng::Rng128;
use crate::scalar::Real;

/// `N` sample quadratics with `x ∈ R^DX`, `y ∈ R^DY` (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct FiniteSum<T, const DX: usize, const DY: usize, const N: usize> {
    /// Lower-level Hessians `A_i` (each symmetric positive definite).
    pub a: [[[T; DY]; DY]; N],
    /// Couplings `B_i` (`DY×DX`).
    pub b: [[[T; DX]; DY]; N],
    /// Lower-level linear terms `c_i`.
    pub c: [[T; DY]; N],
    /// Upper-level targets `ŷ_i`.
    pub target: [[T; DY]; N],
    /// Upper-level ridge weight `ρ` (shared by all samples).
    pub rho: T,
}

impl<T: Real, const DX: usize, const DY: usize, const N: usize> FiniteSum<T, DX, DY, N> {
    /// A random instance around [`Quadratic::random`]`(seed, kappa, rho)`: each sample adds
    /// zero-mean Gaussian perturbations of relative size `noise` to `A` (symmetric, scaled
    /// by `1/√DY` so its spectral norm is about `2·noise`), `B`, `c` and `ŷ`. Generated in
    /// `f64` and rounded to `T`. [`Error::InvalidData`] when some `A_i` is not positive
    /// definite (`noise` too large for `λ_min(A) = 1`; `noise ≤ 0.25` is safe).
    pub fn random(seed: u64, kappa: f64, rho: f64, noise: f64) -> Result<Self, Error> {
        let base = Quadratic::<f64, DX, DY>::random(seed, kappa, rho);
        let mut rng = Rng128::new(seed ^ 0x5eed_f1e1_d5a3_0001);
        let mut a = [[[0.0f64; DY]; DY]; N];
        let mut b = [[[0.0f64; DX]; DY]; N];
        let mut c = [[0.0f64; DY]; N];
        let mut target = [[0.0f64; DY]; N];
        let sy = 1.0 / libm::sqrt(DY as f64);
        let sb = libm::sqrt(kappa) * sy;
        for i in 0..N {
            for r in 0..DY {
                for s in 0..=r {
                    let e = noise * sy * rng.gaussian::<f64>();
                    a[i][r][s] = e;
                    a[i][s][r] = e;
                }
                for s in 0..DX {
                    b[i][r][s] = noise * sb * rng.gaussian::<f64>();
                }
                c[i][r] = noise * rng.gaussian::<f64>();
                target[i][r] = noise * rng.gaussian::<f64>();
            }
        }
        // Centre the perturbations so the samples average to the base problem.
        let inv = 1.0 / N.max(1) as f64;
        let mut out = FiniteSum {
            a: [[[T::ZERO; DY]; DY]; N],
            b: [[[T::ZERO; DX]; DY]; N],
            c: [[T::ZERO; DY]; N],
            target: [[T::ZERO; DY]; N],
            rho: T::from_f64(rho),
        };
        for r in 0..DY {
            let mean_c = c.iter().map(|v| v[r]).sum::<f64>() * inv;
            let mean_t = target.iter().map(|v| v[r]).sum::<f64>() * inv;
            for i in 0..N {
                out.c[i][r] = T::from_f64(base.c[r] + c[i][r] - mean_c);
                out.target[i][r] = T::from_f64(base.target[r] + target[i][r] - mean_t);
            }
            for s in 0..DY {
                let mean = a.iter().map(|m| m[r][s]).sum::<f64>() * inv;
                for i in 0..N {
                    out.a[i][r][s] = T::from_f64(base.a[r][s] + a[i][r][s] - mean);
                }
            }
            for s in 0..DX {
                let mean = b.iter().map(|m| m[r][s]).sum::<f64>() * inv;
                for i in 0..N {
                    out.b[i][r][s] = T::from_f64(base.b[r][s] + b[i][r][s] - mean);
                }
            }
        }
        for ai in out.a.iter() {
            let mut l = *ai;
            if !linalg::cholesky(&mut l) {
                return Err(Error::InvalidData {
                    reason: "a sample Hessian A_i is not positive definite (noise too large)",
                });
            }
        }
        Ok(out)
    }

    /// The mean problem, whose closed forms ([`Quadratic::hypergradient`],
    /// [`Quadratic::solution`], …) are this problem's. Means are sums in sample order times
    /// `1/N`, as the full-batch oracles compute them.
    pub fn mean(&self) -> Quadratic<T, DX, DY> {
        let inv = T::ONE / T::from_f64(N.max(1) as f64);
        let mut q = Quadratic {
            a: [[T::ZERO; DY]; DY],
            b: [[T::ZERO; DX]; DY],
            c: [T::ZERO; DY],
            target: [T::ZERO; DY],
            rho: self.rho,
        };
        for i in 0..N {
            for r in 0..DY {
                for s in 0..DY {
                    q.a[r][s] += self.a[i][r][s];
                }
                for s in 0..DX {
                    q.b[r][s] += self.b[i][r][s];
                }
                q.c[r] += self.c[i][r];
                q.target[r] += self.target[i][r];
            }
        }
        for r in 0..DY {
            for s in 0..DY {
                q.a[r][s] *= inv;
            }
            for s in 0..DX {
                q.b[r][s] *= inv;
            }
            q.c[r] *= inv;
            q.target[r] *= inv;
        }
        q
    }

    /// The sample indices of `batch` and `1/len`; an empty batch is an error.
    fn samples_of(batch: Batch) -> Result<(core::ops::Range<usize>, T), Error> {
        let r = batch.range(N);
        if r.is_empty() {
            return Err(Error::InvalidData {
                reason: "empty minibatch",
            });
        }
        let inv = T::ONE / T::from_f64(r.len() as f64);
        Ok((r, inv))
    }
}

/// `out ← inv · Σ_{i ∈ range} term(i)`, summed in sample order.
fn average<T: Real, const M: usize>(
    range: core::ops::Range<usize>,
    inv: T,
    out: &mut [T; M],
    mut term: impl FnMut(usize, &mut [T; M]),
) {
    *out = [T::ZERO; M];
    let mut t = [T::ZERO; M];
    for i in range {
        term(i, &mut t);
        for k in 0..M {
            out[k] += t[k];
        }
    }
    linalg::scale(inv, out);
}

impl<T: Real, const DX: usize, const DY: usize, const N: usize> Problem<T, DX, DY> for FiniteSum<T, DX, DY, N> {
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let (range, inv) = Self::samples_of(batch)?;
        average(range, inv, out, |i, t| {
            let mut bx = [T::ZERO; DY];
            linalg::matvec(&self.a[i], y, t);
            linalg::matvec(&self.b[i], x, &mut bx);
            for r in 0..DY {
                t[r] = t[r] - bx[r] + self.c[i][r];
            }
        });
        Ok(())
    }

    fn upper_grad(
        &self,
        x: &[T; DX],
        y: &[T; DY],
        batch: Batch,
        gx: &mut [T; DX],
        gy: &mut [T; DY],
    ) -> Result<(), Error> {
        let (range, inv) = Self::samples_of(batch)?;
        for j in 0..DX {
            gx[j] = self.rho * x[j];
        }
        average(range, inv, gy, |i, t| linalg::sub(y, &self.target[i], t));
        Ok(())
    }

    fn lower_hvp(&self, _: &[T; DX], _: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let (range, inv) = Self::samples_of(batch)?;
        average(range, inv, out, |i, t| linalg::matvec(&self.a[i], v, t));
        Ok(())
    }

    fn lower_cross(&self, _: &[T; DX], _: &[T; DY], v: &[T; DY], batch: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        // ∇²_xy g_i·v = −B_iᵀv
        let (range, inv) = Self::samples_of(batch)?;
        average(range, -inv, out, |i, t| linalg::matvec_t(&self.b[i], v, t));
        Ok(())
    }

    fn lower_grad_x(&self, _: &[T; DX], y: &[T; DY], batch: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        // ∇_x g_i = −B_iᵀy
        let (range, inv) = Self::samples_of(batch)?;
        average(range, -inv, out, |i, t| linalg::matvec_t(&self.b[i], y, t));
        Ok(())
    }

    fn lower_value(&self, x: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        let (range, inv) = Self::samples_of(batch)?;
        let mut out = [T::ZERO; 1];
        average(range, inv, &mut out, |i, t| {
            let mut ay = [T::ZERO; DY];
            let mut bx = [T::ZERO; DY];
            linalg::matvec(&self.a[i], y, &mut ay);
            linalg::matvec(&self.b[i], x, &mut bx);
            t[0] = T::from_f64(0.5) * linalg::dot(y, &ay) - linalg::dot(y, &bx) + linalg::dot(&self.c[i], y);
        });
        Ok(out[0])
    }

    fn upper_value(&self, x: &[T; DX], y: &[T; DY], batch: Batch) -> Result<T, Error> {
        let (range, inv) = Self::samples_of(batch)?;
        let mut out = [T::ZERO; 1];
        average(range, inv, &mut out, |i, t| {
            let mut r = [T::ZERO; DY];
            linalg::sub(y, &self.target[i], &mut r);
            t[0] = T::from_f64(0.5) * linalg::dot(&r, &r);
        });
        Ok(out[0] + T::from_f64(0.5) * self.rho * linalg::dot(x, x))
    }

    fn samples(&self) -> (usize, usize) {
        (N, N)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type F = FiniteSum<f64, 3, 4, 10>;

    #[test]
    fn full_batch_oracles_are_the_mean_problems() {
        let p = F::random(1, 10.0, 0.2, 0.2).unwrap();
        let q = p.mean();
        let (x, y, v) = ([0.3, -0.1, 0.7], [1.0, -2.0, 0.5, 0.25], [0.5, 0.1, -0.3, 2.0]);
        let (mut a, mut b) = ([0.0; 4], [0.0; 4]);
        let (mut ax, mut bx) = ([0.0; 3], [0.0; 3]);
        let close4 = |a: &[f64; 4], b: &[f64; 4]| linalg::dist(a, b) < 1e-13;
        let close3 = |a: &[f64; 3], b: &[f64; 3]| linalg::dist(a, b) < 1e-13;
        p.lower_grad(&x, &y, Batch::Full, &mut a).unwrap();
        q.lower_grad(&x, &y, Batch::Full, &mut b).unwrap();
        assert!(close4(&a, &b));
        p.lower_hvp(&x, &y, &v, Batch::Full, &mut a).unwrap();
        q.lower_hvp(&x, &y, &v, Batch::Full, &mut b).unwrap();
        assert!(close4(&a, &b));
        p.lower_cross(&x, &y, &v, Batch::Full, &mut ax).unwrap();
        q.lower_cross(&x, &y, &v, Batch::Full, &mut bx).unwrap();
        assert!(close3(&ax, &bx));
        p.lower_grad_x(&x, &y, Batch::Full, &mut ax).unwrap();
        q.lower_grad_x(&x, &y, Batch::Full, &mut bx).unwrap();
        assert!(close3(&ax, &bx));
        p.upper_grad(&x, &y, Batch::Full, &mut ax, &mut a).unwrap();
        q.upper_grad(&x, &y, Batch::Full, &mut bx, &mut b).unwrap();
        assert!(close4(&a, &b) && close3(&ax, &bx));
        let dg = p.lower_value(&x, &y, Batch::Full).unwrap() - q.lower_value(&x, &y, Batch::Full).unwrap();
        assert!(dg.abs() < 1e-13);
    }

    #[test]
    fn minibatches_average_their_samples_and_differ_from_the_mean() {
        let p = F::random(2, 10.0, 0.2, 0.2).unwrap();
        let (x, y) = ([0.3, -0.1, 0.7], [1.0, -2.0, 0.5, 0.25]);
        // Batches 0..4, 4..8, 8..10 weighted by size average to the full batch.
        let mut full = [0.0; 4];
        p.lower_grad(&x, &y, Batch::Full, &mut full).unwrap();
        let mut acc = [0.0; 4];
        for (id, start, len) in [(0, 0, 4), (1, 4, 4), (2, 8, 2)] {
            let mut g = [0.0; 4];
            p.lower_grad(&x, &y, Batch::Range { id, start, len }, &mut g).unwrap();
            assert!(linalg::dist(&g, &full) > 1e-3);
            linalg::axpy(len as f64 / 10.0, &g, &mut acc);
        }
        assert!(linalg::dist(&acc, &full) < 1e-13);
        let empty = Batch::Range {
            id: 0,
            start: 10,
            len: 3,
        };
        assert!(p.lower_grad(&x, &y, empty, &mut acc).is_err());
        assert!(F::random(2, 10.0, 0.2, 5.0).is_err());
    }
}
