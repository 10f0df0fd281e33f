"""The drift report: `compare` two frames feature by feature, `report` from files, `drift_for_model` against a
registered version's stored reference, and the report's assembly (summary, verdict, notes)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli import io
from mlops_cli.drift import decision, kinds, model, stats
from mlops_cli.drift.decision import DriftOptions
from mlops_cli.engines import EngineOptions
from mlops_cli.errors import EmptyInput, InputError, InvalidData, SchemaMismatch
from mlops_cli.registry import SAMPLE
from mlops_cli.report import Report
from mlops_cli.runtime import LoadedModel

if TYPE_CHECKING:
    import pandas as pd

    from mlops_cli.drift import partitioned
    from mlops_cli.engines.dask import Cluster
    from mlops_cli.registry import Registry, Version

MIN_ROWS = 30  # below this many rows on a side, the tests have little power: the report says so
# Per-column statistics run in a small thread pool on large inputs: numpy's sorts, searches and ufuncs release the
# GIL. Two workers: each holds a few arrays of the column's size, and memory matters as much as time here.
WORKERS = min(2, os.cpu_count() or 1)
PARALLEL_ROWS = 200_000


def compare(
    reference: pd.DataFrame, current: pd.DataFrame, options: DriftOptions, importance: dict[str, float] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-feature drift rows and the dataset summary."""
    if current.empty:
        raise EmptyInput("the current data has no rows", "nothing to compare")
    if reference.empty:
        raise EmptyInput("the reference data has no rows", "nothing to compare with")
    names = feature_names(list(reference.columns), list(current.columns), options)
    columns = {n: (reference.get(n), current.get(n)) for n in names}  # taken here: pandas is not thread-safe

    def feature(name: str) -> dict[str, Any]:
        return kinds.feature_row(name, *columns[name], options)

    if len(reference) + len(current) >= PARALLEL_ROWS and WORKERS > 1:
        with ThreadPoolExecutor(WORKERS) as pool:
            rows = list(pool.map(feature, names))
    else:
        rows = [feature(n) for n in names]
    return summarize(
        rows, list(reference.columns), list(current.columns), (len(reference), len(current)), options, importance
    )


def feature_names(reference_columns: list[str], current_columns: list[str], options: DriftOptions) -> list[str]:
    """The features compared: --features or the reference's columns, less --ignore, the target and the prediction
    column; SchemaMismatch for a --features name in neither side."""
    skip = set(options.ignore) | {options.target, options.prediction_column} - {None}
    names = [n for n in (options.features or reference_columns) if n not in skip]
    unknown = [n for n in names if n not in reference_columns and n not in current_columns]
    if unknown:
        raise SchemaMismatch(f"no such columns in either data: {unknown}", "check --features")
    return names


