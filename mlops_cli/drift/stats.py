"""The statistics of numeric and categorical drift: pure functions on arrays and value counts.

Every numeric statistic comes from one sort per column: KS, Wasserstein and the PSI/JS bin edges all read the two
sorted arrays. Categorical columns compare category counts (chi-square, JS, PSI), keyed by the values' text with
integral floats written as integers (1.0 is "1": an int column with one null on one side is read as floats).
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

PSI_BINS = 10
PSI_FLOOR = 1e-4  # empty-bin rule: shares are floored at this before the log ratio
BLOCK = 1 << 13  # values per block in the merge and CDF passes: small temporaries that stay in the CPU cache
# warnings.catch_warnings swaps process-wide state: two threads must not interleave it.
_WARNINGS_LOCK = threading.Lock()


def numeric_stats(ref: np.ndarray, cur: np.ndarray) -> dict[str, float]:
    """KS (statistic, p-value), Wasserstein, PSI and JS distance from one sort of each side (no NaNs)."""
    return sorted_numeric_stats(np.sort(ref), np.sort(cur))[0]


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


def sorted_numeric_stats(r: np.ndarray, c: np.ndarray) -> tuple[dict[str, float], dict[str, Any]]:
    """numeric_stats and the histogram, from the two sides already sorted: every statistic shares the sort."""

    n, m = len(r), len(c)
    both, from_r = _merge(r, c)
    d, w = _ks_wasserstein(both, from_r, n, m)
    del from_r
    edges = _psi_edges(r)
    p_ref, p_cur = _sorted_shares(r, edges, "right"), _sorted_shares(c, edges, "right")
    std = float(r.std(ddof=1)) if n > 1 else 0.0
    return numeric_result(d, ks_p_value(d, n, m, lambda: (r, c)), w, std, p_ref, p_cur, len(edges)), _histogram(
        r, c, both
    )


def ks_p_value(d: float, n: int, m: int, samples: Callable[[], tuple[np.ndarray, np.ndarray]]) -> float:
    """The KS test's p-value for statistic d between samples of n and m values; `samples()` (the two sides) is asked
    for only at sizes where scipy's exact method runs."""
    from scipy import stats

    if max(n, m) <= 10_000:
        # scipy's exact method at this size, as ks_2samp's `auto` does; where it cannot converge (many ties) scipy
        # falls back to the asymptotic p-value and warns. That fallback is the answer: no warning for users.
        r, c = samples()
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(stats.ks_2samp(r, c).pvalue)
    return float(stats.kstwo.sf(d, round(n * m / (n + m))))  # ks_2samp's asymptotic branch


def numeric_result(
    d: float, p: float, w: float, std: float, p_ref: np.ndarray, p_cur: np.ndarray, edges: int
) -> dict[str, float]:
    """A numeric column's statistics from their parts: both engines assemble them here."""
    return {
        "ks": d,
        "ks_p_value": p,
        "wasserstein": w,
        "wasserstein_norm": w / std if std > 0 else w,
        "psi": psi(p_ref, p_cur),
        "js": js_distance(p_ref, p_cur),
        "bins": edges + 1,
    }


HISTOGRAM_BINS = 20
HISTOGRAM_RANGE = (0.01, 0.99)  # quantiles of both sides pooled: the grid's ends, the tails folded into the end bins


def _histogram(r: np.ndarray, c: np.ndarray, both: np.ndarray) -> dict[str, Any]:
    """Shares per bin on a common grid (1st to 99th percentile of both sides, the tails folded into the end bins),
    for the HTML page and dashboards. All three arrays are sorted."""
    low, high = (float(v) for v in _quantiles(both, HISTOGRAM_RANGE))
    edges = histogram_edges(low, high, float(both[0]), float(both[-1]))
    shares = [_sorted_shares(x, edges[1:-1], "left") for x in (r, c)]  # [a, b) bins, as np.histogram's
    return histogram(edges, *shares)


def histogram_edges(low: float, high: float, first: float, last: float) -> np.ndarray:
    """The grid from the pooled 1st and 99th percentiles, or the whole range when they meet."""
    if high <= low:
        low, high = first, last + 1e-9
    return np.linspace(low, high, HISTOGRAM_BINS + 1)


def histogram(edges: np.ndarray, reference: np.ndarray, current: np.ndarray) -> dict[str, Any]:
    return {"edges": edges.tolist(), "reference": reference.tolist(), "current": current.tolist()}


