//! The method registry: one list, names in one place, every setting key live, and every
//! method built from it runs through the one driver.

use std::path::{Path, PathBuf};

use bilevel::problems::{Logistic, Samples};
use bilevel::registry::{Kind, Method, SettingError, Settings, Start, Visit};
use bilevel::rng::Rng128;
use bilevel::run::{Budget, Driver, Outcome, Outer, Solver, Stopping};
use bilevel::{Counted, Error};

const D: usize = 3;
const DX: usize = D;
const DY: usize = D + 1;

fn rows(seed: u64, n: usize) -> (Vec<[f64; D]>, Vec<f64>) {
    let mut rng = Rng128::new(seed);
    (0..n)
        .map(|_| {
            let mut a = [0.0; D];
            rng.fill_gaussian(&mut a);
            let z = 1.5 * a[0] - 2.0 * a[1] + 0.3 + rng.gaussian::<f64>();
            (a, if z > 0.0 { 1.0 } else { 0.0 })
        })
        .unzip()
}

/// Where a run ended: `x`, the solver's `y`, and how.
type End = Result<([f64; DX], [f64; DY], Outcome), Error>;

/// Runs the solver it is handed for a fixed number of steps.
struct Steps<'a, P> {
    problem: &'a Counted<P>,
    steps: u32,
}

impl<P: bilevel::Problem<f64, DX, DY>> Visit<f64, DX, DY> for Steps<'_, P> {
    type Output = End;
    fn visit<S: Solver<f64, DX, DY>>(self, mut solver: S) -> End {
        let outer = Outer {
            schedule: bilevel::schedule::Schedule::Constant(0.5),
            bounds: Some((-8.0, 8.0)),
        };
        let mut driver = Driver::new(outer, Budget::iterations(self.steps), Stopping::never())?;
        let mut x = [-1.0; DX];
        let r = driver.run(&mut solver, self.problem, &mut x, |_, _, _| {
            core::ops::ControlFlow::Continue(())
        })?;
        Ok((x, *solver.lower(), r.outcome))
    }
}

fn with_problem<R>(f: impl FnOnce(&Counted<Logistic<'_, f64, D, DX, DY>>, f64) -> R) -> R {
    let (tx, tt) = rows(1, 40);
    let (vx, vt) = rows(2, 30);
    let p: Logistic<'_, f64, D, DX, DY> =
        Logistic::new(Samples::new(&tx, &tt).unwrap(), Samples::new(&vx, &vt).unwrap()).unwrap();
    let lipschitz = p.lower_lipschitz(&[-1.0; DX]);
    f(&Counted::new(p), lipschitz)
}

fn run(method: Method, settings: &Settings, problem: &Counted<Logistic<'_, f64, D, DX, DY>>, steps: u32) -> End {
    let start = Start::new([0.0; DY], (40, 30), 7);
    method.build(&settings.clone(), &start, Steps { problem, steps })?
}

#[test]
fn names_are_unique_and_round_trip() {
    for (i, m) in Method::ALL.iter().enumerate() {
        assert_eq!(Method::from_name(m.name()), Some(*m));
        assert!(Method::ALL[..i].iter().all(|o| o.name() != m.name()));
        assert!(m.info().settings.len() <= bilevel::registry::MAX_SETTINGS);
        assert!(!m.info().summary.is_empty());
    }
    assert_eq!(Method::from_name("gd-magic"), None);
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "h" || e == "c") {
            out.push(path);
        }
    }
}

#[test]
fn every_method_name_is_written_in_exactly_one_source_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "core/src",
        "std-shim/src",
        "capi/src",
        "capi/include",
        "examples-cortex-m/src",
    ] {
        source_files(&root.join(dir), &mut files);
    }
    let texts: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let t = std::fs::read_to_string(&f).unwrap();
            (f, t)
        })
        .collect();
    for m in Method::ALL {
        let quoted = format!("\"{}\"", m.name());
        let holders: Vec<&PathBuf> = texts
            .iter()
            .filter(|(_, t)| t.contains(&quoted))
            .map(|(f, _)| f)
            .collect();
        assert_eq!(holders.len(), 1, "{quoted} is written in {holders:?}");
        let count = texts.iter().map(|(_, t)| t.matches(&quoted).count()).sum::<usize>();
        assert_eq!(count, 1, "{quoted} is written {count} times");
    }
}

#[test]
fn every_method_builds_from_its_defaults_and_runs_through_the_driver() {
    with_problem(|problem, lipschitz| {
        for &m in Method::ALL {
            let settings = Settings::new(m, lipschitz);
            let (x, y, outcome) = run(m, &settings, problem, 5).unwrap_or_else(|e| panic!("{}: {e}", m.name()));
            assert_eq!(outcome, Outcome::IterationBudget, "{}", m.name());
            assert!(x.iter().chain(&y).all(|v| v.is_finite()), "{}", m.name());
            assert_ne!(y, [0.0; DY], "{} never moved its lower iterate", m.name());
        }
    });
}

