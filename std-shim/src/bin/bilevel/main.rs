//! `bilevel`: the host command line.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use bilevel::registry::Method;
use bilevel_std::bench;
use bilevel_std::demo;
use bilevel_std::formats::{FormatChoice, HeaderChoice, ReadOptions};
use bilevel_std::tune;
use clap::{Parser, Subcommand, ValueEnum};

/// `println!` that stops quietly when stdout is closed (e.g. piped into `head`).
macro_rules! out {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

mod files;
mod runs;

use files::{UserExport, run_data, run_export, run_split};
use runs::{run_bench, run_tune};

fn method_help() -> String {
    format!("Method (`bilevel methods` describes them): {}", tune::method_list())
}

#[derive(Parser)]
#[command(
    name = "bilevel",
    version,
    about = "Bilevel hyperparameter tuning for microcontrollers: host tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tune the L2 strength of logistic regression on the bundled breast-cancer data.
    Demo,
    /// List every method: its family, what it is for, and its --set keys with their defaults.
    Methods,
    /// Tune hyperparameters of a problem read from CSV files with any method.
    Tune {
        /// The problem.
        #[arg(long, value_enum)]
        problem: ProblemArg,
        #[command(flatten)]
        files: RunFiles,
        #[arg(long, default_value = Method::QnboBfgs.name(), help = method_help())]
        method: String,
        #[command(flatten)]
        common: Common,
        /// Write a JSON summary here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write one CSV row per outer step here.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Plot validation loss and hypergradient norm against outer steps and oracle calls
        /// (.svg or .png).
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Run several methods on one problem to a common target, with repeats: a table, JSON
    /// and a plot of the validation loss against oracle calls and time.
    Bench {
        /// The problem.
        #[arg(long, value_enum)]
        problem: ProblemArg,
        #[command(flatten)]
        files: RunFiles,
        /// Comma-separated method names.
        #[arg(long, value_delimiter = ',', required = true)]
        methods: Vec<String>,
        /// Runs per method (seeds seed, seed + 1, …).
        #[arg(long, default_value_t = 1)]
        repeats: u32,
        /// Stop a run when ‖∇F(x_k)‖ is at most this times ‖∇F(x_0)‖ (both exact, by the
        /// reference, untimed).
        #[arg(long, conflicts_with = "target_loss")]
        target_rel_grad: Option<f64>,
        /// Stop a run when F(x_k) (exact, by the reference, untimed) is at most this.
        #[arg(long, allow_hyphen_values = true)]
        target_loss: Option<f64>,
        #[command(flatten)]
        common: Common,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Plot the validation loss against oracle calls and time (.svg or .png).
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Write a bundled data set, split with a seed, as train/val/test CSV files (raw values;
    /// `bilevel tune` standardizes with the training statistics), or a seeded synthetic set
    /// (regression, or few-shot tasks for --problem meta).
    Data {
        /// The bundled data set.
        #[arg(long, value_enum, required_unless_present = "from", conflicts_with = "from")]
        dataset: Option<AnyBundled>,
        /// Split your own data file instead (CSV or LIBSVM, read as `tune` reads it) into
        /// train/val/test CSV files: values written back exactly, labels as the file has them.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Fractions of the rows for training and validation with --from (the rest is the
        /// test set); the default is the bundled sets' split.
        #[arg(long, value_delimiter = ',', default_values_t = [0.6, 0.2])]
        split: Vec<f64>,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Split seed.
        #[arg(long, default_value_t = demo::SEED)]
        seed: u64,
        #[command(flatten)]
        read: ReadFlags,
    },
    /// Write a split, standardized data set as Rust or C source for firmware.
    Export {
        /// The bundled data set (split with --seed).
        #[arg(long, value_enum, default_value = "breast-cancer")]
        dataset: Bundled,
        /// Export your own training file instead (with --val, and --test if you have one),
        /// read as `tune` reads it.
        #[arg(long, requires = "val")]
        train: Option<PathBuf>,
        /// Your validation file.
        #[arg(long, requires = "train")]
        val: Option<PathBuf>,
        /// Your test file.
        #[arg(long, requires = "train")]
        test: Option<PathBuf>,
        /// What your labels are: two classes (logreg, the default), a real target (ridge), or
        /// up to ten classes (hyperclean).
        #[arg(long, value_enum, default_value = "logreg", requires = "train")]
        problem: ProblemArg,
        /// Rust module or C header.
        #[arg(long, value_enum)]
        format: Format,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Feature columns per row, zero-padded (default: the data's for Rust; for C, the C
        /// library's row width BL_LOGREG_FEATURES).
        #[arg(long)]
        columns: Option<usize>,
        /// Split seed.
        #[arg(long, default_value_t = demo::SEED)]
        seed: u64,
        #[command(flatten)]
        read: ReadFlags,
    },
}

/// The data files of a `tune` or `bench` run.
#[derive(clap::Args, Clone)]
struct RunFiles {
    /// Training data: CSV (features, then the label or target; `,` `;` or tab separated,
    /// header detected) or LIBSVM. Labels: 0/1, ±1, any two words (class indices or up to
    /// ten words for hyperclean).
    #[arg(long)]
    train: Option<PathBuf>,
    /// Validation data (as --train).
    #[arg(long)]
    val: Option<PathBuf>,
    /// Test data (a task file for --problem meta; optional).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Few-shot task file of --problem meta (task,part,features…,target; `,` `;` or tab
    /// separated).
    #[arg(long)]
    tasks: Option<PathBuf>,
}

impl RunFiles {
    /// `req`, reading these files.
    fn read_by(&self, mut req: tune::TuneRequest) -> tune::TuneRequest {
        req.train = self.train.clone();
        req.validation = self.val.clone();
        req.test = self.test.clone();
        req.tasks = self.tasks.clone();
        req
    }
}

/// Flags shared by `tune` and `bench`.
#[derive(clap::Args, Clone)]
struct Common {
    /// Iterations at most (a safety cap: a run ends when it converges; iterations that hold x
    /// while the inner state catches up count).
    #[arg(long, default_value_t = 5000)]
    iters: u32,
    /// Seed of stochastic methods and of the label noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A fixed outer step (default: the scale-free adaptive step, Barzilai–Borwein for
    /// deterministic methods and AdaGrad-norm for stochastic ones).
    #[arg(long)]
    step: Option<f64>,
    /// The adaptive step's first move changes no hyperparameter by more than this (in their
    /// units: 1 is one e-fold of a regularization strength).
    #[arg(long, default_value_t = 1.0)]
    radius: f64,
    /// Hold the hyperparameters until the lower iterate (and the adjoint) have caught up:
    /// their residuals relative to the start must be at most this times the hypergradient's
    /// own progress before x moves; a truncated adjoint deepens meanwhile (0: never hold, the
    /// papers' fixed inner work; default 0.1, 0 for stochastic methods: see `bilevel methods`).
    #[arg(long)]
    tracking: Option<f64>,
    /// Converged when the hypergradient estimate's norm is at most this times the first
    /// estimate's (entries that push a hyperparameter out of its box at a bound left out).
    #[arg(long, default_value_t = 1e-6)]
    tol: f64,
    /// Converged also when the hypergradient estimate's norm is at most this (0: no absolute
    /// test).
    #[arg(long, default_value_t = 0.0)]
    atol: f64,
    /// Starting value of every hyperparameter (default 0).
    #[arg(long, allow_hyphen_values = true)]
    x0: Option<f64>,
    /// Override a hyperparameter of the method or the problem, e.g. --set lower_step=0.05
    /// or --set noise=0.5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = tune::parse_setting)]
    set: Vec<(String, f64)>,
    /// Compute in f32.
    #[arg(long, conflicts_with = "f64")]
    f32: bool,
    /// Compute in f64 (the default).
    #[arg(long)]
    f64: bool,
    /// Never draw the progress bar (it is drawn only when stderr is a terminal).
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    read: ReadFlags,
}

/// How to read users' data files.
#[derive(clap::Args, Clone)]
struct ReadFlags {
    /// Format of the data files (default: LIBSVM by the extension — .svm, .libsvm,
    /// .svmlight — or by the first line, `label index:value …`; CSV otherwise).
    #[arg(long = "data-format", value_enum)]
    data_format: Option<FileFormat>,
    /// The first line of each CSV file names the columns (default: detected).
    #[arg(long, conflicts_with = "no_header")]
    header: bool,
    /// Every line of each CSV file is data (default: detected).
    #[arg(long)]
    no_header: bool,
}

impl ReadFlags {
    fn options(&self) -> ReadOptions {
        ReadOptions {
            format: match self.data_format {
                None => FormatChoice::Detect,
                Some(FileFormat::Csv) => FormatChoice::Csv,
                Some(FileFormat::Libsvm) => FormatChoice::Libsvm,
            },
            header: match (self.header, self.no_header) {
                (true, _) => HeaderChoice::Present,
                (_, true) => HeaderChoice::Absent,
                _ => HeaderChoice::Detect,
            },
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum FileFormat {
    /// Delimited text: `,` `;` or tab separated, features then the label.
    Csv,
    /// LIBSVM / svmlight: `label index:value …`.
    Libsvm,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProblemArg {
    Logreg,
    LogregPerFeature,
    Ridge,
    Hyperclean,
    Meta,
}

impl ProblemArg {
    fn kind(self) -> tune::ProblemKind {
        match self {
            ProblemArg::Logreg => tune::ProblemKind::Logreg,
            ProblemArg::LogregPerFeature => tune::ProblemKind::LogregPerFeature,
            ProblemArg::Ridge => tune::ProblemKind::Ridge,
            ProblemArg::Hyperclean => tune::ProblemKind::HyperClean,
            ProblemArg::Meta => tune::ProblemKind::Meta,
        }
    }
}

impl Common {
    fn request(&self, problem: ProblemArg, method: &str) -> tune::TuneRequest {
        let mut r = tune::TuneRequest::new(problem.kind(), method);
        r.iterations = self.iters;
        r.seed = self.seed;
        r.step = self.step;
        r.radius = self.radius;
        r.tracking = self.tracking;
        r.x0 = self.x0;
        r.tolerance = self.tol;
        r.absolute_tolerance = self.atol;
        r.settings = self.set.clone();
        r.precision = if self.f32 {
            tune::Precision::F32
        } else {
            tune::Precision::F64
        };
        r.progress = !self.quiet;
        r.read = self.read.options();
        r
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Bundled {
    BreastCancer,
}

#[derive(Clone, Copy, ValueEnum)]
enum AnyBundled {
    BreastCancer,
    Digits,
    /// Synthetic linear regression, 5 features (train 50, val 200, test 200 rows).
    Regression,
    /// Synthetic few-shot regression, 3 features: 16 training tasks and 4 test tasks of 5
    /// support and 15 query rows (tasks.csv, test-tasks.csv).
    Tasks,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Rust,
    C,
}

fn run_demo() -> Result<(), Box<dyn std::error::Error>> {
    let split = demo::breast_cancer_split(demo::SEED)?;
    out!(
        "breast cancer (Wisconsin diagnostic): {} train, {} validation, {} test rows, {} features, standardized",
        split.train.len(),
        split.validation.len(),
        split.test.len(),
        demo::FEATURES
    );
    out!(
        "tuning ln λ of logistic regression with {} (no Hessian-vector product), default settings",
        demo::METHOD.name()
    );
    let t = demo::tune(&split)?;
    let c = t.oracle_calls;
    out!("λ = {:.6e} (ln λ = {:.6})", libm::exp(t.ln_lambda), t.ln_lambda);
    out!("validation loss = {:.9}", t.validation_loss);
    out!(
        "test loss = {:.6}, test accuracy = {:.2} %",
        t.test_loss,
        100.0 * t.test_accuracy
    );
    out!(
        "{}: {} moves of ln λ in {} outer iterations (the others held it while y caught up)",
        t.outcome.name(),
        t.moves,
        t.iterations
    );
    out!(
        "oracle calls: {} ∇_y g, {} ∇f, {} ∇²_yy g·v, {} ∇²_xy g·v, {} g",
        c.lower_grad,
        c.upper_grad,
        c.lower_hvp,
        c.lower_cross,
        c.lower_value
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo => run_demo(),
        Command::Methods => {
            out!("{}", tune::methods_table());
            Ok(())
        }
        Command::Tune {
            problem,
            files,
            method,
            common,
            json,
            trace,
            plot,
        } => {
            let req = files.read_by(common.request(*problem, method));
            run_tune(req, json.as_ref(), trace.as_ref(), plot.as_ref())
        }
        Command::Bench {
            problem,
            files,
            methods,
            repeats,
            target_rel_grad,
            target_loss,
            common,
            json,
            plot,
        } => {
            let mut base = files.read_by(common.request(*problem, ""));
            base.stop = match (target_rel_grad, target_loss) {
                (Some(e), _) => Some(tune::StopAt::RelativeGradient(*e)),
                (None, Some(v)) => Some(tune::StopAt::Loss(*v)),
                (None, None) => None,
            };
            let req = bench::BenchRequest {
                base,
                methods: methods.clone(),
                repeats: *repeats,
            };
            run_bench(&req, json.as_ref(), plot.as_ref())
        }
        Command::Data {
            dataset,
            from,
            split,
            out,
            seed,
            read,
        } => match (dataset, from) {
            (Some(d), _) => run_data(*d, out, *seed),
            (None, Some(f)) => run_split(f, out, split, *seed, read.options()),
            (None, None) => Err("give --dataset or --from".into()),
        },
        Command::Export {
            dataset: Bundled::BreastCancer,
            train,
            val,
            test,
            problem,
            format,
            out,
            columns,
            seed,
            read,
        } => {
            let user = match (train, val) {
                (Some(train), Some(val)) => Some(UserExport {
                    train,
                    val,
                    test: test.as_deref(),
                    problem: *problem,
                    read: read.options(),
                }),
                _ => None,
            };
            run_export(*format, out, *columns, *seed, user)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bilevel: {e}");
            ExitCode::FAILURE
        }
    }
}
