//! The one list of methods. Each algorithm file declares its methods ([`MethodSpec`]: a
//! name, a family, when to use it, typed settings with defaults, and how to build the
//! solver from them); [`Method`] names them all, once. The command line (`tune`, `bench`,
//! `methods`), the C library's `bl_method_<name>` symbols and the registry's "for every
//! method" tests read this list, so adding a method is its algorithm file plus one line in
//! the `methods!` list below.
//!
//! Building is a visit: [`Method::build`] constructs the concrete solver and hands it to a
//! [`Visit`], which runs it. Each method is then compiled as its own concrete type (no
//! dynamic dispatch in the inner loops, no enum as large as the largest solver).
//!
//! ```
//! use bilevel::registry::{Method, Settings, Start, Visit};
//! use bilevel::problems::Quadratic;
//! use bilevel::run::{Driver, Outer, Budget, Solver, Stopping, Outcome};
//! use bilevel::Counted;
//!
//! let q = Quadratic::<f64, 2, 3>::random(1, 5.0, 0.5);
//! struct Tune<'a>(&'a Counted<Quadratic<f64, 2, 3>>, f64);
//! impl Visit<f64, 2, 3> for Tune<'_> {
//!     type Output = Outcome;
//!     fn visit<S: Solver<f64, 2, 3>>(self, mut solver: S) -> Outcome {
//!         let mut driver = Driver::new(Outer::constant(self.1), Budget::iterations(3000),
//!                                      Stopping::relative(1e-8)).unwrap();
//!         let mut x = [0.0; 2];
//!         driver.run(&mut solver, self.0, &mut x, |_, _, _| core::ops::ControlFlow::Continue(()))
//!             .unwrap().outcome
//!     }
//! }
//! let method = Method::NboCg;
//! let settings = Settings::new(method, q.lower_lipschitz());
//! let alpha = 1.0 / q.hypergradient_lipschitz().unwrap();
//! let counted = Counted::new(q);
//! let outcome = method.build(&settings, &Start::new([0.0; 3], (1, 1), 1), Tune(&counted, alpha));
//! assert_eq!(outcome.unwrap(), Outcome::Converged);
//! ```

use core::fmt;

use crate::error::{Error, ensure};
use crate::run::Solver;
use crate::sample::{Minibatches, Order};
use crate::scalar::Real;
use crate::smoothness::Smoothness;

/// A family of methods: the algorithm file that implements them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Family {
    /// Newton–CG lower solve and CG adjoint to tolerance ([`crate::reference`]).
    Reference,
    /// qNBO: quasi-Newton lower level and adjoint ([`crate::algo::qnbo`]).
    Qnbo,
    /// SHINE: the lower solver's L-BFGS memory as the adjoint ([`crate::algo::shine`]).
    Shine,
    /// NBO: inexact Newton, one shared Hessian ([`crate::algo::nbo`]).
    Nbo,
    /// NSBO: NBO on minibatches ([`crate::algo::nsbo`]).
    Nsbo,
    /// AID and AmIGO: approximate implicit differentiation ([`crate::algo::aid`]).
    Aid,
    /// ITD: differentiation through the unrolled lower solver ([`crate::algo::itd`]).
    Itd,
    /// SOBA, SABA, MA-SOBA: single loop ([`crate::algo::soba`]).
    Soba,
    /// stocBiO: stochastic Neumann series ([`crate::algo::stocbio`]).
    StocBio,
    /// F2SA: fully first-order penalty ([`crate::algo::f2sa`]).
    F2sa,
    /// PZOBO: zeroth-order response Jacobian ([`crate::algo::pzobo`]).
    Pzobo,
}

impl Family {
    /// A short, stable name.
    pub const fn name(self) -> &'static str {
        match self {
            Family::Reference => "exact",
            Family::Qnbo => "qNBO",
            Family::Shine => "SHINE",
            Family::Nbo => "NBO",
            Family::Nsbo => "NSBO",
            Family::Aid => "AID/AmIGO",
            Family::Itd => "ITD",
            Family::Soba => "SOBA",
            Family::StocBio => "stocBiO",
            Family::F2sa => "F2SA",
            Family::Pzobo => "PZOBO",
        }
    }
}

/// What values a setting takes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kind {
    /// A whole number in `[min, max]`.
    Count {
        /// Smallest value.
        min: u32,
        /// Largest value (a fixed capacity, or `u32::MAX`).
        max: u32,
    },
    /// A finite number `> 0`.
    Positive,
    /// A finite number in `[0, 1]`.
    Fraction,
}

