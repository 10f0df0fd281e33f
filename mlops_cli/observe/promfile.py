"""A run's report as node_exporter textfile-collector lines (the Prometheus text exposition format, by hand).

One file holds one job's last run: every metric is a gauge labelled `command` and `model` (the model's name, ""
when the command has none). Each command maps its Report's results to metrics in one function, registered in
MAPPINGS (`mlops monitor` adds its own with `@mapping("monitor")`). The file is written atomically, so the collector
never reads half of it. `mlops_job_last_success_timestamp_seconds` moves only when the command ran (status pass or
fail): an error run carries the previous value over from the existing file, so a failed night shows as staleness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_cli.observe.alerts import SEVERITIES, Alert
from mlops_cli.report import Report

LAST_SUCCESS = "mlops_job_last_success_timestamp_seconds"

HELP = {
    LAST_SUCCESS: "End of the last run that completed (exit 0 or 1), in seconds since the epoch.",
    "mlops_job_last_run_timestamp_seconds": "End of the last run, whatever its outcome, in seconds since the epoch.",
    "mlops_job_exit_code": "Exit code of the last run.",
    "mlops_job_duration_seconds": "Wall time of the last run.",
    "mlops_job_passed": "1 when the last run's status was pass, 0 otherwise.",
    "mlops_job_input_rows": "Rows the last run read.",
    "mlops_job_rejected_rows": "Rows the last run found outside the model's input contract.",
    "mlops_drift_detected": "1 when the dataset verdict is drift.",
    "mlops_drift_share_ratio": "Share of the compared features that drifted.",
    "mlops_drift_feature_effect": "Effect size of the statistic that decided each feature's drift.",
    "mlops_drift_feature_drifted": "1 when the feature drifted.",
    "mlops_prediction_drift_detected": "1 when the model's predictions drifted.",
    "mlops_performance_metric": "Current value of a performance metric on labelled rows.",
    "mlops_alerts_firing": "Alerts firing after the last run, by severity.",
    "mlops_retrain_outcome": "1 for the last retrain run's outcome, 0 for the others.",
    "mlops_abtest_outcome": "1 for the last abtest run's verdict, 0 for the others.",
    "mlops_checklist_items_failed": "Required checklist items that failed.",
    "mlops_monitor_latency_seconds": "Request latency in the monitored window, by quantile.",
    "mlops_monitor_invalid_ratio": "Share of invalid rows in the monitored window.",
    "mlops_monitor_route_share_ratio": "Share of rows per route in the monitored window.",
    "mlops_monitor_dropped_log_rows": "Prediction-log rows the server dropped in the monitored window.",
    "mlops_stream_run_messages": "Messages of the last stream run, by result (in, out, dead_letter, unproducible).",
    "mlops_stream_run_commits_failed": "Offset commits the last stream run saw refused (answered again later).",
}

# Every metric is a gauge but the window's latency quantiles: a summary (the type a `quantile` label belongs to),
# without _sum and _count, which a window's quantiles do not need.
TYPES = {"mlops_monitor_latency_seconds": "summary"}

# The outcomes and verdicts a run can end with: each gets a series (0 or 1), so a query sees the one that is 1.
RETRAIN_OUTCOMES = (
    "no_trigger",
    "check_only",
    "rejected",
    "rejected_by_guardrails",
    "registered",
    "rejected_by_gates",
    "promoted",
    "rolled_back",
    "promotion_failed",
)
ABTEST_VERDICTS = {
    "models": ("challenger_better", "improvement_too_small", "no_significant_difference", "inconclusive",
               "champion_better"),
    "experiment": ("treatment_better", "non_inferior", "no_significant_difference", "non_inferiority_not_shown",
                   "inconclusive", "inferior", "treatment_worse"),
}  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One line of the file: a metric name, its extra labels (beyond command and model) and its value."""

    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


Mapping = Callable[[Report], list[Sample]]
MAPPINGS: dict[str, Mapping] = {}


def mapping(command: str) -> Callable[[Mapping], Mapping]:
    """Register the function that turns `command`'s Report into its own metrics (the job metrics are common)."""

    def register(function: Mapping) -> Mapping:
        MAPPINGS[command] = function
        return function

    return register


