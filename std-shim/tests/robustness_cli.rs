//! Bad input to the `bilevel` command line: every case must exit non-zero with a message
//! that names what was wrong (the file, line and column for data files). The table of what
//! was tried and what each gives is `docs/robustness-cli.md`; this test fails when the table
//! is stale (`BILEVEL_WRITE_DOCS=1 cargo test -p bilevel-std --test robustness_cli` rewrites
//! it).

use std::path::Path;
use std::process::Command;

/// One bad input: what it is, the files it needs, the arguments, and a part of the message
/// that must name the fault.
struct Case {
    what: &'static str,
    files: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
    names: &'static str,
}

const GOOD_TRAIN: &str = "a,b,y\n0.5,1.0,1\n-0.5,0.2,0\n1.5,-1.0,1\n-1.0,0.3,0\n";

const CASES: &[Case] = &[
    Case {
        what: "unknown command",
        files: &[],
        args: &["tune-everything"],
        names: "tune-everything",
    },
    Case {
        what: "unknown flag",
        files: &[],
        args: &["demo", "--fast"],
        names: "--fast",
    },
    Case {
        what: "unknown method",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &[
            "tune",
            "--problem",
            "logreg",
            "--train",
            "t.csv",
            "--val",
            "t.csv",
            "--method",
            "gd-magic",
        ],
        names: "gd-magic",
    },
    Case {
        what: "unknown problem",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &["tune", "--problem", "svm", "--train", "t.csv", "--val", "t.csv"],
        names: "svm",
    },
    Case {
        what: "missing file",
        files: &[],
        args: &[
            "tune",
            "--problem",
            "logreg",
            "--train",
            "none.csv",
            "--val",
            "none.csv",
        ],
        names: "none.csv",
    },
    Case {
        what: "empty file",
        files: &[("t.csv", GOOD_TRAIN), ("empty.csv", "")],
        args: &["tune", "--problem", "logreg", "--train", "empty.csv", "--val", "t.csv"],
        names: "empty.csv",
    },
    Case {
        what: "row with a missing column",
        files: &[("t.csv", GOOD_TRAIN), ("short.csv", "a,b,y\n1,2,1\n1,0\n")],
        args: &["tune", "--problem", "logreg", "--train", "short.csv", "--val", "t.csv"],
        names: "short.csv:3",
    },
    Case {
        what: "a field that is not a number",
        files: &[("t.csv", GOOD_TRAIN), ("word.csv", "a,b,y\n1,2,1\n1,x,0\n")],
        args: &["tune", "--problem", "logreg", "--train", "word.csv", "--val", "t.csv"],
        names: "word.csv:3:3",
    },
    Case {
        what: "NaN feature",
        files: &[("t.csv", GOOD_TRAIN), ("nan.csv", "a,b,y\n1,2,1\nNaN,1,0\n")],
        args: &["tune", "--problem", "logreg", "--train", "nan.csv", "--val", "t.csv"],
        names: "nan.csv:3:1",
    },
    Case {
        what: "three distinct labels for a binary problem",
        files: &[("t.csv", GOOD_TRAIN), ("label.csv", "a,b,y\n1,2,1\n1,0,2\n3,1,0\n")],
        args: &["tune", "--problem", "logreg", "--train", "label.csv", "--val", "t.csv"],
        names: "label.csv:4:5",
    },
    Case {
        what: "a fractional class label",
        files: &[("t.csv", GOOD_TRAIN), ("half.csv", "a,b,y\n1,2,1\n1,0,0.5\n")],
        args: &["tune", "--problem", "logreg", "--train", "half.csv", "--val", "t.csv"],
        names: "half.csv:3:5",
    },
    Case {
        what: "a word as a regression target",
        files: &[("t.csv", GOOD_TRAIN), ("word.csv", "a,b,y\n1,2,1.5\n1,0,high\n")],
        args: &["tune", "--problem", "ridge", "--train", "word.csv", "--val", "t.csv"],
        names: "word.csv:3:5",
    },
    Case {
        what: "header and rows with different separators",
        files: &[("t.csv", GOOD_TRAIN), ("semi.csv", "a,b,y\n1;2;1\n")],
        args: &["tune", "--problem", "logreg", "--train", "semi.csv", "--val", "t.csv"],
        names: "semi.csv:2",
    },
    Case {
        what: "an empty cell",
        files: &[("t.csv", GOOD_TRAIN), ("gap.csv", "a,b,y\n1,2,1\n1,,0\n")],
        args: &["tune", "--problem", "logreg", "--train", "gap.csv", "--val", "t.csv"],
        names: "gap.csv:3:3",
    },
    Case {
        what: "a feature of 1e308 (beyond what standardization can square)",
        files: &[("t.csv", GOOD_TRAIN), ("big.csv", "a,b,y\n1,2,1\n1e308,1,0\n")],
        args: &["tune", "--problem", "logreg", "--train", "t.csv", "--val", "big.csv"],
        names: "big.csv:3:1",
    },
    Case {
        what: "validation file with another feature count",
        files: &[("t.csv", GOOD_TRAIN), ("v.csv", "a,y\n1,0\n2,1\n")],
        args: &["tune", "--problem", "logreg", "--train", "t.csv", "--val", "v.csv"],
        names: "v.csv: 1 feature(s), but t.csv has 2",
    },
    Case {
        what: "LIBSVM indices not increasing",
        files: &[("t.csv", GOOD_TRAIN), ("s.svm", "+1 1:0.5 2:1\n-1 2:1 1:3\n")],
        args: &["tune", "--problem", "logreg", "--train", "s.svm", "--val", "t.csv"],
        names: "s.svm:2:8",
    },
    Case {
        what: "split fractions above 1",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &["data", "--from", "t.csv", "--out", "o", "--split", "0.9,0.3"],
        names: "--split",
    },
    Case {
        what: "export of a file with a bad row",
        files: &[("t.csv", GOOD_TRAIN), ("word.csv", "a,b,y\n1,2,1\n1,x,0\n")],
        args: &[
            "export", "--train", "word.csv", "--val", "t.csv", "--format", "c", "--out", "d.h",
        ],
        names: "word.csv:3:3",
    },
    Case {
        what: "--tasks with a problem that has no tasks",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &[
            "tune",
            "--problem",
            "logreg",
            "--train",
            "t.csv",
            "--val",
            "t.csv",
            "--tasks",
            "t.csv",
        ],
        names: "--tasks",
    },
    Case {
        what: "--train with meta-learning",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &["tune", "--problem", "meta", "--tasks", "t.csv", "--train", "t.csv"],
        names: "--train",
    },
    Case {
        what: "JSON path in a missing directory",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &[
            "tune",
            "--problem",
            "logreg",
            "--train",
            "t.csv",
            "--val",
            "t.csv",
            "--json",
            "no-such-dir/out.json",
        ],
        names: "no-such-dir/out.json",
    },
    Case {
        what: "plot file of an unknown format",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &[
            "tune",
            "--problem",
            "logreg",
            "--train",
            "t.csv",
            "--val",
            "t.csv",
            "--plot",
            "out.pdf",
        ],
        names: "out.pdf",
    },
    Case {
        what: "a row of one field",
        files: &[("t.csv", GOOD_TRAIN), ("short.csv", "a,b,y\n1,2,1\n5\n")],
        args: &["tune", "--problem", "logreg", "--train", "short.csv", "--val", "t.csv"],
        names: "short.csv:3",
    },
    Case {
        what: "task file with an unknown part",
        files: &[("tasks.csv", "task,part,a,y\nt,support,1,2\nt,train,1,2\n")],
        args: &["tune", "--problem", "meta", "--tasks", "tasks.csv"],
        names: "tasks.csv:3:3",
    },
    Case {
        what: "a task file of one task",
        files: &[("tasks.csv", "task,part,a,y\nt,support,1,2\nt,query,1,2\n")],
        args: &["tune", "--problem", "meta", "--tasks", "tasks.csv"],
        names: "tasks.csv has 1 task",
    },
    Case {
        what: "unknown --set key",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &[
            "tune",
            "--problem",
            "logreg",
            "--train",
            "t.csv",
            "--val",
            "t.csv",
            "--method",
            "aid-cg",
            "--set",
            "momentum=0.9",
        ],
        names: "momentum",
    },
    Case {
        what: "--set without a value",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &[
            "tune",
            "--problem",
            "logreg",
            "--train",
            "t.csv",
            "--val",
            "t.csv",
            "--set",
            "lower_step",
        ],
        names: "lower_step",
    },
    Case {
        what: "zero outer step",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &[
            "tune",
            "--problem",
            "logreg",
            "--train",
            "t.csv",
            "--val",
            "t.csv",
            "--step",
            "0",
        ],
        names: "step",
    },
    Case {
        what: "negative outer step",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &[
            "tune",
            "--problem",
            "logreg",
            "--train",
            "t.csv",
            "--val",
            "t.csv",
            "--step=-1",
        ],
        names: "step",
    },
    Case {
        what: "NaN outer step",
        files: &[("t.csv", GOOD_TRAIN)],
        args: &[
            "tune",
            "--problem",
            "logreg",
            "--train",
            "t.csv",
            "--val",
            "t.csv",
            "--step",
            "NaN",
        ],
        names: "step",
    },
];

