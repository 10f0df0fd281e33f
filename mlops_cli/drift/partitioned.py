"""drift-report on a Dask cluster: both sides read in partitions on the workers, every statistic exact.

The client never holds a column. Each statistic comes from partials that merge into the local engine's number:

  * per file (`_scan`): rows, nulls, infinities, finite count, whether every value is whole, a few order statistics
    (to choose range splitters) and, for categories, the value counts (merged by sum, in first-appearance order, so
    the top categories tie-break as value_counts does);
  * per numeric column, a range partition: the splitters cut the values into R disjoint ranges (s_j-1, s_j]; one
    task per range reads the values in its range from every file and sorts them (a distributed sort: ties never
    straddle two ranges), for a batch of columns at once (one read of each file per range task; BATCH_VALUES
    bounds what the cluster holds). Its result stays on the cluster for the passes that follow, whose tasks for
    every column of the batch are submitted together;
  * pass A per range: counts, distinct values, point masses, sums, ends;
  * pass B per range, given the counts of the ranges before it: the two empirical CDFs at each of its values, so
    KS = max |F1 - F2| and Wasserstein-1 = sum |F1 - F2| x step are exact (the step from a range's last value to the
    next range's first is added here); the order statistics the PSI edges and the histogram need (quantiles are an
    exact select: the rank tells the range); squared deviations from the mean for the std;
  * pass C per range: counts below each PSI and histogram edge, summed into the shares.
Small samples (<= 10,000 values a side) are fetched whole for scipy's exact KS p-value, as the local engine does.

A model's predictions (drift-report --model) are scored on the workers through score-batch's worker path and held
there as tables, one per file: a side's pieces are then futures of those tables, compared by the same passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_cli import io
from mlops_cli.drift import kinds, stats
from mlops_cli.drift.decision import DriftOptions
from mlops_cli.errors import EmptyInput, InputError, UnreadableFile

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from mlops_cli.engines.dask import Cluster
    from mlops_cli.runtime import LoadedModel, Scored

SPLIT_POINTS = 64  # order statistics per file and column that the range splitters are chosen from
RANGES_PER_WORKER = 2
BATCH_VALUES = 50_000_000  # values (both sides) of the numeric columns the cluster holds at once: 400 MB in all


@dataclass(frozen=True)
class Side:
    """A dataset as the workers read it: its files, in the local engine's order, and their unified schema. The
    pieces may also be futures of Arrow tables held on the cluster (a model's predictions, scored there): a task
    given one as an argument receives the table."""

    path: Path
    files: tuple[Any, ...]  # Path | distributed.Future of a pa.Table
    schema: Any  # pa.Schema: the files' types promoted as read_table's concat promotes them
    rows: int

    def release(self) -> None:
        """Let the cluster free the tables this side holds there."""
        for piece in self.files:
            if not isinstance(piece, Path):
                piece.release()

    @classmethod
    def open(cls, path: Path, fmt: str | None) -> Side:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = io.parts(path)
        if io.detect_format(path, fmt) != "parquet":
            raise InputError(f"{path}: --engine dask reads Parquet (a file or a folder of them)", "convert it")
        try:
            metas = [pq.read_metadata(f) for f in files]
        except io.read_errors() as exc:
            raise UnreadableFile(f"{path}: cannot read ({io.first_line(exc)})", "check the file") from exc
        schemas = [m.schema.to_arrow_schema() for m in metas]
        io.same_columns(files, [s.names for s in schemas])
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        rows = sum(m.num_rows for m in metas)
        if rows == 0:
            raise EmptyInput(f"{path}: has no rows", "check that the job that writes it finished")
        return cls(path, tuple(files), schema, rows)


def _read(file: Path | pa.Table, schema: pa.Schema, columns: Sequence[str]) -> pd.DataFrame:
    """One file's (or held table's) columns, cast to the dataset's types and converted as the local engine converts
    the whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = list(columns)
    try:
        table = file if isinstance(file, pa.Table) else pq.read_table(file, columns=columns)
        table = table.select(columns).cast(pa.schema([schema.field(c) for c in columns]))
    except io.read_errors() as exc:
        raise UnreadableFile(f"{file}: cannot read ({io.first_line(exc)})", "check the file") from exc
    return io.to_pandas(table)


def _numbers(values: pd.Series) -> np.ndarray | None:
    """The column as floats (NaN for nulls), or None when it is not numeric: kinds._numbers' conversion."""
    import pandas as pd

    try:
        return pd.to_numeric(values, errors="raise").to_numpy(dtype=float, na_value=np.nan, copy=True)
    except (ValueError, TypeError):
        return None


