"""The `mlops` command line. Each module here parses one command (group), calls the library, renders, exits.

Nothing here imports pandas, scikit-learn or scipy at module level: `mlops --help` must stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlops_cli import __version__
from mlops_cli.cli import (
    _common,
    abtest,
    drift,
    features,
    gates,
    models,
    monitor,
    register,
    retrain,
    score_batch,
    serve,
    verify,
)

app = typer.Typer(
    cls=_common.MlopsGroup,
    name="mlops",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich costs more than the rest of `mlops --help`
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    registry: Annotated[Path, typer.Option("--registry", envvar="MLOPS_REGISTRY", help="Registry directory.")] = Path(
        "registry"
    ),
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    no_pickle: Annotated[
        bool,
        typer.Option(
            "--no-pickle",
            envvar="MLOPS_NO_PICKLE",
            help="Never unpickle on this host: load models from their ONNX or skops files only.",
        ),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Take trained scikit-learn models through their life in production, on local files only.

    Exit codes: 0 success, 1 negative verdict, 2 usage error, 3 input error, 4 registry error, 5 internal error.
    """
    state = ctx.ensure_object(_common.Invocation)
    state.registry, state.debug, state.no_pickle = registry, debug, no_pickle


# The command table: one module per command (group) in this package. Every command is an MlopsCommand.
command = _common.MlopsCommand
app.command("register", cls=command)(register.run)
app.add_typer(models.app, name="models")
app.command("smoke-test", cls=command)(gates.smoke_test)
app.command("checklist", cls=command)(gates.checklist)
app.command("score-batch", cls=command)(score_batch.run)
app.command("drift-report", cls=command)(drift.run)
app.command("abtest", cls=command)(abtest.run)
app.add_typer(retrain.app, name="retrain")
app.command("verify", cls=command)(verify.run)
app.command("serve", cls=command)(serve.run)
app.command("monitor", cls=command)(monitor.run)
app.add_typer(features.app, name="features")


def main() -> None:
    """The console script: this process is one invocation (tests call `app` in-process instead)."""
    app(prog_name="mlops", obj=_common.Invocation(owns_process=True))
