"""A worker's online features (`mlops serve --features`): rows that carry an entity id get the rest of their features
from the feature view before they are scored through the one runtime.

Cache hits are answered on the event loop; the rest of a request's ids go to Redis in one round trip, on a small
thread pool (redis-py is blocking), so the loop keeps reading requests meanwhile. Redis down or too slow: the
request gets 503 with the reason (never a hang: the client's timeouts are short and it does not retry), and
`/readyz` says the store is down until a call succeeds again (the follow thread pings it every `--poll-s`).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import FeatureStoreError
from mlops_cli.features.assemble import ABSENT, assemble, needs_lookup, reference_fills
from mlops_cli.features.store import entity_text

if TYPE_CHECKING:
    from mlops_cli.features.lookup import Entity, Lookup
    from mlops_cli.features.store import Store
    from mlops_cli.online.following import Current
    from mlops_cli.online.metrics import Metrics
    from mlops_cli.serve.protocols import Rows

LOOKUP_THREADS = 4


@dataclass(frozen=True)
class FeatureOptions:
    url: str
    view: str
    entity_column: str
    on_missing: str = "reject"  # or "fill" (assemble.POLICIES)
    cache_s: float = 5.0
    cache_entries: int = 100_000
    timeout_s: float = 0.25


def check(options: FeatureOptions, champion: Current) -> None:
    """Before the server listens: the store answers, the view exists, and `fill` has a profile to fill from."""
    from mlops_cli.features.store import Store

    store = Store(options.url, timeout_s=max(options.timeout_s, 1.0))
    try:
        store.require(options.view)
    finally:
        store.close()
    if options.on_missing == "fill":
        reference_fills(champion.model)  # raises if the version has no reference profile


class OnlineFeatures:
    """Made in the worker (a Redis connection must not cross the fork)."""

    def __init__(self, options: FeatureOptions, metrics: Metrics) -> None:
        from mlops_cli.features.lookup import Lookup
        from mlops_cli.features.store import Store

        self.options = options
        self.metrics = metrics
        self.store: Store = Store(options.url, timeout_s=options.timeout_s, max_connections=LOOKUP_THREADS + 2)
        self.lookup: Lookup = Lookup(
            self.store, options.view, max_entries=options.cache_entries, ttl_s=options.cache_s, observer=metrics
        )
        self.error: str | None = None  # why the store is down, while it is
        self._pool = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="mlops-features")
        self._fills: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        metrics.feature_store_up.set(1)

    def names(self, columns: list[str]) -> list[str]:
        """The columns a request reads: the models' and the entity id."""
        return list(dict.fromkeys([*columns, self.options.entity_column]))

    def check_health(self) -> None:
        """The follow thread's ping: keeps `error` (and so /readyz) current."""
        try:
            self.store.ping()
        except FeatureStoreError as exc:
            self._down(exc)
            return
        self._up()

    async def complete(self, rows: Rows, features: list[str], champion: Current | None) -> Rows:
        """`rows` with every feature in `features`: the request's own, else the store's, else the policy's."""
        n = rows.n
        values = rows.values
        need = needs_lookup(values, features, n) if n else []
        ids_column = values.get(self.options.entity_column)
        texts = [entity_text(ids_column[i]) if ids_column is not None else None for i in need]
        entities: list[Entity | None] = [None] * len(need)
        wanted = [j for j, text in enumerate(texts) if text is not None]
        if wanted:
            keys = [texts[j] for j in wanted]  # type: ignore[misc]
            found, missing = self.lookup.cached(keys)  # type: ignore[arg-type]
            if missing:
                fetched = await self._fetch([keys[k] for k in missing])  # type: ignore[misc]
                for k, entity in zip(missing, fetched, strict=True):
                    found[k] = entity
            for j, entity in zip(wanted, found, strict=True):
                entities[j] = entity
        policy = self.options.on_missing
        fill = self._fills_for(champion) if policy == "fill" else None
        assembled = assemble(
            values,
            n,
            features,
            self.options.view,
            need,
            entities,
            policy=policy,
            fill=fill,
            ids_given=[t is not None for t in texts],
        )
        action = "rejected" if assembled.rejected else "filled"
        for reason, count in assembled.fallbacks.items():
            self.metrics.feature_fallbacks.labels(reason, action).inc(count)
        assembled.check()
        if ids_column is not None:
            assembled = replace(assembled, entity_ids=[entity_text(v) for v in ids_column])
        out = dict(assembled.values)
        for name, column in values.items():  # the id and the split key: a column no row carried is null
            if name not in out:
                out[name] = [None if v is ABSENT else v for v in column]
        return replace(rows, values=out, features=assembled)

    async def _fetch(self, keys: list[str]) -> list[Entity | None]:
        loop = asyncio.get_running_loop()
        try:
            fetched = await loop.run_in_executor(self._pool, self.lookup.fetch, keys)
        except FeatureStoreError as exc:
            self.metrics.feature_store_errors.inc()
            self._down(exc)
            raise
        self._up()
        return fetched

    def _down(self, exc: FeatureStoreError) -> None:
        self.error = exc.one_line()
        self.metrics.feature_store_up.set(0)

    def _up(self) -> None:
        if self.error is not None:
            self.error = None
            self.metrics.feature_store_up.set(1)

    def _fills_for(self, champion: Current | None) -> dict[str, Any] | None:
        if champion is None:
            return None
        fills = self._fills.get(champion.version)
        if fills is None:
            with self._lock:
                fills = self._fills.setdefault(champion.version, reference_fills(champion.model))
        return fills

    def details(self) -> dict[str, Any]:
        return {
            "store": self.store.url,
            "view": self.options.view,
            "entity_column": self.options.entity_column,
            "on_missing_feature": self.options.on_missing,
            "up": self.error is None,
            "error": self.error,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.store.close()
