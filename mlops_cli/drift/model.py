"""The model's part of a drift report: feature importance, prediction drift and performance (concept) drift."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli import io
from mlops_cli.drift.decision import DriftOptions, decide
from mlops_cli.drift.kinds import feature_row, integral
from mlops_cli.errors import InvalidData
from mlops_cli.runtime import LoadedModel, proba_column

if TYPE_CHECKING:
    import pandas as pd

    from mlops_cli.metrics import Scorer
    from mlops_cli.registry import Registry, Version

MIN_LABELLED = 30  # below this many labelled rows, no performance block (its CI would mean nothing)


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


def feature_importance(registry: Registry, model: LoadedModel, sample: pd.DataFrame) -> dict[str, float]:
    """Permutation importance on (up to 5,000 rows of) the reference sample, cached beside the registry's versions
    (versions are immutable; the cache is not part of them). The permuted rows are scored through the runtime."""
    from sklearn.inspection import permutation_importance

    from mlops_cli.runtime.labelled import align_labels

    version = model.version
    assert version is not None
    features = model.spec.feature_names
    path = registry.root / version.name / "cache" / version.version / "importance.json"
    if path.is_file() and (cached := _cached_importance(path, features)) is not None:
        return cached
    target = version.manifest.get("target")
    if not target or target not in sample.columns:
        return {}
    rows = sample[sample[target].notna()].head(5000)
    rows = rows.iloc[model.score(rows).scored_rows]  # rows outside the input contract would not be scored
    y = align_labels(rows[target].to_numpy(), model.spec.classes)
    scoring = "accuracy" if model.spec.task == "classifier" else "r2"  # what the estimator's own score() uses
    result = permutation_importance(
        model.as_estimator(), rows[features], y, scoring=scoring, n_repeats=3, random_state=0
    )
    importance = {f: max(float(v), 0.0) for f, v in zip(features, result.importances_mean, strict=True)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        io.write_json(path, importance)
    except OSError:
        pass  # a read-only registry: the cache is an optimisation, the report does not need it
    return importance


def prediction_row(name: str, ref: pd.Series, cur: pd.Series, options: DriftOptions) -> dict[str, Any]:
    """Drift of one prediction column (probabilities or values: numeric; labels: categorical), uncorrected."""
    import pandas as pd

    numeric = [name] if pd.api.types.is_float_dtype(ref) else []  # never an "identifier": scores are mostly unique
    row = feature_row(name, ref, cur, prediction_options(options, numeric))
    return decide_prediction_row(row, options, lambda: (float(ref.mean()), float(cur.mean())))


def prediction_options(options: DriftOptions, numeric: list[str]) -> DriftOptions:
    """The options a prediction column is compared under: the test and threshold, no kinds but `numeric`."""
    return DriftOptions(numeric=numeric, stattest=options.stattest, threshold=options.threshold)


def decide_prediction_row(
    row: dict[str, Any], options: DriftOptions, means: Callable[[], tuple[float, float]]
) -> dict[str, Any]:
    """A prediction column's row, decided without correction (one test), and both sides' means when it holds
    scores (`means()`, asked only then): both engines finish the row here."""
    decide([row], DriftOptions(stattest=options.stattest, threshold=options.threshold, correction="none"))
    scores = row["kind"] == "numeric" and row["status"] == "ok"
    row["mean_reference"], row["mean_current"] = means() if scores else (None, None)
    return row


def stored_prediction_column(
    version: Version, sample: pd.DataFrame, upstream: tuple[str, Callable[[], bool]] | None = None
) -> str:
    """The column of the stored reference sample that matches the model's output: the positive-class probability
    of a binary classifier, else `prediction`. Given a --prediction-column's name and whether it holds labels (not
    fractions; asked only when it matters), labels match `prediction`, and a column of the sample's own name
    matches itself."""
    if upstream is not None and upstream[0] in sample.columns:
        return upstream[0]
    classes = version.manifest.get("classes") or []
    binary = version.manifest["task"] == "classifier" and len(classes) == 2
    labels = upstream is not None and binary and upstream[1]()
    return proba_column(classes[-1]) if binary and not labels else "prediction"


def holds_labels(values: pd.Series) -> bool:
    """Whether a --prediction-column holds labels: anything but floats that are not all whole."""
    import pandas as pd

    return not (pd.api.types.is_float_dtype(values) and not integral(values.dropna().to_numpy(dtype=float)))


def prediction_drift(
    model: LoadedModel,
    sample: pd.DataFrame,
    current: pd.DataFrame,
    reference: pd.DataFrame | None,
    options: DriftOptions,
) -> tuple[dict[str, Any] | None, str | None]:
    """(prediction drift row, or None and the reason it was skipped)."""
    version = model.version
    assert version is not None
    col = options.prediction_column
    if col is not None and col in current.columns:  # predictions made upstream: compare them, no re-scoring
        if reference is not None and col in reference.columns:
            return prediction_row(col, reference[col], current[col], options), None
        stored = stored_prediction_column(version, sample, (col, lambda: holds_labels(current[col])))
        if stored not in sample.columns:
            return None, no_stored_column(stored)
        return prediction_row(col, sample[stored], current[col], options), None
    missing = [f for f in model.spec.feature_names if f not in current.columns]
    if missing:
        return None, lacks_features(missing)
    column = stored_prediction_column(version, sample)
    if column not in sample.columns:
        return None, no_stored_column(column)
    try:
        scored = model.score(current)
    except InvalidData as exc:
        return None, f"prediction drift skipped: {exc.message}"
    if len(current) and scored.invalid.all():
        return None, none_scored(len(current), scored.rejected())
    row = prediction_row(column, sample[column], scored.frame(current.index)[column], options)
    return row, unscored_message(int(scored.invalid.sum()), scored.rejected())


def no_stored_column(column: str) -> str:
    return f"prediction drift skipped: the stored reference sample has no {column!r} column"


def lacks_features(missing: list[str]) -> str:
    return f"prediction drift and performance skipped: CURRENT lacks the model's features {missing}"


def none_scored(rows: int, reasons: dict[str, int]) -> str:
    """The message when no row of CURRENT could be scored: there are no predictions to compare."""
    listed = ", ".join(f"{label} ({n:,})" for label, n in sorted(reasons.items()))
    return f"prediction drift skipped: all {rows:,} rows of CURRENT break the input contract: {listed}"


def unscored_message(rows: int, reasons: dict[str, int]) -> str | None:
    """The message for the rows of CURRENT left out of prediction drift (None: none was)."""
    if not rows:
        return None
    listed = ", ".join(f"{label} ({n:,})" for label, n in sorted(reasons.items()))
    return f"prediction drift: {rows:,} rows of CURRENT break the input contract and were not scored: {listed}"


def performance(model: LoadedModel, current: pd.DataFrame, target: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the model's metrics on the labelled current rows against the recorded ones, or None and why not)."""
    from mlops_cli.runtime import labelled as labelled_lib

    if any(f not in current.columns for f in model.spec.feature_names):
        return None, None  # said once, with prediction drift
    labelled = current[current[target].notna()]
    return performance_of(model, len(labelled), lambda: labelled_lib.scorer(model, labelled, target, where=LABELLED))


