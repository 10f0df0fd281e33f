"""`mlops abtest`: an experiment of 1M units (per unit vs pre-aggregated), a model comparison on the sample data,
and the fast DeLong algorithm against the pairwise O(m n) one.

    python benchmarks/run.py abtest
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
from _util import OUT, ROOT, median_of, python, save

sys.path.insert(0, str(ROOT))
from mlops_cli import stats  # noqa: E402

WORK = OUT / "abtest"
UNITS = 1_000_000


def _experiment_files() -> tuple[str, str]:
    rng = np.random.default_rng(0)
    variant = rng.choice(["control", "treatment"], UNITS)
    converted = (rng.random(UNITS) < np.where(variant == "treatment", 0.101, 0.100)).astype(np.int8)
    revenue = converted * rng.lognormal(3, 1, UNITS)
    units = pd.DataFrame({"variant": variant, "converted": converted, "revenue": revenue})
    units_path, agg_path = WORK / "units.parquet", WORK / "aggregated.parquet"
    units.to_parquet(units_path)
    grouped = units.assign(revenue_sq=units["revenue"] ** 2).groupby("variant")
    pd.DataFrame(
        {
            "n": grouped.size(),
            "converted_sum": grouped["converted"].sum(),
            "revenue_sum": grouped["revenue"].sum(),
            "revenue_sum_sq": grouped["revenue_sq"].sum(),
        }
    ).reset_index().to_parquet(agg_path)
    return str(units_path), str(agg_path)


def _verdict_ok(argv: list[str]) -> list[str]:
    """abtest exits 1 when the treatment does not win: a verdict, not a failure of the benchmark."""
    return ["sh", "-c", '"$@"; test $? -le 1', "sh", *argv]


def _registry() -> dict[str, str]:
    env = {"MLOPS_REGISTRY": str(WORK / "registry"), "PYTHONPATH": str(ROOT)}
    for name, rounds in (("v1", "100"), ("v2", "40")):
        model = WORK / f"{name}.joblib"
        subprocess.run(
            [python(), "sample_data/train.py", "sample_data/reference.parquet", str(model), "--max-iter", rounds],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                python(),
                "-m",
                "mlops_cli",
                "register",
                str(model),
                "--name",
                "flights",
                "--train-data",
                "sample_data/reference.parquet",
                "--target",
                "delayed",
                "-q",
            ],
            cwd=ROOT,
            check=True,
            env={**os.environ, **env},
        )
    return env


def _delong_pairwise(positive: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    aucs = []
    for s in (a, b):
        pos, neg = s[positive], s[~positive]
        aucs.append(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())
    return aucs[1] - aucs[0]


def _seconds(fn, repeats: int = 3) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return sorted(runs)[len(runs) // 2]


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    units, aggregated = _experiment_files()
    mlops = [python(), "-m", "mlops_cli"]
    experiment = ["abtest", "--variant-column", "variant", "--metric", "converted", "--metric", "revenue", "-q"]
    env = {"PYTHONPATH": str(ROOT)}
    results: dict[str, object] = {"units": UNITS}
    results["experiment_units"] = median_of(
        _verdict_ok(mlops + [experiment[0], units] + experiment[1:]), env=env, cwd=ROOT
    )
    results["experiment_units_mann_whitney"] = median_of(
        _verdict_ok(mlops + [experiment[0], units] + experiment[1:] + ["--mann-whitney"]), env=env, cwd=ROOT
    )
    results["experiment_aggregated"] = median_of(
        _verdict_ok(mlops + [experiment[0], aggregated] + experiment[1:]), env=env, cwd=ROOT
    )

    registry_env = _registry()
    models = mlops + [
        "abtest",
        "--champion",
        "flights:1",
        "--challenger",
        "flights:2",
        "--data",
        "sample_data/current.parquet",
        "--target",
        "delayed",
        "-q",
    ]
    for n_boot in (200, 1000):
        results[f"models_auc_bootstrap_{n_boot}"] = median_of(
            _verdict_ok(models + ["--bootstrap", str(n_boot)]), env=registry_env, cwd=ROOT
        )

    rng = np.random.default_rng(1)
    for n in (4_000, 1_000_000):
        positive = rng.random(n) < 0.3
        a, b = positive + rng.normal(0, 1, n), positive + rng.normal(0, 0.9, n)
        results[f"delong_fast_{n}_rows_s"] = _seconds(lambda: stats.delong(positive, a, b))  # noqa: B023
        if n <= 4_000:
            results[f"delong_pairwise_{n}_rows_s"] = _seconds(lambda: _delong_pairwise(positive, a, b))  # noqa: B023
    results["delong_speedup_4000_rows"] = results["delong_pairwise_4000_rows_s"] / results["delong_fast_4000_rows_s"]
    save("abtest", results)


if __name__ == "__main__":
    main()
