"""Release gates: `smoke_test` (does this artifact work?) and `checklist` (is this version ready to ship?).

Both return a Report whose verdict a release script can trust: every step or item carries its status, evidence
and duration, and `passed` is False (exit 1) when any step / required item fails. Registry and input errors raise.
"""

from __future__ import annotations

import contextlib
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
from mlops_cli.registry import PROFILE, SAMPLE, Registry, Version, alias_stack
from mlops_cli.report import Report

if TYPE_CHECKING:
    import pandas as pd

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"


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
        except MlopsError:
            raise
        except Exception as exc:  # the model under test raised: that is the finding, not a crash of ours
            entry["status"] = FAIL
            entry["evidence"]["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            entry["duration_s"] = round(time.perf_counter() - start, 4)
            self.entries.append(entry)

    def get(self, step_id: str) -> dict[str, Any] | None:
        return next((e for e in self.entries if e["id"] == step_id), None)


# --- smoke test ----------------------------------------------------------------------------------------------


def _reference_rows(version: Version, data: Path | None, rows: int) -> pd.DataFrame:
    if data is not None:
        frame = io.read_table(data)
    elif SAMPLE in version.manifest["files"]:
        frame = io.read_table(version.file(SAMPLE))
    else:
        raise InputError(f"{version.ref} has no stored reference sample", "pass --data, or register with --train-data")
    features = [f["name"] for f in version.manifest["features"]]
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise InputError(
            f"the smoke-test data lacks the model's feature columns {missing}", "pass data with the model's schema"
        )
    if frame.empty:
        raise EmptyInput("the smoke-test data has no rows", "pass data with rows")
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
    return frame


def _outputs(estimator: Any, frame: pd.DataFrame, task: str) -> np.ndarray:
    """Everything the model says about `frame` as one float matrix: probabilities, or predictions."""
    if task == "classifier" and hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(frame), dtype=float)
    return np.asarray(estimator.predict(frame), dtype=float).reshape(len(frame), -1)


