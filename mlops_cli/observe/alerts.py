"""Alerts: what a run evaluated, and the state that deduplicates them across runs.

A command evaluates its rules on every run and lists each one, firing or not (that is how "resolved" is known).
`rules(command, report)` holds each command's rules, derived from its verdict; a Report may carry more
(`Report.alerts`, as `mlops monitor` does). An error run evaluates `job_failed` firing; any completed run evaluates
it resolved.

Deduplication key: (model, command, name). The state lives in the registry, beside what it is about:
    <root>/<name>/alerts.json         a registered model's alerts (lock: <root>/<name>/.alerts.lock)
    <root>/.alerts/alerts.json        alerts of runs without a registered model (lock: <root>/.alerts/.lock)
Neither is a model version or an event, so `mlops verify` and `models list` ignore them. A receiver hears of an
alert when it starts firing and once more when it resolves, not on every run in between; an alert whose delivery
failed is sent again by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_cli.report import Report

SEVERITIES = ("critical", "warning", "info")
STATE = "alerts.json"
STATE_VERSION = 1
MODELLESS = ".alerts"  # the folder, at the registry's root, for runs without a registered model


@dataclass(frozen=True)
class Alert:
    name: str  # rule id, e.g. "dataset_drift", "latency_p99", "job_failed"
    severity: str  # "critical" | "warning" | "info"
    firing: bool  # every rule a run EVALUATED appears, firing or not: that is how "resolved" is known
    summary: str  # one line for a human; never input values or URLs
    value: float | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert {self.name}: severity {self.severity!r} is not one of {SEVERITIES}")


_EXIT_MEANING = {3: "input error", 4: "registry error", 5: "internal error", 130: "interrupted", 143: "terminated"}


def job_failed(command: str, exit_code: int | None = None) -> Alert:
    """`job_failed`, firing for an error run's exit code (None: the run completed). The summary names the kind of
    error only: an error's message may quote paths or values, and the alert goes to a third party."""
    if exit_code is None:
        return Alert("job_failed", "critical", False, f"mlops {command} ran to completion")
    meaning = _EXIT_MEANING.get(exit_code, "error")
    return Alert("job_failed", "critical", True, f"mlops {command} failed: {meaning} (exit {exit_code})")


def evaluated(command: str, report: Report | None, exit_code: int) -> list[Alert]:
    """Every rule this run evaluated: the command's rules from its verdict, the report's own, and job_failed.
    A rule the report carries replaces the command's rule of the same name."""
    if report is None:
        return [job_failed(command, exit_code)]
    own = {a.name: a for a in report.alerts}
    derived = [a for a in rules(command, report) if a.name not in own]
    return [*derived, *own.values(), *([job_failed(command)] if "job_failed" not in own else [])]


def rules(command: str, report: Report) -> list[Alert]:
    """The alerts a command's verdict implies (none for a command without rules)."""
    r = report.results
    if command == "drift-report":
        summary = r["summary"]
        drift = summary["verdict"] == "drift"
        share = summary["drifted_share"]
        out = [
            Alert(
                "dataset_drift",
                "warning",
                drift,
                f"{summary['drifted']} of {summary['tested']} features drifted ({share:.0%}; "
                f"dataset drift at {summary['drift_share']:.0%})",
                share,
                summary["drift_share"],
            )
        ]
        prediction = summary.get("prediction_drift")
        if prediction and prediction.get("drifted") is not None:
            out.append(
                Alert(
                    "prediction_drift",
                    "warning",
                    bool(prediction["drifted"]),
                    f"the predictions {'drifted' if prediction['drifted'] else 'did not drift'} "
                    f"({prediction.get('decided_by')})",
                )
            )
        return out
    if command in ("checklist", "smoke-test"):
        failed = list(r.get("failed") or [])
        what = "required checklist items" if command == "checklist" else "smoke-test steps"
        summary = f"{len(failed)} {what} failed: {', '.join(failed)}" if failed else f"every {what[:-1]} passed"
        return [Alert(f"{command.replace('-', '_')}_failed", "critical", bool(failed), summary, len(failed), 0)]
    if command == "abtest":
        verdict = r.get("verdict")
        return [Alert("abtest_no_winner", "info", not report.passed, f"abtest verdict: {verdict}")]
    if command == "retrain":
        decision = (r.get("job") or {}).get("decision")
        return [
            Alert(
                "retrain_rejected",
                "warning",
                decision in ("rejected", "rejected_by_guardrails", "rejected_by_gates"),
                f"retrain outcome: {decision}",
            ),
            Alert(
                "retrain_rolled_back",
                "critical",
                decision in ("rolled_back", "promotion_failed"),
                f"retrain outcome: {decision}",
            ),
        ]
    if command == "verify":
        problems = int(r.get("problems") or 0)
        return [Alert("registry_damaged", "critical", problems > 0, f"mlops verify found {problems} problems")]
    return []


