"""The server's processes: a supervisor that loads the models once, then forks the workers that answer.

The supervisor loads and verifies every served version, binds the socket, freezes its heap (`gc.freeze()`, so the
workers' garbage collector does not touch, and so copy, the model's pages) and forks N workers: the model is in
memory once, shared copy-on-write. It then only waits for signals, with them blocked and taken by `sigtimedwait`
(no handler can interrupt it halfway): SIGCHLD restarts a worker that died, SIGHUP is passed on (re-check the
aliases), SIGTERM and SIGINT are passed on as SIGTERM and the supervisor waits for the workers to drain.

A worker runs uvicorn on the inherited socket with one BLAS thread. Its signals are its event loop's: SIGTERM
turns readiness false, then (after `--shutdown-delay-s`, for a load balancer to notice) stops taking connections,
finishes the requests in flight (up to `--drain-s`), flushes the prediction log and exits 0. These two are the
server's signal handling; commands that run to completion use the CLI's (`mlops_cli/cli/_common.py`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import InputError

if TYPE_CHECKING:
    from mlops_cli.registry import Registry
    from mlops_cli.serve.app import Models, ServeOptions

SUPERVISED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
RAPID_DEATH_S = 5.0  # a worker that dies this soon after starting, this many times in a row, stops the server
RAPID_DEATHS = 5


def load(registry: Registry, ref: str, options: ServeOptions) -> Models:
    """Every served version, loaded, verified and warmed up: errors here stop the server before it listens."""
    from mlops_cli.online.following import Followed
    from mlops_cli.runtime import LoadOptions
    from mlops_cli.serve.app import Models

    load_options = options.load or LoadOptions()

    def followed(reference: str, role: str) -> Followed:
        item = Followed(registry, reference, role, load_options)
        item.start()
        return item

    champion = followed(ref, "champion")
    challenger = followed(options.challenger, "challenger") if options.challenger else None
    shadow = followed(options.shadow, "shadow") if options.shadow else None
    if challenger is not None:
        from mlops_cli.online.routing import check_pair

        check_pair(champion, challenger)
    if options.features is not None:
        from mlops_cli.serve.features import check

        check(options.features, champion.current, challenger.current if challenger is not None else None)
    return Models(champion, challenger, shadow)


def listen(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_server((host, port), backlog=2048)
    except OSError as exc:
        raise InputError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc})", "pick another --port or --host"
        ) from exc
    # Without it, a response's headers and body wait on Nagle and the client's delayed ACK: 40 ms each.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.set_inheritable(True)
    return sock


def serve(models: Models, options: ServeOptions, sock: socket.socket, announce: Any = None) -> int:
    """Run the supervisor until SIGTERM/SIGINT; returns the exit code (0 after a clean drain)."""
    from mlops_cli.online import metrics

    folder = Path(tempfile.mkdtemp(prefix="mlops-serve-metrics-"))
    metrics.use_folder(folder)
    try:
        with _signals_blocked():
            gc.collect()
            gc.freeze()  # the workers' collectors leave the loaded model's pages alone: they stay shared
            return _Supervisor(models, options, sock).run(announce)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _Supervisor:
    def __init__(self, models: Models, options: ServeOptions, sock: socket.socket) -> None:
        self.models, self.options, self.sock = models, options, sock
        self.workers: dict[int, tuple[int, float]] = {}  # pid -> (slot, started at)
        self.rapid: dict[int, int] = {}
        self.stopping_since: float | None = None
        self.failed = False

    def run(self, announce: Any) -> int:
        for slot in range(self.options.workers):
            self._spawn(slot)
        if announce is not None:
            announce()
        while self.workers:
            info = signal.sigtimedwait(SUPERVISED, 1.0)
            signo = info.si_signo if info is not None else None
            if signo in (signal.SIGTERM, signal.SIGINT):
                self._stop()
            elif signo == signal.SIGHUP:
                self._tell(signal.SIGHUP)
            self._reap()
            if self.stopping_since is not None:
                limit = self.options.shutdown_delay_s + self.options.drain_s + 10
                if time.monotonic() - self.stopping_since > limit:
                    self._tell(signal.SIGKILL)
        self.sock.close()
        return 5 if self.failed else 0

    def _stop(self) -> None:
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
            self._tell(signal.SIGTERM)

    def _tell(self, signum: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _reap(self) -> None:
        from mlops_cli.online import metrics

        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot, started = self.workers.pop(pid)
            metrics.worker_gone(slot)
            if self.stopping_since is not None:
                continue
            code = os.waitstatus_to_exitcode(status)
            print(f"mlops serve: worker {slot} (pid {pid}) exited with {code}; starting another", file=sys.stderr)
            self.rapid[slot] = self.rapid.get(slot, 0) + 1 if time.monotonic() - started < RAPID_DEATH_S else 0
            if self.rapid[slot] >= RAPID_DEATHS:
                print(f"mlops serve: worker {slot} keeps dying at start; stopping", file=sys.stderr)
                self.failed = True
                self._stop()
                continue
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        supervisor = os.getpid()
        pid = os.fork()
        if pid:
            self.workers[pid] = (slot, time.monotonic())
            return
        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            if not _stop_with(supervisor):
                os._exit(0)
            code = _worker(slot, self.models, self.options, self.sock)
        except BaseException:  # noqa: BLE001 (a child never returns into the supervisor's code)
            traceback.print_exc(file=sys.stderr)
        finally:
            sys.stderr.flush()
            os._exit(code)


def _stop_with(supervisor: int) -> bool:
    """Ask Linux for SIGTERM when the supervisor dies (PR_SET_PDEATHSIG), so that a kill -9 of the supervisor makes
    its workers drain and exit rather than hold the port forever. False if it is already gone."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not Linux: the supervisor's own SIGTERM is the only stop
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    return os.getppid() == supervisor  # it may have died before the request took effect


