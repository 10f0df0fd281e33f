"""The input schema a model was trained on, inferred at registration: features in order, their kinds, categories
and ranges. Checking new rows against it is the runtime's job (`mlops_cli.runtime.contract`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_cli.errors import SchemaMismatch

if TYPE_CHECKING:
    import pandas as pd

MAX_CATEGORIES = 10_000  # beyond this a column is an identifier, not a category; we record the count only


def kind_of(series: pd.Series) -> str:
    """numeric | boolean | categorical | datetime."""
    import pandas as pd

    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "categorical"


def infer(frame: pd.DataFrame, features: list[str]) -> list[dict[str, Any]]:
    """One entry per feature: name, dtype, kind, and categories (categorical) or min/max (numeric)."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise SchemaMismatch(
            f"training data lacks the model's feature columns {missing}", "pass the data the model was trained on"
        )
    out = []
    for name in features:
        column = frame[name]
        entry: dict[str, Any] = {
            "name": name,
            "dtype": str(column.dtype),
            "kind": kind_of(column),
            "missing_share": float(column.isna().mean()) if len(column) else 0.0,
        }
        if entry["kind"] == "numeric":
            entry["min"], entry["max"] = (
                (float(column.min()), float(column.max())) if column.notna().any() else (None, None)
            )
        elif entry["kind"] == "categorical":
            values = column.dropna().unique()
            entry["n_categories"] = int(len(values))
            entry["categories"] = sorted(map(str, values)) if len(values) <= MAX_CATEGORIES else None
        out.append(entry)
    return out
