"""What every command shares: options, the one error-to-exit-code path, the one report writer, and the process
edge (the one signal handler, stdout kept for the report). Per-invocation state lives on the click context."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click; not re-exported
from typer._click.globals import get_current_context
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import Abort, TyperException

from mlops_cli import interrupts
from mlops_cli.errors import InputError, Interrupted, MlopsError, MlopsWarning
from mlops_cli.interrupts import commit_window
from mlops_cli.report import Report, envelope


@dataclass
class Invocation:
    """Per-invocation state, on the root click context's `obj` (a test runs many invocations in one process): the
    root options, how to report, the warnings raised so far, and where the report goes."""

    registry: Path = Path("registry")
    debug: bool = False
    no_pickle: bool = False
    command: str = "mlops"
    as_json: bool = False
    quiet: bool = False
    output: Path | None = None
    overwrite: bool = False
    warnings: list[str] = field(default_factory=list)
    stdout: TextIO | None = None  # the real stdout while the command runs (model code's prints go to stderr)
    owns_process: bool = False  # the console script, not an in-process runner: see `_interruptible`
    reported: bool = False  # the report went out: an error after that must not print a second one
    prom_file: Path | None = None  # --prom-file: the run's node_exporter textfile
    prom_read: bool = False  # the textfile's previous last-success has been read (before this run wrote it)
    prom_previous: float | None = None
    alert_webhook: str | None = None  # --alert-webhook / MLOPS_ALERT_WEBHOOK: a secret, never printed
    alert_format: str = "slack"
    alert_timeout: float = 30.0
    params: dict[str, Any] = field(default_factory=dict)  # the command's parameters (its model, for the metrics)
    started: float = 0.0  # time.time() when the command started


def _state() -> Invocation:
    return get_current_context().ensure_object(Invocation)


def _report_option(attribute: str) -> Callable[..., Any]:
    def callback(ctx: typer.Context, value: Any) -> Any:
        setattr(ctx.ensure_object(Invocation), attribute, value)
        return value

    return callback


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the JSON report on stdout instead of tables.", callback=_report_option("as_json")
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Also write the JSON report to FILE.", metavar="FILE", callback=_report_option("output")
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing but errors.", callback=_report_option("quiet"))
]
OverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace output files that already exist.", callback=_report_option("overwrite")),
]


def _webhook(ctx: typer.Context, value: str | None) -> str | None:
    from mlops_cli.observe.webhook import check_url

    if value:
        problem = check_url(value)
        if problem is not None:
            raise typer.BadParameter(problem)  # never the value: it holds a secret
    ctx.ensure_object(Invocation).alert_webhook = value or None
    return value


def store_url(value: str | None) -> str | None:
    """A Redis feature store URL (--store, --features): a malformed one is a usage error, in one line without its
    password."""
    from mlops_cli.features.store import USAGE, check_url

    if value:
        problem = check_url(value)
        if problem is not None:
            raise typer.BadParameter(f"{problem} ({USAGE})")
    return value


PromFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--prom-file",
        metavar="PATH",
        help="Also write the run's Prometheus metrics to PATH (node_exporter textfile format, atomically).",
        callback=_report_option("prom_file"),
    ),
]
AlertWebhookOpt = Annotated[
    str | None,
    typer.Option(
        "--alert-webhook",
        metavar="URL",
        envvar="MLOPS_ALERT_WEBHOOK",
        show_default=False,
        help="POST alerts that start or stop firing to URL (a secret: never printed).",
        callback=_webhook,
    ),
]
AlertFormatOpt = Annotated[
    Literal["slack", "alertmanager", "json"],
    typer.Option("--alert-format", help="Webhook payload shape.", callback=_report_option("alert_format")),
]
AlertTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--alert-timeout",
        min=0.1,
        metavar="SECONDS",
        help="Give up delivering alerts after this long, retries included.",
        callback=_report_option("alert_timeout"),
    ),
]

StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Fail (exit 4) when the model was recorded under another scikit-learn version, instead of warning.",
    ),
]
RuntimeOpt = Annotated[
    Literal["auto", "sklearn", "onnx"],
    typer.Option(
        "--runtime",
        help="What predicts: onnx (the version's verified ONNX file), sklearn, or auto (ONNX when the version has one).",
    ),
]
EngineOpt = Annotated[
    Literal["local", "dask"],
    typer.Option(
        "--engine",
        help="Where the work runs: local (this process) or dask (a Dask cluster: --scheduler's, or a local one).",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        envvar="MLOPS_DASK_SCHEDULER",
        metavar="ADDRESS",
        help="With --engine dask: the scheduler of an existing cluster (tcp://host:8786); none starts a local one.",
    ),
]
FormatOpt = Annotated[
    Literal["parquet", "csv"] | None,
    typer.Option("--format", help="Input format, overriding the extension: parquet or csv."),
]


def registry() -> Any:
    from mlops_cli.registry import Registry

    return Registry(_state().registry)


def load_options(strict: bool = False, runtime: str = "auto") -> Any:
    """How this command loads models: its --runtime and --strict, and whether this host refuses pickle files
    (mlops --no-pickle, MLOPS_NO_PICKLE=1, or `no_pickle = true` in the registry's settings.toml)."""
    from mlops_cli.runtime import LoadOptions

    state = _state()
    return LoadOptions(runtime, strict, allow_pickle=not (state.no_pickle or registry().refuses_pickle()))


def engine_options(engine: str, scheduler: str | None) -> Any:
    """--engine and --scheduler; MLOPS_DASK_CONNECT_TIMEOUT (seconds) bounds the wait for the scheduler."""
    from mlops_cli.engines import CONNECT_TIMEOUT, EngineOptions

    raw = os.environ.get("MLOPS_DASK_CONNECT_TIMEOUT")
    try:
        timeout = float(raw) if raw else CONNECT_TIMEOUT
    except ValueError:
        raise typer.BadParameter(
            f"MLOPS_DASK_CONNECT_TIMEOUT={raw!r}: give seconds", param_hint="--scheduler"
        ) from None
    return EngineOptions(engine, scheduler if engine == "dask" else None, connect_timeout=timeout)


def columns(values: str | list[str] | None) -> list[str]:
    """`--keep-columns a,b --keep-columns c` → [a, b, c]; one comma-separated value works the same."""
    values = [values] if isinstance(values, str) else values or []
    return [c.strip() for value in values for c in value.split(",") if c.strip()]


def pairs(values: list[str] | None, what: str, convert: Callable[[str], Any] = str) -> dict[str, Any]:
    """Parse repeated `k=v` options."""
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=what)
        try:
            out[key] = convert(value)
        except ValueError as exc:
            raise typer.BadParameter(f"{key}: {value!r} is not a number", param_hint=what) from exc
    return out


