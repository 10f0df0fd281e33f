"""Micro-batching: the requests waiting in one worker go to the model in one call.

A model call costs about the same for 1 row as for 64 (the per-call overhead dominates), so while one call runs on
the model thread, requests that arrive queue up, and the next call takes all of them, up to `max_rows` rows. With
`max_wait_s` > 0 a call also waits that long for company before it starts; at 0 (the default) a lone request
never waits, and batches form from load alone. Rows already queued beyond `max_queued_rows` are refused at once
(429): a saturated server says so instead of timing out silently.

A batch whose rows break the input contract for the whole batch (a column of the wrong type, a missing feature
after a version switch) is scored again request by request, so that one caller's bad request fails only itself.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import MlopsError, Overloaded

if TYPE_CHECKING:
    from mlops_cli.online.metrics import Metrics
    from mlops_cli.online.routing import Routed, Router


@dataclass
class _Item:
    values: dict[str, list[Any]]
    n: int
    future: asyncio.Future[Routed] = field(repr=False)


class Batcher:
    def __init__(
        self, router: Router, metrics: Metrics, *, max_rows: int, max_wait_s: float, max_queued_rows: int
    ) -> None:
        self.router = router
        self.metrics = metrics
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.max_queued_rows = max_queued_rows
        self.queued_rows = 0
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        # One model thread per worker: the worker's parallelism is its processes; the event loop stays free to
        # read the next requests while a batch is scored.
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="mlops-model")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def score(self, values: dict[str, list[Any]], n: int) -> Routed:
        if self.queued_rows + n > self.max_queued_rows:
            raise Overloaded(
                f"{self.queued_rows:,} rows are already waiting in this worker", "retry shortly, or add workers"
            )
        future: asyncio.Future[Routed] = asyncio.get_running_loop().create_future()
        self.queued_rows += n
        self._queue.put_nowait(_Item(values, n, future))
        return await future  # a deadline cancels this wait; the batch skips an item whose caller left

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            live = [item for item in batch if not item.future.done()]
            self.queued_rows -= sum(item.n for item in batch)
            if not live:
                continue
            try:
                await self._answer(live)
            except BaseException as exc:  # noqa: BLE001 (a bug answers its requests with 500; the loop goes on)
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise

    async def _next_batch(self) -> list[_Item]:
        first = await self._queue.get()
        batch, rows = [first], first.n
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_rows:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            batch.append(item)
            rows += item.n
        return batch

    async def _answer(self, items: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        if len(items) == 1:
            values, n = items[0].values, items[0].n
        else:
            values = {
                name: [v for item in items for v in item.values.get(name, [None] * item.n)] for name in items[0].values
            }
            n = sum(item.n for item in items)
        try:
            routed = await loop.run_in_executor(self._model_thread, self._timed, values, n)
        except MlopsError as exc:
            if len(items) == 1:
                items[0].future.set_exception(exc)
                return
            for item in items:  # one request's bad column must not fail the others: each on its own
                await self._answer([item])
            return
        offset = 0
        for item in items:
            if not item.future.done():
                item.future.set_result(routed if len(items) == 1 else _slice(routed, offset, offset + item.n))
            offset += item.n

    def _timed(self, values: dict[str, list[Any]], n: int) -> Routed:
        start = time.perf_counter()
        routed = self.router.score(values, n)
        self.metrics.answered(routed, time.perf_counter() - start)
        return routed

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._model_thread.shutdown(wait=True)


def _slice(routed: Routed, start: int, stop: int) -> Routed:
    from mlops_cli.online.routing import Routed

    return Routed(
        stop - start,
        routed.prediction[start:stop],
        routed.proba[start:stop] if routed.proba is not None else None,
        routed.classes,
        routed.version[start:stop],
        routed.route[start:stop],
        routed.reasons[start:stop],
        [],  # the parts stay with the batch (its metrics are recorded once)
    )
