"""The checklist's policy: its items, which are required and which advisory, the budgets and the baseline rule.

`DEFAULT_POLICY`, overridden by a TOML file (`load_policy`) whose every key is checked: a typo must not loosen the gate.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from mlops_cli import io
from mlops_cli.errors import InputError, MlopsError

ITEMS: dict[str, tuple[str, str]] = {
    # id: (section, what it checks)
    "test_metrics": ("model validation", "test metrics recorded with confidence intervals"),
    "baseline_comparison": ("model validation", "not worse than the baseline (paired bootstrap on the primary metric)"),
    "per_class_metrics": ("model validation", "per-class precision/recall/F1 recorded (classifiers)"),
    "edge_cases": ("model validation", "schema edge cases handled (smoke step edge_cases)"),
    "artifact_size": ("model validation", "artifact size under the budget"),
    "latency": ("model validation", "single-row p99 latency under the budget (median of rounds)"),
    "onnx_agreement": ("model validation", "the ONNX file's recorded agreement with the artifact within tolerance"),
    "input_schema": ("data validation", "input schema recorded with types and ranges/categories"),
    "missing_values": ("data validation", "missing-value behaviour known (shares and input contract)"),
    "distribution_stats": ("data validation", "distribution statistics recorded (reference profile)"),
    "outlier_thresholds": ("data validation", "outlier thresholds recorded (ranges and 1%/99% quantiles)"),
    "serialization": ("code quality", "serialization round-trip gives identical predictions"),
    "reproducibility": ("code quality", "deterministic predictions and lineage (training data, git) recorded"),
    "library_versions": ("code quality", "library versions recorded and matching this environment"),
    "smoke_test": ("code quality", "the smoke steps without an item of their own pass"),
    "monitoring_ready": ("monitoring readiness", "reference profile and reference predictions stored"),
    "rollback_ready": ("rollback readiness", "a previous production version exists, verifies and loads"),
}

# Smoke steps judged by an item of their own, so that a policy making that item advisory is honoured; the
# `smoke_test` item judges the others.
OWN_ITEM = {
    "determinism": "reproducibility",
    "serialization": "serialization",
    "latency": "latency",
    "edge_cases": "edge_cases",
}

DEFAULT_POLICY: dict[str, Any] = {
    "required": [i for i in ITEMS if i != "rollback_ready"],
    "advisory": ["rollback_ready"],
    "budgets": {
        "latency_p99_ms": 50.0,
        "artifact_mb": 500.0,
        "onnx_max_abs_difference": 1e-5,
        "onnx_label_agreement": 1.0,
    },
    "baseline": {"rule": "not_worse", "margin": 0.01, "metric": None, "alias": "production"},
}


def load_policy(path: Path | None) -> dict[str, Any]:
    """The default policy, overridden by a TOML file ([items] required/advisory, [budgets], [baseline]).

    Anything the file says that is not understood is an error (exit 3): a typo must not loosen the gate."""
    from mlops_cli import metrics, refs

    policy = copy.deepcopy(DEFAULT_POLICY)
    if path is None:
        return policy
    loaded = io.read_toml(path, "fix the policy file")

    def bad(what: str, hint: str = "fix the policy file; the README's checklist section lists every key") -> InputError:
        return InputError(f"{path}: {what}", hint)

    unknown = sorted(set(loaded) - {"items", "budgets", "baseline"})
    if unknown:
        raise bad(f"unknown keys or tables {unknown}", "a policy has the tables [items], [budgets] and [baseline]")
    for table, value in loaded.items():
        if not isinstance(value, dict):
            raise bad(f"{table} must be a table ([{table}]), got {value!r}")
    items = loaded.get("items", {})
    extra = sorted(set(items) - {"required", "advisory"})
    if extra:
        raise bad(f"unknown [items] keys {extra}", "known: required, advisory")
    if len(items) > 1:
        raise bad("[items] gives both required and advisory", "give one list; every other item is the other kind")
    for key, names in items.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise bad(f"items.{key} must be a list of item names, got {names!r}")
        unknown = sorted(set(names) - set(ITEMS))
        if unknown:
            raise bad(f"unknown checklist items {unknown}", f"known items: {', '.join(ITEMS)}")
        other = "advisory" if key == "required" else "required"
        policy[key] = [i for i in ITEMS if i in names]
        policy[other] = [i for i in ITEMS if i not in names]
    for section in ("budgets", "baseline"):
        extra = sorted(set(loaded.get(section, {})) - set(DEFAULT_POLICY[section]))
        if extra:
            raise bad(f"unknown [{section}] keys {extra}", f"known: {', '.join(DEFAULT_POLICY[section])}")
        policy[section].update(loaded.get(section, {}))
    baseline = policy["baseline"]
    if baseline["rule"] not in ("not_worse", "better"):
        raise bad(f"baseline.rule must be 'not_worse' or 'better', got {baseline['rule']!r}")
    numbers = {f"budgets.{k}": v for k, v in policy["budgets"].items()} | {"baseline.margin": baseline["margin"]}
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise bad(f"{key} must be a finite number >= 0, got {value!r}")
        if key.startswith("budgets.") and value == 0:
            raise bad(f"{key} must be above 0 (a zero budget fails every model), got {value!r}")
    if policy["budgets"]["onnx_label_agreement"] > 1:
        raise bad("budgets.onnx_label_agreement is a share of rows, at most 1")
    if baseline["metric"] is not None and baseline["metric"] not in metrics.METRIC_ALIASES:
        raise bad(
            f"baseline.metric {baseline['metric']!r} is not a metric", f"use one of {', '.join(metrics.METRIC_ALIASES)}"
        )
    try:
        refs.validate_label(baseline["alias"] if isinstance(baseline["alias"], str) else "", "alias")
    except MlopsError as exc:  # an invalid name is a registry error elsewhere; here it is a value in a file
        raise bad(f"baseline.alias {baseline['alias']!r} is not a valid alias ({exc.message})") from exc
    return policy
