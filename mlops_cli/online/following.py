"""A served model reference that follows its registry alias: the hot switch.

`models promote`, `rollback` and `retrain` move an alias by rewriting `aliases.json`. A service polls that small file
(and re-checks at once on SIGHUP). When the alias names another version, the new version is loaded, hash-verified
and warmed up on rows of its stored sample, off the request path, and only then swapped in by one reference
assignment. A batch takes `current` once, so it never mixes versions and the swap never waits for it; requests
already running finish on the old model. If the new version fails to load or verify, the old one keeps serving and
the failure is kept (`error`) for the readiness details, a metric and the registry's event log.

`NAME` (latest) and `NAME:VERSION` are resolved once, at start: only an alias is a pointer someone moves on purpose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import MlopsError
from mlops_cli.refs import ModelRef, parse_ref

if TYPE_CHECKING:
    from mlops_cli.registry import Registry
    from mlops_cli.runtime import LoadedModel, LoadOptions

WARM_ROWS = 64  # rows of the stored sample scored before a version takes traffic
WARM_ROUNDS = 3


@dataclass(frozen=True)
class Current:
    model: LoadedModel
    loaded_at: float  # Unix time the version finished loading and warming up

    @property
    def version(self) -> str:
        return self.model.version.version if self.model.version is not None else ""


Listener = Callable[["Followed", str, "Current | None", "str | None"], None]  # (followed, result, new, error)


class Followed:
    """One reference a service answers with (champion, challenger or shadow)."""

    def __init__(
        self,
        registry: Registry,
        ref: str,
        role: str,
        load: LoadOptions,
        *,
        on_switch: Listener | None = None,
        record_failures: bool = True,
    ) -> None:
        self.registry = registry
        self.ref: ModelRef = parse_ref(ref)
        self.role = role
        self.load_options = load
        self.on_switch = on_switch
        self.record_failures = record_failures  # one process of a server's workers writes the registry event
        self.current: Current | None = None
        self.error: str | None = None  # the last failed switch, while the alias still names that version
        self._failed_target: str | None = None

    @property
    def follows(self) -> bool:
        return self.ref.alias is not None

    def start(self) -> Current:
        """Load the version the reference names now. Errors propagate: a service does not start without it."""
        from mlops_cli.runtime import LoadedModel

        current = Current(_warm(LoadedModel.load(self.registry, str(self.ref), self.load_options)), time.time())
        self.current = current
        return current

    def target(self) -> str | None:
        """The version the alias names now (None: not an alias, or the alias is gone)."""
        if self.ref.alias is None:
            return None
        return self.registry.aliases(self.ref.name).get(self.ref.alias)

    def check(self, *, force: bool = False) -> str | None:
        """Re-read the alias; switch if it moved. Returns "switched", "failed" or None (nothing to do). A version
        that failed is not tried again until the alias moves or `force` (SIGHUP) says so."""
        try:
            target = self.target()
        except (MlopsError, OSError) as exc:
            return self._failed(None, f"could not read the aliases of {self.ref.name}: {_text(exc)}")
        current = self.current
        if target is None or current is None or target == current.version:
            if target is not None and current is not None and target == current.version:
                self.error, self._failed_target = None, None  # the alias came back to what is served
            return None
        if target == self._failed_target and not force:
            return None
        from mlops_cli.runtime import LoadedModel

        try:
            version = self.registry.resolve(f"{self.ref.name}:{target}")
            model = _warm(LoadedModel.load(self.registry, version, self.load_options))
        except Exception as exc:  # noqa: BLE001 (any failure to load keeps the old model serving; it is reported)
            return self._failed(target, f"{self.ref.name}:{target} did not load: {_text(exc)}")
        new = Current(model, time.time())
        self.current = new  # the swap: one assignment; batches that took the old model finish on it
        self.error, self._failed_target = None, None
        if self.on_switch is not None:
            self.on_switch(self, "switched", new, None)
        return "switched"

    def _failed(self, target: str | None, message: str) -> str:
        first = target != self._failed_target or self.error is None
        self.error, self._failed_target = message, target
        if self.on_switch is not None:
            self.on_switch(self, "failed", None, message)
        if first and self.record_failures:
            self._record(target, message)
        return "failed"

    def _record(self, target: str | None, message: str) -> None:
        current = self.current
        event = {
            "event": "serve_switch_failed",
            "alias": self.ref.alias,
            "to": target,
            "serving": current.version if current is not None else None,
            "error": message,
        }
        try:
            self.registry.record_event(self.ref.name, event)
        except (MlopsError, OSError):
            pass  # a read-only registry (a container's mount): the readiness details and the metric still say it

    def details(self) -> dict[str, Any]:
        current = self.current
        out: dict[str, Any] = {"ref": str(self.ref), "role": self.role, "follows_alias": self.follows}
        if current is not None:
            out.update(
                version=current.version,
                sha256=current.model.version.summary()["sha256"] if current.model.version is not None else None,
                runtime=current.model.runtime,
                loaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(current.loaded_at)),
            )
        if self.error is not None:
            out["switch_error"] = self.error
        return out


def _warm(model: LoadedModel) -> LoadedModel:
    """Score rows of the stored sample a few times before taking traffic: first calls pay for lazy imports, caches
    and the first-rows check. A version without a stored sample is used as it is."""
    from mlops_cli import io
    from mlops_cli.registry import SAMPLE

    version = model.version
    if version is None or SAMPLE not in version.manifest["files"]:
        return model
    rows = io.read_table(version.file(SAMPLE), columns=model.spec.feature_names).head(WARM_ROWS)
    for _ in range(WARM_ROUNDS):
        model.score(rows)
        model.score(rows.head(1))
    return model


def _text(exc: BaseException) -> str:
    return exc.one_line() if isinstance(exc, MlopsError) else " ".join(str(exc).split()) or type(exc).__name__