/// Where a setting's default comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Initial {
    /// This value.
    Value(f64),
    /// `c / L`, with `L` the lower level's smoothness constant (a safe gradient step).
    OverLipschitz(f64),
    /// `c · L`.
    TimesLipschitz(f64),
}

/// One typed setting of a method: its key (as in `--set key=value`), what it does, its
/// values and its default.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Setting {
    /// The key.
    pub key: &'static str,
    /// What it controls.
    pub doc: &'static str,
    /// Its values.
    pub kind: Kind,
    /// Its default.
    pub initial: Initial,
}

impl Setting {
    /// A count setting in `[min, max]` with default `value`.
    pub const fn count(key: &'static str, doc: &'static str, min: u32, max: u32, value: u32) -> Self {
        Setting {
            key,
            doc,
            kind: Kind::Count { min, max },
            initial: Initial::Value(value as f64),
        }
    }

    /// A positive real setting.
    pub const fn positive(key: &'static str, doc: &'static str, initial: Initial) -> Self {
        Setting {
            key,
            doc,
            kind: Kind::Positive,
            initial,
        }
    }

    /// A lower-level step `c / L`.
    pub const fn lower_step(key: &'static str, doc: &'static str) -> Self {
        Setting::positive(key, doc, Initial::OverLipschitz(1.0))
    }

    /// A fraction in `[0, 1]`.
    pub const fn fraction(key: &'static str, doc: &'static str, value: f64) -> Self {
        Setting {
            key,
            doc,
            kind: Kind::Fraction,
            initial: Initial::Value(value),
        }
    }

    /// Whether `value` is valid; the error names the key and what it must be.
    pub fn check(&self, value: f64) -> Result<(), Error> {
        match self.kind {
            Kind::Count { min, max } => ensure(
                value.is_finite() && libm::trunc(value) == value && value >= f64::from(min) && value <= f64::from(max),
                self.key,
                "a whole number in its range",
            ),
            Kind::Positive => ensure(value.is_finite() && value > 0.0, self.key, "finite and > 0"),
            Kind::Fraction => ensure((0.0..=1.0).contains(&value), self.key, "in [0, 1]"),
        }
    }

    /// The default for a lower level of smoothness `lipschitz`.
    pub fn default_for(&self, lipschitz: f64) -> f64 {
        match self.initial {
            Initial::Value(v) => v,
            Initial::OverLipschitz(c) => c / lipschitz,
            Initial::TimesLipschitz(c) => c * lipschitz,
        }
    }
}

/// What a method's hypergradient estimates are, which decides its default outer step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Estimates {
    /// From a lower level solved to a tolerance (or by quasi-Newton steps) every outer step:
    /// Barzilai–Borwein steps use their curvature.
    Converged,
    /// From inner state carried across outer steps (a warm-started `y` and adjoint `u`,
    /// a few steps each): exact once the state has caught up with `x`, so the driver holds
    /// `x` until it has ([`crate::run::Driver::tracking`]) and Barzilai–Borwein steps follow.
    Tracked,
    /// From an adjoint rebuilt by a fixed truncation at every call (a Neumann series, an
    /// unrolled depth): biased by an amount that repeating the call does not remove, so the
    /// driver deepens the truncation while its residual is short ([`crate::run::Solver::deepen_adjoint`])
    /// and Barzilai–Borwein steps follow, as for tracked estimates.
    Truncated,
    /// From minibatches with SAGA tables (one row per minibatch): noisy while `x` moves, but
    /// at a fixed `x` the tables become current and the estimate exact, as a tracked one does
    /// once its inner state has caught up. So the driver holds `x` until the full-batch
    /// residuals have caught up and Barzilai–Borwein steps follow; a seed matters.
    VarianceReduced,
    /// From minibatches that the solver enlarges ([`crate::run::Solver::reduce_noise`]) when
    /// held steps stop reducing the full-batch residuals: the driver holds `x` as for tracked
    /// estimates and the batch doubles whenever sampling noise is what keeps the residuals
    /// short, so the noise falls with the outer progress and the estimates are exact once the
    /// batch is full. Barzilai–Borwein steps follow (a decreasing AdaGrad-norm step would
    /// stay as small as the early noisy estimates made it); a seed matters.
    GrowingBatch,
    /// From minibatches or random directions: noisy, so the step decreases (AdaGrad-norm); a
    /// seed matters.
    Stochastic,
}