def _quantiles(x: np.ndarray, q: Any) -> np.ndarray:
    """np.quantile(x, q) (linear method, the same arithmetic) of an already sorted array: a few lookups instead of
    np.quantile's partition of a copy."""
    lo, hi, t = quantile_ranks(len(x), q)
    return interpolate(x[lo], x[hi], t)


def quantile_ranks(size: int, q: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two order statistics (0-based ranks) between which np.quantile's linear method interpolates, and the
    weight: a distributed sort fetches just these values."""
    at = np.asarray(q, dtype=float) * (size - 1)
    lo = np.floor(at).astype(np.intp)
    return lo, np.minimum(lo + 1, size - 1), at - lo


def interpolate(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """np.quantile's linear interpolation between order statistics a and b (numpy's own arithmetic)."""
    step = b - a
    return np.where(t >= 0.5, b - step * (1 - t), a + step * t)


def _sorted_shares(x: np.ndarray, edges: np.ndarray, side: str) -> np.ndarray:
    """Shares of sorted `x` in the bins cut at `edges`: right-closed (a, b] with side="right", [a, b) with "left"."""
    return shares_from_cuts(np.searchsorted(x, edges, side=side), len(x))  # type: ignore[call-overload]


def shares_from_cuts(cuts: np.ndarray, size: int) -> np.ndarray:
    """Bin shares from the counts of values below each edge (the searchsorted positions): summed over value
    ranges, those counts are the whole column's."""
    return np.diff(np.concatenate([[0], cuts, [size]])) / max(size, 1)


def _psi_edges(r: np.ndarray) -> np.ndarray:
    """Right-closed bin edges on reference quantiles, with a bin of its own for every point mass.

    Plain deciles collapse on a zero-inflated column (0 mm of rain in 80% of hours gives one edge), hiding a change
    in the share of rainy hours. So a value holding at least 1/PSI_BINS of the rows gets the bin (just below it, it]
    to itself, and the remaining bins are quantiles of the other values.
    """
    n = len(r)
    k = mass_rows(n)  # a value holding >= 1/PSI_BINS of the rows fills k consecutive slots of sorted r
    held = r[: n - k + 1][r[: n - k + 1] == r[k - 1 :]]
    masses = held[np.concatenate([[True], held[1:] != held[:-1]])] if len(held) else held
    rest = r
    if len(masses):
        keep = np.ones(n, dtype=bool)
        for low, high in zip(np.searchsorted(r, masses, "left"), np.searchsorted(r, masses, "right"), strict=True):
            keep[low:high] = False
        rest = r[keep]
    inner = _quantiles(rest, psi_quantiles(len(masses))) if len(rest) and PSI_BINS - len(masses) > 1 else np.array([])
    return psi_edges(masses, inner)


def psi_quantiles(masses: int) -> np.ndarray:
    """The quantiles of the non-mass reference values that cut the PSI bins, given the number of point masses."""
    return np.linspace(0, 1, PSI_BINS - masses + 1)[1:-1]


def psi_edges(masses: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The PSI bin edges: a bin (just below it, it] per point mass, and the inner quantiles."""
    return np.unique(np.concatenate([masses, np.nextafter(masses, -np.inf), inner]))


def mass_rows(n: int) -> int:
    """How many of n reference values one value must hold to be a point mass (1/PSI_BINS of them, rounded up)."""
    return -(-n // PSI_BINS)


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
    return count_stats(text_counts(ref), text_counts(cur))


def _category(value: Any) -> str:
    """A category's key: its text, with integral floats as integers (1.0 and 1 are one category)."""
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value)


def text_counts(values: pd.Series) -> pd.Series:
    """Non-null value counts keyed by category text (TypeError on unhashable values such as lists)."""
    return as_text(values.value_counts())


def as_text(counts: pd.Series) -> pd.Series:
    """Counts re-keyed by _category: counting first and converting the few distinct keys afterwards is much cheaper
    than converting a million values."""
    counts = counts.copy()
    counts.index = counts.index.map(_category)
    counts = counts.groupby(level=0, sort=False).sum()  # 1, 1.0 and "1" are one category as text
    return counts[counts > 0].sort_values(ascending=False, kind="stable")


def count_stats(rc: pd.Series, cc: pd.Series) -> dict[str, Any]:
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
