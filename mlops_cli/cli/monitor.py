from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlops_cli.cli._common import (
    AlertFormatOpt,
    AlertTimeoutOpt,
    AlertWebhookOpt,
    FormatOpt,
    JsonOpt,
    OutputOpt,
    OverwriteOpt,
    PromFileOpt,
    QuietOpt,
    RuntimeOpt,
    StrictOpt,
    emit,
    load_options,
    registry,
)


def run(
    ref: Annotated[
        str,
        typer.Argument(help="The model whose reference judges the window: NAME@ALIAS, NAME:VERSION.", metavar="REF"),
    ],
    logs: Annotated[
        Path,
        typer.Option(
            "--logs",
            metavar="LOG_DIR",
            help="mlops serve's --log-dir, or a file with score-batch's columns (.parquet, .csv).",
        ),
    ],
    last: Annotated[
        str | None, typer.Option("--window", metavar="DURATION", help="The last DURATION (90m, 24h, 7d). Default 24h.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(metavar="TIME", help="Window start, ISO 8601 (UTC unless a zone).")
    ] = None,
    until: Annotated[str | None, typer.Option(metavar="TIME", help="Window end (exclusive). Default: now.")] = None,
    labels: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Labels that arrived later, for performance (concept drift).")
    ] = None,
    label_column: Annotated[str | None, typer.Option(metavar="COL", help="The label column of --labels.")] = None,
    on: Annotated[
        str, typer.Option(metavar="COL", help="Join the labels on this column: the request id, or an id column.")
    ] = "request_id",
    policy: Annotated[
        Path | None, typer.Option(metavar="FILE.toml", help="Alert rules overriding the defaults (README: monitor).")
    ] = None,
    fail_on_alert: Annotated[bool, typer.Option(help="Exit 1 when an alert fires.")] = False,
    fmt: FormatOpt = None,
    strict: StrictOpt = False,
    runtime: RuntimeOpt = "auto",
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    prom_file: PromFileOpt = None,
    alert_webhook: AlertWebhookOpt = None,
    alert_format: AlertFormatOpt = "slack",
    alert_timeout: AlertTimeoutOpt = 30.0,
) -> None:
    """Judge a window of the prediction log: service levels, drift, performance once labels arrive, and alerts."""
    from mlops_cli import monitor

    if (labels is None) != (label_column is None):
        raise typer.BadParameter("give --labels FILE and --label-column COL together", param_hint="--labels")
    try:
        win = monitor.window(last, since, until)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--window/--since/--until") from exc
    report = monitor.monitor(
        registry(),
        ref,
        logs,
        win,
        labels=monitor.Labels(labels, label_column, on) if labels is not None and label_column else None,
        policy=monitor.load_policy(policy),
        load=load_options(strict, runtime),
        fmt=fmt,
        fail_on_alert=fail_on_alert,
    )
    emit(report, "render_monitor")
