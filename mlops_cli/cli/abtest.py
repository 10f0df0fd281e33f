from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

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

EXPERIMENT = "Online experiment (RESULTS)"
MODELS = "Two registered models (--champion/--challenger)"

# Options that belong to one mode only: naming one in the other mode is a usage error, not silently ignored.
_EXPERIMENT_ONLY = (
    "variant_column",
    "control",
    "treatment",
    "metric_type",
    "alternative",
    "expected_split",
    "non_inferiority_margin",
    "min_samples",
    "mde",
    "power",
    "correction",
    "mann_whitney",
    "lower_is_better",
)
_MODELS_ONLY = ("data", "target", "min_improvement", "bootstrap", "seed", "strict", "runtime")


def run(
    ctx: typer.Context,
    results: Annotated[
        Path | None,
        typer.Argument(
            help="Experiment results: one row per unit, or n / METRIC_sum / METRIC_sum_sq per variant.",
            show_default=False,
            metavar="RESULTS",
        ),
    ] = None,
    variant_column: Annotated[
        str | None, typer.Option(help="Column naming each row's variant.", rich_help_panel=EXPERIMENT)
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            help="RESULTS: a metric column, repeatable (the first is primary). Models: auc, accuracy, "
            "balanced_accuracy, log_loss, f1, mae, rmse or r2 (default auc, or rmse for regressors)."
        ),
    ] = None,
    control: Annotated[
        str | None,
        typer.Option(
            help="Control variant (default: 'control', else the first in sorted order).", rich_help_panel=EXPERIMENT
        ),
    ] = None,
    treatment: Annotated[
        list[str] | None,
        typer.Option(help="Treatment variant, repeatable (default: every other variant).", rich_help_panel=EXPERIMENT),
    ] = None,
    metric_type: Annotated[
        Literal["auto", "binary", "continuous"],
        typer.Option(
            help="binary: two-proportion z-test; continuous: Welch's t-test; auto: binary when every value is 0/1.",
            rich_help_panel=EXPERIMENT,
        ),
    ] = "auto",
    alpha: Annotated[float, typer.Option(min=1e-6, max=0.5, help="Significance level.")] = 0.05,
    alternative: Annotated[
        Literal["two-sided", "greater", "less"],
        typer.Option(help="Alternative hypothesis for treatment - control.", rich_help_panel=EXPERIMENT),
    ] = "two-sided",
    expected_split: Annotated[
        str | None,
        typer.Option(
            help="Expected traffic shares: 50/50, 20/40/40 (control first, then treatments) or a=50/b=50. "
            "Default: equal.",
            rich_help_panel=EXPERIMENT,
        ),
    ] = None,
    non_inferiority_margin: Annotated[
        list[str] | None,
        typer.Option(
            help="[METRIC=]X or [METRIC=]X%: the treatment wins if it is not worse than control by more than X "
            "(absolute, or % of the control mean).",
            rich_help_panel=EXPERIMENT,
        ),
    ] = None,
    min_samples: Annotated[
        int,
        typer.Option(
            min=2, help="Units per group below which the verdict is inconclusive.", rich_help_panel=EXPERIMENT
        ),
    ] = 100,
    mde: Annotated[
        list[str] | None,
        typer.Option(
            help="[METRIC=]X or [METRIC=]X%: effect to detect; reports the units per group it needs.",
            rich_help_panel=EXPERIMENT,
        ),
    ] = None,
    power: Annotated[
        float,
        typer.Option(min=0.5, max=0.999, help="Target power for the MDE and sample size.", rich_help_panel=EXPERIMENT),
    ] = 0.8,
    correction: Annotated[
        Literal["holm", "bh", "none"],
        typer.Option(
            help="Multiple-comparison correction over every (metric, treatment) comparison.", rich_help_panel=EXPERIMENT
        ),
    ] = "holm",
    mann_whitney: Annotated[
        bool,
        typer.Option(
            help="Also report Mann-Whitney U for continuous metrics (beside Welch, not instead).",
            rich_help_panel=EXPERIMENT,
        ),
    ] = False,
    lower_is_better: Annotated[
        list[str] | None,
        typer.Option(help="A metric where lower is better (latency, cost), repeatable.", rich_help_panel=EXPERIMENT),
    ] = None,
    champion: Annotated[
        str | None, typer.Option(help="The current model: NAME, NAME:VERSION or NAME@ALIAS.", rich_help_panel=MODELS)
    ] = None,
    challenger: Annotated[str | None, typer.Option(help="The candidate model.", rich_help_panel=MODELS)] = None,
    data: Annotated[Path | None, typer.Option(help="Labelled rows both models score.", rich_help_panel=MODELS)] = None,
    target: Annotated[
        str | None, typer.Option(help="Label column (default: the champion's recorded target).", rich_help_panel=MODELS)
    ] = None,
    min_improvement: Annotated[
        float,
        typer.Option(
            min=0.0, help="Least improvement, in the metric's units, for the challenger to win.", rich_help_panel=MODELS
        ),
    ] = 0.0,
    bootstrap: Annotated[int, typer.Option(min=50, help="Paired bootstrap resamples.", rich_help_panel=MODELS)] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.", rich_help_panel=MODELS)] = 0,
    strict: StrictOpt = False,
    runtime: RuntimeOpt = "auto",
    fmt: FormatOpt = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    prom_file: PromFileOpt = None,
    alert_webhook: AlertWebhookOpt = None,
    alert_format: AlertFormatOpt = "slack",
    alert_timeout: AlertTimeoutOpt = 30.0,
) -> None:
    """Decide whether the treatment (or challenger) really wins: exit 0 if it does, 1 if not.

    RESULTS of an online experiment: every treatment against control on every metric (Welch's t-test or the two-proportion z-test), sample ratio mismatch, power, multiple-comparison correction.

    --champion/--challenger: two registered models score the same labelled rows; paired tests (McNemar, DeLong, paired bootstrap, paired t and Wilcoxon) decide.
    """

    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    given = {
        name for name, source in sources.items() if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")
    }
    if champion is not None or challenger is not None:
        report = _models(
            given,
            results,
            metric,
            champion,
            challenger,
            data,
            target,
            alpha,
            min_improvement,
            bootstrap,
            seed,
            load_options(strict, runtime),
            fmt,
        )
    else:
        report = _experiment(
            given,
            results,
            variant_column,
            metric,
            control,
            treatment,
            metric_type,
            alpha,
            alternative,
            expected_split,
            non_inferiority_margin,
            min_samples,
            mde,
            power,
            correction,
            mann_whitney,
            lower_is_better,
            fmt,
        )
    emit(report, "render_abtest")


