"""The report envelope every command returns and every `--json` / `-o` prints."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_cli import __version__

if TYPE_CHECKING:
    from mlops_cli.observe.alerts import Alert

SCHEMA_VERSION = 1


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Report:
    """What a command found. `results` is the command's own; everything else is the shared envelope.

    `passed` is the verdict: False means exit `failure_code`, 1 (the command ran, its answer is negative) unless the
    answer is itself a registry error (4: `verify` found the registry damaged).
    """

    command: str
    results: dict[str, Any] = field(default_factory=dict)
    passed: bool = True
    inputs: list[dict[str, Any]] = field(default_factory=list)
    model: dict[str, Any] | None = None
    messages: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=utc_now)
    failure_code: int = 1
    alerts: list[Alert] = field(default_factory=list)  # rules this run evaluated beyond its command's (see observe)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else self.failure_code

    def envelope(self) -> dict[str, Any]:
        return envelope(
            self.command,
            status="pass" if self.passed else "fail",
            exit_code=self.exit_code,
            results=self.results,
            inputs=self.inputs,
            model=self.model,
            messages=self.messages,
            created_at=self.created_at,
        )


def envelope(
    command: str,
    *,
    status: str,
    exit_code: int,
    results: dict[str, Any] | None = None,
    inputs: list[dict[str, Any]] | None = None,
    model: dict[str, Any] | None = None,
    messages: list[str] | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """The shared envelope; also used for `status: error` reports when a command fails."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "mlops_version": __version__,
        "created_at": created_at or utc_now(),
        "status": status,
        "exit_code": exit_code,
        "inputs": inputs or [],
        "model": model,
        "results": results or {},
        "messages": messages or [],
    }
