from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from mlops_cli.cli._common import (
    AlertFormatOpt,
    AlertTimeoutOpt,
    AlertWebhookOpt,
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

RefArg = Annotated[str, typer.Argument(help="NAME (latest), NAME:VERSION or NAME@ALIAS.", metavar="REF")]


def smoke_test(
    ref: RefArg,
    data: Annotated[
        Path | None, typer.Option(help="Rows to test with (default: the version's stored reference sample).")
    ] = None,
    rows: Annotated[int, typer.Option(min=1, help="Rows used for the batch steps.")] = 1000,
    max_latency_ms: Annotated[
        float, typer.Option(help="Fail when single-row p99 latency exceeds this (ms, > 0).")
    ] = 50.0,
    iterations: Annotated[int, typer.Option(min=10, help="Single-row calls timed for the latency step.")] = 200,
    output_min: Annotated[float | None, typer.Option(help="Regressors: lowest valid prediction.")] = None,
    output_max: Annotated[float | None, typer.Option(help="Regressors: highest valid prediction.")] = None,
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
    """Release gate: load, infer, validate outputs, consistency, determinism, round-trip, latency, edge cases."""
    from mlops_cli import gates

    if not 0 < max_latency_ms < math.inf:  # typer's min= cannot exclude 0 itself
        raise typer.BadParameter(f"{max_latency_ms} is not a positive number of ms", param_hint="--max-latency-ms")
    for flag, value in (("--output-min", output_min), ("--output-max", output_max)):
        if value is not None and math.isnan(value):
            raise typer.BadParameter("nan is no bound", param_hint=flag)
    output_range = None
    if output_min is not None or output_max is not None:
        output_range = (
            output_min if output_min is not None else float("-inf"),
            output_max if output_max is not None else float("inf"),
        )
        if output_range[0] > output_range[1]:
            raise typer.BadParameter(f"{output_min} is above --output-max {output_max}", param_hint="--output-min")
    emit(
        gates.smoke_test(
            registry(),
            ref,
            data=data,
            rows=rows,
            max_latency_ms=max_latency_ms,
            iterations=iterations,
            load=load_options(strict, runtime),
            output_range=output_range,
        ),
        "render_steps",
    )


def checklist(
    ref: RefArg,
    baseline: Annotated[
        str | None, typer.Option(help="Model to compare with (default: NAME@production, if there is one).")
    ] = None,
    eval_data: Annotated[Path | None, typer.Option(help="Labelled data for the paired baseline comparison.")] = None,
    policy: Annotated[
        Path | None, typer.Option(help="TOML policy: required/advisory items, budgets, baseline rule.")
    ] = None,
    iterations: Annotated[int, typer.Option(min=10, help="Single-row calls timed for the latency item.")] = 200,
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
    """Release gate: the pre-deployment checklist; exit 0 only when every required item passes."""
    from mlops_cli import gates

    emit(
        gates.checklist(
            registry(),
            ref,
            baseline=baseline,
            eval_data=eval_data,
            policy=policy,
            load=load_options(strict, runtime),
            iterations=iterations,
        ),
        "render_steps",
    )