@dataclass(frozen=True)
class Run:
    """One run of a command, as the textfile sees it. `report` is None for an error run."""

    command: str
    model: str
    exit_code: int
    started: float  # time.time() at the start
    ended: float
    report: Report | None = None

    @property
    def completed(self) -> bool:
        """The command ran to a verdict (pass or fail), rather than stopping on an error."""
        return self.report is not None


def samples(run: Run, alerts: Iterable[Alert], previous_success: float | None = None) -> list[Sample]:
    """Every metric of one run: the job's own, the command's mapping, and the alerts firing by severity."""
    last_success = run.ended if run.completed else previous_success
    out = [Sample(LAST_SUCCESS, last_success)] if last_success is not None else []
    out += [
        Sample("mlops_job_last_run_timestamp_seconds", run.ended),
        Sample("mlops_job_exit_code", run.exit_code),
        Sample("mlops_job_duration_seconds", max(0.0, run.ended - run.started)),
        Sample("mlops_job_passed", 1.0 if run.report is not None and run.report.passed else 0.0),
    ]
    if run.report is not None and run.command in MAPPINGS:
        out += MAPPINGS[run.command](run.report)
    firing = [a.severity for a in alerts if a.firing]
    out += [Sample("mlops_alerts_firing", firing.count(s), {"severity": s}) for s in SEVERITIES]
    return out


def render(run: Run, lines: Iterable[Sample]) -> str:
    """The exposition format: HELP and TYPE once per metric, its samples together (the format requires it)."""
    grouped: dict[str, list[Sample]] = {}
    for sample in lines:
        if sample.value is not None:
            grouped.setdefault(sample.name, []).append(sample)
    text = []
    for name, group in grouped.items():
        text += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} {TYPES.get(name, 'gauge')}"]
        for sample in group:
            labels = {"command": run.command, "model": run.model, **sample.labels}
            text.append(f"{name}{{{_labels(labels)}}} {_number(sample.value)}")
    return "\n".join(text) + "\n"


def write(path: Path, run: Run, alerts: Iterable[Alert], previous: float | None = None) -> None:
    """Write the run's textfile atomically (a temporary file beside it, renamed: the collector skips it).
    `previous`: the last success read from the file before this run first wrote it (`previous_success`)."""
    from mlops_cli import io

    text = render(run, samples(run, alerts, previous))
    data = text.encode()
    io.write_atomic(path, lambda fh: fh.write(data))


