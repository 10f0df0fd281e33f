"""A worker's online features (`mlops serve --features`): rows that carry an entity id get the rest of their features
from the feature view before they are scored through the one runtime.

Cache hits are answered on the event loop; the rest of a request's ids go to Redis in one round trip, on a small
thread pool (redis-py is blocking), so the loop keeps reading requests meanwhile. Redis down or too slow: the
request gets 503 with the reason (never a hang: the client's timeouts are short and it does not retry), and
`/readyz` says the store is down until a call succeeds again (the follow thread pings it every `--poll-s`).
While the store is known down, requests that need it get 503 at once, without a call (a short circuit): only
after `RETRY_S` does one request try the store again, and the follow thread's ping closes the circuit as soon as
Redis answers. So a dead Redis costs a caller microseconds, not a timeout, and recovery needs nobody.

The answer's messages never name the store's address (nor its password): a caller reads them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, overload

from mlops_cli.errors import FeatureStoreError, StoreUnavailable
from mlops_cli.features.assemble import ABSENT, assemble, needs_lookup, reference_fills
from mlops_cli.features.store import entity_text

if TYPE_CHECKING:
    from mlops_cli.features.lookup import Entity, Found, Lookup
    from mlops_cli.features.store import Store
    from mlops_cli.online.following import Current
    from mlops_cli.online.metrics import Metrics
    from mlops_cli.online.routing import Router
    from mlops_cli.serve.protocols import Rows

LOOKUP_THREADS = 4
RETRY_S = 1.0  # while the store is down, how often a request may try it (the ping tries every --poll-s too)


@dataclass(frozen=True)
class FeatureOptions:
    url: str
    view: str
    entity_column: str
    on_missing: str = "reject"  # or "fill" (assemble.POLICIES)
    cache_s: float = 5.0
    cache_entries: int = 100_000
    timeout_s: float = 0.25


def check(options: FeatureOptions, *served: Current | None) -> None:
    """Before the server listens: the store answers, the view exists, and `fill` has a profile to fill from for
    every model served (champion and challenger)."""
    from mlops_cli.features.store import Store

    store = Store(options.url, timeout_s=max(options.timeout_s, 1.0))
    try:
        store.require(options.view)
    finally:
        store.close()
    if options.on_missing == "fill":
        for current in served:
            if current is not None:
                reference_fills(current.model)  # raises if the version has no reference profile


class OnlineFeatures:
    """Made in the worker (a Redis connection must not cross the fork)."""

    def __init__(self, options: FeatureOptions, metrics: Metrics) -> None:
        from mlops_cli.features.lookup import Lookup
        from mlops_cli.features.store import Store

        self.options = options
        self.metrics = metrics
        self.store: Store = Store(
            options.url, timeout_s=options.timeout_s, max_connections=LOOKUP_THREADS + 2, show_address=False
        )
        self.lookup: Lookup = Lookup(
            self.store, options.view, max_entries=options.cache_entries, ttl_s=options.cache_s, observer=metrics
        )
        self.error: str | None = None  # why the store is down, while it is
        self._failure: StoreUnavailable | None = None  # what a request gets at once while the store is down
        self._retry_at = 0.0  # monotonic time after which a request may try the store again
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

    async def complete(self, rows: Rows, features: list[str], router: Router) -> Rows:
        """`rows` with every feature in `features`: the request's own, else the store's, else the policy's (with
        the reference profile of the model that will answer each row)."""
        n = rows.n
        values = rows.values
        need = needs_lookup(values, features, n) if n else []
        ids_column = values.get(self.options.entity_column)
        texts = [entity_text(ids_column[i]) if ids_column is not None else None for i in need]
        entities: list[Entity | None] = [None] * len(need)
        wanted = [j for j, text in enumerate(texts) if text is not None]
        version = None
        if wanted:
            keys: list[str] = [texts[j] for j in wanted]  # type: ignore[misc]
            found, missing = self.lookup.cached(keys)
            if missing:
                merged = found.merge(missing, await self._fetch([keys[k] for k in missing]))
                found = merged if merged is not None else await self._fetch(keys)  # a flip since the hits: again
            version = found.version
            for j, entity in zip(wanted, found.entities, strict=True):
                entities[j] = entity
        policy = self.options.on_missing
        split = self._split_keys(router, values, n, need, entities)
        fill = self._row_fills(router, split, n) if policy == "fill" and need else None
        assembled = assemble(
            values,
            n,
            features,
            self.options.view,
            need,
            entities,
            policy=policy,
            version=version,
            fill=fill,
            ids_given=[t is not None for t in texts],
        )
        action = "rejected" if assembled.rejected else "filled"
        for reason, count in assembled.fallbacks.items():
            self.metrics.feature_fallbacks.labels(reason.replace(" ", "_"), action).inc(count)  # a label: no spaces
        assembled.check()
        if ids_column is not None:
            assembled = replace(assembled, entity_ids=[entity_text(v) for v in ids_column])
        out = dict(assembled.values)
        for name, column in split.items():  # a split key that is not a model feature: routed as the fills chose
            out.setdefault(name, column)
        for name, column in values.items():  # the id: a column no row carried is null
            if name not in out:
                out[name] = [None if v is ABSENT else v for v in column]
        return replace(rows, values=out, features=assembled)

    async def _fetch(self, keys: list[str]) -> Found:
        failure = self._failure
        if failure is not None:
            now = time.monotonic()
            if now < self._retry_at:
                self.metrics.feature_short_circuits.inc()
                raise StoreUnavailable(failure.message, failure.hint)  # known down: 503 now, not after a timeout
            self._retry_at = now + RETRY_S  # this request tries the store; the others keep the fast 503 meanwhile
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
        self._failure = exc if isinstance(exc, StoreUnavailable) else None  # a missing view is not a dead store
        self._retry_at = time.monotonic() + RETRY_S
        self.metrics.feature_store_up.set(0)

    def _up(self) -> None:
        self._failure = None
        if self.error is not None:
            self.error = None
            self.metrics.feature_store_up.set(1)

    @staticmethod
    def _split_keys(
        router: Router, values: dict[str, list[Any]], n: int, need: list[int], entities: list[Entity | None]
    ) -> dict[str, list[Any]]:
        """The split key's columns as the router will read them: the request's value, else the store's."""
        keys: dict[str, list[Any]] = {}
        for name in router.split_key if router.challenger is not None else ():
            given = values.get(name, [ABSENT] * n)
            column = [None if v is ABSENT else v for v in given]
            for i, entity in zip(need, entities, strict=True):
                if given[i] is ABSENT and entity is not None:
                    column[i] = entity.get(name)[1]
            keys[name] = column
        return keys

    def _row_fills(self, router: Router, split: dict[str, list[Any]], n: int) -> Sequence[dict[str, Any] | None]:
        """Per row, the stand-ins of the model that will answer it (the router's split on `split`), read from its
        reference profile only when a row needs them."""
        champion = router.champion.current
        challenger = router.challenger.current if router.challenger is not None else None
        if challenger is None or not router.share:
            return _Fills(self, [champion] * n)
        to_challenger = router.to_challenger(split)
        return _Fills(self, [challenger if routed else champion for routed in to_challenger])

    def _fills_of(self, current: Current | None) -> dict[str, Any] | None:
        if current is None:
            return None
        key = f"{current.model.spec.name}:{current.version}"
        fills = self._fills.get(key)
        if fills is None:
            with self._lock:
                fills = self._fills.setdefault(key, reference_fills(current.model))
        return fills

    def details(self) -> dict[str, Any]:
        return {
            "view": self.options.view,
            "entity_column": self.options.entity_column,
            "on_missing_feature": self.options.on_missing,
            "up": self.error is None,
            "error": self.error,
        }

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.store.close()


class _Fills(Sequence[dict[str, Any] | None]):
    """Each row's stand-ins, looked up when `assemble` asks for a row it must fill: a version without a reference
    profile fails only the requests that need one."""

    def __init__(self, features: OnlineFeatures, answering: list[Current | None]) -> None:
        self._features, self._answering = features, answering

    def __len__(self) -> int:
        return len(self._answering)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any] | None: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[dict[str, Any] | None]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self._features._fills_of(c) for c in self._answering[i]]
        return self._features._fills_of(self._answering[i])
