"""The prediction log: one row per prediction, as Parquet files that `drift-report` and `monitor` read as a folder.

Each worker writes its own stream, `LOG_DIR/<UTC date>/predictions-<UTC time>-w<slot>-<pid>-<n>.parquet`. A file is
written under a hidden temporary name and published by one rename when it is rotated (every `rotate_s` seconds or
`rotate_rows` rows) or at shutdown, so a reader never sees half a file; a kill -9 loses the file being written, at
most `rotate_s` seconds of rows. Requests hand their rows to a bounded queue and never wait for the disk: when the
queue is full the rows are dropped and counted (`mlops_serve_log_rows_total{result="dropped"}`), never silently.

The columns are score-batch's (ids, the features as registered, `prediction`, `proba_*`, `model_name`,
`model_version`, `invalid_reason`) plus `request_id`, `received_at`, `latency_ms` and `route`. A server with online
features (`--features`) adds `feature_view`, `entity_id`, `feature_view_version`, `features_from_store` (the features that came
from the store, comma-joined), `features_filled` and `feature_fallback` (filled from the reference profile, and why).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import MlopsError

if TYPE_CHECKING:
    import pyarrow as pa

    from mlops_cli.features.assemble import Assembled
    from mlops_cli.online.routing import Routed
    from mlops_cli.runtime.spec import ModelSpec

ROTATE_S = 60.0
ROTATE_ROWS = 1_000_000
MAX_QUEUED_ROWS = 100_000
ROW_GROUP_ROWS = 16_384  # rows gathered before a Parquet row group is written
ROW_GROUP_S = 5.0
POLL_S = 1.0  # how often the writer looks at the queue (rotation is checked as often)
DROPPED_KEY = "mlops.dropped_rows"  # Parquet footer metadata: rows the server dropped before this file was published


@dataclass(frozen=True)
class Entry:
    """One request's rows, as handed over by the request (nothing is converted on the request path)."""

    values: Mapping[str, list[Any]]
    routed: Routed
    spec: ModelSpec
    ids: list[Any] | None
    request_id: str
    received_at: float
    latency_ms: float
    features: Assembled | None = None  # where the features came from, with online features


