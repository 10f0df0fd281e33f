"""Where the partitions of a job run: `local` (in this process, one after the other) or `dask` (on a cluster).

An engine only iterates partitions and hands back their partial results in partition order; the commands
(scoring, drift) define what a partition computes and how partials merge, so both engines give the same answer.

    local.py   in-process, in order
    dask.py    a dask.distributed cluster: connect (or start a local one), check the workers, run, cancel
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ENGINES = ("local", "dask")
SCHEDULER_ENV = "MLOPS_DASK_SCHEDULER"
CONNECT_TIMEOUT = 10.0  # seconds to reach the scheduler (and to see a worker) before giving up: never a hang


@dataclass(frozen=True)
class EngineOptions:
    """`--engine` and `--scheduler`: no scheduler with dask means a local cluster started for the run."""

    name: str = "local"
    scheduler: str | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    workers: int | None = None  # a local cluster's worker processes (default: one per core)


@dataclass(frozen=True)
class Partition:
    """One unit of work: a data file, its place among the input's files, and the global index of its first row."""

    index: int
    path: Path
    offset: int
    rows: int
