"""What the smoke test and the checklist share: the statuses, and `Steps`, which runs and records each step or item."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mlops_cli.errors import MlopsError

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"


def error_line(exc: BaseException) -> str:
    """What a model raised, in one short line of evidence."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


@dataclass
class Steps:
    """Collects steps/items: each a dict with id, status, evidence, duration_s (and, for the checklist, more)."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, step_id: str, **extra: Any) -> Iterator[dict[str, Any]]:
        entry: dict[str, Any] = {"id": step_id, "status": PASS, "evidence": {}, **extra}
        start = time.perf_counter()
        try:
            yield entry
        except (MlopsError, KeyboardInterrupt):  # our errors, Ctrl-C and SIGTERM (Interrupted) stop the command
            raise
        except BaseException as exc:  # the model under test raised, or called sys.exit(): that is the finding
            entry["status"] = FAIL
            entry["evidence"]["error"] = error_line(exc)
        finally:
            entry["duration_s"] = round(time.perf_counter() - start, 4)
            self.entries.append(entry)

    def skip(self, step_id: str, reason: str) -> None:
        self.entries.append({"id": step_id, "status": SKIP, "evidence": {"reason": reason}, "duration_s": 0.0})
