"""The Dask engine: partitions run as tasks on a dask.distributed cluster.

`cluster()` connects to the scheduler at an address (a connect timeout, never a hang) or starts a local cluster,
waits for a worker, and checks that every worker runs this client's mlops and scikit-learn versions (a model may
predict differently under another scikit-learn). `map_partitions()` submits one task per partition and returns the
results in partition order. A task that fails stops the run with the error of the *first* failing partition, the
one a local run would have met first, so both engines say the same thing. Ctrl-C or SIGTERM on the client cancels
every task. `worker_cached()` keeps one verified model per worker process.

Imported only with `--engine dask`: `mlops --help` and the local engine never import distributed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mlops_cli.engines import EngineOptions
from mlops_cli.errors import ClusterError, VersionMismatch

_CACHE: dict[Any, Any] = {}
_CACHE_LOCK = threading.Lock()


@dataclass
class Cluster:
    client: Any  # distributed.Client
    address: str
    local: bool  # started by this run
    workers: int

    def describe(self) -> dict[str, Any]:
        """The report's `engine` block."""
        return {"name": "dask", "scheduler": None if self.local else self.address, "workers": self.workers}


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        from mlops_cli.runtime.formats import MissingExtra

        raise MissingExtra("--engine dask needs Dask", "pip install 'mlops-cli[dask]'") from exc
    return distributed


def versions() -> dict[str, str]:
    """What must match between the client and every worker."""
    import sklearn

    import mlops_cli

    return {"mlops": mlops_cli.__version__, "scikit-learn": sklearn.__version__}


@contextlib.contextmanager
def cluster(options: EngineOptions) -> Iterator[Cluster]:
    """A connected client: to `options.scheduler`, or to a local cluster started here and stopped on the way out."""
    distributed = _distributed()
    local_cluster = None
    address = options.scheduler
    if address is None:
        # Worker processes, one thread each: scoring holds the GIL in places, and a worker's memory is then one
        # partition's batch at a time.
        local_cluster = distributed.LocalCluster(
            n_workers=options.workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            # No dashboard; the scheduler's own HTTP endpoint on a free port, not 8787 (taken if another runs).
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.ERROR,
        )
        address = local_cluster.scheduler_address
    try:
        try:
            client = distributed.Client(address, timeout=options.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {address} ({_first_line(exc)})",
                "check --scheduler / MLOPS_DASK_SCHEDULER and that the scheduler is running",
            ) from None
        try:
            workers = _ready_workers(client, address, options.connect_timeout)
            yield Cluster(client, address, local_cluster is not None, workers)
        finally:
            with contextlib.suppress(Exception):
                client.close(timeout=5)
    finally:
        if local_cluster is not None:
            with contextlib.suppress(Exception):
                local_cluster.close(timeout=5)


def _ready_workers(client: Any, address: str, timeout: float) -> int:
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"the Dask scheduler at {address} has no workers ({_first_line(exc)})", "start workers: dask worker ADDRESS"
        ) from None
    mine = versions()
    theirs = client.run(versions)
    for worker, found in sorted(theirs.items()):
        differ = {k: (v, found.get(k)) for k, v in mine.items() if found.get(k) != v}
        if differ:
            what = ", ".join(f"{k} {w} there, {c} here" for k, (c, w) in differ.items())
            raise VersionMismatch(
                f"Dask worker {worker} runs another version ({what})",
                "install the same mlops and scikit-learn versions on every worker",
            )
    return len(theirs)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def map_partitions(
    cluster: Cluster,
    fn: Callable[..., Any],
    items: Sequence[Any],
    *args: Any,
    on_result: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """fn(item, *args) for each item on the cluster, results in item order. On the first failure in item order,
    the tasks after it are cancelled, the ones before it are awaited (one of them may fail first), and that error is
    raised. Any exception on the client (Ctrl-C, SIGTERM) cancels every task."""
    distributed = _distributed()
    client = cluster.client
    futures: list[Any] = [client.submit(fn, item, *args, pure=False) for item in items]
    where = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(items)
    failed: int | None = None  # the earliest failed item so far
    error: BaseException | None = None
    pending = set(range(len(items)))
    try:
        for future in distributed.as_completed(futures, loop=client.loop):
            i = where[future.key]
            pending.discard(i)
            if future.status == "error" or future.status == "cancelled":
                if future.status == "cancelled":
                    if failed is None or i < failed:  # cancelled by someone else: the scheduler lost it
                        raise ClusterError(f"a task of this run was cancelled on the cluster at {cluster.address}")
                    continue
                if failed is None or i < failed:
                    failed, error = i, _remote_error(future, cluster)
                    later = [f for j, f in enumerate(futures) if j > i and j in pending and f is not None]
                    client.cancel(later)
                    pending -= {where[f.key] for f in later}
            elif failed is None or i < failed:
                results[i] = future.result()
                if on_result is not None:
                    on_result(i, results[i])
            # Drop the client's last reference: the scheduler then frees the result on its worker. Held until the
            # end, results made a worker's memory grow with the number of partitions, not their size.
            futures[i] = None
            del future
            if failed is not None and not any(j < failed for j in pending):
                break
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel([f for f in futures if f is not None])
        raise
    if error is not None:
        with contextlib.suppress(Exception):
            client.cancel([f for f in futures if f is not None])
        raise error
    return results


def _remote_error(future: Any, cluster: Cluster) -> BaseException:
    """The task's own exception (an MlopsError keeps its class and hint); a worker that died under it is a
    ClusterError."""
    distributed = _distributed()
    exc = future.exception()
    if isinstance(exc, distributed.KilledWorker):
        return ClusterError(
            f"Dask workers died running a task of this run ({_first_line(exc)})",
            "check the workers' memory and logs; nothing was written",
        )
    return exc  # type: ignore[no-any-return]


def worker_cached(key: Any, build: Callable[[], Any]) -> Any:
    """One value per worker process and key (a verified, loaded model): built once, then shared by its threads."""
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]
