"""Batch scoring for nightly jobs: stream a table through a registered model into a predictions file.

The input is read in record batches and the output written batch by batch, so memory depends on the batch size,
not the file size. The output goes to a temporary file beside OUTPUT that replaces it only when every row is
written: a failure, SIGTERM or Ctrl-C leaves OUTPUT as it was (absent, or the previous file with --overwrite).

With a challenger, a stable hash of the split key sends a fixed share of the keys to the challenger: the same key
goes to the same model in every run, on every machine (see `split_hash`).
"""

from __future__ import annotations

import functools
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_cli import io
from mlops_cli.engines import EngineOptions
from mlops_cli.errors import EmptyInput, InputError, Interrupted, InvalidData, SchemaMismatch
from mlops_cli.profile import QUANTILES
from mlops_cli.registry import Registry, Version
from mlops_cli.report import Report
from mlops_cli.runtime import LoadedModel, LoadOptions, proba_column
from mlops_cli.runtime.contract import text_column_types

ON_INVALID = ("fail", "skip", "null")
REASON_COLUMN = "invalid_reason"
REASON_SEPARATOR = "; "  # between a row's reasons in REASON_COLUMN
QUANTILE_SAMPLE = 100_000  # predictions kept per model for the quantiles: exact up to this many rows scored
SAMPLE_SEED = 0
SPLIT_METHOD = "fnv1a64+splitmix64"
_KEY_SEPARATOR = "\x1f"  # between the parts of a composite split key (ASCII unit separator)


@dataclass
class ScoreOptions:
    id_columns: list[str] = field(default_factory=list)
    keep_columns: list[str] = field(default_factory=list)
    keep_all: bool = False
    batch_size: int = 100_000
    proba: bool = True
    on_invalid: str = "fail"
    challenger: str | None = None
    challenger_share: float = 0.1
    split_key: list[str] = field(default_factory=list)  # default: the first id column
    input_format: str | None = None
    overwrite: bool = False
    load: LoadOptions = LoadOptions()  # --runtime, --strict, --no-pickle
    engine: EngineOptions = EngineOptions()  # --engine, --scheduler
    features: Any = None  # --features: a BatchFeatureOptions (mlops_cli.features.batch); ids completed from a view
    on_progress: Callable[[int, int | None], None] | None = None  # (rows read so far, total rows if known)


def score_batch(registry: Registry, ref: str, input_path: Path, output_path: Path, *, options: ScoreOptions) -> Report:
    """Score every row of `input_path` with `ref` (and the challenger) and write the predictions to `output_path`
    (with `--engine dask`, a folder of Parquet parts, one per input file)."""
    started = time.perf_counter()
    split_key = _check_options(options)
    on_dask = options.engine.name == "dask"
    _check_paths(input_path, output_path, options.overwrite, folder=on_dask)
    input_format = io.detect_format(input_path, options.input_format)
    if on_dask and input_format != "parquet":
        raise InputError(
            f"{input_path}: --engine dask reads Parquet (a file or a folder of them)", "convert the CSV to Parquet"
        )
    if on_dask and options.features is not None:
        raise InputError("--features does not run on --engine dask yet", "drop one of them")
    output_format = "parquet" if on_dask else io.detect_format(output_path)
    parts = io.parts(input_path)  # a missing or empty input fails here, before the models are unpickled
    models = [_Model.load(registry, ref, "champion", options)]
    if options.challenger is not None:
        models.append(_Model.load(registry, options.challenger, "challenger", options))
    features = None
    if options.features is not None:
        from mlops_cli.features.batch import BatchFeatures

        features = BatchFeatures(options.features, *(m.model for m in models))
    plan = _plan(input_path, parts, input_format, output_format, models, options, split_key, features)
    # The input's sha256 is computed in a thread while the rows are scored: hashlib and file reads release the
    # GIL, and so do most of scoring's pyarrow and numpy calls. (Started earlier, it would fight the unpickler's
    # imports for the GIL and slow the start by more than the whole hash costs.)
    fingerprint = io.Background(io.fingerprint, input_path, 0)
    run = _Run(models, plan, options, features=features)
    where = {p: p if len(parts) > 1 else input_path for p in parts}  # what an error message names
    if on_dask:
        engine, interrupted = _score_on_dask(registry, run, input_path, output_path, where, input_format)
    else:
        engine, interrupted = _score_locally(run, input_path, output_path, where, input_format)
    inputs = [{**fingerprint.result(), "rows": run.rows_read}]
    seconds = time.perf_counter() - started
    results = run.results(output_path, output_format, input_format, seconds)
    results["engine"] = engine
    if features is not None:
        results["features"] = features.results()
        features.close()
    report = Report("score-batch", results=results, inputs=inputs, model=models[0].model.summary())
    if run.rows_rejected:
        report.messages.append(
            f"{run.rows_rejected:,} of {run.rows_read:,} rows were not scored "
            f"(--on-invalid {options.on_invalid}); see rejected_by_reason"
        )
    if interrupted is not None:
        report.messages.append(
            f"{interrupted.signal_name} arrived while the finished output was being committed; it was completed"
        )
    return report


