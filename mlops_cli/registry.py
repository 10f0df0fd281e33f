"""The model registry: a plain directory that people can read, back up and copy.

    <root>/<name>/versions/<version>/   one immutable folder per version:
        model.joblib                    the artifact, byte for byte as registered
        manifest.json                   hashes, schema, metrics, lineage, library versions
        profile.json                    reference profile of the training data (with --train-data)
        sample.parquet                  capped sample of training rows with the model's predictions
    <root>/<name>/aliases.json          {"production": "3", ...}
    <root>/<name>/events.jsonl          append-only, hash-chained log: registered, alias_moved, rolled_back, ...
    <root>/<name>/.lock                 flock'd for every write (version numbers, aliases, events)
    <root>/<name>/.staging/             versions being written; never visible as versions

A version becomes visible by one atomic rename of a complete folder, under the lock, so concurrent registers never
share a number and a killed register leaves nothing half-written. Anything loaded is hash-verified first: its files
against its manifest, the manifest against the sha256 its `registered` event recorded, and the event log's chain.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_cli import eventlog, io
from mlops_cli.errors import (
    AliasMoved,
    IntegrityError,
    LockTimeout,
    ModelNotFound,
    NothingToRollBack,
    VersionExists,
)
from mlops_cli.eventlog import EventLog
from mlops_cli.interrupts import commit_window
from mlops_cli.refs import LATEST, ModelRef, parse_ref, validate_label, validate_name
from mlops_cli.report import utc_now

ARTIFACT = "model.joblib"
MANIFEST = "manifest.json"
PROFILE = "profile.json"
SAMPLE = "sample.parquet"
EVENTS = "events.jsonl"
ALIASES = "aliases.json"
SETTINGS = "settings.toml"
MANIFEST_VERSION = 1
LOCK_TIMEOUT_S = 60.0
STALE_STAGING_S = 24 * 3600


@dataclass(frozen=True)
class Version:
    """A resolved, registered version: its folder and manifest."""

    name: str
    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def file(self, name: str) -> Path:
        """A stored file, hash-verified against the manifest (itself verified when the version was resolved)."""
        _verify_file(self, name)
        return self.path / name

    def summary(self) -> dict[str, Any]:
        """The `model` block of a report envelope."""
        return {"name": self.name, "version": self.version, "sha256": self.manifest["files"][ARTIFACT]["sha256"]}


_MANIFEST_KEYS = ("files", "sequence", "task", "libraries", "created_at", "estimator_class")


def read_manifest(path: Path) -> tuple[dict[str, Any], str]:
    """The manifest and the sha256 of the bytes it was parsed from."""
    try:
        data = path.read_bytes()
        manifest = json.loads(data)
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path} is unreadable ({exc})", "restore the registry from a backup") from exc
    missing = [k for k in _MANIFEST_KEYS if k not in manifest] if isinstance(manifest, dict) else list(_MANIFEST_KEYS)
    files = {} if missing else manifest["files"]
    if missing or not isinstance(files, dict) or not all(isinstance(f, dict) and "sha256" in f for f in files.values()):
        raise IntegrityError(f"{path} is damaged (lacks {missing or ['files']})", "restore the registry from a backup")
    if ARTIFACT not in files:
        raise IntegrityError(f"{path} is damaged (lacks ['files.{ARTIFACT}'])", "restore the registry from a backup")
    return manifest, hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Seals:
    """The manifest sha256 each version's `registered` event recorded (a retried label's last event counts)."""

    registered: dict[str, dict[str, Any]]
    chained: bool

    @classmethod
    def of(cls, log: EventLog) -> Seals:
        registered = {str(e.get("version")): e for e in log.events if e.get("event") == "registered"}
        return cls(registered, log.chained)

    def problem(self, version: str, manifest_sha256: str, manifest: dict[str, Any]) -> str | None:
        """Why a version's manifest is not the one registered, or None. Versions registered before the seals (their
        event has no `prev`, or the whole log has none) pass on their artifact's hash alone, the one thing recorded."""
        event = self.registered.get(version)
        if event is None:
            return "has no `registered` event in events.jsonl" if self.chained else None
        recorded = event.get("manifest_sha256")
        if recorded is None and "prev" in event:
            return "its `registered` event records no manifest sha256"
        if recorded is not None and recorded != manifest_sha256:
            return "was altered after registration (sha256 differs from its `registered` event in events.jsonl)"
        if event.get("sha256", manifest["files"][ARTIFACT]["sha256"]) != manifest["files"][ARTIFACT]["sha256"]:
            return f"was altered after registration (its {ARTIFACT} sha256 differs from its `registered` event)"
        return None


