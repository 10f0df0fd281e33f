"""Shared by the benchmarks: run a command as a child process and measure its wall time and peak RSS.

The machine is shared and noisy: every figure is the median of several runs, and comparisons are ratios taken
in the same run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench"


def measure(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of one child process (os.wait4 gives that child's own rusage)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({status}): {stderr[-2000:]}")
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024}


def median_of(argv: list[str], repeats: int = 3, **kwargs: Any) -> dict[str, float]:
    runs = [measure(argv, **kwargs) for _ in range(repeats)]
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_mb": statistics.median(r["peak_mb"] for r in runs),
        "repeats": repeats,
    }


def python() -> str:
    return sys.executable


def save(name: str, results: dict[str, Any]) -> Path:
    """Write build/bench/<name>.json and print it as a table."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\n## {name}  ({path.relative_to(ROOT)})")
    for key, value in results.items():
        print(f"  {key}: {value}")
    return path
