"""The input contract: new rows are coerced to what the model was trained on where that is safe, and checked row by
row. A row that breaks the contract gets a reason of the form "<column>: <problem>" and is never given to the model.

A spec's features record each column's `kind` (numeric | boolean | categorical | datetime; None when the model was
registered without training data); its input contract says whether it takes missing values and categories it never
saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import SchemaMismatch
from mlops_cli.runtime.spec import FeatureSpec, ModelSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MISSING = "missing value"
UNSEEN = "unseen category"
NOT_NUMBER = "not a number"
NOT_BOOLEAN = "not a boolean"
NOT_DATE = "not a date"
NOT_TEXT = "not text"  # a number or a boolean where the model reads a text category

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


def text_column_types(columns: list[str]) -> dict[str, Any]:
    """CSV column types that read every named column as text.

    pyarrow's streaming CSV reader infers types from the first block only, so a column that looks like integers
    there and holds `1.5` or `n/a` further down would stop the whole read. Read as text, each value is converted by
    `prepare_arrow` / `validate`, and one bad value only affects its row.
    """
    import pyarrow as pa

    return {c: pa.string() for c in columns}


def prepare_arrow(batch: Any, spec: ModelSpec) -> Any:
    """Cheap Arrow-side conversion of text columns holding numeric features (a CSV read as text).

    A column that converts whole becomes int64 (a feature trained as integers) or float64; one that does not is left
    as text for `validate` to convert and flag value by value.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    names = batch.schema.names
    for feature in spec.features:
        if feature.kind != "numeric" or feature.name not in names:
            continue
        i = names.index(feature.name)
        column = batch.column(i)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        for target in [pa.int64(), pa.float64()] if feature.integer else [pa.float64()]:
            try:
                batch = batch.set_column(i, feature.name, pc.cast(column, target))
                break
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
    return batch


Columns = dict[str, "np.ndarray"]  # feature name -> values: rows without pandas (a server's request)


def validate(data: pd.DataFrame | Mapping[str, Any], spec: ModelSpec) -> tuple[Any, np.ndarray, dict[str, np.ndarray]]:
    """Check and coerce rows against a model's input contract.

    Returns the model's feature columns in training order (a DataFrame for a DataFrame, `Columns` for a mapping of
    column name to values), coerced where that is safe (text holding numbers to numbers, `true`/`false` to
    booleans, ISO dates to datetimes; integers for a float feature pass as they are); a boolean mask of the rows the
    model must not be given; and, for each reason (`"<column>: <problem>"`), the mask of the rows it applies to. A
    row can have several reasons. Values that cannot be coerced are always invalid; missing values only when the
    contract says `accepts_missing: false`, unseen categories only when it says `accepts_unseen: false` (and the
    spec knows the categories).

    Missing columns, and a column whose type can never hold the feature (dates for a number, numbers for a text
    category), raise SchemaMismatch: no row of such data can be scored. `data` itself is not modified.
    """
    import numpy as np

    if isinstance(data, Mapping):
        return _validate_columns(data, spec)
    features = spec.require_features(data.columns, where="the data")
    dtypes = data.dtypes
    changed = {}
    reasons: dict[str, np.ndarray] = {}
    for feature in spec.features:
        if _ready(feature, dtypes[feature.name]) and not _checked(feature, spec):
            continue  # already of the trained type, and nothing to check row by row: the common case costs nothing
        original = data[feature.name]
        column = _check(original, feature, spec, reasons)
        if column is not original:
            changed[feature.name] = column
    out = data if list(data.columns) == features else data[features]
    if changed:
        out = out.assign(**changed)
    invalid = np.logical_or.reduce(list(reasons.values())) if reasons else np.zeros(len(data), dtype=bool)
    return out, invalid, reasons


def _validate_columns(data: Mapping[str, Any], spec: ModelSpec) -> tuple[Columns, np.ndarray, dict[str, np.ndarray]]:
    import numpy as np

    spec.require_features(data.keys(), where="the data")
    out: Columns = {}
    reasons: dict[str, np.ndarray] = {}
    rows = None
    for feature in spec.features:
        values = np.asarray(data[feature.name])
        if values.ndim != 1 or (rows is not None and len(values) != rows):
            raise SchemaMismatch(f"column {feature.name!r} is not one value per row", "send one value per row")
        rows = len(values)
        if _ready(feature, values.dtype) and not _checked(feature, spec):
            out[feature.name] = values
            continue
        import pandas as pd

        series = pd.Series(values, dtype=object if values.dtype.kind == "U" else None)
        out[feature.name] = _check(series, feature, spec, reasons).to_numpy()
    invalid = np.logical_or.reduce(list(reasons.values())) if reasons else np.zeros(rows or 0, dtype=bool)
    return out, invalid, reasons


SCALARS = (str, int, float, bool, type(None))