# --- deduplication state ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    """A change a receiver must hear of: an alert that started firing, or one that resolved."""

    alert: Alert
    model: str
    command: str
    status: str  # "firing" | "resolved"
    starts_at: str
    ends_at: str | None  # when it resolved

    @property
    def labels(self) -> dict[str, str]:
        return {
            "alertname": self.alert.name,
            "severity": self.alert.severity,
            "command": self.command,
            "model": self.model,
        }

    @property
    def fingerprint(self) -> str:
        """Stable per (model, command, name) and severity, as Alertmanager's is per label set: 16 hex digits."""
        return hashlib.sha256(json.dumps(self.labels, sort_keys=True).encode()).hexdigest()[:16]


def _key(model: str, command: str, name: str) -> str:
    return json.dumps([model, command, name])


class AlertState:
    """The deduplication state of one store (a model's, or the model-less one), read and written under its lock."""

    def __init__(self, path: Path, records: dict[str, dict[str, Any]]) -> None:
        self.path = path
        self.records = records

    def changes(self, model: str, command: str, alerts: list[Alert], now: str) -> list[Notice]:
        """Record what this run evaluated; return the notices receivers have not had yet."""
        notices = []
        for alert in alerts:
            key = _key(model, command, alert.name)
            old = self.records.get(key) or {}
            since = old.get("since") if old.get("firing") else None
            since = (since or now) if alert.firing else old.get("since")
            self.records[key] = {
                "model": model,
                "command": command,
                "name": alert.name,
                "severity": alert.severity,
                "firing": alert.firing,
                "since": since,
                "notified": old.get("notified"),
                "summary": alert.summary,
                "updated_at": now,
            }
            if alert.firing and old.get("notified") != "firing":
                notices.append(Notice(alert, model, command, "firing", since or now, None))
            elif not alert.firing and old.get("notified") == "firing":
                notices.append(Notice(alert, model, command, "resolved", since or now, now))
        return notices

    def delivered(self, notices: list[Notice]) -> None:
        """The receiver has these: the next run will not send them again."""
        for notice in notices:
            self.records[_key(notice.model, notice.command, notice.alert.name)]["notified"] = notice.status

    def save(self) -> None:
        from mlops_cli import io

        io.write_json(
            self.path, {"schema_version": STATE_VERSION, "alerts": sorted(self.records.values(), key=_sort_key)}
        )


def _sort_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return record["model"], record["command"], record["name"]


@contextlib.contextmanager
def state(root: Path, model: str) -> Iterator[AlertState]:
    """The deduplication state for `model`'s alerts (the model-less store when no such model is registered), locked
    for the whole block and saved at its end. A damaged state file is started afresh: at worst an alert is sent
    once more."""
    from mlops_cli.registry import lock_file

    registered = bool(model) and (root / model / "versions").is_dir()
    folder = root / model if registered else root / MODELLESS
    folder.mkdir(parents=True, exist_ok=True)
    # A registered model's alerts lock beside its registry lock (Registry.lock's convention), not on it.
    what = str(folder) if registered else f"the alert state in {folder}"
    with lock_file(folder / (".alerts.lock" if registered else ".lock"), what):
        path = folder / STATE
        store = AlertState(path, _read(path))
        yield store
        store.save()


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {_key(r["model"], r["command"], r["name"]): r for r in data["alerts"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
