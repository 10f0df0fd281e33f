"""One worker's HTTP application (plain ASGI: a dozen fixed paths need no framework).

Every prediction goes through the router (`mlops_cli.online.routing`), the micro-batcher and the one runtime, so
an online row gets score-batch's answer. Every error leaves through `_error`: the status comes from the exception
(`MlopsError.http_status`, the one map), the body is the conventions' envelope, and it never quotes the request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import (
    InvalidData,
    Malformed,
    MlopsError,
    NotFound,
    NotReady,
    Unauthorized,
    UnsupportedMediaType,
)
from mlops_cli.online.routing import SHADOW, Routed, Router
from mlops_cli.serve import protocols
from mlops_cli.serve.batching import Batcher

if TYPE_CHECKING:
    from mlops_cli.online.following import Current, Followed
    from mlops_cli.online.metrics import Metrics
    from mlops_cli.online.predlog import PredictionLog
    from mlops_cli.runtime import LoadOptions
    from mlops_cli.serve.features import FeatureOptions, OnlineFeatures

OPEN_PATHS = frozenset({"/livez", "/readyz"})  # probes never need the token
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
Handler = Callable[["_Request"], Awaitable["_Response"]]


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    challenger: str | None = None
    challenger_share: float = 0.1
    split_key: list[str] = field(default_factory=list)
    shadow: str | None = None
    log_dir: Path | None = None
    log_rotate_s: float = 60.0
    max_batch_rows: int = 256
    max_wait_ms: float = 0.0
    max_queued_rows: int = 10_000
    max_request_rows: int = 10_000
    timeout_s: float = 10.0
    max_body_mb: float = 10.0
    token: str | None = None
    on_invalid: str = "fail"
    poll_s: float = 0.5
    shutdown_delay_s: float = 0.0
    drain_s: float = 30.0
    load: LoadOptions | None = None
    features: FeatureOptions | None = None  # --features: rows may carry an entity id instead of the features


@dataclass
class Models:
    """What the server serves; loaded and verified once, in the supervisor, before the workers fork."""

    champion: Followed
    challenger: Followed | None = None
    shadow: Followed | None = None

    def all(self) -> list[Followed]:
        return [f for f in (self.champion, self.challenger, self.shadow) if f is not None]


@dataclass
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    request_id: str
    received_at: float


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class App:
    """The ASGI application of one worker."""

    def __init__(self, models: Models, options: ServeOptions, metrics: Metrics, log: PredictionLog | None) -> None:
        self.models = models
        self.options = options
        self.metrics = metrics
        self.log = log
        champion = models.champion
        self.router = Router(champion, models.challenger, options.challenger_share, options.split_key)
        self.shadow = _Shadow(Router(models.shadow), log, metrics) if models.shadow is not None else None
        self.batcher: Batcher | None = None
        self.ready = False
        self.draining = False
        self.max_body = int(options.max_body_mb * 1024 * 1024)
        self._served: dict[str, Current] = {}
        self.features: OnlineFeatures | None = None
        self._wake = threading.Event()
        self._force = False
        self._stop = threading.Event()
        self._routes: dict[tuple[str, str], tuple[str, Handler]] = {
            ("GET", "/livez"): ("/livez", self._livez),
            ("GET", "/readyz"): ("/readyz", self._readyz),
            ("GET", "/metrics"): ("/metrics", self._metrics),
            ("GET", "/models"): ("/models", self._models),
            ("POST", "/predict"): ("/predict", self._predict),
            ("POST", "/invocations"): ("/invocations", self._invocations),
            ("GET", "/ping"): ("/ping", self._ping),
            ("GET", "/health"): ("/health", self._ping),
            ("GET", "/version"): ("/version", self._version),
            ("GET", "/v2"): ("/v2", self._v2_server),
            ("GET", "/v2/health/live"): ("/v2/health/live", self._v2_live),
            ("GET", "/v2/health/ready"): ("/v2/health/ready", self._v2_ready),
        }

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """In the worker's event loop, before the first request."""
        for followed in self.models.all():
            followed.on_switch = self._switched
            current = followed.current
            assert current is not None
            self.metrics.served(followed, current, None)
            self._served[followed.role] = current
        self.batcher = Batcher(
            self.router,
            self.metrics,
            max_rows=self.options.max_batch_rows,
            max_wait_s=self.options.max_wait_ms / 1000,
            max_queued_rows=self.options.max_queued_rows,
        )
        self.batcher.start()
        if self.options.features is not None:
            from mlops_cli.serve.features import OnlineFeatures

            self.features = OnlineFeatures(self.options.features, self.metrics)
        threading.Thread(target=self._follow, name="mlops-follow", daemon=True).start()
        self.ready = True
        self.metrics.ready.set(1)

    def drain(self) -> None:
        """SIGTERM: readiness goes false first; the server then stops taking connections and finishes the rest."""
        self.draining = True
        self.ready = False
        self.metrics.ready.set(0)

    def stop(self) -> None:
        """After the last request: stop following, flush the shadow and the log."""
        self._stop.set()
        self._wake.set()
        if self.batcher is not None:
            self.batcher.close()
        if self.shadow is not None:
            self.shadow.close()
        if self.log is not None:
            self.log.close(timeout=self.options.drain_s)
        if self.features is not None:
            self.features.close()

    def recheck(self) -> None:
        """SIGHUP: re-read the aliases now, and retry a version that failed."""
        self._force = True
        self._wake.set()

    def check_now(self) -> None:
        """Before serving: a worker started after the alias moved must not answer with the version it was forked
        with."""
        for followed in self.models.all():
            if followed.follows:
                followed.check()

    def _follow(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.options.poll_s)
            self._wake.clear()
            force, self._force = self._force, False
            for followed in self.models.all():
                if followed.follows:
                    followed.check(force=force)
            if self.features is not None:
                self.features.check_health()

    def _switched(self, followed: Followed, result: str, new: Current | None, error: str | None) -> None:
        self.metrics.switches.labels(followed.role, result).inc()
        if new is not None:
            self.metrics.served(followed, new, self._served.get(followed.role))
            self._served[followed.role] = new
        if error is not None:
            print(
                f"mlops serve: {followed.role} {followed.ref}: switch failed, still serving: {error}", file=sys.stderr
            )

    # --- ASGI --------------------------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        method, path = scope["method"], scope["path"]
        name, handler = self._route(method, path)
        self.metrics.in_flight.inc()
        try:
            try:
                self._authorize(path, headers)
                async with asyncio.timeout(self.options.timeout_s):
                    body = await self._body(headers, receive) if method == "POST" else b""
                    response = await handler(_Request(method, path, headers, body, request_id, time.time()))
            except TimeoutError:
                from mlops_cli.errors import DeadlineExceeded

                response = _error(DeadlineExceeded(f"no answer within {self.options.timeout_s:g} s", "retry later"))
            except MlopsError as exc:
                response = _error(exc)
            except Exception:  # noqa: BLE001 (a bug: a 500 with the envelope, the traceback on stderr, worker lives)
                traceback.print_exc(file=sys.stderr)
                response = _error(MlopsError("internal error", "this is a bug in mlops serve; see the server's log"))
        finally:
            self.metrics.in_flight.dec()
        response.headers.append((b"x-request-id", request_id.encode()))
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type.encode()),
                    (b"content-length", str(len(response.body)).encode()),
                    *response.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})
        self.metrics.requests.labels(name, str(response.status)).inc()
        self.metrics.request_seconds.labels(name).observe(time.perf_counter() - start)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _route(self, method: str, path: str) -> tuple[str, Handler]:
        found = self._routes.get((method, path))
        if found is not None:
            return found
        if path.startswith("/v2/models/"):
            return self._v2_route(method, path)
        known = {p for _, p in self._routes}
        message = f"{method} {path} is not an endpoint" if path in known else f"no endpoint {path}"
        return "other", _fails(NotFound(message, "see the README's endpoint list"))

    def _authorize(self, path: str, headers: dict[str, str]) -> None:
        token = self.options.token
        if token is None or path in OPEN_PATHS:
            return
        given = headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise Unauthorized("a valid bearer token is required", "send Authorization: Bearer <token>")

    async def _body(self, headers: dict[str, str], receive: Any) -> bytes:
        from mlops_cli.errors import TooLarge

        limit = self.max_body
        too_large = TooLarge(f"the body is larger than {self.options.max_body_mb:g} MB", "send fewer rows per request")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Malformed("the request ended before its body did", "send the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    # --- predictions -------------------------------------------------------------------------------------------

    def _reader(self) -> protocols.Reader:
        champion = self.router.champion.current
        features = champion.model.spec.feature_names if champion is not None else []
        if self.features is None:
            return protocols.Reader(self.router.columns(), features, self.options.max_request_rows)
        from mlops_cli.features.assemble import ABSENT

        names = self.features.names(self.router.columns())
        return protocols.Reader(names, features, self.options.max_request_rows, absent=ABSENT)

    async def _complete(self, rows: protocols.Rows) -> protocols.Rows:
        """With online features: every feature of every row, from the row, the store or the policy."""
        if self.features is None:
            return rows
        if not self.ready:
            raise NotReady("the server is not ready", "retry shortly" if not self.draining else "it is shutting down")
        served = [f.current for f in (self.router.champion, self.router.challenger) if f is not None]
        features = list(dict.fromkeys(n for c in served if c is not None for n in c.model.spec.feature_names))
        return await self.features.complete(rows, features, self.router)

    async def _score(self, request: _Request, rows: protocols.Rows) -> Routed:
        if not self.ready or self.batcher is None:
            raise NotReady("the server is not ready", "retry shortly" if not self.draining else "it is shutting down")
        routed = await self.batcher.score(rows.values, rows.n) if rows.n else _empty()
        if self.options.on_invalid == "fail" and any(r is not None for r in routed.reasons):
            raise _invalid(routed)
        latency_ms = (time.time() - request.received_at) * 1000
        champion = self.router.champion.current
        if self.log is not None and rows.n and champion is not None:
            from mlops_cli.online.predlog import Entry

            spec = champion.model.spec
            self.log.submit(
                Entry(
                    rows.values,
                    routed,
                    spec,
                    rows.ids,
                    request.request_id,
                    request.received_at,
                    latency_ms,
                    rows.features,
                )
            )
        if self.shadow is not None and rows.n:
            self.shadow.submit(rows, request, latency_ms)
        return routed

    async def _predict(self, request: _Request) -> _Response:
        _require_json(request)
        rows = await self._complete(self._reader().mlops(protocols.loads(request.body)))
        routed = await self._score(request, rows)
        body = {
            "status": "ok",
            "request_id": request.request_id,
            "model": self.models.champion.ref.name,
            "predictions": protocols.answer_rows(routed, rows.ids, rows.features),
        }
        return _answer(body, routed)

    async def _invocations(self, request: _Request) -> _Response:
        content_type = request.headers.get("content-type", "")
        reader = self._reader()
        if protocols.is_csv(content_type):
            rows = reader.csv(request.body)
        elif protocols.is_json(content_type):
            rows = reader.mlflow_json(protocols.loads(request.body))
        else:
            raise UnsupportedMediaType("/invocations takes application/json or text/csv", "set the Content-Type header")
        rows = await self._complete(rows)
        routed = await self._score(request, rows)
        return _answer({"predictions": routed.prediction, **protocols.feature_columns(rows.features)}, routed)

    # --- the Open Inference Protocol ---------------------------------------------------------------------------

    def _v2_route(self, method: str, path: str) -> tuple[str, Handler]:
        match = re.fullmatch(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?", path)
        name = self.models.champion.ref.name
        if match is None or match.group(1) != name:
            return "/v2/models", _fails(NotFound(f"no model at {path}", f"this server serves {name}"))
        version, action = match.group(2), match.group(3) or ""
        served = self.models.champion.current
        if version is not None and (served is None or version != served.version):
            return "/v2/models", _fails(NotFound(f"{name} version {version} is not served", "drop the version"))
        wanted = "POST" if action == "/infer" else "GET"
        if method != wanted:
            return "/v2/models", _fails(NotFound(f"{method} {path} is not an endpoint", f"use {wanted}"))
        handler = {"": self._v2_metadata, "/ready": self._v2_model_ready, "/infer": self._v2_infer}[action]
        return f"/v2/models/{{name}}{action}", handler

    async def _v2_server(self, request: _Request) -> _Response:
        from mlops_cli import __version__

        return _json(200, {"name": "mlops", "version": __version__, "extensions": []})

    async def _v2_live(self, request: _Request) -> _Response:
        return _json(200, {"live": True})

    async def _v2_ready(self, request: _Request) -> _Response:
        return _json(200 if self.ready else 503, {"ready": self.ready})

    async def _v2_model_ready(self, request: _Request) -> _Response:
        return _json(200 if self.ready else 503, {"name": self.models.champion.ref.name, "ready": self.ready})

    async def _v2_metadata(self, request: _Request) -> _Response:
        current = self.models.champion.current
        assert current is not None
        spec = current.model.spec
        inputs = [{"name": f.name, "datatype": protocols.v2_datatype(f.kind), "shape": [-1]} for f in spec.features]
        outputs = [{"name": "prediction", "datatype": "BYTES", "shape": [-1]}]
        outputs += [{"name": f"proba_{c}", "datatype": "FP64", "shape": [-1]} for c in spec.classes or ()]
        body = {
            "name": spec.name,
            "versions": [current.version],
            "platform": f"mlops-{current.model.runtime}",
            "inputs": inputs,
            "outputs": outputs,
        }
        return _json(200, body)

    async def _v2_infer(self, request: _Request) -> _Response:
        _require_json(request)
        body = protocols.loads(request.body)
        rows = await self._complete(self._reader().v2(body))
        routed = await self._score(request, rows)
        answer = {
            "model_name": self.models.champion.ref.name,
            "model_version": routed.version[0] if routed.n else "",
            "id": body.get("id") if isinstance(body.get("id"), str) else request.request_id,
            "outputs": protocols.v2_outputs(routed) + protocols.v2_feature_outputs(rows.features),
        }
        return _answer(answer, routed)

    # --- operations --------------------------------------------------------------------------------------------

    async def _livez(self, request: _Request) -> _Response:
        return _json(200, {"status": "alive"})

    async def _readyz(self, request: _Request) -> _Response:
        models = [f.details() for f in self.models.all()]
        extra = {"features": self.features.details()} if self.features is not None else {}
        store_down = self.features is not None and self.features.error is not None
        if self.ready and not store_down:
            return _json(200, {"status": "ready", "models": models, **extra})
        if self.ready:
            exc = NotReady(f"not ready: the feature store is down: {self.features.error}", "see Redis")  # type: ignore[union-attr]
        else:
            reason = "draining (SIGTERM)" if self.draining else "the model is still loading"
            exc = NotReady(f"not ready: {reason}", "wait, or see the server's log")
        return _json(503, {**_envelope(exc), "models": models, **extra})

    async def _models(self, request: _Request) -> _Response:
        return _json(200, {"models": [f.details() for f in self.models.all()]})

    async def _metrics(self, request: _Request) -> _Response:
        from mlops_cli.online.metrics import render

        body, content_type = render()
        return _Response(200, body, content_type)

    async def _ping(self, request: _Request) -> _Response:
        return _Response(200 if self.ready else 503, b"\n", "application/json")

    async def _version(self, request: _Request) -> _Response:
        from mlops_cli import __version__

        return _Response(200, __version__.encode(), "text/plain; charset=utf-8")


class _Shadow:
    """Scores a copy of each request with the shadow model after the answer is sent, on its own thread, and logs
    it (route "shadow"). Never returned; never makes a request wait: a full queue drops and counts."""

    MAX_QUEUED = 64  # requests

    def __init__(self, router: Router, log: PredictionLog | None, metrics: Metrics) -> None:
        import queue

        self.router, self.log, self.metrics = router, log, metrics
        self._queue: queue.Queue[Any] = queue.Queue(self.MAX_QUEUED)
        self._thread = threading.Thread(target=self._run, name="mlops-shadow", daemon=True)
        self._thread.start()

    def submit(self, rows: protocols.Rows, request: _Request, latency_ms: float) -> None:
        import queue

        try:
            self._queue.put_nowait((rows, request, latency_ms))
        except queue.Full:
            self.metrics.shadow_rows.labels("dropped").inc(rows.n)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    def _run(self) -> None:
        from mlops_cli.online.predlog import Entry

        while True:
            item = self._queue.get()
            if item is None:
                return
            rows, request, latency_ms = item
            try:
                routed = self.router.score(rows.values, rows.n)
            except MlopsError:
                self.metrics.shadow_rows.labels("failed").inc(rows.n)
                continue
            routed = dataclasses.replace(routed, route=[SHADOW] * rows.n)
            self.metrics.shadow_rows.labels("scored").inc(rows.n)
            current = self.router.champion.current
            if self.log is not None and current is not None:
                spec = current.model.spec
                self.log.submit(
                    Entry(
                        rows.values,
                        routed,
                        spec,
                        rows.ids,
                        request.request_id,
                        request.received_at,
                        latency_ms,
                        rows.features,
                    )
                )


# --- answers -------------------------------------------------------------------------------------------------


def _envelope(exc: MlopsError) -> dict[str, Any]:
    return protocols.error_envelope(exc.http_status, exc.message, exc.hint)


def _error(exc: MlopsError) -> _Response:
    response = _json(exc.http_status, _envelope(exc))
    if exc.http_status == 401:
        response.headers.append((b"www-authenticate", b"Bearer"))
    if exc.http_status in (429, 503):
        response.headers.append((b"retry-after", b"1"))
    return response


def _json(status: int, body: Any) -> _Response:
    return _Response(status, protocols.dumps(body))


def _answer(body: Any, routed: Routed) -> _Response:
    response = _json(200, body)
    versions = ",".join(sorted(set(routed.version))) if routed.n else ""
    response.headers.append((b"x-model-version", versions.encode()))
    return response


def _fails(exc: MlopsError) -> Handler:
    async def handler(request: _Request) -> _Response:
        raise exc

    return handler


def _require_json(request: _Request) -> None:
    if not protocols.is_json(request.headers.get("content-type", "")):
        raise UnsupportedMediaType("this endpoint takes application/json", "set Content-Type: application/json")


def _invalid(routed: Routed) -> InvalidData:
    by_reason: dict[str, list[int]] = {}
    for i, reasons in enumerate(routed.reasons):
        for reason in (reasons or "").split("; ") if reasons else ():
            by_reason.setdefault(reason, []).append(i + 1)
    bad = sum(r is not None for r in routed.reasons)
    parts = [
        f"{reason} (row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''})"
        for reason, rows in sorted(by_reason.items())
    ]
    return InvalidData(
        f"{bad} of {routed.n} rows break the model's input contract: {'; '.join(parts)}",
        "fix those rows, or start the server with --on-invalid null to answer them with a reason",
    )


def _empty() -> Routed:
    return Routed(0, [], None, [], [], [], [], [])
