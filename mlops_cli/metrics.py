"""Model metrics with bootstrap confidence intervals, and the names users give them (`metric_name`).

`Scorer` precomputes per-row quantities once (correctness, log loss, a sort of the scores for ROC AUC), so every
metric under a set of resampling weights costs O(n) and no re-sort. A bootstrap replicate is a weight vector
(how often each row was drawn), and a *paired* bootstrap gives two scorers the same weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops_cli.errors import SchemaMismatch

CLASSIFIER_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "log_loss")
REGRESSOR_METRICS = ("mae", "rmse", "r2")
LOWER_IS_BETTER = {"log_loss", "mae", "rmse"}


# The names a user may give a metric to compare models by (--metric, a policy's baseline.metric, retrain's gate).
METRIC_ALIASES = {
    "auc": "roc_auc",
    "roc_auc": "roc_auc",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "log_loss": "log_loss",
    "f1": "f1",
    "mae": "mae",
    "rmse": "rmse",
    "r2": "r2",
}
CLASSIFIER_CHOICES = ("roc_auc", "accuracy", "balanced_accuracy", "log_loss", "f1")
REGRESSOR_CHOICES = ("mae", "rmse", "r2")


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def metric_name(metric: str | None, task: str) -> str:
    """The canonical metric name (`auc` → `roc_auc`); defaults to roc_auc for classifiers, rmse for regressors."""
    if metric is None:
        return "roc_auc" if task == "classifier" else "rmse"
    name = METRIC_ALIASES.get(metric, "")
    choices = CLASSIFIER_CHOICES if task == "classifier" else REGRESSOR_CHOICES
    if name not in choices:
        raise SchemaMismatch(
            f"metric {metric!r} does not apply to a {task}",
            f"use one of {', '.join('auc' if c == 'roc_auc' else c for c in choices)}",
        )
    return name


def bootstrap_weights(n: int, n_boot: int, seed: int = 0) -> Iterator[np.ndarray]:
    """`n_boot` vectors of how many times each of `n` rows was drawn (with replacement)."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.bincount(rng.integers(0, n, n), minlength=n).astype(float)


@dataclass
class _Ranked:
    """A score column sorted once into groups of tied values, for weighted ROC AUC (ties count half)."""

    group: np.ndarray  # per row, the index of its tied-score group in ascending score order
    n_groups: int

    @classmethod
    def of(cls, scores: np.ndarray) -> _Ranked:
        _, group = np.unique(scores, return_inverse=True)
        return cls(group=group, n_groups=int(group.max()) + 1 if len(group) else 0)

    def auc(self, positive: np.ndarray, w: np.ndarray) -> float:
        pos = np.bincount(self.group, weights=w * positive, minlength=self.n_groups)
        neg = np.bincount(self.group, weights=w * ~positive, minlength=self.n_groups)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        below = np.cumsum(neg) - neg  # negatives with a strictly lower score
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


