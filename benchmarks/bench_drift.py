"""drift-report benchmark: 100k and 1M rows per side, 20 numeric + 5 categorical columns, 8 of them shifted.

Compared in the same run with
  * a plain per-column scipy script (ks_2samp, wasserstein_distance, chi2_contingency): what users write by hand;
  * Evidently's DataDriftPreset (0.7.x, in its own virtual environment under build/bench/, since it needs pandas<3),
    created on first use. Set BENCH_NO_EVIDENTLY=1 to skip it.
Medians of 3 runs (1 run for Evidently at 1M rows: it takes minutes).
On the 100k data, the report's statistics are checked against scipy's (ks_2samp statistic and p-value,
wasserstein_distance, chi2_contingency statistic and p-value): the largest absolute difference per statistic is
printed and recorded, and a difference above 1e-9 fails the benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
from _util import OUT, ROOT, median_of, python, save

EVIDENTLY_VENV = OUT / "evidently-venv"


def make(rows: int, seed: int, shift: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"x{i}": rng.normal(0.3 * (shift and i < 6), 1, rows) for i in range(20)}
    for i in range(5):
        p = np.array([0.4, 0.3, 0.2, 0.1]) if not (shift and i < 2) else np.array([0.25, 0.25, 0.25, 0.25])
        data[f"c{i}"] = rng.choice(np.array(["a", "b", "c", "d"]), rows, p=p)
    return pd.DataFrame(data)


SCIPY = textwrap.dedent("""
    import sys, numpy as np, pandas as pd
    from scipy import stats
    ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
    for c in ref.columns:
        if ref[c].dtype.kind == "f":
            stats.ks_2samp(ref[c], cur[c]); stats.wasserstein_distance(ref[c], cur[c])
        else:
            a, b = ref[c].value_counts(), cur[c].value_counts()
            stats.chi2_contingency(np.vstack([a.reindex(a.index.union(b.index), fill_value=0),
                                              b.reindex(a.index.union(b.index), fill_value=0)]))
""")

EVIDENTLY = textwrap.dedent("""
    import sys, pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset
    ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
    Report([DataDriftPreset()]).run(reference_data=ref, current_data=cur)
""")


def check_against_scipy(ref_path: os.PathLike, cur_path: os.PathLike) -> dict[str, float]:
    """Largest absolute difference between the report's statistics (`--json`) and scipy's, per statistic."""
    from scipy import stats

    out = subprocess.run(
        [python(), "-m", "mlops_cli", "drift-report", str(ref_path), str(cur_path), "--json"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    )
    rows = {r["name"]: r["statistics"] for r in json.loads(out.stdout)["results"]["features"]}
    ref, cur = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
    worst = {"ks": 0.0, "ks_p_value": 0.0, "wasserstein": 0.0, "chi2": 0.0, "chi2_p_value": 0.0}
    for c in ref.columns:
        ours = rows[c]
        if ref[c].dtype.kind == "f":
            ks = stats.ks_2samp(ref[c], cur[c])
            theirs = {
                "ks": ks.statistic,
                "ks_p_value": ks.pvalue,
                "wasserstein": stats.wasserstein_distance(ref[c], cur[c]),
            }
        else:
            a, b = ref[c].value_counts(), cur[c].value_counts()
            keys = a.index.union(b.index)
            chi2 = stats.chi2_contingency(np.vstack([a.reindex(keys, fill_value=0), b.reindex(keys, fill_value=0)]))
            theirs = {"chi2": chi2.statistic, "chi2_p_value": chi2.pvalue}
        for key, value in theirs.items():
            worst[key] = max(worst[key], abs(ours[key] - float(value)))
    return worst


def evidently_python() -> str | None:
    if os.environ.get("BENCH_NO_EVIDENTLY"):
        return None
    exe = EVIDENTLY_VENV / "bin" / "python"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        subprocess.run(
            [str(exe), "-m", "pip", "install", "-q", "evidently>=0.7,<0.8", "pandas<3", "pyarrow"], check=True
        )
    return str(exe)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {}
    evidently = evidently_python()
    for rows in (100_000, 1_000_000):
        ref, cur = OUT / f"drift-ref-{rows}.parquet", OUT / f"drift-cur-{rows}.parquet"
        if not cur.exists():
            make(rows, 1, False).to_parquet(ref)
            make(rows, 2, True).to_parquet(cur)
        if rows == 100_000:
            worst = check_against_scipy(ref, cur)
            print(f"max |ours - scipy| at {rows:,} rows: {worst}")
            results["100k_max_abs_diff_vs_scipy"] = worst
            if max(worst.values()) > 1e-9:
                raise SystemExit(f"drift statistics differ from scipy's: {worst}")
        ours = median_of([python(), "-m", "mlops_cli", "drift-report", str(ref), str(cur), "-q"], cwd=ROOT)
        plain = median_of([python(), "-c", SCIPY, str(ref), str(cur)])
        key = f"{rows // 1000}k"
        results[f"{key}_mlops_s"], results[f"{key}_mlops_peak_mb"] = round(ours["seconds"], 2), round(ours["peak_mb"])
        results[f"{key}_scipy_script_s"] = round(plain["seconds"], 2)
        results[f"{key}_scipy_script_peak_mb"] = round(plain["peak_mb"])
        if evidently:
            ev = median_of([evidently, "-c", EVIDENTLY, str(ref), str(cur)], repeats=1 if rows > 100_000 else 3)
            results[f"{key}_evidently_s"], results[f"{key}_evidently_peak_mb"] = (
                round(ev["seconds"], 1),
                round(ev["peak_mb"]),
            )
            results[f"{key}_speedup_vs_evidently"] = round(ev["seconds"] / ours["seconds"], 1)
            results[f"{key}_memory_vs_evidently"] = round(ours["peak_mb"] / ev["peak_mb"], 2)
    save("drift", results)


if __name__ == "__main__":
    sys.exit(main())
