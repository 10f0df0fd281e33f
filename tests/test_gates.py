"""smoke-test and checklist: a good model passes; each deliberately broken model fails the right step."""

import io as stdio
import json

import broken_models
import joblib
import pytest
from conftest import CURRENT
from rich.console import Console

from mlops_cli import io, render
from mlops_cli.report import Report


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, reference_frame):
    path = tmp_path_factory.mktemp("data") / "train.parquet"
    io.write_table(path, reference_frame.head(3000))
    return path


@pytest.fixture(scope="module")
def complete_data(tmp_path_factory, reference_frame):
    """Training rows without missing values: what a model that cannot take NaN was trained on."""
    path = tmp_path_factory.mktemp("data") / "complete.parquet"
    io.write_table(path, reference_frame.dropna().head(3000))
    return path


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory, current_frame):
    path = tmp_path_factory.mktemp("data") / "eval.parquet"
    io.write_table(path, current_frame.head(3000))
    return path


def _register(cli, model_path, name, small_data, *extra):
    return cli.json(
        "register",
        model_path,
        "--name",
        name,
        "--train-data",
        small_data,
        "--target",
        "delayed",
        "--sample-size",
        "300",
        *extra,
    )


def _broken(tmp_path, model_file, cls):
    path = tmp_path / f"{cls.__name__}.joblib"
    joblib.dump(cls(joblib.load(model_file)), path)
    return path


def _steps(report):
    return {s["id"]: s for s in report["results"]["steps"]}


def test_good_model_passes_every_step(cli, model_file, small_data):
    _register(cli, model_file, "good", small_data)
    # A generous latency budget: this test is about correctness, not about how busy the machine is.
    report = cli.json("smoke-test", "good", "--iterations", "50", "--max-latency-ms", "2000")
    steps = _steps(report)
    assert list(steps) == [
        "load",
        "single_row",
        "output_validity",
        "batch_consistency",
        "determinism",
        "serialization",
        "latency",
        "edge_cases",
    ]
    assert all(s["status"] == "pass" for s in steps.values())
    assert all({"id", "status", "evidence", "duration_s"} <= set(s) for s in steps.values())
    latency = steps["latency"]["evidence"]
    assert latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] and latency["batch_rows_per_s"] > 0
    cases = {(c["case"], c["feature"]): c for c in steps["edge_cases"]["evidence"]["cases"]}
    assert cases[("unseen_category", "carrier")]["outcome"] == "valid_output"
    assert cases[("nan", "temp")]["outcome"] == "valid_output"
    assert cases[("missing_column", "carrier")]["outcome"] == "raised"


@pytest.mark.parametrize(
    "cls, step, extra",
    [
        (broken_models.ReturnsNaN, "output_validity", []),
        (broken_models.ProbabilitiesAboveOne, "output_validity", []),
        (broken_models.Nondeterministic, "determinism", []),
        (broken_models.Slow, "latency", ["--max-latency-ms", "5"]),
        (broken_models.CrashesOnNaN, "edge_cases", []),
    ],
)
def test_broken_models_fail_the_right_step(cli, tmp_path, model_file, complete_data, cls, step, extra):
    _register(cli, _broken(tmp_path, model_file, cls), "broken", complete_data)
    report = cli.json("smoke-test", "broken", "--iterations", "20", *extra, expect=1)
    assert report["status"] == "fail" and step in report["results"]["failed"]
    assert _steps(report)[step]["status"] == "fail"


def test_nan_crash_is_accepted_when_the_model_declares_it(cli, tmp_path, model_file, complete_data):
    _register(
        cli, _broken(tmp_path, model_file, broken_models.CrashesOnNaN), "declared", complete_data, "--rejects-missing"
    )
    report = cli.json("smoke-test", "declared", "--iterations", "20", "--max-latency-ms", "2000")
    nan_cases = [c for c in _steps(report)["edge_cases"]["evidence"]["cases"] if c["case"] == "nan"]
    assert nan_cases and all(c["outcome"] == "raised" and c["verdict"] == "pass" for c in nan_cases)


def test_text_in_a_numeric_column_is_an_input_error(cli, model_file, small_data, tmp_path, reference_frame):
    """Data the model cannot take is the data's fault: exit 3 naming the column, not a crash or a failed step."""
    _register(cli, model_file, "m", small_data)
    rows = reference_frame.head(200).astype({"temp": object})
    rows.loc[3, "temp"] = "hot"
    rows.to_csv(tmp_path / "text.csv", index=False)
    result = cli("smoke-test", "m", "--data", tmp_path / "text.csv")
    assert result.exit_code == 3 and "temp: not a number" in result.stderr and "row 4" in result.stderr


def test_altered_artifact_is_exit_4(cli, model_file, small_data, registry_dir):
    _register(cli, model_file, "m", small_data)
    artifact = registry_dir / "m" / "versions" / "1" / "model.joblib"
    artifact.write_bytes(artifact.read_bytes()[:-10])
    for command in (["smoke-test", "m"], ["checklist", "m"]):
        result = cli(*command)
        assert result.exit_code == 4 and "altered after registration" in result.stderr


def test_other_scikit_learn_version_warns_and_strict_fails(cli, model_file, small_data, registry_dir):
    _register(cli, model_file, "m", small_data)
    path = registry_dir / "m" / "versions" / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["libraries"]["scikit-learn"] = "1.2.0"
    path.write_text(json.dumps(manifest))
    report = cli.json("smoke-test", "m", "--iterations", "20", "--max-latency-ms", "2000")
    assert any("scikit-learn 1.2.0" in m for m in report["messages"])
    assert _steps(report)["load"]["evidence"]["library_differences"]["scikit-learn"]["recorded"] == "1.2.0"
    result = cli("smoke-test", "m", "--strict")
    assert result.exit_code == 4 and "1.2.0" in result.stderr


