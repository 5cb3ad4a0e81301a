//! Arbitrary secant pairs (any bits, NaN and ±∞ included) into every quasi-Newton memory:
//! never a panic, the memory stays bounded after every update, and the search direction is
//! finite (a product that overflows is replaced by the scaled gradient).
#![no_main]

use bilevel::qn::{DenseBfgs, DenseSr1, InverseHessian, LBfgs, LSr1, Safeguards};
use libfuzzer_sys::fuzz_target;

fn feed<H: InverseHessian<f64, 3>>(words: &[f64]) {
    let mut h = H::new(Safeguards::default());
    for pair in words.chunks_exact(7) {
        let s = [pair[0], pair[1], pair[2]];
        let r = [pair[3], pair[4], pair[5]];
        h.update(&s, &r, pair[6]);
        assert!(h.is_bounded(), "an update left the memory unbounded");
        let mut dir = [0.0; 3];
        h.direction(&[0.3, 0.2, -0.1], &mut dir);
        assert!(dir.iter().all(|v| v.is_finite()), "non-finite direction");
    }
}

fuzz_target!(|data: &[u8]| {
    let words: Vec<f64> = data
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        .collect();
    feed::<DenseBfgs<f64, 3>>(&words);
    feed::<DenseSr1<f64, 3>>(&words);
    feed::<LBfgs<f64, 3, 4>>(&words);
    feed::<LSr1<f64, 3, 4>>(&words);
});