def _worker(slot: int, models: Models, options: ServeOptions, sock: socket.socket) -> int:
    import uvicorn

    from mlops_cli.online import metrics
    from mlops_cli.online.predlog import PredictionLog
    from mlops_cli.runtime import threads
    from mlops_cli.serve.app import App

    # The supervisor's objects stay frozen here too: a collection that walked them would write to their headers
    # and copy the model's pages into this worker. The worker's own garbage is collected as usual.
    metrics.worker_identity(slot)
    threads.pin_single()
    for followed in models.all():
        followed.record_failures = slot == 0  # one registry event per failed switch, not one per worker
    recorder = metrics.Metrics()
    log = None
    if options.log_dir is not None:

        def counted(result: str, rows: int) -> None:
            recorder.log_rows.labels(result).inc(rows)

        for result in metrics.LOG_RESULTS:
            recorder.log_rows.labels(result)  # exported at 0, so an alert on increase() sees the first drop

        log = PredictionLog(options.log_dir, slot, rotate_s=options.log_rotate_s, on_rows=counted)
    app = App(models, options, recorder, log)
    app.check_now()
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(options.drain_s),
        loop=_loop(),
        http="httptools",
        timeout_keep_alive=5,
    )
    server = _Server(config, app, options.shutdown_delay_s)
    server.run(sockets=[sock])  # not asyncio.run: uvicorn's run() builds the loop the config names (uvloop)
    return 0


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


class _Server:
    """uvicorn's server with the worker's own signal handling (see the module docstring)."""

    def __new__(cls, config: Any, app: Any, delay: float) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                import asyncio

                loop = asyncio.get_running_loop()

                def stop() -> None:
                    if app.draining:
                        return
                    app.drain()
                    loop.call_later(delay, setattr, self, "should_exit", True)

                loop.add_signal_handler(signal.SIGTERM, stop)
                loop.add_signal_handler(signal.SIGINT, stop)
                loop.add_signal_handler(signal.SIGHUP, app.recheck)
                yield

        return Server(config)
