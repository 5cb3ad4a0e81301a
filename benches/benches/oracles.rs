//! One oracle call of L2 logistic regression on the bundled breast-cancer split (the
//! firmware's data: 341 training rows of 30 standardized features and a bias, seed 2026),
//! full batch and minibatches of 64, f32 and f64: the lower gradient, the Hessian-vector
//! product (of one and two vectors), both in one pass, the lower value and the upper
//! gradient — beside the same gradient as a plain C loop compiled at `-O3 -march=native`
//! (`c/logistic.c`), run in the same benchmark (the library's gradient also adds the
//! penalty's 31 products).

use std::hint::black_box;

use bilevel::problem::{Batch, Problem};
use bilevel::problems::{Logistic, Samples};
use bilevel::scalar::Real;
use criterion::{Criterion, criterion_group, criterion_main};

/// The generated data file, included as the firmware includes it (never reformatted).
#[rustfmt::skip]
#[allow(dead_code)]
mod breast_cancer {
    include!("../../examples-cortex-m/src/breast_cancer.rs");
}

use breast_cancer::{COLUMNS, TRAIN_FEATURES, TRAIN_LABELS, VALIDATION_FEATURES, VALIDATION_LABELS};

const DY: usize = COLUMNS + 1;

unsafe extern "C" {
    fn logistic_grad_f64(rows: *const f64, targets: *const f64, n: usize, d: usize, y: *const f64, out: *mut f64);
    fn logistic_grad_f32(rows: *const f32, targets: *const f32, n: usize, d: usize, y: *const f32, out: *mut f32);
}

/// The C loop for one float type.
trait CLoop: Real {
    fn c_grad(rows: &[[Self; COLUMNS]], targets: &[Self], y: &[Self; DY], out: &mut [Self; DY]);
}

/// The C loop for `$t`: `rows` is `targets.len()` contiguous rows of COLUMNS values, `y`
/// and `out` hold COLUMNS + 1; the C function reads and writes exactly those.
macro_rules! c_loop {
    ($t:ty, $f:ident) => {
        impl CLoop for $t {
            fn c_grad(rows: &[[$t; COLUMNS]], targets: &[$t], y: &[$t; DY], out: &mut [$t; DY]) {
                // SAFETY: the lengths above, which the slices and arrays guarantee.
                unsafe {
                    $f(
                        rows.as_ptr().cast(),
                        targets.as_ptr(),
                        targets.len(),
                        COLUMNS,
                        y.as_ptr(),
                        out.as_mut_ptr(),
                    )
                }
            }
        }
    };
}

c_loop!(f64, logistic_grad_f64);
c_loop!(f32, logistic_grad_f32);

fn convert<T: Real>(rows: &[[f32; COLUMNS]], labels: &[f32]) -> (Vec<[T; COLUMNS]>, Vec<T>) {
    let rows = rows.iter().map(|r| r.map(|v| T::from_f64(f64::from(v)))).collect();
    (rows, labels.iter().map(|&t| T::from_f64(f64::from(t))).collect())
}

fn bench_type<T: CLoop>(c: &mut Criterion, name: &str) {
    let (train_rows, train_targets) = convert::<T>(&TRAIN_FEATURES, &TRAIN_LABELS);
    let (val_rows, val_targets) = convert::<T>(&VALIDATION_FEATURES, &VALIDATION_LABELS);
    let train = Samples::new(&train_rows, &train_targets).expect("training samples");
    let validation = Samples::new(&val_rows, &val_targets).expect("validation samples");
    let problem = Logistic::<T, COLUMNS, 1, DY>::new(train, validation).expect("logistic problem");
    let x = [T::from_f64(-4.0)];
    let y: [T; DY] = core::array::from_fn(|i| T::from_f64(0.03 * ((i % 7) as f64 - 3.0)));
    let v: [T; DY] = core::array::from_fn(|i| T::from_f64(1.0 - 0.1 * (i % 5) as f64));
    let (mut out, mut out2, mut gx) = ([T::ZERO; DY], [T::ZERO; DY], [T::ZERO; 1]);
    let batches = [
        ("full", Batch::Full),
        (
            "batch64",
            Batch::Range {
                id: 0,
                start: 100,
                len: 64,
            },
        ),
    ];
    for (batch_name, batch) in batches {
        let id = |oracle: &str| format!("oracles/{name}/{batch_name}/{oracle}");
        c.bench_function(&id("lower_grad"), |b| {
            b.iter(|| {
                problem
                    .lower_grad(&x, black_box(&y), batch, &mut out)
                    .map(|()| black_box(out[0]))
            })
        });
        c.bench_function(&id("lower_hvp"), |b| {
            b.iter(|| {
                problem
                    .lower_hvp(&x, black_box(&y), &v, batch, &mut out)
                    .map(|()| black_box(out[0]))
            })
        });
        c.bench_function(&id("lower_hvp2"), |b| {
            b.iter(|| {
                problem
                    .lower_hvp2(&x, black_box(&y), &v, &y, batch, &mut out, &mut out2)
                    .map(|()| black_box(out[0] + out2[0]))
            })
        });
        c.bench_function(&id("lower_grad_hvp"), |b| {
            b.iter(|| {
                problem
                    .lower_grad_hvp(&x, black_box(&y), &v, batch, &mut out, &mut out2)
                    .map(|()| black_box(out[0] + out2[0]))
            })
        });
        c.bench_function(&id("lower_value"), |b| {
            b.iter(|| problem.lower_value(&x, black_box(&y), batch))
        });
        c.bench_function(&id("upper_grad"), |b| {
            b.iter(|| {
                problem
                    .upper_grad(&x, black_box(&y), batch, &mut gx, &mut out)
                    .map(|()| black_box(out[0]))
            })
        });
        let rows = match batch {
            Batch::Full => 0..train_rows.len(),
            Batch::Range { start, len, .. } => start as usize..(start + len) as usize,
        };
        let (c_rows, c_targets) = (&train_rows[rows.clone()], &train_targets[rows]);
        // The C loop computes the same gradient (without the penalty: λ = e⁻⁸⁰⁰ = 0 here).
        let (mut ours, mut theirs) = ([T::ZERO; DY], [T::ZERO; DY]);
        problem
            .lower_grad(&[T::from_f64(-800.0)], &y, batch, &mut ours)
            .expect("lower gradient");
        T::c_grad(c_rows, c_targets, &y, &mut theirs);
        for (a, b) in ours.iter().zip(&theirs) {
            assert!(
                (a.to_f64() - b.to_f64()).abs() <= 1e-5,
                "C loop {b:?} against the library's {a:?}"
            );
        }
        c.bench_function(&id("lower_grad_c_O3_native"), |b| {
            b.iter(|| {
                T::c_grad(c_rows, c_targets, black_box(&y), &mut out);
                black_box(out[0])
            })
        });
    }
}

fn oracles(c: &mut Criterion) {
    bench_type::<f64>(c, "f64");
    bench_type::<f32>(c, "f32");
}

criterion_group!(benches, oracles);
criterion_main!(benches);