def _job_command(command: str) -> str:
    """The `command` label of a run's metrics and alerts: the report's name (`retrain run` reports as retrain)."""
    return {"retrain run": "retrain"}.get(command, command)


def _job_model(state: Invocation, report: Report | None = None) -> str:
    """The `model` label: the NAME of the model the command was given (the same on a failed run as on a good one),
    or the report's model, or "" for a command without one."""
    from mlops_cli.refs import parse_ref

    for param in ("ref", "model", "champion", "name"):
        value = state.params.get(param)
        if isinstance(value, str) and value:
            try:
                return parse_ref(value).name
            except MlopsError:
                return ""  # an invalid name: no label a registry could hold
    return str((report.model or {}).get("name") or "") if report is not None else ""


def _observe(state: Invocation, exit_code: int, report: Report | None) -> list[str]:
    """Deliver this run's alerts (when a webhook is set) and write its --prom-file. Returns messages for the report
    (a failed delivery); a textfile that cannot be written raises OSError."""
    import time

    if state.prom_file is None and state.alert_webhook is None:
        return []
    from mlops_cli.observe import alerts, job, promfile, webhook
    from mlops_cli.observe.promfile import Run

    command = _job_command(state.command)
    run = Run(command, _job_model(state, report), exit_code, state.started or time.time(), time.time(), report)
    evaluated = alerts.evaluated(command, report, exit_code)
    sinks = job.Sinks(
        state.prom_file,
        state.alert_webhook,
        state.alert_format,
        webhook.Policy(total_s=state.alert_timeout, read_s=min(10.0, state.alert_timeout)),
    )
    messages = job.deliver(state.registry, run, evaluated, sinks)
    if state.prom_file is not None:
        if not state.prom_read:  # once: an error after this run wrote the file must not take its success as old
            state.prom_previous = promfile.previous_success(state.prom_file, run)
            state.prom_read = True
        job.write_metrics(state.prom_file, run, evaluated, state.prom_previous)
    return messages


