"""The reference profile stored with a model version: per-feature statistics of its training data.

Drift checks and release gates compare new data with it, so a version carries its own yardstick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_cli.schema import kind_of

if TYPE_CHECKING:
    import pandas as pd

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
TOP_CATEGORIES = 1000  # category frequencies kept per column; the rest are summed as `other_share`


def build(frame: pd.DataFrame) -> dict[str, Any]:
    """Statistics for every column of `frame`: count, missing share, moments and quantiles or category shares."""
    return {"rows": len(frame), "features": {str(c): _column(frame[c]) for c in frame.columns}}


def _column(column: pd.Series) -> dict[str, Any]:
    import numpy as np

    n = len(column)
    present = column.dropna()
    stats: dict[str, Any] = {
        "kind": kind_of(column),
        "count": int(len(present)),
        "missing": int(n - len(present)),
        "missing_share": float((n - len(present)) / n) if n else 0.0,
    }
    if stats["kind"] in ("numeric", "boolean"):
        values = present.to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if len(values):
            qs = np.quantile(values, QUANTILES)
            stats.update(
                mean=float(values.mean()),
                std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                min=float(values.min()),
                max=float(values.max()),
                quantiles={f"{q:g}": float(v) for q, v in zip(QUANTILES, qs, strict=True)},
                zero_share=float((values == 0).mean()),
            )
    elif stats["kind"] == "categorical":
        shares = present.astype(str).value_counts(normalize=True)
        top = shares.head(TOP_CATEGORIES)
        stats.update(
            n_categories=int(len(shares)),
            frequencies={str(k): float(v) for k, v in top.items()},
            other_share=float(shares.iloc[TOP_CATEGORIES:].sum()),
        )
    return stats
