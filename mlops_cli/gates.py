"""Release gates: `smoke_test` (does this artifact work?) and `checklist` (is this version ready to ship?).

Both return a Report whose verdict a release script can trust: every step or item carries its status, evidence
and duration, and `passed` is False (exit 1) when any step / required item fails. Registry and input errors raise.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops_cli import io, schema
from mlops_cli.errors import EmptyInput, InputError, InvalidData, MlopsError, ModelNotFound, UnreadableFile
from mlops_cli.registry import PROFILE, SAMPLE, Registry, Version
from mlops_cli.report import Report

if TYPE_CHECKING:
    import pandas as pd

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"

# What the model says about some rows: its predictions (labels, or a regressor's values) and, for a classifier
# with predict_proba, the probabilities.
Outputs = tuple[np.ndarray, np.ndarray | None]


def _error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


@dataclass
class _Steps:
    """Collects steps/items: each a dict with id, status, evidence, duration_s (and, for the checklist, more)."""

    entries: list[dict[str, Any]] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, step_id: str, **extra: Any) -> Iterator[dict[str, Any]]:
        entry: dict[str, Any] = {"id": step_id, "status": PASS, "evidence": {}, **extra}
        start = time.perf_counter()
        try:
            yield entry
        except (MlopsError, KeyboardInterrupt):  # our errors, Ctrl-C and SIGTERM (Interrupted) stop the command
            raise
        except BaseException as exc:  # the model under test raised, or called sys.exit(): that is the finding
            entry["status"] = FAIL
            entry["evidence"]["error"] = _error(exc)
        finally:
            entry["duration_s"] = round(time.perf_counter() - start, 4)
            self.entries.append(entry)

    def skip(self, step_id: str, reason: str) -> None:
        self.entries.append({"id": step_id, "status": SKIP, "evidence": {"reason": reason}, "duration_s": 0.0})


# --- smoke test ----------------------------------------------------------------------------------------------

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
    features = [f["name"] for f in version.manifest["features"]]
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise InputError(
            f"the smoke-test data lacks the model's feature columns {missing}", "pass data with the model's schema"
        )
    if frame.empty:
        raise EmptyInput("the smoke-test data has no rows", "pass data with rows")
    fingerprint = io.fingerprint(source, rows=len(frame))
    # The steps judge the model, so its input must be valid: text in a numeric column is the data's fault (exit 3),
    # as score-batch would reject that row too. The edge-case step tries bad inputs on purpose.
    frame, invalid, reasons = schema.validate_batch(frame.head(rows).reset_index(drop=True), version.manifest)
    if invalid.any():
        first = int(np.flatnonzero(invalid)[0])
        raise InvalidData(
            f"{data or SAMPLE}: {int(invalid.sum()):,} of the first {len(frame):,} rows do not fit the model's schema "
            f"({'; '.join(sorted(reasons))}; first at row {first + 1})",
            "fix the data, or pass rows the model can take",
        )
    return frame, fingerprint


def _outputs(estimator: Any, frame: pd.DataFrame, task: str) -> Outputs:
    """Everything the model says about `frame`: its predictions and, for classifiers, the probabilities."""
    prediction = np.asarray(estimator.predict(frame))
    if task == "classifier" and hasattr(estimator, "predict_proba"):
        return prediction, np.asarray(estimator.predict_proba(frame), dtype=float)
    return prediction, None


def _stack(parts: list[Outputs]) -> Outputs:
    labels = np.concatenate([p[0].reshape(-1) for p in parts])
    probas = [p[1] for p in parts if p[1] is not None]
    return labels, (np.vstack(probas) if len(probas) == len(parts) else None)


def _difference(a: Outputs, b: Outputs, task: str, tolerance: float = 0.0) -> dict[str, Any]:
    """How two outputs for the same rows differ: predicted labels that differ (classifiers), and values
    (probabilities, or a regressor's predictions) further apart than `tolerance`. Empty counts: the same."""
    (labels_a, proba_a), (labels_b, proba_b) = a, b
    shapes = [[list(labels.shape), None if proba is None else list(proba.shape)] for labels, proba in (a, b)]
    if shapes[0] != shapes[1]:
        return {"same": False, "shapes": shapes}
    out: dict[str, Any] = {}
    values: tuple[np.ndarray, np.ndarray] | None
    if task == "classifier":
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


def latency_ms(estimator: Any, rows: pd.DataFrame, iterations: int = 200, warmup: int = 10) -> dict[str, float]:
    """Single-row predict latency percentiles (ms) over `iterations` calls, after a warm-up."""
    singles = [rows.iloc[[i % len(rows)]] for i in range(iterations + warmup)]
    timings = []
    for i, row in enumerate(singles):
        start = time.perf_counter()
        estimator.predict(row)
        if i >= warmup:
            timings.append((time.perf_counter() - start) * 1000)
    p50, p95, p99 = np.percentile(timings, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "iterations": iterations}


def latency_p99_ms(estimator: Any, rows: pd.DataFrame, iterations: int = 200) -> float:
    return latency_ms(estimator, rows, iterations)["p99_ms"]


def smoke_test(
    registry: Registry,
    ref: str | Version,
    *,
    data: Path | None = None,
    rows: int = 1000,
    max_latency_ms: float = 50.0,
    iterations: int = 200,
    strict: bool = False,
    output_range: tuple[float, float] | None = None,
) -> Report:
    """Load, infer, validate, check consistency, determinism, round-trip, latency and schema edge cases."""
    version = ref if isinstance(ref, Version) else registry.resolve(ref)
    frame, source = _reference_rows(version, data, rows)  # bad data is exit 3 before any model code runs
    steps, messages = _smoke_steps(registry, version, frame, max_latency_ms, iterations, strict, output_range)
    failed = [s["id"] for s in steps.entries if s["status"] == FAIL]
    return Report(
        "smoke-test",
        results={"steps": steps.entries, "failed": failed},
        passed=not failed,
        model=version.summary(),
        inputs=[source],
        messages=messages,
    )


def _smoke_steps(
    registry: Registry,
    version: Version,
    frame: pd.DataFrame,
    max_latency_ms: float,
    iterations: int,
    strict: bool,
    output_range: tuple[float, float] | None,
) -> tuple[_Steps, list[str]]:
    import joblib
    import pandas as pd

    from mlops_cli.registry import _library_versions

    steps = _Steps()
    messages: list[str] = []
    manifest = version.manifest
    task = manifest["task"]
    with steps.step("load") as entry:
        start = time.perf_counter()
        estimator, version = registry.load_model(version, strict=strict)  # hash first; raises IntegrityError
        needed = ["predict"] + (["predict_proba"] if task == "classifier" else [])
        missing = [m for m in needed if not hasattr(estimator, m)]
        running = _library_versions()
        differs = {
            k: {"recorded": v, "running": running.get(k)}
            for k, v in manifest["libraries"].items()
            if running.get(k) != v
        }
        entry["evidence"] = {
            "sha256_verified": True,
            "class": manifest["estimator_class"],
            "missing_methods": missing,
            "library_differences": differs,
            "load_s": round(time.perf_counter() - start, 4),
        }
        if missing:
            entry["status"] = FAIL
    if steps.entries[-1]["status"] != PASS:
        for step_id in STEPS[1:]:
            steps.skip(step_id, "load failed")
        return steps, messages

    with steps.step("single_row") as entry:
        labels, proba = _outputs(estimator, frame.head(1), task)
        entry["evidence"] = {
            "prediction": labels[:1].tolist(),
            "probabilities": None if proba is None else proba[0].tolist(),
        }
    batch: Outputs | None = None
    with steps.step("output_validity") as entry:
        batch = _outputs(estimator, frame, task)
        problems = _validity(batch, len(frame), manifest, output_range)
        entry["evidence"] = {"rows": len(frame), "problems": problems}
        entry["status"] = FAIL if problems else PASS
    if batch is None:  # the model raised on the batch: nothing to compare with
        for step_id in ("batch_consistency", "determinism", "serialization"):
            steps.skip(step_id, "no batch output to compare with: the model raised (see output_validity)")
    else:
        with steps.step("batch_consistency") as entry:
            n = min(len(frame), 100)
            single = _stack([_outputs(estimator, frame.iloc[[i]], task) for i in range(n)])
            diff = _difference(single, (batch[0][:n], None if batch[1] is None else batch[1][:n]), task, 1e-9)
            entry["evidence"] = {"rows": n, "consistent": diff.pop("same"), **diff, "tolerance": 1e-9}
            entry["status"] = PASS if entry["evidence"]["consistent"] else FAIL
        with steps.step("determinism") as entry:
            diff = _difference(batch, _outputs(estimator, frame, task), task)
            entry["evidence"] = {"rows": len(frame), "identical": diff.pop("same"), **diff}
            entry["status"] = PASS if entry["evidence"]["identical"] else FAIL
        with steps.step("serialization") as entry, tempfile.TemporaryDirectory() as tmp:
            joblib.dump(estimator, Path(tmp) / "model.joblib")
            reloaded = joblib.load(Path(tmp) / "model.joblib")
            diff = _difference(batch, _outputs(reloaded, frame, task), task)
            entry["evidence"] = {"identical_after_reload": diff.pop("same"), **diff}
            entry["status"] = PASS if entry["evidence"]["identical_after_reload"] else FAIL
    with steps.step("latency") as entry:
        timings = latency_ms(estimator, frame, iterations)
        big = pd.concat([frame] * math.ceil(10_000 / len(frame)), ignore_index=True).head(10_000)
        start = time.perf_counter()
        estimator.predict(big)
        timings["batch_rows_per_s"] = 10_000 / (time.perf_counter() - start)
        entry["evidence"] = {**timings, "max_latency_ms": max_latency_ms}
        entry["status"] = PASS if timings["p99_ms"] <= max_latency_ms else FAIL
    with steps.step("edge_cases") as entry:
        cases, not_derived = _edge_cases(estimator, frame.head(20), manifest)
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
    return steps, messages


def _some_missing(column: pd.Series) -> pd.Series:
    """Every other value missing, the others kept: the column keeps its dtype (a text column stays text), as a real
    column with gaps would. Integer columns become float, as pandas stores them with gaps."""
    return column.where(np.arange(len(column)) % 2 == 1)


def _edge_cases(
    estimator: Any, rows: pd.DataFrame, manifest: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Schema-derived bad inputs, and the features for which some could not be derived (no type or range recorded).

    Raising is fine where the input really is unusable (a missing column, a wrong dtype) or where the manifest
    declares the model does not take it; invalid output is never fine."""
    contract, task = manifest["input_contract"], manifest["task"]
    cases: list[tuple[str, str, Callable[..., pd.DataFrame], bool]] = []
    not_derived: list[dict[str, Any]] = []
    features = manifest["features"]
    if features:
        first = features[0]["name"]
        cases.append(("missing_column", first, lambda f, c=first: f.drop(columns=[c]), True))
    for feat in features:
        name, kind = feat["name"], feat.get("kind")
        cases.append(
            ("nan", name, lambda f, c=name: f.assign(**{c: _some_missing(f[c])}), not contract["accepts_missing"])
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
                    not contract["accepts_unseen"],
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
            problems = _validity(_outputs(estimator, mutated, task), len(mutated), manifest, None)
        except (MlopsError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # as in _Steps.step: whatever the model raises (sys.exit too) is the outcome
            entry.update(outcome="raised", error=_error(exc))
            entry["verdict"] = PASS if may_raise else FAIL
        else:
            entry.update(outcome="invalid_output" if problems else "valid_output", problems=problems)
            # Far out of range and wrong dtype only need *valid* output when the model answers at all.
            entry["verdict"] = FAIL if problems else PASS
        out.append(entry)
    return out, not_derived


# --- checklist -----------------------------------------------------------------------------------------------

ITEMS: dict[str, tuple[str, str]] = {
    # id: (section, what it checks)
    "test_metrics": ("model validation", "test metrics recorded with confidence intervals"),
    "baseline_comparison": ("model validation", "not worse than the baseline (paired bootstrap on the primary metric)"),
    "per_class_metrics": ("model validation", "per-class precision/recall/F1 recorded (classifiers)"),
    "edge_cases": ("model validation", "schema edge cases handled (smoke step edge_cases)"),
    "artifact_size": ("model validation", "artifact size under the budget"),
    "latency": ("model validation", "single-row p99 latency under the budget"),
    "input_schema": ("data validation", "input schema recorded with types and ranges/categories"),
    "missing_values": ("data validation", "missing-value behaviour known (shares and input contract)"),
    "distribution_stats": ("data validation", "distribution statistics recorded (reference profile)"),
    "outlier_thresholds": ("data validation", "outlier thresholds recorded (ranges and 1%/99% quantiles)"),
    "serialization": ("code quality", "serialization round-trip gives identical predictions"),
    "reproducibility": ("code quality", "deterministic predictions and lineage (training data, git) recorded"),
    "library_versions": ("code quality", "library versions recorded and matching this environment"),
    "smoke_test": ("code quality", "the smoke steps without an item of their own pass"),
    "monitoring_ready": ("monitoring readiness", "reference profile and reference predictions stored"),
    "rollback_ready": ("rollback readiness", "a previous production version exists, verifies and loads"),
}

# Smoke steps judged by an item of their own, so that a policy making that item advisory is honoured; the
# `smoke_test` item judges the others.
OWN_ITEM = {
    "determinism": "reproducibility",
    "serialization": "serialization",
    "latency": "latency",
    "edge_cases": "edge_cases",
}

DEFAULT_POLICY: dict[str, Any] = {
    "required": [i for i in ITEMS if i != "rollback_ready"],
    "advisory": ["rollback_ready"],
    "budgets": {"latency_p99_ms": 50.0, "artifact_mb": 500.0},
    "baseline": {"rule": "not_worse", "margin": 0.01, "metric": None, "alias": "production"},
}


def load_policy(path: Path | None) -> dict[str, Any]:
    """The default policy, overridden by a TOML file ([items] required/advisory, [budgets], [baseline]).

    Anything the file says that is not understood is an error (exit 3): a typo must not loosen the gate."""
    from mlops_cli import abtest, refs

    policy = copy.deepcopy(DEFAULT_POLICY)
    if path is None:
        return policy
    if not path.is_file():
        raise InputError(f"{path}: no such policy file", "check the path")
    try:
        loaded = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UnreadableFile(f"{path}: not valid TOML ({exc})", "fix the policy file") from exc

    def bad(what: str, hint: str = "fix the policy file; the README's checklist section lists every key") -> InputError:
        return InputError(f"{path}: {what}", hint)

    unknown = sorted(set(loaded) - {"items", "budgets", "baseline"})
    if unknown:
        raise bad(f"unknown keys or tables {unknown}", "a policy has the tables [items], [budgets] and [baseline]")
    for table, value in loaded.items():
        if not isinstance(value, dict):
            raise bad(f"{table} must be a table ([{table}]), got {value!r}")
    items = loaded.get("items", {})
    extra = sorted(set(items) - {"required", "advisory"})
    if extra:
        raise bad(f"unknown [items] keys {extra}", "known: required, advisory")
    if len(items) > 1:
        raise bad("[items] gives both required and advisory", "give one list; every other item is the other kind")
    for key, names in items.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise bad(f"items.{key} must be a list of item names, got {names!r}")
        unknown = sorted(set(names) - set(ITEMS))
        if unknown:
            raise bad(f"unknown checklist items {unknown}", f"known items: {', '.join(ITEMS)}")
        other = "advisory" if key == "required" else "required"
        policy[key] = [i for i in ITEMS if i in names]
        policy[other] = [i for i in ITEMS if i not in names]
    for section in ("budgets", "baseline"):
        extra = sorted(set(loaded.get(section, {})) - set(DEFAULT_POLICY[section]))
        if extra:
            raise bad(f"unknown [{section}] keys {extra}", f"known: {', '.join(DEFAULT_POLICY[section])}")
        policy[section].update(loaded.get(section, {}))
    baseline = policy["baseline"]
    if baseline["rule"] not in ("not_worse", "better"):
        raise bad(f"baseline.rule must be 'not_worse' or 'better', got {baseline['rule']!r}")
    numbers = {f"budgets.{k}": v for k, v in policy["budgets"].items()} | {"baseline.margin": baseline["margin"]}
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise bad(f"{key} must be a finite number >= 0, got {value!r}")
        if key.startswith("budgets.") and value == 0:
            raise bad(f"{key} must be above 0 (a zero budget fails every model), got {value!r}")
    if baseline["metric"] is not None and baseline["metric"] not in abtest.METRIC_ALIASES:
        raise bad(
            f"baseline.metric {baseline['metric']!r} is not a metric", f"use one of {', '.join(abtest.METRIC_ALIASES)}"
        )
    try:
        refs.validate_label(baseline["alias"] if isinstance(baseline["alias"], str) else "", "alias")
    except MlopsError as exc:  # an invalid name is a registry error elsewhere; here it is a value in a file
        raise bad(f"baseline.alias {baseline['alias']!r} is not a valid alias ({exc.message})") from exc
    return policy


def checklist(
    registry: Registry,
    ref: str | Version,
    *,
    baseline: str | None = None,
    eval_data: Path | None = None,
    policy: Path | dict[str, Any] | None = None,
    strict: bool = False,
    iterations: int = 200,
) -> Report:
    """The pre-deployment checklist, judged automatically wherever a machine can judge it."""
    from mlops_cli import abtest

    rules = policy if isinstance(policy, dict) else load_policy(policy)
    budgets = rules["budgets"]
    version = ref if isinstance(ref, Version) else registry.resolve(ref)
    manifest = version.manifest
    # Everything a user can get wrong is checked before the smoke test's seconds to minutes.
    try:
        metric = abtest.metric_name(rules["baseline"]["metric"], manifest["task"])
    except InputError as exc:
        raise InputError(f"the policy's baseline.metric: {exc.message}", exc.hint) from exc
    if baseline is not None:
        registry.resolve(baseline)  # exit 4 now, not after the smoke test
    eval_frame = None
    if eval_data is not None:
        eval_frame = io.read_table(eval_data)  # missing, unreadable, empty: exit 3
        if eval_frame.empty:
            raise EmptyInput(f"{eval_data}: no rows", "pass labelled rows with --eval-data")
    items = _Steps()

    def item(item_id: str) -> Any:
        section, what = ITEMS[item_id]
        return items.step(item_id, section=section, check=what, required=item_id in rules["required"])

    has_sample = SAMPLE in manifest["files"]
    smoke = (
        smoke_test(
            registry,
            version,
            max_latency_ms=budgets["latency_p99_ms"],
            strict=strict,
            iterations=iterations,
            data=eval_data if not has_sample else None,
        )
        if (has_sample or eval_data)
        else None
    )
    smoke_steps = {s["id"]: s for s in smoke.results["steps"]} if smoke else {}

    def from_smoke(item_id: str, step_id: str, evidence: Callable[[dict[str, Any]], Any]) -> None:
        """An item that is one smoke step: its status, evidence and duration."""
        step = smoke_steps.get(step_id)
        with item(item_id) as e:
            if step is None:
                e["status"], e["evidence"] = (
                    FAIL,
                    {"reason": "smoke test not run: no reference sample and no --eval-data"},
                )
            elif step["status"] == SKIP:
                e["status"], e["evidence"] = (
                    FAIL,
                    {"reason": f"smoke step {step_id} skipped: {step['evidence']['reason']}"},
                )
            else:
                e["status"], e["evidence"] = step["status"], evidence(step)
        if step is not None:
            e["duration_s"] = step["duration_s"]

    with item("test_metrics") as e:
        em = manifest.get("eval_metrics") or {}
        e["evidence"] = {"metrics": sorted(k for k in em if "[" not in k), "eval_data": manifest.get("eval_data")}
        e["status"] = PASS if em and all("ci_low" in v for v in em.values()) else FAIL
    with item("baseline_comparison") as e:
        _baseline(registry, version, baseline, eval_data, eval_frame, metric, rules["baseline"], e)
    with item("per_class_metrics") as e:
        if manifest["task"] != "classifier":
            e["status"], e["evidence"] = SKIP, {"reason": "not a classifier"}
        else:
            em = manifest.get("eval_metrics") or {}
            wanted = [f"{m}[{c}]" for c in manifest.get("classes") or [] for m in ("precision", "recall", "f1")]
            missing = [k for k in wanted if k not in em]
            e["evidence"] = {"recorded": {k: em[k]["value"] for k in wanted if k in em}, "missing": missing}
            if not wanted:
                e["evidence"]["reason"] = "no classes recorded"
            elif len(missing) == len(wanted):
                e["evidence"]["reason"] = "no per-class metrics recorded (register with --eval-data)"
            e["status"] = PASS if wanted and not missing else FAIL
    from_smoke(
        "edge_cases",
        "edge_cases",
        lambda s: {
            "failing": s["evidence"]["failing"],
            "passed": s["evidence"]["passed"],
            "failing_cases": [c for c in s["evidence"]["cases"] if c["verdict"] == FAIL],
            "not_derived": s["evidence"]["not_derived"],
        },
    )
    with item("artifact_size") as e:
        size_mb = manifest["files"]["model.joblib"]["bytes"] / 1e6
        e["evidence"] = {"artifact_mb": round(size_mb, 3), "budget_mb": budgets["artifact_mb"]}
        e["status"] = PASS if size_mb <= budgets["artifact_mb"] else FAIL
    from_smoke(
        "latency",
        "latency",
        lambda s: {
            k: v
            for k, v in s["evidence"].items()
            if k in ("p50_ms", "p99_ms", "max_latency_ms", "batch_rows_per_s", "error")
        },
    )
    with item("input_schema") as e:
        feats = manifest["features"]
        described = [f for f in feats if f.get("kind") and ("min" in f or "categories" in f or f["kind"] != "numeric")]
        e["evidence"] = {"features": len(feats), "with_types_and_ranges": len(described)}
        e["status"] = PASS if feats and len(described) == len(feats) else FAIL
    with item("missing_values") as e:
        shares = {f["name"]: f["missing_share"] for f in manifest["features"] if "missing_share" in f}
        e["evidence"] = {
            "input_contract": manifest["input_contract"],
            "features_with_missing": {k: v for k, v in shares.items() if v > 0},
        }
        e["status"] = PASS if shares and len(shares) == len(manifest["features"]) else FAIL
    profile = _profile(version)
    with item("distribution_stats") as e:
        e["evidence"] = {"profile": PROFILE in manifest["files"], "features": len((profile or {}).get("features", {}))}
        e["status"] = PASS if profile else FAIL
    with item("outlier_thresholds") as e:
        numeric = {k: v for k, v in (profile or {}).get("features", {}).items() if v.get("kind") == "numeric"}
        with_q = [k for k, v in numeric.items() if "quantiles" in v and "min" in v]
        e["evidence"] = {"numeric_features": len(numeric), "with_range_and_quantiles": len(with_q)}
        e["status"] = PASS if profile and len(with_q) == len(numeric) else FAIL
    from_smoke("serialization", "serialization", lambda s: s["evidence"])
    determinism = smoke_steps.get("determinism")
    with item("reproducibility") as e:
        lineage = {
            "training_data": bool(manifest.get("training_data")),
            "git": bool((manifest.get("lineage") or {}).get("git")),
        }
        deterministic = bool(determinism and determinism["status"] == PASS)
        e["evidence"] = {"deterministic": deterministic, **lineage}
        if determinism and determinism["status"] != PASS:
            e["evidence"]["determinism"] = determinism["evidence"]
        e["status"] = PASS if deterministic and lineage["training_data"] else FAIL
    if determinism:
        e["duration_s"] = determinism["duration_s"]
    with item("library_versions") as e:
        load = smoke_steps.get("load")
        differs = load["evidence"].get("library_differences") if load else None
        e["evidence"] = {"recorded": manifest["libraries"], "differences": differs}
        if differs is None:
            e["evidence"]["reason"] = "smoke test did not load the model" if load else "smoke test not run"
        e["status"] = PASS if differs == {} else FAIL
    with item("smoke_test") as e:
        judged = [s for s in STEPS if s not in OWN_ITEM]
        if smoke is None:
            e["status"], e["evidence"] = FAIL, {"reason": "smoke test not run: no reference sample and no --eval-data"}
        else:
            failed = smoke.results["failed"]
            # failed_steps: every failed smoke step, also those judged by their own items (retrain reads it)
            e["evidence"] = {"judged_steps": judged, "failed_steps": failed}
            e["status"] = FAIL if set(failed) & set(judged) else PASS
    if smoke is not None:
        e["duration_s"] = round(sum(s["duration_s"] for s in smoke.results["steps"]), 4)
    with item("monitoring_ready") as e:
        e["evidence"] = {"profile": PROFILE in manifest["files"], "sample_with_predictions": has_sample}
        e["status"] = PASS if PROFILE in manifest["files"] and has_sample else FAIL
    with item("rollback_ready") as e:
        _rollback_ready(registry, version, rules["baseline"]["alias"], e)

    for entry in items.entries:
        if entry["status"] == FAIL and not entry["required"]:
            entry["status"] = WARN  # advisory items never fail the checklist
    failed = [i["id"] for i in items.entries if i["status"] == FAIL]
    inputs = (
        [io.fingerprint(eval_data, rows=len(eval_frame))] if eval_data is not None and eval_frame is not None else []
    )
    if smoke is not None and smoke.inputs[0]["path"] != str(eval_data):
        inputs += smoke.inputs  # the stored sample the smoke test ran on
    return Report(
        "checklist",
        results={"items": items.entries, "failed": failed, "policy": rules},
        passed=not failed,
        model=version.summary(),
        inputs=inputs,
        messages=smoke.messages if smoke else [],
    )


def _profile(version: Version) -> dict[str, Any] | None:
    import json

    if PROFILE not in version.manifest["files"]:
        return None
    return json.loads(version.file(PROFILE).read_text())


def _baseline(
    registry: Registry,
    version: Version,
    baseline: str | None,
    eval_data: Path | None,
    eval_frame: pd.DataFrame | None,
    metric: str,
    rule: dict[str, Any],
    entry: dict[str, Any],
) -> None:
    from mlops_cli import abtest

    try:
        base = registry.resolve(baseline or f"{version.name}@{rule['alias']}")
    except ModelNotFound:
        if baseline:
            raise
        entry["status"], entry["evidence"] = SKIP, {"reason": f"no {rule['alias']} version to compare with"}
        return
    if base.ref == version.ref:
        entry["status"], entry["evidence"] = SKIP, {"reason": f"{version.ref} is the baseline itself"}
        return
    margin = float(rule["margin"])
    if eval_frame is not None:
        result = abtest.compare_models(
            registry, base, version, eval_frame, version.manifest.get("target"), metric=metric
        ).results
        boot = result["bootstrap"]
        sign = 1 if result["higher_is_better"] else -1
        # The improvement's CI, in "higher is better" terms, from the paired bootstrap.
        low = min(sign * boot["ci_low"], sign * boot["ci_high"])
        ok = low > -margin if rule["rule"] == "not_worse" else bool(result["challenger_wins"])
        entry["evidence"] = {
            "baseline": base.ref,
            "metric": metric,
            "rule": rule["rule"],
            "margin": margin,
            "baseline_value": result["champion"]["value"],
            "value": result["challenger"]["value"],
            "improvement": result["improvement"],
            "improvement_ci_low": low,
            "p_value": boot["p_value"],
            "on": str(eval_data),
            "n": result["n"],
        }
    else:
        ours = (version.manifest.get("eval_metrics") or {}).get(metric)
        theirs = (base.manifest.get("eval_metrics") or {}).get(metric)
        if not ours or not theirs:
            entry["status"] = FAIL
            entry["evidence"] = {"baseline": base.ref, "reason": f"no recorded {metric} to compare; pass --eval-data"}
            return
        from mlops_cli.metrics import higher_is_better

        improvement = (ours["value"] - theirs["value"]) * (1 if higher_is_better(metric) else -1)
        ok = improvement > -margin if rule["rule"] == "not_worse" else improvement > 0
        entry["evidence"] = {
            "baseline": base.ref,
            "metric": metric,
            "rule": rule["rule"],
            "margin": margin,
            "baseline_value": theirs["value"],
            "value": ours["value"],
            "improvement": improvement,
            "on": "recorded eval metrics (not paired; pass --eval-data for a paired test)",
        }
        # Metrics measured on different rows say nothing about which model is better: no verdict from them.
        data = [(m.manifest.get("eval_data") or {}).get("sha256") for m in (version, base)]
        entry["evidence"]["eval_data_sha256"] = {"this": data[0], "baseline": data[1]}
        if data[0] is None or data[0] != data[1]:
            entry["evidence"]["reason"] = "recorded on different data; pass --eval-data for a paired comparison"
            ok = False
    entry["status"] = PASS if ok else FAIL


def _rollback_ready(registry: Registry, version: Version, alias: str, entry: dict[str, Any]) -> None:
    aliases = registry.aliases(version.name)
    current = aliases.get(alias)
    # After this version ships, rolling back means returning to today's production (or, if this is already
    # production, to the one before it).
    previous: str | None
    if current and current != version.version:
        previous = current
    else:
        stack = registry.alias_history(version.name, alias)  # what `models rollback` would go back to
        previous = stack[-2] if len(stack) >= 2 else None
    if previous is None:
        entry["status"], entry["evidence"] = FAIL, {"reason": f"no previous {alias} version (first release)"}
        return
    try:
        target = registry.resolve(f"{version.name}:{previous}")
        registry.load_model(target)  # verifies the hash, then unpickles
    except MlopsError as exc:  # a broken fallback is this item's finding, not an error of the checklist
        entry["status"], entry["evidence"] = FAIL, {"previous": previous, "error": exc.one_line()}
        return
    entry["evidence"] = {"previous": target.ref, "verified": True, "loads": True}
