"""`smoke_test`: does this artifact work? Load, infer, validate, check consistency, determinism, round-trip,
latency and schema edge cases; each step carries its status, evidence and duration.

The report's `passed` is False (exit 1) when any step fails. Registry and input errors raise.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_cli import io
from mlops_cli.errors import EmptyInput, InputError, InvalidData, MlopsError, SchemaMismatch
from mlops_cli.gates._steps import FAIL, PASS, Steps, error_line
from mlops_cli.registry import SAMPLE, Registry, Version
from mlops_cli.report import Report
from mlops_cli.runtime import LoadedModel, LoadOptions, ModelSpec, contract, latency

if TYPE_CHECKING:
    import pandas as pd

# What the model says about some rows: its predictions (labels, or a regressor's values) and, for a classifier
# with predict_proba, the probabilities.
Outputs = tuple[np.ndarray, np.ndarray | None]


ITERATIONS = 500  # single-row calls timed, in latency.ROUNDS rounds

STEPS = (
    "load",
    "single_row",
    "output_validity",
    "batch_consistency",
    "determinism",
    "serialization",
    "latency",
    "edge_cases",
)


def _reference_rows(version: Version, data: Path | None, rows: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows to test with, and the fingerprint of the file they came from (for the report's `inputs`)."""
    if data is not None:
        source = data
    elif SAMPLE in version.manifest["files"]:
        source = version.file(SAMPLE)
    else:
        raise InputError(f"{version.ref} has no stored reference sample", "pass --data, or register with --train-data")
    frame = io.read_table(source)
    spec = ModelSpec.of(version)
    missing = [f for f in spec.feature_names if f not in frame.columns]
    if missing:
        raise InputError(
            f"the smoke-test data lacks the model's feature columns {missing}", "pass data with the model's schema"
        )
    if frame.empty:
        raise EmptyInput("the smoke-test data has no rows", "pass data with rows")
    fingerprint = io.fingerprint(source, rows=len(frame))
    # The steps judge the model, so its input must be valid: text in a numeric column is the data's fault (exit 3),
    # as score-batch would reject that row too. The edge-case step tries bad inputs on purpose.
    frame, invalid, reasons = contract.validate(frame.head(rows).reset_index(drop=True), spec)
    if invalid.any():
        first = int(np.flatnonzero(invalid)[0])
        raise InvalidData(
            f"{data or SAMPLE}: {int(invalid.sum()):,} of the first {len(frame):,} rows do not fit the model's schema "
            f"({'; '.join(sorted(reasons))}; first at row {first + 1})",
            "fix the data, or pass rows the model can take",
        )
    return frame, fingerprint


def _outputs(model: LoadedModel, frame: pd.DataFrame) -> Outputs:
    """What the model says about `frame` through the runtime, as every command and server asks it: its predictions
    and, for classifiers, the probabilities."""
    scored = model.score(frame)
    return scored.prediction, scored.proba


def _stack(parts: list[Outputs]) -> Outputs:
    labels = np.concatenate([p[0].reshape(-1) for p in parts])
    probas = [p[1] for p in parts if p[1] is not None]
    return labels, (np.vstack(probas) if len(probas) == len(parts) else None)


def _difference(a: Outputs, b: Outputs, version: Version, tolerance: float = 0.0) -> dict[str, Any]:
    """How two outputs for the same rows differ: predicted labels that differ (classifiers), and values
    (probabilities, or a regressor's predictions) further apart than `tolerance`. Empty counts: the same."""
    (labels_a, proba_a), (labels_b, proba_b) = a, b
    shapes = [[list(labels.shape), None if proba is None else list(proba.shape)] for labels, proba in (a, b)]
    if shapes[0] != shapes[1]:
        return {"same": False, "shapes": shapes}
    out: dict[str, Any] = {}
    values: tuple[np.ndarray, np.ndarray] | None
    if version.manifest["task"] == "classifier":
        # Labels are compared as text: a classifier's classes may be strings, ints or bools.
        out["labels_differing"] = int((labels_a.astype(str) != labels_b.astype(str)).sum())
        values = (proba_a, proba_b) if proba_a is not None and proba_b is not None else None
    else:
        values = (labels_a.astype(float), labels_b.astype(float))
    if values is not None:
        x, y = values
        with np.errstate(invalid="ignore"):  # inf - inf: those are equal and masked below
            gap = np.where((x == y) | (np.isnan(x) & np.isnan(y)), 0.0, np.abs(x - y))
        gap = np.where(np.isnan(gap), np.inf, gap)  # NaN on one side only: as different as it gets
        out["values_differing"] = int((gap > tolerance).sum())
        out["max_abs_difference"] = float(gap.max()) if gap.size else 0.0
    out["same"] = not out.get("labels_differing") and not out.get("values_differing")
    return out


