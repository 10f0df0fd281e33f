"""One run of a command, told to the outside world: its alerts delivered (deduplicated) and its textfile written.

The CLI calls `deliver` and `write_metrics` from its one report writer and its one error path; nothing here raises
for a failed delivery: it comes back as a message for the report, and an event in the model's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlops_cli.observe import alerts as alerts_lib
from mlops_cli.observe import promfile
from mlops_cli.observe import webhook as webhook_lib
from mlops_cli.observe.alerts import Alert
from mlops_cli.observe.promfile import Run
from mlops_cli.report import utc_now


@dataclass(frozen=True)
class Sinks:
    """Where a run's observations go (from --prom-file, --alert-webhook, --alert-format, --alert-timeout)."""

    prom_file: Path | None = None
    webhook: str | None = None
    format: str = "slack"
    policy: webhook_lib.Policy = webhook_lib.Policy()


def deliver(root: Path, run: Run, alerts: list[Alert], sinks: Sinks) -> list[str]:
    """Send the notices this run's alerts imply, and record them in the registry's dedup state. Returns the
    messages for the report (what failed); never raises for a receiver's failure."""
    if sinks.webhook is None or not alerts:
        return []
    from mlops_cli.errors import MlopsError

    try:
        with alerts_lib.state(root, run.model) as store:
            notices = store.changes(run.model, run.command, alerts, utc_now())
            if not notices:
                return []
            result = webhook_lib.post(sinks.webhook, webhook_lib.payload(sinks.format, notices), sinks.policy)
            if result.ok:
                store.delivered(notices)
                return []
    except (MlopsError, OSError) as exc:  # the state cannot be kept (a read-only registry, a lock held)
        detail = exc.message if isinstance(exc, MlopsError) else exc.strerror or type(exc).__name__
        return [f"alerts not delivered: their state in the registry cannot be kept ({detail})"]
    except Exception as exc:  # noqa: BLE001 (a URL the socket layer refuses, say: delivery never changes the exit)
        return [f"alerts not delivered ({type(exc).__name__}); the next run sends them again"]
    names = ", ".join(f"{n.alert.name} ({n.status})" for n in notices)
    message = (
        f"alert delivery failed after {result.attempts} attempt{'s' if result.attempts != 1 else ''} in "
        f"{result.seconds:.1f}s ({result.error}): {names}; the next run sends them again"
    )
    _log_failure(root, run.model, run.command, notices, result)
    return [message]


def _log_failure(
    root: Path, model: str, command: str, notices: list[alerts_lib.Notice], result: webhook_lib.Result
) -> None:
    """An event in the model's log (when the model is registered): the failure outlives the report."""
    import contextlib

    from mlops_cli.errors import MlopsError
    from mlops_cli.registry import Registry

    if not model or not (root / model / "versions").is_dir():
        return
    event = {
        "event": "alert_delivery_failed",
        "command": command,
        "alerts": [{"name": n.alert.name, "status": n.status, "severity": n.alert.severity} for n in notices],
        "attempts": result.attempts,
        "status": result.status,
        "error": result.error,
    }
    with contextlib.suppress(MlopsError, OSError):  # a log we cannot write must not turn the run into an error
        Registry(root).record_event(model, event)


def write_metrics(path: Path, run: Run, alerts: list[Alert], previous: float | None) -> None:
    """The run's node_exporter textfile (OSError if it cannot be written)."""
    promfile.write(path, run, alerts, previous)
