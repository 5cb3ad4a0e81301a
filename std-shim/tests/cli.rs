//! The `bilevel` command line end to end, and the demo's optimality against a fine grid.

use std::process::Command;

use bilevel_std::demo;

fn bilevel(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bilevel")).args(args).output().unwrap()
}

#[test]
fn demo_finds_the_grid_optimum_of_the_validation_loss() {
    let split = demo::breast_cancer_split(demo::SEED).unwrap();
    let tuned = demo::tune(&split).unwrap();
    // ln λ from −12 to 4 in steps of 0.01.
    let (mut best, mut best_at) = (f64::INFINITY, 0.0);
    for i in 0..=1600 {
        let x = -12.0 + 0.01 * f64::from(i);
        let f = demo::validation_loss(&split, x).unwrap();
        if f < best {
            (best, best_at) = (f, x);
        }
    }
    assert!(
        tuned.validation_loss <= best + 1e-6,
        "tuned ln λ = {} gives {}, grid best {best} at {best_at}",
        tuned.ln_lambda,
        tuned.validation_loss
    );
    assert!(
        (tuned.ln_lambda - best_at).abs() < 0.05,
        "tuned {} vs grid {best_at}",
        tuned.ln_lambda
    );
    assert!(tuned.test_accuracy > 0.9, "test accuracy {}", tuned.test_accuracy);
}

#[test]
fn demo_runs_as_a_process() {
    let out = bilevel(&["demo"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for key in ["λ =", "validation loss =", "test accuracy =", "oracle calls"] {
        assert!(text.contains(key), "missing {key:?} in:\n{text}");
    }
}

#[test]
fn export_writes_rust_and_c_sources() {
    let dir = std::env::temp_dir().join(format!("bilevel-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rs = dir.join("data.rs");
    let out = bilevel(&["export", "--format", "rust", "--out", rs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&rs).unwrap();
    assert!(text.contains("pub const TRAIN_ROWS: usize = 341;"));
    let h = dir.join("data.h");
    let out = bilevel(&[
        "export",
        "--format",
        "c",
        "--columns",
        "31",
        "--out",
        h.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(
        std::fs::read_to_string(&h)
            .unwrap()
            .contains("#define BL_DATA_COLUMNS 31")
    );
    let out = bilevel(&[
        "export",
        "--format",
        "c",
        "--columns",
        "3",
        "--out",
        h.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--columns 3"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_commands_and_flags_fail_naming_them() {
    let out = bilevel(&["tune-everything"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tune-everything"));
    let out = bilevel(&["demo", "--fast"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fast"));
}

/// Small train/validation files cut from the bundled data, in a fresh directory.
fn small_files(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bilevel-tune-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = include_str!("../data/breast_cancer.csv");
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let write = |name: &str, part: &[&str]| {
        std::fs::write(dir.join(name), format!("{header}\n{}\n", part.join("\n"))).unwrap();
    };
    write("train.csv", &rows[..120]);
    write("val.csv", &rows[120..200]);
    write("test.csv", &rows[200..280]);
    dir
}

#[test]
fn tune_writes_a_summary_and_a_trace() {
    let dir = small_files("ok");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    for (method, iters) in [("qnbo-bfgs", "15"), ("nsbo-sgd", "12")] {
        let out = bilevel(&[
            "tune",
            "--problem",
            "logreg",
            "--train",
            &p("train.csv"),
            "--val",
            &p("val.csv"),
            "--test",
            &p("test.csv"),
            "--method",
            method,
            "--iters",
            iters,
            "--json",
            &p("s.json"),
            "--trace",
            &p("t.csv"),
        ]);
        assert!(
            out.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = std::fs::read_to_string(dir.join("s.json")).unwrap();
        for key in [
            "\"problem\": \"logreg\"",
            "\"method\"",
            "\"status\"",
            "\"iterations\": ",
            "\"lower_grad\"",
            "\"upper_grad\"",
            "\"lower_hvp\"",
            "\"lower_cross\"",
            "\"lower_grad_x\"",
            "\"x\": [",
            "\"upper_value\"",
            "\"hypergradient_norm\"",
            "\"test\": {\"loss\"",
            "\"accuracy\"",
            "\"wall_time_s\"",
        ] {
            assert!(json.contains(key), "{method}: missing {key} in {json}");
        }
        let trace = std::fs::read_to_string(dir.join("t.csv")).unwrap();
        assert_eq!(
            trace.lines().count(),
            1 + iters.parse::<usize>().unwrap(),
            "{method}: one row per step"
        );
    }
    let out = bilevel(&[
        "tune",
        "--problem",
        "logreg-per-feature",
        "--train",
        &p("train.csv"),
        "--val",
        &p("val.csv"),
        "--iters",
        "3",
        "--json",
        &p("pf.json"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = std::fs::read_to_string(dir.join("pf.json")).unwrap();
    let x = json.split("\"x\": [").nth(1).unwrap().split(']').next().unwrap();
    assert_eq!(x.split(',').count(), 30, "one ln λ per feature of the file");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tune_rejects_unknown_methods_bad_flags_and_bad_files() {
    let dir = small_files("bad");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let out = bilevel(&[
        "tune",
        "--problem",
        "logreg",
        "--train",
        &p("train.csv"),
        "--val",
        &p("val.csv"),
        "--method",
        "gd-magic",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gd-magic"));
    let out = bilevel(&[
        "tune",
        "--problem",
        "svm",
        "--train",
        &p("train.csv"),
        "--val",
        &p("val.csv"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("svm"));
    std::fs::write(dir.join("broken.csv"), "a,b,y\n1,2,1\n1,x,0\n").unwrap();
    let out = bilevel(&[
        "tune",
        "--problem",
        "logreg",
        "--train",
        &p("broken.csv"),
        "--val",
        &p("val.csv"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("broken.csv:3:3") && err.contains("\"x\""), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
