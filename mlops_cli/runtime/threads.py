"""How many BLAS/OpenMP threads a prediction runs with.

A one-row prediction spread over two OpenMP threads waits at a barrier for whichever thread a busy neighbour pushed
off its core: on a loaded 2-core machine that turned a 2 ms p99 into 145 ms. So small batches run with one thread,
as a server worker does; large batches keep the libraries' default, where the threads pay for themselves.

The limit is process-wide (threadpoolctl sets it in the BLAS and OpenMP libraries) and switching costs about 50 µs,
so it is sticky: a run of small batches pays once, and a large batch restores the default. Concurrent callers may
see each other's setting; that changes only speed, never an answer.
"""

from __future__ import annotations

import os
import threading
from typing import Any

SMALL_BATCH = 256  # rows; at or below this one thread is faster than a fork-join over several

_lock = threading.Lock()
_controller: Any = None
_limiter: Any = None  # set while one thread is in force
_pinned = False
_default: int | None = None


def for_rows(rows: int) -> int | None:
    """Put the thread count in force for a batch of `rows` rows; return it (None: the libraries' default)."""
    global _limiter
    small = _pinned or rows <= SMALL_BATCH
    if small == (_limiter is not None):
        return 1 if small else None  # already so: the common case takes no lock
    with _lock:
        if small and _limiter is None:
            _limiter = _control().limit(limits=1)
        elif not small and _limiter is not None:
            _limiter.restore_original_limits()
            _limiter = None
    return 1 if small else None


def pin_single() -> None:
    """One thread for every batch from now on (a server worker, whose parallelism is its processes)."""
    global _pinned
    _pinned = True
    for_rows(1)


def pinned() -> bool:
    return _pinned


def default_threads() -> int:
    """The thread count a large batch runs with (the libraries' default on this machine)."""
    _control()
    return _default or os.cpu_count() or 1


def _control() -> Any:
    global _controller, _default
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
        _default = max((i["num_threads"] for i in _controller.info()), default=None)
    return _controller