def emit(report: Report, render: str | None) -> None:
    """The one report writer: alerts and --prom-file, -o FILE (atomic), --json on stdout, or tables; then exit
    with the verdict.

    `render` names the table function in `mlops_cli.render`, imported only to print tables (so --json and -q never
    import rich)."""
    from mlops_cli import io

    state = _state()
    report.messages.extend(m for m in state.warnings if m not in report.messages)
    try:
        observed = _observe(state, report.exit_code, report)
    except OSError as exc:
        raise InputError(
            f"{state.prom_file}: cannot write the metrics ({exc.strerror or exc})", "check the folder"
        ) from exc
    _warn(state, observed)
    report.messages.extend(observed)
    data = report.envelope()
    stdout = state.stdout or sys.stdout
    with commit_window():  # the report goes out whole: a signal now waits until it is written everywhere
        if state.output is not None:
            try:
                io.write_json(state.output, data, overwrite=state.overwrite)
            except OSError as exc:  # a full disk or a folder made read-only: the user's to fix, not a bug
                raise InputError(
                    f"{state.output}: cannot write the report ({exc.strerror or exc})", "check the folder"
                ) from exc
        if state.as_json:
            stdout.write(io.dumps_json(data))
            stdout.flush()
        elif not state.quiet and render is not None:
            from mlops_cli import render as render_lib

            getattr(render_lib, render)(report, render_lib.stdout_console(stdout))
        state.reported = True
    raise typer.Exit(report.exit_code)


def _warn(state: Invocation, messages: list[str]) -> None:
    """A failed alert delivery on stderr too: with --json or -q no table shows the report's messages."""
    if not state.quiet:
        for message in messages:
            sys.stderr.write(f"warning: {message}\n")


def _print_error(line: str) -> None:
    sys.stderr.write(f"error: {line}\n")


def _error_report(state: Invocation, code: int, message: str) -> None:
    """Scripts still get an envelope (status error, the exit code, the message): on stdout with --json, and in the
    -o file, so a cron job's log holds a record of the night that failed. An existing -o file is kept unless
    --overwrite was given (the error may be that it exists), and so is a report already written (a signal that
    arrived while it was)."""
    from mlops_cli import io

    if state.reported:
        return
    observed: list[str] = []
    if code != 2:  # a usage error ran nothing: no job to report on
        with contextlib.suppress(Exception):  # the error being reported wins over a failure to observe it
            observed = _observe(state, code, None)
    _warn(state, observed)
    data = envelope(state.command, status="error", exit_code=code, messages=[*state.warnings, message, *observed])
    if state.output is not None and (state.overwrite or not state.output.exists()):
        with contextlib.suppress(Exception):  # the error being reported wins over a failure to record it
            io.write_json(state.output, data, overwrite=state.overwrite)
    if state.as_json:
        sys.stdout.write(io.dumps_json(data))


SECRET_OPTIONS = ("--alert-webhook",)  # their values are secrets: never written, not even in a crash file


URL_OPTIONS = ("--store", "--features")  # Redis URLs: their password (if any) is never written


