from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlops_cli.cli._common import JsonOpt, OutputOpt, OverwriteOpt, QuietOpt, columns, emit, pairs, registry
from mlops_cli.report import Report


def run(
    model_file: Annotated[Path, typer.Argument(help="joblib/pickle file of a fitted scikit-learn estimator.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name (lowercase letters, digits, . _ -).")],
    train_data: Annotated[
        Path | None,
        typer.Option(help="Training data: stores the schema, a reference profile and a sample with predictions."),
    ] = None,
    target: Annotated[str | None, typer.Option(help="Label column in the training/eval data.")] = None,
    eval_data: Annotated[Path | None, typer.Option(help="Labelled test data: metrics with 95% bootstrap CIs.")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="A metric to record, KEY=NUMBER (repeatable).")] = None,
    metrics_file: Annotated[Path | None, typer.Option(help="JSON object of metrics to record.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="A parameter to record, KEY=VALUE (repeatable).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag, KEY=VALUE (repeatable).")] = None,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
    version: Annotated[str | None, typer.Option(help="Version label (default: the next number).")] = None,
    alias: Annotated[str | None, typer.Option(help="Also point this alias at the new version.")] = None,
    allow_duplicate: Annotated[
        bool, typer.Option(help="Register again even if these exact bytes are already registered under NAME.")
    ] = False,
    sample_size: Annotated[int, typer.Option(min=1, help="Rows kept in the reference sample.")] = 100_000,
    accepts_missing: Annotated[
        bool,
        typer.Option(
            "--accepts-missing/--rejects-missing",
            help="Whether the model takes NaN inputs; score-batch rejects such rows for a model that does not.",
        ),
    ] = True,
    accepts_unseen: Annotated[
        bool,
        typer.Option(
            "--accepts-unseen/--rejects-unseen", help="Whether the model takes categories it never saw in training."
        ),
    ] = True,
    reason: Annotated[str | None, typer.Option(help="Why; recorded in the event log.")] = None,
    formats: Annotated[
        str | None,
        typer.Option(
            "--formats",
            metavar="onnx,skops",
            help="Also store the model as ONNX (checked against the artifact on the sample and eval data) and/or "
            "skops (loads only the types reviewed here). A format that cannot be stored is skipped with a reason.",
        ),
    ] = None,
    trust: Annotated[
        list[str] | None,
        typer.Option(
            help="A type the skops file may load beyond scikit-learn/numpy/scipy's (repeatable).", metavar="TYPE"
        ),
    ] = None,
    onnx_tolerance: Annotated[
        float, typer.Option(min=0.0, help="Largest ONNX difference in a probability (a regressor's value: relative).")
    ] = 1e-5,
    onnx_label_agreement: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of rows whose ONNX label must equal the artifact's.")
    ] = 1.0,
    bootstrap: Annotated[int, typer.Option(min=50, help="Bootstrap resamples for the metrics' CIs.")] = 1000,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Put a model into the registry with its schema, metrics, lineage and a reference profile."""
    from mlops_cli.errors import InvalidData, UnreadableFile
    from mlops_cli.register import RegisterOptions
    from mlops_cli.register import register as register_model
    from mlops_cli.runtime.formats import FORMATS, FormatOptions, not_stored

    if eval_data is not None and target is None:
        raise typer.BadParameter("needs --target, the label column", param_hint="--eval-data")
    recorded = pairs(metric, "--metric", float)
    if metrics_file is not None:
        import json

        try:
            loaded = json.loads(metrics_file.read_text())
        except (OSError, ValueError) as exc:
            raise UnreadableFile(f"{metrics_file}: not a readable JSON file ({exc})", "pass a JSON object") from exc
        bad = (
            [k for k, v in loaded.items() if isinstance(v, bool) or not isinstance(v, int | float)]
            if isinstance(loaded, dict)
            else None
        )
        if bad is None or bad:
            raise InvalidData(
                f"{metrics_file}: expected a JSON object of numeric metrics"
                + (f"; not numbers: {', '.join(map(repr, bad[:5]))}" if bad else ""),
                'e.g. {"auc": 0.8}',
            )
        recorded = {**loaded, **recorded}
    asked = tuple(dict.fromkeys(columns(formats)))
    unknown = [f for f in asked if f not in FORMATS]
    if unknown:
        raise typer.BadParameter(f"unknown format(s) {unknown}; use {', '.join(FORMATS)}", param_hint="--formats")
    options = RegisterOptions(
        train_data=train_data,
        target=target,
        eval_data=eval_data,
        metrics=recorded,
        params=pairs(param, "--param"),
        tags=pairs(tag, "--tag"),
        description=description,
        version=version,
        alias=alias,
        allow_duplicate=allow_duplicate,
        sample_size=sample_size,
        accepts_missing=accepts_missing,
        accepts_unseen=accepts_unseen,
        reason=reason,
        n_boot=bootstrap,
        formats=FormatOptions(asked, tuple(trust or ()), onnx_label_agreement, onnx_tolerance),
    )
    version_, created = register_model(registry(), model_file, name, options)
    m = version_.manifest
    report = Report(
        "register",
        results={
            "name": version_.name,
            "version": version_.version,
            "ref": version_.ref,
            "created": created,
            "sha256": m["files"]["model.joblib"]["sha256"],
            "task": m["task"],
            "estimator_class": m["estimator_class"],
            "alias": alias if created else None,
            "eval_metrics": m.get("eval_metrics"),
            "formats": m.get("formats") or {},
            "path": str(version_.path),
        },
        model=version_.summary(),
        inputs=[x for x in (m.get("training_data"), m.get("eval_data")) if x],
    )
    report.messages += not_stored(m) if created else []
    if not created:
        report.messages.append(
            f"{model_file} is already registered as {version_.ref} (same sha256); "
            "nothing written (pass --allow-duplicate to register it again)"
        )
    emit(report, "render_register")
