"""Prometheus metrics of a service, summed across its worker processes.

prometheus_client's multiprocess mode keeps each process's values in memory-mapped files in one folder, and a
scrape reads them all. Its files are named by process id, so a server whose workers are restarted would grow a file
set per restart and its scrapes would slow to seconds. Here the identity is the worker's slot (0..N-1) instead: a
restarted worker reopens its predecessor's files and its counters continue, and the folder holds at most one file
set per slot and metric type. The folder is the server's own, made at start and removed at exit.

Names follow the conventions: `mlops_` prefix, base units, `_total` counters, no per-request or per-row labels.
Latency buckets start at 100 µs: a model behind this server answers in well under the client library's 5 ms.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from mlops_cli.online.following import Current, Followed
    from mlops_cli.online.routing import Routed

ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # the predicted score, 0.05 .. 0.95
SWITCH_RESULTS = ("switched", "failed")
LOG_RESULTS = ("written", "dropped")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def use_folder(path: Path) -> None:
    """Before prometheus_client is first imported (in the supervisor, before the workers fork)."""
    os.environ[ENV] = str(path)


def worker_identity(slot: int) -> None:
    """In a worker, before any metric is made: its files are named by slot, not by process id."""
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: slot)


def worker_gone(slot: int) -> None:
    """In the supervisor, when a worker died: drop its live gauges (counters and histograms are kept)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(slot, os.environ[ENV])


