"""Retrain when a trigger fires, promote only a proven winner, roll back on failure.

One run is a job with a record in the registry (`<registry>/<name>/jobs/<id>.json`), rewritten atomically at
every phase, so a crashed or killed run shows as such and never as a success:

    triggers ─▶ split (out of time) ─▶ train ─▶ register challenger ─▶ paired comparison on the holdout
      ─▶ guardrails ─▶ smoke-test + checklist ─▶ move the alias ─▶ verify through the alias (else roll back)

It builds on the other commands' library functions instead of repeating them: `drift.drift_for_model` for the
drift trigger, `comparison.compare_models` for the gate, `gates.checklist` (smoke test included) before promotion.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlops_cli import io
from mlops_cli.errors import AliasMoved, InputError, LockTimeout, RegistryError, SchemaMismatch
from mlops_cli.liveness import process_alive
from mlops_cli.register import RegisterOptions, register
from mlops_cli.registry import Registry, Version
from mlops_cli.report import Report, utc_now
from mlops_cli.runtime import LoadedModel, LoadOptions
from mlops_cli.runtime.formats import FormatOptions

TRIGGERS = ("auto", "drift", "performance", "schedule", "manual")
RUN_LOCK = ".retrain.lock"  # held for a whole run: two runs of one model would both promote


class TrainingFailed(InputError):
    """The training function raised or returned something that cannot predict."""


@dataclass
class RetrainOptions:
    data: Path
    target: str
    champion_alias: str = "production"
    trigger: str = "auto"
    reason: str | None = None
    check_only: bool = False
    time_column: str | None = None
    holdout_fraction: float = 0.2
    holdout: Path | None = None
    include_reference: bool = False
    window_days: int | None = None
    train_fn: str | None = None
    metric: str | None = None
    min_improvement: float = 0.0
    max_age_days: float | None = None
    max_drop: float = 0.0
    max_recall_drop: float = 0.10
    max_latency_ratio: float = 2.0
    alpha: float = 0.05
    promote: bool = True
    policy: Path | None = None
    n_boot: int = 1000
    seed: int = 0
    load: LoadOptions = LoadOptions()  # --runtime, --strict, --no-pickle


# --- the job record ------------------------------------------------------------------------------------------


@dataclass
class Job:
    """What one retrain run did, kept in the registry. `status` is final only when `finished_at` is set."""

    id: str
    name: str
    started_at: str
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    status: str = "running"
    phase: str = "starting"
    options: dict[str, Any] = field(default_factory=dict)
    triggers: dict[str, Any] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)
    champion: dict[str, Any] | None = None
    challenger: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    guardrails: dict[str, Any] | None = None
    gates: dict[str, Any] = field(default_factory=dict)
    decision: str | None = None
    error: str | None = None
    finished_at: str | None = None
    recovered: bool = False  # an unfinished promotion of this job was undone (by itself or a later run)


def jobs_dir(registry: Registry, name: str) -> Path:
    return registry.root / name / "jobs"


def _save(registry: Registry, job: Job) -> None:
    path = jobs_dir(registry, job.name)
    path.mkdir(parents=True, exist_ok=True)
    io.write_json(path / f"{job.id}.json", asdict(job))


def history(registry: Registry, name: str) -> list[dict[str, Any]]:
    """Every job record of `name`, oldest first; a run whose process is gone without finishing shows as killed."""
    import json

    registry.versions(name)  # ModelNotFound for an unknown name
    records = []
    for path in sorted(jobs_dir(registry, name).glob("*.json")):
        with contextlib.suppress(ValueError, OSError):
            records.append(json.loads(path.read_text()))
    for record in records:
        if record["finished_at"] is None and not process_alive(record.get("host"), record["pid"]):
            record["status"] = "killed"
    return sorted(records, key=lambda r: r["started_at"])


def _undo_promotion(registry: Registry, name: str, alias: str, promoted: str | None, *, reason: str) -> bool:
    """Roll `alias` back if it points at `promoted`; True if it did."""
    if promoted is None or registry.aliases(name).get(alias) != promoted:
        return False
    registry.rollback(name, alias, reason=reason)
    return True


def _moved_by(registry: Registry, name: str, alias: str, job_id: str) -> bool:
    """Whether the alias's last move was this job's promotion (and not, say, an operator's since)."""
    moves = [e for e in registry.events(name) if e.get("alias") == alias]
    return bool(moves) and moves[-1]["event"] == "alias_moved" and job_id in str(moves[-1].get("reason") or "")


def _recover_unfinished_promotions(registry: Registry, name: str, alias: str) -> list[str]:
    """A run that died (killed, or failed before it could roll back) while moving the alias or checking the moved
    alias left an unproven model live: put the old one back, once, and only if nobody has moved the alias since.
    Called under the run lock, so a record without an end belongs to a run that is gone, whatever its pid says."""
    messages = []
    for record in history(registry, name):
        ended_badly = record["finished_at"] is None or record["status"] == "failed"
        unfinished = ended_badly and record["phase"] in ("promoting", "verifying")
        if not unfinished or record.get("recovered"):
            continue
        promoted = (record.get("challenger") or {}).get("version")
        try:
            if _moved_by(registry, name, alias, record["id"]) and _undo_promotion(
                registry, name, alias, promoted, reason=f"retrain job {record['id']} did not finish"
            ):
                messages.append(f"rolled {name}@{alias} back: job {record['id']} died after promoting {promoted}")
        except RegistryError as exc:  # reported once; it must not block every later run
            messages.append(f"could not roll back job {record['id']}'s promotion of {promoted}: {exc.one_line()}")
        record["recovered"] = True
        io.write_json(jobs_dir(registry, name) / f"{record['id']}.json", record)
    return messages


# --- triggers ------------------------------------------------------------------------------------------------


def _metric_key(metric: str | None, task: str) -> str:
    from mlops_cli.metrics import metric_name

    return metric_name(metric, task)


def _evaluate_triggers(
    registry: Registry, champion: Version, model: LoadedModel, frame: Any, options: RetrainOptions
) -> dict[str, dict[str, Any]]:
    wanted = {"auto": ("performance", "drift", "schedule")}.get(options.trigger, (options.trigger,))
    out: dict[str, dict[str, Any]] = {}
    for trigger in ("performance", "drift", "schedule", "manual"):
        if trigger not in wanted:
            out[trigger] = {"evaluated": False, "fired": False}
            continue
        out[trigger] = {"evaluated": True, **_TRIGGERS[trigger](registry, champion, model, frame, options)}
    return out


def _performance(
    registry: Registry, champion: Version, model: LoadedModel, frame: Any, options: RetrainOptions
) -> dict[str, Any]:
    from mlops_cli import metrics

    key = _metric_key(options.metric, champion.manifest["task"])
    recorded = ((champion.manifest.get("eval_metrics") or {}).get(key) or {}).get("value")
    if recorded is None:
        return {"fired": False, "detail": f"{champion.ref} has no recorded eval {key}; register with --eval-data"}
    scorer = _scorer(model, frame, options.target)
    now = metrics.evaluate(scorer, n_boot=options.n_boot, seed=options.seed)[key]
    # Fire only when the whole CI lies beyond the allowed drop: noise alone does not retrain.
    if metrics.higher_is_better(key):
        fired = now["ci_high"] < recorded - options.max_drop
    else:
        fired = now["ci_low"] > recorded + options.max_drop
    return {
        "fired": bool(fired),
        "metric": key,
        "recorded": recorded,
        "current": now["value"],
        "ci_low": now["ci_low"],
        "ci_high": now["ci_high"],
        "max_drop": options.max_drop,
        "rows": scorer.n,
    }


def _drift(registry: Registry, champion: Version, model: LoadedModel, frame: Any, options: RetrainOptions) -> dict:
    from mlops_cli import drift

    options_ = drift.DriftOptions(load=options.load)
    summary = drift.drift_for_model(registry, champion, frame[model.spec.feature_names], options=options_)
    summary = summary.results["summary"]
    return {
        "fired": summary["verdict"] == "drift",
        "verdict": summary["verdict"],
        "drifted_share": summary.get("drifted_share"),
        "weighted_drifted_share": summary.get("weighted_drifted_share"),
    }


def _schedule(registry: Registry, champion: Version, model: LoadedModel, frame: Any, options: RetrainOptions) -> dict:
    created = dt.datetime.fromisoformat(champion.manifest["created_at"].replace("Z", "+00:00"))
    age_days = (dt.datetime.now(dt.UTC) - created).total_seconds() / 86400
    if options.max_age_days is None:
        return {"fired": False, "age_days": age_days, "detail": "no --max-age-days given"}
    return {"fired": age_days > options.max_age_days, "age_days": age_days, "max_age_days": options.max_age_days}


def _manual(registry: Registry, champion: Version, model: LoadedModel, frame: Any, options: RetrainOptions) -> dict:
    return {"fired": True, "reason": options.reason}


_TRIGGERS: dict[str, Callable[..., dict[str, Any]]] = {
    "performance": _performance,
    "drift": _drift,
    "schedule": _schedule,
    "manual": _manual,
}


# --- data ----------------------------------------------------------------------------------------------------


def _labelled(frame: Any, target: str, where: Path) -> Any:
    if target not in frame.columns:
        raise SchemaMismatch(f"{where}: no target column {target!r}", "pass --target with the label column")
    labelled = frame[frame[target].notna()]
    if labelled.empty:
        raise SchemaMismatch(f"{where}: every {target!r} value is missing", "retraining needs labelled rows")
    return labelled


def _split(frame: Any, options: RetrainOptions, data_sha256: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Out-of-time split: the latest --holdout-fraction by --time-column, or --holdout. Never train on the holdout.
    `data_sha256` is --data's hash, when the caller has it (saves reading the file again)."""
    import pandas as pd

    if options.holdout is not None:
        holdout = _labelled(io.read_table(options.holdout), options.target, options.holdout)
        info: dict[str, Any] = {"holdout": io.fingerprint(options.holdout, rows=len(holdout))}
        train = frame
    else:
        column = options.time_column
        times = _times(frame, column, options.data)
        cutoff = times.quantile(1 - options.holdout_fraction)
        train, holdout = frame[times < cutoff], frame[times >= cutoff]
        info = {"time_column": column, "cutoff": str(cutoff), "holdout_fraction": options.holdout_fraction}
    if options.holdout is not None:
        # Never train on the holdout: not the same file, and with a time column nothing from its period on.
        data_sha256 = data_sha256 or io.fingerprint(options.data)["sha256"]
        if info["holdout"]["sha256"] == data_sha256:
            raise SchemaMismatch(
                f"--holdout {options.holdout} is the --data file", "hold out rows the model will not train on"
            )
        if options.time_column is not None and options.time_column in holdout.columns:
            start = _times(holdout, options.time_column, options.holdout).min()
            late = (_times(train, options.time_column, options.data) >= start).to_numpy()
            info["train_rows_from_holdout_period_dropped"] = int(late.sum())
            train = train[~late]
    if options.window_days is not None:
        if options.time_column is None:
            raise SchemaMismatch("--window-days needs --time-column", "name the time column")
        times = _times(train, options.time_column, options.data)
        start = times.max() - pd.Timedelta(days=options.window_days)
        train = train[times >= start]
        info["window_start"] = str(start)
    if train.empty or holdout.empty:
        raise SchemaMismatch(
            f"the split left {len(train)} training and {len(holdout)} holdout rows",
            "pass more data, or change --holdout-fraction / --window-days",
        )
    return train, holdout, {**info, "train_rows": len(train), "holdout_rows": len(holdout)}


def _times(frame: Any, column: str | None, where: Path) -> Any:
    """The time column as datetimes; exit 3 (not a crash) for a column that holds no times."""
    import warnings

    import pandas as pd

    if column not in frame.columns:
        raise SchemaMismatch(f"{where}: no time column {column!r}", "pass --time-column or --holdout")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pandas' "could not infer format": the error says it
            return pd.to_datetime(frame[column])
    except (ValueError, TypeError, OverflowError) as exc:
        raise SchemaMismatch(
            f"{where}: --time-column {column!r} does not hold dates or times ({str(exc).splitlines()[0][:120]})",
            "name a date or timestamp column",
        ) from exc


def _scorer(model: LoadedModel, frame: Any, target: str) -> Any:
    from mlops_cli.runtime import labelled

    return labelled.scorer(model, frame, target, where=f"the labelled rows ({model.ref})")


# --- training ------------------------------------------------------------------------------------------------


def load_train_fn(spec: str) -> Callable[[Any, str], Any]:
    """`package.module:function`, imported with the working directory on sys.path (like `python -m`)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise TrainingFailed(
            f"--train-fn {spec!r} is not of the form package.module:function", "e.g. --train-fn mypkg.training:fit"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        fn = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise TrainingFailed(f"cannot import --train-fn {spec!r} ({exc})", "check the module path") from exc
    if not callable(fn):
        raise TrainingFailed(f"--train-fn {spec!r} is not callable", "point at a function")
    return fn


def _train(champion_estimator: Any, train: Any, features: list[str], options: RetrainOptions) -> Any:
    from sklearn.base import clone

    from mlops_cli.runtime.labelled import align_labels

    # Labels read from files may be floats (a nullable column); the champion's classes are the truth.
    classes = getattr(champion_estimator, "classes_", None)
    y = align_labels(
        train[options.target].to_numpy(),
        [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else None,
    )
    if options.train_fn:
        fn = load_train_fn(options.train_fn)
        try:
            estimator = fn(train[features].assign(**{options.target: y}), options.target)
        except Exception as exc:  # the user's code: any failure is a failed training, reported in one line
            raise TrainingFailed(
                f"--train-fn {options.train_fn} raised {type(exc).__name__}: {exc}",
                "fix the training function; the registry was not changed",
            ) from exc
        if not hasattr(estimator, "predict"):
            raise TrainingFailed(
                f"--train-fn {options.train_fn} returned {type(estimator).__name__}, not an estimator",
                "return the fitted estimator",
            )
        return estimator
    try:
        return clone(champion_estimator).fit(train[features], y)
    except Exception as exc:
        raise TrainingFailed(
            f"refitting the champion's estimator failed ({type(exc).__name__}: {exc})",
            "use --train-fn for a custom pipeline",
        ) from exc


def _same_job(champion: Version, estimator: Any, options: RetrainOptions) -> None:
    """A challenger must do the champion's job (task, classes); found out before it is registered, not after."""
    from mlops_cli.runtime.artifacts import describe

    try:
        info = describe(estimator)
    except Exception as exc:
        raise TrainingFailed(f"the trained model cannot be inspected ({exc})", "return a fitted estimator") from exc
    task, classes = champion.manifest["task"], champion.manifest.get("classes") or []
    if info["task"] != task or sorted(map(str, info.get("classes") or [])) != sorted(map(str, classes)):
        what = options.train_fn or "the refitted clone"
        raise TrainingFailed(
            f"{what} gave a {info['task']} predicting {info.get('classes')}, but {champion.ref} is a {task} "
            f"predicting {classes}",
            "train on the same target and labels; the registry was not changed",
        )


# --- the run -------------------------------------------------------------------------------------------------


def _champion_formats(champion: Version) -> FormatOptions:
    """The challenger is stored in the formats the champion was, with the types its skops file was trusted with."""
    stored = {n: b for n, b in (champion.manifest.get("formats") or {}).items() if b["stored"]}
    return FormatOptions(tuple(stored), tuple(stored.get("skops", {}).get("trusted_types", ())))


def _after_promotion(
    registry: Registry, name: str, alias: str, expected: Version, holdout: Any, load: LoadOptions
) -> None:
    """Check the live alias end to end: it resolves to the challenger, verifies, loads and predicts, on the runtime
    that serves it."""
    live = LoadedModel.load(registry, f"{name}@{alias}", load)
    if live.spec.version != expected.version:
        raise RuntimeError(f"{name}@{alias} points at {live.spec.version}, expected {expected.version}")
    live.score(holdout.head(100)).require_all("the holdout")


@contextlib.contextmanager
def _temporary_tables(**frames: Any) -> Iterator[dict[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="mlops-retrain-") as tmp:
        paths = {}
        for key, frame in frames.items():
            paths[key] = Path(tmp) / f"{key}.parquet"
            io.write_table(paths[key], frame.reset_index(drop=True))
        yield paths


def retrain(registry: Registry, name: str, options: RetrainOptions) -> Report:
    """One retraining job for `name`. Raises MlopsError for errors; the Report's verdict covers the rest."""
    if options.trigger not in TRIGGERS:
        raise InputError(f"unknown trigger {options.trigger!r}", f"use one of {', '.join(TRIGGERS)}")
    from mlops_cli import comparison, gates

    gates.load_policy(options.policy)  # a bad policy is an error now, not after an hour of training
    # and so is a negative --min-improvement (the comparison after training would refuse it)
    comparison.check_thresholds(min_improvement=options.min_improvement, alpha=options.alpha)
    if options.train_fn:
        load_train_fn(options.train_fn)  # and so is a --train-fn that does not import
    registry.resolve(f"{name}@{options.champion_alias}")  # ModelNotFound before the lock creates any folder
    if options.check_only:  # read-only: no lock, no recovery, so a monitoring check never waits or moves an alias
        return _job(registry, name, options)
    with _one_run_at_a_time(registry, name):
        return _job(registry, name, options)


@contextlib.contextmanager
def _one_run_at_a_time(registry: Registry, name: str) -> Iterator[None]:
    """Two runs of one model (a cron run and a manual one) would both compare against the same champion and both
    promote: the second waits for nothing and is refused (exit 4)."""
    entered = False
    try:
        with registry.lock(name, timeout=0, file=RUN_LOCK):
            entered = True
            yield
    except LockTimeout as exc:
        if entered:
            raise  # a lock inside the run, not this one
        raise LockTimeout(
            f"another retrain of {name} is running", f"wait for it; see: mlops retrain history {name}"
        ) from exc


def _job(registry: Registry, name: str, options: RetrainOptions) -> Report:
    # Recovery comes first: it may move the champion alias back, and the champion is whatever it then names.
    messages = [] if options.check_only else _recover_unfinished_promotions(registry, name, options.champion_alias)
    champion = registry.resolve(f"{name}@{options.champion_alias}")
    job = Job(
        id=f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        name=name,
        started_at=utc_now(),
        options={k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    )
    report = Report("retrain", model=champion.summary(), messages=messages)
    _save(registry, job)
    try:
        _run(registry, champion, job, options, report)
        job.status = job.decision or "done"
    except BaseException as exc:
        job.status = "failed"
        job.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        job.finished_at = utc_now()
        _save(registry, job)
        report.results = {"job": asdict(job)}
    return report


def _run(registry: Registry, champion: Version, job: Job, options: RetrainOptions, report: Report) -> None:
    from mlops_cli import gates
    from mlops_cli.comparison import compare_models

    started = time.perf_counter()
    # Training needs the champion's scikit-learn estimator; its answers come from the runtime that serves it.
    trainable = LoadedModel.load(registry, champion, replace(options.load, runtime="sklearn"))
    serving = trainable if options.load.runtime == "sklearn" else LoadedModel.load(registry, champion, options.load)
    estimator = trainable.estimator
    job.champion = {"version": champion.version, "sha256": champion.summary()["sha256"]}
    frame = _labelled(io.read_table(options.data), options.target, options.data)
    source = io.fingerprint(options.data, rows=len(frame))  # hashed once: the report, the split check, the lineage
    report.inputs.append(source)
    features = serving.spec.require_features(frame.columns, where=str(options.data))

    job.phase = "triggers"
    job.triggers = _evaluate_triggers(registry, champion, serving, frame, options)
    job.fired = [t for t, r in job.triggers.items() if r["fired"]]
    _save(registry, job)
    if not job.fired or options.check_only:
        job.decision = "no_trigger" if not job.fired else "check_only"
        return

    job.phase = "training"
    train, holdout, split = _split(frame, options, source["sha256"])
    if options.include_reference:
        import pandas as pd

        reference = io.read_table(champion.file("sample.parquet"))
        reference = reference[reference[options.target].notna()]
        train = pd.concat(
            [reference[features + [options.target]], train[features + [options.target]]], ignore_index=True
        )
        split["reference_rows"] = len(reference)
    _save(registry, job)
    challenger_estimator = _train(estimator, train, features, options)
    _same_job(champion, challenger_estimator, options)

    job.phase = "registering"
    key = _metric_key(options.metric, champion.manifest["task"])
    holdout_metrics = {
        "champion": _scorer(serving, holdout, options.target).compute(),
        "challenger": _scorer(LoadedModel.of(challenger_estimator, serving.spec), holdout, options.target).compute(),
    }
    import joblib

    with _temporary_tables(
        train=train[features + [options.target]], holdout=holdout[features + [options.target]]
    ) as paths:
        artifact = paths["train"].parent / "challenger.joblib"
        joblib.dump(challenger_estimator, artifact)
        challenger, _ = register(
            registry,
            artifact,
            champion.name,
            RegisterOptions(
                train_data=paths["train"],
                target=options.target,
                eval_data=paths["holdout"],
                description=f"retrained from {champion.ref} ({', '.join(job.fired)})",
                alias="challenger",
                allow_duplicate=True,
                accepts_missing=champion.manifest["input_contract"]["accepts_missing"],
                accepts_unseen=champion.manifest["input_contract"]["accepts_unseen"],
                formats=_champion_formats(champion),
                n_boot=options.n_boot,
                reason=f"retrain job {job.id}",
                train_data_label=f"{options.data} (training window of retrain job {job.id})",
                eval_data_label=f"{options.holdout or options.data} (holdout of retrain job {job.id})",
                lineage={
                    "parent": champion.ref,
                    "job": job.id,
                    "trigger": job.fired,
                    "reason": options.reason,
                    "source_data": source,
                    "split": split,
                    "include_reference": options.include_reference,
                    "holdout_metrics": holdout_metrics,
                },
            ),
        )
        job.challenger = {"version": challenger.version, "sha256": challenger.summary()["sha256"], "split": split}
        _save(registry, job)

        job.phase = "comparing"
        comparison = compare_models(
            registry,
            champion,
            challenger,
            holdout,
            options.target,
            metric=key,
            min_improvement=options.min_improvement,
            alpha=options.alpha,
            n_boot=options.n_boot,
            seed=options.seed,
            load=options.load,
        ).results
        job.comparison = {
            **{
                k: comparison.get(k)
                for k in ("verdict", "challenger_wins", "metric", "difference", "ci_low", "ci_high", "p_value")
            },
            "holdout_metrics": holdout_metrics,
        }
        job.guardrails = _guardrails(
            serving, LoadedModel.load(registry, challenger, options.load), holdout, comparison, options
        )
        _save(registry, job)
        if not comparison["challenger_wins"] or not job.guardrails["passed"]:
            job.decision = "rejected" if not comparison["challenger_wins"] else "rejected_by_guardrails"
            report.passed = False
            return
        if not options.promote:
            job.decision = "registered"
            return

        job.phase = "gates"
        # The checklist runs the smoke test as one of its items (with the policy's latency budget): one run of
        # each. An unattended promotion needs every smoke step to pass, also those a policy makes advisory through
        # their own items (latency, edge cases, serialization, determinism): the item lists every failed step.
        checklist = gates.checklist(
            registry,
            challenger.ref,
            baseline=champion.ref,
            eval_data=paths["holdout"],
            policy=options.policy,
            load=options.load,
        )
        smoke = next(i for i in checklist.results["items"] if i["id"] == "smoke_test")
        smoke_passed = smoke["status"] == "pass" and not smoke["evidence"].get("failed_steps")
        failed = list(checklist.results["failed"])
        if not smoke_passed and "smoke_test" not in failed:
            failed.append("smoke_test")
        job.gates = {
            "smoke_test": "pass" if smoke_passed else "fail",
            "checklist": checklist.envelope()["status"],
            "failed": failed,
        }
        _save(registry, job)
        if not smoke_passed or not checklist.passed:
            job.decision = "rejected_by_gates"
            report.passed = False
            return

    # Recorded before the alias moves, so a run that dies anywhere from here on is recovered by the next one.
    job.phase = "promoting"
    _save(registry, job)
    try:
        registry.promote(
            challenger.ref,
            options.champion_alias,
            reason=f"retrain job {job.id}: challenger won",
            expected=champion.version,  # compared against this champion: never replace another one
        )
        job.phase = "verifying"
        _save(registry, job)
        _after_promotion(registry, champion.name, options.champion_alias, challenger, holdout, options.load)
    except AliasMoved:
        raise  # nothing moved
    except BaseException as exc:
        rolled = _undo_promotion(
            registry,
            champion.name,
            options.champion_alias,
            challenger.version,
            reason=f"retrain job {job.id}: check after promotion failed ({type(exc).__name__})",
        )
        job.decision = "rolled_back" if rolled else "promotion_failed"
        job.recovered = True  # nothing for a later run to undo
        job.error = f"{type(exc).__name__}: {exc}"
        report.passed = False
        report.messages.append(f"promotion of {challenger.ref} {'rolled back' if rolled else 'not made'}: {job.error}")
        if not isinstance(exc, Exception):
            raise  # Ctrl-C / SIGTERM: alias restored, now stop
        return
    job.phase = "done"
    job.decision = "promoted"
    job.options["seconds"] = round(time.perf_counter() - started, 3)


def _guardrails(
    champion: LoadedModel,
    challenger: LoadedModel,
    holdout: Any,
    comparison: dict[str, Any],
    options: RetrainOptions,
) -> dict[str, Any]:
    """The challenger must not be worse where the primary metric does not look: per-class recall, p99 latency."""
    checks = []
    ours, theirs = comparison["challenger"]["metrics"], comparison["champion"]["metrics"]
    for key in sorted(k for k in theirs if k.startswith("recall[")):
        drop = theirs[key] - ours.get(key, 0.0)
        checks.append(
            {
                "id": key,
                "champion": theirs[key],
                "challenger": ours.get(key),
                "drop": drop,
                "passed": bool(drop <= options.max_recall_drop),
                "limit": options.max_recall_drop,
            }
        )
    from mlops_cli.runtime import latency

    timed = latency.interleaved({"champion": champion, "challenger": challenger}, holdout.head(200), calls=40)
    # Each model's median round p99 (a stall spoils one round, not the verdict). 5 ms of slack: on a busy machine
    # two sub-millisecond models differ by scheduling noise, not by design.
    p99 = {label: t["median_round_p99_ms"] for label, t in timed.items()}
    limit = options.max_latency_ratio * p99["champion"] + 5.0
    checks.append(
        {
            "id": "p99_latency_ms",
            **p99,
            "runtime": champion.runtime,
            "limit_ms": limit,
            "limit_ratio": options.max_latency_ratio,
            "passed": bool(p99["challenger"] <= limit),
        }
    )
    return {"passed": all(c["passed"] for c in checks), "checks": checks}
