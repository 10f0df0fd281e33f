"""`mlops retrain` on the sample data: triggers, out-of-time gate, promotion, rollback, job records."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CURRENT, REFERENCE, ROOT, register_args, run_mlops

from mlops_cli import io
from mlops_cli import retrain as retrain_lib
from mlops_cli.registry import Registry

# `mlops retrain flights` on the summer data, split out of time on `date` (200 resamples keep the tests quick).
RETRAIN_ON_CURRENT = (
    "retrain", "--bootstrap", "200", "flights", "--data", CURRENT, "--target", "delayed", "--time-column", "date"
)  # fmt: skip


@pytest.fixture
def champion(cli, model_file):
    """flights:1 = production, trained on Jan-Apr, evaluated on Jan-Apr data."""
    cli.json(*register_args(model_file, "--eval-data", REFERENCE, "--bootstrap", "200", "--alias", "production"))
    return Registry(cli.registry)


def _state(registry):
    return (
        sorted(v.version for v in registry.versions("flights")),
        registry.aliases("flights"),
        len(registry.events("flights")),
    )


def test_drifted_window_challenger_beats_champion_and_is_promoted(cli, champion, relaxed):
    report = cli.json(
        *RETRAIN_ON_CURRENT,
        "--reason",
        "summer",
        "--policy",
        relaxed,
    )
    job = report["results"]["job"]
    assert job["triggers"]["drift"]["fired"] and "drift" in job["fired"]
    assert job["decision"] == "promoted" and job["status"] == "promoted" and report["exit_code"] == 0
    assert job["comparison"]["challenger_wins"] and job["comparison"]["difference"] > 0
    assert job["gates"] == {"smoke_test": "pass", "checklist": "pass", "failed": []}
    aliases = champion.aliases("flights")
    assert aliases["production"] == aliases["challenger"] == job["challenger"]["version"] == "2"
    lineage = champion.resolve("flights:2").manifest["lineage"]
    assert lineage["parent"] == "flights:1" and lineage["trigger"] == job["fired"] and lineage["reason"] == "summer"
    assert lineage["source_data"]["sha256"] == io.fingerprint(CURRENT)["sha256"]
    assert set(lineage["holdout_metrics"]) == {"champion", "challenger"}
    split = lineage["split"]
    assert split["time_column"] == "date" and split["holdout_fraction"] == 0.2
    assert split["holdout_rows"] == champion.resolve("flights:2").manifest["eval_data"]["rows"]
    history = cli.json("retrain", "history", "flights")["results"]["jobs"]
    assert [j["status"] for j in history] == ["promoted"]


def test_out_of_time_split_never_trains_on_the_holdout(current_frame):
    labelled = current_frame[current_frame["delayed"].notna()]
    options = retrain_lib.RetrainOptions(data=CURRENT, target="delayed", time_column="date", holdout_fraction=0.2)
    train, holdout, info = retrain_lib._split(labelled, options)
    assert train["date"].max() < holdout["date"].min()
    assert len(train) + len(holdout) == len(labelled)
    assert 0.15 < len(holdout) / len(labelled) < 0.25


def test_no_drift_with_auto_trigger_does_nothing(cli, champion, tmp_path, reference_frame):
    before = _state(champion)
    half = tmp_path / "later-same-season.parquet"
    io.write_table(half, reference_frame.sample(frac=0.5, random_state=1))
    report = cli.json(
        "retrain", "--bootstrap", "200", "flights", "--data", half, "--target", "delayed", "--time-column", "date"
    )
    job = report["results"]["job"]
    assert job["fired"] == [] and job["decision"] == "no_trigger" and report["exit_code"] == 0
    assert not job["triggers"]["performance"]["fired"] and not job["triggers"]["drift"]["fired"]
    after = _state(champion)
    assert after[:2] == before[:2]


def test_check_only_evaluates_and_stops(cli, champion):
    report = cli.json(
        "retrain",
        "--bootstrap",
        "200",
        "flights",
        "--data",
        CURRENT,
        "--target",
        "delayed",
        "--check-only",
        "--trigger",
        "schedule",
        "--max-age-days",
        "0",
    )
    job = report["results"]["job"]
    assert job["fired"] == ["schedule"] and job["decision"] == "check_only"
    assert [v.version for v in champion.versions("flights")] == ["1"]


def test_a_bad_policy_fails_before_any_work_even_with_check_only(cli, champion, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("[items\n")
    result = cli("retrain", "flights", "--data", CURRENT, "--target", "delayed", "--check-only", "--policy", policy)
    assert result.exit_code == 3 and "not valid TOML" in result.stderr
    assert retrain_lib.history(champion, "flights") == []  # no job was started


@pytest.mark.parametrize("value", ["-0.01", "nan"])
def test_a_bad_min_improvement_fails_before_any_work(cli, champion, value):
    """The comparison would refuse it after the training (was exit 5, "a bug"): exit 3 before anything runs."""
    result = cli(*RETRAIN_ON_CURRENT, "--trigger", "manual", "--reason", "test", "--min-improvement", value)
    assert result.exit_code == 3 and "--min-improvement" in result.stderr and len(result.stderr.splitlines()) == 1
    assert retrain_lib.history(champion, "flights") == []  # no job was started
    assert [v.version for v in champion.versions("flights")] == ["1"]


def test_failing_train_function_leaves_registry_unchanged_but_a_failed_job(cli, champion):
    before = _state(champion)
    result = cli(
        *RETRAIN_ON_CURRENT,
        "--trigger",
        "manual",
        "--reason",
        "test",
        "--train-fn",
        "retrain_fns:explode",
    )
    assert result.exit_code == 3 and "the feature store is down" in result.stderr
    assert _state(champion) == before
    jobs = retrain_lib.history(champion, "flights")
    assert [j["status"] for j in jobs] == ["failed"] and "RuntimeError" in jobs[0]["error"]


def test_train_function_returning_no_model_is_refused(cli, champion):
    result = cli(
        *RETRAIN_ON_CURRENT,
        "--trigger",
        "manual",
        "--reason",
        "test",
        "--train-fn",
        "retrain_fns:not_a_model",
    )
    assert result.exit_code == 3 and "not an estimator" in result.stderr


def test_worse_challenger_is_registered_but_not_promoted(cli, champion):
    report = cli.json(
        *RETRAIN_ON_CURRENT,
        "--trigger",
        "manual",
        "--reason",
        "try a baseline",
        "--train-fn",
        "retrain_fns:prior_only",
        expect=1,
    )
    job = report["results"]["job"]
    assert job["decision"] == "rejected" and not job["comparison"]["challenger_wins"]
    aliases = champion.aliases("flights")
    assert aliases["production"] == "1" and aliases["challenger"] == "2"
    assert champion.resolve("flights:2").manifest["lineage"]["parent"] == "flights:1"


def test_every_smoke_step_must_pass_before_promotion_even_if_the_policy_makes_its_item_advisory(
    cli, champion, tmp_path
):
    # The checklist honours the policy (latency advisory: a warning, the checklist passes), but an unattended
    # promotion needs every smoke step to pass.
    policy = tmp_path / "policy.toml"
    policy.write_text('[items]\nadvisory = ["latency"]\n[budgets]\nlatency_p99_ms = 0.0001\n')
    report = cli.json(*RETRAIN_ON_CURRENT, "--policy", policy, expect=1)
    job = report["results"]["job"]
    assert job["decision"] == "rejected_by_gates"
    assert job["gates"] == {"smoke_test": "fail", "checklist": "pass", "failed": ["smoke_test"]}
    assert champion.aliases("flights")["production"] == "1"


def test_failure_after_promotion_rolls_the_alias_back(cli, champion, monkeypatch, relaxed):
    def broken_check(*args, **kwargs):
        raise RuntimeError("injected: the serving check failed")

    monkeypatch.setattr(retrain_lib, "_after_promotion", broken_check)
    report = cli.json(
        *RETRAIN_ON_CURRENT,
        "--policy",
        relaxed,
        expect=1,
    )
    job = report["results"]["job"]
    assert job["decision"] == "rolled_back" and "injected" in job["error"]
    assert champion.aliases("flights")["production"] == "1"
    events = [e["event"] for e in champion.events("flights")]
    assert events[-2:] == ["alias_moved", "rolled_back"]


def _dead_job(registry, phase, version, status_finished=None):
    """A job record of a process that no longer exists, left in `phase` after promoting `version`."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job_id = f"20260101T000000Z-{phase[:6]}"
    if registry.aliases("flights").get("production") != version:
        registry.promote(f"flights:{version}", "production", reason=f"retrain job {job_id}: challenger won")
    job = retrain_lib.Job(
        id=job_id,
        name="flights",
        started_at="2026-01-01T00:00:00Z",
        pid=dead.pid,
        phase=phase,
        challenger={"version": version},
    )
    if status_finished:  # a run that failed (not killed) before it could roll back
        job.status, job.finished_at = status_finished, "2026-01-01T00:01:00Z"
    retrain_lib._save(registry, job)