def _redacted(argv: list[str]) -> list[str]:
    from mlops_cli.features.store import redacted

    out, hide, url = [], False, False
    for arg in argv:
        name, eq, value = arg.partition("=")
        if hide:
            out.append("***")
        elif url:
            out.append(redacted(arg))
        elif eq and name in SECRET_OPTIONS:
            out.append(f"{name}=***")
        elif eq and name in URL_OPTIONS:
            out.append(f"{name}={redacted(value)}")
        else:
            out.append(arg)
        hide = not hide and not eq and arg in SECRET_OPTIONS
        url = not url and not eq and arg in URL_OPTIONS
    return out


def _save_traceback(state: Invocation) -> Path:
    import tempfile

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"mlops-crash-{stamp}-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"mlops {state.command}\n{' '.join(_redacted(sys.argv))}\n\n{traceback.format_exc()}")
    return Path(name)


def _warning_printer(state: Invocation) -> Callable[..., None]:
    """`warnings.showwarning` for one invocation: each warning once on stderr, and kept for the report."""

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        text = " ".join(str(message).split())
        if text in state.warnings:
            return
        state.warnings.append(text)
        if not state.quiet:
            sys.stderr.write(f"warning: {text}\n")

    return show


def _command_path(group: TyperGroup, ctx: Any) -> str:
    """`score-batch`, or `models show` for a command of a nested group (what the report's `command` says)."""
    name = next(iter(getattr(ctx, "_protected_args", None) or []), None)
    if name is None:
        return "mlops"
    sub = group.get_command(ctx, name)
    commands = getattr(sub, "commands", {})
    rest = [a for a in ctx.args if not a.startswith("-")][:1]
    return f"{name} {rest[0]}" if rest and rest[0] in commands else name


# --- the process edge: signals and stdout -----------------------------------------------------------------------


class _Stop:
    """The CLI's one handler for SIGTERM (a cron timeout, systemd), SIGHUP (the terminal closed) and Ctrl-C: they
    raise `Interrupted` in the main thread, so `with` and `finally` blocks remove temporary files and the exit code
    is 143, 129 or 130, never 1, which scripts read as a verdict. In a service that asked for it
    (`interrupts.hangup_rechecks`), SIGHUP re-checks the alias instead. Inside a commit window (`mlops_cli.interrupts`)
    the signal waits until the window closes; once stopping, further signals are ignored, so nothing cuts the
    clean-up short."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            return  # already stopping: a second Ctrl-C must not cut the clean-up short
        import signal

        recheck = interrupts.hangup_handler() if signum == signal.SIGHUP else None
        if recheck is not None:  # a service (stream): SIGHUP re-checks the alias, as for `mlops serve`
            recheck()
            return
        if interrupts.defer(signum):
            return  # a commit is under way: `deliver` acts on it when the last window closes
        self._raise(signum, "stopped; every file is written whole or not at all")

    def deliver(self, signum: int) -> None:
        """The last commit window closed on a signal that waited for it."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            import _thread
            import signal

            _thread.interrupt_main(
                signal.Signals(signum)
            )  # the main thread stops (through `handle`); this one finished its step
            return
        self._raise(signum, "stopped once the write under way was complete; every file is whole or absent")

    def _raise(self, signum: int, hint: str) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        raise Interrupted(signum, hint)