def summarize(
    rows: list[dict[str, Any]],
    reference_columns: list[str],
    current_columns: list[str],
    sizes: tuple[int, int],
    options: DriftOptions,
    importance: dict[str, float] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The decision on every feature row and the dataset summary: the part both engines share."""
    skip = set(options.ignore) | {options.target, options.prediction_column} - {None}
    decision.decide(rows, options)
    importance = importance or {}
    for row in rows:
        row["importance"] = importance.get(row["name"])
    tested = [r for r in rows if r["drifted"] is not None]
    drifted = [r for r in tested if r["drifted"]]
    total_importance = sum(importance.get(r["name"], 0.0) for r in tested)
    weighted = (
        sum(importance.get(r["name"], 0.0) for r in drifted) / total_importance
        if importance and total_importance > 0
        else None
    )
    share = len(drifted) / len(tested) if tested else 0.0
    verdict = share >= options.drift_share or (weighted is not None and weighted >= options.drift_share)
    # Drift that matters to this model first: drifted features by importance, then severity; then the rest.
    order = {"high": 0, "medium": 1, "low": 2, "none": 3}
    rows.sort(key=lambda r: (not r["drifted"], -(r["importance"] or 0.0), order[r["severity"]], r["name"]))
    only_current = [c for c in current_columns if c not in reference_columns and c not in skip]
    summary = {
        "features": len(rows),
        "tested": len(tested),
        "drifted": len(drifted),
        "drifted_share": share,
        "weighted_drifted_share": weighted,
        "drift_share": options.drift_share,
        "verdict": "drift" if verdict and tested else "no drift",
        "drifted_features": [r["name"] for r in drifted],
        "not_compared": {r["name"]: r["status"] for r in rows if r["drifted"] is None},
        "only_in_current": only_current if options.features is None else [],
        "rows": {"reference": sizes[0], "current": sizes[1]},
        "prediction_drift": None,
        "performance": None,
        "rule": {
            "stattest": options.stattest,
            "large_sample": decision.LARGE_SAMPLE,
            "thresholds": decision.THRESHOLDS,
            "threshold": options.threshold,
            "severity_bands": decision.SEVERITY,
            "correction": options.correction,
            "missing_share_change": decision.MISSING_SHARE_CHANGE,
            "inf_share_change": decision.INF_SHARE_CHANGE,
            "identifier_unique_share": {"text": kinds.ID_UNIQUE_SHARE, "integer": kinds.ID_UNIQUE_SHARE_INT},
            "psi_bins": stats.PSI_BINS,
            "psi_floor": stats.PSI_FLOOR,
        },
    }
    return rows, summary


def report(
    registry: Registry | None,
    current_path: Path,
    *,
    reference_path: Path | None = None,
    model_ref: str | None = None,
    options: DriftOptions | None = None,
    fmt: str | None = None,
    engine: EngineOptions | None = None,
) -> Report:
    """`mlops drift-report`: from files, or with --model from the version's stored reference."""
    options = options or DriftOptions()
    if model_ref is None and reference_path is None:
        raise InputError(
            "no reference: pass REFERENCE CURRENT, or --model REF to use the stored reference",
            "e.g. mlops drift-report current.parquet --model churn@production",
        )
    if engine is not None and engine.name == "dask":
        return _report_on_dask(registry, current_path, reference_path, model_ref, options, fmt, engine)
    paths = [p for p in (reference_path, current_path) if p is not None]
    # The inputs' sha256 (a full read of each file) runs beside the parsing and the statistics.
    digests = [io.Background(io.fingerprint, p) for p in paths]
    current = io.read_table(current_path, fmt=fmt)
    if options.target is not None and options.target not in current.columns:
        # A mistyped --target would otherwise silently drop the performance check.
        raise SchemaMismatch(f"{current_path}: no target column {options.target!r}", "check --target")
    reference = io.read_table(reference_path, fmt=fmt) if reference_path is not None else None
    if model_ref is None:
        assert reference is not None
        out = _report(*compare(reference, current, options), [], None, [])
        _upstream_prediction_drift(
            out,
            options,
            list(reference.columns),
            list(current.columns),
            lambda col: model.prediction_row(col, reference[col], current[col], options),
        )
    else:
        assert registry is not None
        version = registry.resolve(model_ref)
        out = drift_for_model(registry, version, current, options=options, reference=reference)
    frames = [f for f in (reference, current) if f is not None]
    out.inputs = [{**d.result(), "rows": len(f)} for d, f in zip(digests, frames, strict=True)]
    return out


def _upstream_prediction_drift(
    out: Report,
    options: DriftOptions,
    reference_columns: list[str],
    current_columns: list[str],
    row: Callable[[str], dict[str, Any]],
) -> None:
    """Two datasets and --prediction-column COL: COL's drift (`row(COL)`), or why not."""
    col = options.prediction_column
    if col is not None and col in reference_columns and col in current_columns:
        out.results["summary"]["prediction_drift"] = row(col)
    elif col is not None:
        side = "REFERENCE" if col not in reference_columns else "CURRENT"
        out.messages.append(f"prediction drift skipped: no column {col!r} in {side}")


def _report_on_dask(
    registry: Registry | None,
    current_path: Path,
    reference_path: Path | None,
    model_ref: str | None,
    options: DriftOptions,
    fmt: str | None,
    engine: EngineOptions,
) -> Report:
    """The dask engine: each side read in partitions on the workers, the model's answers computed there; the
    statistics equal the local engine's (partitioned.py says how each is exact)."""
    from mlops_cli.drift import partitioned
    from mlops_cli.engines import dask

    paths = [p for p in (reference_path, current_path) if p is not None]
    digests = [io.Background(io.fingerprint, p) for p in paths]
    current = partitioned.Side.open(current_path, fmt)
    if options.target is not None and options.target not in current.schema.names:
        raise SchemaMismatch(f"{current_path}: no target column {options.target!r}", "check --target")
    reference = partitioned.Side.open(reference_path, fmt) if reference_path is not None else None
    prepared = None
    if model_ref is not None:  # resolved, verified and loaded once, here, before any task
        assert registry is not None
        prepared = _Prepared.of(registry, registry.resolve(model_ref), options)
    with dask.cluster(engine) as cluster:
        if prepared is None:
            assert reference is not None
            both = (reference, current)
            rows, ref_columns, cur_columns = partitioned.compare_on_cluster(cluster, *both, options)
            sizes = (reference.rows, current.rows)
            out = _report(*summarize(rows, ref_columns, cur_columns, sizes, options), [], None, [])
            _upstream_prediction_drift(
                out,
                options,
                ref_columns,
                cur_columns,
                lambda col: partitioned.prediction_row(cluster, *both, col, options),
            )
        else:
            out = prepared.report_on_cluster(cluster, current, reference)
        described = cluster.describe()
    out.results["engine"] = described
    sides = [s for s in (reference, current) if s is not None]
    out.inputs = [{**d.result(), "rows": side.rows} for d, side in zip(digests, sides, strict=True)]
    return out


def drift_for_model(
    registry: Registry,
    version: Version,
    current: pd.DataFrame,
    *,
    options: DriftOptions | None = None,
    reference: pd.DataFrame | None = None,
    answered: pd.DataFrame | None = None,
) -> Report:
    """Drift of `current` against a registered version's stored reference sample (or `reference`), with
    importance weighting, prediction drift and, when the target is present, performance against eval metrics.

    `answered`: the rows of `current` this version answered, when others answered the rest (a prediction log
    across a hot switch or a challenger split); prediction drift and performance are about those rows only."""
    prepared = _Prepared.of(registry, version, options or DriftOptions())
    loaded, sample, options, target = prepared.loaded, prepared.sample, prepared.options, prepared.target
    rows, summary = compare(reference if reference is not None else sample, current, options, prepared.importance)
    messages = []
    own = current if answered is None else answered
    if own.empty:
        messages.append(f"prediction drift and performance skipped: {version.ref} answered no rows")
        return _report(rows, summary, [], loaded.summary(), messages)
    summary["prediction_drift"], why = model.prediction_drift(loaded, sample, own, reference, options)
    messages += [why] if why else []
    if target and target in own.columns:
        summary["performance"], why = model.performance(loaded, own, target)
        messages += [why] if why else []
    return _report(rows, summary, [], loaded.summary(), messages)


@dataclass
class _Prepared:
    """What a report with --model needs before any data: the loaded version, its stored reference sample, the
    options (the features: the model's, unless --features), the target and the feature importance. Both engines
    start here."""

    registry: Registry
    loaded: LoadedModel
    sample: pd.DataFrame
    options: DriftOptions
    target: str | None
    importance: dict[str, float]

    @classmethod
    def of(cls, registry: Registry, version: Version, options: DriftOptions) -> _Prepared:
        loaded = LoadedModel.load(registry, version, options.load)
        sample = io.read_table(version.file(SAMPLE))
        target = options.target or version.manifest.get("target")
        if options.features is None:
            options = DriftOptions(**{**options.__dict__, "features": loaded.spec.feature_names})
        importance = model.feature_importance(registry, loaded, sample)
        return cls(registry, loaded, sample, options, target, importance)

    def report_on_cluster(
        self, cluster: Cluster, current: partitioned.Side, reference: partitioned.Side | None
    ) -> Report:
        """drift_for_model on the cluster: CURRENT (and REFERENCE) read there, the stored sample the reference
        when REFERENCE is not given, the model's answers computed there."""
        from mlops_cli.drift import partitioned

        version = self.loaded.version
        assert version is not None
        # The stored sample, verified and read on a worker, held there: the workers may not trust their registry.
        sample = partitioned.held_file(cluster, version.file(SAMPLE), version.manifest["files"][SAMPLE]["sha256"])
        try:
            ref = reference if reference is not None else sample
            rows, ref_columns, cur_columns = partitioned.compare_on_cluster(cluster, ref, current, self.options)
            sizes = (ref.rows, current.rows)
            rows, summary = summarize(rows, ref_columns, cur_columns, sizes, self.options, self.importance)
            summary["prediction_drift"], summary["performance"], messages = self._answers(
                cluster, current, reference, sample
            )
        finally:
            sample.release()
        return _report(rows, summary, [], self.loaded.summary(), messages)

    def _answers(
        self,
        cluster: Cluster,
        current: partitioned.Side,
        reference: partitioned.Side | None,
        held_sample: partitioned.Side,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[str]]:
        """(prediction drift, performance, messages): model.prediction_drift and model.performance, with the
        model scoring CURRENT on the workers through score-batch's worker path, once for both."""
        from mlops_cli import scoring
        from mlops_cli.drift import partitioned
        from mlops_cli.runtime import labelled as labelled_lib

        loaded, options, sample = self.loaded, self.options, self.sample
        version = loaded.version
        assert version is not None
        columns = current.schema.names
        messages: list[str] = []
        prediction = None
        column = None  # the model's output column whose drift needs CURRENT scored
        missing = [f for f in loaded.spec.feature_names if f not in columns]
        col = options.prediction_column
        if col is not None and col in columns:  # predictions made upstream: compare them, no re-scoring
            if reference is not None and col in reference.schema.names:
                prediction = partitioned.prediction_row(cluster, reference, current, col, options)
            else:
                upstream = (col, lambda: partitioned.holds_labels(cluster, current, col))
                stored = model.stored_prediction_column(version, sample, upstream)
                if stored not in sample.columns:
                    messages.append(model.no_stored_column(stored))
                else:
                    prediction = self._against(cluster, held_sample, stored, current, col)
        elif missing:
            messages.append(model.lacks_features(missing))
        else:
            column = model.stored_prediction_column(version, sample)
            if column not in sample.columns:
                messages.append(model.no_stored_column(column))
                column = None
        target = self.target if self.target in columns and not missing else None
        if column is None and target is None:
            return prediction, None, messages
        keep = [target] if target is not None else []
        job = scoring.worker_job(
            self.registry,
            loaded,
            current.path,
            scoring.ScoreOptions(keep_columns=keep, on_invalid="null", load=options.load),
        )
        try:
            answers = partitioned.score(cluster, job, current, column, target)
        except InvalidData as exc:  # the model cannot score the data at all
            messages += [
                f"{what} skipped: {exc.message}"
                for what, asked in (("prediction drift", column), ("performance", target))
                if asked
            ]
            return prediction, None, messages
        if column is not None and current.rows and answers.rejected >= current.rows:
            assert answers.side is not None
            answers.side.release()
            messages.append(model.none_scored(current.rows, answers.reasons))
        elif column is not None:
            assert answers.side is not None
            try:
                prediction = self._against(cluster, held_sample, column, answers.side, column)
            finally:
                answers.side.release()
            why = model.unscored_message(answers.rejected, answers.reasons)
            messages += [why] if why else []
        performance = None
        if target is not None:
            label = target  # narrowed, for the lambda
            y, scored = answers.labelled_answers(loaded, label)
            performance, why = model.performance_of(
                loaded, len(y), lambda: labelled_lib.scorer_of(loaded, y, scored, label, where=model.LABELLED)
            )
            messages += [why] if why else []
        return prediction, performance, messages

    def _against(
        self, cluster: Cluster, sample: partitioned.Side, stored: str, current: partitioned.Side, name: str
    ) -> dict[str, Any]:
        """The drift of CURRENT's column `name` from the held sample's column `stored`."""
        from mlops_cli.drift import partitioned

        reference = partitioned.held_column(cluster, sample, stored, name)
        try:
            return partitioned.prediction_row(cluster, reference, current, name, self.options)
        finally:
            reference.release()


def _report(
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    inputs: list[dict[str, Any]],
    model_block: dict[str, Any] | None,
    messages: list[str],
) -> Report:
    notes = []
    if summary["not_compared"]:
        notes.append(f"not compared: {', '.join(f'{k} ({v})' for k, v in summary['not_compared'].items())}")
    if summary["only_in_current"]:
        notes.append(f"only in CURRENT, not compared: {', '.join(summary['only_in_current'])}")
    for side, n in summary["rows"].items():
        if n < MIN_ROWS:
            notes.append(
                f"{side.upper()} has only {n} row{'s' if n != 1 else ''}: with fewer than {MIN_ROWS} rows the "
                "tests have little power, so 'no drift' says little"
            )
    return Report(
        "drift-report",
        results={"features": rows, "summary": summary},
        inputs=inputs,
        model=model_block,
        messages=notes + messages,
        passed=summary["verdict"] != "drift",
    )
