"""`mlops monitor` over a day of prediction log against `mlops drift-report` on the same rows (issue 14: within 1.3x).

    python benchmarks/run.py monitor            # BENCH_ROWS=1000000 (default), BENCH_REPEATS=3

The log: sample_data/current.parquet repeated to BENCH_ROWS rows, scored by the sample pipeline (score-batch,
--keep-all, the label column dropped), with the columns `mlops serve` adds (request_id, received_at within the last hour, latency_ms, route),
written as 10 files under LOG/<today>/ as the server writes them. drift-report reads the same rows from one Parquet
file, with the logged probabilities as its prediction column (so neither re-scores). Each figure is the median of
BENCH_REPEATS runs, the two commands alternating; both run as child processes (imports and hash checks included).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from _util import OUT, ROOT, measure, python, save

DATA = OUT / "monitor"
ROWS = int(os.environ.get("BENCH_ROWS", 1_000_000))
REPEATS = int(os.environ.get("BENCH_REPEATS", 3))
ENV = {"PYTHONPATH": str(ROOT)}


def _mlops(registry, *args: str) -> list[str]:
    return [python(), "-m", "mlops_cli", "--registry", str(registry), *args]


def _prepare() -> tuple[object, object, object]:
    registry, logs, flat = DATA / "registry", DATA / "logs", DATA / "window.parquet"
    if DATA.exists():
        subprocess.run(["rm", "-rf", str(DATA)], check=True)
    DATA.mkdir(parents=True)
    model, split = DATA / "sample.joblib", DATA / "split"
    subprocess.run([python(), str(ROOT / "sample_data" / "train.py"), str(ROOT / "sample_data" / "reference.parquet"),
                    str(model), "--split-dir", str(split)], check=True, capture_output=True)  # fmt: skip
    measure(_mlops(registry, "register", str(model), "--name", "sample", "--train-data", str(split / "train.parquet"),
                   "--eval-data", str(split / "eval.parquet"), "--target", "delayed", "--bootstrap", "100", "-q"),
            env=ENV)  # fmt: skip
    current = pd.read_parquet(ROOT / "sample_data" / "current.parquet")
    tiled = pd.concat([current] * (ROWS // len(current) + 1), ignore_index=True).iloc[:ROWS]
    source, scored = DATA / "rows.parquet", DATA / "scored.parquet"
    tiled.to_parquet(source, index=False)
    measure(_mlops(registry, "score-batch", "sample:1", str(source), str(scored), "--keep-all", "--on-invalid", "null",
                   "-q"), env=ENV)  # fmt: skip
    table = pq.read_table(scored).drop_columns(["delayed"])  # a server's log holds no labels
    rng = np.random.default_rng(0)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    received = pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.uniform(0, 3_500_000, ROWS)), unit="ms")
    extra = {
        "request_id": pa.array([f"{i:032x}" for i in range(ROWS)]),
        "received_at": pa.array(received.astype("datetime64[ms, UTC]")),
        "latency_ms": pa.array(rng.gamma(2.0, 1.5, ROWS)),
        "route": pa.array(np.where(rng.random(ROWS) < 0.1, "challenger", "champion")),
    }
    for name, column in extra.items():
        table = table.append_column(name, column)
    day = logs / start.strftime("%Y-%m-%d")
    day.mkdir(parents=True)
    step = -(-ROWS // 10)
    for k in range(10):
        pq.write_table(table.slice(k * step, step), day / f"predictions-{start:%Y%m%dT%H%M%SZ}-w0-1-{k}.parquet")
    pq.write_table(table, flat)
    return registry, logs, flat


def main() -> None:
    registry, logs, flat = _prepare()
    drift = _mlops(registry, "drift-report", str(flat), "--model", "sample:1", "--prediction-column", "proba_1", "-q")
    monitor = _mlops(registry, "monitor", "sample:1", "--logs", str(logs), "--window", "24h", "-q")
    measure(monitor, env=ENV)  # warm-up: the permutation importance is computed once and cached in the registry
    runs: dict[str, list[dict[str, float]]] = {"drift_report": [], "monitor": []}
    for _ in range(REPEATS):
        runs["drift_report"].append(measure(drift, env=ENV))
        runs["monitor"].append(measure(monitor, env=ENV))
    med = {k: {m: float(np.median([r[m] for r in v])) for m in ("seconds", "peak_mb")} for k, v in runs.items()}
    ratio = med["monitor"]["seconds"] / med["drift_report"]["seconds"]
    save(
        "monitor",
        {
            "rows": ROWS,
            "repeats": REPEATS,
            "drift_report_seconds": round(med["drift_report"]["seconds"], 2),
            "monitor_seconds": round(med["monitor"]["seconds"], 2),
            "time_ratio": round(ratio, 3),
            "drift_report_peak_mb": round(med["drift_report"]["peak_mb"]),
            "monitor_peak_mb": round(med["monitor"]["peak_mb"]),
            "target_ratio": 1.3,
            "met": ratio <= 1.3,
        },
    )


if __name__ == "__main__":
    main()
