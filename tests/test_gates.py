"""smoke-test and checklist: a good model passes; each deliberately broken model fails the right step."""

import io as stdio
import json

import broken_models
import joblib
import pytest
from conftest import CURRENT, edit_manifest_as_registered, sample_train
from rich.console import Console

from mlops_cli import io, render
from mlops_cli.gates import smoke
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
    assert cases[("nan", "carrier")]["outcome"] == "valid_output"
    # The input contract refuses a missing column before the model sees it, as score-batch and the servers do.
    assert cases[("missing_column", "carrier")]["outcome"] == "refused_by_contract"
    # Labels are compared as well as probabilities.
    assert steps["determinism"]["evidence"]["labels_differing"] == 0
    assert steps["batch_consistency"]["evidence"]["labels_differing"] == 0
    # The stored sample is the input, and the envelope says so.
    (source,) = report["inputs"]
    assert source["path"].endswith("sample.parquet") and source["rows"] == 300 and len(source["sha256"]) == 64


@pytest.mark.parametrize(
    "cls, step, extra",
    [
        (broken_models.ReturnsNaN, "output_validity", []),
        (broken_models.ProbabilitiesAboveOne, "output_validity", []),
        (broken_models.SumsOff, "output_validity", []),
        (broken_models.Nondeterministic, "determinism", []),
        (broken_models.LabelsAtRandom, "determinism", []),
        # 50 ms a call against a budget a sound model meets many times over even on a busy machine: the test fails
        # only if the slowness goes undetected. Few rows: every single-row call sleeps.
        (broken_models.Slow, "latency", ["--max-latency-ms", "30", "--rows", "20"]),
        (broken_models.CrashesOnNaN, "edge_cases", []),
    ],
)
def test_broken_models_fail_the_right_step(cli, tmp_path, model_file, complete_data, cls, step, extra):
    _register(cli, _broken(tmp_path, model_file, cls), "broken", complete_data)
    report = cli.json("smoke-test", "broken", "--iterations", "20", *extra, expect=1)
    assert report["status"] == "fail" and step in report["results"]["failed"]
    assert _steps(report)[step]["status"] == "fail"
    if cls is broken_models.LabelsAtRandom:  # the probabilities are sound: only the labels give it away
        for check in ("batch_consistency", "determinism", "serialization"):
            evidence = _steps(report)[check]["evidence"]
            assert evidence["labels_differing"] > 0 and evidence["values_differing"] == 0
    if cls is broken_models.ReturnsNaN:  # NaN rows in both outputs: compared without numpy's All-NaN warning
        assert "error" not in _steps(report)["batch_consistency"]["evidence"]
    if cls is broken_models.SumsOff:  # the worst row is named by its sum, not the largest sum (which is 1)
        assert "sums to 0.9" in _steps(report)["output_validity"]["evidence"]["problems"][0]


def test_nan_crash_is_accepted_when_the_model_declares_it(cli, tmp_path, model_file, complete_data):
    _register(
        cli, _broken(tmp_path, model_file, broken_models.CrashesOnNaN), "declared", complete_data, "--rejects-missing"
    )
    report = cli.json("smoke-test", "declared", "--iterations", "20", "--max-latency-ms", "2000")
    nan_cases = [c for c in _steps(report)["edge_cases"]["evidence"]["cases"] if c["case"] == "nan"]
    assert nan_cases and all(c["verdict"] == "pass" for c in nan_cases)
    # --rejects-missing: the input contract rejects every row with a gap, as score-batch does, so the model that
    # crashes on NaN never sees one (it used to be called, and its crash on numeric gaps accepted).
    assert {c["feature"] for c in nan_cases if c.get("rows_rejected") == 10} == set(sample_train.FEATURES)
    assert all(c["outcome"] == "valid_output" for c in nan_cases)  # the rows without a gap: valid answers


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
    edit_manifest_as_registered(registry_dir / "m", "1", lambda m: m["libraries"].update({"scikit-learn": "1.2.0"}))
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
    (source,) = report["inputs"]
    assert source["path"] == str(CURRENT) and source["rows"] == len(io.read_table(CURRENT))
    assert source["sha256"] == io.fingerprint(CURRENT)["sha256"]
    # No schema types or ranges recorded: the cases that need them are named as not tried, not silently skipped.
    evidence = _steps(report)["edge_cases"]["evidence"]
    assert {d["feature"] for d in evidence["not_derived"]} == set(sample_train.FEATURES)
    assert {c["case"] for c in evidence["cases"]} == {"missing_column", "nan"}
    assert any("could not be derived" in m and "unseen_category" in m for m in report["messages"])


