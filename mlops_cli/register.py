"""Registering a model: inspect the file, profile its training data, score its reference sample and eval data
through the runtime, store the extra formats asked for, and publish the version atomically (registry.add_version).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_cli import io
from mlops_cli.errors import RegistryError, SchemaMismatch
from mlops_cli.refs import validate_label, validate_name
from mlops_cli.registry import (
    ARTIFACT,
    MANIFEST_VERSION,
    PROFILE,
    SAMPLE,
    Registry,
    Version,
    host,
    library_versions,
    user,
)
from mlops_cli.report import utc_now
from mlops_cli.runtime import LoadedModel, ModelSpec, formats
from mlops_cli.runtime.formats import FormatOptions


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
    formats: FormatOptions = field(default_factory=FormatOptions)
    # What to record as the data's path when the files are temporary (retrain's training window and holdout).
    train_data_label: str | None = None
    eval_data_label: str | None = None


def register(registry: Registry, model_file: Path, name: str, options: RegisterOptions) -> tuple[Version, bool]:
    """Register `model_file` under `name`: inspect it, profile its data, evaluate it, publish atomically. Returns
    the version and whether it was created (False: the same artifact was already registered, a CI retry). Formats
    that could not be stored say why in the manifest's `formats` block."""
    from mlops_cli.runtime.artifacts import describe, load_file

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
    estimator, _ = load_file(model_file)
    info = describe(estimator)
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
        checks: list[tuple[str, Any]] = []  # rows the extra formats are checked on
        if options.train_data is not None:
            update, sample = _with_training_data(estimator, info, options, staging)
            manifest.update(update)
            files.update({f: _file_entry(staging / f) for f in (PROFILE, SAMPLE)})
            checks.append(("reference sample", sample))
        if options.eval_data is not None:
            manifest["eval_metrics"], manifest["eval_data"], labelled = _evaluate(estimator, info, manifest, options)
            checks.append(("eval data", labelled))
        if options.formats.formats:
            spec = ModelSpec.from_manifest(manifest)
            manifest["formats"], stored = formats.store(estimator, spec, checks, options.formats)
            for file, data in stored.items():
                io.write_atomic(staging / file, functools.partial(_write, data))  # durable before publishing
                files[file] = _file_entry(staging / file)
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


def _write(data: bytes, fh: Any) -> None:
    fh.write(data)


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
        "libraries": library_versions(),
        "registered_by": {"user": user(), "host": host()},
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


def _with_training_data(
    estimator: Any, info: dict[str, Any], options: RegisterOptions, staging: Path
) -> tuple[dict[str, Any], Any]:
    """The manifest's features and training-data block; writes the profile and the reference sample (with the
    model's predictions, scored through the runtime as every later command will). Returns the sample too."""
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
    spec = ModelSpec.from_manifest({**_manifest_view(info, options), "features": feature_schema})
    model = LoadedModel.of(estimator, spec, probe=sample[features])
    predictions = model.score(sample[features]).frame(sample.index)  # rows outside the contract: no prediction
    io.write_table(staging / SAMPLE, sample[keep].join(predictions).reset_index(drop=True))
    block = {
        "features": feature_schema,
        "training_data": {
            **io.fingerprint(options.train_data, rows=len(frame)),  # type: ignore[arg-type]
            **({"path": options.train_data_label} if options.train_data_label else {}),
            "columns": {str(c): str(t) for c, t in frame.dtypes.items()},
            "sample_rows": len(sample),
        },
    }
    return block, sample[features]


def _manifest_view(info: dict[str, Any], options: RegisterOptions) -> dict[str, Any]:
    """What the runtime needs of a manifest still being built."""
    return {
        **{k: info[k] for k in ("estimator_class", "task", "classes")},
        "target": options.target,
        "input_contract": {"accepts_missing": options.accepts_missing, "accepts_unseen": options.accepts_unseen},
    }


def _evaluate(estimator: Any, info: dict[str, Any], manifest: dict[str, Any], options: RegisterOptions) -> tuple:
    """Eval metrics with bootstrap CIs, the eval data's fingerprint, and the labelled rows (for the format checks)."""
    from mlops_cli import metrics
    from mlops_cli.runtime import labelled

    frame = io.read_table(options.eval_data)  # type: ignore[arg-type]
    target = options.target
    if target is None or target not in frame.columns:
        raise SchemaMismatch(f"{options.eval_data}: no target column {target!r}", "pass --target")
    frame = frame[frame[target].notna()]
    if not manifest["features"]:
        manifest = {**manifest, "features": [{"name": n} for n in _model_features(info, frame, target)]}
    model = LoadedModel.of(estimator, ModelSpec.from_manifest(manifest))
    scorer = labelled.scorer(model, frame, target, where=str(options.eval_data))
    results = metrics.evaluate(scorer, n_boot=options.n_boot, seed=options.seed)
    recorded = {**io.fingerprint(options.eval_data, rows=len(frame)), "n_boot": options.n_boot}  # type: ignore
    if options.eval_data_label:
        recorded["path"] = options.eval_data_label
    return results, recorded, frame[model.spec.feature_names]


def _git_state() -> dict[str, Any] | None:
    """The commit of the current directory (and whether the tree is dirty), when it is a git checkout."""
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