def _parquet_options(schema: pa.Schema) -> dict[str, Any]:
    # Dictionary-encoding high-cardinality floats (probabilities) only to fall back costs more than the rest of
    # the write: keep it for the columns where it pays (labels, ids, model names).
    return {"use_dictionary": [f.name for f in schema if not pa.types.is_floating(f.type)]}


def score_file(run: _Run, file: Path, where: Path, fmt: str, write: Callable[[pa.RecordBatch], None]) -> None:
    """Stream one input file through `run` into `write`, batch by batch: the one loop of both engines (and of
    drift-report's scoring on Dask)."""
    row = 0
    options, plan = run.options, run.plan
    for batch in io.iter_batches(
        file, batch_size=options.batch_size, columns=plan.read, column_types=plan.column_types, fmt=fmt
    ):
        write(run.score(batch, where=where, row=row))
        row += batch.num_rows
        if options.on_progress is not None:
            options.on_progress(run.rows_read, plan.total_rows)


def _score_locally(
    run: _Run, input_path: Path, output_path: Path, where: dict[Path, Path], fmt: str
) -> tuple[dict[str, Any], Interrupted | None]:
    """The local engine: the files in order, in this process, into one output file."""
    from mlops_cli.engines import local

    writer = io.TableWriter(
        output_path, run.plan.schema, parquet_options=_parquet_options(run.plan.schema), overwrite=run.options.overwrite
    )
    try:
        with writer:
            for _ in local.map_partitions(lambda file: score_file(run, file, where[file], fmt, writer.write), where):
                pass
            if run.rows_read == 0:
                raise EmptyInput(f"{input_path}: has no rows", "check that the job that writes it finished")
    except Interrupted as exc:
        if not writer.committed:
            raise Interrupted(exc.signum, f"nothing was written; {output_path} is as it was") from None
        # The signal arrived while the finished output was being committed (a commit window): the output is
        # whole and the rest is a report, so the run completes and says so.
        return {"name": "local"}, exc
    return {"name": "local"}, None


