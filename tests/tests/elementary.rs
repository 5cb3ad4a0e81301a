//! `bilevel::elementary`'s `exp` and `ln_1p` in `f32` against `libm` on every one of the 2³²
//! inputs: the same bits (NaN for NaN), so that replacing `libm`'s calls changed no result.

use std::thread;

/// The inputs whose results differ, for `f` against `reference`, over all bit patterns.
fn differences(f: fn(f32) -> f32, reference: fn(f32) -> f32) -> Vec<u32> {
    let threads = thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let span = (1u64 << 32).div_ceil(threads);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let (start, end) = (t * span, ((t + 1) * span).min(1 << 32));
                    let mut found = Vec::new();
                    for bits in start..end {
                        let x = f32::from_bits(bits as u32);
                        let (a, b) = (f(x), reference(x));
                        if a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()) && found.len() < 10 {
                            found.push(bits as u32);
                        }
                    }
                    found
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    })
}

#[test]
fn exp_f32_is_libm_bit_for_bit_on_every_input() {
    let found = differences(bilevel::elementary::exp::<f32>, libm::expf);
    assert!(found.is_empty(), "expf differs at {found:08x?}");
}

#[test]
fn ln_1p_f32_is_libm_bit_for_bit_on_every_input() {
    let found = differences(bilevel::elementary::ln_1p::<f32>, libm::log1pf);
    assert!(found.is_empty(), "log1pf differs at {found:08x?}");
}