def _validity(
    estimator: Any, frame: pd.DataFrame, manifest: dict[str, Any], output_range: tuple[float, float] | None
) -> list[str]:
    """What is wrong with the model's output on `frame` (empty: nothing)."""
    problems = []
    task, classes = manifest["task"], manifest.get("classes") or []
    prediction = np.asarray(estimator.predict(frame))
    if len(prediction) != len(frame):
        problems.append(f"predict returned {len(prediction)} values for {len(frame)} rows")
    if task == "classifier":
        unknown = sorted({str(p) for p in prediction} - {str(c) for c in classes})
        if unknown:
            problems.append(f"predicted labels not among the classes {classes}: {unknown[:5]}")
        if hasattr(estimator, "predict_proba"):
            proba = np.asarray(estimator.predict_proba(frame), dtype=float)
            if not np.isfinite(proba).all():
                problems.append(f"{int((~np.isfinite(proba)).any(axis=1).sum())} rows have NaN/Inf probabilities")
            elif (proba < 0).any() or (proba > 1).any():
                problems.append(f"probabilities outside [0, 1]: min {proba.min():.6g}, max {proba.max():.6g}")
            elif np.abs(proba.sum(axis=1) - 1).max() > 1e-6:
                problems.append(f"probability rows do not sum to 1 (worst {proba.sum(axis=1).max():.9g})")
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
    import joblib
    import pandas as pd

    steps = _Steps()
    version = ref if isinstance(ref, Version) else registry.resolve(ref)
    manifest = version.manifest
    task = manifest["task"]
    with steps.step("load") as entry:
        start = time.perf_counter()
        estimator, version = registry.load_model(version, strict=strict)  # hash first; raises IntegrityError
        needed = ["predict"] + (["predict_proba"] if task == "classifier" else [])
        missing = [m for m in needed if not hasattr(estimator, m)]
        from mlops_cli.registry import _library_versions

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
    if steps.get("load")["status"] != PASS:  # type: ignore[index]
        return _smoke_report(version, steps)
    frame = _reference_rows(version, data, rows)

    with steps.step("single_row") as entry:
        out = _outputs(estimator, frame.head(1), task)
        entry["evidence"] = {"output": out[0].tolist()}
    with steps.step("output_validity") as entry:
        problems = _validity(estimator, frame, manifest, output_range)
        entry["evidence"] = {"rows": len(frame), "problems": problems}
        entry["status"] = FAIL if problems else PASS
    batch = _outputs(estimator, frame, task)
    with steps.step("batch_consistency") as entry:
        n = min(len(frame), 100)
        single = np.vstack([_outputs(estimator, frame.iloc[[i]], task) for i in range(n)])
        worst = float(np.nanmax(np.abs(single - batch[:n]))) if n else 0.0
        entry["evidence"] = {"rows": n, "max_abs_difference": worst, "tolerance": 1e-9}
        entry["status"] = PASS if worst <= 1e-9 and np.array_equal(np.isnan(single), np.isnan(batch[:n])) else FAIL
    with steps.step("determinism") as entry:
        again = _outputs(estimator, frame, task)
        same = np.array_equal(batch, again, equal_nan=True)
        entry["evidence"] = {
            "rows": len(frame),
            "identical": same,
            "max_abs_difference": float(np.nanmax(np.abs(batch - again))) if not same else 0.0,
        }
        entry["status"] = PASS if same else FAIL
    with steps.step("serialization") as entry, tempfile.TemporaryDirectory() as tmp:
        joblib.dump(estimator, Path(tmp) / "model.joblib")
        reloaded = joblib.load(Path(tmp) / "model.joblib")
        same = np.array_equal(batch, _outputs(reloaded, frame, task), equal_nan=True)
        entry["evidence"] = {"identical_after_reload": same}
        entry["status"] = PASS if same else FAIL
    with steps.step("latency") as entry:
        timings = latency_ms(estimator, frame, iterations)
        big = pd.concat([frame] * math.ceil(10_000 / len(frame)), ignore_index=True).head(10_000)
        start = time.perf_counter()
        estimator.predict(big)
        timings["batch_rows_per_s"] = 10_000 / (time.perf_counter() - start)
        entry["evidence"] = {**timings, "max_latency_ms": max_latency_ms}
        entry["status"] = PASS if timings["p99_ms"] <= max_latency_ms else FAIL
    with steps.step("edge_cases") as entry:
        cases = _edge_cases(estimator, frame.head(20), manifest, output_range)
        entry["evidence"] = {
            "cases": cases,
            "accepts_missing": manifest["input_contract"]["accepts_missing"],
            "accepts_unseen": manifest["input_contract"]["accepts_unseen"],
        }
        entry["status"] = FAIL if any(c["verdict"] == FAIL for c in cases) else PASS
    return _smoke_report(version, steps)


def _smoke_report(version: Version, steps: _Steps) -> Report:
    failed = [s["id"] for s in steps.entries if s["status"] == FAIL]
    return Report(
        "smoke-test", results={"steps": steps.entries, "failed": failed}, passed=not failed, model=version.summary()
    )


