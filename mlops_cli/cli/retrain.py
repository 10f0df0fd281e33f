from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperGroup

from mlops_cli.cli._common import (
    AlertFormatOpt,
    AlertTimeoutOpt,
    AlertWebhookOpt,
    JsonOpt,
    MlopsCommand,
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
from mlops_cli.report import Report


class _DefaultToRun(TyperGroup):
    """`mlops retrain NAME ...` runs a job; `mlops retrain history NAME` lists them."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultToRun,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Retrain when a trigger fires, promote only a proven winner, roll back on failure. "
    "`mlops retrain NAME --data ... --target ...` runs a job (same as `mlops retrain run`); "
    "`mlops retrain history NAME` lists past jobs.",
)


@app.command("run", cls=MlopsCommand)
def run(
    name: Annotated[str, typer.Argument(help="Model name; its champion is NAME@--champion-alias.")],
    data: Annotated[Path, typer.Option(help="New labelled data (Parquet/CSV).")],
    target: Annotated[str, typer.Option(help="Label column.")],
    champion_alias: Annotated[str, typer.Option(help="Alias of the model in service.")] = "production",
    trigger: Annotated[
        Literal["auto", "drift", "performance", "schedule", "manual"],
        typer.Option(help="auto means any of performance, drift or schedule."),
    ] = "auto",
    reason: Annotated[str | None, typer.Option(help="Why (recorded; the reason of a manual trigger).")] = None,
    check_only: Annotated[bool, typer.Option(help="Evaluate the triggers and stop.")] = False,
    time_column: Annotated[
        str | None,
        typer.Option(help="Split out of time on this column (with --holdout: orders the data for --window-days)."),
    ] = None,
    holdout_fraction: Annotated[
        float | None, typer.Option(min=0.01, max=0.9, help="Latest share of rows held out for the gate [default: 0.2].")
    ] = None,
    holdout: Annotated[Path | None, typer.Option(help="A separate labelled holdout file instead.")] = None,
    include_reference: Annotated[
        bool, typer.Option(help="Train on the champion's stored reference sample too.")
    ] = False,
    window_days: Annotated[
        int | None, typer.Option(min=1, help="Train only on the last N days before the holdout (needs --time-column).")
    ] = None,
    train_fn: Annotated[
        str | None,
        typer.Option(
            help="package.module:function(train_df, target) -> fitted "
            "estimator; default: refit a clone of the champion."
        ),
    ] = None,
    metric: Annotated[
        Literal["auc", "accuracy", "log_loss", "f1", "mae", "rmse", "r2"] | None,
        typer.Option(help="Primary metric (default: auc for classifiers, rmse for regressors)."),
    ] = None,
    min_improvement: Annotated[float, typer.Option(help="The challenger must win by at least this.")] = 0.0,
    max_age_days: Annotated[
        float | None, typer.Option(min=0.0, help="Schedule trigger: champion older than this.")
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Performance trigger: fire when the metric's 95% CI lies "
            "entirely more than this below the recorded value.",
        ),
    ] = 0.0,
    max_recall_drop: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Guardrail: largest allowed per-class recall drop.")
    ] = 0.10,
    max_latency_ratio: Annotated[
        float, typer.Option(min=0.0, help="Guardrail: challenger p99 latency at most this times the champion's.")
    ] = 2.0,
    promote: Annotated[
        bool, typer.Option("--promote/--no-promote", help="Promote a winner that passes the gates.")
    ] = True,
    policy: Annotated[Path | None, typer.Option(help="Checklist policy (TOML) for the pre-promotion gate.")] = None,
    bootstrap: Annotated[int, typer.Option(min=50, help="Bootstrap resamples for CIs and paired tests.")] = 1000,
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
    """Check the champion, retrain on new data when a trigger fires, promote only a proven winner."""
    from mlops_cli import retrain as retrain_lib

    if holdout is None and time_column is None and not check_only:
        raise typer.BadParameter(
            "give --time-column (out-of-time split) or --holdout PATH", param_hint="--time-column / --holdout"
        )
    if holdout is not None and holdout_fraction is not None:
        raise typer.BadParameter("--holdout-fraction splits --data; with --holdout PATH there is nothing to split")
    if include_reference and window_days is not None:
        raise typer.BadParameter("--include-reference and --window-days exclude each other", param_hint="--window-days")
    if window_days is not None and time_column is None:
        raise typer.BadParameter("--window-days needs --time-column", param_hint="--window-days")
    if trigger == "manual" and not reason:
        raise typer.BadParameter("a manual trigger needs --reason (it is recorded)", param_hint="--reason")
    options = retrain_lib.RetrainOptions(
        data=data,
        target=target,
        champion_alias=champion_alias,
        trigger=trigger,
        reason=reason,
        check_only=check_only,
        time_column=time_column,
        holdout_fraction=0.2 if holdout_fraction is None else holdout_fraction,
        holdout=holdout,
        include_reference=include_reference,
        window_days=window_days,
        train_fn=train_fn,
        metric=metric,
        min_improvement=min_improvement,
        max_age_days=max_age_days,
        max_drop=max_drop,
        max_recall_drop=max_recall_drop,
        max_latency_ratio=max_latency_ratio,
        promote=promote,
        policy=policy,
        n_boot=bootstrap,
        load=load_options(strict, runtime),
    )
    emit(retrain_lib.retrain(registry(), name, options), "render_retrain")


@app.command("history", cls=MlopsCommand)
def history(
    name: Annotated[str, typer.Argument(help="Model name.")],
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """List past retrain jobs of NAME: times, triggers, decision, versions, outcome (killed runs show as such)."""
    from mlops_cli import retrain as retrain_lib

    emit(
        Report("retrain history", results={"name": name, "jobs": retrain_lib.history(registry(), name)}),
        "render_retrain_history",
    )