def _read_aliases(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        aliases = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path} is unreadable ({exc})", "restore it from a backup") from exc
    if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
        raise IntegrityError(f"{path} is damaged (not a map of alias to version)", "restore it from a backup")
    return aliases


def _verify_file(version: Version, name: str) -> None:
    expected = version.manifest["files"].get(name)
    if expected is None:
        raise ModelNotFound(f"{version.ref} has no {name}", "register it with --train-data to store a profile")
    path = version.path / name
    if not path.is_file():
        raise IntegrityError(f"{path} is missing from the registry", "restore the registry from a backup")
    if io.sha256_file(path) != expected["sha256"]:
        raise IntegrityError(
            f"{path} was altered after registration (sha256 differs from the manifest)",
            "restore it from a backup or register the model again",
        )


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- reading ---------------------------------------------------------------------------------------------

    def refuses_pickle(self) -> bool:
        """The registry's own rule (`no_pickle = true` in <root>/settings.toml): hosts loading from it never unpickle."""
        import tomllib

        path = self.root / SETTINGS
        if not path.is_file():
            return False
        try:
            settings = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise IntegrityError(f"{path} is unreadable ({exc})", "fix it: it holds no_pickle = true or false") from exc
        value = settings.get("no_pickle", False)
        if not isinstance(value, bool):
            raise IntegrityError(f"{path}: no_pickle must be true or false", "fix the settings file")
        return value

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def _model_dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    def _require_model(self, name: str) -> Path:
        path = self._model_dir(name)
        if not (path / "versions").is_dir():
            known = ", ".join(self.names()) or "none"
            raise ModelNotFound(f"no model named {name!r} in {self.root}", f"registered models: {known}")
        return path

    def model_path(self, name: str) -> Path:
        """The folder of a registered model (ModelNotFound if there is none)."""
        return self._require_model(name)

    def versions(self, name: str) -> list[Version]:
        """Every registered version of `name`, in registration order, each manifest verified against its event."""
        return self._versions(name, Seals.of(self.event_log(name)))

    def _versions(self, name: str, seals: Seals) -> list[Version]:
        versions_dir = self._require_model(name) / "versions"
        found = [self._version(name, p.name, seals) for p in versions_dir.iterdir() if (p / MANIFEST).is_file()]
        return sorted(found, key=lambda v: v.manifest["sequence"])

    def _version(self, name: str, label: str, seals: Seals) -> Version:
        path = self._model_dir(name) / "versions" / label
        manifest, sha = read_manifest(path / MANIFEST)
        problem = seals.problem(label, sha, manifest)
        if problem is not None and label not in seals.registered:
            # The log was read before the folder was listed: a version published in between (event first, then
            # the rename) is in the log now. Read it again before calling the folder unsealed.
            problem = Seals.of(self.event_log(name)).problem(label, sha, manifest)
        if problem is not None:
            raise IntegrityError(
                f"{path / MANIFEST} {problem}",
                f"restore it from a backup or register the model again; `mlops verify {name}` lists every problem",
            )
        return Version(name, label, path, manifest)

    def event_log(self, name: str) -> EventLog:
        """The model's event log, its chain checked (IntegrityError if broken). Read once per resolve."""
        path = self._require_model(name) / EVENTS
        try:
            log = eventlog.read(path)
        except OSError as exc:
            raise IntegrityError(f"{path} is unreadable ({exc})", "restore it from a backup") from exc
        if log.problems:
            raise IntegrityError(
                f"{path} was altered: {log.problems[0]}",
                f"restore it from a backup; `mlops verify {name}` lists every problem",
            )
        return log

    def aliases(self, name: str) -> dict[str, str]:
        return _read_aliases(self._require_model(name) / ALIASES)

    def resolve(self, ref: str | ModelRef) -> Version:
        """The version a reference names: NAME (latest), NAME:VERSION or NAME@ALIAS."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        model_dir = self._require_model(ref.name)
        seals = Seals.of(self.event_log(ref.name))
        version = None if ref.version == LATEST else ref.version
        if ref.alias is not None:
            version = self.aliases(ref.name).get(ref.alias)
            if version is None:
                raise ModelNotFound(
                    f"{ref.name} has no alias {ref.alias!r}",
                    f"set it with: mlops models promote {ref.name}:VERSION {ref.alias}",
                )
        if version is None:
            versions = self._versions(ref.name, seals)
            if not versions:
                raise ModelNotFound(f"{ref.name} has no versions", "register one first")
            return versions[-1]
        manifest_path = model_dir / "versions" / version / MANIFEST
        if not manifest_path.is_file():
            raise ModelNotFound(f"{ref.name} has no version {version!r}", f"see: mlops models list {ref.name}")
        return self._version(ref.name, version, seals)

    def verify(self, version: Version) -> None:
        """Check every stored file of a version against its manifest hashes."""
        for name in version.manifest["files"]:
            _verify_file(version, name)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The model's events, oldest first. A torn line (a crash mid-append) is skipped, not fatal; the chain is
        not checked here (`event_log` does, for loading; `mlops verify` reports it)."""
        return eventlog.read(self._require_model(name) / EVENTS).events

    # --- writing ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = LOCK_TIMEOUT_S, *, file: str = ".lock") -> Iterator[Path]:
        """Exclusive per-model lock (flock: released by the kernel if the holder dies, even by kill -9). `file`
        names another lock of the model's (retrain holds `.retrain.lock` for a whole run)."""
        model_dir = self._model_dir(name)
        (model_dir / "versions").mkdir(parents=True, exist_ok=True)
        with lock_file(model_dir / file, str(model_dir), timeout):
            yield model_dir

    def _append_event(self, model_dir: Path, event: dict[str, Any]) -> None:
        """Append one event line, chained to the last; caller holds the lock."""
        record = {"time": utc_now(), "user": user(), "host": host(), **event}
        with commit_window():  # a signal between two writes would tear the line
            eventlog.append(model_dir / EVENTS, record)

    def find_artifact(self, name: str, sha256: str) -> Version | None:
        if not (self._model_dir(name) / "versions").is_dir():
            return None
        for version in self.versions(name):
            if version.manifest["files"][ARTIFACT]["sha256"] == sha256:
                return version
        return None

    def add_version(
        self,
        name: str,
        staging: Path,
        manifest: dict[str, Any],
        *,
        version: str | None = None,
        allow_duplicate: bool = False,
        alias: str | None = None,
        reason: str | None = None,
    ) -> tuple[Version, bool]:
        """Publish a staged folder as the next version. Returns (version, created); created is False when
        the same artifact is already registered under `name` and duplicates are not allowed."""
        sha = manifest["files"][ARTIFACT]["sha256"]
        with self.lock(name) as model_dir:
            existing = None if allow_duplicate else self.find_artifact(name, sha)
            if existing is not None:
                shutil.rmtree(staging, ignore_errors=True)
                if alias is not None and not self.alias_ever_named(name, alias, existing.version):
                    # a retry after a crash between publishing and aliasing; an old job re-run moves nothing back
                    self._move_alias(model_dir, name, alias, existing.version, event="alias_moved", reason=reason)
                return existing, False
            seals = Seals.of(self.event_log(name))
            versions = self._versions(name, seals)
            if version is None:
                # A number a crashed register logged but never published is not handed out again.
                labels = [v.version for v in versions] + list(seals.registered)
                version = str(max((int(v) for v in labels if v.isdigit()), default=0) + 1)
            elif (model_dir / "versions" / version).exists():
                shutil.rmtree(staging, ignore_errors=True)
                raise VersionExists(f"{name}:{version} already exists", "versions are immutable; pick a new label")
            manifest = {
                **manifest,
                "name": name,
                "version": version,
                "sequence": max((v.manifest["sequence"] for v in versions), default=0) + 1,
            }
            io.write_json(staging / MANIFEST, manifest)
            io.fsync_dir(staging)
            # Logged before it appears, so no version is ever visible without the event that seals its manifest
            # (a crash in between leaves an event for a version that never appeared; `mlops verify` warns of it).
            registered = {"event": "registered", "version": version, "sha256": sha, "reason": reason}
            target = model_dir / "versions" / version
            # Publishing is one step: a signal waits until the event, the version and its alias are all recorded.
            with commit_window():
                self._append_event(model_dir, {**registered, "manifest_sha256": io.sha256_file(staging / MANIFEST)})
                os.rename(staging, target)  # the moment the version appears: whole, with its manifest
                io.fsync_dir(target.parent)
                if alias is not None:
                    self._move_alias(model_dir, name, alias, version, event="alias_moved", reason=reason)
            self._clean_staging(model_dir)
        return Version(name, version, target, manifest), True

    def staging_dir(self, name: str) -> Path:
        import uuid

        path = self._model_dir(name) / ".staging" / f"{os.getpid()}-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        return path

    def _clean_staging(self, model_dir: Path) -> None:
        """Remove folders left by registers that died long ago (a live one is never this old)."""
        now = time.time()
        for path in (model_dir / ".staging").glob("*"):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > STALE_STAGING_S:
                    shutil.rmtree(path)

    def _move_alias(
        self, model_dir: Path, name: str, alias: str, version: str, *, event: str, reason: str | None
    ) -> str | None:
        aliases_path = model_dir / ALIASES
        aliases = _read_aliases(aliases_path)
        previous = aliases.get(alias)
        if previous == version and event == "alias_moved" and _logged_target(self.events(name), alias) == version:
            # Already there (a retried release step): no event, so rollback still goes back a step. Unless the log
            # disagrees (a crash lost the move's event, or a hand edit): then this records it.
            return previous
        aliases[alias] = version
        with commit_window():  # the move and its event: a signal waits for both
            io.write_json(aliases_path, aliases)
            self._append_event(
                model_dir, {"event": event, "alias": alias, "from": previous, "to": version, "reason": reason}
            )
        return previous

    def promote(
        self, ref: str | ModelRef, alias: str, *, reason: str | None = None, expected: str | None = None
    ) -> tuple[Version, str | None]:
        """Point `alias` at the version `ref` names. Returns the version and where the alias pointed before.

        With `expected`, the move happens only if the alias still points at that version (compare and set, under
        the lock): a gate that compared against version 3 must not replace a version 4 someone promoted meanwhile.
        """
        validate_label(alias, "alias")
        version = self.resolve(ref)
        self.verify(version)
        with self.lock(version.name) as model_dir:
            if expected is not None and _read_aliases(model_dir / ALIASES).get(alias) != expected:
                raise AliasMoved(
                    f"{version.name}@{alias} no longer points at {expected} (moved while this run compared)",
                    "nothing was promoted; run again against the new champion",
                )
            previous = self._move_alias(
                model_dir, version.name, alias, version.version, event="alias_moved", reason=reason
            )
        return version, previous

    def rollback(self, name: str, alias: str = "production", *, reason: str | None = None) -> tuple[str, str]:
        """Move `alias` back to the version it pointed at before its last move. Returns (from, to)."""
        validate_name(alias, "alias")
        self._require_model(name)  # before the lock, which would create the model's folder
        with self.lock(name) as model_dir:
            stack = self.alias_history(name, alias)
            current = self.aliases(name).get(alias)
            if len(stack) < 2 or stack[-1] != current:
                raise NothingToRollBack(
                    f"{name}@{alias} has no earlier version to roll back to", f"see: mlops models history {name}"
                )
            target = stack[-2]
            # Rolling back onto an artifact altered since registration would ship it: verify, as promote does.
            self.verify(self.resolve(f"{name}:{target}"))
            self._move_alias(model_dir, name, alias, target, event="rolled_back", reason=reason)
        return stack[-1], target

    def alias_history(self, name: str, alias: str) -> list[str]:
        """Where `alias` has pointed, oldest first, the top being where it points now (`rollback` goes one down).

        A crash between writing aliases.json and logging the move leaves the file one step ahead of the log; the
        file is the truth: a lost rollback's target is the one below the top, anything else a lost promotion.
        """
        stack = alias_stack(self.events(name), alias)
        current = self.aliases(name).get(alias)
        if current is not None and (not stack or stack[-1] != current):
            if len(stack) >= 2 and stack[-2] == current:
                stack.pop()
            else:
                stack.append(current)
        return stack

    def alias_ever_named(self, name: str, alias: str, version: str) -> bool:
        """Whether `alias` was ever moved to `version` (a re-run of an old register must not move it back)."""
        return any(e.get("alias") == alias and e.get("to") == version for e in self.events(name))

    def record_event(self, name: str, event: dict[str, Any]) -> None:
        with self.lock(name) as model_dir:
            self._append_event(model_dir, event)


@contextlib.contextmanager
def lock_file(path: Path, what: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if absent); LockTimeout naming `what` after `timeout` seconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise LockTimeout(
                        f"could not lock {what} within {timeout:.0f}s",
                        "another mlops process is writing this model; retry later",
                    ) from exc
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _logged_target(events: list[dict[str, Any]], alias: str) -> str | None:
    stack = alias_stack(events, alias)
    return stack[-1] if stack else None


def alias_stack(events: list[dict[str, Any]], alias: str) -> list[str]:
    """Replay an alias's moves: a promotion pushes its target, a rollback pops. The top is where it points."""
    stack: list[str] = []
    for event in events:
        if event.get("alias") != alias:
            continue
        if event["event"] == "rolled_back" and stack:
            stack.pop()
        elif event["event"] == "alias_moved" and (not stack or stack[-1] != event["to"]):
            stack.append(event["to"])  # a move onto where it already was (older logs) is not a step back
    return stack


def library_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("scikit-learn", "numpy", "pandas", "joblib", "scipy", "pyarrow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None  # type: ignore[assignment]
    return out


def user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def host() -> str:
    import socket

    return socket.gethostname()
