"""--prom-file (node_exporter textfiles, checked by promtool) and webhook alerts (delivered to a real local HTTP
receiver started here: 200, 500 then 200, 429 with Retry-After, and one that never answers)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REFERENCE, Cli, register_args

from mlops_cli.observe import promfile
from mlops_cli.observe.alerts import Alert
from mlops_cli.observe.promfile import Run, Sample
from mlops_cli.report import Report


def promtool(path: Path) -> str:
    """The file's text, once `promtool check metrics` has accepted it without a single lint remark."""
    text = path.read_text()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stdout + check.stderr
    return text


def values(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def series(name: str, command: str, model: str = "flights", **labels: str) -> str:
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    return f'{name}{{command="{command}",model="{model}"{extra}}}'


@pytest.fixture(scope="module")
def small(tmp_path_factory, current_frame) -> Path:
    """3,000 rows of the current data: enough for the large-sample rule, quick to score."""
    path = tmp_path_factory.mktemp("data") / "small.parquet"
    current_frame.head(3000).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def shared_registry(tmp_path_factory, model_file) -> Path:
    """flights:1 registered once for the module (with training data: a stored reference sample)."""
    root = tmp_path_factory.mktemp("observe") / "registry"
    Cli(root).json(*register_args(model_file))
    return root


@pytest.fixture
def reg(shared_registry, tmp_path) -> Cli:
    """A private copy of the module's registry (alert state and events are per test)."""
    root = tmp_path / "registry"
    shutil.copytree(shared_registry, root)
    return Cli(root)


# --- --prom-file -------------------------------------------------------------------------------------------------


def test_drift_report_textfile_holds_the_reports_verdict_and_passes_promtool(reg, tmp_path, small):
    prom = tmp_path / "drift.prom"
    report = reg.json("drift-report", "--model", "flights", small, "--target", "delayed", "--prom-file", prom)
    got = values(promtool(prom))
    summary = report["results"]["summary"]
    assert got[series("mlops_drift_detected", "drift-report")] == (summary["verdict"] == "drift") == 1
    assert got[series("mlops_drift_share_ratio", "drift-report")] == pytest.approx(summary["drifted_share"])
    assert got[series("mlops_job_input_rows", "drift-report")] == summary["rows"]["current"]
    drifted = [k for k, v in got.items() if k.startswith("mlops_drift_feature_drifted{") and v == 1]
    assert len(drifted) == summary["drifted"]
    humid = next(f for f in report["results"]["features"] if f["name"] == "humid")
    effect = got[series("mlops_drift_feature_effect", "drift-report", feature="humid")]
    assert effect == pytest.approx(humid["statistics"]["wasserstein_norm"])  # decided by wasserstein (large sample)
    assert got[series("mlops_prediction_drift_detected", "drift-report")] == 1
    auc = summary["performance"]["metrics"]["roc_auc"]["current"]
    assert got[series("mlops_performance_metric", "drift-report", metric="roc_auc")] == pytest.approx(auc)
    assert got[series("mlops_alerts_firing", "drift-report", severity="warning")] == 2  # dataset + prediction drift
    assert got[series("mlops_job_exit_code", "drift-report")] == 0
    assert got[series("mlops_job_passed", "drift-report")] == 1
    # --fail-on-drift: the verdict becomes the exit code, and the textfile says so; the run still counts as done.
    reg.json("drift-report", "--model", "flights", small, "--fail-on-drift", "--prom-file", prom, expect=1)
    got = values(promtool(prom))
    assert got[series("mlops_job_exit_code", "drift-report")] == 1
    assert got[series("mlops_job_passed", "drift-report")] == 0
    assert series("mlops_job_last_success_timestamp_seconds", "drift-report") in got


def test_an_error_run_leaves_last_success_where_it_was(reg, tmp_path, small):
    """A failed night shows as staleness: the error run carries the previous success over, and moves last_run."""
    prom = tmp_path / "score.prom"
    out = tmp_path / "out.parquet"
    report = reg.json("score-batch", "flights", small, out, "--prom-file", prom)
    first = values(promtool(prom))
    success = series("mlops_job_last_success_timestamp_seconds", "score-batch")
    assert first[series("mlops_job_input_rows", "score-batch")] == report["results"]["rows_read"]
    assert first[series("mlops_job_rejected_rows", "score-batch")] == report["results"]["rows_rejected"]
    assert first[series("mlops_alerts_firing", "score-batch", severity="critical")] == 0

    assert reg("score-batch", "flights", tmp_path / "missing.parquet", out, "--prom-file", prom).exit_code == 3
    second = values(promtool(prom))
    assert second[success] == first[success]
    last_run = series("mlops_job_last_run_timestamp_seconds", "score-batch")
    assert second[last_run] > first[last_run]
    assert second[series("mlops_job_exit_code", "score-batch")] == 3
    assert second[series("mlops_job_passed", "score-batch")] == 0
    assert second[series("mlops_alerts_firing", "score-batch", severity="critical")] == 1  # job_failed
    assert series("mlops_job_input_rows", "score-batch") not in second  # an error run read nothing worth stating

    # A registry error (exit 4) with no earlier file: no last-success line at all, and still a valid file.
    fresh = tmp_path / "fresh.prom"
    assert reg("score-batch", "nope", small, out, "--overwrite", "--prom-file", fresh).exit_code == 4
    got = values(promtool(fresh))
    assert not any(k.startswith("mlops_job_last_success") for k in got)
    assert got[series("mlops_job_exit_code", "score-batch", model="nope")] == 4


def test_every_reporting_command_writes_a_textfile(reg, tmp_path, other_model_file, relaxed, small):
    reg.json("register", other_model_file, "--name", "flights", "--train-data", REFERENCE, "--target", "delayed")
    reg.json("models", "promote", "flights:1", "production")
    runs = {
        "smoke-test": ("smoke-test", "flights", "--rows", "200", "--iterations", "10"),
        "checklist": ("checklist", "flights:2", "--iterations", "10", "--policy", relaxed),
        "abtest": ("abtest", "--champion", "flights:1", "--challenger", "flights:2", "--data", small,
                   "--target", "delayed", "--bootstrap", "50"),
        "retrain": ("retrain", "run", "flights", "--data", small, "--target", "delayed", "--check-only"),
        "verify": ("verify",),
    }  # fmt: skip
    for command, args in runs.items():
        prom = tmp_path / f"{command}.prom"
        result = reg(*args, "--prom-file", prom, "--json")
        assert result.exit_code in (0, 1), (command, result.stdout, result.stderr)
        report = json.loads(result.stdout)
        got = values(promtool(prom))
        model = "" if command == "verify" else "flights"
        assert got[series("mlops_job_exit_code", command, model)] == result.exit_code
        assert series("mlops_job_last_success_timestamp_seconds", command, model) in got
        if command == "checklist":
            failed = got[series("mlops_checklist_items_failed", command)]
            assert failed == len(report["results"]["failed"])
        if command == "abtest":
            outcome = {k: v for k, v in got.items() if k.startswith("mlops_abtest_outcome")}
            assert outcome[series("mlops_abtest_outcome", command, verdict=report["results"]["verdict"])] == 1
            assert sum(outcome.values()) == 1 and len(outcome) > 1
        if command == "retrain":
            outcome = {k: v for k, v in got.items() if k.startswith("mlops_retrain_outcome")}
            decision = report["results"]["job"]["decision"]
            assert outcome[series("mlops_retrain_outcome", command, outcome=decision)] == 1
            assert sum(outcome.values()) == 1


def test_a_prom_file_in_a_missing_folder_is_refused_before_any_work(reg, tmp_path, small):
    out = tmp_path / "out.parquet"
    result = reg("score-batch", "flights", small, out, "--prom-file", tmp_path / "no" / "x.prom")
    assert result.exit_code == 3
    assert not out.exists()


def test_label_values_are_escaped(tmp_path):
    """Feature names come from the user's columns: quotes, backslashes and newlines must not break the file."""
    run = Run("some-command", "m", 0, 1.0, 2.5, Report("some-command"))
    odd = 'a "quoted"\\ name\nwith a newline'
    lines = [Sample("mlops_drift_feature_drifted", 1, {"feature": odd}), Sample("mlops_drift_share_ratio", 0.5)]
    path = tmp_path / "odd.prom"
    path.write_text(promfile.render(run, lines))
    text = promtool(path)
    assert 'feature="a \\"quoted\\"\\\\ name\\nwith a newline"' in text
    alerts = [Alert("x", "warning", True, "s"), Alert("y", "warning", False, "s")]
    got = values(promfile.render(run, promfile.samples(run, alerts)))
    assert got['mlops_job_duration_seconds{command="some-command",model="m"}'] == 1.5
    assert got['mlops_alerts_firing{command="some-command",model="m",severity="warning"}'] == 1
