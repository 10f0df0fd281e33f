"""ONNX against scikit-learn, through the one runtime: single-row latency, and score-batch against the plain script.

    python benchmarks/bench_formats.py                  # or: python benchmarks/run.py formats
    BENCH_ROWS=1000000 python benchmarks/bench_formats.py    # a quicker look (score-batch at 1M rows only)

Single rows: `LoadedModel.score` on one row at a time, 2,000 calls after 200 warm-up calls, on the runtime
each would serve with (scikit-learn with one BLAS/OpenMP thread; onnxruntime), for the sample pipeline (the demo's
HistGradientBoosting on flights), a numeric logistic pipeline (scaler + logistic regression, 20 features) and a
100-tree forest. A row is passed as a server passes it: a mapping of column to values. The in-process
`predict_proba` on a one-row DataFrame is the floor for scikit-learn.

Batches: score-batch --runtime sklearn and --runtime onnx against the plain scikit-learn script of
bench_scoring.py (joblib.load, pyarrow batches, predict_proba, pyarrow write), alternated, medians, at 1M and 5M
rows, with the agreement the registration measured.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _util import OUT, ROOT, measure, python, save  # noqa: E402
from bench_scoring import COLUMNS, _data, _label, _models  # noqa: E402  (the same data and models)

DATA = OUT / "formats"
SIZES = [int(n) for n in os.environ.get("BENCH_ROWS", "1000000,5000000").split(",")]
REPEATS = {1_000_000: 3, 5_000_000: 1}
CALLS, WARMUP = 2_000, 200
TARGET_ONNX_P50_MS = 0.1  # logistic pipeline, one row (issue 16)
TARGET_BATCH_SPEEDUP = 2.0  # score-batch --runtime onnx against the plain script, on the forest


def _mlops(registry: Path, *args: str) -> list[str]:
    return [python(), "-m", "mlops_cli", "--registry", str(registry), *args]


def _registry() -> Path:
    """bench_scoring's logistic and forest, and the sample pipeline, registered with ONNX and skops."""
    registry = DATA / "registry"
    if (registry / "sample").exists():
        return registry
    _, files = _models()
    train = OUT / "scoring" / "train.parquet"
    for name, model in files.items():
        measure(_mlops(registry, "register", str(model), "--name", name, "--train-data", str(train), "--target",
                       "y", "--sample-size", "10000", "--formats", "onnx,skops", "-q"), env={"PYTHONPATH": str(ROOT)})  # fmt: skip
    sample = DATA / "sample.joblib"
    split = DATA / "split"
    subprocess.run([python(), str(ROOT / "sample_data" / "train.py"), str(ROOT / "sample_data" / "reference.parquet"),
                    str(sample), "--split-dir", str(split)], check=True, capture_output=True)  # fmt: skip
    measure(_mlops(registry, "register", str(sample), "--name", "sample", "--train-data", str(split / "train.parquet"),
                   "--eval-data", str(split / "eval.parquet"), "--target", "delayed", "--formats", "onnx,skops",
                   "--bootstrap", "100", "-q"), env={"PYTHONPATH": str(ROOT)})  # fmt: skip
    return registry