def _edge_cases(
    estimator: Any, rows: pd.DataFrame, manifest: dict[str, Any], output_range: tuple[float, float] | None
) -> list[dict[str, Any]]:
    """Schema-derived bad inputs. Raising is fine where the input really is unusable (a missing column, a wrong
    dtype) or where the manifest declares the model does not take it; invalid output is never fine."""
    contract = manifest["input_contract"]
    cases: list[tuple[str, str, Callable[..., pd.DataFrame], bool]] = []
    features = manifest["features"]
    if features:
        first = features[0]["name"]
        cases.append(("missing_column", first, lambda f, c=first: f.drop(columns=[c]), True))
    for feat in features:
        name, kind = feat["name"], feat.get("kind")
        cases.append(("nan", name, lambda f, c=name: f.assign(**{c: np.nan}), not contract["accepts_missing"]))
        if kind == "numeric" and feat.get("min") is not None:
            span = max(feat["max"] - feat["min"], 1.0)
            cases.append(
                ("far_out_of_range", name, lambda f, c=name, v=feat["max"] + 100 * span: f.assign(**{c: v}), False)
            )
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
    out = []
    for case, feature, mutate, may_raise in cases:
        entry: dict[str, Any] = {"case": case, "feature": feature}
        try:
            problems = _validity(estimator, mutate(rows.copy()), manifest, None)
        except Exception as exc:
            entry.update(
                outcome="raised", error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
            )
            entry["verdict"] = PASS if may_raise else FAIL
        else:
            entry.update(outcome="invalid_output" if problems else "valid_output", problems=problems)
            # Far out of range and wrong dtype only need *valid* output when the model answers at all.
            entry["verdict"] = FAIL if problems else PASS
        out.append(entry)
    return out


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
    "smoke_test": ("code quality", "every smoke-test step passes"),
    "monitoring_ready": ("monitoring readiness", "reference profile and reference predictions stored"),
    "rollback_ready": ("rollback readiness", "a previous production version exists, verifies and loads"),
}

DEFAULT_POLICY: dict[str, Any] = {
    "required": [i for i in ITEMS if i != "rollback_ready"],
    "advisory": ["rollback_ready"],
    "budgets": {"latency_p99_ms": 50.0, "artifact_mb": 500.0},
    "baseline": {"rule": "not_worse", "margin": 0.01, "metric": None, "alias": "production"},
}


