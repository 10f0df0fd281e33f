"""Data, prediction and concept drift between a reference and today's data.

Every numeric statistic comes from one sort per column: KS, Wasserstein and the PSI/JS bin edges all read the two
sorted arrays. Categorical columns compare category counts (chi-square, JS, PSI), keyed by the values' text with
integral floats written as integers (1.0 is "1": an int column with one null on one side is read as floats).

Decision rule (`--stattest auto`, the default), per feature:
  * large samples (both sides > 1,000 non-null values): effect size decides, because at that size a p-value flags
    shifts nobody cares about: numeric drift when Wasserstein / reference std >= 0.1, categorical when JS distance
    >= 0.1 (`--threshold` sets this effect threshold), provided the (corrected) KS / chi-square test is also
    significant at 0.05, which guards against sparse categories;
  * small samples: KS (numeric) or chi-square (categorical) p-value, corrected for the number of features (BH by
    default), below 0.05.
A change of 0.2 or more in the missing-value share, or in the share of infinite values, is drift on its own
(`decided_by: missing_share` / `inf_share`). Severity comes from the effect size: none / low / medium / high at the
bands in SEVERITY.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_cli import io
from mlops_cli.errors import EmptyInput, InputError, InvalidData, SchemaMismatch
from mlops_cli.report import Report

if TYPE_CHECKING:
    import pandas as pd

    from mlops_cli.registry import Registry, Version

STATTESTS = ("auto", "ks", "psi", "wasserstein", "js", "chi2")
LARGE_SAMPLE = 1000
PSI_BINS = 10
PSI_FLOOR = 1e-4  # empty-bin rule: shares are floored at this before the log ratio
MISSING_SHARE_CHANGE = 0.2
INF_SHARE_CHANGE = 0.2  # the share of +/-inf values is a signal of its own, like the missing share
ID_UNIQUE_SHARE = 0.5  # a text column whose values are mostly unique is an identifier, not a category
# An integer column is one when its values are nearly unique per row (row ids, order numbers): a stricter share than
# for text, because small samples of ordinary integers are fairly unique too (distance: 68% distinct in 100 rows).
ID_UNIQUE_SHARE_INT = 0.9
MAX_CATEGORIES = 1000  # ... and so is a text column with more distinct values than this (tail numbers, user ids)
LOW_CARDINALITY_INT = 10  # integer columns with at most this many values are compared as categories
MIN_ROWS = 30  # below this many rows on a side, the tests have little power: the report says so
MIN_LABELLED = 30  # below this many labelled rows, no performance block (its CI would mean nothing)
# Per-column statistics run in a small thread pool on large inputs: numpy's sorts, searches and ufuncs release the
# GIL. Two workers: each holds a few arrays of the column's size, and memory matters as much as time here.
WORKERS = min(2, os.cpu_count() or 1)
PARALLEL_ROWS = 200_000
BLOCK = 1 << 13  # values per block in the merge and CDF passes: small temporaries that stay in the CPU cache
# Default drift thresholds per statistic (p-value tests: alpha; distances: minimum effect).
THRESHOLDS = {"ks": 0.05, "chi2": 0.05, "psi": 0.2, "wasserstein": 0.1, "js": 0.1}
# Effect-size bands: below the first is none, then low, medium, high.
SEVERITY = {"wasserstein": (0.1, 0.2, 0.5), "js": (0.1, 0.2, 0.35), "psi": (0.1, 0.2, 0.25)}
_NESTED = (list, tuple, dict, set, np.ndarray)
_DATES = (dt.date, dt.time, np.datetime64)  # datetime.datetime and pd.Timestamp are dates too
# warnings.catch_warnings swaps process-wide state: two threads must not interleave it.
_WARNINGS_LOCK = threading.Lock()


@dataclass
class DriftOptions:
    features: list[str] | None = None
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    target: str | None = None
    prediction_column: str | None = None
    stattest: str = "auto"
    threshold: float | None = None
    correction: str = "bh"
    drift_share: float = 0.5
    strict: bool = False  # with a model: refuse one recorded under another scikit-learn version (exit 4)

    def __post_init__(self) -> None:
        if self.stattest not in STATTESTS:
            raise InputError(f"unknown --stattest {self.stattest!r}", f"use one of {', '.join(STATTESTS)}")
        if self.correction not in ("bh", "bonferroni", "none"):
            raise InputError(f"unknown --correction {self.correction!r}", "use bh, bonferroni or none")


# --- statistics ----------------------------------------------------------------------------------------------


def numeric_stats(ref: np.ndarray, cur: np.ndarray) -> dict[str, float]:
    """KS (statistic, p-value), Wasserstein, PSI and JS distance from one sort of each side (no NaNs)."""
    return _sorted_numeric_stats(np.sort(ref), np.sort(cur))[0]


def _merge(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two sorted sides merged (r first on ties), and a mask of the merged values that came from r.

    c[j] lands after the j values of c before it and the values of r that are <= it; r fills the other slots in
    order. A search and two scatters a block at a time: no argsort of the concatenation, no index array of its size,
    and each block of c is searched for only in the stretch of r that its first and last values bound.
    """
    from_r = np.ones(len(r) + len(c), dtype=bool)
    both = np.empty(len(r) + len(c))
    low = 0
    for start in range(0, len(c), BLOCK):
        part = c[start : start + BLOCK]
        high = int(np.searchsorted(r, part[-1], side="right"))
        at = np.searchsorted(r[low:high], part, side="right")
        at += np.arange(low + start, low + start + len(part))
        from_r[at] = False
        both[at] = part
        low = high
    both[from_r] = r
    return both, from_r


