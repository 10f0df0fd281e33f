"""What kind each column is (numeric, categorical, identifier, datetime, nested, empty), and its drift row.

The kind is decided per column from the reference, unless --numeric or --categorical says it: numbers are numeric,
unless they are a few integer values (categories) or nearly unique integers (identifiers); text, booleans and the
rest are categories, unless they are mostly unique (identifiers), dates or nested values. Identifiers, dates and
nested values are listed but not compared: new ids and later dates arrive every day and say nothing about the data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_cli.drift import stats

if TYPE_CHECKING:
    import pandas as pd

    from mlops_cli.drift.decision import DriftOptions

ID_UNIQUE_SHARE = 0.5  # a text column whose values are mostly unique is an identifier, not a category
# An integer column is one when its values are nearly unique per row (row ids, order numbers): a stricter share than
# for text, because small samples of ordinary integers are fairly unique too (distance: 68% distinct in 100 rows).
ID_UNIQUE_SHARE_INT = 0.9
MAX_CATEGORIES = 1000  # ... and so is a text column with more distinct values than this (tail numbers, user ids)
LOW_CARDINALITY_INT = 10  # integer columns with at most this many values are compared as categories
_NESTED = (list, tuple, dict, set, np.ndarray)
_DATES = (dt.date, dt.time, np.datetime64)  # datetime.datetime and pd.Timestamp are dates too


def _numbers(values: pd.Series) -> tuple[np.ndarray, int, int, int]:
    """(sorted finite values, nulls, -inf count, +inf count) of a column, from one sorted copy: NaN sorts last and
    the infinities at the ends of the numbers, so the finite values are one slice. ValueError or TypeError when the
    column is not numeric."""
    import pandas as pd

    x = pd.to_numeric(values, errors="raise").to_numpy(dtype=float, na_value=np.nan, copy=True)
    x.sort()
    low = int(np.searchsorted(x, -np.inf, side="right"))
    high = int(np.searchsorted(x, np.inf, side="left"))
    end = int(np.searchsorted(x, np.inf, side="right"))
    return x[low:high], len(x) - end, low, end - high


def integral(x: np.ndarray) -> bool:
    """Whether every value is a whole number; a strided sample answers first for most float columns."""
    with np.errstate(invalid="ignore"):  # inf % 1 is NaN: not whole, and no RuntimeWarning on stderr
        return bool(np.all(np.mod(x[:: max(1, len(x) // 1000)], 1) == 0) and np.all(np.mod(x, 1) == 0))


def _number_kind(
    ref: pd.Series, finite: np.ndarray, present: int, name: str, options: DriftOptions
) -> tuple[str, str | None]:
    """(kind, note) of a numeric reference column, from its sorted finite values and its count of non-null ones."""
    import pandas as pd

    def shape() -> tuple[bool, int]:
        whole = pd.api.types.is_integer_dtype(ref) or integral(finite)
        return whole, (1 + int(np.count_nonzero(finite[1:] != finite[:-1]))) if whole else 0

    return number_kind(present, len(finite), shape, name, options)


def number_kind(
    present: int, finite: int, shape: Callable[[], tuple[bool, int]], name: str, options: DriftOptions
) -> tuple[str, str | None]:
    """(kind, note) of a numeric reference column from its counts; `shape()` (asked only when it matters) says
    whether every value is whole and, if so, how many distinct finite values there are. Shared by both engines."""
    if not present:
        return "empty", None
    if name in options.numeric or not finite:
        return "numeric", None
    whole, unique = shape()
    if not whole:
        return "numeric", None
    if unique == 1:
        return "categorical", "constant in the reference"
    if unique <= LOW_CARDINALITY_INT:
        return "categorical", f"{unique} integer values, as categories"
    if unique > 50 and unique / present >= ID_UNIQUE_SHARE_INT:
        # Row ids and order numbers always "drift" (new ids every day) and say nothing about the data.
        return "identifier", f"identifier-like: {unique:,} distinct integers in {present:,} rows; --numeric compares it"
    return "numeric", None


def _other_kind(ref: pd.Series, name: str, options: DriftOptions) -> tuple[str, str | None, pd.Series | None]:
    """(kind, note, value counts) of a reference column that is not numeric: text, booleans, dates, nested values.
    The counts of the distinct non-null values come back for categorical columns, so they are taken once."""
    import pandas as pd

    datetime = pd.api.types.is_datetime64_any_dtype(ref)
    try:
        raw = None if datetime and name not in options.categorical else ref.value_counts()
    except TypeError:  # unhashable values: lists, maps
        raw = None
    return other_kind(raw, name, options, datetime=datetime, boolean=pd.api.types.is_bool_dtype(ref))


def other_kind(
    raw: pd.Series | None, name: str, options: DriftOptions, *, datetime: bool, boolean: bool
) -> tuple[str, str | None, pd.Series | None]:
    """_other_kind from the column's value counts (`raw`, most frequent first, as value_counts orders them; None
    when the values are unhashable) and its dtype: shared by both engines."""
    forced = name in options.categorical
    if datetime and not forced:
        return "datetime", None, None
    if raw is None:
        return "nested", "nested values (lists, maps, structs): not compared", None
    if not len(raw):
        return "empty", None, None
    if forced or boolean:
        return "categorical", None, raw
    keys = raw.index[:10_000]  # distinct values, most frequent first
    if any(isinstance(k, _NESTED) for k in keys):
        return "nested", "nested values (lists, maps, structs): not compared", None
    if all(isinstance(k, _DATES) for k in keys):  # date32 Parquet columns and ISO dates in CSV arrive as dates
        return "datetime", None, None
    present, unique = int(raw.sum()), len(raw)
    if unique > MAX_CATEGORIES or (unique > 50 and unique / present > ID_UNIQUE_SHARE):
        return "identifier", f"identifier-like: {unique:,} distinct values in {present:,} rows", None
    types = sorted({type(k).__name__ for k in keys})
    return "categorical", f"mixed types {types}: compared as text" if len(types) > 1 else None, raw


def _missing_shares(s: dict[str, Any], ref: pd.Series, cur: pd.Series) -> None:
    s.update(missing_share_reference=float(ref.isna().mean()), missing_share_current=float(cur.isna().mean()))
    s["missing_share_change"] = s["missing_share_current"] - s["missing_share_reference"]


def new_row(name: str) -> dict[str, Any]:
    """A feature's row before its statistics: the keys every row has, in the report's order."""
    return {
        "name": name,
        "kind": None,
        "statistics": {},
        "p_value": None,
        "drifted": None,
        "severity": "none",
        "decided_by": None,
        "status": "ok",
        "note": None,
    }


def feature_row(name: str, ref: pd.Series | None, cur: pd.Series | None, options: DriftOptions) -> dict[str, Any]:
    """One feature's row: its kind, statistics and histogram, or why it was not compared. decision.decide fills in
    whether it drifted."""
    import pandas as pd

    row = new_row(name)
    if cur is None:
        row.update(status="missing_in_current", note="column missing from the current data")
        return row
    if ref is None:
        row.update(status="missing_in_reference", note="column missing from the reference data")
        return row
    s: dict[str, Any] = {"rows_reference": len(ref), "rows_current": len(cur)}
    row["statistics"] = s
    numeric_dtype = pd.api.types.is_numeric_dtype(ref) and not pd.api.types.is_bool_dtype(ref)
    rc = None
    if name in options.numeric or (numeric_dtype and name not in options.categorical):
        try:
            rv, r_null, r_neg, r_pos = _numbers(ref)
        except (ValueError, TypeError):
            _missing_shares(s, ref, cur)
            row.update(kind="numeric", status="type_mismatch", note="not numeric in the reference: not compared")
            return row
        kind, note = _number_kind(ref, rv, len(ref) - r_null, name, options)
    else:
        kind, note, raw = _other_kind(ref, name, options)
        rc = stats.as_text(raw) if raw is not None else None
    row.update(kind=kind, note=note)
    if kind in ("identifier", "datetime", "nested", "empty"):
        _missing_shares(s, ref, cur)
        if kind != "empty":
            row.update(status="skipped", note=note or f"{kind} column: not compared")
        elif s["missing_share_current"] == 1.0:  # nothing on either side: not a test, so not in the drifted share
            row.update(status="empty", note="no values on either side: not compared")
        else:
            row.update(status="all_missing", note="no values in the reference data")
        return row
    if kind == "numeric":
        try:
            cv, c_null, c_neg, c_pos = _numbers(cur)
        except (ValueError, TypeError):
            _missing_shares(s, ref, cur)
            row.update(status="type_mismatch", note="current values are not numeric: not compared")
            return row
        if not number_shares(row, (len(ref), r_null, r_neg, r_pos, len(rv)), (len(cur), c_null, c_neg, c_pos, len(cv))):
            return row
        numbers, row["histogram"] = stats.sorted_numeric_stats(rv, cv)
        s.update(numbers)
        # Outside the reference range: finite values beyond [min, max], and infinities the reference did not have.
        inside = np.searchsorted(cv, rv[-1], side="right") - np.searchsorted(cv, rv[0], side="left")
        outside = len(cv) - inside + (c_neg if not r_neg else 0) + (c_pos if not r_pos else 0)
        s["out_of_range_share"] = float(outside) / (len(cv) + c_neg + c_pos)
        if rv[0] == rv[-1] and not note:
            row["note"] = "constant in the reference: Wasserstein not normalised"
        return row
    if rc is None:  # a low-cardinality integer column, or --categorical on a numeric one
        rc = stats.text_counts(ref)
    try:
        cc = stats.text_counts(cur)
    except TypeError:
        _missing_shares(s, ref, cur)
        row.update(status="type_mismatch", note="nested values (lists, maps) in the current data: not compared")
        return row
    return categorical_tail(row, rc, cc, len(ref), len(cur))


def number_shares(row: dict[str, Any], ref: tuple[int, ...], cur: tuple[int, ...]) -> bool:
    """A numeric row's missing and infinite shares from each side's (rows, nulls, -inf, +inf, finite values);
    False (the row is final) when a side has no finite value."""
    (n_ref, r_null, r_neg, r_pos, r_fin), (n_cur, c_null, c_neg, c_pos, c_fin) = ref, cur
    row["statistics"].update(
        missing_share_reference=r_null / n_ref,
        missing_share_current=c_null / n_cur,
        missing_share_change=c_null / n_cur - r_null / n_ref,
        inf_share_reference=(r_neg + r_pos) / n_ref,
        inf_share_current=(c_neg + c_pos) / n_cur,
        inf_share_change=(c_neg + c_pos) / n_cur - (r_neg + r_pos) / n_ref,
        values_reference=r_fin,
        values_current=c_fin,
    )
    if not (r_fin and c_fin):
        side = "current" if r_fin else "reference"
        row.update(status="all_missing", note=f"no finite values in the {side} data")
        return False
    return True


def categorical_tail(row: dict[str, Any], rc: pd.Series, cc: pd.Series, n_ref: int, n_cur: int) -> dict[str, Any]:
    """A categorical row from the two sides' category counts (as_text) and row counts: shared by both engines."""
    s = row["statistics"]
    s.update(
        missing_share_reference=1.0 - rc.sum() / n_ref,
        missing_share_current=1.0 - cc.sum() / n_cur,
        values_reference=int(rc.sum()),
        values_current=int(cc.sum()),
    )
    s["missing_share_change"] = s["missing_share_current"] - s["missing_share_reference"]
    if cc.empty:
        row.update(status="all_missing", note="no values in the current data")
        return row
    s.update(stats.count_stats(rc, cc))
    top, cur_shares = (rc / rc.sum()).head(12), cc / cc.sum()
    labels = list(top.index) + [k for k in cur_shares.head(3).index if k not in top.index]
    row["histogram"] = {
        "labels": labels,
        "reference": [float(top.get(k, 0.0)) for k in labels],
        "current": [float(cur_shares.get(k, 0.0)) for k in labels],
    }
    return row
