#!/usr/bin/env python3
"""Converts the two data sets that ship inside scikit-learn's wheel to bilevel's CSV format
(one header line, the features, then the label last).

    pip download scikit-learn --no-deps -d /tmp/skl && cd /tmp/skl && unzip -q *.whl
    python3 std-shim/data/convert.py /tmp/skl/sklearn/datasets std-shim/data

breast_cancer.csv: 569 rows, 30 features, label 1 = malignant, 0 = benign (scikit-learn
codes malignant as 0; the positive class here is the diagnosis being screened for).
digits.csv: 1797 rows, 64 pixel intensities 0..16, label the digit 0..9.
"""
import ast
import csv
import gzip
import sys
from pathlib import Path


def breast_cancer(src: Path, dst: Path) -> None:
    base = (src / "_base.py").read_text()
    start = base.index('"mean radius"')
    names = ast.literal_eval("[" + base[start:base.index("]", start)] + "]")
    assert len(names) == 30, len(names)
    with open(src / "data" / "breast_cancer.csv") as f:
        rows = list(csv.reader(f))[1:]  # first line: counts and class names
    assert len(rows) == 569
    with open(dst / "breast_cancer.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([n.replace(" ", "_") for n in names] + ["malignant"])
        for r in rows:
            w.writerow(r[:30] + ["1" if r[30] == "0" else "0"])


def digits(src: Path, dst: Path) -> None:
    with gzip.open(src / "data" / "digits.csv.gz", "rt") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1797 and all(len(r) == 65 for r in rows)
    with open(dst / "digits.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([f"pixel_{i // 8}_{i % 8}" for i in range(64)] + ["digit"])
        for r in rows:
            w.writerow([str(int(float(v))) for v in r])


if __name__ == "__main__":
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    breast_cancer(src, dst)
    digits(src, dst)