def previous_success(path: Path, run: Run) -> float | None:
    """The last-success value an earlier run of the same command and model left in `path`, if any."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    wanted = f"{LAST_SUCCESS}{{{_labels({'command': run.command, 'model': run.model})}}} "
    for line in text.splitlines():
        if line.startswith(wanted):
            try:
                value = float(line[len(wanted) :].split()[0])
            except (ValueError, IndexError):
                return None
            return value if math.isfinite(value) else None
    return None


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value) if not value.is_integer() or abs(value) >= 1e15 else str(int(value))


def _flag(value: Any) -> float:
    return 1.0 if value else 0.0


# --- per-command mappings ---------------------------------------------------------------------------------------


@mapping("score-batch")
def _score_batch(report: Report) -> list[Sample]:
    r = report.results
    return [Sample("mlops_job_input_rows", r["rows_read"]), Sample("mlops_job_rejected_rows", r["rows_rejected"])]


# The effect size behind each deciding statistic (a p-value test's own statistic is no effect size for chi2).
_EFFECT = {"wasserstein": "wasserstein_norm", "js": "js", "psi": "psi", "ks": "ks", "chi2": "js"}


def feature_effect(row: dict[str, Any]) -> float | None:
    """The effect size of the statistic that decided a drift-report feature row (None when it was not compared)."""
    stats, decided = row.get("statistics") or {}, row.get("decided_by")
    if decided in ("missing_share", "inf_share"):
        change = stats.get(f"{decided}_change")
        return abs(change) if change is not None else None
    value = stats.get(_EFFECT.get(decided or "", ""))
    return float(value) if isinstance(value, int | float) else None


@mapping("drift-report")
def _drift(report: Report) -> list[Sample]:
    summary = report.results["summary"]
    out = [
        Sample("mlops_job_input_rows", summary["rows"]["current"]),
        Sample("mlops_drift_detected", _flag(summary["verdict"] == "drift")),
        Sample("mlops_drift_share_ratio", summary["drifted_share"]),
    ]
    for row in report.results["features"]:
        if row.get("drifted") is None:
            continue  # not compared: no value to report
        effect = feature_effect(row)
        if effect is not None:
            out.append(Sample("mlops_drift_feature_effect", effect, {"feature": row["name"]}))
        out.append(Sample("mlops_drift_feature_drifted", _flag(row["drifted"]), {"feature": row["name"]}))
    prediction = summary.get("prediction_drift")
    if prediction and prediction.get("drifted") is not None:
        out.append(Sample("mlops_prediction_drift_detected", _flag(prediction["drifted"])))
    out += performance_samples(summary.get("performance"))
    return out


def performance_samples(performance: dict[str, Any] | None) -> list[Sample]:
    """`mlops_performance_metric` from a drift-report style performance block ({"metrics": {name: {"current"}}})."""
    metrics = (performance or {}).get("metrics") or {}
    return [
        Sample("mlops_performance_metric", m["current"], {"metric": name})
        for name, m in sorted(metrics.items())
        if isinstance(m, dict) and isinstance(m.get("current"), int | float)
    ]


@mapping("checklist")
def _checklist(report: Report) -> list[Sample]:
    return [Sample("mlops_checklist_items_failed", len(report.results["failed"]))]


@mapping("abtest")
def _abtest(report: Report) -> list[Sample]:
    verdict = report.results.get("verdict")
    known = ABTEST_VERDICTS.get(report.results.get("mode", "models"), ())
    verdicts = known if verdict in known else (*known, verdict)
    return [Sample("mlops_abtest_outcome", _flag(v == verdict), {"verdict": str(v)}) for v in verdicts if v]


@mapping("retrain")
def _retrain(report: Report) -> list[Sample]:
    outcome = (report.results.get("job") or {}).get("decision")
    outcomes = RETRAIN_OUTCOMES if outcome in RETRAIN_OUTCOMES or outcome is None else (*RETRAIN_OUTCOMES, outcome)
    return [Sample("mlops_retrain_outcome", _flag(o == outcome), {"outcome": o}) for o in outcomes]


@mapping("monitor")
def _monitor(report: Report) -> list[Sample]:
    r = report.results
    service, window = r["service"], r["window"]
    out = [
        Sample("mlops_job_input_rows", window["rows"]),
        Sample("mlops_job_rejected_rows", service.get("invalid_rows")),
        Sample("mlops_monitor_invalid_ratio", service.get("invalid_share")),
        Sample("mlops_monitor_dropped_log_rows", window["dropped_log_rows"]),
    ]
    for key, value in (service.get("latency_seconds") or {}).items():
        out.append(Sample("mlops_monitor_latency_seconds", value, {"quantile": str(int(key[1:]) / 100)}))
    for route, share in (service.get("route_shares") or {}).items():
        out.append(Sample("mlops_monitor_route_share_ratio", share, {"route": route}))
    if r["drift"]:  # the window's drift, as drift-report's own metrics
        out += [s for s in _drift(Report("drift-report", results=r["drift"])) if s.name != "mlops_job_input_rows"]
    return out


@mapping("stream")
def _stream(report: Report) -> list[Sample]:
    r = report.results
    results = {
        "in": "messages_in",
        "out": "messages_out",
        "dead_letter": "dead_lettered",
        "unproducible": "unproducible",
    }
    return [
        Sample("mlops_job_input_rows", r["messages_in"]),
        Sample("mlops_job_rejected_rows", r["dead_lettered"]),
        *(Sample("mlops_stream_run_messages", r[key], {"result": label}) for label, key in results.items()),
        Sample("mlops_stream_run_commits_failed", r["commits_failed"]),
    ]