/// A valid value different from the default, far enough to matter within a few steps.
fn other_value(kind: Kind, default: f64) -> f64 {
    match kind {
        Kind::Count { min, .. } if default > f64::from(min) => f64::from(min),
        Kind::Count { max, .. } => (default + 1.0).min(f64::from(max)),
        Kind::Positive => default * 0.1,
        Kind::Fraction => default * 0.5,
    }
}

#[test]
fn every_setting_key_changes_the_run_it_names() {
    with_problem(|problem, lipschitz| {
        for &m in Method::ALL {
            let defaults = Settings::new(m, lipschitz);
            let base = run(m, &defaults, problem, 4).unwrap();
            for (setting, value) in defaults.iter() {
                let mut changed = defaults;
                let other = other_value(setting.kind, value);
                changed.set(setting.key, other).unwrap();
                assert_eq!(changed.get(setting.key), Some(other));
                let end = run(m, &changed, problem, 4).unwrap();
                assert_ne!(
                    (end.0, end.1),
                    (base.0, base.1),
                    "{} with {} = {other} (default {value}) ran exactly as the default",
                    m.name(),
                    setting.key
                );
            }
        }
    });
}

#[test]
fn bad_settings_are_refused_naming_the_key_and_change_nothing() {
    let m = Method::from_name("aid-neumann").unwrap();
    let mut s = Settings::new(m, 4.0);
    let before = s;
    assert_eq!(s.get("lower_step"), Some(0.25));
    assert_eq!(s.set("momentum", 0.9), Err(SettingError::Unknown));
    for (key, bad) in [
        ("lower_steps", 2.5),
        ("lower_steps", 0.0),
        ("lower_steps", -1.0),
        ("lower_step", 0.0),
        ("lower_step", -0.1),
        ("lower_step", f64::NAN),
        ("neumann_step", f64::INFINITY),
    ] {
        match s.set(key, bad) {
            Err(SettingError::Invalid(Error::InvalidConfig { field, .. })) => assert_eq!(field, key),
            other => panic!("{key} = {bad}: {other:?}"),
        }
        assert_eq!(s, before);
    }
    // Settings of one method do not build another.
    let other = Method::from_name("aid-cg").unwrap();
    with_problem(|problem, _| {
        let start = Start::new([0.0; DY], (40, 30), 7);
        let r = other.build(&s, &start, Steps { problem, steps: 1 });
        assert!(matches!(r, Err(Error::InvalidConfig { field: "settings", .. })));
    });
}

#[test]
fn minibatch_steps_default_to_the_expected_smoothness_of_their_batch() {
    use bilevel::smoothness::Smoothness;
    let smoothness = Smoothness {
        full: 2.0,
        row: 100.0,
        rows: 1000,
    };
    // A full-batch method steps at 1/L of the whole sum.
    let nbo = Settings::new(Method::NboGd, smoothness);
    assert_eq!(nbo.get("lower_step"), Some(0.5));
    // A minibatch method at 1/L of its default batch (32), which follows a batch size set
    // later unless the step itself was set.
    let mut soba = Settings::new(Method::Soba, smoothness);
    assert_eq!(soba.get("lower_step"), Some(1.0 / smoothness.at_batch(32)));
    assert!(smoothness.at_batch(32) > 2.0 && smoothness.at_batch(32) < 100.0);
    soba.set("batch_size", 1000.0).unwrap();
    assert_eq!(soba.get("lower_step"), Some(0.5));
    soba.set("lower_step", 0.1).unwrap();
    soba.set("batch_size", 1.0).unwrap();
    assert_eq!(soba.get("lower_step"), Some(0.1));
    // One constant for every batch when that is all the problem knows.
    assert_eq!(Settings::new(Method::Soba, 4.0).get("lower_step"), Some(0.25));
}

/// ITD and AID-Neumann take their steps from the curvature at hand unless a step is set by
/// hand: then the run is the one with the fixed steps, whatever the value.
#[test]
fn a_step_set_by_hand_turns_the_steps_from_the_local_curvature_off() {
    with_problem(|problem, lipschitz| {
        for (m, steps) in [
            (Method::Itd, &["lower_step"][..]),
            (Method::AidNeumann, &["lower_step", "neumann_step"][..]),
        ] {
            let defaults = Settings::new(m, lipschitz);
            let mut fixed = defaults;
            fixed.set("curvature_iterations", 0.0).unwrap();
            let fixed_run = run(m, &fixed, problem, 4).unwrap();
            assert_ne!(run(m, &defaults, problem, 4).unwrap(), fixed_run, "{}", m.name());
            for key in steps {
                let mut by_hand = defaults;
                by_hand.set(key, defaults.get(key).unwrap()).unwrap();
                assert_eq!(
                    run(m, &by_hand, problem, 4).unwrap(),
                    fixed_run,
                    "{} with {key}",
                    m.name()
                );
            }
        }
    });
}