def load_policy(path: Path | None) -> dict[str, Any]:
    """The default policy, overridden by a TOML file ([items] required/advisory, [budgets], [baseline])."""
    policy: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in DEFAULT_POLICY.items()}
    if path is None:
        return policy
    if not path.is_file():
        raise InputError(f"{path}: no such policy file", "check the path")
    try:
        loaded = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UnreadableFile(f"{path}: not valid TOML ({exc})", "fix the policy file") from exc
    items = loaded.get("items", {})
    named = list(items.get("required", [])) + list(items.get("advisory", []))
    unknown = sorted(set(named) - set(ITEMS))
    if unknown:
        raise InputError(f"{path}: unknown checklist items {unknown}", f"known items: {', '.join(ITEMS)}")
    if "required" in items:
        policy["required"] = list(items["required"])
        policy["advisory"] = [i for i in ITEMS if i not in policy["required"]]
    if "advisory" in items:
        policy["advisory"] = list(items["advisory"])
        policy["required"] = [i for i in ITEMS if i not in policy["advisory"]]
    for section in ("budgets", "baseline"):
        extra = sorted(set(loaded.get(section, {})) - set(DEFAULT_POLICY[section]))
        if extra:
            raise InputError(
                f"{path}: unknown [{section}] keys {extra}", f"known: {', '.join(DEFAULT_POLICY[section])}"
            )
        policy[section].update(loaded.get(section, {}))
    if policy["baseline"]["rule"] not in ("not_worse", "better"):
        raise InputError(f"{path}: baseline rule must be 'not_worse' or 'better'", "fix the policy file")
    numbers = {f"budgets.{k}": v for k, v in policy["budgets"].items()} | {
        "baseline.margin": policy["baseline"]["margin"]
    }
    for key, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise InputError(f"{path}: {key} must be a number >= 0, got {value!r}", "fix the policy file")
    for key in ("metric", "alias"):
        if policy["baseline"][key] is not None and not isinstance(policy["baseline"][key], str):
            raise InputError(f"{path}: baseline.{key} must be text", "fix the policy file")
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
    rules = policy if isinstance(policy, dict) else load_policy(policy)
    budgets = rules["budgets"]
    version = ref if isinstance(ref, Version) else registry.resolve(ref)
    manifest = version.manifest
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

    with item("test_metrics") as e:
        em = manifest.get("eval_metrics") or {}
        e["evidence"] = {"metrics": sorted(k for k in em if "[" not in k), "eval_data": manifest.get("eval_data")}
        e["status"] = PASS if em and all("ci_low" in v for v in em.values()) else FAIL
    with item("baseline_comparison") as e:
        _baseline(registry, version, baseline, eval_data, rules["baseline"], e)
    with item("per_class_metrics") as e:
        if manifest["task"] != "classifier":
            e["status"], e["evidence"] = SKIP, {"reason": "not a classifier"}
        else:
            em = manifest.get("eval_metrics") or {}
            wanted = [f"{m}[{c}]" for c in manifest["classes"] for m in ("precision", "recall", "f1")]
            e["evidence"] = {k: em[k]["value"] for k in wanted if k in em}
            e["status"] = PASS if all(k in em for k in wanted) else FAIL
    _from_smoke(
        item("edge_cases"),
        smoke_steps.get("edge_cases"),
        lambda s: {"failing": [c for c in s["evidence"].get("cases", []) if c["verdict"] == FAIL]},
    )
    with item("artifact_size") as e:
        size_mb = manifest["files"]["model.joblib"]["bytes"] / 1e6
        e["evidence"] = {"artifact_mb": round(size_mb, 3), "budget_mb": budgets["artifact_mb"]}
        e["status"] = PASS if size_mb <= budgets["artifact_mb"] else FAIL
    _from_smoke(
        item("latency"),
        smoke_steps.get("latency"),
        lambda s: {k: s["evidence"].get(k) for k in ("p50_ms", "p99_ms", "max_latency_ms", "batch_rows_per_s")},
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
    _from_smoke(item("serialization"), smoke_steps.get("serialization"), lambda s: s["evidence"])
    with item("reproducibility") as e:
        determinism = smoke_steps.get("determinism")
        lineage = {
            "training_data": bool(manifest.get("training_data")),
            "git": bool((manifest.get("lineage") or {}).get("git")),
        }
        e["evidence"] = {"deterministic": determinism and determinism["status"] == PASS, **lineage}
        e["status"] = PASS if determinism and determinism["status"] == PASS and lineage["training_data"] else FAIL
    with item("library_versions") as e:
        load = smoke_steps.get("load")
        differs = load["evidence"]["library_differences"] if load else None
        e["evidence"] = {"recorded": manifest["libraries"], "differences": differs}
        e["status"] = PASS if differs == {} else FAIL
    with item("smoke_test") as e:
        e["evidence"] = {"failed_steps": smoke.results["failed"] if smoke else None}
        e["status"] = (PASS if smoke.passed else FAIL) if smoke else FAIL
    with item("monitoring_ready") as e:
        e["evidence"] = {"profile": PROFILE in manifest["files"], "sample_with_predictions": has_sample}
        e["status"] = PASS if PROFILE in manifest["files"] and has_sample else FAIL
    with item("rollback_ready") as e:
        _rollback_ready(registry, version, rules["baseline"]["alias"], e)

    for entry in items.entries:
        if entry["status"] == FAIL and not entry["required"]:
            entry["status"] = WARN  # advisory items never fail the checklist
    failed = [i["id"] for i in items.entries if i["status"] == FAIL]
    return Report(
        "checklist",
        results={"items": items.entries, "failed": failed, "policy": rules},
        passed=not failed,
        model=version.summary(),
        inputs=[io.fingerprint(eval_data)] if eval_data else [],
    )


def _from_smoke(context: Any, step: dict[str, Any] | None, evidence: Callable[[dict[str, Any]], Any]) -> None:
    with context as e:
        if step is None:
            e["status"], e["evidence"] = FAIL, {"reason": "smoke test not run: no reference sample and no --eval-data"}
        else:
            e["status"], e["evidence"] = step["status"], evidence(step)


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
    metric = abtest.metric_name(rule["metric"], version.manifest["task"])
    margin = float(rule["margin"])
    if eval_data is not None:
        frame = io.read_table(eval_data)
        result = abtest.compare_models(
            registry, base, version, frame, version.manifest.get("target"), metric=metric
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
        stack = alias_stack(registry.events(version.name), alias)
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
