"""The online feature store: Redis, as `materialize` writes it and lookups read it.

One feature view NAME lives under the prefix `P = mlops:fv:NAME`:

    P              the current version's record (JSON: version, entity, features and their kinds, TTL, rows, the
                   source table's sha256): the pointer readers follow, replaced in one SET when a load completes
    P:seq          the last version number handed out (INCR)
    P:lock         the materialize loading now ("host pid token"), with an expiry it renews every batch
    P:v<N>:<id>    entity <id>'s values in version N: a JSON array in the record's feature order; with a TTL, every
                   key of a version has the same absolute expiry (the record's `expires_at`)
    mlops:fv       the set of view names

Unlike Feast's layout (one hash per entity holding every view's fields, overwritten in place), each load writes a
version of its own and readers switch with the pointer, so a reader never sees half a table or two loads mixed.
A lookup is one Lua script: it reads the pointer and the entities' keys in one atomic step, so a lookup that
races a flip (and the old version's deletion) gets one version whole, never a mix or a hole.

The client never hangs and never retries: redis-py 8 retries a failed command 10 times with exponential backoff,
and waits 5 s on a socket by default; a request that needs Redis must fail fast (503) instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mlops_cli.errors import FeatureStoreError, FeatureViewNotFound, InputError, StoreUnavailable

ROOT = "mlops:fv"
TIMEOUT_S = 0.25  # connect and read: Redis answers a lookup in well under a millisecond on a healthy network
DROP_BATCH = 10_000  # keys per SCAN step and per UNLINK when a version is dropped

# KEYS[1]: the view's pointer; ARGV: entity ids. Returns {record or false, value or false per id}.
_LOOKUP = """
local record = redis.call('GET', KEYS[1])
if not record then return {false} end
local prefix = KEYS[1] .. ':v' .. cjson.decode(record)['version'] .. ':'
local out = {record}
for i, id in ipairs(ARGV) do out[i + 1] = redis.call('GET', prefix .. id) end
return out
"""


@dataclass(frozen=True)
class Record:
    """A feature view's version, as its pointer holds it."""

    name: str
    version: int
    entity: str
    features: list[str]
    kinds: dict[str, str]
    ttl_s: int | None
    rows: int
    source: dict[str, Any]
    loaded_at: str
    raw: bytes = b""
    expires_at: str | None = None  # with a TTL: when every entity of this version expires (one time for the load)

    @cached_property
    def index(self) -> dict[str, int]:
        """Feature name -> position in an entity's values."""
        return {f: i for i, f in enumerate(self.features)}

    @classmethod
    def parse(cls, raw: bytes) -> Record:
        data = json.loads(raw)
        return cls(
            data["name"],
            int(data["version"]),
            data["entity"],
            list(data["features"]),
            dict(data["kinds"]),
            data.get("ttl_s"),
            int(data["rows"]),
            dict(data.get("source") or {}),
            data["loaded_at"],
            raw,
            data.get("expires_at"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "entity": self.entity,
            "features": self.features,
            "kinds": self.kinds,
            "ttl_s": self.ttl_s,
            "rows": self.rows,
            "source": self.source,
            "loaded_at": self.loaded_at,
            "expires_at": self.expires_at,
        }


def pointer(name: str) -> str:
    return f"{ROOT}:{name}"


def version_prefix(name: str, version: int) -> str:
    return f"{pointer(name)}:v{version}:"


SCHEMES = ("redis", "rediss", "unix")
USAGE = "use redis://[:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS) or unix:///PATH/TO/SOCKET[?db=DB]"


def redacted(url: str) -> str:
    """The URL without its password (in the user part or a `password=` query parameter), for messages, logs and
    reports: a password is a secret, never printed. Textual, so it works on a malformed URL too (a bad port)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return parts._replace(netloc=f"{userinfo}{at}{host}", query=query).geturl()


def check_url(url: str) -> str | None:
    """What is wrong with a store URL, in one line that never quotes its password (None: nothing)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError: not a number, or out of range
    except ValueError as exc:
        return f"{redacted(url)}: {exc}"
    if parts.scheme not in SCHEMES:
        return f"{redacted(url)}: not a Redis URL (scheme {parts.scheme or 'missing'!r})"
    databases = parse_qs(parts.query).get("db", [])
    if parts.scheme == "unix":
        if not parts.path:
            return f"{redacted(url)}: no socket path"
    else:
        if not parts.hostname:
            return f"{redacted(url)}: no host"
        if port == 0:
            return f"{redacted(url)}: port 0"
        if parts.path.strip("/"):
            databases.append(parts.path.strip("/"))
    for db in databases:
        if not db.isdigit():
            return f"{redacted(url)}: the database {db!r} is not a number"
    return None


class Store:
    """A Redis connection pool with short timeouts and no retries, and the view-level operations."""

    def __init__(
        self, url: str, *, timeout_s: float = TIMEOUT_S, max_connections: int = 16, show_address: bool = True
    ) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise InputError(
                "online features need the redis client", "install the extra: pip install 'mlops-cli[redis]'"
            ) from exc
        problem = check_url(url)
        if problem is not None:
            raise InputError(problem, USAGE)
        self.url = redacted(url)
        # What messages call the store: its (redacted) address for an operator's command; for a server's answers,
        # which any caller reads, no address at all (and no client error text, which names host and port).
        self.show_address = show_address
        self.label = f"the feature store {self.url}" if show_address else "the feature store"
        self.where = self.url if show_address else "the feature store"
        self.timeout_s = timeout_s
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self._redis_error = redis.RedisError
        try:
            pool = redis.ConnectionPool.from_url(
                url,
                socket_connect_timeout=timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),  # the default retries 10 times with backoff: seconds, not a 503
                max_connections=max_connections,
            )
        except ValueError as exc:
            raise InputError(f"{self.url}: {_first_line(exc)}", USAGE) from exc
        self.client = redis.Redis(connection_pool=pool)
        self._lookup = self.client.register_script(_LOOKUP)

    # --- errors ------------------------------------------------------------------------------------------------

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        what = "did not answer in time" if "imeout" in type(exc).__name__ else "cannot be reached"
        detail = f" ({_first_line(exc)})" if self.show_address else ""
        return StoreUnavailable(f"{self.label} {what}{detail}", "check that Redis is running and reachable")

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a client call; Redis errors become FeatureStoreError (unreachable: StoreUnavailable)."""
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise self.unavailable(exc) from exc
        except self._redis_error as exc:
            detail = f": {_first_line(exc)}" if self.show_address else f" ({type(exc).__name__})"
            raise FeatureStoreError(f"{self.label} refused{detail}", "see Redis's log") from exc

    # --- reading -----------------------------------------------------------------------------------------------

    def ping(self) -> None:
        self.call(self.client.ping)

    def record(self, name: str) -> Record | None:
        raw = self.call(self.client.get, pointer(name))
        return Record.parse(raw) if raw is not None else None

    def require(self, name: str) -> Record:
        record = self.record(name)
        if record is None:
            raise FeatureViewNotFound(
                f"no feature view {name!r} in {self.where}", "load it first: mlops features materialize ... --name NAME"
            )
        return record

    def names(self) -> list[str]:
        return sorted(m.decode() for m in self.call(self.client.smembers, ROOT))

    def lookup(self, name: str, ids: list[str]) -> tuple[bytes | None, list[bytes | None]]:
        """The pointer's raw record and each id's raw values, read in one atomic step (None: no such view/entity)."""
        answer = self.call(self._lookup, keys=[pointer(name)], args=ids)
        if not answer or answer[0] is None:
            return None, [None] * len(ids)
        return answer[0], list(answer[1:])

    # --- maintenance -------------------------------------------------------------------------------------------

    def drop_prefix(self, prefix: str, keep: str | None = None, before_unlink: Callable[[], None] | None = None) -> int:
        """UNLINK every key under `prefix` (but those under `keep`), a SCAN step at a time; returns the count.
        `before_unlink` runs before each UNLINK (a lock check that raises to stop)."""
        dropped = 0
        cursor = 0
        while True:
            cursor, keys = self.call(self.client.scan, cursor, match=f"{_glob(prefix)}*", count=DROP_BATCH)
            if keep is not None:
                keys = [k for k in keys if not k.decode(errors="replace").startswith(keep)]
            if keys:
                if before_unlink is not None:
                    before_unlink()
                dropped += int(self.call(self.client.unlink, *keys))
            if cursor == 0:
                return dropped

    def close(self) -> None:
        self.client.connection_pool.disconnect()


def _glob(text: str) -> str:
    """`text` with SCAN's glob characters escaped (a view name may hold none, but an id may)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def entity_text(value: Any) -> str | None:
    """An entity id's key text from a JSON value, as `scoring.key_text` casts a table's column (integers in
    decimal, integral floats without `.0`, booleans as true/false): a request's id finds what a Parquet or CSV load
    wrote. None for a null or a value that is not a scalar id."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    return None