def from_values(values: Mapping[str, list[Any]], spec: ModelSpec) -> Columns:
    """Feature columns from JSON values (a server's request, a stream's messages), typed as a Parquet file of the
    same rows would be, so that `validate` treats them alike: numbers as int64 or float64 (None as NaN), booleans as
    bool, everything else as objects. A text column that holds numbers raises SchemaMismatch, as it does from a
    file; text in a numeric column is left for `validate` to convert or flag row by row. `values` holds scalars
    only (the caller checks)."""
    import numpy as np

    spec.require_features(values.keys(), where="the request")
    out: Columns = {}
    for feature in spec.features:
        column = values[feature.name]
        kind = feature.kind
        if kind == "categorical" or kind == "datetime":
            if any(v is not None and not isinstance(v, str) for v in column):
                raise _wrong_type(feature.name, "number", "text categories" if kind == "categorical" else "dates")
            out[feature.name] = np.array(column, dtype=object)
            continue
        array = np.asarray(column) if column else np.empty(0, dtype=np.float64)
        if kind == "numeric" and array.dtype.kind not in "iuf":
            try:
                array = np.array(column, dtype=np.float64)  # None -> NaN; booleans and text are not numbers here
                if any(isinstance(v, bool | str) for v in column):
                    raise ValueError
            except (ValueError, TypeError):
                array = np.array(column, dtype=object)
        elif array.dtype.kind == "U":
            array = np.array(column, dtype=object)
        out[feature.name] = array
    return out


_TEXT_TYPES = frozenset({str, type(None)})


def mistyped(values: Mapping[str, list[Any]], spec: ModelSpec) -> dict[int, str]:
    """Rows whose JSON value can never be coerced to its feature's kind, with the reason for the first such column
    ("<column>: <problem>", score-batch's form): anything but text in a categorical column (`NOT_TEXT`) or a date
    column (`NOT_DATE`). These are the values that make `from_values` refuse a whole batch; every other value is
    coerced or flagged row by row by `validate`. So the rows not named here can be scored together, in one call.
    A column of text costs one set of its types."""
    out: dict[int, str] = {}
    for feature in spec.features:
        kind = feature.kind
        if (kind != "categorical" and kind != "datetime") or feature.name not in values:
            continue
        column = values[feature.name]
        if set(map(type, column)) <= _TEXT_TYPES:
            continue
        reason = f"{feature.name}: {NOT_TEXT if kind == 'categorical' else NOT_DATE}"
        for row, value in enumerate(column):
            if value is not None and type(value) is not str and row not in out:
                out[row] = reason
    return out


def _ready(feature: FeatureSpec, dtype: Any) -> bool:
    """Whether a column of this dtype is already what the model was trained on (no coercion to do)."""
    import numpy as np
    import pandas as pd

    kind = feature.kind
    if kind is None:
        return True
    if isinstance(dtype, pd.CategoricalDtype):
        return False
    if kind == "numeric":
        return pd.api.types.is_numeric_dtype(dtype)
    if kind == "boolean":
        return pd.api.types.is_bool_dtype(dtype)
    if kind == "datetime":
        return pd.api.types.is_datetime64_any_dtype(dtype)
    if kind == "categorical":
        return isinstance(dtype, np.dtype) and dtype.kind == "O" or pd.api.types.is_string_dtype(dtype)
    return False


def _checked(feature: FeatureSpec, spec: ModelSpec) -> bool:
    """Whether the contract checks this column row by row (missing values, unseen categories)."""
    return not spec.accepts_missing or (
        not spec.accepts_unseen and feature.kind == "categorical" and feature.categories is not None
    )


def _check(original: pd.Series, feature: FeatureSpec, spec: ModelSpec, reasons: dict[str, np.ndarray]) -> pd.Series:
    """The column coerced; the reasons its rows break the contract are added to `reasons`."""
    column, bad, problem = _coerce(original, feature)
    if bad is not None and bad.any():
        reasons[f"{feature.name}: {problem}"] = bad
    if not spec.accepts_missing:
        missing = column.isna().to_numpy()  # may be a read-only view (pandas 3): never modify it in place
        if bad is not None:
            missing = missing & ~bad
        if missing.any():
            reasons[f"{feature.name}: {MISSING}"] = missing
    if not spec.accepts_unseen and feature.kind == "categorical" and feature.categories is not None:
        text = column if _is_text(column) else column.astype(str)
        unseen = column.notna().to_numpy() & ~text.isin(feature.categories).to_numpy()
        if unseen.any():
            reasons[f"{feature.name}: {UNSEEN}"] = unseen
    return column


def _is_text(column: pd.Series) -> bool:
    import pandas as pd

    return pd.api.types.is_object_dtype(column.dtype) or pd.api.types.is_string_dtype(column.dtype)


def _coerce(column: pd.Series, feature: FeatureSpec) -> tuple[pd.Series, np.ndarray | None, str]:
    """(the column as the model takes it, mask of values that could not be converted or None, the problem's name)."""
    import pandas as pd

    kind, name = feature.kind, feature.name
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