# --- the Dask engine ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What a Dask worker needs to score a partition: the registry, the exact versions and their sha256 (the
    client resolved any alias once: a promotion mid-run must not split the run between two models), the plan."""

    registry: Path
    models: tuple[tuple[str, str, str], ...]  # (role, NAME:VERSION, artifact sha256)
    options: ScoreOptions
    plan: _Plan
    folder: Path | None  # where the parts go; None: the caller takes the batches (worker_run, score_file)
    fmt: str


def _score_on_dask(
    registry: Registry, run: _Run, input_path: Path, output_path: Path, where: dict[Path, Path], fmt: str
) -> tuple[dict[str, Any], Interrupted | None]:
    """The Dask engine: one task per input file, each writing its part into a hidden folder beside OUTPUT; the
    client merges the partials in file order and publishes the folder by one rename once every part is written."""
    from mlops_cli.engines import Partition
    from mlops_cli.engines import dask as engine

    options = run.options
    partitions, offset = [], 0
    for i, (file, rows) in enumerate(io.part_rows(input_path)):
        partitions.append(Partition(i, file, offset, rows))
        offset += rows
    if offset == 0:
        raise EmptyInput(f"{input_path}: has no rows", "check that the job that writes it finished")
    refs = tuple((m.role, m.version.ref, m.version.summary()["sha256"]) for m in run.models)
    peaks: list[float] = []
    task_seconds = 0.0
    done = 0

    def progress(i: int, partial: _Partial) -> None:
        nonlocal done
        for m, (_, _, summary) in zip(run.models, partial.models, strict=True):
            m.summary.take_sample(summary)  # now, not in order: the rest of the partial is small
        done += partial.counts[0]
        if options.on_progress is not None:
            options.on_progress(done, offset)

    folder: int | None = None  # the hidden folder's inode: after a signal, whether it became OUTPUT
    described: dict[str, Any] = {}
    try:
        with engine.cluster(options.engine) as cluster, io.atomic_dir(output_path, overwrite=options.overwrite) as tmp:
            folder = tmp.stat().st_ino
            described = cluster.describe()
            job = _Job(registry.root, refs, replace(options, on_progress=None), run.plan, tmp, fmt)
            tasks = [(p, where[p.path]) for p in partitions]
            partials = engine.map_partitions(cluster, _score_partition, tasks, job, on_result=progress)
            for partial in partials:
                run.absorb(partial)
                peaks.append(partial.peak_rss_mb)
                task_seconds += partial.seconds
            stray = {f.name for f in tmp.iterdir()} - {_part_name(p.index) for p in partitions}
            for name in stray:  # a killed worker's unfinished temporary file; its task ran again elsewhere
                (tmp / name).unlink(missing_ok=True)
    except Interrupted as exc:
        if folder is None or not output_path.is_dir() or output_path.stat().st_ino != folder:
            raise Interrupted(exc.signum, f"nothing was written; {output_path} is as it was") from None
        # The signal arrived while the finished folder was being published: OUTPUT is whole, the rest is a report.
        interrupted: Interrupted | None = exc
    else:
        interrupted = None
    engine_block = {
        **described,
        "partitions": len(partitions),
        "worker_peak_rss_mb": max(peaks),
        "task_seconds": task_seconds,
    }
    return engine_block, interrupted


def _part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _score_partition(task: tuple[Any, Path], job: _Job) -> _Partial:
    """On a worker: score one input file into its part (`task`: the partition, and the name its errors give)."""
    started = time.perf_counter()
    partition, name = task
    run = worker_run(partition, job)
    assert job.folder is not None
    target = job.folder / _part_name(partition.index)
    schema = job.plan.schema
    with io.TableWriter(target, schema, parquet_options=_parquet_options(schema), overwrite=True) as writer:
        score_file(run, partition.path, name, job.fmt, writer.write)
    return replace(run.partial(), seconds=time.perf_counter() - started)


def worker_run(partition: Any, job: _Job) -> _Run:
    """On a worker: a run over one partition (`partition.offset` its first row's global index). The models come
    from the registry, each verified against its sha256 before it is unpickled (LoadedModel.load), once per worker
    process."""
    from mlops_cli.engines import dask as engine

    models = []
    for role, ref, sha256 in job.models:
        key = (str(job.registry), ref, sha256, job.options.load, job.options.proba)
        loaded = engine.worker_cached(key, functools.partial(_load_verified, job, ref, sha256))
        models.append(_Model(role, ref, loaded, _Summary(loaded.classes, loaded.with_proba)))
    return _Run(models, job.plan, job.options, first_index=partition.offset)


def worker_job(registry: Registry, model: LoadedModel, input_path: Path, options: ScoreOptions) -> _Job:
    """What Dask workers need to score the Parquet files of `input_path` with `model` (resolved and verified on the
    client) through score-batch's worker path, for a caller that takes the output batches itself (drift-report):
    the exact version, its sha256 and the plan, checked against every file's columns."""
    models = [_Model("champion", model.ref, model, _Summary(model.classes, model.with_proba))]
    plan = _plan(input_path, io.parts(input_path), "parquet", "parquet", models, options, [])
    refs = tuple((m.role, m.version.ref, m.version.summary()["sha256"]) for m in models)
    return _Job(registry.root, refs, replace(options, on_progress=None), plan, None, "parquet")


def _load_verified(job: _Job, ref: str, sha256: str) -> LoadedModel:
    from mlops_cli.errors import IntegrityError

    loaded = LoadedModel.load(Registry(job.registry), ref, job.options.load, proba=job.options.proba)
    if loaded.summary().get("sha256") != sha256:
        raise IntegrityError(
            f"{ref} on this worker is not the artifact the client verified (sha256 differs)",
            "give every worker the same registry",
        )
    return loaded


# --- options and paths ----------------------------------------------------------------------------------------


def _check_options(options: ScoreOptions) -> list[str]:
    """The split key columns; InputError for options that contradict each other (the CLI catches most first)."""
    if options.on_invalid not in ON_INVALID:
        raise InputError(f"--on-invalid {options.on_invalid!r}", f"use one of {', '.join(ON_INVALID)}")
    if options.batch_size < 1:
        raise InputError(f"--batch-size {options.batch_size}", "use a positive number of rows")
    if options.keep_all and options.keep_columns:
        raise InputError("--keep-all and --keep-columns exclude each other", "pass one of them")
    if options.challenger is None:
        if options.split_key:
            raise InputError("--split-key needs --challenger", "name the challenger model, or drop --split-key")
        return []
    if not 0 < options.challenger_share < 1:
        raise InputError(f"--challenger-share {options.challenger_share}", "use a share between 0 and 1, e.g. 0.1")
    key = options.split_key or options.id_columns[:1]
    if not key:
        raise InputError("a challenger run needs a split key", "pass --split-key COL (or an --id-column)")
    return list(key)


def _check_paths(input_path: Path, output_path: Path, overwrite: bool, *, folder: bool = False) -> None:
    if folder:
        io.check_output_dir(output_path, overwrite)
    else:
        io.check_output(output_path, overwrite)
    if not input_path.exists():
        return  # reading it raises the one clear error
    source, target = input_path.resolve(), output_path.resolve()
    if target == source or (source.is_dir() and source in target.parents):
        raise InputError(
            f"{output_path} would overwrite or join the input {input_path}",
            "write the predictions somewhere else: inputs are never modified",
        )


# --- models ---------------------------------------------------------------------------------------------------


class _Summary:
    """The distribution of one model's predictions, accumulated batch by batch in bounded memory, and mergeable:
    partitions scored apart (Dask workers) merge into the summary one process would have built.

    Counts and class shares are exact. Means fold the per-batch sums (and, for regressors, per-batch moments by
    Chan et al.'s pairwise update) in row order, so any partitioning gives the same bits as one pass. Quantiles come
    from a uniform random sample of QUANTILE_SAMPLE predictions: the rows with the smallest keys, a key being a hash
    of the row's global index (`sample_keys`), so the sample depends neither on the batch size nor on the
    partitioning; up to QUANTILE_SAMPLE rows scored they are exact.
    """

    def __init__(self, classes: np.ndarray | None, with_proba: bool) -> None:
        self.classes = classes
        self.with_proba = with_proba
        self.scored = 0
        self.class_counts = np.zeros(len(classes) if classes is not None else 0, dtype=np.int64)
        width = len(classes) if with_proba and classes is not None else 1
        self.low, self.high = np.inf, -np.inf
        self._width = width
        self._sums: list[np.ndarray] = []  # per batch, in row order: folded by result()
        self._moments: list[tuple[int, float, float]] = []  # regressor, per batch: rows, mean, squared deviations
        self._keys: list[np.ndarray] = []  # the sample: chunks of (key, values), compacted now and then
        self._values: list[np.ndarray] = []
        self._held = 0
        self._threshold: np.uint64 | None = None  # once compacted: a key at or above this never enters the sample

    def add(self, prediction: np.ndarray, proba: np.ndarray | None, keys: np.ndarray) -> None:
        n = len(prediction)
        if n == 0:
            return
        values: np.ndarray | None = proba
        if self.classes is not None:
            for i, label in enumerate(self.classes):
                self.class_counts[i] += int(np.count_nonzero(prediction == label))
        else:
            values = prediction.astype(float)[:, None]
            batch_mean = float(values.mean())
            self._moments.append((n, batch_mean, float(((values - batch_mean) ** 2).sum())))
            self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))
        self.scored += n
        if values is None:  # a classifier without probabilities: class shares only
            return
        self._sums.append(np.array([values[:, i].sum() for i in range(values.shape[1])]))  # 20x faster than axis=0
        self._sample(keys, values)

    def _sample(self, keys: np.ndarray, values: np.ndarray) -> None:
        if self._threshold is not None:
            enter = keys < self._threshold
            if not enter.all():
                keys, values = keys[enter], values[enter]
        if len(keys):
            self._keys.append(keys)
            self._values.append(values)
            self._held += len(keys)
            if self._held >= 2 * QUANTILE_SAMPLE:
                self._compact()

    def take_sample(self, other: _Summary) -> None:
        """Move `other`'s sample into this one's. The sample is a bottom-k by key, so order does not matter: the
        client takes each partition's sample as it arrives and holds at most 2 x QUANTILE_SAMPLE rows, whatever
        the number of partitions."""
        for keys, values in zip(other._keys, other._values, strict=True):
            self._sample(keys, values)
        other._keys, other._values, other._held = [], [], 0

    def merge(self, other: _Summary) -> None:
        """Add the summary of the rows that follow this one's (the next partition)."""
        self.scored += other.scored
        self.class_counts += other.class_counts
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)
        self._sums += other._sums
        self._moments += other._moments
        for keys, values in zip(other._keys, other._values, strict=True):
            self._sample(keys, values)

    def _compact(self) -> np.ndarray:
        """Keep the QUANTILE_SAMPLE rows with the smallest keys; return their values."""
        keys = np.concatenate(self._keys) if self._keys else np.empty(0, dtype=np.uint64)
        values = np.concatenate(self._values) if self._values else np.empty((0, self._width))
        if len(keys) > QUANTILE_SAMPLE:
            keep = np.argpartition(keys, QUANTILE_SAMPLE)[:QUANTILE_SAMPLE]
            keys, values = keys[keep], values[keep]
            self._threshold = keys.max()
        self._keys, self._values, self._held = [keys], [values], len(keys)
        return values

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": self.scored, "quantiles_exact": self.scored <= QUANTILE_SAMPLE}
        if self.scored == 0:
            return out
        sample = self._compact()
        quantiles = np.quantile(sample, QUANTILES, axis=0) if len(sample) else None
        if self.classes is None:
            count, mean, m2 = 0, 0.0, 0.0
            for n, batch_mean, squares in self._moments:
                delta = batch_mean - mean
                total = count + n
                m2 += squares + delta * delta * count * n / total
                mean += delta * n / total
                count = total
            std = (m2 / (count - 1)) ** 0.5 if count > 1 else 0.0
            out.update(mean=mean, std=std, min=self.low, max=self.high)
            if quantiles is not None:
                out["quantiles"] = _quantiles(quantiles[:, 0])
            return out
        labels = [str(c) for c in self.classes]
        out["class_shares"] = dict(zip(labels, (self.class_counts / self.scored).tolist(), strict=True))
        if self.with_proba and quantiles is not None:
            sums = np.zeros(self._width)
            for batch_sums in self._sums:
                sums += batch_sums
            out["proba_mean"] = dict(zip(labels, (sums / self.scored).tolist(), strict=True))
            out["proba_quantiles"] = {label: _quantiles(quantiles[:, i]) for i, label in enumerate(labels)}
        return out


