from __future__ import annotations

import sys
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
    store_url,
)


def run(
    ref: Annotated[str, typer.Argument(help="The model: NAME, NAME:VERSION or NAME@ALIAS.", metavar="REF")],
    data: Annotated[
        Path,
        typer.Argument(help="Rows to score: .parquet (a file or a folder of them), .csv, .csv.gz.", metavar="INPUT"),
    ],
    predictions: Annotated[
        Path,
        typer.Argument(
            help="Where the predictions go (.parquet, .csv or .csv.gz); it appears whole, or not at all.",
            metavar="OUTPUT",
        ),
    ],
    id_column: Annotated[
        list[str] | None,
        typer.Option("--id-column", metavar="COL", help="Copy this column into the output (repeatable)."),
    ] = None,
    keep_columns: Annotated[
        list[str] | None, typer.Option("--keep-columns", metavar="COL,...", help="Also copy these columns.")
    ] = None,
    keep_all: Annotated[bool, typer.Option("--keep-all", help="Copy every input column.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per batch: peak memory grows with it.")] = 100_000,
    proba: Annotated[
        bool, typer.Option("--proba/--no-proba", help="Write a proba_<class> column per class (classifiers).")
    ] = True,
    on_invalid: Annotated[
        Literal["fail", "skip", "null"],
        typer.Option(
            help="Rows that break the model's schema: fail (exit 3, nothing written), skip (leave them out), null "
            "(keep them with a null prediction and the reason)."
        ),
    ] = "fail",
    challenger: Annotated[
        str | None, typer.Option(metavar="REF", help="A second model that scores --challenger-share of the keys.")
    ] = None,
    challenger_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of split keys sent to the challenger.")
    ] = 0.1,
    split_key: Annotated[
        list[str] | None,
        typer.Option(
            "--split-key",
            metavar="COL[,COL...]",
            help="Column(s) whose hash picks the model (default: the first --id-column).",
        ),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            metavar="URL",
            callback=store_url,
            help="Complete rows from this Redis feature store (redis://HOST:PORT/DB).",
        ),
    ] = None,
    feature_view: Annotated[str | None, typer.Option(metavar="NAME", help="The feature view to read.")] = None,
    entity_column: Annotated[
        str | None, typer.Option(metavar="COL", help="The input column holding the entity id.")
    ] = None,
    on_missing_feature: Annotated[
        Literal["reject", "fill"],
        typer.Option(
            help="An unknown entity: fail (exit 3), or fill from the reference profile (features_filled column)."
        ),
    ] = "reject",
    fmt: FormatOpt = None,
    overwrite: OverwriteOpt = False,
    strict: StrictOpt = False,
    runtime: RuntimeOpt = "auto",
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    prom_file: PromFileOpt = None,
    alert_webhook: AlertWebhookOpt = None,
    alert_format: AlertFormatOpt = "slack",
    alert_timeout: AlertTimeoutOpt = 30.0,
) -> None:
    """Score every row of a Parquet/CSV file (or folder) with a registered model, streaming, into a predictions file.

    Memory depends on --batch-size, not the file size. Rows that break the model's schema follow --on-invalid. The
    output is written to a temporary file and renamed when complete: a failure, SIGTERM or Ctrl-C leaves OUTPUT as
    it was. With --challenger, a stable hash of --split-key sends the same keys to the challenger in every run.
    With --engine dask, each input file is a task on a Dask cluster and OUTPUT is a folder of Parquet parts, one
    per input file, published by one rename when all are written; the predictions and the report are the local
    engine's.
    """
    keep = columns(keep_columns)
    key = columns(split_key)
    if keep_all and keep:
        raise typer.BadParameter("--keep-all copies every column already; drop --keep-columns", param_hint="--keep-all")
    if challenger is None and (key or challenger_share != 0.1):
        raise typer.BadParameter("needs --challenger", param_hint="--split-key/--challenger-share")
    if challenger is not None:
        if not 0 < challenger_share < 1:
            raise typer.BadParameter("use a share strictly between 0 and 1", param_hint="--challenger-share")
        if not key and not id_column:
            raise typer.BadParameter(
                "a challenger run needs --split-key COL (or an --id-column)", param_hint="--split-key"
            )
    if output is not None and output.resolve() == predictions.resolve():
        raise typer.BadParameter("the JSON report and the predictions cannot share a file", param_hint="-o")
    if engine == "dask":
        if predictions.name.lower().endswith((".csv", ".csv.gz")):
            raise typer.BadParameter(
                f"{predictions}: --engine dask writes a folder of Parquet parts; name it e.g. predictions.parquet",
                param_hint="OUTPUT",
            )
    elif not predictions.name.lower().endswith((".parquet", ".csv", ".csv.gz")):
        raise typer.BadParameter(f"{predictions}: name it .parquet, .csv or .csv.gz", param_hint="OUTPUT")

    online = [features, feature_view, entity_column]
    if any(v is not None for v in online) and not all(v is not None for v in online):
        raise typer.BadParameter("give all three, or none", param_hint="--features/--feature-view/--entity-column")

    from mlops_cli.scoring import ScoreOptions, score_batch

    feature_options = None
    if features is not None:
        from mlops_cli.features.batch import BatchFeatureOptions

        feature_options = BatchFeatureOptions(features, feature_view, entity_column, on_missing_feature)  # type: ignore[arg-type]

    options = ScoreOptions(
        id_columns=list(id_column or []),
        keep_columns=keep,
        keep_all=keep_all,
        batch_size=batch_size,
        proba=proba,
        on_invalid=on_invalid,
        challenger=challenger,
        challenger_share=challenger_share,
        split_key=key,
        input_format=fmt,
        overwrite=overwrite,
        load=load_options(strict, runtime),
        engine=engine_options(engine, scheduler),
        features=feature_options,
    )
    if quiet or not sys.stderr.isatty():  # no progress bar: spare cron runs rich's import
        report = score_batch(registry(), ref, data, predictions, options=options)
    else:
        from mlops_cli import render

        with render.progress(quiet=quiet) as bar:
            task = bar.add_task("scoring", total=None)
            options.on_progress = lambda done, total: bar.update(task, completed=done, total=total)
            report = score_batch(registry(), ref, data, predictions, options=options)
    emit(report, "render_score_batch")