# --- pass 0, per file ------------------------------------------------------------------------------------------


def _scan(task: tuple[Path, Any, list[str], list[str]]) -> dict[str, dict[str, Any]]:
    """On a worker: what each column of one file contributes before any range is known."""
    import pandas as pd

    file, schema, numbers, others = task
    frame = _read(file, schema, numbers + others)
    out: dict[str, dict[str, Any]] = {}
    for name in numbers + others:
        series = frame[name]
        part: dict[str, Any] = {"rows": len(series), "isna": int(series.isna().sum())}
        x = _numbers(series) if name in numbers else None
        if x is not None:
            x.sort()
            low = int(np.searchsorted(x, -np.inf, side="right"))
            high = int(np.searchsorted(x, np.inf, side="left"))
            end = int(np.searchsorted(x, np.inf, side="right"))
            finite = x[low:high]
            at = np.linspace(0, max(len(finite) - 1, 0), SPLIT_POINTS if len(finite) else 0).round().astype(int)
            part.update(
                numeric=True,
                nan=len(x) - end,
                neg=low,
                pos=end - high,
                finite=len(finite),
                whole=pd.api.types.is_integer_dtype(series) or kinds.integral(finite),
                points=finite[at],
            )
        elif name in numbers:
            part["numeric"] = False
        # A numeric column with this many values per file is no category: its counts are taken later if asked.
        # The sorted floats tell first (they have no more distinct values than the column), sparing the hashing
        # of a column of measurements.
        if x is not None and end > 1 and 1 + np.count_nonzero(x[1:end] != x[: end - 1]) > kinds.MAX_CATEGORIES:
            part["counts"] = None
            out[name] = part
            continue
        try:
            counts = series.value_counts(sort=False)  # first-appearance order: merged, it is the whole column's
            part["counts"] = counts if name in others or len(counts) <= kinds.MAX_CATEGORIES else None
        except TypeError:
            part["counts"], part["unhashable"] = None, True
        out[name] = part
    return out


def _counts(task: tuple[Path, Any, str]) -> pd.Series:
    """On a worker: one column's value counts in one file (first-appearance order)."""
    file, schema, name = task
    return _read(file, schema, [name])[name].value_counts(sort=False)


def _merge_counts(parts: list[pd.Series]) -> pd.Series:
    """Per-file value counts merged into value_counts() of the whole column: summed in first-appearance order,
    then the same stable sort by count."""
    import pandas as pd

    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.Series([], dtype="int64")
    merged = pd.concat(parts).groupby(level=0, sort=False).sum()
    return merged.sort_values(ascending=False, kind="stable")


# --- the range partition ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Range:
    """What one range task gathers: for each column of a batch, its finite values in (low, high] (None: unbounded),
    from the files (or held tables, the task's other arguments) of each side; the current side's only for the
    columns in `current` (the others' current values are not numeric)."""

    bounds: dict[str, tuple[float | None, float | None]]
    current: tuple[str, ...]
    schemas: tuple[Any, Any]


Ranges = dict[str, tuple[np.ndarray, np.ndarray]]  # a range task's result: per column, both sides' sorted values


