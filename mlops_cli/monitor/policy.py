"""The monitor's alert rules: documented defaults, overridden by a TOML policy whose every key is checked (a typo
must not silence an alert), and their evaluation on a monitor's results.

```toml
[rules.latency_p99]      # the window's p99 request latency, seconds
threshold = 0.25
severity = "critical"
[rules.metric_drop]
metrics = ["roc_auc"]   # default: every metric recorded at registration
[rules.min_volume]
enabled = false
```
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from mlops_cli import io
from mlops_cli.errors import InputError
from mlops_cli.observe.alerts import SEVERITIES, Alert

# rule: its settings. `threshold` means, per rule: latency_p99 seconds; invalid_share and dataset_drift a share of
# rows / of features; metric_drop the drop in the metric's own unit; min_volume rows; dropped_log_rows rows.
DEFAULT_POLICY: dict[str, dict[str, Any]] = {
    "latency_p99": {"enabled": True, "severity": "warning", "threshold": 0.25},
    "invalid_share": {"enabled": True, "severity": "warning", "threshold": 0.05},
    "dataset_drift": {"enabled": True, "severity": "warning", "threshold": 0.5},
    "prediction_drift": {"enabled": True, "severity": "warning"},
    "metric_drop": {"enabled": True, "severity": "critical", "threshold": 0.02, "metrics": []},
    "min_volume": {"enabled": True, "severity": "warning", "threshold": 100},
    "dropped_log_rows": {"enabled": True, "severity": "warning", "threshold": 0},
}


def load_policy(path: Path | None) -> dict[str, dict[str, Any]]:
    """The default rules, overridden by `[rules.<name>]` tables of a TOML file. Unknown keys are exit 3."""
    policy = copy.deepcopy(DEFAULT_POLICY)
    if path is None:
        return policy
    loaded = io.read_toml(path, "fix the policy file")

    def bad(what: str) -> InputError:
        return InputError(f"{path}: {what}", "fix the policy file; the README's monitor section lists every key")

    if set(loaded) - {"rules"} or not isinstance(loaded.get("rules", {}), dict):
        raise bad("a monitor policy has one table, [rules.<name>]")
    for name, settings in loaded.get("rules", {}).items():
        if name not in policy:
            raise bad(f"unknown rule {name!r} (known: {', '.join(policy)})")
        if not isinstance(settings, dict):
            raise bad(f"rules.{name} must be a table")
        unknown = sorted(set(settings) - set(policy[name]))
        if unknown:
            raise bad(f"unknown keys {unknown} in [rules.{name}] (known: {', '.join(policy[name])})")
        policy[name].update(settings)
    for name, rule in policy.items():
        if not isinstance(rule["enabled"], bool):
            raise bad(f"rules.{name}.enabled must be true or false")
        if rule["severity"] not in SEVERITIES:
            raise bad(f"rules.{name}.severity must be one of {', '.join(SEVERITIES)}, got {rule['severity']!r}")
        if "threshold" in rule:
            value = rule["threshold"]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise bad(f"rules.{name}.threshold must be a finite number >= 0, got {value!r}")
        if name in ("invalid_share", "dataset_drift") and rule["threshold"] > 1:
            raise bad(f"rules.{name}.threshold is a share, at most 1")
    metrics = policy["metric_drop"]["metrics"]
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise bad("rules.metric_drop.metrics must be a list of metric names")
    return policy


def evaluate(policy: dict[str, dict[str, Any]], results: dict[str, Any]) -> list[Alert]:
    """Every enabled rule that the window's results let us judge, firing or not (a rule that cannot be judged, such
    as latency on a file without it, is left out: its last state stands)."""
    service, drift = results["service"], results.get("drift")
    summary = drift["summary"] if drift else None
    out: list[Alert] = []

    def judge(name: str, firing: bool, summary_line: str, value: float | None, threshold: float | None) -> None:
        out.append(Alert(name, policy[name]["severity"], bool(firing), summary_line, value, threshold))

    rules = {name: rule for name, rule in policy.items() if rule["enabled"]}
    if "min_volume" in rules:
        limit = rules["min_volume"]["threshold"]
        judge(
            "min_volume",
            service["rows"] < limit,
            f"{service['rows']:,} rows in the window (minimum {limit:,})",
            service["rows"],
            limit,
        )
    if "latency_p99" in rules and service.get("latency_seconds"):
        p99, limit = service["latency_seconds"]["p99"], rules["latency_p99"]["threshold"]
        judge("latency_p99", p99 > limit, f"p99 latency {p99 * 1000:.1f} ms (limit {limit * 1000:g} ms)", p99, limit)
    if "invalid_share" in rules and service.get("invalid_share") is not None:
        share, limit = service["invalid_share"], rules["invalid_share"]["threshold"]
        judge(
            "invalid_share",
            share > limit,
            f"{share:.2%} of rows break the input contract (limit {limit:.2%})",
            share,
            limit,
        )
    if "dropped_log_rows" in rules and results["window"].get("dropped_log_rows") is not None:
        dropped, limit = results["window"]["dropped_log_rows"], rules["dropped_log_rows"]["threshold"]
        judge(
            "dropped_log_rows",
            dropped > limit,
            f"{dropped:,} prediction-log rows dropped by the server",
            dropped,
            limit,
        )
    if summary is not None and "dataset_drift" in rules:
        share = summary["drifted_share"]
        judge(
            "dataset_drift",
            summary["verdict"] == "drift",
            f"{summary['drifted']} of {summary['tested']} features drifted ({share:.0%}; alert at "
            f"{summary['drift_share']:.0%})"
            + (f": {', '.join(summary['drifted_features'][:5])}" if summary["drifted"] else ""),
            share,
            summary["drift_share"],
        )
    pred = summary.get("prediction_drift") if summary else None
    if pred is not None and pred["drifted"] is not None and "prediction_drift" in rules:
        judge(
            "prediction_drift",
            pred["drifted"],
            f"predictions ({pred['name']}) "
            + ("drifted" if pred["drifted"] else "did not drift")
            + f" (decided by {pred['decided_by']})",
            None,
            None,
        )
    perf = summary.get("performance") if summary else None
    if perf is not None and "metric_drop" in rules:
        rule = rules["metric_drop"]
        names = rule["metrics"] or list(perf["metrics"])
        drops = {n: m for n, m in perf["metrics"].items() if n in names and "drop" in m}
        # A drop that matters: larger than the threshold, and real (its 95% CI lies above zero).
        worst = [n for n, m in drops.items() if m["drop"] > rule["threshold"] and m["drop_ci"][0] > 0]
        if drops:
            largest = max(drops, key=lambda n: drops[n]["drop"])
            shown = worst[0] if worst else largest
            m = drops[shown]
            judge(
                "metric_drop",
                bool(worst),
                f"{shown} {m['recorded']:.4g} → {m['current']:.4g} on {perf['rows']:,} labelled rows "
                f"(drop {m['drop']:.4g}, 95% CI [{m['drop_ci'][0]:.4g}, {m['drop_ci'][1]:.4g}])",
                m["drop"],
                rule["threshold"],
            )
    return out
