"""`mlops features materialize`: a feature table (one row per entity) streamed into Redis as a new version of a view.

The table is read in record batches (`io.iter_batches`) and each batch goes to Redis in one pipeline, so memory
is bounded by the batch. Every load writes a new version under its own keys; only when the whole table is in, the
view's pointer is replaced (one SET) and readers switch. The previous version is then dropped. A load that fails,
is interrupted, or is killed leaves the pointer, and so the readers, on the previous version: its keys are removed
on the way out, or (after a kill -9) by the next load of the view, which sweeps every version but the current one.

One load per view at a time: a lock key names the loading process and expires unless renewed every batch; a lock
left by a process of this host that is gone (killed) is taken over at once. The renewal and the flip are Lua
scripts that act only while the lock still holds this load's token: a load that lost its lock (paused past its
expiry while another load took over, and perhaps swept this one's keys) fails with FeatureViewLocked and never
flips.

`--ttl-s` counts from the load, not from each batch: one absolute expiry (Redis's clock at the start plus the TTL)
is set on every key of the version (SET ... PXAT), so a load's entities expire together, and the record says when.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_cli import io
from mlops_cli.errors import EmptyInput, FeatureViewLocked, InputError, InvalidData, SchemaMismatch
from mlops_cli.features.store import ROOT, Record, Store, pointer, version_prefix
from mlops_cli.liveness import process_alive
from mlops_cli.refs import validate_name
from mlops_cli.report import Report, utc_now

BATCH_ROWS = 10_000  # rows per pipeline: Redis holds one batch's replies, this process one batch's rows
LOCK_S = 30  # a lock not renewed for this long is free again (its holder stopped, or lost its connection)
KINDS = ("numeric", "boolean", "categorical", "datetime")


@dataclass
class MaterializeOptions:
    entity: str
    name: str
    ttl_s: int | None = None
    features: list[str] | None = None  # default: every column but the entity
    batch_size: int = BATCH_ROWS
    input_format: str | None = None
    on_progress: Callable[[int, int | None], None] | None = None


def materialize(store: Store, table: Path, options: MaterializeOptions) -> Report:
    """Load `table` into a new version of view `options.name`, flip the pointer to it, drop the previous version."""
    started = time.perf_counter()
    name = validate_name(options.name, "feature view name")
    if options.ttl_s is not None and options.ttl_s < 1:
        raise InputError(f"--ttl-s {options.ttl_s}", "give a TTL of at least 1 second, or none")
    fmt = io.detect_format(table, options.input_format)
    schema = io.schema(table, fmt)
    features = _features(schema, options)
    kinds = {f: _kind(schema.field(f).type) for f in features}
    fingerprint = io.Background(io.fingerprint, table, 0)
    store.ping()
    with _Lock(store, name) as lock:
        previous = store.record(name)
        # Keys of loads killed before this one; the lock is checked before each UNLINK, so a load that stalled
        # here past its lock cannot sweep the keys of the load that took over.
        swept = store.drop_prefix(f"{pointer(name)}:v", keep=_current(previous), before_unlink=lock.check)
        version = int(store.call(store.client.incr, f"{pointer(name)}:seq"))
        prefix = version_prefix(name, version)
        try:
            expires_at_ms = _expiry(store, options.ttl_s)
            rows = _load(store, table, fmt, features, prefix, options, lock, expires_at_ms)
            _check_not_expired(store, expires_at_ms, options.ttl_s)
            source = {**fingerprint.result(), "rows": rows}
            record = Record(
                name, version, options.entity, features, kinds, options.ttl_s, rows, source, utc_now(),
                expires_at=_iso(expires_at_ms),
            )  # fmt: skip
            _flip(store, name, record, lock)
        except BaseException:
            # A flip whose reply was lost (a read timeout, a signal just after it) may have taken effect: drop the
            # new keys only when the pointer surely does not name them (the next load sweeps any left over).
            if not _maybe_live(store, name, version):
                _quietly(store.drop_prefix, prefix)
            raise
    dropped = store.drop_prefix(version_prefix(name, previous.version)) if previous is not None else 0
    seconds = time.perf_counter() - started
    results = {
        "store": store.url,
        "view": record.to_json(),
        "previous_version": previous.version if previous is not None else None,
        "keys_dropped": dropped,
        "orphan_keys_swept": swept,
        "batch_size": options.batch_size,
        "wall_seconds": seconds,
        "rows_per_second": rows / seconds if seconds > 0 else None,
    }
    report = Report("features materialize", results=results, inputs=[source])
    if swept:
        report.messages.append(f"removed {swept:,} keys left by an earlier load that did not finish")
    return report


def _features(schema: Any, options: MaterializeOptions) -> list[str]:
    names = list(schema.names)
    if options.entity not in names:
        raise SchemaMismatch(f"the table has no entity column {options.entity!r}", f"its columns are {names[:20]}")
    features = list(dict.fromkeys(options.features or [n for n in names if n != options.entity]))
    missing = [f for f in features if f not in names]
    if missing:
        raise SchemaMismatch(f"the table has no column(s) {missing}", f"its columns are {names[:20]}")
    if options.entity in features:
        raise InputError(f"{options.entity!r} is the entity column", "leave it out of --features")
    if not features:
        raise SchemaMismatch("the table has no feature columns besides the entity", "add features, or name them")
    return features


def _kind(type_: Any) -> str:
    import pyarrow as pa

    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    if pa.types.is_boolean(type_):
        return "boolean"
    if pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_decimal(type_):
        return "numeric"
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_):
        return "datetime"
    return "categorical"


def _current(record: Record | None) -> str | None:
    return version_prefix(record.name, record.version) if record is not None else None


def _load(
    store: Store,
    table: Path,
    fmt: str,
    features: list[str],
    prefix: str,
    options: MaterializeOptions,
    lock: _Lock,
    expires_at_ms: int | None,
) -> int:
    from mlops_cli.scoring import key_text

    total = io.row_count(table, fmt)
    column_types = {options.entity: _string()} if fmt == "csv" else None  # ids keep their leading zeros
    rows = 0
    dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    for batch in io.iter_batches(
        table, batch_size=options.batch_size, columns=[options.entity, *features], column_types=column_types, fmt=fmt
    ):
        ids = key_text([batch.column(options.entity)]).to_pylist()
        if None in ids:
            raise InvalidData(
                f"{table}: the entity column {options.entity!r} is empty at row {rows + ids.index(None) + 1:,}",
                "give every row an entity id; nothing was loaded",
            )
        columns = [_values(batch.column(f)) for f in features]
        pipe = store.client.pipeline(transaction=False)
        for key, values in zip(ids, zip(*columns, strict=True), strict=True):
            pipe.set(prefix + key, dumps(values), pxat=expires_at_ms, nx=True)
        lock.renew(pipe)
        replies = store.call(pipe.execute)
        if not replies[-1]:
            raise lock.lost()
        if not all(replies[:-1]):
            first = replies.index(None)
            raise InvalidData(
                f"{table}: entity {options.entity!r} repeats at row {rows + first + 1:,}",
                "a feature table holds one row per entity; nothing was loaded",
            )
        rows += batch.num_rows
        if options.on_progress is not None:
            options.on_progress(rows, total)
    if rows == 0:
        raise EmptyInput(f"{table}: has no rows", "check that the job that writes it finished")
    return rows


def _string() -> Any:
    import pyarrow as pa

    return pa.string()


def _values(column: Any) -> list[Any]:
    """One column as JSON values: NaN as null, timestamps as ISO text, dictionaries decoded."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_floating(column.type):
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
        return [None if v is None else v.isoformat() for v in column.to_pylist()]
    if pa.types.is_decimal(column.type):
        column = column.cast(pa.float64())
    return column.to_pylist()