def _validity(
    outputs: Outputs, rows: int, manifest: dict[str, Any], output_range: tuple[float, float] | None
) -> list[str]:
    """What is wrong with the model's output for `rows` rows (empty: nothing)."""
    problems = []
    task, classes = manifest["task"], manifest.get("classes") or []
    prediction, proba = outputs
    if len(prediction) != rows:
        problems.append(f"predict returned {len(prediction)} values for {rows} rows")
    if task == "classifier":
        unknown = sorted({str(p) for p in prediction} - {str(c) for c in classes})
        if unknown:
            problems.append(f"predicted labels not among the classes {classes}: {unknown[:5]}")
        if proba is not None:
            if len(proba) != rows:
                problems.append(f"predict_proba returned {len(proba)} rows for {rows} rows")
            if not np.isfinite(proba).all():
                problems.append(f"{int((~np.isfinite(proba)).any(axis=1).sum())} rows have NaN/Inf probabilities")
            elif (proba < 0).any() or (proba > 1).any():
                problems.append(f"probabilities outside [0, 1]: min {proba.min():.6g}, max {proba.max():.6g}")
            elif len(proba):
                sums = proba.sum(axis=1)
                worst = int(np.argmax(np.abs(sums - 1)))
                if abs(sums[worst] - 1) > 1e-6:
                    problems.append(
                        f"probability rows do not sum to 1 (worst: row {worst + 1} sums to {sums[worst]:.9g})"
                    )
    else:
        values = prediction.astype(float)
        if not np.isfinite(values).all():
            problems.append(f"{int((~np.isfinite(values)).sum())} predictions are NaN/Inf")
        elif output_range is not None and ((values < output_range[0]) | (values > output_range[1])).any():
            problems.append(f"predictions outside {list(output_range)}: [{values.min():.6g}, {values.max():.6g}]")
    return problems


def smoke_test(
    registry: Registry,
    ref: str | Version,
    *,
    data: Path | None = None,
    rows: int = 1000,
    max_latency_ms: float = 50.0,
    iterations: int = ITERATIONS,
    load: LoadOptions | None = None,
    output_range: tuple[float, float] | None = None,
) -> Report:
    """Load, infer, validate, check consistency, determinism, round-trip, latency and schema edge cases, on the
    runtime that will serve (`load.runtime`)."""
    version = ref if isinstance(ref, Version) else registry.resolve(ref)
    frame, source = _reference_rows(version, data, rows)  # bad data is exit 3 before any model code runs
    load = load or LoadOptions()
    steps, messages, model = _smoke_steps(registry, version, frame, max_latency_ms, iterations, load, output_range)
    failed = [s["id"] for s in steps.entries if s["status"] == FAIL]
    return Report(
        "smoke-test",
        results={"steps": steps.entries, "failed": failed},
        passed=not failed,
        model=model.summary() if model is not None else version.summary(),
        inputs=[source],
        messages=messages,
    )


