"""Single-row latency of the serving path: `LoadedModel.score` on one row at a time, with one BLAS/OpenMP thread.

The one latency timer, for the smoke test's gate and retrain's guardrail. A p99 over 200 calls is the 2nd-worst
call, so one hiccup of a shared machine would fail a release. So the calls run in ROUNDS rounds and the verdict
reads the *median round's* p99: a stall spoils one round, a slow model spoils all of them. It is also decided early:
as soon as a majority of rounds is over the budget (a model that sleeps 200 ms per call fails in about 2 s), or,
once a round has more slow calls than its p99 allows, that round is over.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from mlops_cli.runtime.model import LoadedModel

ROUNDS = 5
CALLS = 200  # per round
WARMUP = 10


def _call_ms(model: LoadedModel, row: pd.DataFrame) -> float:
    start = time.perf_counter()
    model.score(row)
    return (time.perf_counter() - start) * 1000


def single_row(
    model: LoadedModel, rows: pd.DataFrame, *, budget_ms: float | None = None, calls: int = CALLS, rounds: int = ROUNDS
) -> dict[str, Any]:
    """Percentiles of one-row `score` calls (ms), per round and overall, and whether the median round's p99 is within
    `budget_ms`. Rows are taken in turn from `rows` (valid rows: the contract check is part of what is timed)."""

    singles = [rows.iloc[[i]] for i in range(min(len(rows), calls))]
    for i in range(WARMUP):
        _call_ms(model, singles[i % len(singles)])
    allowed = int(calls * 0.01)  # slow calls a round may have and still keep its p99 within the budget
    per_round: list[list[float]] = []
    failed = 0
    for _ in range(rounds):
        timings: list[float] = []
        slow = 0
        for i in range(calls):
            timings.append(_call_ms(model, singles[i % len(singles)]))
            if budget_ms is not None and timings[-1] > budget_ms:
                slow += 1
                if slow > allowed:
                    break  # this round's p99 is over the budget whatever comes next
        per_round.append(timings)
        failed += budget_ms is not None and slow > allowed
        if failed > rounds // 2:
            break  # a majority of rounds is over: the median round is too
    return _summary(per_round, budget_ms, rounds)


def interleaved(models: dict[str, LoadedModel], rows: pd.DataFrame, *, calls: int = CALLS) -> dict[str, dict[str, Any]]:
    """Single-row latency of several models, calls alternating, so machine load falls on all of them alike."""
    singles = [rows.iloc[[i]] for i in range(min(len(rows), calls))]
    for i in range(WARMUP):
        for model in models.values():
            _call_ms(model, singles[i % len(singles)])
    per_round: dict[str, list[list[float]]] = {label: [] for label in models}
    for _ in range(ROUNDS):
        timings: dict[str, list[float]] = {label: [] for label in models}
        for i in range(calls):
            for label, model in models.items():
                timings[label].append(_call_ms(model, singles[i % len(singles)]))
        for label in models:
            per_round[label].append(timings[label])
    return {label: _summary(values, None, ROUNDS) for label, values in per_round.items()}


def _summary(per_round: list[list[float]], budget_ms: float | None, rounds: int) -> dict[str, Any]:
    import numpy as np

    from mlops_cli.runtime import threads

    every = np.concatenate([np.asarray(t) for t in per_round])
    round_p99 = [float(np.percentile(t, 99)) for t in per_round]
    # Rounds cut short by an early verdict count as over the budget; rounds never run count as nothing.
    judged = float(np.median(round_p99))
    p50, p95, p99 = (float(v) for v in np.percentile(every, [50, 95, 99]))
    out: dict[str, Any] = {
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "round_p99_ms": round_p99,
        "median_round_p99_ms": judged,
        "spread_ms": [min(round_p99), max(round_p99)],
        "calls": int(every.size),
        "rounds": len(per_round),
        "rounds_planned": rounds,
        "threads": threads.for_rows(1),
    }
    if budget_ms is not None:
        over = [p > budget_ms for p in round_p99]
        out["within_budget"] = judged <= budget_ms
        # Some rounds over the budget but the median within: the machine stalled, not the model.
        out["stalled_rounds"] = int(sum(over)) if out["within_budget"] else 0
    return out