def sample_keys(first: int, n: int) -> np.ndarray:
    """The quantile sample's key of rows first .. first + n - 1 (global row indices): splitmix64's output for that
    index of its stream (seeded by SAMPLE_SEED). A bijection on 64 bits, so keys never tie."""
    index = np.arange(first + 1, first + n + 1, dtype=np.uint64)
    return splitmix64(index * _GOLDEN + np.uint64(SAMPLE_SEED))


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"{q:g}": float(v) for q, v in zip(QUANTILES, values, strict=True)}


@dataclass
class _Model:
    role: str
    ref: str
    model: LoadedModel
    summary: _Summary
    routed: int = 0
    rejected: int = 0

    @classmethod
    def load(cls, registry: Registry, ref: str, role: str, options: ScoreOptions) -> _Model:
        model = LoadedModel.load(registry, ref, options.load, proba=options.proba)
        return cls(role, ref, model, _Summary(model.classes, model.with_proba))

    @property
    def version(self) -> Version:
        return self.model.version  # type: ignore[return-value]  # loaded from the registry

    @property
    def task(self) -> str:
        return self.model.spec.task

    def result(self, rows_read: int) -> dict[str, Any]:
        return {
            "role": self.role,
            "ref": self.ref,
            **self.model.summary(),
            "task": self.task,
            "estimator_class": self.model.spec.estimator_class,
            "rows_routed": self.routed,
            "share": self.routed / rows_read if rows_read else None,
            "rows_scored": self.summary.scored,
            "rows_rejected": self.rejected,
            "prediction": self.summary.result(),
        }


# --- planning: what to read, what to write --------------------------------------------------------------------


@dataclass
class _Plan:
    read: list[str]
    kept: list[str]
    split_key: list[str]
    column_types: dict[str, Any] | None
    schema: pa.Schema
    classes: list[Any]
    total_rows: int | None


def _plan(
    input_path: Path,
    parts: list[Path],
    input_format: str,
    output_format: str,
    models: list[_Model],
    options: ScoreOptions,
    split_key: list[str],
    features: Any = None,
) -> _Plan:
    """Check every file's columns against the models and options, before any output exists."""
    schemas = [io.schema(part, input_format) for part in parts]
    first = schemas[0]
    kept = list(first.names) if options.keep_all else list(dict.fromkeys(options.id_columns + options.keep_columns))
    provided = features.provided if features is not None else []  # what the feature view adds to each row
    for part, part_schema in zip(parts, schemas, strict=True):
        where = str(part) if len(parts) > 1 else str(input_path)
        for m in models:
            m.model.spec.require_features([*part_schema.names, *provided], where=where)
        absent = [c for c in dict.fromkeys(kept + split_key) if c not in part_schema.names]
        if absent:
            raise SchemaMismatch(
                f"{where} has no column(s) {absent} (named by --id-column, --keep-columns or --split-key)",
                f"its columns are {part_schema.names[:20]}",
            )
    needed = list(dict.fromkeys(f for m in models for f in m.model.spec.feature_names))
    read = list(dict.fromkeys(kept + needed + split_key))
    if features is not None:
        features.plan(list(first.names), needed)
        read = [c for c in read if c not in features.looked_up] + [features.options.entity_column]
        read = list(dict.fromkeys(read))
    column_types = text_column_types(read) if input_format == "csv" else None

    champion = models[0]
    if any(m.task != champion.task for m in models):
        raise SchemaMismatch(
            f"{models[1].version.ref} is a {models[1].task}, {champion.version.ref} a {champion.task}",
            "a challenger must do the champion's job",
        )
    classes: list[Any] = []
    for m in models:
        if m.model.with_proba:
            classes += [c for c in m.model.classes.tolist() if c not in classes]  # type: ignore[union-attr]
    outputs = [("prediction", _prediction_type(models))]
    outputs += [(proba_column(c), pa.float64()) for c in classes]
    outputs += [("model_name", pa.string()), ("model_version", pa.string())]
    if options.on_invalid == "null":
        outputs.append((REASON_COLUMN, pa.string()))
    if features is not None and features.options.on_missing == "fill":
        from mlops_cli.features.batch import FILLED_COLUMN

        outputs.append((FILLED_COLUMN, pa.string()))
    clash = [c for c in kept if c in {name for name, _ in outputs}]
    if clash:
        raise SchemaMismatch(
            f"input column(s) {clash} would clash with the output columns of the same name",
            "keep other columns (--keep-columns), or rename them",
        )
    fields = [pa.field(c, _kept_type(first.field(c).type, input_format, output_format)) for c in kept]
    nested = [f.name for f in fields if pa.types.is_nested(f.type)]
    if nested and output_format == "csv":
        raise SchemaMismatch(
            f"column(s) {nested} hold lists, maps or structs, which a CSV file cannot hold",
            "write Parquet, or keep other columns",
        )
    out_schema = pa.schema(fields + [pa.field(name, type_) for name, type_ in outputs])
    return _Plan(read, kept, split_key, column_types, out_schema, classes, io.row_count(input_path, input_format))


def _prediction_type(models: list[_Model]) -> pa.DataType:
    types = set()
    for m in models:
        classes = m.model.classes
        try:
            types.add(pa.array(classes).type if classes is not None else pa.float64())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            types.add(pa.string())  # mixed-type class labels: written as text
    if len(types) > 1:
        raise SchemaMismatch(
            f"the models' predictions have different types ({', '.join(map(str, types))})",
            "a challenger must predict the champion's labels",
        )
    return types.pop()


def _kept_type(type_: pa.DataType, input_format: str, output_format: str) -> pa.DataType:
    if input_format == "csv":
        return pa.string()  # CSV columns are read as text and copied as they are: ids keep their leading zeros
    if pa.types.is_dictionary(type_) and output_format == "csv":
        return type_.value_type
    return type_


# --- scoring --------------------------------------------------------------------------------------------------


@dataclass
class _Partial:
    """One partition's counts and prediction summaries, sent back from a worker."""

    counts: tuple[int, int, int, int, int]  # rows read, scored, rejected, written, without a split key
    batches: int
    reasons: dict[str, int]
    models: list[tuple[int, int, _Summary]]  # per model: rows routed, rows rejected, summary
    peak_rss_mb: float
    seconds: float = 0.0  # the task's wall time on its worker


class _Run:
    """Scores batch after batch and keeps the counts the report needs. A run on a Dask worker covers one partition
    (`first_index` is the global index of its first row) and returns its `partial()`; the client `absorb`s the
    partials in partition order."""

    def __init__(
        self, models: list[_Model], plan: _Plan, options: ScoreOptions, first_index: int = 0, features: Any = None
    ) -> None:
        self.models = models
        self.features = features
        self._filled: list[str | None] | None = None
        self.plan = plan
        self.options = options
        self.first_index = first_index
        self.rows_read = self.rows_scored = self.rows_rejected = self.rows_written = self.rows_without_key = 0
        self.batches = 0
        self.reasons: Counter[str] = Counter()
        self._pred_type = plan.schema.field("prediction").type
        self._class_index = {c: i for i, c in enumerate(plan.classes)}

    def score(self, batch: pa.RecordBatch, *, where: Path, row: int) -> pa.RecordBatch:
        """The output rows of `batch`, whose first row is row `row` (0-based) of the file `where`."""
        n = batch.num_rows
        keys = sample_keys(self.first_index + self.rows_read, n)
        if self.features is not None:
            batch, filled = self.features.complete(batch, self.rows_read, self._challenger_rows(batch))
            self._filled = filled if self.features.options.on_missing == "fill" else None
        self.rows_read += n
        self.batches += 1
        routes = self._routes(batch)
        invalid = np.zeros(n, dtype=bool)
        reasons: dict[str, np.ndarray] = {}
        scored: list[tuple[_Model, np.ndarray | None, np.ndarray, np.ndarray | None]] = []
        for m, rows in zip(self.models, routes, strict=True):
            if rows is not None and len(rows) == 0:
                continue
            part = batch if rows is None else batch.take(pa.array(rows))
            m.routed += part.num_rows
            answer = m.model.score(part)
            bad = answer.invalid
            if bad.any():
                m.rejected += int(bad.sum())
                for label, mask in answer.reasons.items():
                    full = np.zeros(n, dtype=bool)
                    full[rows[mask] if rows is not None else mask] = True
                    reasons[label] = reasons[label] | full if label in reasons else full
                invalid[rows[bad] if rows is not None else bad] = True
                if self.options.on_invalid == "fail":
                    continue
                rows = rows[~bad] if rows is not None else np.flatnonzero(~bad)
            if len(answer.prediction) == 0:
                continue
            prediction, proba = answer.prediction, answer.proba
            m.summary.add(prediction, proba, keys if rows is None else keys[rows])
            scored.append((m, rows, prediction, proba))
        if invalid.any() and self.options.on_invalid == "fail":
            raise self._invalid_error(batch, where, row, reasons)
        n_invalid = int(invalid.sum())
        self.rows_rejected += n_invalid
        self.rows_scored += n - n_invalid
        self.reasons.update({label: int(mask.sum()) for label, mask in reasons.items()})
        keep = ~invalid if self.options.on_invalid == "skip" and n_invalid else None
        out = self._assemble(batch, n, routes, scored, invalid, reasons, keep)
        self.rows_written += out.num_rows
        return out

    def partial(self) -> _Partial:
        """What the client needs of this run (no models: those stay on the worker)."""
        for m in self.models:
            if m.summary._held > QUANTILE_SAMPLE:
                m.summary._compact()  # ship at most the sample's size
        return _Partial(
            counts=(self.rows_read, self.rows_scored, self.rows_rejected, self.rows_written, self.rows_without_key),
            batches=self.batches,
            reasons=dict(self.reasons),
            models=[(m.routed, m.rejected, m.summary) for m in self.models],
            peak_rss_mb=peak_rss_mb(),
        )

    def absorb(self, partial: _Partial) -> None:
        """Add the partial of the partition that follows the rows absorbed so far."""
        read, scored, rejected, written, without_key = partial.counts
        self.rows_read += read
        self.rows_scored += scored
        self.rows_rejected += rejected
        self.rows_written += written
        self.rows_without_key += without_key
        self.batches += partial.batches
        self.reasons.update(partial.reasons)
        for m, (routed, model_rejected, summary) in zip(self.models, partial.models, strict=True):
            m.routed += routed
            m.rejected += model_rejected
            m.summary.merge(summary)

    def _challenger_rows(self, batch: pa.RecordBatch) -> np.ndarray | None:
        """Before the lookup: the rows the challenger will answer (so a filled feature takes its profile's value),
        when the file holds the split key (a key looked up from the view: None, the champion's profile)."""
        if len(self.models) == 1 or not all(c in batch.schema.names for c in self.plan.split_key):
            return None
        return challenger_rows([batch.column(c) for c in self.plan.split_key], self.options.challenger_share)[0]

    def _routes(self, batch: pa.RecordBatch) -> list[np.ndarray | None]:
        """Row indices per model; None means every row of the batch goes to the champion."""
        if len(self.models) == 1:
            return [None]
        to_challenger, has_key = challenger_rows(
            [batch.column(c) for c in self.plan.split_key], self.options.challenger_share
        )
        self.rows_without_key += int(np.count_nonzero(~has_key))
        return [np.flatnonzero(~to_challenger), np.flatnonzero(to_challenger)]

    def _assemble(
        self,
        batch: pa.RecordBatch,
        n: int,
        routes: list[np.ndarray | None],
        scored: list[tuple[_Model, np.ndarray | None, np.ndarray, np.ndarray | None]],
        invalid: np.ndarray,
        reasons: dict[str, np.ndarray],
        keep: np.ndarray | None,
    ) -> pa.RecordBatch:
        plan = self.plan
        columns: list[pa.Array] = []
        kept_batch = batch if keep is None else batch.filter(pa.array(keep))
        for name in plan.kept:
            columns.append(_as_type(kept_batch.column(name), plan.schema.field(name).type, name))

        def select(values: np.ndarray) -> np.ndarray:
            return values if keep is None else values[keep]

        single = len(scored) == 1 and scored[0][1] is None
        if single:
            m, _, prediction, proba = scored[0]
            columns.append(pa.array(select(prediction), type=self._pred_type))
            for label in plan.classes:
                columns.append(pa.array(select(proba[:, self._model_class(m, label)])))  # type: ignore[index]
        else:
            dtype = np.result_type(*[p.dtype for _, _, p, _ in scored]) if scored else np.dtype(object)
            prediction_all = np.full(n, None, dtype=object) if dtype.kind == "O" else np.zeros(n, dtype=dtype)
            predicted = np.zeros(n, dtype=bool)
            proba_all = np.full((n, len(plan.classes)), np.nan)
            proba_set = np.zeros((n, len(plan.classes)), dtype=bool)
            for m, rows, prediction, proba in scored:
                idx = rows if rows is not None else np.arange(n)
                prediction_all[idx] = prediction
                predicted[idx] = True
                if proba is not None:
                    for j, label in enumerate(plan.classes):
                        i = self._model_class(m, label)
                        if i is not None:
                            proba_all[idx, j] = proba[:, i]
                            proba_set[idx, j] = True
            columns.append(pa.array(select(prediction_all), type=self._pred_type, mask=select(~predicted)))
            for j in range(len(plan.classes)):
                columns.append(pa.array(select(proba_all[:, j]), mask=select(~proba_set[:, j])))
        rows_out = n if keep is None else int(keep.sum())
        if len(self.models) == 1:
            version = self.models[0].version
            columns += [pa.repeat(pa.scalar(version.name), rows_out), pa.repeat(pa.scalar(version.version), rows_out)]
        else:
            to_challenger = np.zeros(n, dtype=bool)
            to_challenger[routes[1]] = True  # type: ignore[index]
            mask = pa.array(select(to_challenger))
            champion, challenger = self.models[0].version, self.models[1].version
            columns.append(pc.if_else(mask, challenger.name, champion.name))
            columns.append(pc.if_else(mask, challenger.version, champion.version))
        if self.options.on_invalid == "null":
            columns.append(pa.array(_reason_texts(n, reasons), type=pa.string()))
        if self._filled is not None:
            filled = np.array(self._filled, dtype=object)
            columns.append(pa.array(select(filled).tolist(), type=pa.string()))
        return pa.RecordBatch.from_arrays(columns, schema=plan.schema)

    def _model_class(self, m: _Model, label: Any) -> int | None:
        classes = m.model.classes
        if classes is None:
            return None
        hits = np.flatnonzero(classes == label)
        return int(hits[0]) if len(hits) else None

    def _invalid_error(
        self, batch: pa.RecordBatch, where: Path, offset: int, reasons: dict[str, np.ndarray]
    ) -> InvalidData:
        details = []
        for label, mask in reasons.items():
            rows = np.flatnonzero(mask)
            column = label.rsplit(": ", 1)[0]
            shown = ", ".join(f"{offset + r + 1:,}" for r in rows[:5]) + (
                f" and {len(rows) - 5:,} more" if len(rows) > 5 else ""
            )
            value = batch.column(column)[int(rows[0])].as_py()
            example = "" if value is None else f", e.g. {value!r}"
            details.append(f"{label} (row{'s' if len(rows) > 1 else ''} {shown}{example})")
        total = int(np.logical_or.reduce(list(reasons.values())).sum())
        return InvalidData(
            f"{where}: {total:,} row(s) cannot be scored: {'; '.join(details)}",
            "fix the data, or pass --on-invalid skip (leave such rows out) or --on-invalid null "
            "(keep them with a null prediction and the reason)",
        )

    def results(self, output_path: Path, output_format: str, input_format: str, seconds: float) -> dict[str, Any]:
        split = None
        if len(self.models) > 1:
            split = {
                "key": self.plan.split_key,
                "challenger_share": self.options.challenger_share,
                "observed_share": self.models[1].routed / self.rows_read if self.rows_read else None,
                "method": SPLIT_METHOD,
                "rows_without_key": self.rows_without_key,
            }
        return {
            "input_format": input_format,
            "output": {
                "path": str(output_path),
                "format": output_format,
                "rows": self.rows_written,
                "columns": self.plan.schema.names,
            },
            "rows_read": self.rows_read,
            "rows_scored": self.rows_scored,
            "rows_rejected": self.rows_rejected,
            "rows_written": self.rows_written,
            "rejected_by_reason": dict(self.reasons),
            "on_invalid": self.options.on_invalid,
            "batch_size": self.options.batch_size,
            "batches": self.batches,
            "models": [m.result(self.rows_read) for m in self.models],
            "split": split,
            "wall_seconds": seconds,
            "rows_per_second": self.rows_read / seconds if seconds > 0 else None,
            "peak_rss_mb": peak_rss_mb(),
        }


