//! One qNBO (BFGS) outer step on the quadratic, `dx = 4`, `dy ∈ {8, 32, 128}`, in f32 and
//! f64, with the default configuration: Subroutine A (P = 2, T = 3) and Subroutine B on the
//! adjoint system at `Q_k = 31` (the solver is first run for 30 iterations; B stops earlier
//! at its tolerance, after about `dy` steps), then the shared outer update.

use std::hint::black_box;

use bilevel::algo::qnbo::{QnboBfgs, QnboConfig};
use bilevel::problem::Counted;
use bilevel::problems::Quadratic;
use bilevel::run::{Outer, step};
use bilevel::scalar::Real;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench_one<T: Real, const DY: usize>(c: &mut Criterion, name: &str) {
    let q = Quadratic::<T, 4, DY>::random(0, 18.0, 0.1);
    let alpha = T::ONE / q.hypergradient_lipschitz().unwrap_or(T::ONE);
    let outer = Outer::constant(alpha);
    let config = QnboConfig {
        warmup_step: T::ONE / q.lower_lipschitz(),
        ..QnboConfig::default()
    };
    let problem = Counted::new(q);
    let mut solver = Box::new(QnboBfgs::<T, DY>::new(config, [T::ZERO; DY]));
    let mut x = [T::ZERO; 4];
    for t in 0..30 {
        step(&mut *solver, &problem, &mut x, &outer, t).expect("warm-up step");
    }
    c.bench_function(name, |b| {
        b.iter(|| {
            let r = step(&mut *solver, &problem, &mut x, &outer, 30);
            black_box(r.map(|r| r.hypergradient_norm))
        })
    });
}

fn qnbo_step(c: &mut Criterion) {
    bench_one::<f32, 8>(c, "qnbo_bfgs_step/f32/dy=8");
    bench_one::<f64, 8>(c, "qnbo_bfgs_step/f64/dy=8");
    bench_one::<f32, 32>(c, "qnbo_bfgs_step/f32/dy=32");
    bench_one::<f64, 32>(c, "qnbo_bfgs_step/f64/dy=32");
    bench_one::<f32, 128>(c, "qnbo_bfgs_step/f32/dy=128");
    bench_one::<f64, 128>(c, "qnbo_bfgs_step/f64/dy=128");
}

criterion_group!(benches, qnbo_step);
criterion_main!(benches);
