"""`mlops monitor`: a window of the prediction log judged against the model version's stored reference.

log: the window, the labels joined to it, the service levels; policy: the alert rules and their evaluation.
Drift, prediction drift and performance are drift-report's own (`drift.drift_for_model`): the same statistics and
decision rule. Prediction drift compares the logged answers of the monitored version, without re-scoring.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli import io
from mlops_cli.drift import DriftOptions, drift_for_model
from mlops_cli.monitor.log import Labels, Window, join_labels, read_window, service_levels, window
from mlops_cli.monitor.policy import DEFAULT_POLICY, evaluate, load_policy
from mlops_cli.report import Report
from mlops_cli.runtime import LoadOptions, proba_column
from mlops_cli.scoring import REASON_COLUMN

if TYPE_CHECKING:
    from mlops_cli.registry import Registry

__all__ = ["DEFAULT_POLICY", "Labels", "Window", "load_policy", "monitor", "window"]


def monitor(
    registry: Registry,
    ref: str,
    logs: Path,
    win: Window,
    *,
    labels: Labels | None = None,
    policy: dict[str, dict[str, Any]] | None = None,
    load: LoadOptions | None = None,
    fmt: str | None = None,
    fail_on_alert: bool = False,
) -> Report:
    policy = policy or load_policy(None)
    version = registry.resolve(ref)
    frame, source, messages = read_window(logs, win, fmt)
    if "model_name" in frame.columns:
        others = frame["model_name"].notna() & (frame["model_name"] != version.name)
        if others.any():  # another model's rows in the same folder: not this model's traffic
            messages.append(f"{int(others.sum()):,} rows of other models left out")
            frame = frame[~others].reset_index(drop=True)
    label_info, inputs = None, [{"path": str(logs), "files": source["files"], "rows": len(frame)}]
    if labels is not None:
        digest = io.Background(io.fingerprint, labels.path)  # the labels' sha256 while they are joined
        frame, label_info = join_labels(frame, labels, fmt)
        inputs.append(digest.result())
    results: dict[str, Any] = {
        "window": {**win.as_dict(), **source, "rows": len(frame)},
        "service": service_levels(frame),
        "labels": label_info,
        "drift": None,
    }
    if frame.empty:
        messages.append("no rows in the window: no drift or performance to judge")
        model_block = version.summary()
    else:
        options = DriftOptions(
            target=labels.column if labels else None,
            prediction_column=_prediction_column(version.manifest, frame),
            drift_share=policy["dataset_drift"]["threshold"],
            load=load or LoadOptions(),
        )
        drifted = drift_for_model(registry, version, frame, options=options, answered=_answered(frame, version.version))
        results["drift"] = drifted.results
        messages += drifted.messages
        model_block = drifted.model or version.summary()
    alerts = evaluate(policy, results)
    results["alerts"] = [dataclasses.asdict(a) for a in alerts]
    results["policy"] = policy
    firing = [a for a in alerts if a.firing]
    return Report(
        "monitor",
        alerts=alerts,  # delivered (deduplicated) with every command's by observe, when a webhook is set
        results=results,
        model=model_block,
        inputs=inputs,  # the log is a live folder: its files and rows identify the window, not a hash
        messages=messages,
        passed=not (fail_on_alert and firing),
    )


def _prediction_column(manifest: dict[str, Any], frame: Any) -> str:
    """The logged column the stored reference predictions compare with: P(positive class) for a binary
    classifier, else the prediction (drift-report's own choice)."""
    classes = manifest.get("classes") or []
    if manifest.get("task") == "classifier" and len(classes) == 2 and proba_column(classes[-1]) in frame.columns:
        return proba_column(classes[-1])
    return "prediction"


def _answered(frame: Any, version: str) -> Any:
    """The rows this version answered (a hot switch or a challenger split leaves others' rows in the window)."""
    mask = frame["prediction"].notna() if "prediction" in frame.columns else None
    if REASON_COLUMN in frame.columns:
        mask = frame[REASON_COLUMN].isna() if mask is None else mask & frame[REASON_COLUMN].isna()
    if "model_version" in frame.columns:
        own = frame["model_version"].astype(str) == str(version)
        mask = own if mask is None else mask & own
    return frame if mask is None else frame[mask.to_numpy()]