fn table(dir: &Path) -> String {
    let mut out = String::from("| input | command | exit | message (first line of stderr) |\n|---|---|---|---|\n");
    for (i, case) in CASES.iter().enumerate() {
        let here = dir.join(format!("case{i}"));
        std::fs::create_dir_all(&here).unwrap();
        for (name, text) in case.files {
            std::fs::write(here.join(name), text).unwrap();
        }
        let run = Command::new(env!("CARGO_BIN_EXE_bilevel"))
            .args(case.args)
            .current_dir(&here)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&run.stderr).to_string();
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        assert!(!run.status.success(), "{}: exit 0", case.what);
        assert!(
            err.contains(case.names),
            "{}: {err:?} does not name {:?}",
            case.what,
            case.names
        );
        out.push_str(&format!(
            "| {} | `bilevel {}` | {} | `{}` |\n",
            case.what,
            case.args.join(" "),
            run.status.code().map_or("signal".to_string(), |c| c.to_string()),
            first.replace('|', "\\|").replace('`', "'"),
        ));
    }
    out
}

#[test]
fn every_bad_input_is_named_and_the_table_is_current() {
    let dir = std::env::temp_dir().join(format!("bilevel-robustness-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let doc = format!(
        "# Robustness of the command line: bad input\n\n\
         Each row runs `bilevel` on one bad input (files written beside it) and records its exit\n\
         code and the first line of its message; `std-shim/tests/robustness_cli.rs` checks that\n\
         every case fails and names the fault, and that this table is current.\n\n{}",
        table(&dir)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/robustness-cli.md");
    if std::env::var_os("BILEVEL_WRITE_DOCS").is_some() {
        std::fs::write(&path, &doc).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == doc,
        "docs/robustness-cli.md is stale; rerun with BILEVEL_WRITE_DOCS=1:\n{doc}"
    );
}
