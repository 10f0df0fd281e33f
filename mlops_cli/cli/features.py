from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mlops_cli.cli._common import (
    FormatOpt,
    JsonOpt,
    MlopsCommand,
    OutputOpt,
    OverwriteOpt,
    QuietOpt,
    columns,
    emit,
    store_url,
)

app = typer.Typer(
    help="Online features: load feature tables into Redis, list and show the feature views.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

StoreOpt = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="MLOPS_FEATURE_STORE",
        metavar="URL",
        callback=store_url,
        help="The Redis feature store: redis://HOST:PORT/DB.",
    ),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout-s", min=0.001, help="Redis connect and read timeout, in seconds.")
]


def _store(url: str, timeout_s: float) -> object:
    from mlops_cli.features.store import Store

    return Store(url, timeout_s=timeout_s)


@app.command("materialize", cls=MlopsCommand)
def materialize(
    table: Annotated[
        Path,
        typer.Argument(
            help="The feature table, one row per entity: .parquet (file or folder), .csv, .csv.gz.", metavar="TABLE"
        ),
    ],
    entity: Annotated[str, typer.Option("--entity", metavar="COL", help="The entity id column.")],
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="The feature view to load.")],
    store: StoreOpt = "redis://127.0.0.1:6379/0",
    ttl_s: Annotated[
        int | None, typer.Option("--ttl-s", min=1, help="Each entity's values expire this long after the load.")
    ] = None,
    features: Annotated[
        list[str] | None,
        typer.Option("--features", metavar="COL,...", help="The feature columns (default: all but the entity)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per Redis pipeline: memory grows with it.")] = 10_000,
    timeout_s: TimeoutOpt = 5.0,
    fmt: FormatOpt = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Load a feature table into Redis as a new version of a feature view, then switch readers to it.

    The table is streamed in pipelined batches. Readers switch by one pointer flip once every row is in, so they
    never see half a table; the previous version is then dropped. A failed, interrupted or killed load leaves the
    readers on the previous version (the next load removes what a killed one left).
    """
    from mlops_cli.features.materialize import MaterializeOptions
    from mlops_cli.features.materialize import materialize as run

    client = _store(store, timeout_s)
    options = MaterializeOptions(
        entity=entity,
        name=name,
        ttl_s=ttl_s,
        features=columns(features) or None,
        batch_size=batch_size,
        input_format=fmt,
    )
    if quiet or not sys.stderr.isatty():
        report = run(client, table, options)  # type: ignore[arg-type]
    else:
        from mlops_cli import render

        with render.progress(quiet=quiet) as bar:
            task = bar.add_task("loading", total=None)
            options.on_progress = lambda done, total: bar.update(task, completed=done, total=total)
            report = run(client, table, options)  # type: ignore[arg-type]
    emit(report, "render_features")


@app.command("list", cls=MlopsCommand)
def list_(
    store: StoreOpt = "redis://127.0.0.1:6379/0",
    timeout_s: TimeoutOpt = 5.0,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """List the feature views in the store, with each one's current version."""
    from mlops_cli.features.materialize import list_views

    emit(list_views(_store(store, timeout_s)), "render_features")  # type: ignore[arg-type]


@app.command("show", cls=MlopsCommand)
def show(
    name: Annotated[str, typer.Argument(help="The feature view.", metavar="NAME")],
    store: StoreOpt = "redis://127.0.0.1:6379/0",
    timeout_s: TimeoutOpt = 5.0,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Show a feature view's current version: entity, features and kinds, TTL, rows, source table and sha256."""
    from mlops_cli.features.materialize import show_view

    emit(show_view(_store(store, timeout_s), name), "render_features")  # type: ignore[arg-type]