def _interruptible(owns_process: bool = False) -> Callable[[], None]:
    """Install the one signal handler for a command; returns what puts the previous handlers back. A process that
    is stopping ignores further signals instead, until it has exited: a second Ctrl-C during the interpreter's
    shutdown (which resets Python-level handlers) would otherwise kill it and change the exit code."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # handlers can only be set from the main thread (tests may run elsewhere)
    stop = _Stop()
    interrupts.install(stop.deliver)
    # A signal ignored at start stays ignored: `nohup mlops …` must outlive the terminal (Python does the same
    # for SIGINT).
    wanted = [s for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, stop.handle) for s in wanted}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if owns_process and stop.signum is not None else handler)
        interrupts.uninstall()

    return restore


@contextlib.contextmanager
def _model_output_to_stderr() -> Iterator[TextIO]:
    """Send whatever the command's code prints to stderr, and yield the stream the report goes to (the real stdout).

    Model code (unpickling, predict, a training function) may print, and stdout carries the --json report. In a
    real process fd 1 itself is pointed at stderr, so C extensions and child processes are caught too; under an
    in-process runner (tests), where fd 1 is not the runner's stream, only `sys.stdout` is swapped.
    """
    stdout = sys.stdout
    try:
        is_fd_1 = stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):  # a runner's stream has no file descriptor
        is_fd_1 = False
    if not is_fd_1:
        sys.stdout = sys.stderr
        try:
            yield stdout
        finally:
            sys.stdout = stdout
        return
    stdout.flush()
    saved = os.dup(1)
    report = open(saved, "w", encoding=stdout.encoding, errors=stdout.errors)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        yield report
    finally:
        sys.stdout = stdout
        try:
            report.flush()
        finally:
            os.dup2(saved, 1)
            with contextlib.suppress(OSError):  # a broken pipe: flush has raised it already
                report.close()


class MlopsCommand(TyperCommand):
    """Every command (the meta-tests check): refuses an existing -o FILE before any work, then runs with whatever
    model code prints sent to stderr, since stdout carries the report."""

    def invoke(self, ctx: Any) -> Any:
        from mlops_cli import io

        state = ctx.ensure_object(Invocation)
        state.params = dict(ctx.params)
        if state.output is not None:
            # Typer has run every option's callback by now: refuse an existing -o FILE before any work.
            io.check_output(state.output, state.overwrite)
        if state.prom_file is not None:
            io.check_output(state.prom_file, overwrite=True)  # a folder, or one missing: before any work
        with _model_output_to_stderr() as stdout:
            state.stdout = stdout
            try:
                return super().invoke(ctx)
            finally:
                state.stdout = None


class MlopsGroup(TyperGroup):
    """Runs every command; the one place where exceptions become exit codes and one-line errors."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Usage errors (exit 2) keep the conventions too: one line on stderr and, with --json, an envelope."""
        argv = list(sys.argv[1:] if args is None else args)
        state = extra.setdefault("obj", Invocation())  # fresh for each invocation (tests run many in one process)
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:  # bare `mlops` or `mlops models`: Typer has printed the help
            if not standalone_mode:
                raise
            code = exc.exit_code
        except UsageError as exc:
            if not standalone_mode:
                raise
            path = exc.ctx.command_path if exc.ctx else "mlops"
            state.command = path.partition(" ")[2] or "mlops"
            state.as_json = "--json" in argv
            line = f"{' '.join(exc.format_message().split())} (see '{path} --help')"
            _error_report(state, exc.exit_code, line)
            _print_error(line)
            code = exc.exit_code
        except Abort:
            if not standalone_mode:
                raise
            _print_error("aborted")
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        if ctx.parent is not None:  # a nested group (`models`): the root already handles everything
            return super().invoke(ctx)
        import time

        state = ctx.ensure_object(Invocation)
        state.command = _command_path(self, ctx)
        state.started = time.time()
        showwarning = warnings.showwarning
        warnings.showwarning = _warning_printer(state)  # type: ignore[assignment]
        restore = _interruptible(state.owns_process)
        try:
            with warnings.catch_warnings():
                # Our own warnings are messages for the user, shown and reported, even under `-W error`.
                warnings.simplefilter("always", MlopsWarning)
                return super().invoke(ctx)
        except (MlopsError, Interrupted) as exc:
            if state.debug:
                traceback.print_exc()
            _error_report(state, exc.exit_code, exc.one_line())
            _print_error(exc.one_line())
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, TyperException):
            raise  # Typer's own: usage errors (exit 2), --help, explicit exits
        except (Exception, SystemExit) as exc:
            # SystemExit here is not the CLI's (Typer exits with its own exception): code the command ran, a model's
            # predict say, called sys.exit(). Exit 0 with nothing written would read as success to a cron job.
            if state.debug:
                traceback.print_exc()
            path = _save_traceback(state)
            message = f"internal error: {type(exc).__name__}: {exc} (a bug; traceback saved to {path})"
            _error_report(state, 5, message)
            _print_error(message)
            raise typer.Exit(5) from None
        finally:
            warnings.showwarning = showwarning
            restore()