def _ks_wasserstein(both: np.ndarray, from_r: np.ndarray, n: int, m: int) -> tuple[float, float]:
    """KS statistic and Wasserstein distance from the merged sides: the two empirical CDFs at every merged value,
    computed as scipy does (count / size), a block at a time so that no temporary has the data's size."""
    d = w = 0.0
    below = 0.0  # values of r before the block
    for start in range(0, n + m - 1, BLOCK):  # the last merged value has both CDFs at 1: no gap, no step after it
        stop = min(start + BLOCK, n + m - 1)
        gap = np.cumsum(from_r[start:stop], dtype=float)
        gap += below
        below = gap[-1]
        cdf_c = np.arange(start + 1, stop + 1, dtype=float)
        cdf_c -= gap
        cdf_c /= m
        gap /= n
        gap -= cdf_c
        np.abs(gap, out=gap)
        step = both[start + 1 : stop + 1] - both[start:stop]
        d = max(d, float(np.max(gap, where=step != 0, initial=0.0)))  # within a run of ties only its end counts
        w += float(np.dot(gap, step))  # ties add zero-width steps
    return d, w


def _sorted_numeric_stats(r: np.ndarray, c: np.ndarray) -> tuple[dict[str, float], dict[str, Any]]:
    """numeric_stats and the histogram, from the two sides already sorted: every statistic shares the sort."""
    from scipy import stats

    n, m = len(r), len(c)
    both, from_r = _merge(r, c)
    d, w = _ks_wasserstein(both, from_r, n, m)
    del from_r
    if max(n, m) <= 10_000:
        # scipy's exact method at this size, as ks_2samp's `auto` does; where it cannot converge (many ties) scipy
        # falls back to the asymptotic p-value and warns. That fallback is the answer: no warning for users.
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ks_2samp(r, c).pvalue)
    else:
        p = float(stats.kstwo.sf(d, round(n * m / (n + m))))  # ks_2samp's asymptotic branch
    edges = _psi_edges(r)
    p_ref, p_cur = _sorted_shares(r, edges, "right"), _sorted_shares(c, edges, "right")
    std = float(r.std(ddof=1)) if n > 1 else 0.0
    result = {
        "ks": d,
        "ks_p_value": p,
        "wasserstein": w,
        "wasserstein_norm": w / std if std > 0 else w,
        "psi": psi(p_ref, p_cur),
        "js": js_distance(p_ref, p_cur),
        "bins": len(edges) + 1,
    }
    return result, _histogram(r, c, both)


def _quantiles(x: np.ndarray, q: Any) -> np.ndarray:
    """np.quantile(x, q) (linear method, the same arithmetic) of an already sorted array: a few lookups instead of
    np.quantile's partition of a copy."""
    at = np.asarray(q, dtype=float) * (len(x) - 1)
    lo = np.floor(at).astype(np.intp)
    hi = np.minimum(lo + 1, len(x) - 1)
    a, b, t = x[lo], x[hi], at - lo
    step = b - a
    return np.where(t >= 0.5, b - step * (1 - t), a + step * t)


def _sorted_shares(x: np.ndarray, edges: np.ndarray, side: str) -> np.ndarray:
    """Shares of sorted `x` in the bins cut at `edges`: right-closed (a, b] with side="right", [a, b) with "left"."""
    cuts = np.searchsorted(x, edges, side=side)  # type: ignore[call-overload]
    return np.diff(np.concatenate([[0], cuts, [len(x)]])) / max(len(x), 1)


