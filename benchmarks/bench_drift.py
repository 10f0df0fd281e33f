"""drift-report benchmark: 100k and 1M rows per side, 20 numeric + 5 categorical columns, 8 of them shifted.

Compared in the same run with
  * a plain per-column scipy script (ks_2samp, wasserstein_distance, chi2_contingency): what users write by hand;
  * Evidently's DataDriftPreset (0.7.x, in its own virtual environment under build/bench/, since it needs pandas<3),
    created on first use. Set BENCH_NO_EVIDENTLY=1 to skip it.
Medians of 3 runs (1 run for Evidently at 1M rows: it takes minutes).
"""

from __future__ import annotations

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
    results = {}
    evidently = evidently_python()
    for rows in (100_000, 1_000_000):
        ref, cur = OUT / f"drift-ref-{rows}.parquet", OUT / f"drift-cur-{rows}.parquet"
        if not cur.exists():
            make(rows, 1, False).to_parquet(ref)
            make(rows, 2, True).to_parquet(cur)
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
