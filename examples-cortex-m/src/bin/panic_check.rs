//! Link-time proof that the solver code the firmware uses has no reachable panic path.
//!
//! The panic handler calls a symbol that does not exist. If any panic (bounds check,
//! overflow, `unwrap`, …) survives optimisation in the code below, the link fails with
//! `undefined symbol: ERROR: a panic path survived…`, naming the caller. Every entry point
//! the firmware uses is called on `black_box` inputs, so nothing is constant-folded away.
//!
//! `cargo build --release --bin panic_check` must link;
//! `cargo build --release --bin panic_check --features deliberate-panic` must fail (it adds
//! an indexing panic path); `.ci/firmware` checks both.
#![no_std]
#![no_main]

use core::hint::black_box;

use bilevel::algo::aid::{Aid, AidConfig};
use bilevel::algo::nbo::{Nbo, NboConfig};
use bilevel::reference::{ReferenceConfig, reference_hypergradient};
use bilevel_cortex_m_examples::retained::RetainedFlash;
use bilevel_cortex_m_examples::scenario::ResumeEvent;
use bilevel_cortex_m_examples::scenario::{
    self, Failure, LeastSquaresStats, QUADRATIC_DY, SampleSource, TunedQuadratic,
};
use bilevel_cortex_m_examples::serial::{CmsdkUart, UartSource};
use bilevel_cortex_m_examples::{exit, exit_code};
use cortex_m_rt::entry;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    unsafe extern "C" {
        #[link_name = "\n\nERROR: a panic path survived in the release build (see `referenced by` above)\n"]
        fn panic_path_survived() -> !;
    }
    // SAFETY: never called in a linked binary: the symbol does not exist, so the link
    // fails whenever this handler is reachable.
    unsafe { panic_path_survived() }
}

#[cfg(feature = "deliberate-panic")]
#[inline(never)]
fn may_panic(v: &[f32], i: usize) -> f32 {
    v[i]
}

fn quadratic_entry_points() -> Result<(), Failure> {
    let q = TunedQuadratic::random(
        black_box(scenario::QUADRATIC_SEED),
        black_box(scenario::QUADRATIC_KAPPA),
        black_box(scenario::QUADRATIC_RHO),
    );
    let x = black_box([0.1f32; scenario::QUADRATIC_DX]);
    black_box(q.hypergradient(&x)?);
    black_box(q.adjoint(&x)?);
    black_box(q.lower_solution(&x)?);
    black_box(reference_hypergradient(
        &q,
        &x,
        &[0.0; QUADRATIC_DY],
        &ReferenceConfig::default(),
    )?);
    let beta = black_box(1.0 / q.lower_lipschitz());
    let mut nbo = Nbo::new(NboConfig::gradient_descent(beta, black_box(1)), [0.0; QUADRATIC_DY]);
    black_box(scenario::tune(&q, &mut nbo, black_box(0.2))?);
    let mut nbo_cg = Nbo::new(NboConfig::conjugate_gradient(black_box(2)), [0.0; QUADRATIC_DY]);
    black_box(scenario::tune(&q, &mut nbo_cg, black_box(0.2))?);
    let mut aid = Aid::new(
        AidConfig::conjugate_gradient(beta, black_box(5), black_box(5)),
        [0.0; QUADRATIC_DY],
    );
    black_box(scenario::tune(&q, &mut aid, black_box(0.5))?);
    let mut neumann = Aid::new(
        AidConfig::neumann(beta, black_box(5), beta, black_box(5)),
        [0.0; QUADRATIC_DY],
    );
    black_box(scenario::tune(&q, &mut neumann, black_box(0.5))?);
    let r = scenario::tune_nbo(&q)?;
    scenario::check_quadratic(&black_box(r))?;
    black_box(scenario::tune_aid(&q)?);
    #[cfg(feature = "deliberate-panic")]
    black_box(may_panic(&r.x, black_box(7)));
    Ok(())
}

fn stream_entry_points() -> Result<(), Failure> {
    let (mut source, mut eval) = scenario::stream_sources();
    black_box(scenario::stream_run(&mut source, &mut eval, |r, x| {
        black_box((r, x));
        Ok(())
    })?);
    let mut rows = [[0.0f32; scenario::STREAM_DY]; scenario::STREAM_BATCH];
    let mut targets = [0.0f32; scenario::STREAM_BATCH];
    source.fill(&mut rows, &mut targets)?;
    let stats = LeastSquaresStats::collect(&mut source, black_box(scenario::STREAM_BATCH))?;
    black_box(stats.loss(&stats.ridge_solution(black_box(-0.5))?));
    Ok(())
}

/// qNBO-BFGS on the breast-cancer data. Linked and checked here; `tune_logreg` runs it
/// (400 outer steps), so here it runs only when `black_box` says so (never).
fn logreg_entry_points() -> Result<(), Failure> {
    if !black_box(false) {
        return Ok(());
    }
    black_box(scenario::logreg_run()?);
    Ok(())
}

/// The serial sample source. Linked and checked, but only run when `black_box` says so
/// (never): under QEMU without an input file it would wait for its timeout.
fn serial_entry_points() -> Result<(), Failure> {
    if !black_box(false) {
        return Ok(());
    }
    let core = cortex_m::Peripherals::take().ok_or(Failure::Output)?;
    let uart = CmsdkUart::take(core.SYST).ok_or(Failure::Output)?;
    let mut source = UartSource::open(uart)?;
    let (_, mut eval) = scenario::stream_sources();
    black_box(scenario::stream_run(&mut source, &mut eval, |r, x| {
        black_box((r, x));
        Ok(())
    })?);
    black_box(source.remaining());
    Ok(())
}

/// The streaming run with checkpoints in the retained flash (postcard encode and decode,
/// the two slots, the power cut that resets the core). Linked and checked; `tune_resume`
/// runs it.
fn resume_entry_points() -> Result<(), Failure> {
    if !black_box(false) {
        return Ok(());
    }
    let mut flash = RetainedFlash::take().ok_or(Failure::Output)?;
    black_box(scenario::stream_resumable(&mut flash, |event, flash| {
        if let ResumeEvent::Saving { bytes, .. } = black_box(event) {
            flash.cut_power_after(black_box(bytes));
        }
        Ok(())
    })?);
    Ok(())
}

#[entry]
fn main() -> ! {
    let result = quadratic_entry_points()
        .and_then(|()| stream_entry_points())
        .and_then(|()| logreg_entry_points())
        .and_then(|()| serial_entry_points())
        .and_then(|()| resume_entry_points());
    black_box(result.map_err(|f| exit_code(&f)).err());
    exit(result)
}