class Scorer:
    """All metrics of one model's predictions on one labelled set, under any resampling weights."""

    def __init__(
        self, task: str, y_true: Any, y_pred: Any, proba: np.ndarray | None = None, classes: list[Any] | None = None
    ) -> None:
        self.task = task
        self.n = len(y_true)
        if task == "classifier":
            self.classes = list(classes) if classes is not None else sorted(set(y_true) | set(y_pred))
            index = {c: i for i, c in enumerate(self.classes)}
            true = np.asarray(y_true, dtype=object)
            self.true_idx = np.array([index.get(v, -1) for v in true])
            self.pred_idx = np.array([index.get(v, -1) for v in np.asarray(y_pred, dtype=object)])
            self.correct = (self.true_idx == self.pred_idx).astype(float)
            self.k = len(self.classes)
            self.proba = proba
            if proba is not None:
                eps = np.finfo(proba.dtype).eps
                p_true = np.where(self.true_idx >= 0, proba[np.arange(self.n), np.clip(self.true_idx, 0, None)], 0.0)
                self.row_log_loss = -np.log(np.clip(p_true, eps, 1 - eps))
                score_cols = [1] if self.k == 2 else range(self.k)
                self._ranked = {c: _Ranked.of(proba[:, c]) for c in score_cols}
        else:
            self.y = np.asarray(y_true, dtype=float)
            self.err = np.asarray(y_pred, dtype=float) - self.y

    def row_losses(self) -> np.ndarray:
        """Per-row loss: squared error (regression) or log loss, else 0/1 error (classification)."""
        if self.task != "classifier":
            return self.err**2
        return self.row_log_loss if self.proba is not None else 1.0 - self.correct

    def compute(self, w: np.ndarray | None = None) -> dict[str, float]:
        w = np.ones(self.n) if w is None else w
        total = w.sum()
        if self.task != "classifier":
            sse = (w * self.err**2).sum()
            mean_y = (w * self.y).sum() / total
            sst = (w * (self.y - mean_y) ** 2).sum()
            return {
                "mae": float((w * np.abs(self.err)).sum() / total),
                "rmse": float(np.sqrt(sse / total)),
                "r2": float(1 - sse / sst) if sst > 0 else float("nan"),
            }
        out = {"accuracy": float((w * self.correct).sum() / total)}
        valid_true = self.true_idx >= 0
        tp = np.bincount(self.true_idx[valid_true], weights=(w * self.correct)[valid_true], minlength=self.k)
        support = np.bincount(self.true_idx[valid_true], weights=w[valid_true], minlength=self.k)
        valid_pred = self.pred_idx >= 0
        predicted = np.bincount(self.pred_idx[valid_pred], weights=w[valid_pred], minlength=self.k)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = tp / support
            precision = np.where(predicted > 0, tp / predicted, 0.0)
            f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
        out["balanced_accuracy"] = float(np.nanmean(recall[support > 0])) if (support > 0).any() else float("nan")
        if self.proba is not None:
            out["log_loss"] = float((w * self.row_log_loss).sum() / total)
            aucs = [r.auc(self.true_idx == c, w) for c, r in self._ranked.items()]
            out["roc_auc"] = float(np.mean(aucs))
        for i, label in enumerate(self.classes):
            out[f"precision[{label}]"] = float(precision[i])
            out[f"recall[{label}]"] = float(recall[i])
            out[f"f1[{label}]"] = float(f1[i])
        # One F1 to compare models by: the positive (second) class's for two classes, the macro mean otherwise.
        out["f1"] = float(f1[1]) if self.k == 2 else float(np.mean(f1))
        return out


def with_ci(point: dict[str, float], replicates: list[dict[str, float]], confidence: float = 0.95) -> dict[str, Any]:
    """`{metric: {value, ci_low, ci_high}}` from a point estimate and bootstrap replicates (percentile method)."""
    alpha = (1 - confidence) / 2
    out: dict[str, Any] = {}
    for name, value in point.items():
        draws = np.array([r[name] for r in replicates], dtype=float)
        draws = draws[np.isfinite(draws)]
        low, high = np.quantile(draws, [alpha, 1 - alpha]) if len(draws) else (np.nan, np.nan)
        out[name] = {"value": value, "ci_low": float(low), "ci_high": float(high)}
    return out


def evaluate(scorer: Scorer, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Every metric of `scorer` with a bootstrap confidence interval."""
    replicates = [scorer.compute(w) for w in bootstrap_weights(scorer.n, n_boot, seed)]
    return with_ci(scorer.compute(), replicates, confidence)


def paired_bootstrap(
    baseline: Scorer, candidate: Scorer, metric: str, *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """`candidate - baseline` in `metric` on the same rows, both resampled with the same weights.

    The p-value is two-sided: how often the resampled difference falls on the other side of zero, doubled
    ((count + 1) / (n_boot + 1) so it is never exactly 0).
    """
    if baseline.n != candidate.n:
        raise ValueError("a paired comparison needs the same rows for both models")
    diffs = []
    for w in bootstrap_weights(baseline.n, n_boot, seed):
        diffs.append(candidate.compute(w)[metric] - baseline.compute(w)[metric])
    draws = np.array(diffs)
    draws = draws[np.isfinite(draws)]
    alpha = (1 - confidence) / 2
    point = candidate.compute()[metric] - baseline.compute()[metric]
    low, high = np.quantile(draws, [alpha, 1 - alpha]) if len(draws) else (np.nan, np.nan)
    below, above = (draws <= 0).sum(), (draws >= 0).sum()
    p_value = min(1.0, 2 * (min(below, above) + 1) / (len(draws) + 1)) if len(draws) else float("nan")
    return {
        "difference": float(point),
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": float(p_value),
        "n_boot": n_boot,
    }