class Metrics:
    """The metrics one worker records; `render()` answers a scrape for all workers."""

    def __init__(self, service: str = "serve", registry: Any = None, *, http: bool = True) -> None:
        """`service` names the metrics (`mlops_serve_*`, `mlops_stream_*`); `registry`: a CollectorRegistry of the
        caller's (a single-process service), or prometheus_client's default (the forked server's workers); `http`:
        the request metrics and the shadow's, which only a server that answers requests has."""
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        p = f"mlops_{service}_"
        reg = registry if registry is not None else REGISTRY
        self.registry = reg
        self.prediction_seconds = Histogram(
            p + "prediction_duration_seconds",
            "Time of one model call (a micro-batch)",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_rows = Histogram(
            p + "batch_rows", "Rows per model call (micro-batch size)", buckets=ROWS_BUCKETS, registry=reg
        )
        self.rows = Counter(
            p + "rows_total",
            "Rows answered, by model version, route and outcome",
            ["model_version", "route", "outcome"],
            registry=reg,
        )
        self.invalid = Counter(
            p + "invalid_rows_total", "Rows outside the input contract, by reason", ["reason"], registry=reg
        )
        self.score = Histogram(
            p + "predicted_score",
            "Predicted probability of the positive class (binary) or of the predicted class (multiclass)",
            ["model_version"],
            buckets=SCORE_BUCKETS,
            registry=reg,
        )
        self.classes = Counter(
            p + "predicted_class_total", "Predicted classes", ["model_version", "class"], registry=reg
        )
        self.info = Gauge(
            p + "model_info",
            "The version each role serves (1) and served before (0)",
            ["role", "model", "version", "runtime", "sha256"],
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.loaded_at = Gauge(
            p + "model_loaded_timestamp_seconds",
            "When the served version was loaded",
            ["role"],
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.switches = Counter(
            p + "alias_switches_total", "Alias switches, by role and result", ["role", "result"], registry=reg
        )
        self.ready = Gauge(p + "ready", "1 when the worker takes traffic", multiprocess_mode="livemin", registry=reg)
        self.log_rows = Counter(
            p + "log_rows_total", "Prediction-log rows, written or dropped", ["result"], registry=reg
        )
        if not http:
            return
        self.requests = Counter(
            p + "requests_total", "Requests answered, by handler and HTTP status", ["handler", "code"], registry=reg
        )
        self.request_seconds = Histogram(
            p + "request_duration_seconds",
            "Time from request to answer",
            ["handler"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            p + "in_flight_requests", "Requests being answered", multiprocess_mode="livesum", registry=reg
        )
        self.shadow_rows = Counter(
            p + "shadow_rows_total", "Rows sent to the shadow model, by result", ["result"], registry=reg
        )
        # Online features (--features): every row that lacked a feature is one lookup of its entity.
        self.feature_lookups = Counter(
            p + "feature_lookups_total", "Entities looked up for rows that lacked features", registry=reg
        )
        self.feature_cache = Counter(
            p + "feature_cache_lookups_total",
            "Entity lookups in the in-process cache, by result",
            ["result"],
            registry=reg,
        )
        self.feature_store = Counter(
            p + "feature_store_lookups_total",
            "Entity lookups in the feature store, by result",
            ["result"],
            registry=reg,
        )
        self.feature_seconds = Histogram(
            p + "feature_lookup_duration_seconds",
            "Time of one feature store round trip",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.feature_fallbacks = Counter(
            p + "feature_fallbacks_total",
            "Rows whose features were incomplete, by reason (unknown_entity, missing_feature, no_entity_id) and what "
            "the policy did (filled, rejected)",
            ["reason", "action"],
            registry=reg,
        )
        self.feature_store_errors = Counter(
            p + "feature_store_errors_total", "Feature store calls that failed (Redis down or too slow)", registry=reg
        )
        self.feature_short_circuits = Counter(
            p + "feature_store_short_circuits_total",
            "Lookups answered 503 at once, without a call, because the feature store is known down",
            registry=reg,
        )
        self.feature_store_up = Gauge(
            p + "feature_store_up",
            "1 when the feature store answered the last call",
            multiprocess_mode="livemin",
            registry=reg,
        )

    def served(self, followed: Followed, current: Current, previous: Current | None) -> None:
        if previous is not None:
            self.info.labels(*_info(followed, previous)).set(0)
        elif followed.follows:
            # Exported at 0 from the start: an alert on increase() cannot see a counter's first step from absent to 1.
            for result in SWITCH_RESULTS:
                self.switches.labels(followed.role, result)
        self.info.labels(*_info(followed, current)).set(1)
        self.loaded_at.labels(followed.role).set(current.loaded_at)

    def answered(self, routed: Routed, seconds: float) -> None:
        """A model call: its size and time, and what the models said (live prediction drift)."""

        self.prediction_seconds.observe(seconds)
        self.batch_rows.observe(routed.n)
        for part in routed.parts:
            scored, version = part.scored, part.current.version
            bad = int(scored.invalid.sum())
            if bad:
                self.rows.labels(version, part.route, "invalid").inc(bad)
                for reason, mask in scored.reasons.items():
                    self.invalid.labels(reason).inc(int(mask.sum()))
            good = len(scored.prediction)
            if not good:
                continue
            self.rows.labels(version, part.route, "scored").inc(good)
            if scored.classes is None:
                continue
            labels, counts = _unique(scored.prediction)
            for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
                self.classes.labels(version, str(label)).inc(count)
            if scored.proba is not None:
                values = scored.proba[:, -1] if scored.proba.shape[1] == 2 else scored.proba.max(axis=1)
                observe_all(self.score.labels(version), values)

    # --- the lookup observer (mlops_cli.features.lookup) ---------------------------------------------------------

    def feature_cache_result(self, hits: int, misses: int) -> None:
        self.feature_lookups.inc(hits + misses)
        if hits:
            self.feature_cache.labels("hit").inc(hits)
        if misses:
            self.feature_cache.labels("miss").inc(misses)

    def feature_store_result(self, found: int, unknown: int, seconds: float) -> None:
        self.feature_seconds.observe(seconds)
        if found:
            self.feature_store.labels("hit").inc(found)
        if unknown:
            self.feature_store.labels("miss").inc(unknown)


def _unique(prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classes predicted and how often: on the values themselves (as text, a batch's labels took a stream 0.4%
    of its time); as text where they do not compare (mixed types)."""
    import numpy as np

    try:
        return np.unique(prediction, return_counts=True)  # type: ignore[no-any-return]
    except TypeError:
        return np.unique(prediction.astype(str), return_counts=True)  # type: ignore[no-any-return]


def observe_all(histogram: Any, values: np.ndarray) -> None:
    """`histogram.observe(v)` for every v of `values`, in one call per bucket: per value, observing cost a stream
    5% of its throughput (and a server as much per large request). prometheus_client has no bulk observe, so this
    adds to its Histogram child's own per-bucket counts (`_upper_bounds`, `_buckets`: not cumulative, the first
    bound at or above the value, none for NaN) and `_sum`, as its `observe` does; tests/test_serve.py checks the
    two export the same series."""
    import numpy as np

    if not len(values):
        return
    histogram._sum.inc(float(values.sum(dtype=np.float64)))
    slots = np.searchsorted(np.asarray(histogram._upper_bounds), values, side="left")  # NaN: past the last slot
    counts = np.bincount(slots, minlength=len(histogram._upper_bounds) + 1)
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)


def _info(followed: Followed, current: Current) -> tuple[str, ...]:
    version = current.model.version
    sha = version.summary()["sha256"] if version is not None else ""
    return followed.role, followed.ref.name, current.version, current.model.runtime, sha


def render() -> tuple[bytes, str]:
    """The scrape: every worker's values, summed (gauges as their mode says)."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE
