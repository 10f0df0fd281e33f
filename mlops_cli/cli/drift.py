from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from mlops_cli.cli._common import (
    AlertFormatOpt,
    AlertTimeoutOpt,
    AlertWebhookOpt,
    EngineOpt,
    FormatOpt,
    JsonOpt,
    OutputOpt,
    OverwriteOpt,
    PromFileOpt,
    QuietOpt,
    RuntimeOpt,
    SchedulerOpt,
    StrictOpt,
    columns,
    emit,
    engine_options,
    load_options,
    registry,
)


def run(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="[REFERENCE] CURRENT. With --model and one path, the reference is the version's stored sample.",
            metavar="[REFERENCE] CURRENT",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Registered model: its stored reference, feature importance, prediction and performance drift.",
        ),
    ] = None,
    features: Annotated[str | None, typer.Option(help="Only these columns (comma-separated).")] = None,
    categorical: Annotated[str | None, typer.Option(help="Treat these columns as categorical.")] = None,
    numeric: Annotated[str | None, typer.Option(help="Treat these columns as numeric.")] = None,
    ignore: Annotated[str | None, typer.Option(help="Leave these columns out.")] = None,
    target: Annotated[
        str | None,
        typer.Option(help="Label column: not compared as a feature; with --model, performance on current data."),
    ] = None,
    prediction_column: Annotated[
        str | None,
        typer.Option(
            help="Column holding predictions made upstream: not a feature; prediction drift is computed on it "
            "(against REFERENCE's column, or with --model the stored predictions) without re-scoring."
        ),
    ] = None,
    stattest: Annotated[
        Literal["auto", "ks", "psi", "wasserstein", "js", "chi2"], typer.Option(help="The statistic that decides.")
    ] = "auto",
    threshold: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="With --stattest auto: the effect-size threshold (Wasserstein/std, JS; tests stay at 0.05). "
            "With an explicit --stattest: that statistic's threshold.",
        ),
    ] = None,
    correction: Annotated[
        Literal["bh", "bonferroni", "none"], typer.Option(help="Multiple-testing correction.")
    ] = "bh",
    drift_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Dataset drift when at least this share of features drifted.")
    ] = 0.5,
    fail_on_drift: Annotated[bool, typer.Option(help="Exit 1 when the dataset verdict is drift.")] = False,
    html: Annotated[Path | None, typer.Option(help="Also write a self-contained HTML page here.")] = None,
    fmt: FormatOpt = None,
    strict: StrictOpt = False,
    runtime: RuntimeOpt = "auto",
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    prom_file: PromFileOpt = None,
    alert_webhook: AlertWebhookOpt = None,
    alert_format: AlertFormatOpt = "slack",
    alert_timeout: AlertTimeoutOpt = 30.0,
) -> None:
    """What changed between reference and current data, per feature and in the predictions.

    With --engine dask, REFERENCE and CURRENT (Parquet files or folders) are read in partitions on a Dask cluster
    (with --model, the workers score CURRENT too) and every statistic is the local engine's, computed exactly from
    mergeable partials.
    """
    from mlops_cli import drift, io
    from mlops_cli import html as html_lib

    if len(paths) > 2:
        raise typer.BadParameter("give at most two paths: [REFERENCE] CURRENT", param_hint="paths")
    if html is not None:
        io.check_output(html, overwrite)
    options = drift.DriftOptions(
        features=columns(features) or None,
        categorical=columns(categorical),
        numeric=columns(numeric),
        ignore=columns(ignore),
        target=target,
        prediction_column=prediction_column,
        stattest=stattest,
        threshold=threshold,
        correction=correction,
        drift_share=drift_share,
        load=load_options(strict, runtime),
    )
    reference, current = (paths[0], paths[1]) if len(paths) == 2 else (None, paths[0])
    report = drift.report(
        registry() if model else None,
        current,
        reference_path=reference,
        model_ref=model,
        options=options,
        fmt=fmt,
        engine=engine_options(engine, scheduler),
    )
    if html is not None:
        page = html_lib.drift_page(report).encode()
        io.write_atomic(html, lambda fh: fh.write(page), overwrite=overwrite)
        report.results["html"] = str(html)
    if not fail_on_drift:
        report.passed = True  # drift is reported, not a failure, unless the caller asked for that
    emit(report, "render_drift")