def test_smoke_test_needs_data_when_nothing_is_stored(cli, model_file):
    cli.json("register", model_file, "--name", "bare")
    result = cli("smoke-test", "bare")
    assert result.exit_code == 3 and "no stored reference sample" in result.stderr
    report = cli.json(
        "smoke-test", "bare", "--data", CURRENT, "--rows", "200", "--iterations", "20", "--max-latency-ms", "2000"
    )
    assert report["status"] == "pass"


# --- checklist -----------------------------------------------------------------------------------------------


def _items(report):
    return {i["id"]: i for i in report["results"]["items"]}


def test_first_release_passes_with_a_rollback_warning(cli, relaxed, model_file, small_data, eval_data):
    _register(cli, model_file, "m", small_data, "--eval-data", eval_data, "--bootstrap", "100")
    report = cli.json("checklist", "--iterations", "20", "--policy", relaxed, "m")
    items = _items(report)
    assert items["rollback_ready"]["status"] == "warn" and not items["rollback_ready"]["required"]
    assert items["baseline_comparison"]["status"] == "skip"
    assert all(i["status"] == "pass" for k, i in items.items() if k not in ("rollback_ready", "baseline_comparison"))


def test_candidate_against_production_with_paired_comparison(
    cli, relaxed, model_file, other_model_file, small_data, eval_data
):
    _register(cli, model_file, "m", small_data, "--eval-data", eval_data, "--bootstrap", "100", "--alias", "production")
    _register(cli, other_model_file, "m", small_data, "--eval-data", eval_data, "--bootstrap", "100")
    report = cli.json("checklist", "--iterations", "20", "--policy", relaxed, "m:2", "--eval-data", eval_data)
    items = _items(report)
    evidence = items["baseline_comparison"]["evidence"]
    assert (
        evidence["baseline"] == "m:1"
        and evidence["metric"] == "roc_auc"
        and evidence["n"] == io.read_table(eval_data)["delayed"].notna().sum()
    )
    assert items["rollback_ready"]["status"] == "pass" and items["rollback_ready"]["evidence"]["previous"] == "m:1"


def test_a_worse_candidate_fails_the_baseline_comparison(cli, relaxed, tmp_path, model_file, small_data, eval_data):
    from sklearn.dummy import DummyClassifier

    frame = io.read_table(small_data)
    frame = frame[frame["delayed"].notna()]
    dummy = DummyClassifier(strategy="prior").fit(
        frame[joblib.load(model_file).feature_names_in_], frame["delayed"].astype(int)
    )
    joblib.dump(dummy, tmp_path / "dummy.joblib")
    _register(cli, model_file, "m", small_data, "--alias", "production")
    _register(cli, tmp_path / "dummy.joblib", "m", small_data)
    report = cli.json("checklist", "--iterations", "20", "--policy", relaxed, "m:2", "--eval-data", eval_data, expect=1)
    assert "baseline_comparison" in report["results"]["failed"]


def test_policy_makes_items_required_and_sets_budgets(cli, model_file, small_data, tmp_path, eval_data):
    _register(cli, model_file, "m", small_data, "--eval-data", eval_data, "--bootstrap", "100")
    policy = tmp_path / "policy.toml"
    policy.write_text('[items]\nadvisory = ["latency"]\n[budgets]\nartifact_mb = 0.001\nlatency_p99_ms = 0.0001\n')
    report = cli.json("checklist", "--iterations", "20", "m", "--policy", policy, expect=1)
    items = _items(report)
    # The latency item is advisory now, but the smoke test (required) still fails on the latency budget.
    assert report["results"]["failed"] == ["artifact_size", "smoke_test", "rollback_ready"]
    assert items["latency"]["status"] == "warn" and items["rollback_ready"]["required"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[items\nrequired = 1", "not valid TOML"),
        ('[items]\nrequired = ["no_such_item"]', "unknown checklist items"),
        ("[budgets]\nlatency = 1", "unknown [budgets] keys"),
        ('[budgets]\nlatency_p99_ms = "fast"', "budgets.latency_p99_ms must be a number >= 0"),
        ("[budgets]\nartifact_mb = -5", "budgets.artifact_mb must be a number >= 0"),
        ('[baseline]\nmargin = "small"', "baseline.margin must be a number >= 0"),
    ],
)
def test_bad_policy_is_exit_3(cli, model_file, small_data, tmp_path, text, message):
    _register(cli, model_file, "m", small_data)
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    result = cli("checklist", "m", "--iterations", "20", "--policy", policy)
    assert result.exit_code == 3 and message in result.stderr


def test_checklist_without_profile_fails_data_items(cli, relaxed, model_file):
    cli.json("register", model_file, "--name", "bare")
    report = cli.json("checklist", "--iterations", "20", "--policy", relaxed, "bare", expect=1)
    assert {"distribution_stats", "monitoring_ready", "test_metrics", "smoke_test"} <= set(report["results"]["failed"])


def test_checklist_renders_marks_and_failing_evidence(cli, relaxed, model_file):
    cli.json("register", model_file, "--name", "bare")
    report = cli.json("checklist", "--iterations", "20", "--policy", relaxed, "bare", expect=1)
    buffer = stdio.StringIO()
    render.render_steps(
        Report("checklist", results=report["results"], passed=False, model=report["model"]),
        Console(file=buffer, width=100),
    )
    text = buffer.getvalue()
    assert "✗ distribution_stats" in text and "! rollback_ready" in text and "FAIL" in text