class PredictionLog:
    def __init__(
        self,
        directory: Path,
        slot: int,
        *,
        rotate_s: float = ROTATE_S,
        rotate_rows: int = ROTATE_ROWS,
        max_queued_rows: int = MAX_QUEUED_ROWS,
        on_rows: Callable[[str, int], None] | None = None,
    ) -> None:
        self.directory = directory
        self.slot = slot
        self.rotate_s, self.rotate_rows = rotate_s, rotate_rows
        self.max_queued_rows = max_queued_rows
        self.on_rows = on_rows or (lambda result, n: None)
        # The writer is not woken per request (on 2 cores a wakeup per request costs the server a tenth of its
        # throughput in GIL and core handoffs): it drains the deque every POLL_S, or as soon as a row group is due.
        self._queue: deque[Entry] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._queued = 0
        self._lock = threading.Lock()
        self._files = 0
        self._dropped = 0  # since the last published file, which records it for `mlops monitor`
        self._thread = threading.Thread(target=self._run, name="mlops-predlog", daemon=True)
        self._thread.start()

    def submit(self, entry: Entry) -> bool:
        """Queue a request's rows; False (and counted) when the queue is full. Never blocks on the disk."""
        n = entry.routed.n
        with self._lock:
            full = self._queued + n > self.max_queued_rows
            if not full:
                self._queued += n
                self._queue.append(entry)
                due = self._queued >= ROW_GROUP_ROWS
        if full:
            self._drop(n)
            return False
        if due:
            self._wake.set()
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued and publish the current file (SIGTERM)."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout)

    # --- the writer thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        writer: _File | None = None
        pending: list[Entry] = []
        pending_rows = 0
        last_group = time.monotonic()
        while True:
            self._wake.wait(POLL_S)
            self._wake.clear()
            closing = self._closing
            while self._queue:
                entry = self._queue.popleft()
                pending.append(entry)
                pending_rows += entry.routed.n
            now = time.monotonic()
            due = pending_rows >= ROW_GROUP_ROWS or now - last_group >= ROW_GROUP_S
            if pending and (due or closing):
                writer = self._write(writer, pending)
                with self._lock:
                    self._queued -= pending_rows
                pending, pending_rows, last_group = [], 0, now
            if writer is not None and (
                closing or writer.rows >= self.rotate_rows or now - writer.opened >= self.rotate_s
            ):
                writer.publish(self._take_dropped())
                writer = None
            if closing:
                return

    def _write(self, writer: _File | None, entries: list[Entry]) -> _File | None:
        rows = sum(e.routed.n for e in entries)
        try:
            batches = [_batch(group) for group in _groups(entries)]
            import pyarrow as pa

            table = (
                pa.Table.from_batches(batches).combine_chunks() if len(batches) > 1 else pa.Table.from_batches(batches)
            )
            if writer is not None and not writer.schema.equals(table.schema):
                writer.publish(self._take_dropped())  # the served version's features changed: a new file
                writer = None
            if writer is None:
                writer = _File(self._next_path(), table.schema)
            writer.write(table)
        except Exception as exc:  # noqa: BLE001 (the log never stops the server; what it lost is counted and said)
            import sys

            print(
                f"mlops serve: prediction log: {rows} rows not written ({type(exc).__name__}: {exc})", file=sys.stderr
            )
            self._drop(rows)
            if writer is not None:
                writer.discard()
            return None
        self.on_rows("written", rows)
        return writer

    def _drop(self, rows: int) -> None:
        with self._lock:
            self._dropped += rows
        self.on_rows("dropped", rows)

    def _take_dropped(self) -> int:
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        return dropped

    def _next_path(self) -> Path:
        now = time.time()
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        self._files += 1
        return self.directory / day / f"predictions-{stamp}-w{self.slot}-{os.getpid()}-{self._files}.parquet"