@pytest.mark.parametrize("phase, status", [("verifying", None), ("promoting", None), ("verifying", "failed")])
def test_an_unfinished_promotion_is_undone_before_the_next_run_picks_its_champion(
    cli, champion, other_model_file, phase, status
):
    cli.json("register", other_model_file, "--name", "flights")
    _dead_job(champion, phase, "2", status)  # it moved production to 2 and never confirmed it
    history = cli.json("retrain", "history", "flights")["results"]["jobs"]
    assert history[0]["status"] == (status or "killed")
    real_run = ("retrain", "--bootstrap", "200", "flights", "--data", REFERENCE, "--target", "delayed", "--trigger",
                "schedule", "--time-column", "date")  # fmt: skip
    report = cli.json(*real_run)
    assert champion.aliases("flights")["production"] == "1" and champion.events("flights")[-1]["event"] == "rolled_back"
    assert report["results"]["job"]["champion"]["version"] == "1"  # the restored champion, not the unproven one
    assert any("died after promoting 2" in m for m in report["messages"])
    # recovered once: a later run changes nothing
    cli.json(*real_run)
    assert champion.events("flights")[-1]["event"] == "rolled_back" and champion.aliases("flights")["production"] == "1"


def test_recovery_leaves_an_alias_that_someone_moved_since(cli, champion, other_model_file):
    cli.json("register", other_model_file, "--name", "flights")
    _dead_job(champion, "verifying", "2")
    champion.rollback("flights", "production", reason="operator: back to 1")
    champion.promote("flights:2", "production", reason="operator: 2 is fine after all")  # on purpose, by hand
    cli.json("retrain", "--bootstrap", "200", "flights", "--data", REFERENCE, "--target", "delayed", "--trigger",
             "schedule", "--time-column", "date")  # fmt: skip
    assert champion.aliases("flights")["production"] == "2"


