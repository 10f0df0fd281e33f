"""The stream's metrics, and the small HTTP server that answers /metrics, /livez and /readyz on --metrics-port.

The model metrics are the server's (`mlops_cli.online.metrics.Metrics`, named `mlops_stream_*`), in a registry of
this process's own; the stream adds messages in, out and dead-lettered, batch latency (consume to commit), consumer
lag per partition and commits. A partition is a low-cardinality label (a topic has tens of them, not millions).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mlops_cli.errors import InputError
from mlops_cli.online.metrics import CONTENT_TYPE, LATENCY_BUCKETS, Metrics
from mlops_cli.serve.protocols import dumps, error_envelope


class StreamMetrics(Metrics):
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        super().__init__("stream", CollectorRegistry(), http=False)
        reg = self.registry
        self.messages = Counter(
            "mlops_stream_messages_total",
            "Messages consumed (in), answered on the output topic (out), sent to the dead-letter topic (dead_letter), "
            "committed without an answer the broker would take (unproducible)",
            ["result"],
            registry=reg,
        )
        for result in ("in", "out", "dead_letter", "unproducible"):
            self.messages.labels(result)  # every series from the start, at 0: an alert on a rate needs it
        self.batch_seconds = Histogram(
            "mlops_stream_batch_duration_seconds",
            "Time from a batch's consumption to its offsets' commit (decode, score, produce, flush, commit)",
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.lag = Gauge(
            "mlops_stream_consumer_lag_messages",
            "Messages in the partition after the last one processed (high watermark - next offset)",
            ["topic", "partition"],
            registry=reg,
        )
        self.commits = Counter(
            "mlops_stream_commits_total",
            "Offset commits, by result (ok, failed: retried later)",
            ["result"],
            registry=reg,
        )
        self.assigned = Gauge("mlops_stream_assigned_partitions", "Partitions assigned to this consumer", registry=reg)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Endpoint:
    """/metrics, /livez, /readyz on HOST:PORT, in a daemon thread; `readiness()` says (ready, details)."""

    def __init__(
        self, host: str, port: int, metrics: StreamMetrics, readiness: Callable[[], tuple[bool, dict[str, Any]]]
    ) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics.render(), CONTENT_TYPE)
                elif path == "/livez":
                    self._send(200, b'{"status":"ok"}')
                elif path == "/readyz":
                    ready, details = readiness()
                    status = {"status": "ok"} if ready else error_envelope(503, "not ready", "see the details")
                    self._send(200 if ready else 503, dumps({**status, **details}))
                else:
                    self._send(404, dumps(error_envelope(404, "no such path", "GET /metrics, /livez or /readyz")))

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
                pass  # no access log on stderr

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise InputError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc})", "pick another --metrics-port"
            ) from exc
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="mlops-stream-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