def _as_type(column: pa.Array, type_: pa.DataType, name: str) -> pa.Array:
    if column.type == type_:
        return column
    try:
        return column.cast(type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaMismatch(
            f"column {name!r} is {column.type} in one input file and {type_} in another",
            "give every file of the folder the same column types",
        ) from exc


def _reason_texts(n: int, reasons: dict[str, np.ndarray]) -> list[str | None]:
    texts: list[str | None] = [None] * n
    for label, mask in reasons.items():
        for i in np.flatnonzero(mask).tolist():
            texts[i] = label if texts[i] is None else f"{texts[i]}{REASON_SEPARATOR}{label}"
    return texts


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


# --- the challenger split -------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def key_text(columns: list[pa.Array]) -> pa.Array:
    """The canonical text of a split key: each value as Arrow casts it to a string (integers in decimal, integral
    floats without `.0`, booleans as true/false), the parts of a composite key joined by U+001F. Null if any part
    is null. CSV columns are text already, so a key hashes the same from CSV and from Parquet."""
    texts = []
    for column in columns:
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            try:
                column = pc.cast(column, pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatch(
                    f"a split key column of type {column.type} has no text form", "split on an integer or text column"
                ) from exc
        texts.append(column)
    return texts[0] if len(texts) == 1 else pc.binary_join_element_wise(*texts, _KEY_SEPARATOR)


def fnv1a64(texts: pa.Array) -> np.ndarray:
    """64-bit FNV-1a of each string's UTF-8 bytes (null counts as the empty string), vectorised over the batch."""
    texts = pc.cast(pc.fill_null(texts, ""), pa.large_string())
    n = len(texts)
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[texts.offset : texts.offset + n + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.empty(0, dtype=np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    by_length = np.argsort(lengths, kind="stable")[::-1]  # longest first: the strings still going are a prefix
    ascending = lengths[by_length[::-1]]
    for i in range(int(lengths.max(initial=0))):
        live = by_length[: n - int(np.searchsorted(ascending, i, side="right"))]
        hashes[live] = (hashes[live] ^ data[starts[live] + i].astype(np.uint64)) * _FNV_PRIME
    return hashes


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: spreads FNV's weak low bits over all 64 (Steele, Lea & Flood 2014)."""
    z = values.astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def split_hash(text: pa.Array) -> np.ndarray:
    """A number in [0, 1) per key text (see `key_text`), a pure function of the text: the same in every run, process
    and machine (Python's hash() is salted per process and would not be): splitmix64(fnv1a64(text)) >> 11, / 2^53."""
    return (splitmix64(fnv1a64(text)) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def challenger_rows(columns: list[pa.Array], share: float) -> tuple[np.ndarray, np.ndarray]:
    """(goes to the challenger, has a key) per row: the challenger takes the rows whose `split_hash` is below
    `share`. A row without a key value goes to the champion: it cannot be assigned consistently, and the champion
    is what it would get without the experiment."""
    text = key_text(columns)
    has_key = text.is_valid().to_numpy(zero_copy_only=False)
    return (split_hash(text) < share) & has_key, has_key