def test_check_only_is_read_only(cli, champion, other_model_file):
    import fcntl

    cli.json("register", other_model_file, "--name", "flights")
    _dead_job(champion, "verifying", "2")
    fd = os.open(cli.registry / "flights" / retrain_lib.RUN_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a nightly run in progress does not block a monitoring check
    try:
        report = cli.json(
            "retrain", "flights", "--data", REFERENCE, "--target", "delayed", "--check-only", "--trigger", "schedule"
        )
    finally:
        os.close(fd)
    assert report["results"]["job"]["decision"] in ("no_trigger", "check_only")
    assert champion.aliases("flights")["production"] == "2"  # and it moves nothing: recovery is for real runs


def test_a_recovery_that_cannot_roll_back_does_not_block_later_runs(cli, champion):
    _dead_job(champion, "verifying", "1")
    # the dead job's move, logged, onto the only version there is: nothing earlier to roll back to
    champion.record_event(
        "flights",
        {"event": "alias_moved", "alias": "production", "from": "1", "to": "1", "reason": "retrain job "
         "20260101T000000Z-verify: challenger won"},
    )  # fmt: skip
    args = ("retrain", "--bootstrap", "200", "flights", "--data", REFERENCE, "--target", "delayed", "--trigger",
            "schedule", "--time-column", "date")  # fmt: skip
    first = cli.json(*args)
    assert any("could not roll back" in m for m in first["messages"])
    assert cli.json(*args)["exit_code"] == 0 and champion.aliases("flights")["production"] == "1"


def test_a_second_run_of_the_same_model_is_refused(cli, champion):
    import fcntl

    fd = os.open(cli.registry / "flights" / retrain_lib.RUN_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a run in progress
    try:
        result = cli(*RETRAIN_ON_CURRENT, "--trigger", "schedule")
        assert result.exit_code == 4 and "another retrain of flights is running" in result.stderr
    finally:
        os.close(fd)
    assert retrain_lib.history(champion, "flights") == []


def test_promotion_is_refused_when_the_champion_moved_meanwhile(champion, other_model_file, cli):
    from mlops_cli.errors import AliasMoved

    cli.json("register", other_model_file, "--name", "flights")
    with pytest.raises(AliasMoved):
        champion.promote("flights:2", "production", expected="7")
    assert champion.aliases("flights")["production"] == "1"
    champion.promote("flights:2", "production", expected="1")
    assert champion.aliases("flights")["production"] == "2"


def test_the_holdout_is_never_trained_on_even_when_it_is_the_data(cli, champion):
    result = cli(
        "retrain", "flights", "--data", CURRENT, "--holdout", CURRENT, "--target", "delayed",
        "--trigger", "manual", "--reason", "test", "--no-promote",
    )  # fmt: skip
    assert result.exit_code == 3 and "is the --data file" in result.stderr
    assert [v.version for v in champion.versions("flights")] == ["1"]


def test_a_train_function_gets_labels_as_the_champion_knows_them(cli, champion):
    report = cli.json(
        *RETRAIN_ON_CURRENT, "--trigger", "manual", "--reason", "test", "--train-fn", "retrain_fns:as_given", expect=1
    )
    assert report["results"]["job"]["decision"] == "rejected"  # registered and compared, not a crash
    assert champion.resolve("flights:2").manifest["classes"] == [0, 1]


def test_bad_options_and_columns(cli, champion):
    base = ("retrain", "flights", "--data", CURRENT, "--target", "delayed")
    assert cli(*base, "--time-column", "date", "--trigger", "manual").exit_code == 2  # no --reason
    assert cli(*base, "--holdout", CURRENT, "--holdout-fraction", "0.3").exit_code == 2
    assert cli(*base, "--time-column", "date", "--include-reference", "--window-days", "7").exit_code == 2
    result = cli(*base, "--time-column", "carrier", "--trigger", "manual", "--reason", "test")
    assert result.exit_code == 3 and "does not hold dates" in result.stderr and "warning" not in result.stderr


def test_performance_trigger_fires_on_a_real_drop_and_not_on_noise(cli, champion, tmp_path, reference_frame):
    labelled = reference_frame[reference_frame["delayed"].notna()]
    flipped = tmp_path / "flipped.parquet"
    io.write_table(flipped, labelled.assign(delayed=1 - labelled["delayed"]))
    small = tmp_path / "small.parquet"
    io.write_table(small, labelled.sample(300, random_state=0))
    args = (
        "retrain",
        "--bootstrap",
        "200",
        "flights",
        "--target",
        "delayed",
        "--trigger",
        "performance",
        "--check-only",
    )
    fired = cli.json(*args, "--data", flipped)["results"]["job"]["triggers"]["performance"]
    assert fired["fired"] and fired["ci_high"] < fired["recorded"]
    calm = cli.json(*args, "--data", small)["results"]["job"]["triggers"]["performance"]
    assert not calm["fired"] and calm["rows"] == 300


@pytest.mark.slow
def test_kill_9_mid_run_is_never_a_success(tmp_path, model_file):
    registry = tmp_path / "registry"
    run_mlops(*register_args(model_file, "--alias", "production", "-q"), registry=registry)
    argv = [
        sys.executable,
        "-m",
        "mlops_cli",
        "--registry",
        str(registry),
        "retrain",
        "flights",
        "--data",
        str(CURRENT),
        "--target",
        "delayed",
        "--time-column",
        "date",
        "--trigger",
        "manual",
        "--reason",
        "test",
        "-q",
    ]
    proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(ROOT)})
    jobs_dir = registry / "flights" / "jobs"
    deadline = time.time() + 120
    while time.time() < deadline and not any(jobs_dir.glob("*.json")):
        time.sleep(0.05)
    time.sleep(1.0)  # well inside the run: reading, triggers or training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    jobs = retrain_lib.history(Registry(registry), "flights")
    assert [j["status"] for j in jobs] == ["killed"]
    assert Registry(registry).aliases("flights") == {"production": "1"}


