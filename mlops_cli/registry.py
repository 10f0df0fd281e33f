"""The model registry: a plain directory that people can read, back up and copy.

    <root>/<name>/versions/<version>/   one immutable folder per version:
        model.joblib                    the artifact, byte for byte as registered
        manifest.json                   hashes, schema, metrics, lineage, library versions
        profile.json                    reference profile of the training data (with --train-data)
        sample.parquet                  capped sample of training rows with the model's predictions
    <root>/<name>/aliases.json          {"production": "3", ...}
    <root>/<name>/events.jsonl          append-only log: registered, alias_moved, rolled_back, ...
    <root>/<name>/.lock                 flock'd for every write (version numbers, aliases, events)
    <root>/<name>/.staging/             versions being written; never visible as versions

A version becomes visible by one atomic rename of a complete folder, under the lock, so concurrent registers never
share a number and a killed register leaves nothing half-written. Anything loaded is hash-verified first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_cli import io
from mlops_cli.errors import (
    AliasMoved,
    IntegrityError,
    LockTimeout,
    MlopsWarning,
    ModelNotFound,
    NothingToRollBack,
    RegistryError,
    SchemaMismatch,
    VersionExists,
    VersionMismatch,
)
from mlops_cli.interrupts import commit_window
from mlops_cli.refs import LATEST, ModelRef, parse_ref, validate_label, validate_name
from mlops_cli.report import utc_now

ARTIFACT = "model.joblib"
MANIFEST = "manifest.json"
PROFILE = "profile.json"
SAMPLE = "sample.parquet"
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
        """A stored file, hash-verified against the manifest before anyone reads it."""
        _verify_file(self, name)
        return self.path / name

    def summary(self) -> dict[str, Any]:
        """The `model` block of a report envelope."""
        return {"name": self.name, "version": self.version, "sha256": self.manifest["files"][ARTIFACT]["sha256"]}


_MANIFEST_KEYS = ("files", "sequence", "task", "libraries", "created_at", "estimator_class")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path} is unreadable ({exc})", "restore the registry from a backup") from exc
    missing = [k for k in _MANIFEST_KEYS if k not in manifest] if isinstance(manifest, dict) else list(_MANIFEST_KEYS)
    if missing or not isinstance(manifest["files"], dict) or ARTIFACT not in manifest["files"]:
        raise IntegrityError(
            f"{path} is damaged (lacks {missing or ['files.' + ARTIFACT]})", "restore the registry from a backup"
        )
    return manifest


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

    def versions(self, name: str) -> list[Version]:
        """Every registered version of `name`, in registration order."""
        versions_dir = self._require_model(name) / "versions"
        found = [
            Version(name, p.name, p, _read_manifest(p / MANIFEST))
            for p in versions_dir.iterdir()
            if (p / MANIFEST).is_file()
        ]
        return sorted(found, key=lambda v: v.manifest["sequence"])

    def aliases(self, name: str) -> dict[str, str]:
        return _read_aliases(self._require_model(name) / "aliases.json")

    def resolve(self, ref: str | ModelRef) -> Version:
        """The version a reference names: NAME (latest), NAME:VERSION or NAME@ALIAS."""
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        model_dir = self._require_model(ref.name)
        version = None if ref.version == LATEST else ref.version
        if ref.alias is not None:
            version = self.aliases(ref.name).get(ref.alias)
            if version is None:
                raise ModelNotFound(
                    f"{ref.name} has no alias {ref.alias!r}",
                    f"set it with: mlops models promote {ref.name}:VERSION {ref.alias}",
                )
        if version is None:
            versions = self.versions(ref.name)
            if not versions:
                raise ModelNotFound(f"{ref.name} has no versions", "register one first")
            return versions[-1]
        manifest_path = model_dir / "versions" / version / MANIFEST
        if not manifest_path.is_file():
            raise ModelNotFound(f"{ref.name} has no version {version!r}", f"see: mlops models list {ref.name}")
        return Version(ref.name, version, manifest_path.parent, _read_manifest(manifest_path))

    def verify(self, version: Version) -> None:
        """Check every stored file of a version against its manifest hashes."""
        for name in version.manifest["files"]:
            _verify_file(version, name)

    def load_model(self, ref: str | ModelRef | Version, *, strict: bool = False) -> tuple[Any, Version]:
        """Verify the artifact's hash, then unpickle it. Library-version differences warn (raise with strict)."""
        from mlops_cli import model as model_lib

        version = ref if isinstance(ref, Version) else self.resolve(ref)
        artifact = version.file(ARTIFACT)  # integrity first: an altered file is never unpickled
        recorded = version.manifest["libraries"].get("scikit-learn")
        running = _library_versions()["scikit-learn"]
        if recorded != running:
            message = (
                f"{version.ref} was registered under scikit-learn {recorded}, "
                f"this is scikit-learn {running}; predictions may differ"
            )
            if strict:
                raise VersionMismatch(message, "run under the recorded version, or drop --strict")
            warnings.warn(message, MlopsWarning, stacklevel=2)
        estimator, _ = model_lib.load_file(artifact)
        return estimator, version

    def events(self, name: str) -> list[dict[str, Any]]:
        path = self._require_model(name) / "events.jsonl"
        if not path.exists():
            return []
        # A torn last line (a crash mid-append) is skipped, not fatal.
        events = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
        return events

    # --- writing ---------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = LOCK_TIMEOUT_S, *, file: str = ".lock") -> Iterator[Path]:
        """Exclusive per-model lock (flock: released by the kernel if the holder dies, even by kill -9). `file`
        names another lock of the model's (retrain holds `.retrain.lock` for a whole run)."""
        model_dir = self._model_dir(name)
        (model_dir / "versions").mkdir(parents=True, exist_ok=True)
        fd = os.open(model_dir / file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                        raise LockTimeout(
                            f"could not lock {model_dir} within {timeout:.0f}s",
                            "another mlops process is writing this model; retry later",
                        ) from exc
                    time.sleep(0.02)
            yield model_dir
        finally:
            os.close(fd)  # closing releases the lock

    def _append_event(self, model_dir: Path, event: dict[str, Any]) -> None:
        """Append one event line; caller holds the lock."""
        record = {"time": utc_now(), "user": _user(), "host": _host(), **event}
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        path = model_dir / "events.jsonl"
        with commit_window():  # a signal between two writes would tear the line
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a crash tore the last line: end it, so this event stands on a line of its own
                while line:
                    line = line[os.write(fd, line) :]
                os.fsync(fd)
            finally:
                os.close(fd)

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
            versions = self.versions(name)
            if version is None:
                numbers = [int(v.version) for v in versions if v.version.isdigit()]
                version = str(max(numbers, default=0) + 1)
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
            target = model_dir / "versions" / version
            # Publishing is one step: a signal waits until the version, its event and its alias are all recorded.
            with commit_window():
                os.rename(staging, target)  # the moment the version appears: whole, with its manifest
                io.fsync_dir(target.parent)
                self._append_event(
                    model_dir, {"event": "registered", "version": version, "sha256": sha, "reason": reason}
                )
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
        aliases_path = model_dir / "aliases.json"
        aliases = _read_aliases(aliases_path)
        previous = aliases.get(alias)
        if previous == version and event == "alias_moved":
            return previous  # already there (a retried release step): no event, so rollback still goes back a step
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
            if expected is not None and _read_aliases(model_dir / "aliases.json").get(alias) != expected:
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


# --- registering ---------------------------------------------------------------------------------------------


@dataclass
class RegisterOptions:
    train_data: Path | None = None
    target: str | None = None
    eval_data: Path | None = None
    metrics: dict[str, float] | None = None
    params: dict[str, str] | None = None
    tags: dict[str, str] | None = None
    description: str | None = None
    version: str | None = None
    alias: str | None = None
    allow_duplicate: bool = False
    sample_size: int = 100_000
    accepts_missing: bool = True
    accepts_unseen: bool = True
    lineage: dict[str, Any] | None = None
    reason: str | None = None
    n_boot: int = 1000
    seed: int = 0
    # What to record as the data's path when the files are temporary (retrain's training window and holdout).
    train_data_label: str | None = None
    eval_data_label: str | None = None


def register(registry: Registry, model_file: Path, name: str, options: RegisterOptions) -> tuple[Version, bool]:
    """Register `model_file` under `name`: inspect it, profile its data, evaluate it, publish atomically."""
    validate_name(name)
    if options.version is not None:
        validate_label(options.version, "version")
    if options.alias is not None:
        validate_label(options.alias, "alias")
    sha = io.sha256_file(model_file) if model_file.is_file() else None
    if sha is not None and not options.allow_duplicate:
        existing = registry.find_artifact(name, sha)
        if existing is not None:  # a CI retry: same bytes, same name
            if options.alias is not None and not registry.alias_ever_named(name, options.alias, existing.version):
                # a retry after a crash between publishing and aliasing; an old job re-run moves nothing back
                registry.promote(existing.ref, options.alias, reason=options.reason)
            return existing, False
    from mlops_cli import model as model_lib

    estimator, _ = model_lib.load_file(model_file)
    info = model_lib.describe(estimator)
    if options.eval_data is not None and not (options.train_data is not None or options.target):
        raise SchemaMismatch("--eval-data needs --target", "name the label column with --target")
    staging = registry.staging_dir(name)
    try:
        shutil.copyfile(model_file, staging / ARTIFACT)
        with (staging / ARTIFACT).open("rb+") as fh:
            os.fsync(fh.fileno())  # durable before the rename that makes the version visible
        files = {ARTIFACT: _file_entry(staging / ARTIFACT)}
        if files[ARTIFACT]["sha256"] != sha:
            raise RegistryError(f"{model_file} changed while it was being registered", "register it again")
        manifest = _manifest(info, options)
        if options.train_data is not None:
            manifest.update(_with_training_data(estimator, info, options, staging))
            files.update({f: _file_entry(staging / f) for f in (PROFILE, SAMPLE)})
        if options.eval_data is not None:
            manifest["eval_metrics"], manifest["eval_data"] = _evaluate(estimator, info, manifest, options)
        manifest["files"] = files
        return registry.add_version(
            name,
            staging,
            manifest,
            version=options.version,
            allow_duplicate=options.allow_duplicate,
            alias=options.alias,
            reason=options.reason,
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": io.sha256_file(path), "bytes": path.stat().st_size}


def _manifest(info: dict[str, Any], options: RegisterOptions) -> dict[str, Any]:
    return {
        "manifest_version": MANIFEST_VERSION,
        "created_at": utc_now(),
        **{k: info[k] for k in ("estimator_class", "task", "classes")},
        "features": [{"name": n} for n in info["feature_names"] or []],
        "target": options.target,
        "input_contract": {"accepts_missing": options.accepts_missing, "accepts_unseen": options.accepts_unseen},
        "metrics": options.metrics or {},
        "params": options.params or {},
        "tags": options.tags or {},
        "description": options.description,
        "training_data": None,
        "eval_metrics": None,
        "lineage": {**(options.lineage or {}), "git": _git_state()},
        "libraries": _library_versions(),
        "registered_by": {"user": _user(), "host": _host()},
    }


def _model_features(info: dict[str, Any], frame: Any, target: str | None) -> list[str]:
    if info["feature_names"] is not None:
        return list(info["feature_names"])
    columns = [c for c in frame.columns if c != target]
    if info["n_features"] is not None and len(columns) != info["n_features"]:
        raise SchemaMismatch(
            f"the model takes {info['n_features']} unnamed features but the data has {len(columns)} columns"
            f"{' besides the target' if target else ''}",
            "fit the model on a DataFrame so it records its features",
        )
    return columns


def _with_training_data(estimator: Any, info: dict[str, Any], options: RegisterOptions, staging: Path) -> dict:
    from mlops_cli import model as model_lib
    from mlops_cli import profile, schema

    frame = io.read_table(options.train_data)  # type: ignore[arg-type]
    if options.target is not None and options.target not in frame.columns:
        raise SchemaMismatch(
            f"{options.train_data}: no target column {options.target!r}", f"columns are {list(frame.columns)[:20]}"
        )
    features = _model_features(info, frame, options.target)
    feature_schema = schema.infer(frame, features)
    io.write_json(staging / PROFILE, profile.build(frame[features]))
    sample = frame.sample(n=min(options.sample_size, len(frame)), random_state=options.seed).sort_index()
    keep = features + ([options.target] if options.target else [])
    predictions = model_lib.predict_frame(estimator, sample[features], task=info["task"], classes=info["classes"])
    io.write_table(staging / SAMPLE, sample[keep].join(predictions).reset_index(drop=True))
    return {
        "features": feature_schema,
        "training_data": {
            **io.fingerprint(options.train_data, rows=len(frame)),  # type: ignore[arg-type]
            **({"path": options.train_data_label} if options.train_data_label else {}),
            "columns": {str(c): str(t) for c, t in frame.dtypes.items()},
            "sample_rows": len(sample),
        },
    }


def _evaluate(estimator: Any, info: dict[str, Any], manifest: dict[str, Any], options: RegisterOptions) -> tuple:
    from mlops_cli import metrics
    from mlops_cli import model as model_lib

    frame = io.read_table(options.eval_data)  # type: ignore[arg-type]
    target = options.target
    if target is None or target not in frame.columns:
        raise SchemaMismatch(f"{options.eval_data}: no target column {target!r}", "pass --target")
    frame = frame[frame[target].notna()]
    if not manifest["features"]:
        manifest = {**manifest, "features": [{"name": n} for n in _model_features(info, frame, target)]}
    scorer = model_lib.scorer_for(estimator, manifest, frame, target)
    results = metrics.evaluate(scorer, n_boot=options.n_boot, seed=options.seed)
    recorded = {**io.fingerprint(options.eval_data, rows=len(frame)), "n_boot": options.n_boot}  # type: ignore
    if options.eval_data_label:
        recorded["path"] = options.eval_data_label
    return results, recorded


def _library_versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("scikit-learn", "numpy", "pandas", "joblib", "scipy", "pyarrow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None  # type: ignore[assignment]
    return out


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _host() -> str:
    import socket

    return socket.gethostname()


def _git_state() -> dict[str, Any] | None:
    """The commit of the current directory (and whether the tree is dirty), when it is a git checkout."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None
