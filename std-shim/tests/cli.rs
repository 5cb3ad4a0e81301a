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
    // With no settings: converged, in few moves and few lower gradients.
    assert_eq!(tuned.outcome, bilevel::run::Outcome::Converged);
    assert!(tuned.moves <= 50, "{} moves", tuned.moves);
    assert!(
        tuned.oracle_calls.lower_grad <= 5000,
        "{} lower gradients",
        tuned.oracle_calls.lower_grad
    );
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
fn a_stopped_run_keeps_the_trace_of_the_steps_it_took() {
    // A run with no tolerance and a large budget, stopped from outside once rows appear.
    let dir = small_files("stopped");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let trace = dir.join("t.csv");
    let mut child = Command::new(env!("CARGO_BIN_EXE_bilevel"))
        .args([
            "tune",
            "--problem",
            "logreg",
            "--train",
            &p("train.csv"),
            "--val",
            &p("val.csv"),
            "--method",
            "nsbo-sgd",
            "--iters",
            "100000000",
            "--tol",
            "0",
            "--trace",
            &p("t.csv"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut rows = 0;
    for _ in 0..600 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        rows = std::fs::read_to_string(&trace).map_or(0, |t| t.lines().count().saturating_sub(1));
        if rows >= 3 {
            break;
        }
    }
    assert!(child.try_wait().unwrap().is_none(), "the run ended by itself");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(rows >= 3, "no rows written while running");
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("iteration,held,"));
    // Every complete line is a row of the run's steps in order (the last may be cut short).
    let complete = if text.ends_with('\n') {
        text.lines().count() - 1
    } else {
        text.lines().count() - 2
    };
    for (i, line) in lines.take(complete).enumerate() {
        assert_eq!(line.split(',').count(), 6, "{line}");
        assert_eq!(line.split(',').next().unwrap(), i.to_string(), "{line}");
    }
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

/// A fresh directory for one test.
fn fresh_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bilevel-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A deterministic pseudo-random number in [−1, 1).
fn noise(i: u64) -> f64 {
    let mut z = i
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// Regression rows `a,b,c,y` with `y = a − 2b + 0.5c + 1 + noise`.
fn regression_csv(rows: u64, seed: u64) -> String {
    let mut s = String::from("a,b,c,y\n");
    for i in 0..rows {
        let k = seed * 1000 + i * 4;
        let (a, b, c) = (noise(k), noise(k + 1), noise(k + 2));
        s += &format!("{a},{b},{c},{}\n", a - 2.0 * b + 0.5 * c + 1.0 + 0.3 * noise(k + 3));
    }
    s
}

/// `tasks` few-shot tasks `y = w·a + b` with task-specific `w`, `b` near a shared prior.
fn tasks_csv(tasks: u64, seed: u64) -> String {
    let mut s = String::from("task,part,a,b,y\n");
    for t in 0..tasks {
        let k = seed * 10_000 + t * 100;
        let (w0, w1, bias) = (
            1.0 + 0.2 * noise(k),
            -1.0 + 0.2 * noise(k + 1),
            2.0 + 0.2 * noise(k + 2),
        );
        for (part, rows) in [("support", 4), ("query", 10)] {
            for r in 0..rows {
                let j = k + 3 + 3 * r + if part == "query" { 50 } else { 0 };
                let (a, b) = (noise(j), noise(j + 1));
                s += &format!(
                    "task{t},{part},{a},{b},{}\n",
                    w0 * a + w1 * b + bias + 0.05 * noise(j + 2)
                );
            }
        }
    }
    s
}

/// Runs `bilevel tune` with `args` plus JSON and trace outputs in `dir`; checks the exit
/// status, the JSON keys and one trace row per step; returns the JSON text.
fn tune_ok(dir: &std::path::Path, args: &[&str], iters: usize, keys: &[&str]) -> String {
    let json = dir.join("s.json");
    let trace = dir.join("t.csv");
    // Alternate the plot format between calls.
    let plot = dir.join(if iters.is_multiple_of(2) { "p.svg" } else { "p.png" });
    let _ = std::fs::remove_file(&plot);
    let iters_text = iters.to_string();
    let mut all: Vec<&str> = vec!["tune"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--iters",
        &iters_text,
        "--json",
        json.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let out = bilevel(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No progress bar into a pipe: warnings only (about the data, and that a run did not
    // converge).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let converged = String::from_utf8_lossy(&out.stdout).contains(": converged after");
    assert!(
        stderr.lines().all(|l| l.starts_with("bilevel: warning: "))
            && stderr.contains("bilevel: warning: not converged") != converged,
        "{args:?}: {stderr:?}"
    );
    let text = std::fs::read_to_string(&json).unwrap();
    for key in [
        "\"problem\"",
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
        "\"relative_hypergradient_norm\"",
        "\"relative_lower_residual\"",
        "\"held_iterations\"",
        "\"wall_time_s\"",
    ]
    .iter()
    .chain(keys)
    {
        assert!(text.contains(key), "{args:?}: missing {key} in {text}");
    }
    let rows = std::fs::read_to_string(&trace).unwrap();
    assert_eq!(rows.lines().count(), 1 + iters, "{args:?}: one trace row per step");
    let bytes = std::fs::read(&plot).unwrap();
    assert!(bytes.len() > 1000, "{args:?}: a non-empty plot");
    if iters.is_multiple_of(2) {
        assert!(String::from_utf8_lossy(&bytes).contains("<svg"));
    } else {
        assert_eq!(&bytes[1..4], b"PNG");
    }
    text
}

#[test]
fn tune_runs_ridge_hyperclean_and_meta_end_to_end() {
    let dir = fresh_dir("problems");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    std::fs::write(dir.join("rtrain.csv"), regression_csv(40, 1)).unwrap();
    std::fs::write(dir.join("rval.csv"), regression_csv(40, 2)).unwrap();
    std::fs::write(dir.join("rtest.csv"), regression_csv(40, 3)).unwrap();
    for (method, precision) in [("qnbo-bfgs", "--f64"), ("saba", "--f32"), ("f2sa", "--f64")] {
        let json = tune_ok(
            &dir,
            &[
                "--problem",
                "ridge",
                "--train",
                &p("rtrain.csv"),
                "--val",
                &p("rval.csv"),
                "--test",
                &p("rtest.csv"),
                "--method",
                method,
                precision,
            ],
            6,
            &["\"problem\": \"ridge\"", "\"test\": {\"loss\"", "\"r2\""],
        );
        assert!(
            json.contains(&format!("\"precision\": \"{}\"", &precision[2..])),
            "{json}"
        );
    }

    let digits = include_str!("../data/digits.csv");
    let mut lines = digits.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    let write = |name: &str, part: &[&str]| {
        std::fs::write(dir.join(name), format!("{header}\n{}\n", part.join("\n"))).unwrap();
    };
    write("dtrain.csv", &rows[..60]);
    write("dval.csv", &rows[60..120]);
    write("dtest.csv", &rows[120..180]);
    for method in ["nsbo-sgd", "ma-soba"] {
        let json = tune_ok(
            &dir,
            &[
                "--problem",
                "hyperclean",
                "--train",
                &p("dtrain.csv"),
                "--val",
                &p("dval.csv"),
                "--test",
                &p("dtest.csv"),
                "--method",
                method,
                "--set",
                "noise=0.5",
            ],
            5,
            &[
                "\"problem\": \"hyperclean\"",
                "\"accuracy\"",
                "\"flipped\": [",
                "\"classes\": 10",
            ],
        );
        let x = json.split("\"x\": [").nth(1).unwrap().split(']').next().unwrap();
        assert_eq!(x.split(',').count(), 60, "one weight per training row");
        let flipped = json.split("\"flipped\": [").nth(1).unwrap().split(']').next().unwrap();
        assert_eq!(flipped.split(',').count(), 30, "half the labels flipped and listed");
    }

    std::fs::write(dir.join("tasks.csv"), tasks_csv(8, 1)).unwrap();
    std::fs::write(dir.join("ttest.csv"), tasks_csv(4, 2)).unwrap();
    for method in ["aid-cg", "pzobo", "nsbo-saga"] {
        let json = tune_ok(
            &dir,
            &[
                "--problem",
                "meta",
                "--tasks",
                &p("tasks.csv"),
                "--test",
                &p("ttest.csv"),
                "--method",
                method,
                "--set",
                "lambda=2",
            ],
            4,
            &["\"problem\": \"meta\"", "\"r2\"", "\"tasks\": 8", "\"lambda\": 2.0"],
        );
        let x = json.split("\"x\": [").nth(1).unwrap().split(']').next().unwrap();
        assert_eq!(x.split(',').count(), 3, "two prior weights and the bias");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_method_runs_on_ridge() {
    let dir = fresh_dir("methods");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    std::fs::write(dir.join("rtrain.csv"), regression_csv(30, 4)).unwrap();
    std::fs::write(dir.join("rval.csv"), regression_csv(30, 5)).unwrap();
    for method in bilevel::registry::Method::ALL.iter().map(|m| m.name()) {
        tune_ok(
            &dir,
            &[
                "--problem",
                "ridge",
                "--train",
                &p("rtrain.csv"),
                "--val",
                &p("rval.csv"),
                "--method",
                method,
            ],
            3,
            &[],
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn set_overrides_and_rejects_unknown_keys() {
    let dir = fresh_dir("set");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    std::fs::write(dir.join("rtrain.csv"), regression_csv(30, 6)).unwrap();
    std::fs::write(dir.join("rval.csv"), regression_csv(30, 7)).unwrap();
    let base = ["tune", "--problem", "ridge", "--method", "aid-cg", "--iters", "3"];
    let files = ["--train", &p("rtrain.csv"), "--val", &p("rval.csv")];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(&files);
        a.extend_from_slice(extra);
        bilevel(&a)
    };
    let out = run(&["--set", "cg_steps=3", "--set", "lower_step=0.01"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["--set", "momentum=0.9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("momentum") && err.contains("lower_step, lower_steps, cg_steps"),
        "{err}"
    );
    let out = run(&["--set", "cg_steps=2.5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cg_steps"));
    let out = run(&["--set", "cg_steps"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("key=value"));
    let out = run(&["--f32", "--f64"]);
    assert!(!out.status.success());
    let out = run(&["--float16"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--float16"));
    let mut args: Vec<&str> = vec!["tune", "--problem", "ridge", "--method", "newton-magic"];
    args.extend_from_slice(&files);
    let out = bilevel(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("newton-magic"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `tune --problem meta` on a task file: the JSON.
fn meta_json(dir: &std::path::Path, file: &str, method: &str) -> String {
    let json = dir.join("m.json");
    let out = bilevel(&[
        "tune",
        "--problem",
        "meta",
        "--tasks",
        dir.join(file).to_str().unwrap(),
        "--method",
        method,
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_to_string(json).unwrap()
}

#[test]
fn any_task_count_from_two_is_tuned_and_the_unused_places_never_count() {
    let dir = fresh_dir("task-counts");
    // Three tasks, and the same three twice under other names: the same mean over tasks,
    // hence the same optimal prior. Both sit in the capacity of 8; were the unused places
    // (copies of the first task) counted, the first task would weigh 6/8 in one file and
    // 3/8 in the other.
    let three = tasks_csv(3, 5);
    let again: String = three
        .lines()
        .skip(1)
        .map(|l| l.replacen("task", "again", 1) + "\n")
        .collect();
    std::fs::write(dir.join("three.csv"), &three).unwrap();
    std::fs::write(dir.join("six.csv"), three.clone() + &again).unwrap();
    let (a, b) = (
        meta_json(&dir, "three.csv", "reference"),
        meta_json(&dir, "six.csv", "reference"),
    );
    assert_eq!(member(&a, "tasks"), "3");
    assert_eq!(member(&b, "tasks"), "6");
    for json in [&a, &b] {
        assert_eq!(member(json, "status"), "\"converged\"");
    }
    let prior = |json: &str| -> Vec<f64> {
        let x = json.split("\"x\": [").nth(1).unwrap().split(']').next().unwrap();
        x.split(',').map(|v| v.trim().parse().unwrap()).collect()
    };
    let (xa, xb) = (prior(&a), prior(&b));
    assert!(xa.iter().zip(&xb).all(|(p, q)| (p - q).abs() < 1e-5), "{xa:?} {xb:?}");
    let (fa, fb): (f64, f64) = (upper_value(&a).parse().unwrap(), upper_value(&b).parse().unwrap());
    assert!((fa - fb).abs() <= 1e-9 * fa, "{fa} {fb}");

    // 40 tasks go into the capacity of 128 and tune with the default method.
    std::fs::write(dir.join("forty.csv"), tasks_csv(40, 6)).unwrap();
    let c = meta_json(&dir, "forty.csv", "qnbo-lbfgs");
    assert_eq!(member(&c, "tasks"), "40");
    assert_eq!(member(&c, "status"), "\"converged\"");
    let r = meta_json(&dir, "forty.csv", "reference");
    let (fc, fr): (f64, f64) = (upper_value(&c).parse().unwrap(), upper_value(&r).parse().unwrap());
    assert!((fc - fr).abs() <= 1e-6 * fr, "{fc} {fr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn meta_rejects_bad_task_files_with_their_position() {
    let dir = fresh_dir("tasks");
    let bad_part = "task,part,a,y\nt,support,1,2\nt,train,1,2\n".to_string();
    for (text, says) in [
        (bad_part, ["n.csv:3:3", "train"]),
        (tasks_csv(1, 1), ["has 1 task", "needs at least 2"]),
        (tasks_csv(129, 1), ["has 129 tasks", "at most 128"]),
    ] {
        std::fs::write(dir.join("n.csv"), text).unwrap();
        let out = bilevel(&[
            "tune",
            "--problem",
            "meta",
            "--tasks",
            dir.join("n.csv").to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(says.iter().all(|s| err.contains(s)), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_runs_two_methods_to_a_target_with_repeats() {
    let dir = fresh_dir("bench");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    std::fs::write(dir.join("rtrain.csv"), regression_csv(40, 8)).unwrap();
    std::fs::write(dir.join("rval.csv"), regression_csv(40, 9)).unwrap();
    let out = bilevel(&[
        "bench",
        "--problem",
        "ridge",
        "--train",
        &p("rtrain.csv"),
        "--val",
        &p("rval.csv"),
        "--methods",
        "nbo-cg,soba",
        "--repeats",
        "2",
        "--iters",
        "30",
        "--target-rel-grad",
        "0.1",
        "--json",
        &p("bench.json"),
        "--plot",
        &p("bench.svg"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("| method | status | iterations |"), "{table}");
    assert!(table.contains("| nbo-cg |") && table.contains("| soba |"), "{table}");
    let json = std::fs::read_to_string(dir.join("bench.json")).unwrap();
    for key in [
        "\"problem\": \"ridge\"",
        "\"relative_hypergradient_norm\": 0.1",
        "\"repeats\": 2",
        "\"method\": \"nbo-cg\"",
        "\"method\": \"soba\"",
        "\"seed\": 2",
        "\"lower_hvp\"",
        "\"step_time_s\"",
    ] {
        assert!(json.contains(key), "missing {key} in {json}");
    }
    assert_eq!(json.matches("\"seed\": ").count(), 4, "two runs of each method");
    assert!(std::fs::metadata(dir.join("bench.svg")).unwrap().len() > 1000);
    let out = bilevel(&[
        "bench",
        "--problem",
        "ridge",
        "--train",
        &p("rtrain.csv"),
        "--val",
        &p("rval.csv"),
        "--methods",
        "nbo-cg,warp-drive",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warp-drive"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn data_writes_the_bundled_split_as_csv() {
    let dir = fresh_dir("data");
    let out = bilevel(&["data", "--dataset", "digits", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let count = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap().lines().count() - 1;
    assert_eq!(
        (count("train.csv"), count("val.csv"), count("test.csv")),
        (300, 300, 1197)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `tune --problem <problem> --method <method>` on `dir`'s `train.csv` and `val.csv`, with a
/// JSON summary: its text, after checking that the command succeeded.
fn tune_json(dir: &std::path::Path, problem: &str, method: &str) -> String {
    let json = dir.join("r.json");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let out = bilevel(&[
        "tune",
        "--problem",
        problem,
        "--train",
        &p("train.csv"),
        "--val",
        &p("val.csv"),
        "--method",
        method,
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_to_string(&json).unwrap()
}

/// The summary's `upper_value` (the validation loss; an oracle count of the same name comes
/// before it).
fn upper_value(json: &str) -> &str {
    member(&json[json.find("\"x_meaning\"").unwrap()..], "upper_value")
}

/// A JSON member's text, up to the next `,` or newline at its level (enough for numbers,
/// strings and flat arrays).
fn member<'a>(json: &'a str, key: &str) -> &'a str {
    let start = json
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 4;
    let rest = &json[start..];
    let end = if rest.starts_with('[') {
        rest.find(']').unwrap() + 1
    } else {
        rest.find([',', '\n']).unwrap()
    };
    &rest[..end]
}

#[test]
fn ridge_tunes_to_the_same_strength_whatever_the_units_of_the_target() {
    let dir = fresh_dir("units");
    // Few noisy rows, so that some regularization helps: the optimum is inside the box.
    let rows = |n: u64, seed: u64, scale: f64| {
        let mut s = String::from("a,b,c,y\n");
        for i in 0..n {
            let k = seed * 1000 + i * 4;
            let (a, b, c) = (noise(k), noise(k + 1), noise(k + 2));
            let y = 0.3 * a - 0.2 * b + 0.1 * c + 1.5 * noise(k + 3);
            s += &format!("{a},{b},{c},{:?}\n", scale * y);
        }
        s
    };
    let mut found = Vec::new();
    for scale in [1.0, 100.0, 0.01] {
        std::fs::write(dir.join("train.csv"), rows(12, 1, scale)).unwrap();
        std::fs::write(dir.join("val.csv"), rows(40, 2, scale)).unwrap();
        // SOBA, MA-SOBA and NSBO-SGD draw minibatches of 32 from the 40 validation rows
        // only: their noise is in the adjoint alone. MA-SOBA's path passes ln λ ≈ 3, where
        // the default lower step (1/L at the start) diverges: the driver halves it.
        for method in [
            "reference",
            "qnbo-lbfgs",
            "soba",
            "ma-soba",
            "nsbo-sgd",
            "nbo-gd",
            "aid-neumann",
            "itd",
            "f2sa",
            "pzobo",
        ] {
            let text = tune_json(&dir, "ridge", method);
            assert_eq!(
                member(&text, "status"),
                "\"converged\"",
                "{method} at scale {scale}: {text}"
            );
            let x: f64 = member(&text, "x").trim_matches(['[', ']']).parse().unwrap();
            assert!(
                x > -11.0 && x < 11.0,
                "{method} at scale {scale}: ln λ = {x}, at a bound"
            );
            found.push((method, scale, x));
        }
    }
    let (_, _, first) = found[0];
    for (method, scale, x) in &found {
        assert!(
            (x - first).abs() < 1e-4,
            "{method} at scale {scale}: ln λ = {x}, at scale 1: {first}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Data the defaults were not chosen on: the splits of seeds 1–5. With no settings, the
/// methods whose estimates converge (quasi-Newton, Newton–CG) or become exact at a held `x`
/// (the warm-started and truncated full-batch methods, whose steps follow the curvature at
/// hand; the SAGA methods; the SGD methods once their minibatches have grown) reach the
/// reference's optimum, and say so. The SGD methods take about a million oracle calls per
/// run: one split.
#[test]
fn with_no_settings_the_converging_methods_reach_the_reference_optimum_on_other_splits() {
    use bilevel::registry::Method;
    use bilevel::run::Outcome;
    for seed in 1..=5 {
        let split = demo::breast_cancer_split(seed).unwrap();
        let reference = demo::tune_with(&split, Method::Reference).unwrap();
        assert_eq!(reference.outcome, Outcome::Converged, "seed {seed}");
        let best = demo::validation_loss(&split, reference.ln_lambda).unwrap();
        for method in [
            Method::QnboBfgs,
            Method::QnboSr1,
            Method::QnboLbfgs,
            Method::Shine,
            Method::NboCg,
            Method::NboGd,
            Method::AidCg,
            Method::AidNeumann,
            Method::AmigoGd,
            Method::AmigoCg,
            Method::Itd,
            Method::Saba,
            Method::NsboSaga,
            Method::MaNsboSaga,
        ]
        .into_iter()
        .chain(if seed == 3 {
            vec![Method::Soba, Method::MaSoba, Method::NsboSgd, Method::F2sa]
        } else {
            Vec::new()
        }) {
            let t = demo::tune_with(&split, method).unwrap();
            let f = demo::validation_loss(&split, t.ln_lambda).unwrap();
            assert_eq!(t.outcome, Outcome::Converged, "{} on seed {seed}", method.name());
            assert!(
                (f - best).abs() <= 1e-5 * best,
                "{} on seed {seed}: F = {f} at ln λ = {}, reference {best} at {}",
                method.name(),
                t.ln_lambda,
                reference.ln_lambda
            );
        }
    }
}

/// The command line's run on 30 features compiled at width 32 (rows padded with zeros) is the
/// library's run at width 30: the same status, iterations and oracle calls, and the same
/// `ln λ` and validation loss, for a method of each kind of estimate. A method name mapped to
/// another solver, or padding that changes the arithmetic, shows in the counts.
#[test]
fn tune_pads_rows_without_changing_the_run() {
    use bilevel::registry::Method;
    let dir = fresh_dir("padded");
    let data = dir.join("bc");
    let out = bilevel(&[
        "data",
        "--dataset",
        "breast-cancer",
        "--seed",
        "3",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let split = demo::breast_cancer_split(3).unwrap();
    for method in [Method::Reference, Method::QnboLbfgs, Method::NboGd, Method::AidNeumann] {
        let library = demo::tune_with(&split, method).unwrap();
        let text = tune_json(&data, "logreg", method.name());
        let name = method.name();
        assert_eq!(member(&text, "compiled_width"), "32", "{name}");
        assert_eq!(
            member(&text, "status"),
            format!("\"{}\"", library.outcome.name()),
            "{name}"
        );
        let number = |key: &str| member(&text, key).trim_matches(['[', ']']).parse::<f64>().unwrap();
        assert_eq!(number("iterations"), f64::from(library.iterations), "{name}");
        assert_eq!(number("lower_grad"), library.oracle_calls.lower_grad as f64, "{name}");
        assert_eq!(number("lower_hvp"), library.oracle_calls.lower_hvp as f64, "{name}");
        let x = number("x");
        assert!(
            (x - library.ln_lambda).abs() <= 1e-12,
            "{name}: ln λ {x} against {}",
            library.ln_lambda
        );
        let f: f64 = upper_value(&text).parse().unwrap();
        // Both at the lower level solved to tolerance at the run's `x`.
        let exact = demo::validation_loss(&split, library.ln_lambda).unwrap();
        assert!(
            (f - exact).abs() <= 1e-9 * exact,
            "{name}: validation loss {f} against {exact}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run that ends with extreme weights is still scored: the lower solve of the final
/// evaluation starts from the solver's own `y` (from zero, Newton ran out of steps on this
/// run and the command failed after its 3000 iterations).
#[test]
fn hyperclean_scores_a_run_that_ends_with_extreme_weights() {
    let dir = fresh_dir("extreme-weights");
    let digits = dir.join("digits");
    let out = bilevel(&["data", "--dataset", "digits", "--out", digits.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p = |f: &str| digits.join(f).to_str().unwrap().to_string();
    let out = bilevel(&[
        "tune",
        "--problem",
        "hyperclean",
        "--train",
        &p("train.csv"),
        "--val",
        &p("val.csv"),
        "--test",
        &p("test.csv"),
        "--method",
        "nsbo-sgd",
        "--set",
        "noise=0.5",
        "--set",
        "steps=3",
        "--iters",
        "3000",
        "--seed",
        "4",
        "--tracking",
        "0",
        "--step",
        "2100",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("test accuracy = 8"), "{stdout}");
}

/// Rewrites a comma-separated file with a header (labels 0/1) in another layout.
fn rewrite(text: &str, layout: &str) -> String {
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let label =
        |r: &[&str], pair: [&str; 2]| pair[usize::from(r[r.len() - 1].parse::<f64>().unwrap() == 1.0)].to_string();
    let body: Vec<String> = match layout {
        "semicolon, decimal comma" => std::iter::once(header.replace(',', ";"))
            .chain(rows.iter().map(|r| r.join(";").replace('.', ",")))
            .collect(),
        "tab, no header" => rows.iter().map(|r| r.join("\t")).collect(),
        "quoted words" => std::iter::once(header.to_string())
            .chain(rows.iter().map(|r| {
                format!(
                    "{},\"{}\"",
                    r[..r.len() - 1].join(","),
                    label(r, ["benign", "malignant"])
                )
            }))
            .collect(),
        _ => rows
            .iter()
            .map(|r| {
                let features = r[..r.len() - 1]
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.parse::<f64>().unwrap() != 0.0);
                let pairs: Vec<String> = features.map(|(j, v)| format!("{}:{v}", j + 1)).collect();
                format!("{} {}", label(r, ["-1", "+1"]), pairs.join(" "))
            })
            .collect(),
    };
    body.join("\n") + "\n"
}

#[test]
fn own_files_in_any_common_layout_give_the_same_run() {
    let dir = small_files("layouts");
    let baseline = tune_json(&dir, "logreg", "nbo-cg");
    assert!(member(&baseline, "data").contains("header"), "{baseline}");
    assert!(!baseline.contains("\"labels\""));
    for (layout, extension, shown, labels) in [
        ("semicolon, decimal comma", "csv", "';'-separated, header", None),
        ("tab, no header", "tsv", "tab-separated, no header", None),
        (
            "quoted words",
            "csv",
            "','-separated, header",
            Some("{\"benign\": 0, \"malignant\": 1}"),
        ),
        ("libsvm", "svm", "LIBSVM", Some("{\"-1\": 0, \"1\": 1}")),
        ("libsvm", "txt", "LIBSVM", Some("{\"-1\": 0, \"1\": 1}")),
    ] {
        let sub = dir.join(format!("{}-{extension}", layout.replace([' ', ','], "")));
        std::fs::create_dir_all(&sub).unwrap();
        for part in ["train", "val"] {
            let text = std::fs::read_to_string(dir.join(format!("{part}.csv"))).unwrap();
            std::fs::write(sub.join(format!("{part}.{extension}")), rewrite(&text, layout)).unwrap();
            if extension != "csv" {
                std::fs::copy(sub.join(format!("{part}.{extension}")), sub.join(format!("{part}.csv"))).unwrap();
            }
        }
        // Under the .csv name the layout is detected from the content; under its own
        // extension (.tsv, .svm) from the name.
        for name in ["csv", extension] {
            let p = |f: &str| sub.join(format!("{f}.{name}")).to_str().unwrap().to_string();
            let json = sub.join("r.json");
            let out = bilevel(&[
                "tune",
                "--problem",
                "logreg",
                "--method",
                "nbo-cg",
                "--train",
                &p("train"),
                "--val",
                &p("val"),
                "--json",
                json.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "{layout}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let run = std::fs::read_to_string(&json).unwrap();
            for key in ["status", "iterations", "x", "oracle_calls"] {
                assert_eq!(member(&run, key), member(&baseline, key), "{layout} .{name}: {key}");
            }
            assert_eq!(upper_value(&run), upper_value(&baseline), "{layout} .{name}");
            assert!(member(&run, "data").contains(shown), "{layout} .{name}: {run}");
            match labels {
                Some(l) => assert!(run.contains(&format!("\"labels\": {l}")), "{layout}: {run}"),
                None => assert!(!run.contains("\"labels\""), "{layout}: {run}"),
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn degenerate_data_runs_with_a_warning_for_each_fault() {
    let dir = fresh_dir("degenerate");
    // Three training rows of four features, one of them constant, every label 0; the
    // validation set has class 1, which training lacks.
    std::fs::write(dir.join("train.csv"), "a,b,c,d,y\n1,5,0.5,2,0\n2,5,-1,0,0\n0,5,3,1,0\n").unwrap();
    std::fs::write(dir.join("val.csv"), "a,b,c,d,y\n1,5,0,1,1\n0,5,1,2,0\n").unwrap();
    // No class 1 to fit: the unregularized bias has no minimizer; the default method ends
    // anyway, and every fault is named.
    let json = tune_json(&dir, "logreg", "qnbo-bfgs");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let out = bilevel(&[
        "tune",
        "--problem",
        "logreg",
        "--train",
        &p("train.csv"),
        "--val",
        &p("val.csv"),
        "--quiet",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    for fault in [
        "one class only",
        "constant feature column(s) 2 ",
        "3 rows for 4 features",
        "class(es) 1 do not occur in",
    ] {
        assert!(err.contains(fault), "no warning {fault:?}: {err}");
        assert!(member(&json, "warnings").contains(fault), "{json}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_users_file_is_split_and_exported_as_the_bundled_data_is() {
    let dir = fresh_dir("own-export");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    // The bundled breast-cancer file handed in as a user's file, its labels as words.
    let raw = include_str!("../data/breast_cancer.csv");
    let worded: Vec<String> = raw
        .lines()
        .enumerate()
        .map(|(i, l)| match (i, l.rsplit_once(',')) {
            (0, _) | (_, None) => l.to_string(),
            (_, Some((features, label))) => format!("{features},{}", if label == "1" { "malignant" } else { "benign" }),
        })
        .collect();
    std::fs::write(dir.join("mine.csv"), worded.join("\n") + "\n").unwrap();
    let ok = |args: &[&str]| {
        let out = bilevel(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let said = ok(&["data", "--from", &p("mine.csv"), "--out", &p("own"), "--seed", "7"]);
    assert!(said.contains("(341 / 114 / 114 rows, split seed 7)"), "{said}");
    ok(&[
        "data",
        "--dataset",
        "breast-cancer",
        "--out",
        &p("bundled"),
        "--seed",
        "7",
    ]);
    // The same seed splits the same rows out, values exact.
    for part in ["train.csv", "val.csv", "test.csv"] {
        let own = std::fs::read_to_string(dir.join("own").join(part)).unwrap();
        let bundled = std::fs::read_to_string(dir.join("bundled").join(part)).unwrap();
        let features = |text: &str| -> Vec<String> {
            text.lines()
                .skip(1)
                .map(|l| l.rsplit_once(',').unwrap().0.to_string())
                .collect()
        };
        assert_eq!(features(&own), features(&bundled), "{part}");
        assert!(own.lines().nth(1).unwrap().ends_with("malignant") || own.lines().nth(1).unwrap().ends_with("benign"));
    }
    // Exported for the firmware, the split file gives the bundled export's bits (the data the
    // firmware runs in QEMU): rows, labels (benign → 0, malignant → 1), means and scales.
    ok(&[
        "export",
        "--train",
        &p("own/train.csv"),
        "--val",
        &p("own/val.csv"),
        "--test",
        &p("own/test.csv"),
        "--format",
        "rust",
        "--out",
        &p("own.rs"),
    ]);
    ok(&["export", "--format", "rust", "--seed", "7", "--out", &p("bundled.rs")]);
    let own = std::fs::read_to_string(dir.join("own.rs")).unwrap();
    let bundled = std::fs::read_to_string(dir.join("bundled.rs")).unwrap();
    assert!(
        own.lines().next().unwrap().contains("labels benign = 0, malignant = 1"),
        "{own:.300}"
    );
    assert_eq!(
        own.lines().skip(1).collect::<Vec<_>>(),
        bundled.lines().skip(1).collect::<Vec<_>>()
    );
    assert!(own.contains("pub static MEAN: [f32; COLUMNS]") && own.contains("pub static SCALE: [f32; COLUMNS]"));
    // For C the rows take the C library's width, 31 columns.
    let said = ok(&[
        "export",
        "--train",
        &p("own/train.csv"),
        "--val",
        &p("own/val.csv"),
        "--format",
        "c",
        "--out",
        &p("own.h"),
    ]);
    assert!(said.contains("(31 columns)"), "{said}");
    let header = std::fs::read_to_string(dir.join("own.h")).unwrap();
    assert!(header.contains("#define BL_DATA_COLUMNS 31") && header.contains("#define bl_scale (bl_scale_.values)"));
    assert!(!header.contains("bl_test_"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A logistic-regression file of `rows` rows and `features` features: labels drawn from
/// `σ(w·a)` with a fixed sparse `w`.
fn logistic_csv(rows: u64, features: u64, seed: u64) -> String {
    let names: Vec<String> = (0..features).map(|j| format!("f{j}")).collect();
    let mut s = names.join(",") + ",y\n";
    let weight = |j: u64| if j.is_multiple_of(5) { 3.0 * noise(j) } else { 0.0 };
    for i in 0..rows {
        let k = (seed * 100_000 + i) * (features + 1);
        let a: Vec<f64> = (0..features).map(|j| noise(k + j)).collect();
        let z: f64 =
            a.iter().enumerate().map(|(j, v)| v * weight(j as u64)).sum::<f64>() / libm::sqrt(features as f64 / 5.0);
        let label = u8::from((noise(k + features) + 1.0) / 2.0 < 1.0 / (1.0 + libm::exp(-3.0 * z)));
        let cells: Vec<String> = a.iter().map(|v| format!("{v:.5}")).collect();
        s += &format!("{},{label}\n", cells.join(","));
    }
    s
}

#[test]
fn wide_files_are_tuned_to_the_reference_optimum_with_no_settings() {
    for (features, width) in [(100, 256), (500, 1024)] {
        let dir = fresh_dir(&format!("wide{features}"));
        std::fs::write(dir.join("train.csv"), logistic_csv(400, features, 1)).unwrap();
        std::fs::write(dir.join("val.csv"), logistic_csv(300, features, 2)).unwrap();
        let json = dir.join("r.json");
        let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
        let out = bilevel(&[
            "tune",
            "--problem",
            "logreg",
            "--train",
            &p("train.csv"),
            "--val",
            &p("val.csv"),
            "--json",
            &p("r.json"),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let default = std::fs::read_to_string(&json).unwrap();
        let reference = tune_json(&dir, "logreg", "reference");
        assert_eq!(member(&default, "status"), "\"converged\"", "{default}");
        assert_eq!(member(&default, "features"), features.to_string());
        assert_eq!(member(&default, "compiled_width"), width.to_string());
        let value = |j: &str| upper_value(j).parse::<f64>().unwrap();
        let (a, b) = (value(&default), value(&reference));
        assert!(
            (a - b).abs() <= 1e-5 * b,
            "{features} features: {a} against the reference's {b}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The solvers' state at the widest width (f64, one L2 strength), as the README gives it:
/// `size_of` of each method's solver built by the registry.
#[test]
fn solver_state_at_the_widest_width_is_as_the_readme_says() {
    use bilevel_std::bilevel::registry::{Method, Settings, Start, Visit};
    use bilevel_std::bilevel::run::Solver;
    struct Size;
    impl<const DX: usize, const DY: usize> Visit<f64, DX, DY> for Size {
        type Output = usize;
        fn visit<S: Solver<f64, DX, DY> + Clone + std::fmt::Debug>(self, _: S) -> usize {
            std::mem::size_of::<S>()
        }
    }
    fn megabytes<const DY: usize>(m: Method) -> f64 {
        let start = Start::new([0.0f64; DY], (341, 114), 1);
        m.build::<f64, Size, 1, DY>(&Settings::new(m, 1.0), &start, Size)
            .unwrap() as f64
            / 1e6
    }
    let sizes = bilevel_std::tune::with_large_stack(|| {
        Method::ALL
            .iter()
            .map(|&m| (m.name(), megabytes::<1025>(m), megabytes::<257>(m)))
            .collect::<Vec<_>>()
    });
    let tenths = |v: f64| (v * 10.0).round() / 10.0;
    let hundredths = |v: f64| (v * 100.0).round() / 100.0;
    for (name, wide, narrow) in sizes {
        match name {
            "qnbo-bfgs" => assert_eq!((tenths(wide), tenths(narrow)), (16.8, 1.1), "{name}"),
            "saba" | "nsbo-saga" | "ma-nsbo-saga" => assert_eq!(tenths(wide), 1.6, "{name}"),
            "qnbo-sr1" => assert_eq!(hundredths(wide), 0.58, "{name}"),
            "itd" => assert_eq!(hundredths(wide), 0.55, "{name}"),
            _ => assert!(wide <= 0.28, "{name}: {wide} MB"),
        }
    }
}
