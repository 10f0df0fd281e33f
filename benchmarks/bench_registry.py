"""Registry benchmarks: `mlops --help` start-up, register of a small and a ~60 MB model, 200-way concurrent register.

Baselines in the same run: `python -c pass` (interpreter start-up) for --help; `cp` + `sha256sum` of the artifact
(the least a copy-into-a-folder registry does) for register.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import joblib
import numpy as np
from _util import ROOT, median_of, python, save
from sklearn.ensemble import RandomForestClassifier

sys.path.insert(0, str(ROOT / "sample_data"))
sys.path.insert(0, str(ROOT / "tests"))


def mlops() -> list[str]:
    script = Path(sys.executable).parent / "mlops"
    return [str(script)] if script.exists() else [python(), "-m", "mlops_cli"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    results: dict[str, object] = {}

    results["help_s"] = median_of([*mlops(), "--help"], repeats=15)["seconds"]
    results["python_startup_s"] = median_of([python(), "-c", "pass"], repeats=15)["seconds"]

    import pandas as pd
    import train

    frame = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    frame = frame[frame["delayed"].notna()]
    small = work / "small.joblib"
    joblib.dump(train.build(max_iter=50).fit(frame[train.FEATURES], frame["delayed"].astype(int)), small)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30_000, 20))  # a 100-tree forest of about 60 MB
    y = (x[:, 0] + rng.normal(size=len(x)) > 0).astype(int)
    big = work / "forest.joblib"
    joblib.dump(RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=2).fit(x, y), big)
    results["forest_mb"] = round(big.stat().st_size / 1e6, 1)

    def register(model: Path, *extra: str) -> dict[str, float]:
        reg = work / f"reg-{time.monotonic_ns()}"
        return median_of(
            [
                *mlops(),
                "--registry",
                str(reg),
                "register",
                str(model),
                "--name",
                "m",
                "--allow-duplicate",
                "-q",
                *extra,
            ],
            repeats=3,
        )

    results["register_small_s"] = register(small)["seconds"]
    results["register_small_with_data_s"] = register(
        small,
        "--train-data",
        "sample_data/reference.parquet",
        "--target",
        "delayed",
        "--eval-data",
        "sample_data/current.parquet",
    )["seconds"]
    forest = register(big)
    results["register_forest_s"], results["register_forest_peak_mb"] = forest["seconds"], forest["peak_mb"]
    dest = work / "copy"
    dest.mkdir()
    copy = median_of(["bash", "-c", f"cp {big} {dest}/m.joblib && sha256sum {dest}/m.joblib"], repeats=3)
    results["cp_sha256_forest_s"] = copy["seconds"]

    worker = textwrap.dedent("""
        import sys, tempfile, joblib
        from pathlib import Path
        from sklearn.dummy import DummyRegressor
        from mlops_cli.register import RegisterOptions, register
        from mlops_cli.registry import Registry
        registry, w = Registry(Path(sys.argv[1])), int(sys.argv[2])
        tmp = Path(tempfile.mkdtemp())
        for i in range(25):
            path = tmp / f"m{i}.joblib"
            joblib.dump(DummyRegressor(strategy="constant", constant=w * 1000 + i).fit([[0.0]], [0.0]), path)
            register(registry, path, "shared", RegisterOptions())
    """)
    walls = []
    for _ in range(3):
        reg = work / f"concurrent-{time.monotonic_ns()}"
        start = time.perf_counter()
        procs = [subprocess.Popen([python(), "-c", worker, str(reg), str(w)], cwd=ROOT) for w in range(8)]
        assert all(p.wait() == 0 for p in procs)
        walls.append(time.perf_counter() - start)
        versions = sorted(int(p.name) for p in (reg / "shared" / "versions").iterdir())
        assert versions == list(range(1, 201)), "versions lost or duplicated"
    results["concurrent_200_registers_s"] = sorted(walls)[1]
    results["concurrent_200_distinct_versions"] = True
    save("registry", {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