def _verb(names: set[str]) -> str:
    return "apply" if len(names) > 1 else "applies"


def _flags(names: set[str]) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in sorted(names))


def _models(
    given: set[str],
    results: Path | None,
    metric: list[str] | None,
    champion: str | None,
    challenger: str | None,
    data: Path | None,
    target: str | None,
    alpha: float,
    min_improvement: float,
    bootstrap: int,
    seed: int,
    load: Any,
    fmt: str | None,
):  # type: ignore[no-untyped-def]
    if results is not None:
        raise typer.BadParameter(
            "give either RESULTS (an experiment) or --champion/--challenger (two models), not both",
            param_hint="RESULTS",
        )
    wrong = given & set(_EXPERIMENT_ONLY)
    if wrong:
        raise typer.BadParameter(f"{_flags(wrong)} {_verb(wrong)} to experiment RESULTS only", param_hint=_flags(wrong))
    if champion is None or challenger is None:
        raise typer.BadParameter(
            "a model comparison needs both --champion and --challenger", param_hint="--champion/--challenger"
        )
    if data is None:
        raise typer.BadParameter("a model comparison needs labelled rows to score", param_hint="--data")
    if metric and len(metric) > 1:
        raise typer.BadParameter("a model comparison takes one --metric", param_hint="--metric")
    from mlops_cli import comparison, metrics

    if metric and metric[0] not in metrics.METRIC_ALIASES:
        raise typer.BadParameter(
            f"{metric[0]!r} is not one of {', '.join(metrics.METRIC_ALIASES)}", param_hint="--metric"
        )
    return comparison.compare_models_file(
        registry(),
        champion,
        challenger,
        data,
        target,
        fmt=fmt,
        metric=metric[0] if metric else None,
        min_improvement=min_improvement,
        alpha=alpha,
        n_boot=bootstrap,
        seed=seed,
        load=load,
    )


def _experiment(
    given: set[str],
    results: Path | None,
    variant_column: str | None,
    metric: list[str] | None,
    control: str | None,
    treatment: list[str] | None,
    metric_type: str,
    alpha: float,
    alternative: str,
    expected_split: str | None,
    margins: list[str] | None,
    min_samples: int,
    mde: list[str] | None,
    power: float,
    correction: str,
    mann_whitney: bool,
    lower_is_better: list[str] | None,
    fmt: str | None,
):  # type: ignore[no-untyped-def]
    wrong = given & set(_MODELS_ONLY)
    if wrong:
        raise typer.BadParameter(
            f"{_flags(wrong)} {_verb(wrong)} to --champion/--challenger comparisons only", param_hint=_flags(wrong)
        )
    if results is None:
        raise typer.BadParameter(
            "give experiment RESULTS, or --champion and --challenger to compare two models", param_hint="RESULTS"
        )
    if variant_column is None:
        raise typer.BadParameter("name the column that holds each row's variant", param_hint="--variant-column")
    if not metric:
        raise typer.BadParameter("name at least one metric column", param_hint="--metric")
    from mlops_cli import experiment

    try:
        parsed_margins = experiment.parse_amounts(margins)
        parsed_mde = experiment.parse_amounts(mde)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--non-inferiority-margin/--mde") from exc
    if expected_split is not None:
        try:
            experiment.parse_split(expected_split)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--expected-split") from exc
    unknown = sorted((set(parsed_margins) | set(parsed_mde) | set(lower_is_better or [])) - set(metric) - {"*"})
    if unknown:
        raise typer.BadParameter(
            f"{', '.join(unknown)} is not among the --metric columns",
            param_hint="--non-inferiority-margin/--mde/--lower-is-better",
        )
    options = experiment.ExperimentOptions(
        variant_column=variant_column,
        metrics=metric,
        control=control,
        treatments=treatment,
        metric_type=metric_type,
        alpha=alpha,
        alternative=alternative,
        expected_split=expected_split,
        margins=parsed_margins,
        min_samples=min_samples,
        mde=parsed_mde,
        power=power,
        correction=correction,
        mann_whitney=mann_whitney,
        lower_is_better=lower_is_better or [],
    )
    return experiment.experiment_file(results, options, fmt=fmt)
