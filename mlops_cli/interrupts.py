"""Commit windows: steps that a signal must not cut in half (a rename and the log line that goes with it).

The library marks them with `commit_window()`; the CLI, the one place that handles signals, asks `defer()` whether
a signal that arrived falls inside one. If so the signal waits, and the callback the CLI installed is called with it
when the last open window closes (the CLI then raises `Interrupted`). Windows nest and may be open in several
threads at once. Without an installed callback (a library user, a server that handles its own signals) a window is
a shared `nullcontext`: it costs one global read.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

_NO_WINDOW = contextlib.nullcontext()


class _Windows:
    """The windows open in this process and the signal waiting for the last of them to close."""

    def __init__(self, deliver: Callable[[int], None]) -> None:
        self.deliver = deliver
        # Reentrant: the CLI's handler runs in the main thread, possibly between two lines of a window's own
        # bookkeeping under this lock; a plain Lock would deadlock there.
        self.lock = threading.RLock()
        self.open = 0
        self.pending: int | None = None


class _Window:
    __slots__ = ("_windows",)

    def __init__(self, windows: _Windows) -> None:
        self._windows = windows

    def __enter__(self) -> None:
        with self._windows.lock:
            self._windows.open += 1

    def __exit__(self, *exc_info: Any) -> None:
        windows = self._windows
        with windows.lock:
            windows.open -= 1
            signum = windows.pending if windows.open == 0 else None
            if signum is not None:
                windows.pending = None
        if signum is not None:
            windows.deliver(signum)  # the CLI raises Interrupted here, after the step completed


_installed: _Windows | None = None


def commit_window() -> contextlib.AbstractContextManager[None]:
    """A step to complete whole once begun: a signal arriving inside waits until the outermost window closes."""
    windows = _installed
    return _Window(windows) if windows is not None else _NO_WINDOW


def install(deliver: Callable[[int], None]) -> None:
    """Honour windows from now on: `deliver(signum)` is called when the last window closes on a deferred signal,
    in the thread that closed it. For the CLI's signal handling only."""
    global _installed
    _installed = _Windows(deliver)


def uninstall() -> None:
    """Stop honouring windows (windows already open close harmlessly); a signal still waiting is dropped."""
    global _installed
    _installed = None


_on_hangup: Callable[[], None] | None = None


@contextlib.contextmanager
def hangup_rechecks(callback: Callable[[], None]) -> Iterator[None]:
    """For a service (`mlops stream`): while inside, SIGHUP calls `callback` (re-check the alias now, the services'
    convention) instead of stopping the command. `callback` runs in a signal handler: it must only set a flag."""
    global _on_hangup
    _on_hangup = callback
    try:
        yield
    finally:
        _on_hangup = None


def hangup_handler() -> Callable[[], None] | None:
    """For the CLI's signal handler: what SIGHUP does instead of stopping, if a service said so."""
    return _on_hangup


def defer(signum: int) -> bool:
    """For the CLI's signal handler: whether a window is open. If one is, the signal waits for the last window to
    close (only the first such signal is kept: a second one changes nothing)."""
    windows = _installed
    if windows is None:
        return False
    with windows.lock:
        if windows.open == 0:
            return False
        if windows.pending is None:
            windows.pending = signum
        return True
