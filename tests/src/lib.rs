//! Shared checks for the host integration tests in `tests/tests/`: central-difference
//! checkers for oracles and hypergradients, in `f64`.

pub mod cleaning;
pub mod faults;
pub mod robustness;
pub mod runs;

use bilevel::problem::{Batch, Problem};
use bilevel::reference::{ReferenceConfig, reference_value};

/// Relative difference `|a − b| / max(1, |a|, |b|)`, entrywise maximum.
pub fn rel_err<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    let mut m = 0.0f64;
    for i in 0..N {
        let s = 1.0f64.max(a[i].abs()).max(b[i].abs());
        m = m.max((a[i] - b[i]).abs() / s);
    }
    m
}

/// `‖a − b‖ / ‖b‖` (or `‖a − b‖` when `b = 0`).
pub fn rel_norm_err<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    let d = bilevel::linalg::dist(a, b);
    let n = bilevel::linalg::norm(b);
    if n > 0.0 { d / n } else { d }
}

fn central<const N: usize>(at: &[f64; N], h: f64, mut f: impl FnMut(&[f64; N]) -> f64) -> [f64; N] {
    let mut out = [0.0; N];
    for i in 0..N {
        let (mut p, mut m) = (*at, *at);
        p[i] += h;
        m[i] -= h;
        out[i] = (f(&p) - f(&m)) / (2.0 * h);
    }
    out
}

/// Checks every oracle at `(x, y)` against central differences of the next-lower-order
/// oracle, along `v` for products; panics with the oracle's name and the error when one is
/// off by more than `tol` (relative), or fails, or is not provided (every built-in problem
/// provides all of them: a skipped oracle would hide a broken one).
pub fn check_oracles<P: Problem<f64, DX, DY>, const DX: usize, const DY: usize>(
    p: &P,
    x: &[f64; DX],
    y: &[f64; DY],
    v: &[f64; DY],
    batch: Batch,
    tol: f64,
) {
    let h = 1e-5;
    let mut gy = [0.0; DY];
    p.lower_grad(x, y, batch, &mut gy).unwrap();
    let fd = central(y, h, |yy| p.lower_value(x, yy, batch).unwrap());
    let e = rel_err(&gy, &fd);
    assert!(e < tol, "lower_grad vs differences of lower_value: {e:e}");

    let (mut fx, mut fy) = ([0.0; DX], [0.0; DY]);
    p.upper_grad(x, y, batch, &mut fx, &mut fy).unwrap();
    let fdx = central(x, h, |xx| p.upper_value(xx, y, batch).unwrap());
    let fdy = central(y, h, |yy| p.upper_value(x, yy, batch).unwrap());
    let e = rel_err(&fx, &fdx).max(rel_err(&fy, &fdy));
    assert!(e < tol, "upper_grad vs differences of upper_value: {e:e}");

    let mut hv = [0.0; DY];
    p.lower_hvp(x, y, v, batch, &mut hv).expect("lower_hvp");
    let mut fd = [0.0; DY];
    let (mut yp, mut ym) = (*y, *y);
    for i in 0..DY {
        yp[i] += h * v[i];
        ym[i] -= h * v[i];
    }
    let (mut gp, mut gm) = ([0.0; DY], [0.0; DY]);
    p.lower_grad(x, &yp, batch, &mut gp).unwrap();
    p.lower_grad(x, &ym, batch, &mut gm).unwrap();
    for i in 0..DY {
        fd[i] = (gp[i] - gm[i]) / (2.0 * h);
    }
    let e = rel_err(&hv, &fd);
    assert!(e < tol, "lower_hvp vs differences of lower_grad: {e:e}");
    let (mut a, mut b) = ([0.0; DY], [0.0; DY]);
    p.lower_hvp2(x, y, v, &gy, batch, &mut a, &mut b).expect("lower_hvp2");
    let mut b1 = [0.0; DY];
    p.lower_hvp(x, y, &gy, batch, &mut b1).expect("lower_hvp");
    assert!(
        rel_err(&a, &hv) < 1e-12 && rel_err(&b, &b1) < 1e-12,
        "lower_hvp2 differs from two lower_hvp"
    );
    let (mut g2, mut h2) = ([0.0; DY], [0.0; DY]);
    p.lower_grad_hvp(x, y, v, batch, &mut g2, &mut h2)
        .expect("lower_grad_hvp");
    assert!(
        rel_err(&g2, &gy) < 1e-12 && rel_err(&h2, &hv) < 1e-12,
        "lower_grad_hvp differs from lower_grad and lower_hvp"
    );

    let mut cross = [0.0; DX];
    p.lower_cross(x, y, v, batch, &mut cross).expect("lower_cross");
    let fd = central(x, h, |xx| {
        let mut g = [0.0; DY];
        p.lower_grad(xx, y, batch, &mut g).unwrap();
        bilevel::linalg::dot(&g, v)
    });
    let e = rel_err(&cross, &fd);
    assert!(e < tol, "lower_cross vs differences of lower_grad: {e:e}");

    let mut gx = [0.0; DX];
    p.lower_grad_x(x, y, batch, &mut gx).expect("lower_grad_x");
    let fd = central(x, h, |xx| p.lower_value(xx, y, batch).unwrap());
    let e = rel_err(&gx, &fd);
    assert!(e < tol, "lower_grad_x vs differences of lower_value: {e:e}");
}

/// `∇F(x)` by central differences of `F(x) = f(x, y*(x))`, the lower level solved to high
/// precision by the reference Newton–CG solver from `y0`, with step `h`.
pub fn fd_hypergradient<P: Problem<f64, DX, DY>, const DX: usize, const DY: usize>(
    p: &P,
    x: &[f64; DX],
    y0: &[f64; DY],
    h: f64,
) -> [f64; DX] {
    let cfg = ReferenceConfig {
        lower_tol: 1e-13,
        ..ReferenceConfig::default()
    };
    central(x, h, |xx| reference_value(p, xx, y0, &cfg).unwrap().0)
}