def _bare(cli, tmp_path, model_file, cls, name):
    """A broken model registered without data: `register` itself scores the sample it stores."""
    cli.json("register", _broken(tmp_path, model_file, cls), "--name", name)
    return ("--data", CURRENT, "--rows", "50", "--iterations", "10", "--max-latency-ms", "2000")


def test_a_model_that_always_raises_fails_with_a_report(cli, tmp_path, model_file, relaxed):
    data = _bare(cli, tmp_path, model_file, broken_models.RaisesAlways, "raises")
    report = cli.json("smoke-test", "raises", *data, expect=1)
    steps = _steps(report)
    assert list(steps) == list(smoke.STEPS)
    for step in ("single_row", "output_validity", "latency"):
        assert steps[step]["status"] == "fail" and "model server unreachable" in steps[step]["evidence"]["error"]
    for step in ("batch_consistency", "determinism", "serialization"):
        assert steps[step]["status"] == "skip" and steps[step]["evidence"]["reason"]
    assert steps["edge_cases"]["status"] == "fail"
    report = cli.json(
        "checklist", "raises", "--eval-data", CURRENT, "--iterations", "10", "--policy", relaxed, expect=1
    )
    assert report["status"] == "fail" and "smoke_test" in report["results"]["failed"]
    assert _items(report)["serialization"]["status"] == "fail"


def test_a_model_that_calls_sys_exit_fails_the_steps(cli, tmp_path, model_file):
    data = _bare(cli, tmp_path, model_file, broken_models.Exits, "exits")
    report = cli.json("smoke-test", "exits", *data, expect=1)
    steps = _steps(report)
    assert steps["output_validity"]["status"] == "fail"
    assert steps["output_validity"]["evidence"]["error"].startswith("SystemExit")


