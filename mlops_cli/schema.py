"""The input schema a model was trained on: features in order, their kinds, categories and ranges."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_cli.errors import SchemaMismatch

if TYPE_CHECKING:
    import numpy as np
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


def feature_names(schema: list[dict[str, Any]]) -> list[str]:
    return [f["name"] for f in schema]


# --- checking new data against a model's schema ---------------------------------------------------------------
#
# A model's manifest records each feature's `kind` (numeric | boolean | categorical | datetime; absent when the
# model was registered without training data) and its `input_contract`: whether it takes missing values and
# categories it never saw. New data is coerced where that is safe and checked row by row; a row that breaks the
# contract gets a reason of the form "<column>: <problem>".

MISSING = "missing value"
UNSEEN = "unseen category"
NOT_NUMBER = "not a number"
NOT_BOOLEAN = "not a boolean"
NOT_DATE = "not a date"

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def require_features(columns: Any, manifest: dict[str, Any], *, where: str, model: str = "the model") -> list[str]:
    """The model's feature names; SchemaMismatch naming every one that `columns` lacks."""
    features = feature_names(manifest.get("features") or [])
    if not features:
        raise SchemaMismatch(
            f"{model} records no feature names",
            "register it with --train-data, or fit it on a DataFrame so it knows its columns",
        )
    present = set(columns)
    missing = [f for f in features if f not in present]
    if missing:
        raise SchemaMismatch(
            f"{where} lacks {model}'s feature columns {missing}",
            "pass data with the model's schema (extra columns are ignored, order does not matter)",
        )
    return features


def text_column_types(columns: list[str]) -> dict[str, Any]:
    """CSV column types that read every named column as text.

    pyarrow's streaming CSV reader infers types from the first block only, so a column that looks like integers
    there and holds `1.5` or `n/a` further down would stop the whole read. Read as text, each value is converted by
    `prepare_arrow` / `validate_batch`, and one bad value only affects its row.
    """
    import pyarrow as pa

    return {c: pa.string() for c in columns}


def prepare_arrow(batch: Any, manifest: dict[str, Any]) -> Any:
    """Cheap Arrow-side conversion of text columns holding numeric features (a CSV read as text).

    A column that converts whole becomes int64 (a feature trained as integers) or float64; one that does not is left
    as text for `validate_batch` to convert and flag value by value.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    names = batch.schema.names
    for feature in manifest.get("features") or []:
        name = feature["name"]
        if feature.get("kind") != "numeric" or name not in names:
            continue
        i = names.index(name)
        column = batch.column(i)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        targets = (
            [pa.int64(), pa.float64()] if str(feature.get("dtype", "")).startswith(("int", "uint")) else [pa.float64()]
        )
        for target in targets:
            try:
                batch = batch.set_column(i, name, pc.cast(column, target))
                break
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
    return batch


def validate_batch(
    frame: pd.DataFrame, manifest: dict[str, Any]
) -> tuple[pd.DataFrame, np.ndarray, dict[str, np.ndarray]]:
    """Check and coerce a batch of new data against a model's input schema.

    Returns the model's feature columns in training order, coerced where that is safe (text holding numbers to
    numbers, `true`/`false` to booleans, ISO dates to datetimes; integers for a float feature pass as they are);
    a boolean mask of the rows the model must not be given; and, for each reason (`"<column>: <problem>"`), the mask
    of the rows it applies to. A row can have several reasons. Values that cannot be coerced are always invalid;
    missing values only when the contract says `accepts_missing: false`, unseen categories only when it says
    `accepts_unseen: false` (and the manifest knows the categories).

    Missing columns, and a column whose type can never hold the feature (dates for a number, numbers for a text
    category), raise SchemaMismatch: no row of such data can be scored. `frame` itself is not modified.
    """
    import numpy as np

    features = require_features(frame.columns, manifest, where="the data")
    contract = manifest.get("input_contract") or {}
    accepts_missing = contract.get("accepts_missing", True)
    accepts_unseen = contract.get("accepts_unseen", True)
    changed = {}
    reasons: dict[str, np.ndarray] = {}
    for feature in manifest["features"]:
        name = feature["name"]
        original = frame[name]
        column, bad, problem = _coerce(original, feature)
        if column is not original:
            changed[name] = column
        if bad is not None and bad.any():
            reasons[f"{name}: {problem}"] = bad
        if not accepts_missing:
            missing = column.isna().to_numpy()  # may be a read-only view (pandas 3): never modify it in place
            if bad is not None:
                missing = missing & ~bad
            if missing.any():
                reasons[f"{name}: {MISSING}"] = missing
        if not accepts_unseen and feature.get("kind") == "categorical" and feature.get("categories") is not None:
            text = column if _is_text(column) else column.astype(str)
            unseen = column.notna().to_numpy() & ~text.isin(feature["categories"]).to_numpy()
            if unseen.any():
                reasons[f"{name}: {UNSEEN}"] = unseen
    out = frame if list(frame.columns) == features else frame[features]
    if changed:
        out = out.assign(**changed)
    invalid = np.logical_or.reduce(list(reasons.values())) if reasons else np.zeros(len(frame), dtype=bool)
    return out, invalid, reasons


def _is_text(column: pd.Series) -> bool:
    import pandas as pd

    return pd.api.types.is_object_dtype(column.dtype) or pd.api.types.is_string_dtype(column.dtype)


def _coerce(column: pd.Series, feature: dict[str, Any]) -> tuple[pd.Series, np.ndarray | None, str]:
    """(the column as the model takes it, mask of values that could not be converted or None, the problem's name)."""
    import pandas as pd

    kind, name = feature.get("kind"), feature["name"]
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        column = column.astype(object).where(column.notna(), None)
        dtype = column.dtype
    if kind is None:
        return column, None, ""
    if kind == "numeric":
        if pd.api.types.is_numeric_dtype(dtype):
            return column, None, NOT_NUMBER
        if not _is_text(column):
            raise _wrong_type(name, dtype, "numbers")
        converted = pd.to_numeric(column, errors="coerce")
        return converted, (column.notna() & converted.isna()).to_numpy(), NOT_NUMBER
    if kind == "boolean":
        if pd.api.types.is_bool_dtype(dtype):
            return column, None, NOT_BOOLEAN
        if not (_is_text(column) or pd.api.types.is_numeric_dtype(dtype)):
            raise _wrong_type(name, dtype, "booleans")
        converted = column.map(_to_bool, na_action="ignore")
        bad = (column.notna() & converted.isna()).to_numpy()
        if not converted.isna().any():
            converted = converted.astype(bool)
        return converted, bad, NOT_BOOLEAN
    if kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(dtype):
            return column, None, NOT_DATE
        if not _is_text(column):
            raise _wrong_type(name, dtype, "dates")
        converted = pd.to_datetime(column, errors="coerce", format="ISO8601")
        return converted, (column.notna() & converted.isna()).to_numpy(), NOT_DATE
    if kind == "categorical" and not _is_text(column) and column.notna().any():
        raise _wrong_type(name, dtype, "text categories")
    return column, None, ""


def _to_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text.endswith(".0"):  # 1.0 / 0.0 from a nullable integer column
        text = text[:-2]
    return True if text in _TRUE else False if text in _FALSE else None


def _wrong_type(name: str, dtype: Any, expected: str) -> SchemaMismatch:
    return SchemaMismatch(
        f"column {name!r} holds {dtype} values, the model expects {expected}",
        "pass the column the model was trained on, with its original type",
    )