impl Estimates {
    /// The default inner-tracking ratio `θ` for these estimates ([`crate::run::Driver::tracking`]):
    /// 0.1 where repeated or deeper calls at one `x` make the estimate exact, 0 (off) where
    /// sampling noise keeps the residuals from falling.
    pub fn default_tracking(self) -> f64 {
        match self {
            Estimates::Stochastic => 0.0,
            _ => 0.1,
        }
    }

    /// Whether the estimates come from samples (a seed matters).
    pub const fn sampled(self) -> bool {
        matches!(
            self,
            Estimates::VarianceReduced | Estimates::GrowingBatch | Estimates::Stochastic
        )
    }

    /// Whether the estimates stay noisy at a fixed `x` (the outer step must decrease) under
    /// inner tracking `theta`: growing-batch ones grow their batches only at held steps, so
    /// without tracking (`theta = 0`) they are as noisy as the stochastic ones.
    pub fn noisy(self, theta: f64) -> bool {
        match self {
            Estimates::Stochastic => true,
            Estimates::GrowingBatch => !(theta > 0.0),
            _ => false,
        }
    }
}

/// Description of one method.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MethodInfo {
    /// Stable name (`--method`, C's `BL_METHOD_*`, reports).
    pub name: &'static str,
    /// Its family.
    pub family: Family,
    /// One line: what it is and when to use it.
    pub summary: &'static str,
    /// What its hypergradient estimates are (which outer step suits them).
    pub estimates: Estimates,
    /// Its settings, at most [`MAX_SETTINGS`].
    pub settings: &'static [Setting],
}

/// The lower-level gradient step `1/L` most methods share.
pub const LOWER_STEP: Setting = Setting::lower_step("lower_step", "lower-level gradient step (≤ 1/L)");

/// Power iterations per estimate on the lower Hessian for inner steps `1/λ_max` at the current
/// point instead of the global `1/L` ([`crate::curvature::LocalSteps`]).
pub const CURVATURE_ITERATIONS: Setting = Setting::count(
    "curvature_iterations",
    "power iterations per estimate for inner steps 1/λ_max of the Hessian at hand (0: the fixed steps)",
    0,
    1024,
    4,
);

/// The minibatch size of every stochastic method.
pub const BATCH_SIZE: Setting = Setting::count("batch_size", "minibatch size", 1, u32::MAX, 32);

/// Settings per method at most.
pub const MAX_SETTINGS: usize = 8;

/// Rows of the SAGA tables of the registry's SAGA methods (SABA, NSBO-SAGA, MA-NSBO-SAGA): the
/// batch size grows so that each level has at most this many minibatches.
pub const SAGA_BATCHES: usize = 64;

/// A method's setting values: the defaults for the lower level's smoothness, then
/// overrides. A default `c/L` takes `L` at the method's batch size
/// ([`Smoothness::at_batch`]; the whole data set for full-batch methods), and follows a
/// `batch_size` that is set later.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Settings {
    method: Method,
    info: &'static MethodInfo,
    values: [f64; MAX_SETTINGS],
    smoothness: Smoothness,
    /// Bit `i` set: setting `i` was set, not derived.
    chosen: u32,
}

/// Why a `key = value` was refused.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SettingError {
    /// The method has no setting of that key.
    Unknown,
    /// The value is out of the setting's range.
    Invalid(Error),
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingError::Unknown => write!(f, "unknown setting"),
            SettingError::Invalid(e) => e.fmt(f),
        }
    }
}

impl Settings {
    /// The defaults of `method` for a lower level of `smoothness` (or of one constant `L`:
    /// `Settings::new(method, 4.0)`).
    pub fn new(method: Method, smoothness: impl Into<Smoothness>) -> Self {
        Settings::described(method, method.info(), smoothness)
    }

    /// [`Settings::new`] with `method`'s description given (it must be `method.info()`; a
    /// caller that holds it, like the C library's per-method tables, avoids linking every
    /// method's description).
    pub fn described(method: Method, info: &'static MethodInfo, smoothness: impl Into<Smoothness>) -> Self {
        let mut s = Settings {
            method,
            info,
            values: [0.0; MAX_SETTINGS],
            smoothness: smoothness.into(),
            chosen: 0,
        };
        s.derive_defaults();
        s
    }

    /// Every setting not chosen gets its default, a step `c/L` with `L` at the batch size.
    fn derive_defaults(&mut self) {
        let lipschitz = self.smoothness.at_batch(self.batch_size());
        for (i, (v, s)) in self.values.iter_mut().zip(self.info.settings).enumerate() {
            if self.chosen & (1 << i) == 0 {
                *v = s.default_for(lipschitz);
            }
        }
    }

