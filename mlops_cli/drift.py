"""Data, prediction and concept drift between a reference and today's data.

Every numeric statistic comes from one sort per column: KS, Wasserstein and the PSI/JS bin edges all read the two
sorted arrays. Categorical columns compare category counts (chi-square, JS, PSI).

Decision rule (`--stattest auto`, the default), per feature:
  * large samples (both sides > 1,000 rows): effect size decides, because at that size a p-value flags shifts
    nobody cares about: numeric drift when Wasserstein / reference std >= 0.1, categorical when JS distance >= 0.1,
    provided the (corrected) KS / chi-square test is also significant, which guards against sparse categories;
  * small samples: KS (numeric) or chi-square (categorical) p-value, corrected for the number of features (BH by
    default), below 0.05.
A change of 0.2 or more in the missing-value share is drift on its own (`decided_by: missing_share`).
Severity comes from the effect size: none / low / medium / high at the bands in SEVERITY.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_cli import io
from mlops_cli.errors import EmptyInput, InputError, SchemaMismatch
from mlops_cli.report import Report

if TYPE_CHECKING:
    import pandas as pd

    from mlops_cli.registry import Registry, Version

STATTESTS = ("auto", "ks", "psi", "wasserstein", "js", "chi2")
LARGE_SAMPLE = 1000
PSI_BINS = 10
PSI_FLOOR = 1e-4  # empty-bin rule: shares are floored at this before the log ratio
MISSING_SHARE_CHANGE = 0.2
ID_UNIQUE_SHARE = 0.5  # a text column whose values are mostly unique is an identifier, not a category
MAX_CATEGORIES = 1000  # ... and so is one with more distinct values than this (tail numbers, user ids)
LOW_CARDINALITY_INT = 10  # integer columns with at most this many values are compared as categories
# Default drift thresholds per statistic (p-value tests: alpha; distances: minimum effect).
THRESHOLDS = {"ks": 0.05, "chi2": 0.05, "psi": 0.2, "wasserstein": 0.1, "js": 0.1}
# Effect-size bands: below the first is none, then low, medium, high.
SEVERITY = {"wasserstein": (0.1, 0.2, 0.5), "js": (0.1, 0.2, 0.35), "psi": (0.1, 0.2, 0.25)}


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

    def __post_init__(self) -> None:
        if self.stattest not in STATTESTS:
            raise InputError(f"unknown --stattest {self.stattest!r}", f"use one of {', '.join(STATTESTS)}")
        if self.correction not in ("bh", "bonferroni", "none"):
            raise InputError(f"unknown --correction {self.correction!r}", "use bh, bonferroni or none")


# --- statistics ----------------------------------------------------------------------------------------------


def numeric_stats(ref: np.ndarray, cur: np.ndarray) -> dict[str, float]:
    """KS (statistic, p-value), Wasserstein, PSI and JS distance from one sort of each side (no NaNs)."""
    return _sorted_numeric_stats(np.sort(ref), np.sort(cur))[0]


def _sorted_numeric_stats(r: np.ndarray, c: np.ndarray) -> tuple[dict[str, float], dict[str, Any]]:
    """numeric_stats and the histogram, from the two sides already sorted: every statistic shares the sort."""
    from scipy import stats

    n, m = len(r), len(c)
    # Merge the sorted sides (a stable sort of two sorted runs is a linear merge) and count, at each merged value,
    # how many came from each side: the two empirical CDFs without a binary search per value.
    order = np.argsort(np.concatenate([r, c]), kind="stable")
    both = np.concatenate([r, c])[order]
    from_r = np.cumsum(order < n)
    gap = np.abs(from_r / n - (np.arange(1, n + m + 1) - from_r) / m)
    run_end = np.append(both[1:] != both[:-1], True)  # within a run of ties only its end is a CDF value
    d = float(gap[run_end].max())
    if max(n, m) <= 10_000:
        with warnings.catch_warnings():
            # scipy's exact method at this size, as ks_2samp's `auto` does; where it cannot converge (many ties) scipy
            # falls back to the asymptotic p-value and warns. That fallback is the answer: no warning for users.
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(stats.ks_2samp(r, c).pvalue)
    else:
        p = float(stats.kstwo.sf(d, round(n * m / (n + m))))  # ks_2samp's asymptotic branch
    w = float(np.sum(gap[:-1] * np.diff(both)))  # ties add zero-width steps
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
    starts = np.concatenate([[0], np.flatnonzero(np.diff(r)) + 1])  # r is sorted: runs of equal values
    counts = np.diff(np.concatenate([starts, [len(r)]]))
    masses = r[starts[counts >= len(r) / PSI_BINS]]
    rest = r[~np.isin(r, masses)] if len(masses) else r
    k = PSI_BINS - len(masses)
    inner = np.quantile(rest, np.linspace(0, 1, k + 1)[1:-1]) if len(rest) and k > 1 else np.array([])
    return np.unique(np.concatenate([masses, np.nextafter(masses, -np.inf), inner]))


def _shares(bin_index: np.ndarray, bins: int) -> np.ndarray:
    counts = np.bincount(bin_index, minlength=bins).astype(float)
    return counts / counts.sum()


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
    return _count_stats(ref.value_counts(), cur.value_counts())


def _text_counts(values: pd.Series) -> pd.Series:
    """Value counts keyed by the values' text (categories are compared as text): counting first and converting the
    few distinct keys afterwards is much cheaper than converting a million values."""
    counts = values.value_counts()
    counts.index = counts.index.map(str)
    counts = counts.groupby(level=0, sort=False).sum()  # 1 and "1" are one category as text
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


def _kind(ref: pd.Series, present: pd.Series, name: str, options: DriftOptions) -> tuple[str, str | None]:
    """(kind, note): numeric | categorical | identifier | datetime | nested | empty. `present` is `ref` without its
    nulls."""
    import pandas as pd

    if name in options.categorical:
        return "categorical", None
    if name in options.numeric:
        return "numeric", None
    if present.empty:
        return "empty", None
    if pd.api.types.is_bool_dtype(ref):
        return "categorical", None
    if pd.api.types.is_datetime64_any_dtype(ref):
        return "datetime", None
    if pd.api.types.is_numeric_dtype(ref):
        integral = pd.api.types.is_integer_dtype(ref) or bool(np.all(np.mod(present.to_numpy(float), 1) == 0))
        if integral and present.nunique() <= LOW_CARDINALITY_INT:
            return "categorical", f"{present.nunique()} ints, as categories"
        return "numeric", None
    if any(isinstance(v, list | tuple | dict | set | np.ndarray) for v in present.head(1_000)):
        return "nested", "nested values (lists, maps, structs): not compared"
    types = {type(v).__name__ for v in present.head(10_000)}
    note = f"mixed types {sorted(types)}: compared as text" if len(types) > 1 else None
    unique = present.nunique()
    if unique > MAX_CATEGORIES or (unique > 50 and unique / len(present) > ID_UNIQUE_SHARE):
        return "identifier", f"identifier-like: {unique:,} distinct values in {len(present):,} rows"
    return "categorical", note


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
    r, c = ref.dropna(), cur.dropna()  # once: null checks on a million strings are not free
    kind, note = _kind(ref, r, name, options)
    row.update(kind=kind, note=note)
    miss_ref, miss_cur = (1.0 - len(x) / len(full) if len(full) else 0.0 for x, full in ((r, ref), (c, cur)))
    stats_: dict[str, Any] = {
        "missing_share_reference": miss_ref,
        "missing_share_current": miss_cur,
        "missing_share_change": miss_cur - miss_ref,
        "rows_reference": len(ref),
        "rows_current": len(cur),
    }
    row["statistics"] = stats_
    if kind in ("identifier", "datetime", "nested"):
        row.update(status="skipped", note=note or f"{kind} column: not compared")
        return row
    if kind == "empty" or r.empty or c.empty:
        row.update(status="all_missing", note=f"no values in the {'reference' if r.empty else 'current'} data")
    elif kind == "numeric":
        try:
            rv, cv = r.to_numpy(dtype=float), pd.to_numeric(c, errors="raise").to_numpy(dtype=float)
        except (ValueError, TypeError):
            row.update(status="type_mismatch", note="current values are not numeric")
            rv = cv = None
        if rv is not None:
            rv, cv = np.sort(rv[np.isfinite(rv)]), np.sort(cv[np.isfinite(cv)])
            if not (len(rv) and len(cv)):
                side = "current" if len(rv) else "reference"
                row.update(status="all_missing", note=f"no finite values in the {side} data")
                rv = None
        if rv is not None:
            numbers, row["histogram"] = _sorted_numeric_stats(rv, cv)
            stats_.update(numbers)
            inside = np.searchsorted(cv, rv[-1], side="right") - np.searchsorted(cv, rv[0], side="left")
            stats_["out_of_range_share"] = 1.0 - float(inside) / len(cv)
            if stats_.get("wasserstein_norm") is not None and r.std() == 0:
                row["note"] = "constant in the reference: Wasserstein not normalised"
    else:
        try:
            rc, cc = _text_counts(r), _text_counts(c)
        except TypeError:  # unhashable values (lists) where the reference's first rows had none
            row.update(status="type_mismatch", note="nested values (lists, maps): not compared")
            return row
        stats_.update(_count_stats(rc, cc))
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
    low, high = (float(v) for v in np.quantile(both, [0.01, 0.99]))
    if high <= low:
        low, high = float(both[0]), float(both[-1]) + 1e-9
    edges = np.linspace(low, high, bins + 1)
    shares = [_sorted_shares(x, edges[1:-1], "left") for x in (r, c)]  # [a, b) bins, as np.histogram's
    return {"edges": edges.tolist(), "reference": shares[0].tolist(), "current": shares[1].tolist()}


def _decide(rows: list[dict[str, Any]], options: DriftOptions) -> None:
    """Fill p_value (corrected), drifted, severity and decided_by for every compared feature."""
    compared = [r for r in rows if r["status"] == "ok"]
    tests = []
    for row in compared:
        s, numeric = row["statistics"], row["kind"] == "numeric"
        large = min(s["rows_reference"], s["rows_current"]) > LARGE_SAMPLE
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
        threshold = options.threshold if options.threshold is not None else THRESHOLDS[stat]
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
    for row in rows:
        change = row["statistics"].get("missing_share_change")
        if change is not None and abs(change) >= MISSING_SHARE_CHANGE and row["status"] in ("ok", "all_missing"):
            row.update(drifted=True, decided_by="missing_share", severity="high" if abs(change) >= 0.5 else "medium")
        elif row["status"] == "all_missing":
            row["drifted"] = False


# --- model-aware parts ---------------------------------------------------------------------------------------


def _importance(registry: Registry, version: Version, estimator: Any, sample: pd.DataFrame) -> dict[str, float]:
    """Permutation importance on (up to 5,000 rows of) the reference sample, cached beside the registry's versions
    (versions are immutable; the cache is not part of them)."""
    from sklearn.inspection import permutation_importance

    path = registry.root / version.name / "cache" / version.version / "importance.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass
    target = version.manifest.get("target")
    features = [f["name"] for f in version.manifest["features"]]
    if not target or target not in sample.columns:
        return {}
    rows = sample[sample[target].notna()].head(5000)
    y = rows[target].to_numpy()
    from mlops_cli.model import align_labels

    y = align_labels(y, version.manifest.get("classes"))
    result = permutation_importance(estimator, rows[features], y, n_repeats=3, random_state=0)
    importance = {f: max(float(v), 0.0) for f, v in zip(features, result.importances_mean, strict=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_json(path, importance)
    return importance


def _prediction_drift(
    version: Version, estimator: Any, sample: pd.DataFrame, current: pd.DataFrame, options: DriftOptions
) -> dict[str, Any] | None:
    import pandas as pd

    from mlops_cli import model as model_lib

    features = [f["name"] for f in version.manifest["features"]]
    if any(f not in current.columns for f in features):
        return None
    task, classes = version.manifest["task"], version.manifest.get("classes")
    predictions = model_lib.predict_frame(estimator, current[features], task=task, classes=classes)
    column = (
        model_lib.proba_column(classes[-1]) if task == "classifier" and classes and len(classes) == 2 else "prediction"
    )
    if column not in sample.columns:
        return None
    ref, cur = sample[column], predictions[column]
    kind = "numeric" if pd.api.types.is_float_dtype(ref) else "categorical"
    row = _feature(
        column,
        ref,
        cur,
        DriftOptions(
            numeric=[column] if kind == "numeric" else [],
            categorical=[column] if kind == "categorical" else [],
            stattest=options.stattest,
            threshold=options.threshold,
        ),
    )
    _decide([row], DriftOptions(stattest=options.stattest, threshold=options.threshold, correction="none"))
    row["mean_reference"] = float(ref.mean()) if kind == "numeric" else None
    row["mean_current"] = float(cur.mean()) if kind == "numeric" else None
    return row


def _performance(version: Version, estimator: Any, current: pd.DataFrame, target: str) -> dict[str, Any] | None:
    from mlops_cli import metrics
    from mlops_cli import model as model_lib

    recorded = version.manifest.get("eval_metrics") or {}
    labelled = current[current[target].notna()]
    if labelled.empty:
        return None
    scorer = model_lib.scorer_for(estimator, version.manifest, labelled, target)
    now = metrics.evaluate(scorer, n_boot=300, seed=0)
    out = {}
    for name in metrics.CLASSIFIER_METRICS if scorer.task == "classifier" else metrics.REGRESSOR_METRICS:
        if name not in now:
            continue
        entry = {"current": now[name]["value"], "current_ci": [now[name]["ci_low"], now[name]["ci_high"]]}
        if name in recorded:
            base = recorded[name]["value"]
            sign = 1 if metrics.higher_is_better(name) else -1
            entry.update(
                recorded=base,
                drop=sign * (base - now[name]["value"]),
                drop_ci=sorted([sign * (base - now[name]["ci_high"]), sign * (base - now[name]["ci_low"])]),
            )
        out[name] = entry
    return {"rows": len(labelled), "metrics": out}


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
    names = options.features or [c for c in reference.columns if c not in skip]
    unknown = [n for n in names if n not in reference.columns and n not in current.columns]
    if unknown:
        raise SchemaMismatch(f"no such columns in either data: {unknown}", "check --features")
    rows = [
        _feature(
            n, reference[n] if n in reference.columns else None, current[n] if n in current.columns else None, options
        )
        for n in names
    ]
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
    order = {"high": 0, "medium": 1, "low": 2, "none": 3}
    rows.sort(key=lambda r: (-(r["importance"] or 0.0), order[r["severity"]], r["name"]))
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
        "rule": {
            "stattest": options.stattest,
            "large_sample": LARGE_SAMPLE,
            "thresholds": THRESHOLDS,
            "severity_bands": SEVERITY,
            "correction": options.correction,
            "missing_share_change": MISSING_SHARE_CHANGE,
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
    current = io.read_table(current_path, fmt=fmt)
    if options.target is not None and options.target not in current.columns:
        # A mistyped --target would otherwise silently drop the performance check.
        raise SchemaMismatch(f"{current_path}: no target column {options.target!r}", "check --target")
    inputs = [io.fingerprint(current_path, rows=len(current))]
    if reference_path is not None:
        reference = io.read_table(reference_path, fmt=fmt)
        inputs.insert(0, io.fingerprint(reference_path, rows=len(reference)))
    if model_ref is None:
        if reference_path is None:
            raise InputError(
                "no reference: pass REFERENCE CURRENT, or --model REF to use the stored reference",
                "e.g. mlops drift-report current.parquet --model churn@production",
            )
        rows, summary = compare(reference, current, options)
        return _report(rows, summary, inputs, None, [])
    assert registry is not None
    version = registry.resolve(model_ref)
    out = drift_for_model(
        registry, version, current, options=options, reference=reference if reference_path is not None else None
    )
    out.inputs = inputs
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
    estimator, version = registry.load_model(version)
    sample = io.read_table(version.file("sample.parquet"))
    features = [f["name"] for f in version.manifest["features"]]
    target = options.target or version.manifest.get("target")
    if options.features is None:
        options = DriftOptions(**{**options.__dict__, "features": features})
    messages = []
    importance = _importance(registry, version, estimator, sample)
    rows, summary = compare(reference if reference is not None else sample, current, options, importance)
    summary["prediction_drift"] = _prediction_drift(version, estimator, sample, current, options)
    summary["performance"] = (
        _performance(version, estimator, current, target) if target and target in current.columns else None
    )
    if summary["not_compared"]:
        messages.append(f"not compared: {', '.join(f'{k} ({v})' for k, v in summary['not_compared'].items())}")
    return _report(rows, summary, [], version, messages)


def _report(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    inputs: list[dict[str, Any]],
    version: Version | None,
    messages: list[str],
) -> Report:
    messages = messages or (
        [f"not compared: {', '.join(f'{k} ({v})' for k, v in summary['not_compared'].items())}"]
        if summary["not_compared"]
        else []
    )
    return Report(
        "drift-report",
        results={"features": rows, "summary": summary},
        inputs=inputs,
        model=version.summary() if version else None,
        messages=messages,
        passed=summary["verdict"] != "drift",
    )
