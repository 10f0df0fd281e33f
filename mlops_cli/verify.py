"""`mlops verify`: audit a registry, or one model, and list every problem found, not just the first.

Per model: the event log's hash chain; every version's manifest against the sha256 its `registered` event recorded,
and every file against its manifest; every alias pointing at an existing version and agreeing with the log's replay.
Problems (damage, or changes nobody logged) make the verdict exit 4. Warnings (entries written before the chain and
the seals existed, so unprotected; the traces a crash leaves) do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_cli import eventlog, io
from mlops_cli.errors import RegistryError
from mlops_cli.eventlog import EventLog
from mlops_cli.registry import ALIASES, EVENTS, MANIFEST, Registry, Seals, Version, alias_stack, read_manifest
from mlops_cli.report import Report

RESTORE = "restore it from a backup"


@dataclass
class _Findings:
    """What one model's audit found; paths are relative to the registry's root."""

    root: Path
    problems: list[dict[str, str | None]] = field(default_factory=list)
    warnings: list[dict[str, str | None]] = field(default_factory=list)

    def problem(self, check: str, path: Path, message: str, hint: str | None = None) -> None:
        self.problems.append(self._entry(check, path, message, hint))

    def warning(self, check: str, path: Path, message: str) -> None:
        self.warnings.append(self._entry(check, path, message, None))

    def _entry(self, check: str, path: Path, message: str, hint: str | None) -> dict[str, str | None]:
        where = str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)
        return {"check": check, "path": where, "message": message, "hint": hint}


def verify(registry: Registry, name: str | None = None) -> Report:
    """Audit every model of the registry, or `name` (ModelNotFound if it is not there). Fails with exit 4."""
    if name is not None:
        registry.model_path(name)
    models = [_audit(registry, n) for n in ([name] if name is not None else registry.names())]
    problems = sum(len(m["problems"]) for m in models)
    results = {
        "registry": str(registry.root),
        "models": models,
        "problems": problems,
        "warnings": sum(len(m["warnings"]) for m in models),
    }
    messages = [] if models else [f"no models in {registry.root}"]
    return Report("verify", results=results, passed=problems == 0, messages=messages, failure_code=4)


def _audit(registry: Registry, name: str) -> dict[str, Any]:
    found = _Findings(registry.root)
    summary: dict[str, Any] = {"name": name, "versions": 0, "events": 0, "chained": False, "head": None}
    try:
        model_dir = registry.model_path(name)
    except RegistryError as exc:  # a folder no mlops would have made (an invalid name): one problem, not a crash
        found.problem("model", registry.root / name, exc.message, exc.hint)
        return _result(summary, found)
    state = _read_state(registry, name, model_dir)
    log = _chain(model_dir / EVENTS, state.events, found)
    seals = Seals.of(log)
    labels = _versions(model_dir, name, state.folders, seals, found)
    for label in sorted(set(seals.registered) - set(labels)):
        found.warning(
            "version",
            model_dir / EVENTS,
            f"version {label} is registered in the log but never appeared (a register that died before publishing)",
        )
    _aliases(model_dir / ALIASES, name, state.aliases, labels, log, found)
    summary.update(versions=len(labels), events=len(log.events), chained=log.chained, head=log.head)
    return _result(summary, found)


def _result(summary: dict[str, Any], found: _Findings) -> dict[str, Any]:
    status = "fail" if found.problems else "pass"
    return {**summary, "status": status, "problems": found.problems, "warnings": found.warnings}


@dataclass
class _State:
    """What writers change together (the log, the aliases, the version folders), read together."""

    events: bytes | OSError
    aliases: dict[str, str] | RegistryError
    folders: list[Path]


def _read_state(registry: Registry, name: str, model_dir: Path) -> _State:
    def read() -> _State:
        try:
            events: bytes | OSError = (model_dir / EVENTS).read_bytes() if (model_dir / EVENTS).exists() else b""
        except OSError as exc:
            events = exc
        try:
            aliases: dict[str, str] | RegistryError = registry.aliases(name)
        except RegistryError as exc:
            aliases = exc
        return _State(events, aliases, [p for p in (model_dir / "versions").iterdir() if p.is_dir()])

    # Under the model's lock, so a move between writing aliases.json and logging it is not taken for damage.
    try:
        with registry.lock(name):
            return read()
    except OSError:  # a read-only copy (a backup being checked): no writer to wait for
        return read()


def _chain(path: Path, data: bytes | OSError, found: _Findings) -> EventLog:
    if isinstance(data, OSError):
        found.problem("chain", path, f"is unreadable ({data})", RESTORE)
        return EventLog()
    log = eventlog.parse(data)
    for message in log.problems:
        found.problem("chain", path, message, f"{RESTORE}; the events from there on may have been rewritten")
    for message in log.warnings:
        found.warning("chain", path, message)
    if log.legacy:
        written = f"its first {log.legacy} events" if log.chained else f"its {log.legacy} events"
        found.warning(
            "chain", path, f"{written} predate the hash chain (an older mlops wrote them): edits to them go unnoticed"
        )
    return log


def _versions(model_dir: Path, name: str, folders: list[Path], seals: Seals, found: _Findings) -> list[str]:
    """Check every version folder (hashing, outside the lock); return the labels of those that hold a manifest."""
    labels, unsealed = [], []
    for path in sorted(folders, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name)):
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            found.problem("manifest", path, "has no manifest.json (mlops never publishes such a folder)", RESTORE)
            continue
        labels.append(path.name)
        try:
            manifest, sha = read_manifest(manifest_path)
        except RegistryError as exc:
            found.problem("manifest", manifest_path, exc.message, exc.hint)
            continue
        problem = seals.problem(path.name, sha, manifest)
        if problem is not None:
            found.problem("manifest", manifest_path, problem, f"{RESTORE} or register the model again")
        elif "manifest_sha256" not in seals.registered.get(path.name, {}):
            unsealed.append(path.name)
        if manifest.get("version", path.name) != path.name:
            found.problem(
                "manifest", manifest_path, f"names version {manifest['version']!r} (folder renamed?)", RESTORE
            )
        _files(Version(name, path.name, path, manifest), found)
    if unsealed:
        found.warning(
            "manifest",
            model_dir / "versions",
            f"version(s) {', '.join(unsealed)} predate manifest seals (an older mlops registered them): "
            "edits to their manifests go unnoticed",
        )
    return labels


def _files(version: Version, found: _Findings) -> None:
    listed = version.manifest["files"]
    for file, entry in listed.items():  # read_manifest checked that each entry has a sha256
        path = version.path / file
        if not path.is_file():
            found.problem("file", path, "is missing", RESTORE)
        elif io.sha256_file(path) != entry["sha256"]:
            found.problem(
                "file",
                path,
                "was altered after registration (sha256 differs from the manifest)",
                f"{RESTORE} or register the model again",
            )
    extra = sorted(p.name for p in version.path.iterdir() if p.name not in listed and p.name != MANIFEST)
    if extra:
        found.warning(
            "file", version.path, f"holds files its manifest does not list (never loaded): {', '.join(extra)}"
        )


def _aliases(
    path: Path,
    name: str,
    aliases: dict[str, str] | RegistryError,
    labels: list[str],
    log: EventLog,
    found: _Findings,
) -> None:
    if isinstance(aliases, RegistryError):
        found.problem("alias", path, aliases.message, aliases.hint)
        return
    for alias, target in sorted(aliases.items()):
        if target not in labels:
            found.problem(
                "alias",
                path,
                f"{alias} points at version {target}, which does not exist",
                f"point it at one that does: mlops models promote {name}:VERSION {alias}",
            )
    logged = {e["alias"] for e in log.events if isinstance(e.get("alias"), str)}
    for alias in sorted(set(aliases) | logged):
        stack = alias_stack(log.events, alias)
        current, last = aliases.get(alias), (stack[-1] if stack else None)
        if current == last:
            continue
        if current is None:
            found.problem(
                "alias",
                path,
                f"has no {alias}, but the event log last moved it to version {last}",
                f"restore aliases.json from a backup, or set it again: mlops models promote {name}:{last} {alias}",
            )
        else:
            found.problem(
                "alias",
                path,
                f"points {alias} at version {current}, but the event log last moved it to "
                f"{'version ' + last if last else 'nowhere'} (edited by hand, or a move whose event a crash lost)",
                f"if {current} is right, log the move: mlops models promote {name}:{current} {alias} --reason TEXT; "
                "otherwise restore aliases.json from a backup",
            )