def test_neither_time_column_nor_holdout_is_a_usage_error(cli, champion):
    assert cli("retrain", "flights", "--data", CURRENT, "--target", "delayed").exit_code == 2


def test_unknown_model_is_exit_4(cli):
    result = cli("retrain", "nope", "--data", CURRENT, "--target", "delayed", "--time-column", "date")
    assert result.exit_code == 4


@pytest.mark.slow
def test_the_nightly_cron_script_chains_the_commands_by_exit_code(tmp_path, model_file):
    registry = tmp_path / "registry"
    assert run_mlops(*register_args(model_file, "--alias", "production", "-q"), registry=registry).returncode == 0
    notify = tmp_path / "notify.sh"
    notify.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "pages.txt"}\n')
    notify.chmod(0o755)
    env = {
        **os.environ,
        "MLOPS_REGISTRY": str(registry),
        "MLOPS": str(Path(sys.executable).parent / "mlops"),  # the console script, as cron would call it
        "OUT": str(tmp_path / "out"),
        "NOTIFY": str(notify),
    }
    script = ROOT / "sample_data" / "nightly.sh"
    # Summer data against a Jan-Apr model: scored, drift found and paged, retrain runs (whichever way it goes).
    night = subprocess.run([str(script), str(CURRENT)], env=env, capture_output=True, text=True, timeout=600)
    pages = (tmp_path / "pages.txt").read_text()
    assert night.returncode == 1 and "drift in" in pages and "failed" not in pages, (night.stderr, pages)
    assert len(list((tmp_path / "out").glob("scores-*.parquet"))) == 1
    retrain_report = json.loads(next((tmp_path / "out").glob("retrain-*.json")).read_text())
    assert retrain_report["results"]["job"]["decision"] in (
        "promoted",
        "rejected",
        "rejected_by_guardrails",
        "rejected_by_gates",
    )
    # A missing input: paged once, and nothing after scoring runs.
    (tmp_path / "pages.txt").unlink()
    night = subprocess.run([str(script), str(tmp_path / "absent.parquet")], env=env, capture_output=True, timeout=300)
    assert night.returncode == 1
    assert (tmp_path / "pages.txt").read_text().splitlines() == [
        f"flights: scoring failed, no predictions for {time.strftime('%Y-%m-%d')} "
        f"(see {tmp_path / 'out'}/score-{time.strftime('%Y-%m-%d')}.json)"
    ]