    /// The minibatch size the method will draw (chosen, else its default), or `usize::MAX`
    /// for a full-batch method.
    fn batch_size(&self) -> usize {
        let mut entries = self.info.settings.iter().zip(self.values).enumerate();
        match entries.find(|(_, (s, _))| s.key == BATCH_SIZE.key) {
            Some((i, (_, v))) if self.chosen & (1 << i) != 0 => v as usize,
            Some((_, (s, _))) => s.default_for(1.0) as usize,
            None => usize::MAX,
        }
    }

    /// Whether `setting` was set, not derived.
    pub fn chosen(&self, setting: &Setting) -> bool {
        let i = self.info.settings.iter().position(|s| s.key == setting.key);
        i.is_some_and(|i| self.chosen & (1 << i) != 0)
    }

    /// The [`CURVATURE_ITERATIONS`], or 0 (the fixed steps) when one of `steps` was set by
    /// hand.
    pub fn curvature_iterations(&self, steps: &[&Setting]) -> u32 {
        if steps.iter().any(|s| self.chosen(s)) {
            0
        } else {
            self.count(&CURVATURE_ITERATIONS)
        }
    }

    /// The method these settings are for.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Sets `key` to `value` after checking it; nothing changes on error.
    pub fn set(&mut self, key: &str, value: f64) -> Result<(), SettingError> {
        let settings = self.info.settings;
        let i = settings
            .iter()
            .position(|s| s.key == key)
            .ok_or(SettingError::Unknown)?;
        let setting = settings.get(i).ok_or(SettingError::Unknown)?;
        setting.check(value).map_err(SettingError::Invalid)?;
        if let Some(v) = self.values.get_mut(i) {
            *v = value;
            self.chosen |= 1 << i;
        }
        if setting.key == BATCH_SIZE.key {
            self.derive_defaults();
        }
        Ok(())
    }

    /// Every setting with its value, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Setting, f64)> + '_ {
        self.info.settings.iter().zip(self.values.iter().copied())
    }

    /// The value of `key`, if the method has it.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.iter().find(|(s, _)| s.key == key).map(|(_, v)| v)
    }

    fn value(&self, setting: &Setting) -> f64 {
        self.get(setting.key).unwrap_or(f64::NAN)
    }

    /// A real setting in `T`.
    pub fn real<T: Real>(&self, setting: &Setting) -> T {
        T::from_f64(self.value(setting))
    }

    /// A count setting (0 if out of range, which [`Settings::set`] prevents).
    pub fn count(&self, setting: &Setting) -> u32 {
        let v = self.value(setting);
        if v >= 0.0 && v <= f64::from(u32::MAX) {
            v as u32
        } else {
            0
        }
    }
}

/// Where a solver starts: its lower iterate, the sample counts of the two levels (for the
/// minibatch samplers), and the seed of its randomness.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Start<T, const DY: usize> {
    /// Initial lower iterate.
    pub y0: [T; DY],
    /// Samples of the lower and upper level.
    pub samples: (usize, usize),
    /// Seed of minibatches and random directions.
    pub seed: u64,
}

impl<T: Real, const DY: usize> Start<T, DY> {
    /// A start at `y0`.
    pub fn new(y0: [T; DY], samples: (usize, usize), seed: u64) -> Self {
        Start { y0, samples, seed }
    }

    /// Shuffled minibatches of `batch_size` for both levels; with `rows`, the batch grows so
    /// that each level has at most `rows` of them (a SAGA table's capacity).
    pub fn minibatches(&self, batch_size: u32, rows: Option<usize>) -> Result<[Minibatches; 2], Error> {
        let mut b = (batch_size as usize).max(1);
        if let Some(r) = rows {
            b = b.max(self.samples.0.div_ceil(r)).max(self.samples.1.div_ceil(r));
        }
        Minibatches::for_levels(self.samples, b, Order::Shuffled, self.seed)
    }
}

/// What to do with the solver a method builds: run it, measure it, store it.
pub trait Visit<T: Real, const DX: usize, const DY: usize> {
    /// What the visit returns.
    type Output;
    /// Takes the built solver.
    fn visit<S: Solver<T, DX, DY> + Clone + fmt::Debug>(self, solver: S) -> Self::Output;
}

/// One method: its description and how to build its solver from [`Settings`].
pub trait MethodSpec {
    /// Name, family, summary and settings.
    const INFO: MethodInfo;

    /// The solver it builds, at given scalar and sizes (its memory is this type's size).
    type Solver<T: Real, const DX: usize, const DY: usize>: Solver<T, DX, DY> + Clone + fmt::Debug;

