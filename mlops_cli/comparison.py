"""Is the challenger really better? Two registered models score the same labelled rows, and paired tests (McNemar,
DeLong, paired bootstrap, paired t and Wilcoxon) decide. `mlops abtest --champion/--challenger`, the checklist's
baseline comparison and retrain's gate all call `compare_models`.

The statistics themselves live in `mlops_cli.stats` and `mlops_cli.metrics`; this module turns two models' answers
into their inputs and their outputs into a verdict. Online experiments are `mlops_cli.experiment`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_cli import io, metrics, stats
from mlops_cli.errors import EmptyInput, InputError, SchemaMismatch
from mlops_cli.report import Report
from mlops_cli.runtime import LoadedModel, LoadOptions

if TYPE_CHECKING:
    import pandas as pd

    from mlops_cli.registry import Registry, Version

# Verdicts of a model comparison. Only the first is a win; the last two are the words an experiment uses too.
CHALLENGER_BETTER, TOO_SMALL = "challenger_better", "improvement_too_small"
CHAMPION_BETTER = "champion_better"
NO_DIFFERENCE, INCONCLUSIVE = "no_significant_difference", "inconclusive"

_NEEDS_PROBA = ("roc_auc", "log_loss")


def check_thresholds(*, min_improvement: float, alpha: float) -> None:
    """InputError unless `min_improvement` >= 0 and 0 < `alpha` < 1 (NaN fails both). `retrain` calls it before
    it trains, so a bad option is exit 3 at once and not after the training."""
    if not min_improvement >= 0:
        raise InputError(
            f"the least improvement must be a number >= 0, got {min_improvement}",
            "pass --min-improvement 0 or more, in the metric's units (0: any significant win)",
        )
    if not 0 < alpha < 1:
        raise InputError(f"alpha must lie strictly between 0 and 1, got {alpha}", "the usual alpha is 0.05")


def compare_models_file(
    registry: Registry,
    champion_ref: Any,
    challenger_ref: Any,
    path: Path,
    target: str | None = None,
    *,
    fmt: str | None = None,
    **options: Any,
) -> Report:
    """Read the labelled data, then `compare_models`."""
    frame = io.read_table(path, fmt=fmt)
    report = compare_models(registry, champion_ref, challenger_ref, frame, target, **options)
    report.inputs = [io.fingerprint(path, rows=len(frame))]
    return report


def compare_models(
    registry: Registry,
    champion_ref: str | Version,
    challenger_ref: str | Version,
    data: pd.DataFrame,
    target: str | None = None,
    *,
    metric: str | None = None,
    min_improvement: float = 0.0,
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
    load: LoadOptions | None = None,
) -> Report:
    """Both models score the same labelled rows; paired tests decide whether the challenger is better.

    The challenger wins when it is better in `metric` by at least `min_improvement` (in the metric's units,
    a reduction for log_loss / mae / rmse) and the difference is significant at `alpha`. `target` defaults to
    the champion's recorded target. Refs may be strings or already-resolved `Version` objects.
    """
    check_thresholds(min_improvement=min_improvement, alpha=alpha)
    champion_model = LoadedModel.load(registry, champion_ref, load)
    challenger_model = LoadedModel.load(registry, challenger_ref, load)
    champion, challenger = champion_model.version, challenger_model.version
    assert champion is not None and challenger is not None  # loaded from the registry
    task = champion.manifest["task"]
    if task not in ("classifier", "regressor"):
        raise SchemaMismatch(f"{champion.ref} is neither a classifier nor a regressor", "compare scikit-learn models")
    if challenger.manifest["task"] != task:
        raise SchemaMismatch(
            f"{champion.ref} is a {task} but {challenger.ref} is a {challenger.manifest['task']}",
            "compare two models of the same task",
        )
    classes: list[Any] = champion.manifest.get("classes") or []
    if task == "classifier" and sorted(map(str, classes)) != sorted(map(str, challenger.manifest.get("classes") or [])):
        raise SchemaMismatch(
            f"{champion.ref} predicts classes {classes} but {challenger.ref} predicts "
            f"{challenger.manifest.get('classes')}",
            "compare models trained for the same labels",
        )

    target = target or champion.manifest.get("target")
    if not target:
        raise SchemaMismatch(f"{champion.ref} has no recorded target column", "name the label column with --target")
    if target not in data.columns:
        raise SchemaMismatch(f"the data has no target column {target!r}", f"columns are {list(data.columns)[:20]}")
    labelled = data[data[target].notna()]
    messages = []
    if len(labelled) < len(data):
        messages.append(f"{len(data) - len(labelled):,} rows without a label in {target!r} were left out")
    if labelled.empty:
        raise EmptyInput(f"no row has a label in {target!r}", "pass labelled data")

    metric = metrics.metric_name(metric, task)
    champion_scorer = _scorer(champion_model, labelled, target, metric)
    challenger_scorer = _scorer(challenger_model, labelled, target, metric)
    higher = metrics.higher_is_better(metric)

    results: dict[str, Any] = {
        "mode": "models",
        "task": task,
        "metric": metric,
        "target": target,
        "higher_is_better": higher,
        "n": len(labelled),
        "alpha": alpha,
        "min_improvement": min_improvement,
        "champion": _model_block(champion_model, champion_scorer, metric),
        "challenger": _model_block(challenger_model, challenger_scorer, metric),
    }
    tests = _paired_tests(champion_scorer, challenger_scorer, metric, alpha=alpha, n_boot=n_boot, seed=seed)
    results.update(tests)
    results["difference"] = results["challenger"]["value"] - results["champion"]["value"]
    improvement = results["difference"] if higher else -results["difference"]
    significant = results["p_value"] < alpha
    if math.isnan(results["p_value"]):
        verdict = INCONCLUSIVE
        present = len(set(champion_scorer.true_idx.tolist())) if task == "classifier" else None
        messages.append(
            f"inconclusive: the labelled rows hold one class only, so {results['test']} gives no p-value"
            if present == 1
            else f"inconclusive: {results['test']} gives no p-value on these {len(labelled):,} rows "
            "(too few, or no variation)"
        )
    elif significant and improvement > 0:
        verdict = CHALLENGER_BETTER if improvement >= min_improvement else TOO_SMALL
    elif significant and improvement < 0:
        verdict = CHAMPION_BETTER
    else:
        verdict = NO_DIFFERENCE
    results.update(improvement=improvement, verdict=verdict, challenger_wins=verdict == CHALLENGER_BETTER)
    if champion.ref == challenger.ref:
        messages.append(f"champion and challenger are the same version ({champion.ref})")
    return Report(
        "abtest",
        results=results,
        passed=verdict == CHALLENGER_BETTER,
        model=challenger_model.summary(),
        messages=messages,
    )


def _scorer(model: LoadedModel, data: pd.DataFrame, target: str, metric: str) -> metrics.Scorer:
    from mlops_cli.runtime import labelled

    scorer = labelled.scorer(model, data, target, where=f"the labelled data ({model.ref})")
    if metric in _NEEDS_PROBA and scorer.task == "classifier" and scorer.proba is None:
        raise SchemaMismatch(
            f"{model.ref} has no predict_proba, so {metric} cannot be computed", "use --metric accuracy or f1"
        )
    return scorer


def _model_block(model: LoadedModel, scorer: metrics.Scorer, metric: str) -> dict[str, Any]:
    computed = scorer.compute()
    return {
        "ref": model.ref,
        "name": model.spec.name,
        "version": model.spec.version,
        "sha256": model.spec.sha256,
        "runtime": model.runtime,
        "value": computed[metric],
        **computed,
        "metrics": computed,
    }


def _paired_tests(
    champion: metrics.Scorer, challenger: metrics.Scorer, metric: str, *, alpha: float, n_boot: int, seed: int
) -> dict[str, Any]:
    """Every paired test that applies to `metric`; the primary one gives p_value, ci_low, ci_high and `test`."""
    out: dict[str, Any] = {"mcnemar": None, "delong": None, "paired_t": None, "wilcoxon": None}
    out["bootstrap"] = metrics.paired_bootstrap(
        champion, challenger, metric, n_boot=n_boot, seed=seed, confidence=1 - alpha
    )
    primary = out["bootstrap"]
    out["test"] = "paired_bootstrap"
    if champion.task == "classifier":
        # b: only the champion is right; c: only the challenger is right.
        b = int(((champion.correct == 1) & (challenger.correct == 0)).sum())
        c = int(((champion.correct == 0) & (challenger.correct == 1)).sum())
        out["mcnemar"] = stats.mcnemar(b, c)
        if metric == "accuracy":
            _, low, high = stats.paired_proportion_interval(b, c, champion.n, alpha=alpha)
            primary = {"ci_low": low, "ci_high": high, "p_value": out["mcnemar"]["p_value"]}
            out["test"] = "mcnemar"
        if metric == "roc_auc" and champion.k == 2:
            positive = champion.true_idx == 1
            if 2 <= positive.sum() <= champion.n - 2 and champion.proba is not None and challenger.proba is not None:
                out["delong"] = stats.delong(positive, champion.proba[:, 1], challenger.proba[:, 1], alpha=alpha)
                primary = out["delong"]
                out["test"] = "delong"
    losses = _row_losses(champion, challenger, metric)
    if losses is not None:
        d = losses[1] - losses[0]
        out["paired_t"] = {**stats.paired_t(d, alpha=alpha), "loss": losses[2]}
        out["wilcoxon"] = {**stats.wilcoxon(d), "loss": losses[2]}
        if metric in ("mae", "log_loss"):  # the metric is the mean per-row loss: the t-test is exact for it
            primary = out["paired_t"]
            out["test"] = "paired_t"
    out.update(p_value=primary["p_value"], ci_low=primary["ci_low"], ci_high=primary["ci_high"])
    return out


def _row_losses(
    champion: metrics.Scorer, challenger: metrics.Scorer, metric: str
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Per-row losses of both models for the metrics that are averages of one: |error| for mae, squared error
    for rmse and r2 (both move with the mean squared error), log loss for log_loss."""
    if metric == "mae":
        return np.abs(champion.err), np.abs(challenger.err), "absolute_error"
    if metric in ("rmse", "r2"):
        return champion.row_losses(), challenger.row_losses(), "squared_error"
    if metric == "log_loss" and champion.proba is not None:
        return champion.row_losses(), challenger.row_losses(), "log_loss"
    return None
