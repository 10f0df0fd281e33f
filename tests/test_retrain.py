"""`mlops retrain` on the sample data: triggers, out-of-time gate, promotion, rollback, job records."""

import os
import signal
import subprocess
import sys
import time

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


def test_killed_run_shows_as_killed_and_promotion_is_undone(cli, champion):
    # A job that died after moving the alias (phase verifying) from a process that no longer exists.
    champion.promote("flights:1", "production")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job = retrain_lib.Job(
        id="20260101T000000Z-dead00",
        name="flights",
        started_at="2026-01-01T00:00:00Z",
        pid=dead.pid,
        phase="verifying",
        challenger={"version": "1"},
    )
    retrain_lib._save(champion, job)
    champion.promote("flights:1", "production")  # as the killed job left it (moved, unconfirmed)
    history = cli.json("retrain", "history", "flights")["results"]["jobs"]
    assert history[0]["status"] == "killed"
    cli.json("retrain", "--bootstrap", "200", "flights", "--data", REFERENCE, "--target", "delayed", "--check-only")
    assert champion.events("flights")[-1]["event"] == "rolled_back"


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