def _expiry(store: Store, ttl_s: int | None) -> int | None:
    """The version's one expiry, in Unix milliseconds by Redis's clock (not this host's, which may differ)."""
    if ttl_s is None:
        return None
    seconds, micros = store.call(store.client.time)
    return int(seconds) * 1000 + int(micros) // 1000 + ttl_s * 1000


def _check_not_expired(store: Store, expires_at_ms: int | None, ttl_s: int | None) -> None:
    """A load that outlasted its TTL wrote its last keys already expired (Redis answers OK to a SET whose PXAT is
    past, and keeps nothing): flipping to it would publish a view missing entities."""
    if expires_at_ms is None:
        return
    seconds, micros = store.call(store.client.time)
    if int(seconds) * 1000 + int(micros) // 1000 >= expires_at_ms:
        raise InputError(
            f"the load took longer than --ttl-s {ttl_s}: its keys expired before it finished; the view was not switched",
            "give a --ttl-s longer than the load takes",
        )


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# KEYS: the lock, the pointer, the set of views; ARGV: the lock's token, the record, the view's name.
_FLIP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
"""


def _flip(store: Store, name: str, record: Record, lock: _Lock) -> None:
    """The one step readers see: the pointer names the new version (and the view is listed), only if the lock is
    still this load's (checked in the same atomic step)."""
    body = json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"))
    if not store.call(store.client.eval, _FLIP, 3, lock.key, pointer(name), ROOT, lock.value, body, name):
        raise lock.lost()