def _gather(task: _Range, *sides: tuple[Any, ...]) -> Ranges:
    """On a worker: per column, the sorted reference and current values of its range, from one read of each file
    for every column of the batch."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in task.bounds}
    for schema, files, names in zip(task.schemas, sides, (list(task.bounds), list(task.current)), strict=True):
        pieces: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for file in files if names else ():
            frame = _read(file, schema, names)
            for name in names:
                x = _numbers(frame[name])
                assert x is not None  # the scan checked
                low, high = task.bounds[name]
                keep = np.isfinite(x)
                if low is not None:
                    keep &= x > low
                if high is not None:
                    keep &= x <= high
                pieces[name].append(x[keep])
        for name in task.bounds:
            values = np.concatenate(pieces[name]) if pieces.get(name) else np.empty(0)
            values.sort()
            out[name].append(values)
    return {name: (values[0], values[1]) for name, values in out.items()}


def _pass_a(task: tuple[Ranges, str, int, bool]) -> dict[str, Any]:
    """Of one column's range: counts, distinct reference values, point masses (values holding >= k reference rows),
    sums (the current's only for `means`) and ends."""
    ranges, name, k, means = task
    r, c = ranges[name]
    starts = np.flatnonzero(np.concatenate([[True], r[1:] != r[:-1]])) if len(r) else np.empty(0, dtype=int)
    runs = np.diff(np.concatenate([starts, [len(r)]]))
    big = runs >= k
    both = [x for x in (r, c) if len(x)]
    return {
        "n": len(r),
        "m": len(c),
        "unique": len(starts),
        "masses": r[starts[big]] if len(r) else r,
        "mass_rows": int(runs[big].sum()),
        "sum": math.fsum(r),
        "c_sum": math.fsum(c) if means else None,
        "r_min": float(r[0]) if len(r) else None,
        "r_max": float(r[-1]) if len(r) else None,
        "first": min(float(x[0]) for x in both) if both else None,
        "last": max(float(x[-1]) for x in both) if both else None,
    }


def _pass_b(task: tuple[Ranges, str, dict[str, Any]]) -> dict[str, Any]:
    """Given the counts before this range: the two CDFs at each merged value (KS within the range, Wasserstein up
    to its last value), the gap at that last value, the requested order statistics and squared deviations."""
    ranges, name, job = task
    r, c = ranges[name]
    n, m = job["n"], job["m"]
    both = np.concatenate([r, c])
    from_r = np.concatenate([np.ones(len(r), dtype=bool), np.zeros(len(c), dtype=bool)])
    order = np.argsort(both, kind="stable")  # r first on ties, as stats._merge
    both, from_r = both[order], from_r[order]
    d = w = gap_last = 0.0
    if len(both):
        gap = np.cumsum(from_r, dtype=float)
        gap += job["r_before"]
        cdf_c = np.arange(job["before"] + 1, job["before"] + len(both) + 1, dtype=float)
        cdf_c -= gap
        cdf_c /= m
        gap /= n
        gap -= cdf_c
        np.abs(gap, out=gap)
        step = both[1:] - both[:-1]
        d = max(float(np.max(gap[:-1], where=step != 0, initial=0.0)), float(gap[-1]))
        w = float(np.dot(gap[:-1], step))
        gap_last = float(gap[-1])
    rest = r
    if len(job["masses"]):
        rest = r[~np.isin(r, job["masses"])]
    deviations = r - job["mean"]
    return {
        "d": d,
        "w": w,
        "gap_last": gap_last,
        "rest": rest[job["rest_at"]],
        "both": both[job["both_at"]],
        "ssd": math.fsum(deviations * deviations),
        "inside": int(np.searchsorted(c, job["r_max"], "right") - np.searchsorted(c, job["r_min"], "left")),
    }


def _pass_c(task: tuple[Ranges, str, np.ndarray, np.ndarray]) -> list[np.ndarray]:
    """Counts below each PSI edge (right-closed bins) and each histogram edge ([a, b) bins), per side."""
    ranges, name, psi_edges, grid = task
    r, c = ranges[name]
    return [
        np.searchsorted(r, psi_edges, side="right"),
        np.searchsorted(r, grid, side="left"),
        np.searchsorted(c, psi_edges, side="right"),
        np.searchsorted(c, grid, side="left"),
    ]


def _samples(task: tuple[Ranges, str]) -> tuple[np.ndarray, np.ndarray]:
    ranges, name = task
    return ranges[name]


# --- a model's answers, on the workers ---------------------------------------------------------------------------


def _verified(path: Path, sha256: str) -> pa.Table:
    """On a worker: a registry file (the stored reference sample), read once its sha256 is the one the client
    verified."""
    import pyarrow.parquet as pq

    from mlops_cli.errors import IntegrityError

    try:
        same = io.sha256_file(path) == sha256
        table = pq.read_table(path) if same else None
    except io.read_errors() as exc:  # a worker without the registry, or a damaged copy
        raise UnreadableFile(f"{path}: cannot read on this worker ({io.first_line(exc)})", "check the file") from exc
    if table is None:
        raise IntegrityError(
            f"{path} on this worker is not the file the client verified (sha256 differs)",
            "give every worker the same registry",
        )
    return table


def _renamed(table: pa.Table, column: str, name: str) -> pa.Table:
    return table.select([column]).rename_columns([name])


def _score(task: tuple[Any, Path], job: Any, column: str | None, target: str | None) -> dict[str, Any]:
    """On a worker: one CURRENT file through score-batch's worker path (the worker's verified model, the one
    runtime, invalid rows kept with their reasons). `values` (the scored rows' output `column`) stays on the
    cluster for prediction drift; the rest (`_answers`) goes to the client: the reasons rows were not scored and,
    with `target`, the labelled rows' labels and answers, for performance."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlops_cli import scoring
    from mlops_cli.runtime import proba_column

    partition, where = task
    batches: list[pa.RecordBatch] = []
    run = scoring.worker_run(partition, job)
    scoring.score_file(run, partition.path, where, job.fmt, batches.append)
    table = pa.Table.from_batches(batches, schema=job.plan.schema)
    scored = table.filter(pc.is_null(table[scoring.REASON_COLUMN]))
    out: dict[str, Any] = {"scored": scored.num_rows, "reasons": dict(run.reasons), "labelled": None}
    out["values"] = scored.select([column]) if column is not None else None
    if target is not None:
        labelled = io.to_pandas(table.select([target]))[target].notna().to_numpy()  # the local engine's notna()
        answers = ["prediction", *(proba_column(c) for c in job.plan.classes), scoring.REASON_COLUMN]
        out["labelled"] = table.filter(pa.array(labelled)).select([target, *answers])
    return out


def _values(scored: dict[str, Any]) -> pa.Table:
    return scored["values"]


def _answers(scored: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in scored.items() if k != "values"}


@dataclass
class Answers:
    """CURRENT scored on the workers: the output column's values held there (`side`), and what the client keeps."""

    side: Side | None  # the scored rows' output column, held on the cluster (None: not asked for)
    rejected: int
    reasons: dict[str, int]
    labelled: pa.Table | None  # target, prediction, probabilities and reasons of the labelled rows, in row order

    def labelled_answers(self, model: LoadedModel, target: str) -> tuple[np.ndarray, Scored]:
        """The labels of the labelled rows and the runtime's answers to them, as `model.score` of those rows gives
        them: the rows that broke the input contract flagged, with their reasons."""
        import pyarrow as pa

        from mlops_cli import scoring
        from mlops_cli.runtime import Scored, proba_column

        assert self.labelled is not None
        frame = io.to_pandas(self.labelled)
        texts = frame[scoring.REASON_COLUMN]
        invalid = texts.notna().to_numpy()
        reasons: dict[str, np.ndarray] = {}
        for i in np.flatnonzero(invalid):
            for label in texts.iat[i].split(scoring.REASON_SEPARATOR):
                reasons.setdefault(label, np.zeros(len(frame), dtype=bool))[i] = True
        valid = io.to_pandas(
            self.labelled.filter(pa.array(~invalid))
        )  # filtered before pandas: no nulls widen the labels
        classes = tuple(model.classes.tolist()) if model.classes is not None else None
        proba = None
        if model.with_proba and classes is not None:
            proba = valid[[proba_column(c) for c in classes]].to_numpy(dtype=float)
        scored = Scored(valid["prediction"].to_numpy(), proba, invalid, reasons, classes, model.runtime)
        return frame[target].to_numpy(), scored


def score(cluster: Cluster, job: Any, current: Side, column: str | None, target: str | None) -> Answers:
    """Score every file of `current` on the workers with score-batch's job (`scoring.worker_job`); the first
    failing file in file order raises, as the local engine would meet it."""
    import pyarrow as pa

    from mlops_cli.engines import Partition

    partitions, offset = [], 0
    for i, (file, rows) in enumerate(io.part_rows(current.path)):
        partitions.append((Partition(i, file, offset, rows), file if len(current.files) > 1 else current.path))
        offset += rows
    client = cluster.client
    futures = [client.submit(_score, p, job, column, target, pure=False) for p in partitions]
    try:
        parts = _engine().map_partitions(cluster, _answers, futures)
        values = [client.submit(_values, f, pure=False) for f in futures] if column is not None else []
    finally:
        for future in futures:  # the values' tasks hold what they need; a lost one is scored again
            future.release()
    reasons: dict[str, int] = {}
    for part in parts:
        for label, n in part["reasons"].items():
            reasons[label] = reasons.get(label, 0) + n
    side = None
    if column is not None:
        schema = pa.schema([job.plan.schema.field(column)])
        side = Side(current.path, tuple(values), schema, sum(p["scored"] for p in parts))
    labelled = None
    if target is not None:
        labelled = pa.concat_tables([p["labelled"] for p in parts], promote_options="permissive")
    return Answers(side, offset - sum(p["scored"] for p in parts), reasons, labelled)


def held_file(cluster: Cluster, path: Path, sha256: str) -> Side:
    """A small registry file (the stored reference sample) as a side of one table held on the cluster: read by a
    task, on a worker, after checking its sha256 (a lost copy is read again)."""
    side = Side.open(path, None)
    return Side(path, (cluster.client.submit(_verified, path, sha256, pure=False),), side.schema, side.rows)


def held_column(cluster: Cluster, side: Side, column: str, name: str) -> Side:
    """Column `column` of a held side (`held_file`) as a side of its own, the column named `name`."""
    import pyarrow as pa

    (table,) = side.files
    future = cluster.client.submit(_renamed, table, column, name, pure=False)
    return Side(side.path, (future,), pa.schema([side.schema.field(column).with_name(name)]), side.rows)


# --- the client ------------------------------------------------------------------------------------------------


def compare_on_cluster(
    cluster: Cluster, reference: Side, current: Side, options: DriftOptions
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """The feature rows (before the decision) and both sides' columns: what reporting.summarize takes."""
    import pyarrow as pa

    from mlops_cli.drift.reporting import feature_names

    ref_columns, cur_columns = reference.schema.names, current.schema.names
    names = feature_names(ref_columns, cur_columns, options)
    both = [n for n in names if n in ref_columns and n in cur_columns]

    def number_path(name: str) -> bool:
        t = reference.schema.field(name).type
        numeric_dtype = pa.types.is_integer(t) or pa.types.is_floating(t)
        return name in options.numeric or (numeric_dtype and name not in options.categorical)

    numbers = [n for n in both if number_path(n)]
    others = [n for n in both if n not in numbers]
    columns = _Columns.scan(cluster, reference, current, numbers, others, options)
    rows = {name: kinds.new_row(name) for name in names}
    for name in names:
        if name not in cur_columns:
            rows[name].update(status="missing_in_current", note="column missing from the current data")
        elif name not in ref_columns:
            rows[name].update(status="missing_in_reference", note="column missing from the reference data")
    # Numeric columns a batch at a time: one read of each file per range for the whole batch, and each pass's
    # tasks for every column of the batch submitted together; the batch bounds what the cluster holds at once.
    per_batch = max(1, BATCH_VALUES // (reference.rows + current.rows))
    for start in range(0, len(numbers), per_batch):
        batch = numbers[start : start + per_batch]
        columns.gather(batch)
        for name in batch:
            columns.fill(rows[name], True)
        columns.settle()
        columns.release()
    for name in others:
        columns.fill(rows[name], False)
    return [rows[name] for name in names], ref_columns, cur_columns


def prediction_row(
    cluster: Cluster, reference: Side, current: Side, name: str, options: DriftOptions
) -> dict[str, Any]:
    """model.prediction_row on the cluster: column `name` of both sides (files, or tables held on the cluster)."""
    import pyarrow as pa

    from mlops_cli.drift.model import decide_prediction_row, prediction_options

    t = reference.schema.field(name).type
    number_path = pa.types.is_integer(t) or pa.types.is_floating(t)
    numbers, others = ([name], []) if number_path else ([], [name])
    columns = _Columns.scan(cluster, reference, current, numbers, others, options)
    # Scores (pandas' float dtype: floats, or integers with nulls) are numeric; labels take their kind.
    floats = pa.types.is_floating(t) or (pa.types.is_integer(t) and _total(columns.ref_scan[name], "isna") > 0)
    columns.options = prediction_options(options, [name] if floats else [])
    columns.with_means = True
    row = kinds.new_row(name)
    if number_path:
        columns.gather([name])
    columns.fill(row, number_path)
    columns.settle()
    columns.release()
    return decide_prediction_row(row, options, lambda: columns.means[name])


def holds_labels(cluster: Cluster, side: Side, name: str) -> bool:
    """model.holds_labels of a column of `side`: anything but floats that are not all whole."""
    import pyarrow as pa

    if not pa.types.is_floating(side.schema.field(name).type):
        return True  # integers are whole, with nulls (pandas' floats) or without
    parts = _engine().map_partitions(cluster, _scan, [(f, side.schema, [name], []) for f in side.files])
    scan = [p[name] for p in parts]
    return all(p["whole"] for p in scan if p["finite"]) and not (_total(scan, "neg") or _total(scan, "pos"))


def _mean(total: float, neg: int, pos: int, finite: int) -> float:
    """pandas' mean of a column (nulls left out) from the sum of its finite values and its infinities."""
    if neg and pos:
        return math.nan
    if neg or pos:
        return -math.inf if neg else math.inf
    return total / finite


# A numeric column's passes B and C: yields (task function, tasks), is sent their results, returns _numeric's answer.
_Passes = Generator[
    tuple[Callable[..., Any], list[Any]],
    list[Any],
    tuple[dict[str, float], dict[str, Any], int, tuple[float, float] | None],
]


def _engine() -> Any:
    from mlops_cli.engines import dask

    return dask


def _total(parts: list[dict[str, Any]], key: str) -> int:
    return sum(int(p[key]) for p in parts)


class _Columns:
    """Fills each feature row, the way kinds.feature_row does, from the merged partials."""

    def __init__(
        self,
        cluster: Cluster,
        reference: Side,
        current: Side,
        ref_scan: dict[str, list[dict[str, Any]]],
        cur_scan: dict[str, list[dict[str, Any]]],
        options: DriftOptions,
    ) -> None:
        self.cluster, self.reference, self.current, self.options = cluster, reference, current, options
        self.ref_scan, self.cur_scan = ref_scan, cur_scan
        self.futures: list[Any] = []
        self.with_means = False  # a prediction row: the means of both sides, kept in `means`
        self.means: dict[str, tuple[float, float]] = {}
        # Per gathered column: its ranges' futures, pass A's answers, the reference's min and max.
        self.ranges: dict[str, tuple[list[Any], list[dict[str, Any]], tuple[float, float]]] = {}
        self.pending: list[tuple[_Passes, Callable[[Any], None]]] = []  # numeric columns awaiting passes B and C

    @classmethod
    def scan(
        cls,
        cluster: Cluster,
        reference: Side,
        current: Side,
        numbers: list[str],
        others: list[str],
        options: DriftOptions,
    ) -> _Columns:
        """Pass 0 over every file of both sides: the columns `numbers` (the numeric path) and `others`."""
        scans = []
        for side in (reference, current):
            tasks = [(f, side.schema, numbers, others) for f in side.files]
            parts = _engine().map_partitions(cluster, _scan, tasks)
            scans.append({n: [p[n] for p in parts] for n in numbers + others})
        return cls(cluster, reference, current, scans[0], scans[1], options)

    def release(self) -> None:
        for future in self.futures:
            future.release()
        self.futures = []
        self.ranges = {}

    def _missing_shares(self, s: dict[str, Any], name: str) -> None:
        ref = _total(self.ref_scan[name], "isna") / self.reference.rows
        cur = _total(self.cur_scan[name], "isna") / self.current.rows
        s.update(missing_share_reference=float(ref), missing_share_current=float(cur))
        s["missing_share_change"] = s["missing_share_current"] - s["missing_share_reference"]

    def _counts(self, side: Side, scan: list[dict[str, Any]], name: str) -> pd.Series | None:
        """The whole column's value counts (None: unhashable values), fetched again where a file's were skipped."""
        if any(p.get("unhashable") for p in scan):
            return None
        if any(p["counts"] is None for p in scan):
            parts = _engine().map_partitions(self.cluster, _counts, [(f, side.schema, name) for f in side.files])
        else:
            parts = [p["counts"] for p in scan]
        return _merge_counts(parts)

    def fill(self, row: dict[str, Any], number_path: bool) -> None:
        import pyarrow as pa

        name, options = row["name"], self.options
        s = row["statistics"] = {"rows_reference": self.reference.rows, "rows_current": self.current.rows}
        ref, cur = self.ref_scan[name], self.cur_scan[name]
        t = self.reference.schema.field(name).type
        nulls = _total(ref, "isna")
        ranges = None
        rc = None
        if number_path:
            if not all(p["numeric"] for p in ref):
                self._missing_shares(s, name)
                row.update(kind="numeric", status="type_mismatch", note="not numeric in the reference: not compared")
                return
            finite = _total(ref, "finite")
            ranges = self.ranges.get(name)  # gathered when the reference has finite values
            integer_dtype = pa.types.is_integer(t) and nulls == 0

            def shape() -> tuple[bool, int]:
                whole = integer_dtype or all(p["whole"] for p in ref if p["finite"])
                return whole, sum(a["unique"] for a in ranges[1]) if whole and ranges else 0

            kind, note = kinds.number_kind(self.reference.rows - _total(ref, "nan"), finite, shape, name, options)
        else:
            raw = self._counts(self.reference, ref, name)
            boolean = pa.types.is_boolean(t) and nulls == 0
            kind, note, raw = kinds.other_kind(raw, name, options, datetime=pa.types.is_timestamp(t), boolean=boolean)
            rc = stats.as_text(raw) if raw is not None else None
        row.update(kind=kind, note=note)
        if kind in ("identifier", "datetime", "nested", "empty"):
            self._missing_shares(s, name)
            if kind != "empty":
                row.update(status="skipped", note=note or f"{kind} column: not compared")
            elif s["missing_share_current"] == 1.0:
                row.update(status="empty", note="no values on either side: not compared")
            else:
                row.update(status="all_missing", note="no values in the reference data")
            return
        if kind == "numeric":
            if not all(p["numeric"] for p in cur):
                self._missing_shares(s, name)
                row.update(status="type_mismatch", note="current values are not numeric: not compared")
                return
            sides = [(self.reference.rows, *(_total(ref, k) for k in ("nan", "neg", "pos", "finite")))]
            sides.append((self.current.rows, *(_total(cur, k) for k in ("nan", "neg", "pos", "finite"))))
            if not kinds.number_shares(row, sides[0], sides[1]):
                return
            assert ranges is not None
            constant = ranges[2][0] == ranges[2][1]

            def finish(result: tuple[dict[str, float], dict[str, Any], int, tuple[float, float] | None]) -> None:
                numbers, row["histogram"], inside, sums = result
                s.update(numbers)
                if sums is not None:
                    self.means[name] = (_mean(sums[0], *sides[0][2:]), _mean(sums[1], *sides[1][2:]))
                (_, _, r_neg, r_pos, _), (_, _, c_neg, c_pos, m) = sides
                outside = m - inside + (c_neg if not r_neg else 0) + (c_pos if not r_pos else 0)
                s["out_of_range_share"] = float(outside) / (m + c_neg + c_pos)
                if constant and not note:
                    row["note"] = "constant in the reference: Wasserstein not normalised"

            self.pending.append((self._numeric(name, *ranges), finish))  # run by settle()
            return
        if rc is None:
            raw = self._counts(self.reference, ref, name)
            rc = stats.as_text(raw) if raw is not None else None
        raw_cur = self._counts(self.current, cur, name)
        if raw_cur is None or rc is None:
            self._missing_shares(s, name)
            row.update(status="type_mismatch", note="nested values (lists, maps) in the current data: not compared")
            return
        kinds.categorical_tail(row, rc, stats.as_text(raw_cur), self.reference.rows, self.current.rows)

    def gather(self, names: list[str]) -> None:
        """The range partitions of the numeric-path columns `names` on the cluster (one task per range reads each
        file once for all of them) and pass A's answers (one round for all), kept in `ranges`."""
        count = max(1, RANGES_PER_WORKER * self.cluster.workers)
        bounds: dict[str, list[tuple[float | None, float | None]]] = {}
        current = []
        for name in names:
            ref, cur = self.ref_scan[name], self.cur_scan[name]
            if not all(p["numeric"] for p in ref) or not _total(ref, "finite"):
                continue  # not compared as numbers: fill says why
            cur_numeric = all(p["numeric"] for p in cur)
            points = [p["points"] for p in ref + (cur if cur_numeric else []) if p["numeric"] and p["finite"]]
            pooled = np.sort(np.concatenate(points))
            splitters = np.unique(np.quantile(pooled, np.linspace(0, 1, count + 1)[1:-1]))
            edges = [None, *map(float, splitters), None]
            bounds[name] = list(zip(edges[:-1], edges[1:], strict=True))
            current += [name] if cur_numeric else []
        if not bounds:
            return
        schemas = (self.reference.schema, self.current.schema)
        tasks = []
        for j in range(max(len(b) for b in bounds.values())):
            mine = {name: b[j] for name, b in bounds.items() if j < len(b)}
            tasks.append(_Range(mine, tuple(n for n in current if n in mine), schemas))
        client = self.cluster.client
        files = self.reference.files
        futures = [client.submit(_gather, t, files, self.current.files if t.current else (), pure=False) for t in tasks]
        self.futures += futures
        pairs = [(name, j) for name, b in bounds.items() for j in range(len(b))]
        k = {name: stats.mass_rows(_total(self.ref_scan[name], "finite")) for name in bounds}
        items = [(futures[j], name, k[name], self.with_means) for name, j in pairs]
        infos = _engine().map_partitions(self.cluster, _pass_a, items)
        for name, b in bounds.items():
            answers = [a for (n, _), a in zip(pairs, infos, strict=True) if n == name]
            filled = [a for a in answers if a["n"]]
            self.ranges[name] = (futures[: len(b)], answers, (filled[0]["r_min"], filled[-1]["r_max"]))

    def settle(self) -> None:
        """Passes B and C of the pending numeric columns, each pass's tasks for all of them submitted together
        (every column's passes yield B, then C, then return)."""
        pending, self.pending = self.pending, []
        requests = [next(passes) for passes, _ in pending]
        while pending:
            items = [item for _, column_items in requests for item in column_items]
            results = _engine().map_partitions(self.cluster, requests[0][0], items)
            still, asked, at = [], [], 0
            for (passes, finish), (_, column_items) in zip(pending, requests, strict=True):
                answers, at = results[at : at + len(column_items)], at + len(column_items)
                try:
                    asked.append(passes.send(answers))
                    still.append((passes, finish))
                except StopIteration as done:
                    finish(done.value)
            pending, requests = still, asked

    def _numeric(
        self, name: str, futures: list[Any], infos: list[dict[str, Any]], r_range: tuple[float, float]
    ) -> _Passes:
        """numeric_stats, the histogram, the count of current values within the reference's range and, with
        `with_means`, the sums of both sides' finite values. A generator: it yields pass B's tasks, then pass C's,
        and is sent their answers (`settle` runs many columns' at once)."""
        engine = _engine()
        n, m = sum(a["n"] for a in infos), sum(a["m"] for a in infos)
        masses = np.concatenate([a["masses"] for a in infos])
        rest = n - sum(a["mass_rows"] for a in infos)
        inner_q = stats.psi_quantiles(len(masses)) if rest and stats.PSI_BINS - len(masses) > 1 else np.array([])
        rest_lo, rest_hi, rest_t = stats.quantile_ranks(rest, inner_q)
        both_lo, both_hi, both_t = stats.quantile_ranks(n + m, stats.HISTOGRAM_RANGE)
        rest_ranks = np.concatenate([rest_lo, rest_hi])
        both_ranks = np.concatenate([both_lo, both_hi])
        jobs, masks = [], []
        r_before = before = rest_before = 0
        mean = math.fsum(a["sum"] for a in infos) / n
        for a in infos:
            size, rest_size = a["n"] + a["m"], a["n"] - a["mass_rows"]
            mine = (
                (rest_ranks >= rest_before) & (rest_ranks < rest_before + rest_size),
                (both_ranks >= before) & (both_ranks < before + size),
            )
            masks.append(mine)
            jobs.append(
                {
                    "n": n,
                    "m": m,
                    "r_before": r_before,
                    "before": before,
                    "masses": a["masses"],
                    "mean": mean,
                    "rest_at": rest_ranks[mine[0]] - rest_before,
                    "both_at": both_ranks[mine[1]] - before,
                    "r_min": r_range[0],
                    "r_max": r_range[1],
                }
            )
            r_before, before, rest_before = r_before + a["n"], before + size, rest_before + rest_size
        results = yield _pass_b, [(f, name, job) for f, job in zip(futures, jobs, strict=True)]
        # Order statistics: each rank is answered by the one range that holds it.
        rest_values, both_values = np.empty(len(rest_ranks)), np.empty(len(both_ranks))
        for (rest_mask, both_mask), b in zip(masks, results, strict=True):
            rest_values[rest_mask], both_values[both_mask] = b["rest"], b["both"]
        half = len(inner_q)
        inner = stats.interpolate(rest_values[:half], rest_values[half:], rest_t) if half else np.array([])
        psi_edges = stats.psi_edges(masses, inner)
        filled = [a for a in infos if a["n"] + a["m"]]
        low, high = (float(v) for v in stats.interpolate(both_values[:2], both_values[2:], both_t))
        grid = stats.histogram_edges(low, high, float(filled[0]["first"]), float(filled[-1]["last"]))
        cuts = yield _pass_c, [(f, name, psi_edges, grid[1:-1]) for f in futures]
        total = [sum(c[i] for c in cuts) for i in range(4)]
        p_ref, p_cur = stats.shares_from_cuts(total[0], n), stats.shares_from_cuts(total[2], m)
        # KS: the largest gap within a range or at its last value; Wasserstein: each range's area plus the step
        # from its last value to the next range's first, at the gap there.
        d = max(b["d"] for b in results)
        w = math.fsum(b["w"] for b in results)
        ends = [(a, b) for a, b in zip(infos, results, strict=True) if a["n"] + a["m"]]
        for (a, b), (nxt, _) in zip(ends[:-1], ends[1:], strict=True):
            w += b["gap_last"] * (nxt["first"] - a["last"])
        std = math.sqrt(math.fsum(b["ssd"] for b in results) / (n - 1)) if n > 1 else 0.0

        def samples() -> tuple[np.ndarray, np.ndarray]:
            pieces = engine.map_partitions(self.cluster, _samples, [(f, name) for f in futures])
            return np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])

        p = stats.ks_p_value(d, n, m, samples)
        numbers = stats.numeric_result(d, p, w, std, p_ref, p_cur, len(psi_edges))
        hist = stats.histogram(grid, stats.shares_from_cuts(total[1], n), stats.shares_from_cuts(total[3], m))
        sums = (math.fsum(a["sum"] for a in infos), math.fsum(a["c_sum"] for a in infos)) if self.with_means else None
        return numbers, hist, sum(b["inside"] for b in results), sums
