"""score-batch --engine dask against --engine local on this machine, and a projection to 10 and 100 workers.

    python benchmarks/bench_dask.py                      # or: python benchmarks/run.py dask
    BENCH_DASK_ROWS=5000000,20000000 BENCH_REPEATS=3 python benchmarks/bench_dask.py   # the issue's sizes

The data: 20 float features in Parquet files of 100,000 rows each (a folder, one task per file); the model: the
logistic pipeline of bench_scoring.py. The cluster: a `dask scheduler` and two `dask worker` processes (one thread
each, no nanny) on 127.0.0.1, started fresh for each size so that each worker's peak RSS belongs to that size. The
engines alternate runs so both see the same machine load; figures are medians.

Measured here:
  * wall time of each engine (the client process: start, plan, hash of the input, publish) and their ratio;
  * peak RSS of the client and of each worker (the report's engine.worker_peak_rss_mb);
  * the scheduler's per-task overhead (1,000 no-op tasks) and the per-row cost of a task (engine.task_seconds).
Projected: throughput for 500M rows on 10 and 100 workers, from those costs, and which one limits it.

drift-report (BENCH_DASK_DRIFT_ROWS, default 1,000,000 rows a side; `BENCH_DASK_ONLY=drift` runs only this part):
the same generated folders as REFERENCE and CURRENT (two seeds), both engines alternating, on a fresh cluster; the
workers' peak RSS is read from the workers themselves (getrusage) after the runs, and the dask report is checked
equal to the local one (every number to 1e-9).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _util import OUT, ROOT, measure, python, save  # noqa: E402
from bench_scoring import COLUMNS, N_FEATURES, _models  # noqa: E402

DATA = OUT / "dask"
SIZES = [int(n) for n in os.environ.get("BENCH_DASK_ROWS", "1000000,4000000").split(",")]
DRIFT_ROWS = int(os.environ.get("BENCH_DASK_DRIFT_ROWS", "1000000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
PART = 100_000  # rows per input file (a partition)
TIME_TARGET = 1.3  # issue 15: dask on one machine at most 1.3x local
MEMORY_TARGET = 1.2  # and each worker's peak flat in the dataset size
PROJECTED_ROWS = 500_000_000
BIN = Path(sys.executable).parent


def _data(rows: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = DATA / f"input-{rows}"
    if folder.exists():
        return folder
    tmp = DATA / f".input-{rows}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(rows)
    for i, start in enumerate(range(0, rows, PART)):
        block = rng.normal(size=(min(PART, rows - start), N_FEATURES))
        pq.write_table(pa.table({c: block[:, j] for j, c in enumerate(COLUMNS)}), tmp / f"part-{i:05d}.parquet")
    tmp.rename(folder)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Cluster:
    """A scheduler and two workers on 127.0.0.1, as the tests start them."""

    def __init__(self) -> None:
        from distributed import Client

        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.procs = [
            subprocess.Popen(
                [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet
            )
        ]
        worker = [BIN / "dask", "worker", self.address, "--no-nanny", "--nthreads", "1", "--no-dashboard"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.procs += [subprocess.Popen([*worker, "--host", "127.0.0.1"], env=env, **quiet) for _ in range(2)]
        with Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)

    def task_overhead(self, n: int = 1000) -> float:
        """Seconds per task the scheduler adds: n no-op tasks submitted at once, gathered."""
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            client.gather(client.map(abs, range(100), pure=False))  # warm up
            start = time.perf_counter()
            client.gather(client.map(abs, range(n), pure=False))
            return (time.perf_counter() - start) / n

    def worker_peak_mb(self) -> float:
        """The highest peak RSS among the workers, over their lifetime."""
        import resource

        from distributed import Client

        def peak() -> float:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        with Client(self.address, timeout=30, set_as_default=False) as client:
            return max(client.run(peak).values())

    def close(self) -> None:
        for proc in self.procs[1:] + self.procs[:1]:  # workers first
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _score(registry: Path, source: Path, out: Path, report: Path, *engine: str) -> dict[str, float]:
    for path in (out, report):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    argv = [python(), "-m", "mlops_cli", "--registry", str(registry), "score-batch", "logistic", str(source)]
    figures = measure([*argv, str(out), "-q", "-o", str(report), *engine], env={"PYTHONPATH": str(ROOT)})
    results = json.loads(report.read_text())["results"]
    figures["worker_peak_mb"] = results["engine"].get("worker_peak_rss_mb", 0.0)
    figures["task_seconds"] = results["engine"].get("task_seconds", 0.0)
    return figures


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _drift(reference: Path, current: Path, report: Path, *engine: str) -> dict[str, float]:
    report.unlink(missing_ok=True)
    argv = [python(), "-m", "mlops_cli", "drift-report", str(reference), str(current), "-q", "-o", str(report)]
    return measure([*argv, *engine], env={"PYTHONPATH": str(ROOT)})


def drift() -> dict[str, object]:
    """drift-report --engine dask against --engine local at DRIFT_ROWS rows a side."""
    sys.path.insert(0, str(ROOT / "tests"))
    reference, current = _data(DRIFT_ROWS), _data(DRIFT_ROWS + PART)
    work = DATA / "runs"
    work.mkdir(parents=True, exist_ok=True)
    cluster = _Cluster()
    try:
        local, dask = [], []
        for _ in range(REPEATS):
            local.append(_drift(reference, current, work / "drift-local.json"))
            engine = ("--engine", "dask", "--scheduler", cluster.address)
            dask.append(_drift(reference, current, work / "drift-dask.json", *engine))
        worker_peak = cluster.worker_peak_mb()
    finally:
        cluster.close()
    from test_dask import _walk  # the test's comparison: every number to 1e-9

    a, b = (json.loads((work / f"drift-{e}.json").read_text()) for e in ("local", "dask"))
    for r in (a, b):
        r.pop("created_at")
        r["results"].pop("engine", None)
    seconds_local, seconds_dask = _median(local, "seconds"), _median(dask, "seconds")
    return {
        "rows_per_side": DRIFT_ROWS,
        "features": N_FEATURES,
        "local_seconds": round(seconds_local, 2),
        "dask_seconds": round(seconds_dask, 2),
        "dask_over_local": round(seconds_dask / seconds_local, 3),
        "local_peak_mb": round(_median(local, "peak_mb"), 1),
        "dask_client_peak_mb": round(_median(dask, "peak_mb"), 1),
        "dask_worker_peak_mb": round(worker_peak, 1),
        "reports_equal": _walk(a, b) == [],
    }


def main() -> None:
    subprocess.run([python(), "-m", "compileall", "-q", str(ROOT / "mlops_cli")], check=True)
    if os.environ.get("BENCH_DASK_ONLY") == "drift":
        save("dask-drift", drift())
        return
    registry, _ = _models()
    results: dict[str, object] = {"repeats": REPEATS, "rows_per_file": PART, "cores": os.cpu_count()}
    work = DATA / "runs"
    work.mkdir(parents=True, exist_ok=True)
    overhead = per_row = 0.0
    bytes_per_row = 0.0
    for rows in SIZES:
        source = _data(rows)
        bytes_per_row = sum(f.stat().st_size for f in source.iterdir()) / rows
        cluster = _Cluster()
        try:
            local, dask = [], []
            for _ in range(REPEATS):
                local.append(_score(registry, source, work / "local.parquet", work / "local.json"))
                engine = ("--engine", "dask", "--scheduler", cluster.address)
                dask.append(_score(registry, source, work / "dask.parquet", work / "dask.json", *engine))
            overhead = cluster.task_overhead()
        finally:
            cluster.close()
        label = f"{rows // 1_000_000}m" if rows % 1_000_000 == 0 else f"{rows // 1000}k"
        seconds_local, seconds_dask = _median(local, "seconds"), _median(dask, "seconds")
        per_row = _median(dask, "task_seconds") / rows
        results[label] = {
            "local_seconds": round(seconds_local, 2),
            "dask_seconds": round(seconds_dask, 2),
            "dask_over_local": round(seconds_dask / seconds_local, 3),
            "local_peak_mb": round(_median(local, "peak_mb"), 1),
            "dask_client_peak_mb": round(_median(dask, "peak_mb"), 1),
            "dask_worker_peak_mb": round(_median(dask, "worker_peak_mb"), 1),
            "task_seconds_per_million_rows": round(per_row * 1e6, 3),
            "scheduler_seconds_per_task": round(overhead, 6),
        }
    first, last = (f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" for n in (SIZES[0], SIZES[-1]))
    ratio = results[last]["dask_over_local"]  # type: ignore[index]
    growth = results[last]["dask_worker_peak_mb"] / results[first]["dask_worker_peak_mb"]  # type: ignore[index]
    results["targets"] = {
        f"dask_over_local <= {TIME_TARGET}": f"{ratio} ({'met' if ratio <= TIME_TARGET else 'missed'})",
        f"worker peak {last} / {first} <= {MEMORY_TARGET}": f"{growth:.3f} ({'met' if growth <= MEMORY_TARGET else 'missed'})",
    }
    # The projection: tasks run in parallel on the workers; the scheduler hands them out one at a time; the client
    # reads every input byte once for the report's sha256 (hashlib: measured here on the largest input).
    source = _data(SIZES[-1])
    start = time.perf_counter()
    from mlops_cli import io

    io.fingerprint(source)
    hash_per_byte = (time.perf_counter() - start) / sum(f.stat().st_size for f in source.iterdir())
    tasks = PROJECTED_ROWS / PART
    projection = {}
    for workers in (10, 100):
        costs = {
            "workers (scoring)": PROJECTED_ROWS * per_row / workers,
            "scheduler (per-task overhead)": tasks * overhead,
            "client (sha256 of the input)": PROJECTED_ROWS * bytes_per_row * hash_per_byte,
        }
        limit = max(costs, key=costs.__getitem__)
        projection[f"{workers}_workers"] = {
            "seconds": {k: round(v, 1) for k, v in costs.items()},
            "rows_per_second": round(PROJECTED_ROWS / costs[limit]),
            "limited_by": limit,
        }
    results["projection_500m_rows"] = projection
    results["drift_report"] = drift()
    save("dask", results)


if __name__ == "__main__":
    main()