def _maybe_live(store: Store, name: str, version: int) -> bool:
    try:
        record = store.record(name)
    except Exception:  # noqa: BLE001 (Redis unreachable: the pointer cannot be read, so keep the keys)
        return True
    return record is not None and record.version == version


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 (clean-up on the way out of an error: the error being raised wins)
        pass


class _Lock:
    """`P:lock`: one load of a view at a time (see the module docstring)."""

    _RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
    _RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0"

    def __init__(self, store: Store, name: str) -> None:
        self.store, self.name = store, name
        self.key = f"{pointer(name)}:lock"
        self.value = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}"

    def __enter__(self) -> _Lock:
        store = self.store
        if store.call(store.client.set, self.key, self.value, nx=True, ex=LOCK_S):
            return self
        held = store.call(store.client.get, self.key)
        holder = held.decode(errors="replace").split() if held is not None else []
        if len(holder) == 3 and holder[1].isdigit() and not process_alive(holder[0], int(holder[1])):
            # A load of this host that was killed: its lock is taken over (only if it is still that lock).
            taken = store.call(store.client.set, self.key, self.value, xx=True, ex=LOCK_S, get=True)
            if taken == held:
                return self
        who = f" (host {holder[0]}, pid {holder[1]})" if len(holder) == 3 else ""
        raise FeatureViewLocked(
            f"another materialize of feature view {self.name!r} is loading{who}",
            f"wait for it; a lock that is not renewed expires within {LOCK_S} s",
        )

    def renew(self, pipe: Any) -> None:
        """Queue the renewal on a batch's pipeline: its reply is 0 when the lock is no longer this load's."""
        pipe.eval(self._RENEW, 1, self.key, self.value, LOCK_S)

    def check(self) -> None:
        """Renew now, or raise `lost()` if the lock is no longer this load's."""
        if not self.store.call(self.store.client.eval, self._RENEW, 1, self.key, self.value, LOCK_S):
            raise self.lost()

    def lost(self) -> FeatureViewLocked:
        return FeatureViewLocked(
            f"this materialize of feature view {self.name!r} lost its lock (it stalled past {LOCK_S} s and another "
            "load took over); the view was not switched",
            "see the other load; run this one again if it is still wanted",
        )

    def __exit__(self, *exc: Any) -> None:
        _quietly(self.store.client.eval, self._RELEASE, 1, self.key, self.value)


def list_views(store: Store) -> Report:
    views = []
    for name in store.names():
        record = store.record(name)
        if record is not None:
            views.append(record.to_json())
    return Report("features list", results={"store": store.url, "views": views})


def show_view(store: Store, name: str) -> Report:
    record = store.require(validate_name(name, "feature view name"))
    return Report("features show", results={"store": store.url, "view": record.to_json()})