class _File:
    """One log file being written: hidden until `publish` renames it into place."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        from mlops_cli import io

        path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.rows = 0
        self.opened = time.monotonic()
        self._writer = io.TableWriter(path, schema, "parquet", overwrite=False)
        self._writer.__enter__()

    def write(self, table: pa.Table) -> None:
        self._writer.write(table)
        self.rows += table.num_rows

    def publish(self, dropped: int = 0) -> None:
        """Close and rename into place, recording the rows dropped since the previous file (`DROPPED_KEY`)."""
        self._writer.annotate({DROPPED_KEY: str(dropped)})
        self._writer.__exit__(None, None, None)

    def discard(self) -> None:
        try:
            self._writer.__exit__(RuntimeError, RuntimeError("discarded"), None)
        except RuntimeError:
            pass


def _groups(entries: list[Entry]) -> list[list[Entry]]:
    """Runs of entries that make one Arrow batch: the same spec and classes, every feature present, no online
    features. The columns are then built once for the run, not once per request (a one-row request's columns cost
    as much to build as a thousand rows')."""
    groups: list[list[Entry]] = []
    key: Any = None
    for entry in entries:
        spec = entry.spec
        bulk = entry.features is None and all(name in entry.values for name in spec.feature_names)
        this = (id(spec), tuple(entry.routed.classes)) if bulk else None
        if this is not None and this == key:
            groups[-1].append(entry)
        else:
            groups.append([entry])
        key = this
    return groups


def _batch(entries: list[Entry]) -> pa.RecordBatch:
    import numpy as np
    import pyarrow as pa

    from mlops_cli.runtime import contract, proba_column
    from mlops_cli.scoring import REASON_COLUMN

    first = entries[0]
    spec = first.spec
    sizes = [e.routed.n for e in entries]
    n = sum(sizes)
    names: list[str] = []
    arrays: list[pa.Array] = []

    def add(name: str, array: pa.Array) -> None:
        names.append(name)
        arrays.append(array)

    def each(field: Callable[[Entry], list[Any]]) -> list[Any]:
        return [v for e in entries for v in field(e)]

    def repeat(field: Callable[[Entry], Any]) -> list[Any]:
        return [field(e) for e, size in zip(entries, sizes, strict=True) for _ in range(size)]

    ids = each(lambda e: [None if i is None else str(i) for i in e.ids] if e.ids is not None else [None] * e.routed.n)
    add("id", pa.array(ids, pa.string()))
    features: list[Mapping[str, Any]] = []
    if all(name in first.values for name in spec.feature_names):
        try:  # the features as the model took them (coerced); a column the contract could not read is logged null
            values = {name: [v for e in entries for v in e.values[name]] for name in spec.feature_names}
            features = [contract.validate(contract.from_values(values, spec), spec)[0]]
        except MlopsError:
            if len(entries) > 1:  # one request's unreadable column must not null the others': each on its own
                # (a Table, not pa.concat_batches: that needs pyarrow 19, and pyarrow>=15 is allowed)
                return pa.Table.from_batches([_batch([e]) for e in entries]).combine_chunks().to_batches()[0]
    for feature in spec.features:
        add(feature.name, _feature(features[0].get(feature.name) if features else None, feature.kind, n))
    add("prediction", pa.array(each(lambda e: e.routed.prediction), type=_prediction_type(spec)))
    for j, label in enumerate(first.routed.classes):
        column = np.concatenate([e.routed.proba[:, j] for e in entries])  # type: ignore[index]
        add(proba_column(label), pa.array(column, mask=np.isnan(column)))
    add("model_name", pa.array([spec.name] * n, pa.string()))
    add("model_version", pa.array(each(lambda e: e.routed.version), pa.string()))
    add(REASON_COLUMN, pa.array(each(lambda e: e.routed.reasons), pa.string()))
    add("request_id", pa.array(repeat(lambda e: e.request_id), pa.string()))
    add("received_at", pa.array(repeat(lambda e: int(e.received_at * 1000)), pa.timestamp("ms", tz="UTC")))
    add("latency_ms", pa.array(repeat(lambda e: e.latency_ms), pa.float64()))
    add("route", pa.array(each(lambda e: e.routed.route), pa.string()))
    if first.features is not None:  # never grouped: one entry
        assembled = first.features
        add("feature_view", pa.array([assembled.view] * n, pa.string()))
        add("entity_id", pa.array(assembled.entity_ids or [None] * n, pa.string()))
        add("feature_view_version", pa.array(assembled.versions, pa.int64()))  # per row: the version it read
        add("features_from_store", pa.array(assembled.from_store, pa.string()))
        add("features_filled", pa.array(assembled.filled, pa.string()))
        add("feature_fallback", pa.array(assembled.fallback, pa.string()))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _feature(values: Any, kind: str | None, n: int) -> pa.Array:
    """A feature as registered: numbers as float64, booleans, text, timestamps; null where a value was unusable."""
    import pyarrow as pa

    target = {
        "numeric": pa.float64(),
        "boolean": pa.bool_(),
        "categorical": pa.string(),
        "datetime": pa.timestamp("us"),
    }
    type_ = target.get(kind or "", pa.string())
    if values is None:
        return pa.nulls(n, type_)
    try:
        return pa.array(values, from_pandas=True).cast(type_, safe=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else str(v) for v in values], pa.string()).cast(type_, safe=False)


def _prediction_type(spec: ModelSpec) -> pa.DataType:
    import pyarrow as pa

    if spec.task != "classifier" or not spec.classes:
        return pa.float64()
    try:
        return pa.array(list(spec.classes)).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.string()
