//! The quadratic bilevel problem (spec Q1): every quantity has a closed form, so every
//! algorithm is tested against it.
//!
//! ```text
//! g(x, y) = ½ yᵀA y − yᵀB x + cᵀy        (A symmetric positive definite)
//! f(x, y) = ½ ‖y − ŷ‖² + (ρ/2) ‖x‖²
//! y*(x) = A⁻¹(Bx − c),  ∇F(x) = ρx + BᵀA⁻¹(y*(x) − ŷ)
//! ```

use crate::error::Error;
use crate::linalg;
use crate::problem::{Batch, Problem};
use crate::rng::Rng128;
use crate::scalar::Real;

/// The quadratic problem Q1 with `x ∈ R^DX`, `y ∈ R^DY`.
#[derive(Clone, Debug, PartialEq)]
pub struct Quadratic<T, const DX: usize, const DY: usize> {
    /// Lower-level Hessian `A` (symmetric positive definite).
    pub a: [[T; DY]; DY],
    /// Coupling `B` (`DY×DX`).
    pub b: [[T; DX]; DY],
    /// Lower-level linear term `c`.
    pub c: [T; DY],
    /// Upper-level target `ŷ`.
    pub target: [T; DY],
    /// Upper-level ridge weight `ρ`.
    pub rho: T,
}

impl<T: Real, const DX: usize, const DY: usize> Quadratic<T, DX, DY> {
    /// A random instance: `A = Q·diag(λ)·Qᵀ` with `Q` a random orthogonal matrix and `λ`
    /// log-spaced in `[1, kappa]` (so `κ(A) = kappa`), Gaussian `B`, `c`, `ŷ` (scaled by
    /// `1/√DY`), and upper ridge weight `rho`. Generated in `f64` and rounded to `T`, so the
    /// `f32` and `f64` instances of one seed are the same problem.
    pub fn random(seed: u64, kappa: f64, rho: f64) -> Self {
        let mut rng = Rng128::new(seed);
        // Random orthogonal Q by Gram–Schmidt on Gaussian columns (rows here).
        let mut q = [[0.0f64; DY]; DY];
        for i in 0..DY {
            loop {
                let mut v = [0.0f64; DY];
                rng.fill_gaussian(&mut v);
                for k in 0..i {
                    let p = linalg::dot(&v, &q[k]);
                    linalg::axpy(-p, &q[k], &mut v);
                }
                let n = linalg::norm(&v);
                if n > 1e-3 {
                    linalg::scale(1.0 / n, &mut v);
                    q[i] = v;
                    break;
                }
            }
        }
        let mut lam = [0.0f64; DY];
        for i in 0..DY {
            let t = if DY > 1 { i as f64 / (DY - 1) as f64 } else { 0.0 };
            lam[i] = libm::pow(kappa, t);
        }
        let mut a = [[T::ZERO; DY]; DY];
        for i in 0..DY {
            for j in 0..DY {
                let mut s = 0.0;
                for k in 0..DY {
                    s += q[k][i] * lam[k] * q[k][j];
                }
                a[i][j] = T::from_f64(s);
            }
        }
        // Symmetric by construction up to rounding; make it exactly symmetric.
        for i in 0..DY {
            for j in 0..i {
                a[i][j] = a[j][i];
            }
        }
        let scale = 1.0 / libm::sqrt(DY as f64);
        let mut b = [[T::ZERO; DX]; DY];
        for row in b.iter_mut() {
            for v in row.iter_mut() {
                *v = T::from_f64(rng.gaussian::<f64>() * libm::sqrt(kappa) * scale);
            }
        }
        let mut c = [T::ZERO; DY];
        let mut target = [T::ZERO; DY];
        for v in c.iter_mut() {
            *v = T::from_f64(rng.gaussian::<f64>());
        }
        for v in target.iter_mut() {
            *v = T::from_f64(rng.gaussian::<f64>());
        }
        Quadratic {
            a,
            b,
            c,
            target,
            rho: T::from_f64(rho),
        }
    }

    /// `y*(x) = A⁻¹(Bx − c)`.
    pub fn lower_solution(&self, x: &[T; DX]) -> Result<[T; DY], Error> {
        let mut rhs = [T::ZERO; DY];
        linalg::matvec(&self.b, x, &mut rhs);
        for i in 0..DY {
            rhs[i] -= self.c[i];
        }
        self.solve_a(&mut rhs)?;
        Ok(rhs)
    }

    /// `F(x) = f(x, y*(x))`.
    pub fn value(&self, x: &[T; DX]) -> Result<T, Error> {
        let y = self.lower_solution(x)?;
        Ok(self.upper(x, &y))
    }

    /// The exact hypergradient `∇F(x) = ρx + BᵀA⁻¹(y*(x) − ŷ)`.
    pub fn hypergradient(&self, x: &[T; DX]) -> Result<[T; DX], Error> {
        let y = self.lower_solution(x)?;
        let mut r = [T::ZERO; DY];
        linalg::sub(&y, &self.target, &mut r);
        self.solve_a(&mut r)?;
        let mut out = [T::ZERO; DX];
        linalg::matvec_t(&self.b, &r, &mut out);
        linalg::axpy(self.rho, x, &mut out);
        Ok(out)
    }

    /// The exact adjoint `u* = A⁻¹ ∇_y f(x, y*(x))`.
    pub fn adjoint(&self, x: &[T; DX]) -> Result<[T; DY], Error> {
        let y = self.lower_solution(x)?;
        let mut r = [T::ZERO; DY];
        linalg::sub(&y, &self.target, &mut r);
        self.solve_a(&mut r)?;
        Ok(r)
    }