    /// Builds the solver from `settings` (which are this method's). Errors: an invalid
    /// configuration (naming the field) or sampler.
    fn build<T: Real, const DX: usize, const DY: usize>(
        settings: &Settings,
        start: &Start<T, DY>,
    ) -> Result<Self::Solver<T, DX, DY>, Error>;
}

/// Declares [`Method`] from one line per method: its variant and the type implementing
/// [`MethodSpec`].
macro_rules! methods {
    ($($(#[$doc:meta])* $variant:ident => $spec:path,)*) => {
        /// Every method of the library.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        pub enum Method {
            $($(#[$doc])* $variant,)*
        }

        impl Method {
            /// Every method, in the order of tables and listings.
            pub const ALL: &'static [Method] = &[$(Method::$variant,)*];

            /// The path of the type implementing [`MethodSpec`] (for code generators such as
            /// the C library's build script, which declares one symbol per method).
            pub const fn spec_path(self) -> &'static str {
                match self {
                    $(Method::$variant => stringify!($spec),)*
                }
            }

            /// Its description.
            pub const fn info(self) -> &'static MethodInfo {
                match self {
                    $(Method::$variant => &<$spec as MethodSpec>::INFO,)*
                }
            }

            /// Builds the solver from `settings` and hands it to `visit`. Settings of another
            /// method are an error.
            pub fn build<T: Real, V: Visit<T, DX, DY>, const DX: usize, const DY: usize>(
                self,
                settings: &Settings,
                start: &Start<T, DY>,
                visit: V,
            ) -> Result<V::Output, Error> {
                ensure(settings.method == self, "settings", "those of the method built")?;
                match self {
                    $(Method::$variant => Ok(visit.visit(<$spec as MethodSpec>::build::<T, DX, DY>(settings, start)?)),)*
                }
            }
        }
    };
}

methods! {
    /// Newton–CG reference hypergradient.
    Reference => crate::reference::ReferenceMethod,
    /// qNBO with dense inverse BFGS.
    QnboBfgs => crate::algo::qnbo::QnboBfgsMethod,
    /// qNBO with matrix-free inverse SR1.
    QnboSr1 => crate::algo::qnbo::QnboSr1Method,
    /// qNBO with L-BFGS.
    QnboLbfgs => crate::algo::qnbo::QnboLbfgsMethod,
    /// SHINE.
    Shine => crate::algo::shine::ShineMethod,
    /// NBO with gradient descent.
    NboGd => crate::algo::nbo::NboGdMethod,
    /// NBO with conjugate gradient.
    NboCg => crate::algo::nbo::NboCgMethod,
    /// NSBO with SGD.
    NsboSgd => crate::algo::nsbo::NsboSgdMethod,
    /// NSBO with SAGA.
    NsboSaga => crate::algo::nsbo::NsboSagaMethod,
    /// NSBO with SAGA and a moving average.
    MaNsboSaga => crate::algo::nsbo::MaNsboSagaMethod,
    /// AID with conjugate gradient.
    AidCg => crate::algo::aid::AidCgMethod,
    /// AID with a Neumann series.
    AidNeumann => crate::algo::aid::AidNeumannMethod,
    /// ITD, reverse mode.
    Itd => crate::algo::itd::ItdMethod,
    /// AmIGO with gradient descent.
    AmigoGd => crate::algo::amigo::AmigoGdMethod,
    /// AmIGO with conjugate gradient.
    AmigoCg => crate::algo::amigo::AmigoCgMethod,
    /// SOBA.
    Soba => crate::algo::soba::SobaMethod,
    /// SABA.
    Saba => crate::algo::soba::SabaMethod,
    /// MA-SOBA.
    MaSoba => crate::algo::soba::MaSobaMethod,
    /// stocBiO.
    StocBio => crate::algo::stocbio::StocBioMethod,
    /// F2SA.
    F2sa => crate::algo::f2sa::F2saMethod,
    /// PZOBO, full batch.
    Pzobo => crate::algo::pzobo::PzoboMethod,
    /// PZOBO on minibatches.
    PzoboS => crate::algo::pzobo::PzoboSMethod,
}

impl MethodInfo {
    /// Whether it samples minibatches (or random directions), so that a seed matters.
    pub const fn stochastic(&self) -> bool {
        self.estimates.sampled()
    }
}

impl Method {
    /// Its stable name.
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// The method called `name`.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.iter().copied().find(|m| m.name() == name)
    }
}