def test_a_model_that_prints_keeps_stdout_json(cli, tmp_path, model_file, small_data):
    _register(cli, _broken(tmp_path, model_file, broken_models.Prints), "prints", small_data)
    # cli.json parses stdout as JSON: a stray print line there would fail it.
    report = cli.json("smoke-test", "prints", "--rows", "50", "--iterations", "10", "--max-latency-ms", "2000")
    assert report["status"] == "pass"
    result = cli("score-batch", "prints", CURRENT, tmp_path / "scores.parquet", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["command"] == "score-batch"
    assert "scoring" in result.stderr


def test_a_classifier_without_predict_proba_fails_load_and_skips_the_rest(
    cli, tmp_path, model_file, small_data, relaxed
):
    _register(cli, _broken(tmp_path, model_file, broken_models.NoProba), "noproba", small_data)
    report = cli.json("smoke-test", "noproba", "--iterations", "10", expect=1)
    steps = _steps(report)
    assert report["results"]["failed"] == ["load"] and steps["load"]["evidence"]["missing_methods"] == ["predict_proba"]
    assert list(steps) == list(smoke.STEPS)
    assert all(s["status"] == "skip" and s["evidence"]["reason"] == "load failed" for s in list(steps.values())[1:])
    items = _items(cli.json("checklist", "noproba", "--iterations", "10", "--policy", relaxed, expect=1))
    for item in ("edge_cases", "latency", "serialization"):
        assert items[item]["status"] == "fail" and "load failed" in items[item]["evidence"]["reason"]
    assert items["smoke_test"]["status"] == "fail" and items["smoke_test"]["evidence"]["failed_steps"] == ["load"]


@pytest.fixture(scope="module")
def regressor_file(tmp_path_factory, reference_frame):
    """A regressor whose categorical columns are one-hot encoded without an imputer: it takes gaps in a text
    column (OneHotEncoder ignores what it has not seen), but not a text column turned into floats."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    labelled = reference_frame[reference_frame["delayed"].notna()].head(3000)
    columns = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), sample_train.CATEGORICAL),
            ("num", "passthrough", sample_train.NUMERIC),
        ]
    )
    model = Pipeline([("columns", columns), ("model", HistGradientBoostingRegressor(max_iter=10))])
    path = tmp_path_factory.mktemp("models") / "regressor.joblib"
    joblib.dump(model.fit(labelled[sample_train.FEATURES], labelled["delayed"]), path)
    return path


def test_regressor_passes_and_output_range_is_checked(cli, regressor_file, small_data):
    _register(cli, regressor_file, "reg", small_data)
    args = ("smoke-test", "reg", "--rows", "50", "--iterations", "10", "--max-latency-ms", "2000")
    report = cli.json(*args, "--output-min", "-1", "--output-max", "2")
    steps = _steps(report)
    assert all(s["status"] == "pass" for s in steps.values())
    cases = {(c["case"], c["feature"]): c for c in steps["edge_cases"]["evidence"]["cases"]}
    assert cases[("nan", "carrier")]["outcome"] == "valid_output"  # gaps in a text column, not a float column
    assert "labels_differing" not in steps["determinism"]["evidence"]  # a regressor's values are compared
    report = cli.json(*args, "--output-min", "5", expect=1)
    assert report["results"]["failed"] == ["output_validity"]
    assert "outside" in _steps(report)["output_validity"]["evidence"]["problems"][0]


def test_regressor_returning_inf_fails_validity_only_where_it_should(cli, tmp_path, regressor_file, small_data):
    path = tmp_path / "inf.joblib"
    joblib.dump(broken_models.RegressorReturnsInf(joblib.load(regressor_file)), path)
    _register(cli, path, "inf", small_data)
    report = cli.json("smoke-test", "inf", "--rows", "50", "--iterations", "10", "--max-latency-ms", "2000", expect=1)
    steps = _steps(report)
    assert steps["output_validity"]["status"] == "fail"
    # Inf in the same places each time: deterministic and round-trips; and no numpy warning from our comparisons
    # (pytest turns warnings into errors, which would fail these steps).
    assert steps["determinism"]["status"] == "pass" and steps["serialization"]["status"] == "pass"
    assert "error" not in steps["batch_consistency"]["evidence"]  # inf - inf is not computed, or not warned about
    assert not any("RuntimeWarning" in m or "invalid value" in m for m in report["messages"])


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_max_latency_must_be_positive(cli, value):
    assert cli("smoke-test", "m", "--max-latency-ms", value).exit_code == 2


# --- checklist -----------------------------------------------------------------------------------------------


def _items(report):
    return {i["id"]: i for i in report["results"]["items"]}


def test_first_release_passes_with_a_rollback_warning(cli, relaxed, model_file, small_data, eval_data):
    _register(cli, model_file, "m", small_data, "--eval-data", eval_data, "--bootstrap", "100")
    report = cli.json("checklist", "--iterations", "20", "--policy", relaxed, "m")
    items = _items(report)
    assert items["rollback_ready"]["status"] == "warn" and not items["rollback_ready"]["required"]
    assert items["baseline_comparison"]["status"] == "skip"
    assert items["onnx_agreement"]["status"] == "skip"  # registered without --formats onnx
    skipped = ("rollback_ready", "baseline_comparison", "onnx_agreement")
    assert all(i["status"] == "pass" for k, i in items.items() if k not in skipped)
    # Items that are smoke steps take the step's duration; the smoke_test item the whole smoke test's.
    assert 0 < items["latency"]["duration_s"] < items["smoke_test"]["duration_s"]
    assert items["edge_cases"]["duration_s"] > 0 and items["reproducibility"]["duration_s"] > 0


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
    # The latency item is advisory now, and the policy's choice holds: the smoke_test item leaves the latency step
    # to it (and lists the failed step all the same).
    assert report["results"]["failed"] == ["artifact_size", "rollback_ready"]
    assert items["latency"]["status"] == "warn" and items["rollback_ready"]["required"]
    assert items["smoke_test"]["status"] == "pass" and items["smoke_test"]["evidence"]["failed_steps"] == ["latency"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[items\nrequired = 1", "not valid TOML"),
        ('[items]\nrequired = ["no_such_item"]', "unknown checklist items"),
        ("[budgets]\nlatency = 1", "unknown [budgets] keys"),
        ('[budgets]\nlatency_p99_ms = "fast"', "budgets.latency_p99_ms must be a finite number >= 0"),
        ("[budgets]\nartifact_mb = -5", "budgets.artifact_mb must be a finite number >= 0"),
        ("[budgets]\nlatency_p99_ms = inf", "budgets.latency_p99_ms must be a finite number >= 0"),
        ('[baseline]\nmargin = "small"', "baseline.margin must be a finite number >= 0"),
        # Typos and wrong types: each would have loosened the gate (or crashed), now exit 3.
        ("[budget]\nlatency_p99_ms = 1", "unknown keys or tables ['budget']"),
        ("latency_p99_ms = 1", "unknown keys or tables ['latency_p99_ms']"),
        ('[items]\nrequire = ["latency"]', "unknown [items] keys ['require']"),
        ('[items]\nrequired = ["latency"]\nadvisory = ["rollback_ready"]', "gives both required and advisory"),
        ("[items]\nrequired = 5", "items.required must be a list of item names"),
        ('[items]\nadvisory = "latency"', "items.advisory must be a list of item names"),
        ("budgets = 5", "budgets must be a table"),
        ("items = 5", "items must be a table"),
        ('[baseline]\nrule = "best"', "baseline.rule must be"),
        ('[baseline]\nmetric = "foo"', "baseline.metric 'foo' is not a metric"),
        ('[baseline]\nalias = "Prod/../x"', "baseline.alias 'Prod/../x' is not a valid alias"),
    ],
)
def test_bad_policy_is_exit_3(cli, model_file, small_data, tmp_path, text, message):
    _register(cli, model_file, "m", small_data)
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    result = cli("checklist", "m", "--iterations", "20", "--policy", policy)
    assert result.exit_code == 3 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_checklist_checks_its_inputs_before_the_smoke_test(cli, model_file, small_data, tmp_path, monkeypatch):
    _register(cli, model_file, "m", small_data)

    def no_smoke_test(*args, **kwargs):
        raise AssertionError("the smoke test ran before the inputs were checked")

    monkeypatch.setattr(smoke, "smoke_test", no_smoke_test)
    (tmp_path / "empty.csv").write_text("carrier,delayed\n")
    (tmp_path / "corrupt.parquet").write_bytes(b"not parquet")
    (tmp_path / "rmse.toml").write_text('[baseline]\nmetric = "rmse"\n')  # a regressor's metric
    for args, code in [
        (("--eval-data", tmp_path / "missing.parquet"), 3),
        (("--eval-data", tmp_path / "empty.csv"), 3),
        (("--eval-data", tmp_path / "corrupt.parquet"), 3),
        (("--policy", tmp_path / "rmse.toml"), 3),
        (("--baseline", "m:9"), 4),
    ]:
        result = cli("checklist", "m", *args)
        assert result.exit_code == code, (args, result.stderr)


def test_recorded_metrics_on_different_data_are_no_verdict(
    cli, relaxed, model_file, other_model_file, small_data, eval_data, tmp_path
):
    """Without --eval-data the recorded metrics are compared only when both were measured on the same rows."""
    _register(cli, model_file, "m", small_data, "--eval-data", eval_data, "--bootstrap", "50", "--alias", "production")
    _register(cli, other_model_file, "m", small_data, "--eval-data", small_data, "--bootstrap", "50")
    report = cli.json("checklist", "m:2", "--iterations", "10", "--policy", relaxed, expect=1)
    item = _items(report)["baseline_comparison"]
    assert item["status"] == "fail" and "baseline_comparison" in report["results"]["failed"]
    assert "recorded on different data" in item["evidence"]["reason"]
    assert item["evidence"]["eval_data_sha256"]["this"] != item["evidence"]["eval_data_sha256"]["baseline"]
    advisory = tmp_path / "advisory.toml"
    advisory.write_text(
        '[items]\nadvisory = ["baseline_comparison", "rollback_ready"]\n[budgets]\nlatency_p99_ms = 2000\n'
    )
    report = cli.json("checklist", "m:2", "--iterations", "10", "--policy", advisory)
    assert _items(report)["baseline_comparison"]["status"] == "warn"


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
    # A failing item always shows evidence: per-class metrics say which are missing.
    assert _items(report)["per_class_metrics"]["evidence"]["missing"]
    assert "missing=precision[0]" in text


def test_edge_case_evidence_renders_failing_cases_first_with_their_error(
    cli, tmp_path, model_file, complete_data, relaxed
):
    _register(cli, _broken(tmp_path, model_file, broken_models.CrashesOnNaN), "crash", complete_data)
    for command in ("smoke-test", "checklist"):
        extra = ("--max-latency-ms", "2000") if command == "smoke-test" else ("--policy", relaxed)
        report = cli.json(command, "crash", "--iterations", "10", *extra, expect=1)
        buffer = stdio.StringIO()
        render.render_steps(
            Report(command, results=report["results"], passed=False, model=report["model"]),
            Console(file=buffer, width=100),
        )
        text = buffer.getvalue()
        failing = text.index("nan temp: raised (ValueError: Input contains NaN)")
        assert failing < text.index("other cases passed")
