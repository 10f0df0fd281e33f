"""What every command shares: options, the one error-to-exit-code path, and the one report writer."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click; not re-exported
from typer.core import TyperGroup
from typer.exceptions import Abort, TyperException

from mlops_cli.errors import InputError, Interrupted, MlopsError, MlopsWarning
from mlops_cli.report import Report, envelope


@dataclass
class Session:
    """Per-invocation state the error path needs: how to report, and the warnings raised so far."""

    registry: Path = Path("registry")
    debug: bool = False
    as_json: bool = False
    quiet: bool = False
    output: Path | None = None
    overwrite: bool = False
    command: str = "mlops"
    warnings: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


session = Session()


def _remember(attribute: str) -> Callable[[Any], Any]:
    def callback(value: Any) -> Any:
        setattr(session, attribute, value)
        session.seen.add(attribute)
        if attribute in ("output", "overwrite") and {"output", "overwrite"} <= session.seen and session.output:
            # Typer runs every option's callback before the command: refuse an existing -o FILE before any work.
            from mlops_cli import io

            io.check_output(session.output, session.overwrite)
        return value

    return callback


JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print the JSON report on stdout instead of tables.", callback=_remember("as_json")),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="Also write the JSON report to FILE.", metavar="FILE", callback=_remember("output")
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.", callback=_remember("quiet"))]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace output files that already exist.", callback=_remember("overwrite"))
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Fail (exit 4) when the model was recorded under another scikit-learn version, instead of warning.",
    ),
]
FormatOpt = Annotated[
    Literal["parquet", "csv"] | None,
    typer.Option("--format", help="Input format, overriding the extension: parquet or csv."),
]


def registry() -> Any:
    from mlops_cli.registry import Registry

    return Registry(session.registry)


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


def emit(report: Report, render: Callable[[Report, Any], None] | None) -> None:
    """The one report writer: -o FILE (atomic), --json on stdout, or tables; then exit with the verdict."""
    from mlops_cli import io

    report.messages.extend(m for m in session.warnings if m not in report.messages)
    data = report.envelope()
    if session.output is not None:
        try:
            io.write_json(session.output, data, overwrite=session.overwrite)
        except OSError as exc:  # a full disk or a folder made read-only: the user's to fix, not a bug
            raise InputError(
                f"{session.output}: cannot write the report ({exc.strerror or exc})", "check the folder"
            ) from exc
    if session.as_json:
        sys.stdout.write(io.dumps_json(data))
    elif not session.quiet and render is not None:
        from mlops_cli import render as render_lib

        render(report, render_lib.stdout_console())
    raise typer.Exit(report.exit_code)


def _print_error(line: str) -> None:
    sys.stderr.write(f"error: {line}\n")


def _error_report(code: int, message: str) -> None:
    """Scripts still get an envelope (status error, the exit code, the message): on stdout with --json, and in the
    -o file, so a cron job's log holds a record of the night that failed. An existing -o file is kept unless
    --overwrite was given (the error may be that it exists)."""
    from mlops_cli import io

    data = envelope(session.command, status="error", exit_code=code, messages=[*session.warnings, message])
    if session.output is not None and (session.overwrite or not session.output.exists()):
        with contextlib.suppress(Exception):  # the error being reported wins over a failure to record it
            io.write_json(session.output, data, overwrite=session.overwrite)
    if session.as_json:
        sys.stdout.write(io.dumps_json(data))


def _save_traceback() -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"mlops-crash-{stamp}-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"mlops {session.command}\n{' '.join(sys.argv)}\n\n{traceback.format_exc()}")
    return Path(name)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    text = " ".join(str(message).split())
    if text in session.warnings:
        return
    session.warnings.append(text)
    if not session.quiet:
        sys.stderr.write(f"warning: {text}\n")


def _command_path(group: TyperGroup, ctx: Any) -> str:
    """`score-batch`, or `models show` for a command of a nested group (what the report's `command` says)."""
    name = next(iter(getattr(ctx, "_protected_args", None) or []), None)
    if name is None:
        return "mlops"
    sub = group.get_command(ctx, name)
    commands = getattr(sub, "commands", {})
    rest = [a for a in ctx.args if not a.startswith("-")][:1]
    return f"{name} {rest[0]}" if rest and rest[0] in commands else name


_signals: list[int] = []


def _raise_interrupted(signum: int, frame: Any) -> None:
    if _signals:
        return  # already stopping: a second Ctrl-C must not cut the clean-up short
    _signals.append(signum)
    raise Interrupted(signum, "stopped; every file is written whole or not at all")


def _interruptible() -> Callable[[], None]:
    """SIGTERM (a cron timeout, systemd) and Ctrl-C raise `Interrupted` for every command, so `with` and `finally`
    blocks remove temporary files and the exit code is 143 or 130, never 1, which scripts read as a verdict."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # handlers can only be set from the main thread (tests may run elsewhere)
    _signals.clear()
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


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
            session.command = path.partition(" ")[2] or "mlops"
            session.as_json = "--json" in argv
            line = f"{' '.join(exc.format_message().split())} (see '{path} --help')"
            _error_report(exc.exit_code, line)
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
        session.__dict__.update(vars(Session()))  # fresh state for each invocation (tests run many in-process)
        session.command = _command_path(self, ctx)
        showwarning = warnings.showwarning
        warnings.showwarning = _show_warning  # type: ignore[assignment]
        restore = _interruptible()
        try:
            with warnings.catch_warnings():
                # Our own warnings are messages for the user, shown and reported, even under `-W error`.
                warnings.simplefilter("always", MlopsWarning)
                return super().invoke(ctx)
        except (MlopsError, Interrupted) as exc:
            if session.debug:
                traceback.print_exc()
            _error_report(exc.exit_code, exc.one_line())
            _print_error(exc.one_line())
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, TyperException):
            raise  # Typer's own: usage errors (exit 2), --help, explicit exits
        except (Exception, SystemExit) as exc:
            # SystemExit here is not the CLI's (Typer exits with its own exception): code the command ran, a model's
            # predict say, called sys.exit(). Exit 0 with nothing written would read as success to a cron job.
            if session.debug:
                traceback.print_exc()
            path = _save_traceback()
            message = f"internal error: {type(exc).__name__}: {exc} (a bug; traceback saved to {path})"
            _error_report(5, message)
            _print_error(message)
            raise typer.Exit(5) from None
        finally:
            warnings.showwarning = showwarning
            restore()
