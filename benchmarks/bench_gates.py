"""Release-gate benchmarks: `mlops smoke-test` and `mlops checklist` wall time on the sample model (medians of 3).

The baseline is the smoke test most teams have: a script that loads the model file and predicts on a sample
(`HAND_CHECK`). The ratio says what the extra evidence (hash check, consistency, determinism, round trip,
200 timed single-row calls, schema edge cases; for the checklist also evaluation and baseline comparison) costs.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from _util import ROOT, median_of, python, save

HAND_CHECK = (
    "import sys, joblib, pandas as pd; m = joblib.load(sys.argv[1]); "
    "x = pd.read_parquet(sys.argv[2]).head(1000); assert len(m.predict_proba(x)) == len(x)"
)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-gates-"))
    mlops = [python(), "-m", "mlops_cli", "--registry", str(work / "registry")]
    subprocess.run(
        [python(), "sample_data/train.py", "sample_data/reference.parquet", str(work / "m.joblib")],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            *mlops,
            "register",
            str(work / "m.joblib"),
            "--name",
            "flights",
            "--train-data",
            "sample_data/reference.parquet",
            "--target",
            "delayed",
            "--eval-data",
            "sample_data/current.parquet",
            "-q",
        ],
        cwd=ROOT,
        check=True,
    )
    hand = median_of([python(), "-c", HAND_CHECK, str(work / "m.joblib"), "sample_data/reference.parquet"], cwd=ROOT)
    smoke = median_of([*mlops, "smoke-test", "flights", "-q", "--max-latency-ms", "1000"], cwd=ROOT)
    check = median_of([*mlops, "checklist", "flights", "--eval-data", "sample_data/current.parquet", "-q"], cwd=ROOT)
    save(
        "gates",
        {
            "load_and_predict_script_s": round(hand["seconds"], 2),
            "load_and_predict_script_peak_mb": round(hand["peak_mb"]),
            "smoke_test_s": round(smoke["seconds"], 2),
            "smoke_test_peak_mb": round(smoke["peak_mb"]),
            "checklist_s": round(check["seconds"], 2),
            "checklist_peak_mb": round(check["peak_mb"]),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