def _single_rows(registry: Path) -> dict[str, object]:
    import numpy as np

    from mlops_cli import io
    from mlops_cli.registry import Registry
    from mlops_cli.runtime import LoadedModel, LoadOptions, threads

    threads.pin_single()  # as a server worker runs
    out: dict[str, object] = {}
    for name in ("sample", "logistic", "forest"):
        version = Registry(registry).resolve(name)
        rows = io.read_table(version.file("sample.parquet")).head(CALLS)
        models = {rt: LoadedModel.load(Registry(registry), name, LoadOptions(rt)) for rt in ("sklearn", "onnx")}
        features = models["sklearn"].spec.feature_names
        singles = [{c: [v] for c, v in row.items()} for row in rows[features].to_dict("records")]
        frames = [rows[features].iloc[[i]] for i in range(len(rows))]
        entry: dict[str, object] = {"onnx_agreement": version.manifest["formats"]["onnx"].get("agreement")}
        timings: dict[str, list[float]] = {"sklearn": [], "onnx": [], "predict_proba": []}
        estimator = models["sklearn"].estimator
        for i in range(WARMUP):
            models["sklearn"].score(singles[i % len(singles)])
            models["onnx"].score(singles[i % len(singles)])
        calls = (
            ("sklearn", models["sklearn"].score, singles),
            ("onnx", models["onnx"].score, singles),
            ("predict_proba", estimator.predict_proba, frames),
        )
        for i in range(CALLS):  # interleaved, so that machine load falls on all three alike
            for label, call, inputs in calls:
                row = inputs[i % len(inputs)]
                start = time.perf_counter()
                call(row)
                timings[label].append((time.perf_counter() - start) * 1000)
        for label, values in timings.items():
            entry[label] = {
                "p50_ms": round(float(np.percentile(values, 50)), 4),
                "p99_ms": round(float(np.percentile(values, 99)), 4),
            }
        entry["onnx_p50_speedup"] = round(entry["sklearn"]["p50_ms"] / entry["onnx"]["p50_ms"], 1)  # type: ignore[index]
        out[name] = entry
        print(f"single row, {name}: {json.dumps(entry)}", flush=True)
    out["meets_onnx_p50_target"] = out["logistic"]["onnx"]["p50_ms"] <= TARGET_ONNX_P50_MS  # type: ignore[index]
    return out


def _batches(registry: Path) -> dict[str, object]:
    _, files = _models()
    out: dict[str, object] = {}
    for name in ("logistic", "forest"):
        for rows in SIZES:
            source = _data(rows)
            target = DATA / "out.parquet"
            plain = [python(), str(HERE / "bench_scoring.py"), "plain", str(files[name]), str(source), str(target)]
            runs: dict[str, list[dict[str, float]]] = {"plain": [], "sklearn": [], "onnx": []}
            for _ in range(REPEATS.get(rows, 1)):
                runs["plain"].append(measure(plain))
                for runtime in ("sklearn", "onnx"):
                    argv = _mlops(registry, "score-batch", name, str(source), str(target), "--runtime", runtime,
                                  "--overwrite", "-q")  # fmt: skip
                    runs[runtime].append(measure(argv, env={"PYTHONPATH": str(ROOT)}))
            entry: dict[str, object] = {}
            for who, measured in runs.items():
                entry[who] = {
                    "seconds": round(statistics.median(r["seconds"] for r in measured), 2),
                    "peak_mb": round(statistics.median(r["peak_mb"] for r in measured)),
                }
            plain_s = entry["plain"]["seconds"]  # type: ignore[index]
            entry["onnx_speedup_over_plain"] = round(plain_s / entry["onnx"]["seconds"], 2)  # type: ignore[index]
            entry["sklearn_ratio_to_plain"] = round(entry["sklearn"]["seconds"] / plain_s, 3)  # type: ignore[index]
            out[f"{name}_{_label(rows)}"] = entry
            print(f"score-batch, {name}, {rows:,} rows: {json.dumps(entry)}", flush=True)
    big, small = max(SIZES), min(SIZES)
    if big != small:
        ratio = out[f"forest_{_label(big)}"]["onnx"]["peak_mb"] / out[f"forest_{_label(small)}"]["onnx"]["peak_mb"]  # type: ignore[index]
        out["forest_onnx_peak_ratio"] = round(ratio, 3)
    out["meets_forest_speedup_target"] = all(
        v["onnx_speedup_over_plain"] >= TARGET_BATCH_SPEEDUP
        for k, v in out.items()
        if k.startswith("forest_") and isinstance(v, dict)  # type: ignore[index]
    )
    return out


def main() -> None:
    subprocess.run([python(), "-m", "compileall", "-q", str(ROOT / "mlops_cli")], check=True)
    registry = _registry()
    results: dict[str, object] = {"cpus": os.cpu_count(), "features": len(COLUMNS)}
    results["single_row"] = _single_rows(registry)
    results["score_batch"] = _batches(registry)
    save("formats", results)


if __name__ == "__main__":
    main()
