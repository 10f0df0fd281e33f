"""`checklist`: is this version ready to ship? Every item of the pre-deployment checklist, judged automatically
wherever a machine can judge it, with its evidence (the smoke test's steps judge several).

The report's `passed` is False (exit 1) when a required item fails; a failing advisory item is a warning.
Registry and input errors raise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli import comparison, io, metrics
from mlops_cli.errors import EmptyInput, InputError, MlopsError, ModelNotFound
from mlops_cli.gates import smoke as smoke_lib
from mlops_cli.gates._steps import FAIL, PASS, SKIP, WARN, Steps
from mlops_cli.gates.policy import ITEMS, OWN_ITEM, load_policy
from mlops_cli.registry import PROFILE, SAMPLE, Registry, Version
from mlops_cli.report import Report
from mlops_cli.runtime import LoadedModel, LoadOptions

if TYPE_CHECKING:
    import pandas as pd


def checklist(
    registry: Registry,
    ref: str | Version,
    *,
    baseline: str | None = None,
    eval_data: Path | None = None,
    policy: Path | dict[str, Any] | None = None,
    load: LoadOptions | None = None,
    iterations: int = smoke_lib.ITERATIONS,
) -> Report:
    """The pre-deployment checklist, judged automatically wherever a machine can judge it. The smoke steps and the
    fallback's load use the runtime that will serve (`load.runtime`)."""
    rules = policy if isinstance(policy, dict) else load_policy(policy)
    budgets = rules["budgets"]
    version = ref if isinstance(ref, Version) else registry.resolve(ref)
    manifest = version.manifest
    # Everything a user can get wrong is checked before the smoke test's seconds to minutes.
    try:
        metric = metrics.metric_name(rules["baseline"]["metric"], manifest["task"])
    except InputError as exc:
        raise InputError(f"the policy's baseline.metric: {exc.message}", exc.hint) from exc
    if baseline is not None:
        registry.resolve(baseline)  # exit 4 now, not after the smoke test
    eval_frame = None
    if eval_data is not None:
        eval_frame = io.read_table(eval_data)  # missing, unreadable, empty: exit 3
        if eval_frame.empty:
            raise EmptyInput(f"{eval_data}: no rows", "pass labelled rows with --eval-data")
    items = Steps()

    def item(item_id: str) -> Any:
        section, what = ITEMS[item_id]
        return items.step(item_id, section=section, check=what, required=item_id in rules["required"])

    has_sample = SAMPLE in manifest["files"]
    smoke = (
        smoke_lib.smoke_test(
            registry,
            version,
            max_latency_ms=budgets["latency_p99_ms"],
            load=load,
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
        _baseline(registry, version, baseline, eval_data, eval_frame, metric, rules["baseline"], e, load)
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
            if k
            in (
                "p50_ms",
                "p99_ms",
                "median_round_p99_ms",
                "round_p99_ms",
                "stalled_rounds",
                "threads",
                "max_latency_ms",
                "batch_rows_per_s",
                "error",
            )
        },
    )
    with item("onnx_agreement") as e:
        _onnx_agreement(version, budgets, e)
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
        loaded = smoke_steps.get("load")
        differs = loaded["evidence"].get("library_differences") if loaded else None
        e["evidence"] = {"recorded": manifest["libraries"], "differences": differs}
        if differs is None:
            e["evidence"]["reason"] = "smoke test did not load the model" if loaded else "smoke test not run"
        e["status"] = PASS if differs == {} else FAIL
    with item("smoke_test") as e:
        judged = [s for s in smoke_lib.STEPS if s not in OWN_ITEM]
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
        _rollback_ready(registry, version, rules["baseline"]["alias"], e, load)

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
        model=smoke.model if smoke is not None and smoke.model else version.summary(),  # names the runtime
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
    load: LoadOptions | None,
) -> None:
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
        result = comparison.compare_models(
            registry, base, version, eval_frame, version.manifest.get("target"), metric=metric, load=load
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
        improvement = (ours["value"] - theirs["value"]) * (1 if metrics.higher_is_better(metric) else -1)
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


def _onnx_agreement(version: Version, budgets: dict[str, Any], entry: dict[str, Any]) -> None:
    """What registration measured when it converted the model, against the policy's tolerance (the file itself is
    hash-verified when loaded)."""
    block = (version.manifest.get("formats") or {}).get("onnx")
    if block is None or not block["stored"]:
        why = block["reason"] if block else "not asked for at registration (--formats onnx)"
        entry["status"], entry["evidence"] = SKIP, {"reason": f"no ONNX file: {why}; the sklearn runtime serves"}
        return
    agreement = block["agreement"]
    labels = agreement["label_agreement"]
    entry["evidence"] = {
        **agreement,
        "max_abs_difference_allowed": budgets["onnx_max_abs_difference"],
        "label_agreement_required": budgets["onnx_label_agreement"],
    }
    ok = agreement["max_abs_difference"] <= budgets["onnx_max_abs_difference"] and (
        labels is None or labels >= budgets["onnx_label_agreement"]
    )
    entry["status"] = PASS if ok else FAIL


def _rollback_ready(
    registry: Registry, version: Version, alias: str, entry: dict[str, Any], load: LoadOptions | None
) -> None:
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
        LoadedModel.load(registry, target, load)  # verifies the hashes, then loads what would serve
    except MlopsError as exc:  # a broken fallback is this item's finding, not an error of the checklist
        entry["status"], entry["evidence"] = FAIL, {"previous": previous, "error": exc.one_line()}
        return
    entry["evidence"] = {"previous": target.ref, "verified": True, "loads": True}