def _smoke_steps(
    registry: Registry,
    version: Version,
    frame: pd.DataFrame,
    max_latency_ms: float,
    iterations: int,
    load: LoadOptions,
    output_range: tuple[float, float] | None,
) -> tuple[Steps, list[str], LoadedModel | None]:
    import pandas as pd

    from mlops_cli.registry import library_versions

    steps = Steps()
    messages: list[str] = []
    manifest = version.manifest
    model: LoadedModel | None = None
    with steps.step("load") as entry:
        start = time.perf_counter()
        model = LoadedModel.load(registry, version, load)  # hashes first; raises IntegrityError
        missing = _missing_methods(model)
        running = library_versions()
        differs = {
            k: {"recorded": v, "running": running.get(k)}
            for k, v in manifest["libraries"].items()
            if running.get(k) != v
        }
        entry["evidence"] = {
            "sha256_verified": True,
            "runtime": model.runtime,
            "class": manifest["estimator_class"],
            "missing_methods": missing,
            "library_differences": differs,
            "load_s": round(time.perf_counter() - start, 4),
        }
        if missing:
            entry["status"] = FAIL
    if model is None or steps.entries[-1]["status"] != PASS:
        for step_id in STEPS[1:]:
            steps.skip(step_id, "load failed")
        return steps, messages, model

    with steps.step("single_row") as entry:
        labels, proba = _outputs(model, frame.head(1))
        entry["evidence"] = {
            "prediction": labels[:1].tolist(),
            "probabilities": None if proba is None else proba[0].tolist(),
        }
    batch: Outputs | None = None
    with steps.step("output_validity") as entry:
        batch = _outputs(model, frame)
        problems = _validity(batch, len(frame), manifest, output_range)
        entry["evidence"] = {"rows": len(frame), "problems": problems}
        entry["status"] = FAIL if problems else PASS
    if batch is None:  # the model raised on the batch: nothing to compare with
        for step_id in ("batch_consistency", "determinism", "serialization"):
            steps.skip(step_id, "no batch output to compare with: the model raised (see output_validity)")
    else:
        with steps.step("batch_consistency") as entry:
            n = min(len(frame), 100)
            single = _stack([_outputs(model, frame.iloc[[i]]) for i in range(n)])
            diff = _difference(single, (batch[0][:n], None if batch[1] is None else batch[1][:n]), version, 1e-9)
            entry["evidence"] = {"rows": n, "consistent": diff.pop("same"), **diff, "tolerance": 1e-9}
            entry["status"] = PASS if entry["evidence"]["consistent"] else FAIL
        with steps.step("determinism") as entry:
            diff = _difference(batch, _outputs(model, frame), version)
            entry["evidence"] = {"rows": len(frame), "identical": diff.pop("same"), **diff}
            entry["status"] = PASS if entry["evidence"]["identical"] else FAIL
        with steps.step("serialization") as entry:
            diff = _difference(batch, _outputs(_reloaded(model, load), frame), version)
            entry["evidence"] = {"identical_after_reload": diff.pop("same"), **diff}
            entry["status"] = PASS if entry["evidence"]["identical_after_reload"] else FAIL
    with steps.step("latency") as entry:
        timings = latency.single_row(
            model, frame, budget_ms=max_latency_ms, calls=max(10, iterations // latency.ROUNDS)
        )
        big = pd.concat([frame] * math.ceil(10_000 / len(frame)), ignore_index=True).head(10_000)
        start = time.perf_counter()
        answer = model.score(big)
        timings["batch_rows_per_s"] = 10_000 / (time.perf_counter() - start)
        timings["batch_threads"] = answer.threads  # None: the libraries' default (all cores)
        entry["evidence"] = {**timings, "max_latency_ms": max_latency_ms}
        entry["status"] = PASS if timings["within_budget"] else FAIL
        if timings["stalled_rounds"]:
            messages.append(
                f"latency: {timings['stalled_rounds']} of {timings['rounds']} rounds had a p99 over "
                f"{max_latency_ms:g} ms, but the median round was within it: the machine stalled, not the model"
            )
    with steps.step("edge_cases") as entry:
        cases, not_derived = _edge_cases(model, frame.head(20), manifest)
        failing = sum(c["verdict"] == FAIL for c in cases)
        entry["evidence"] = {
            "failing": failing,
            "passed": len(cases) - failing,
            "cases": cases,
            "not_derived": not_derived,
            "accepts_missing": manifest["input_contract"]["accepts_missing"],
            "accepts_unseen": manifest["input_contract"]["accepts_unseen"],
        }
        entry["status"] = FAIL if failing else PASS
        if not_derived:
            kinds = sorted({k for d in not_derived for k in d["not_tried"]})
            messages.append(
                f"edge_cases: {len(not_derived)} feature(s) have no recorded type or range, so {', '.join(kinds)} "
                f"could not be derived for them ({', '.join(d['feature'] for d in not_derived[:5])}"
                f"{', …' if len(not_derived) > 5 else ''}); register with --train-data to test them"
            )
    return steps, messages, model


def _missing_methods(model: LoadedModel) -> list[str]:
    """What a scikit-learn model lacks of what its task needs (an ONNX graph has what registration checked)."""
    if model.estimator is None:
        return []
    needed = ["predict"] + (["predict_proba"] if model.spec.task == "classifier" else [])
    return [m for m in needed if not hasattr(model.estimator, m)]


def _reloaded(model: LoadedModel, load: LoadOptions) -> LoadedModel:
    """The model written out and read back as its runtime stores it: the version's ONNX file read again into a new
    session; a skops round trip where pickle is refused; else a joblib round trip of the estimator."""
    from mlops_cli.runtime import formats

    if model.runtime == "onnx":
        assert model.version is not None  # an ONNX model always comes from the registry
        return LoadedModel(model.spec, formats.load_onnx(model.version, model.spec), model.version, None, "onnx")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        if not load.allow_pickle and model.version is not None:
            import skops.io as sio

            sio.dump(model.estimator, path)
            trusted = model.version.manifest["formats"]["skops"]["trusted_types"]
            return LoadedModel.of(formats.load_skops(path, trusted), model.spec, version=model.version)
        import joblib

        joblib.dump(model.estimator, path)
        return LoadedModel.of(joblib.load(path), model.spec, version=model.version)


def _some_missing(column: pd.Series) -> pd.Series:
    """Every other value missing, the others kept: the column keeps its dtype (a text column stays text), as a real
    column with gaps would. Integer columns become float, as pandas stores them with gaps."""
    return column.where(np.arange(len(column)) % 2 == 1)


def _edge_cases(
    model: LoadedModel, rows: pd.DataFrame, manifest: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Schema-derived bad inputs, sent through the runtime as a request would be, and the features for which some
    could not be derived (no type or range recorded).

    The input contract may refuse the data (a missing column) or reject its rows (a wrong type, or missing values
    and unseen categories the manifest declares the model does not take): then the model never sees them, which is
    the point. Raising is fine where the input really is unusable or declared untaken; invalid output is never fine."""
    contract_ = manifest["input_contract"]
    cases: list[tuple[str, str, Callable[..., pd.DataFrame], bool]] = []
    not_derived: list[dict[str, Any]] = []
    features = manifest["features"]
    if features:
        first = features[0]["name"]
        cases.append(("missing_column", first, lambda f, c=first: f.drop(columns=[c]), True))
    for feat in features:
        name, kind = feat["name"], feat.get("kind")
        cases.append(
            ("nan", name, lambda f, c=name: f.assign(**{c: _some_missing(f[c])}), not contract_["accepts_missing"])
        )
        if kind == "numeric":
            if feat.get("min") is not None and feat.get("max") is not None:
                span = max(feat["max"] - feat["min"], 1.0)
                cases.append(
                    ("far_out_of_range", name, lambda f, c=name, v=feat["max"] + 100 * span: f.assign(**{c: v}), False)
                )
            else:
                not_derived.append({"feature": name, "reason": "no range recorded", "not_tried": ["far_out_of_range"]})
            cases.append(("wrong_dtype", name, lambda f, c=name: f.assign(**{c: "not a number"}), True))
        elif kind == "categorical":
            cases.append(
                (
                    "unseen_category",
                    name,
                    lambda f, c=name: f.assign(**{c: "__unseen_category__"}),
                    not contract_["accepts_unseen"],
                )
            )
        else:
            not_derived.append(
                {
                    "feature": name,
                    "reason": "no type recorded",
                    "not_tried": ["far_out_of_range", "wrong_dtype", "unseen_category"],
                }
            )
    out = []
    for case, feature, mutate, may_raise in cases:
        entry: dict[str, Any] = {"case": case, "feature": feature}
        mutated = mutate(rows.copy())
        try:
            scored = model.score(mutated)
        except SchemaMismatch as exc:  # the contract refuses the data as a whole: the model never sees it
            entry.update(outcome="refused_by_contract", reason=exc.message, verdict=PASS)
        except InvalidData as exc:  # the model raised on rows that fit its contract (the runtime wraps it)
            entry.update(outcome="raised", error=error_line(exc.__cause__ or exc))
            entry["verdict"] = PASS if may_raise else FAIL
        except (MlopsError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # as in Steps.step: whatever the model raises (sys.exit too) is the outcome
            entry.update(outcome="raised", error=error_line(exc))
            entry["verdict"] = PASS if may_raise else FAIL
        else:
            problems = _validity((scored.prediction, scored.proba), len(scored.prediction), manifest, None)
            rejected = int(scored.invalid.sum())
            if rejected == len(mutated):
                entry.update(outcome="rejected_by_contract", reasons=sorted(scored.reasons))
            else:
                entry.update(outcome="invalid_output" if problems else "valid_output", problems=problems)
            if rejected:
                entry["rows_rejected"] = rejected
            # Far out of range and wrong dtype only need *valid* output when the model answers at all.
            entry["verdict"] = FAIL if problems else PASS
        out.append(entry)
    return out, not_derived
