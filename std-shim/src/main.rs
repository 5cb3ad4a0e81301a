//! `bilevel`: the host command line.

use std::path::PathBuf;
use std::process::ExitCode;

use bilevel_std::demo;
use bilevel_std::export::{self, Part};
use clap::{Parser, Subcommand, ValueEnum};

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
    /// Write a split, standardized data set as Rust or C source for firmware.
    Export {
        /// The bundled data set.
        #[arg(long, value_enum, default_value = "breast-cancer")]
        dataset: Bundled,
        /// Rust module or C header.
        #[arg(long, value_enum)]
        format: Format,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Feature columns per row (zero-padded; at least the data's).
        #[arg(long)]
        columns: Option<usize>,
        /// Split seed.
        #[arg(long, default_value_t = demo::SEED)]
        seed: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Bundled {
    BreastCancer,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Rust,
    C,
}

fn run_demo() -> Result<(), Box<dyn std::error::Error>> {
    let split = demo::breast_cancer_split(demo::SEED)?;
    println!(
        "breast cancer (Wisconsin diagnostic): {} train, {} validation, {} test rows, {} features, standardized",
        split.train.len(),
        split.validation.len(),
        split.test.len(),
        demo::FEATURES
    );
    println!("tuning ln λ of logistic regression with the reference hypergradient (Newton–CG + CG adjoint)");
    let t = demo::tune(&split)?;
    let c = t.oracle_calls;
    println!("λ = {:.6e} (ln λ = {:.6})", libm::exp(t.ln_lambda), t.ln_lambda);
    println!("validation loss = {:.9}", t.validation_loss);
    println!(
        "test loss = {:.6}, test accuracy = {:.2} %",
        t.test_loss,
        100.0 * t.test_accuracy
    );
    println!(
        "{} outer iterations ({:?}); oracle calls: {} ∇_y g, {} ∇f, {} ∇²_yy g·v, {} ∇²_xy g·v, {} g",
        t.iterations, t.outcome, c.lower_grad, c.upper_grad, c.lower_hvp, c.lower_cross, c.lower_value
    );
    Ok(())
}

fn run_export(
    format: Format,
    out: &PathBuf,
    columns: Option<usize>,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let split = demo::breast_cancer_split(seed)?;
    let columns = columns.unwrap_or(demo::FEATURES);
    if columns < demo::FEATURES {
        return Err(format!(
            "--columns {columns} is fewer than the data's {} features",
            demo::FEATURES
        )
        .into());
    }
    let parts = [
        Part {
            name: "train",
            data: &split.train,
        },
        Part {
            name: "validation",
            data: &split.validation,
        },
        Part {
            name: "test",
            data: &split.test,
        },
    ];
    let header = format!(
        "Breast cancer (Wisconsin diagnostic), split with seed {seed} ({} / {} / {} rows), standardized with \
         the training statistics; label 1 = malignant.",
        split.train.len(),
        split.validation.len(),
        split.test.len()
    );
    let text = match format {
        Format::Rust => export::rust_module(&header, &parts, columns),
        Format::C => export::c_header(&header, "BILEVEL_DATA_H", &parts, columns),
    };
    std::fs::write(out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("wrote {} ({} columns)", out.display(), columns);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo => run_demo(),
        Command::Export {
            dataset: Bundled::BreastCancer,
            format,
            out,
            columns,
            seed,
        } => run_export(*format, out, *columns, *seed),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bilevel: {e}");
            ExitCode::FAILURE
        }
    }
}
