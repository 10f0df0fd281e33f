"""Lookups by entity id: an in-process LRU cache whose entries expire, in front of the store's one-script lookup.

The cache bounds both staleness (`ttl_s`: an entry older than that is fetched again, so a new version of the view
reaches a server within `ttl_s` of its flip) and memory (`max_entries`, least recently used out first). Unknown
entities are not cached: a row loaded a moment later is found at once. Safe for threads: a server's lookups run
on a small thread pool while its event loop answers cache hits itself.

Entries are keyed by (view version, id), and hits are taken only from the version the store last answered with, so
the rows of one lookup are all of one version: when a fetch finds the pointer moved past the version of the hits
(a flip since they were cached), every id is fetched again from the new version (`Found.merge`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from mlops_cli.errors import FeatureViewNotFound
from mlops_cli.features.store import Record, Store

CACHE_ENTRIES = 100_000
CACHE_TTL_S = 5.0


@dataclass(frozen=True)
class Entity:
    """One entity's values in `record`'s feature order."""

    record: Record
    values: list[Any]

    def get(self, feature: str) -> tuple[bool, Any]:
        """(the view has this feature, its value)."""
        index = self.record.index.get(feature)
        return (False, None) if index is None else (True, self.values[index])


@dataclass(frozen=True)
class Found:
    """What one lookup found: every entity of one view version (None: nothing came from the view)."""

    version: int | None
    entities: list[Entity | None]

    def merge(self, missing: list[int], fetched: Found) -> Found | None:
        """These hits with the entities fetched for the `missing` positions; None when the fetch answered from
        another version than the hits (the caller fetches every id again)."""
        hits = len(missing) < len(self.entities)
        if hits and fetched.version != self.version:
            return None
        out = list(self.entities)
        for i, entity in zip(missing, fetched.entities, strict=True):
            out[i] = entity
        return Found(fetched.version, out)


class Observer(Protocol):
    """Where a lookup's counts and times go (a server's metrics)."""

    def feature_cache_result(self, hits: int, misses: int) -> None: ...

    def feature_store_result(self, found: int, unknown: int, seconds: float) -> None: ...


class Lookup:
    def __init__(
        self,
        store: Store,
        view: str,
        *,
        max_entries: int = CACHE_ENTRIES,
        ttl_s: float = CACHE_TTL_S,
        observer: Observer | None = None,
    ) -> None:
        self.store = store
        self.view = view
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.observer = observer
        self._cache: OrderedDict[tuple[int, str], tuple[float, Entity]] = OrderedDict()
        self._lock = threading.Lock()
        self._record: Record | None = None  # the record the store last answered with: hits come from its version

    def cached(self, ids: list[str]) -> tuple[Found, list[int]]:
        """What the cache holds for `ids` (of the version the store last answered with), and the positions it does
        not hold (no I/O: for an event loop)."""
        out: list[Entity | None] = [None] * len(ids)
        missing: list[int] = []
        record = self._record
        version = record.version if record is not None else None
        if self.max_entries and self.ttl_s > 0 and version is not None:
            now = time.monotonic()
            cache = self._cache
            with self._lock:
                for i, key in enumerate(ids):
                    hit = cache.get((version, key))
                    if hit is not None and hit[0] > now:
                        cache.move_to_end((version, key))
                        out[i] = hit[1]
                    else:
                        missing.append(i)
        else:
            missing = list(range(len(ids)))
        if self.observer is not None:
            self.observer.feature_cache_result(len(ids) - len(missing), len(missing))
        return Found(version if len(missing) < len(ids) else None, out), missing

    def fetch(self, ids: list[str]) -> Found:
        """Every id from the store, in one round trip; fills the cache. StoreUnavailable if Redis is down or slow,
        FeatureViewNotFound if the view is gone (a store restarted empty, say)."""
        started = time.perf_counter()
        raw_record, raw_values = self.store.lookup(self.view, ids)
        seconds = time.perf_counter() - started
        out: list[Entity | None] = [None] * len(ids)
        if raw_record is None:
            raise FeatureViewNotFound(
                f"no feature view {self.view!r} in {self.store.where}", "load it: mlops features materialize"
            )
        record = self._parse(raw_record)
        if ids:
            expires = time.monotonic() + self.ttl_s
            fresh = []
            for i, raw in enumerate(raw_values):
                if raw is not None:
                    entity = Entity(record, json.loads(raw))
                    out[i] = entity
                    fresh.append((ids[i], entity))
            if fresh and self.max_entries and self.ttl_s > 0:
                with self._lock:
                    for key, entity in fresh:
                        self._cache[(record.version, key)] = (expires, entity)
                        self._cache.move_to_end((record.version, key))
                    while len(self._cache) > self.max_entries:
                        self._cache.popitem(last=False)
        if self.observer is not None:
            found = sum(e is not None for e in out)
            self.observer.feature_store_result(found, len(ids) - found, seconds)
        return Found(record.version, out)

    def find(self, ids: list[str]) -> Found:
        """Cache first, then the store for the rest: every entity of one version."""
        found, missing = self.cached(ids)
        if not missing:
            return found
        merged = found.merge(missing, self.fetch([ids[i] for i in missing]))
        return merged if merged is not None else self.fetch(ids)

    def get(self, ids: list[str]) -> list[Entity | None]:
        return self.find(ids).entities

    def _parse(self, raw: bytes) -> Record:
        record = self._record
        if record is None or record.raw != raw:  # parsed once per version, not once per lookup
            record = Record.parse(raw)
            self._record = record
        return record