    /// The minimiser `x*`, solving `(KᵀK + ρI)x = Kᵀ(A⁻¹c + ŷ)` with `K = A⁻¹B`.
    pub fn solution(&self) -> Result<[T; DX], Error> {
        let k = self.k_matrix()?;
        let mut m = linalg::scaled_identity::<T, DX>(self.rho);
        for i in 0..DX {
            for j in 0..DX {
                for r in 0..DY {
                    m[i][j] += k[r][i] * k[r][j];
                }
            }
        }
        let mut w = self.c;
        self.solve_a(&mut w)?;
        for i in 0..DY {
            w[i] += self.target[i];
        }
        let mut rhs = [T::ZERO; DX];
        linalg::matvec_t(&k, &w, &mut rhs);
        if !linalg::spd_solve(&m, &mut rhs) {
            return Err(Error::InvalidData {
                reason: "upper-level Hessian KᵀK + ρI is not positive definite",
            });
        }
        Ok(rhs)
    }

    /// `L_Φ`, the Lipschitz constant of `∇F`: the largest eigenvalue of `KᵀK + ρI`
    /// (by power iteration).
    pub fn hypergradient_lipschitz(&self) -> Result<T, Error> {
        let k = self.k_matrix()?;
        let mut v = [T::ONE; DX];
        let mut lam = T::ZERO;
        for _ in 0..500 {
            let mut kv = [T::ZERO; DY];
            linalg::matvec(&k, &v, &mut kv);
            let mut w = [T::ZERO; DX];
            linalg::matvec_t(&k, &kv, &mut w);
            linalg::axpy(self.rho, &v, &mut w);
            lam = linalg::norm(&w);
            if lam == T::ZERO {
                break;
            }
            v = w;
            linalg::scale(T::ONE / lam, &mut v);
        }
        Ok(lam)
    }

    /// Largest eigenvalue of `A` (the lower level's `L`), by power iteration.
    pub fn lower_lipschitz(&self) -> T {
        let mut v = [T::ONE; DY];
        let mut lam = T::ZERO;
        for _ in 0..500 {
            let mut w = [T::ZERO; DY];
            linalg::matvec(&self.a, &v, &mut w);
            lam = linalg::norm(&w);
            if lam == T::ZERO {
                break;
            }
            v = w;
            linalg::scale(T::ONE / lam, &mut v);
        }
        lam
    }

    fn k_matrix(&self) -> Result<[[T; DX]; DY], Error> {
        let mut k = [[T::ZERO; DX]; DY];
        for j in 0..DX {
            let mut col = [T::ZERO; DY];
            for i in 0..DY {
                col[i] = self.b[i][j];
            }
            self.solve_a(&mut col)?;
            for i in 0..DY {
                k[i][j] = col[i];
            }
        }
        Ok(k)
    }

    fn solve_a(&self, rhs: &mut [T; DY]) -> Result<(), Error> {
        if linalg::spd_solve(&self.a, rhs) {
            Ok(())
        } else {
            Err(Error::InvalidData {
                reason: "A is not positive definite",
            })
        }
    }

    fn upper(&self, x: &[T; DX], y: &[T; DY]) -> T {
        let mut r = [T::ZERO; DY];
        linalg::sub(y, &self.target, &mut r);
        T::from_f64(0.5) * (linalg::dot(&r, &r) + self.rho * linalg::dot(x, x))
    }
}

impl<T: Real, const DX: usize, const DY: usize> Problem<T, DX, DY> for Quadratic<T, DX, DY> {
    fn lower_grad(&self, x: &[T; DX], y: &[T; DY], _: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        let mut bx = [T::ZERO; DY];
        linalg::matvec(&self.a, y, out);
        linalg::matvec(&self.b, x, &mut bx);
        for i in 0..DY {
            out[i] = out[i] - bx[i] + self.c[i];
        }
        Ok(())
    }

    fn upper_grad(&self, x: &[T; DX], y: &[T; DY], _: Batch, gx: &mut [T; DX], gy: &mut [T; DY]) -> Result<(), Error> {
        for j in 0..DX {
            gx[j] = self.rho * x[j];
        }
        linalg::sub(y, &self.target, gy);
        Ok(())
    }

    fn lower_hvp(&self, _: &[T; DX], _: &[T; DY], v: &[T; DY], _: Batch, out: &mut [T; DY]) -> Result<(), Error> {
        linalg::matvec(&self.a, v, out);
        Ok(())
    }

    fn lower_cross(&self, _: &[T; DX], _: &[T; DY], v: &[T; DY], _: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        // ∇²_xy g·v = −Bᵀv
        linalg::matvec_t(&self.b, v, out);
        linalg::scale(-T::ONE, out);
        Ok(())
    }

    fn lower_grad_x(&self, _: &[T; DX], y: &[T; DY], _: Batch, out: &mut [T; DX]) -> Result<(), Error> {
        linalg::matvec_t(&self.b, y, out);
        linalg::scale(-T::ONE, out);
        Ok(())
    }

    fn lower_value(&self, x: &[T; DX], y: &[T; DY], _: Batch) -> Result<T, Error> {
        let mut ay = [T::ZERO; DY];
        let mut bx = [T::ZERO; DY];
        linalg::matvec(&self.a, y, &mut ay);
        linalg::matvec(&self.b, x, &mut bx);
        Ok(T::from_f64(0.5) * linalg::dot(y, &ay) - linalg::dot(y, &bx) + linalg::dot(&self.c, y))
    }

    fn upper_value(&self, x: &[T; DX], y: &[T; DY], _: Batch) -> Result<T, Error> {
        Ok(self.upper(x, y))
    }
}