def _psi_edges(r: np.ndarray) -> np.ndarray:
    """Right-closed bin edges on reference quantiles, with a bin of its own for every point mass.

    Plain deciles collapse on a zero-inflated column (0 mm of rain in 80% of hours gives one edge), hiding a change
    in the share of rainy hours. So a value holding at least 1/PSI_BINS of the rows gets the bin (just below it, it]
    to itself, and the remaining bins are quantiles of the other values.
    """
    n = len(r)
    k = -(-n // PSI_BINS)  # a value holding >= 1/PSI_BINS of the rows fills k consecutive slots of sorted r
    held = r[: n - k + 1][r[: n - k + 1] == r[k - 1 :]]
    masses = held[np.concatenate([[True], held[1:] != held[:-1]])] if len(held) else held
    rest = r
    if len(masses):
        keep = np.ones(n, dtype=bool)
        for low, high in zip(np.searchsorted(r, masses, "left"), np.searchsorted(r, masses, "right"), strict=True):
            keep[low:high] = False
        rest = r[keep]
    bins = PSI_BINS - len(masses)
    inner = _quantiles(rest, np.linspace(0, 1, bins + 1)[1:-1]) if len(rest) and bins > 1 else np.array([])
    return np.unique(np.concatenate([masses, np.nextafter(masses, -np.inf), inner]))


def psi(p_ref: np.ndarray, p_cur: np.ndarray) -> float:
    """Population stability index; shares floored at PSI_FLOOR so an empty bin does not make it infinite."""
    a, b = np.maximum(p_ref, PSI_FLOOR), np.maximum(p_cur, PSI_FLOOR)
    return float(np.sum((b - a) * np.log(b / a)))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance, base 2 (in [0, 1]); the same as scipy.spatial.distance.jensenshannon."""
    p, q = p / p.sum(), q / q.sum()
    mid = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / mid), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / mid), 0.0).sum()
    return float(math.sqrt(max((kl_p + kl_q) / 2, 0.0)))


def categorical_stats(ref: pd.Series, cur: pd.Series) -> dict[str, Any]:
    """Chi-square test on the 2 x k table, JS distance and PSI over categories, new and vanished categories."""
    return _count_stats(_text_counts(ref), _text_counts(cur))


def _category(value: Any) -> str:
    """A category's key: its text, with integral floats as integers (1.0 and 1 are one category)."""
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _text_counts(values: pd.Series) -> pd.Series:
    """Non-null value counts keyed by category text (TypeError on unhashable values such as lists)."""
    return _as_text(values.value_counts())


def _as_text(counts: pd.Series) -> pd.Series:
    """Counts re-keyed by _category: counting first and converting the few distinct keys afterwards is much cheaper
    than converting a million values."""
    counts = counts.copy()
    counts.index = counts.index.map(_category)
    counts = counts.groupby(level=0, sort=False).sum()  # 1, 1.0 and "1" are one category as text
    return counts[counts > 0].sort_values(ascending=False, kind="stable")


def _count_stats(rc: pd.Series, cc: pd.Series) -> dict[str, Any]:
    """categorical_stats from the two sides' value counts."""
    from scipy import stats

    categories = sorted(set(rc.index) | set(cc.index), key=str)
    a = np.array([rc.get(k, 0) for k in categories], dtype=float)
    b = np.array([cc.get(k, 0) for k in categories], dtype=float)
    out: dict[str, Any] = {"categories": len(categories)}
    if len(categories) > 1 and a.sum() and b.sum():
        chi2, p, _, _ = stats.chi2_contingency(np.vstack([a, b]))
        out.update(chi2=float(chi2), chi2_p_value=float(p))
    else:
        out.update(chi2=0.0, chi2_p_value=1.0)
    pa_, pb_ = a / max(a.sum(), 1), b / max(b.sum(), 1)
    out.update(js=js_distance(pa_ + 0.0, pb_ + 0.0) if a.sum() and b.sum() else 0.0, psi=psi(pa_, pb_))
    out["new_categories"] = {str(k): float(s) for k, s, r in zip(categories, pb_, a, strict=True) if r == 0}
    out["vanished_categories"] = {str(k): float(s) for k, s, c in zip(categories, pa_, b, strict=True) if c == 0}
    return out


def adjust(p_values: list[float], method: str) -> list[float]:
    """Multiple-testing correction: Benjamini-Hochberg, Bonferroni or none."""
    p = np.asarray(p_values, dtype=float)
    if method == "none" or len(p) == 0:
        return p.tolist()
    if method == "bonferroni":
        return np.minimum(p * len(p), 1.0).tolist()
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(ranked, 1.0)
    return out.tolist()


def _severity(stat: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "high" if value is not None else "none"
    low, medium, high = SEVERITY.get(stat, SEVERITY["wasserstein"])
    return "high" if value >= high else "medium" if value >= medium else "low" if value >= low else "none"


# --- columns -------------------------------------------------------------------------------------------------


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


def _integral(x: np.ndarray) -> bool:
    """Whether every value is a whole number; a strided sample answers first for most float columns."""
    with np.errstate(invalid="ignore"):  # inf % 1 is NaN: not whole, and no RuntimeWarning on stderr
        return bool(np.all(np.mod(x[:: max(1, len(x) // 1000)], 1) == 0) and np.all(np.mod(x, 1) == 0))


def _number_kind(
    ref: pd.Series, finite: np.ndarray, present: int, name: str, options: DriftOptions
) -> tuple[str, str | None]:
    """(kind, note) of a numeric reference column, from its sorted finite values and its count of non-null ones."""
    import pandas as pd

    if not present:
        return "empty", None
    if name in options.numeric or not len(finite):
        return "numeric", None
    if not (pd.api.types.is_integer_dtype(ref) or _integral(finite)):
        return "numeric", None
    unique = 1 + int(np.count_nonzero(finite[1:] != finite[:-1]))
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

    forced = name in options.categorical
    if pd.api.types.is_datetime64_any_dtype(ref) and not forced:
        return "datetime", None, None
    try:
        raw = ref.value_counts()
    except TypeError:  # unhashable values: lists, maps
        return "nested", "nested values (lists, maps, structs): not compared", None
    if not len(raw):
        return "empty", None, None
    if forced or pd.api.types.is_bool_dtype(ref):
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


def _feature(name: str, ref: pd.Series | None, cur: pd.Series | None, options: DriftOptions) -> dict[str, Any]:
    import pandas as pd

    row: dict[str, Any] = {
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
        rc = _as_text(raw) if raw is not None else None
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
        s.update(
            missing_share_reference=r_null / len(ref),
            missing_share_current=c_null / len(cur),
            missing_share_change=c_null / len(cur) - r_null / len(ref),
            inf_share_reference=(r_neg + r_pos) / len(ref),
            inf_share_current=(c_neg + c_pos) / len(cur),
            inf_share_change=(c_neg + c_pos) / len(cur) - (r_neg + r_pos) / len(ref),
            values_reference=len(rv),
            values_current=len(cv),
        )
        if not (len(rv) and len(cv)):
            side = "current" if len(rv) else "reference"
            row.update(status="all_missing", note=f"no finite values in the {side} data")
            return row
        numbers, row["histogram"] = _sorted_numeric_stats(rv, cv)
        s.update(numbers)
        # Outside the reference range: finite values beyond [min, max], and infinities the reference did not have.
        inside = np.searchsorted(cv, rv[-1], side="right") - np.searchsorted(cv, rv[0], side="left")
        outside = len(cv) - inside + (c_neg if not r_neg else 0) + (c_pos if not r_pos else 0)
        s["out_of_range_share"] = float(outside) / (len(cv) + c_neg + c_pos)
        if rv[0] == rv[-1] and not note:
            row["note"] = "constant in the reference: Wasserstein not normalised"
        return row
    if rc is None:  # a low-cardinality integer column, or --categorical on a numeric one
        rc = _text_counts(ref)
    try:
        cc = _text_counts(cur)
    except TypeError:
        _missing_shares(s, ref, cur)
        row.update(status="type_mismatch", note="nested values (lists, maps) in the current data: not compared")
        return row
    s.update(
        missing_share_reference=1.0 - rc.sum() / len(ref),
        missing_share_current=1.0 - cc.sum() / len(cur),
        values_reference=int(rc.sum()),
        values_current=int(cc.sum()),
    )
    s["missing_share_change"] = s["missing_share_current"] - s["missing_share_reference"]
    if cc.empty:
        row.update(status="all_missing", note="no values in the current data")
        return row
    s.update(_count_stats(rc, cc))
    top, cur_shares = (rc / rc.sum()).head(12), cc / cc.sum()
    labels = list(top.index) + [k for k in cur_shares.head(3).index if k not in top.index]
    row["histogram"] = {
        "labels": labels,
        "reference": [float(top.get(k, 0.0)) for k in labels],
        "current": [float(cur_shares.get(k, 0.0)) for k in labels],
    }
    return row


def _histogram(r: np.ndarray, c: np.ndarray, both: np.ndarray, bins: int = 20) -> dict[str, Any]:
    """Shares per bin on a common grid (1st to 99th percentile of both sides, the tails folded into the end bins),
    for the HTML page and dashboards. All three arrays are sorted."""
    low, high = (float(v) for v in _quantiles(both, [0.01, 0.99]))
    if high <= low:
        low, high = float(both[0]), float(both[-1]) + 1e-9
    edges = np.linspace(low, high, bins + 1)
    shares = [_sorted_shares(x, edges[1:-1], "left") for x in (r, c)]  # [a, b) bins, as np.histogram's
    return {"edges": edges.tolist(), "reference": shares[0].tolist(), "current": shares[1].tolist()}


def _decide(rows: list[dict[str, Any]], options: DriftOptions) -> None:
    """Fill p_value (corrected), drifted, severity and decided_by for every compared feature."""
    tests = []
    for row in (r for r in rows if r["status"] == "ok"):
        s, numeric = row["statistics"], row["kind"] == "numeric"
        large = min(s["values_reference"], s["values_current"]) > LARGE_SAMPLE
        stat = options.stattest
        if stat == "auto":
            stat = ("wasserstein" if numeric else "js") if large else ("ks" if numeric else "chi2")
        elif numeric and stat == "chi2":
            stat = "ks"
        elif not numeric and stat in ("ks", "wasserstein"):
            stat = "chi2" if stat == "ks" else "js"
        row["decided_by"] = stat
        row["p_value_raw"] = s["ks_p_value"] if numeric else s["chi2_p_value"]
        tests.append(row)
    for row, adjusted in zip(tests, adjust([r["p_value_raw"] for r in tests], options.correction), strict=True):
        row["p_value"] = adjusted
        s, stat = row["statistics"], row["decided_by"]
        # In auto mode --threshold is the effect-size threshold; the tests keep their 0.05 level.
        auto_test = options.stattest == "auto" and stat in ("ks", "chi2")
        threshold = THRESHOLDS[stat] if options.threshold is None or auto_test else options.threshold
        effect_stat = "wasserstein" if row["kind"] == "numeric" else "js"
        effect = s["wasserstein_norm"] if effect_stat == "wasserstein" else s["js"]
        if stat in ("ks", "chi2"):
            drifted = adjusted < threshold
        else:
            value = s["wasserstein_norm"] if stat == "wasserstein" else s[stat]
            # Effect size decides, but never against the test: sparse categories inflate JS on small samples.
            drifted = value >= threshold and adjusted < THRESHOLDS["ks"]
            if stat == "psi":
                effect_stat, effect = "psi", value
        severity = _severity(effect_stat, effect)
        row["drifted"] = bool(drifted)
        row["severity"] = severity if drifted else "none"
        if drifted and severity == "none":
            row["severity"] = "low"
        row["threshold"] = threshold
    order = ("none", "low", "medium", "high")
    for row in rows:
        if row["status"] not in ("ok", "all_missing"):
            continue
        if row["status"] == "all_missing":
            row["drifted"] = False
        # Missing values and infinities are signals of their own, whatever the distribution of the rest says.
        for signal, limit in (("missing_share", MISSING_SHARE_CHANGE), ("inf_share", INF_SHARE_CHANGE)):
            change = row["statistics"].get(f"{signal}_change")
            if change is not None and abs(change) >= limit:
                severity = "high" if abs(change) >= 0.5 else "medium"
                row.update(drifted=True, decided_by=signal, severity=max(row["severity"], severity, key=order.index))
                break


# --- model-aware parts ---------------------------------------------------------------------------------------


def _cached_importance(path: Path, features: list[str]) -> dict[str, float] | None:
    """The cached importance if it is what this code writes: {feature: number >= 0} for every model feature. The
    cache lives outside the hash-verified version, so anything else (edited, truncated, another model's) is
    recomputed rather than trusted."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not set(features) <= set(data):
        return None
    values = [data[f] for f in features]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values):
        return None
    return {f: float(v) for f, v in zip(features, values, strict=True)}


def _importance(registry: Registry, version: Version, estimator: Any, sample: pd.DataFrame) -> dict[str, float]:
    """Permutation importance on (up to 5,000 rows of) the reference sample, cached beside the registry's versions
    (versions are immutable; the cache is not part of them)."""
    from sklearn.inspection import permutation_importance

    features = [f["name"] for f in version.manifest["features"]]
    path = registry.root / version.name / "cache" / version.version / "importance.json"
    if path.is_file() and (cached := _cached_importance(path, features)) is not None:
        return cached
    target = version.manifest.get("target")
    if not target or target not in sample.columns:
        return {}
    rows = sample[sample[target].notna()].head(5000)
    y = rows[target].to_numpy()
    from mlops_cli.model import align_labels

    y = align_labels(y, version.manifest.get("classes"))
    result = permutation_importance(estimator, rows[features], y, n_repeats=3, random_state=0)
    importance = {f: max(float(v), 0.0) for f, v in zip(features, result.importances_mean, strict=True)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        io.write_json(path, importance)
    except OSError:
        pass  # a read-only registry: the cache is an optimisation, the report does not need it
    return importance


def _prediction_row(name: str, ref: pd.Series, cur: pd.Series, options: DriftOptions) -> dict[str, Any]:
    """Drift of one prediction column (probabilities or values: numeric; labels: categorical), uncorrected."""
    import pandas as pd

    numeric = [name] if pd.api.types.is_float_dtype(ref) else []  # never an "identifier": scores are mostly unique
    row = _feature(
        name, ref, cur, DriftOptions(numeric=numeric, stattest=options.stattest, threshold=options.threshold)
    )
    _decide([row], DriftOptions(stattest=options.stattest, threshold=options.threshold, correction="none"))
    scores = row["kind"] == "numeric" and row["status"] == "ok"
    row["mean_reference"] = float(ref.mean()) if scores else None
    row["mean_current"] = float(cur.mean()) if scores else None
    return row


def _stored_prediction_column(version: Version, sample: pd.DataFrame, values: pd.Series | None = None) -> str:
    """The column of the stored reference sample that matches the model's output: the positive-class probability
    of a binary classifier, else `prediction`. Given the values of a --prediction-column, labels (not fractions)
    match `prediction`, and a column of the sample's own name matches itself."""
    import pandas as pd

    from mlops_cli import model as model_lib

    if values is not None and values.name in sample.columns:
        return str(values.name)
    classes = version.manifest.get("classes") or []
    binary = version.manifest["task"] == "classifier" and len(classes) == 2
    labels = values is not None and not (
        pd.api.types.is_float_dtype(values) and not _integral(values.dropna().to_numpy(dtype=float))
    )
    return model_lib.proba_column(classes[-1]) if binary and not labels else "prediction"


def _prediction_drift(
    version: Version,
    estimator: Any,
    sample: pd.DataFrame,
    current: pd.DataFrame,
    reference: pd.DataFrame | None,
    options: DriftOptions,
) -> tuple[dict[str, Any] | None, str | None]:
    """(prediction drift row, or None and the reason it was skipped)."""
    from mlops_cli import model as model_lib

    col = options.prediction_column
    if col is not None and col in current.columns:  # predictions made upstream: compare them, no re-scoring
        if reference is not None and col in reference.columns:
            return _prediction_row(col, reference[col], current[col], options), None
        stored = _stored_prediction_column(version, sample, current[col])
        if stored not in sample.columns:
            return None, f"prediction drift skipped: the stored reference sample has no {stored!r} column"
        return _prediction_row(col, sample[stored], current[col], options), None
    features = [f["name"] for f in version.manifest["features"]]
    missing = [f for f in features if f not in current.columns]
    if missing:
        return None, f"prediction drift and performance skipped: CURRENT lacks the model's features {missing}"
    column = _stored_prediction_column(version, sample)
    if column not in sample.columns:
        return None, f"prediction drift skipped: the stored reference sample has no {column!r} column"
    task, classes = version.manifest["task"], version.manifest.get("classes")
    try:
        predictions = model_lib.predict_frame(estimator, current[features], task=task, classes=classes)
    except InvalidData as exc:
        return None, f"prediction drift skipped: {exc.message}"
    return _prediction_row(column, sample[column], predictions[column], options), None


def _performance(
    version: Version, estimator: Any, current: pd.DataFrame, target: str
) -> tuple[dict[str, Any] | None, str | None]:
    """(the model's metrics on the labelled current rows against the recorded ones, or None and why not).

    The drop's 95% CI combines both uncertainties by the normal approximation: each side's standard error is its
    95% CI half-width / 1.96 (the recorded CI from the manifest, the current one from 300 bootstrap resamples),
    and the drop's CI is drop +/- 1.96 * sqrt(se_recorded^2 + se_current^2).
    """
    from mlops_cli import metrics
    from mlops_cli import model as model_lib

    features = [f["name"] for f in version.manifest["features"]]
    if any(f not in current.columns for f in features):
        return None, None  # said once, with prediction drift
    recorded = version.manifest.get("eval_metrics") or {}
    labelled = current[current[target].notna()]
    if len(labelled) < MIN_LABELLED:
        return None, (
            f"performance skipped: {len(labelled):,} labelled rows in CURRENT; "
            f"a drop needs at least {MIN_LABELLED} to mean anything"
        )
    try:
        scorer = model_lib.scorer_for(estimator, version.manifest, labelled, target)
    except InvalidData as exc:
        return None, f"performance skipped: {exc.message}"
    now = metrics.evaluate(scorer, n_boot=300, seed=0)
    out = {}
    for name in metrics.CLASSIFIER_METRICS if scorer.task == "classifier" else metrics.REGRESSOR_METRICS:
        if name not in now:
            continue
        cur = now[name]
        entry: dict[str, Any] = {"current": cur["value"], "current_ci": [cur["ci_low"], cur["ci_high"]]}
        if name in recorded:
            base = recorded[name]
            sign = 1 if metrics.higher_is_better(name) else -1
            drop = sign * (base["value"] - cur["value"])
            ref_ci = [base.get("ci_low"), base.get("ci_high")]
            se_ref = _se(*ref_ci) if None not in ref_ci else 0.0  # no recorded CI: the current one alone
            half = 1.96 * math.hypot(se_ref, _se(cur["ci_low"], cur["ci_high"]))
            entry.update(recorded=base["value"], recorded_ci=ref_ci, drop=drop, drop_ci=[drop - half, drop + half])
        out[name] = entry
    return {
        "rows": len(labelled),
        "metrics": out,
        "drop_ci_method": "normal: drop ± 1.96·√(se_recorded² + se_current²), se = 95% CI half-width / 1.96",
    }, None


def _se(low: float, high: float) -> float:
    return (high - low) / 2 / 1.96


# --- the report ----------------------------------------------------------------------------------------------


def compare(
    reference: pd.DataFrame, current: pd.DataFrame, options: DriftOptions, importance: dict[str, float] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-feature drift rows and the dataset summary."""
    if current.empty:
        raise EmptyInput("the current data has no rows", "nothing to compare")
    if reference.empty:
        raise EmptyInput("the reference data has no rows", "nothing to compare with")
    skip = set(options.ignore) | {options.target, options.prediction_column} - {None}
    names = [n for n in (options.features or reference.columns) if n not in skip]
    unknown = [n for n in names if n not in reference.columns and n not in current.columns]
    if unknown:
        raise SchemaMismatch(f"no such columns in either data: {unknown}", "check --features")
    columns = {n: (reference.get(n), current.get(n)) for n in names}  # taken here: pandas is not thread-safe

    def feature(name: str) -> dict[str, Any]:
        return _feature(name, *columns[name], options)

    if len(reference) + len(current) >= PARALLEL_ROWS and WORKERS > 1:
        with ThreadPoolExecutor(WORKERS) as pool:
            rows = list(pool.map(feature, names))
    else:
        rows = [feature(n) for n in names]
    _decide(rows, options)
    importance = importance or {}
    for row in rows:
        row["importance"] = importance.get(row["name"])
    tested = [r for r in rows if r["drifted"] is not None]
    drifted = [r for r in tested if r["drifted"]]
    total_importance = sum(importance.get(r["name"], 0.0) for r in tested)
    weighted = (
        sum(importance.get(r["name"], 0.0) for r in drifted) / total_importance
        if importance and total_importance > 0
        else None
    )
    share = len(drifted) / len(tested) if tested else 0.0
    verdict = share >= options.drift_share or (weighted is not None and weighted >= options.drift_share)
    # Drift that matters to this model first: drifted features by importance, then severity; then the rest.
    order = {"high": 0, "medium": 1, "low": 2, "none": 3}
    rows.sort(key=lambda r: (not r["drifted"], -(r["importance"] or 0.0), order[r["severity"]], r["name"]))
    only_current = [c for c in current.columns if c not in reference.columns and c not in skip]
    summary = {
        "features": len(rows),
        "tested": len(tested),
        "drifted": len(drifted),
        "drifted_share": share,
        "weighted_drifted_share": weighted,
        "drift_share": options.drift_share,
        "verdict": "drift" if verdict and tested else "no drift",
        "drifted_features": [r["name"] for r in drifted],
        "not_compared": {r["name"]: r["status"] for r in rows if r["drifted"] is None},
        "only_in_current": only_current if options.features is None else [],
        "rows": {"reference": len(reference), "current": len(current)},
        "prediction_drift": None,
        "performance": None,
        "rule": {
            "stattest": options.stattest,
            "large_sample": LARGE_SAMPLE,
            "thresholds": THRESHOLDS,
            "threshold": options.threshold,
            "severity_bands": SEVERITY,
            "correction": options.correction,
            "missing_share_change": MISSING_SHARE_CHANGE,
            "inf_share_change": INF_SHARE_CHANGE,
            "identifier_unique_share": {"text": ID_UNIQUE_SHARE, "integer": ID_UNIQUE_SHARE_INT},
            "psi_bins": PSI_BINS,
            "psi_floor": PSI_FLOOR,
        },
    }
    return rows, summary


def report(
    registry: Registry | None,
    current_path: Path,
    *,
    reference_path: Path | None = None,
    model_ref: str | None = None,
    options: DriftOptions | None = None,
    fmt: str | None = None,
) -> Report:
    """`mlops drift-report`: from files, or with --model from the version's stored reference."""
    options = options or DriftOptions()
    if model_ref is None and reference_path is None:
        raise InputError(
            "no reference: pass REFERENCE CURRENT, or --model REF to use the stored reference",
            "e.g. mlops drift-report current.parquet --model churn@production",
        )
    paths = [p for p in (reference_path, current_path) if p is not None]
    with ThreadPoolExecutor(1) as hashing:
        # The inputs' sha256 (a full read of each file) runs beside the parsing and the statistics.
        digests = [hashing.submit(io.fingerprint, p) for p in paths]
        current = io.read_table(current_path, fmt=fmt)
        if options.target is not None and options.target not in current.columns:
            # A mistyped --target would otherwise silently drop the performance check.
            raise SchemaMismatch(f"{current_path}: no target column {options.target!r}", "check --target")
        reference = io.read_table(reference_path, fmt=fmt) if reference_path is not None else None
        if model_ref is None:
            assert reference is not None
            out = _report(*compare(reference, current, options), [], None, [])
            col = options.prediction_column
            if col is not None and col in reference.columns and col in current.columns:
                out.results["summary"]["prediction_drift"] = _prediction_row(col, reference[col], current[col], options)
            elif col is not None:
                side = "REFERENCE" if col not in reference.columns else "CURRENT"
                out.messages.append(f"prediction drift skipped: no column {col!r} in {side}")
        else:
            assert registry is not None
            version = registry.resolve(model_ref)
            out = drift_for_model(registry, version, current, options=options, reference=reference)
    frames = [f for f in (reference, current) if f is not None]
    out.inputs = [{**d.result(), "rows": len(f)} for d, f in zip(digests, frames, strict=True)]
    return out


def drift_for_model(
    registry: Registry,
    version: Version,
    current: pd.DataFrame,
    *,
    options: DriftOptions | None = None,
    reference: pd.DataFrame | None = None,
) -> Report:
    """Drift of `current` against a registered version's stored reference sample (or `reference`), with
    importance weighting, prediction drift and, when the target is present, performance against eval metrics."""
    options = options or DriftOptions()
    estimator, version = registry.load_model(version, strict=options.strict)
    sample = io.read_table(version.file("sample.parquet"))
    features = [f["name"] for f in version.manifest["features"]]
    target = options.target or version.manifest.get("target")
    if options.features is None:
        options = DriftOptions(**{**options.__dict__, "features": features})
    importance = _importance(registry, version, estimator, sample)
    rows, summary = compare(reference if reference is not None else sample, current, options, importance)
    messages = []
    summary["prediction_drift"], why = _prediction_drift(version, estimator, sample, current, reference, options)
    messages += [why] if why else []
    if target and target in current.columns:
        summary["performance"], why = _performance(version, estimator, current, target)
        messages += [why] if why else []
    return _report(rows, summary, [], version, messages)


def _report(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    inputs: list[dict[str, Any]],
    version: Version | None,
    messages: list[str],
) -> Report:
    notes = []
    if summary["not_compared"]:
        notes.append(f"not compared: {', '.join(f'{k} ({v})' for k, v in summary['not_compared'].items())}")
    if summary["only_in_current"]:
        notes.append(f"only in CURRENT, not compared: {', '.join(summary['only_in_current'])}")
    for side, n in summary["rows"].items():
        if n < MIN_ROWS:
            notes.append(
                f"{side.upper()} has only {n} row{'s' if n != 1 else ''}: with fewer than {MIN_ROWS} rows the "
                "tests have little power, so 'no drift' says little"
            )
    return Report(
        "drift-report",
        results={"features": rows, "summary": summary},
        inputs=inputs,
        model=version.summary() if version else None,
        messages=notes + messages,
        passed=summary["verdict"] != "drift",
    )
