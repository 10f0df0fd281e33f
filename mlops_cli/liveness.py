"""Whether the process that holds a lock or runs a job is still alive: one check for `retrain` (a job whose process
is gone shows as killed) and `features materialize` (a dead load's lock is taken over at once)."""

from __future__ import annotations

import os
import socket


def process_alive(host: str | None, pid: int) -> bool:
    """False only when `pid` surely is gone: it ran on this host and no such process exists now. A process of
    another host cannot be checked from here, so it counts as alive (its lock expires, or its record stays open)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