LABELLED = "the labelled rows of CURRENT"


def performance_of(
    model: LoadedModel, rows: int, scorer: Callable[[], Scorer]
) -> tuple[dict[str, Any] | None, str | None]:
    """`performance` from the count of labelled rows and their scorer (asked for only with enough rows): both
    engines end here.

    The drop's 95% CI combines both uncertainties by the normal approximation: each side's standard error is its
    95% CI half-width / 1.96 (the recorded CI from the manifest, the current one from 300 bootstrap resamples),
    and the drop's CI is drop +/- 1.96 * sqrt(se_recorded^2 + se_current^2).
    """
    from mlops_cli import metrics

    recorded = model.version.manifest.get("eval_metrics") or {} if model.version else {}
    if rows < MIN_LABELLED:
        return None, (
            f"performance skipped: {rows:,} labelled rows in CURRENT; "
            f"a drop needs at least {MIN_LABELLED} to mean anything"
        )
    try:
        labelled = scorer()
    except InvalidData as exc:
        return None, f"performance skipped: {exc.message}"
    now = metrics.evaluate(labelled, n_boot=300, seed=0)
    out = {}
    for name in metrics.CLASSIFIER_METRICS if labelled.task == "classifier" else metrics.REGRESSOR_METRICS:
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
        "rows": rows,
        "metrics": out,
        "drop_ci_method": "normal: drop ± 1.96·√(se_recorded² + se_current²), se = 95% CI half-width / 1.96",
    }, None


def _se(low: float, high: float) -> float:
    return (high - low) / 2 / 1.96
