"""The registry through the CLI: register, list, show, promote, rollback, history, integrity, errors."""

import json

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import CURRENT, REFERENCE, edit_manifest_as_registered
from sklearn import metrics as skm

from mlops_cli import io
from mlops_cli.errors import IntegrityError, MlopsWarning, VersionMismatch
from mlops_cli.registry import Registry
from mlops_cli.runtime import LoadedModel, LoadOptions


def test_manifest_records_everything(registered, cli, model_file):
    m = cli.json("models", "show", "flights:1")["results"]["manifest"]
    assert (m["name"], m["version"], m["task"], m["classes"], m["target"]) == (
        "flights",
        "1",
        "classifier",
        [0, 1],
        "delayed",
    )
    assert m["estimator_class"] == "sklearn.pipeline.Pipeline"
    assert m["files"]["model.joblib"]["sha256"] == io.sha256_file(model_file)
    features = {f["name"]: f for f in m["features"]}
    assert list(features)[:3] == ["carrier", "origin", "dest"]
    assert features["carrier"]["kind"] == "categorical" and "AA" in features["carrier"]["categories"]
    assert features["temp"]["kind"] == "numeric" and features["temp"]["min"] < features["temp"]["max"]
    assert m["training_data"]["rows"] == 40_000 and m["training_data"]["sha256"] == io.fingerprint(REFERENCE)["sha256"]
    assert set(m["libraries"]) >= {"python", "scikit-learn", "numpy", "pandas", "joblib"}
    assert m["registered_by"]["user"] and m["registered_by"]["host"]
    assert "git" in m["lineage"]


def test_reference_profile_and_sample(registered, registry_dir, model_file, reference_frame):
    version = Registry(registry_dir).resolve("flights")
    profile = json.loads(version.file("profile.json").read_text())
    temp = profile["features"]["temp"]
    assert temp["mean"] == pytest.approx(reference_frame["temp"].mean())
    assert temp["missing"] == int(reference_frame["temp"].isna().sum())
    assert temp["quantiles"]["0.5"] == pytest.approx(reference_frame["temp"].median())
    assert profile["features"]["origin"]["frequencies"]["EWR"] == pytest.approx(
        (reference_frame["origin"] == "EWR").mean()
    )
    sample = io.read_table(version.file("sample.parquet"))
    assert len(sample) == 40_000 and {"delayed", "prediction", "proba_0", "proba_1"} <= set(sample.columns)
    model = joblib.load(model_file)
    features = [f["name"] for f in version.manifest["features"]]
    np.testing.assert_allclose(sample["proba_1"], model.predict_proba(sample[features])[:, 1], rtol=0, atol=1e-12)


def test_sample_size_caps_the_sample(cli, model_file, registry_dir):
    cli.json(
        "register",
        model_file,
        "--name",
        "small",
        "--train-data",
        REFERENCE,
        "--target",
        "delayed",
        "--sample-size",
        "500",
    )
    version = Registry(registry_dir).resolve("small")
    assert len(io.read_table(version.file("sample.parquet"))) == 500


def test_eval_metrics_match_scikit_learn_and_cis_bracket_them(registered, model_file, current_frame):
    metrics = registered["results"]["eval_metrics"]
    labelled = current_frame[current_frame["delayed"].notna()]
    y = labelled["delayed"].astype(int)
    model = joblib.load(model_file)
    proba = model.predict_proba(labelled[model.feature_names_in_])
    pred = model.predict(labelled[model.feature_names_in_])
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, proba[:, 1]),
        "log_loss": skm.log_loss(y, proba),
        "recall[1]": skm.recall_score(y, pred),
        "precision[1]": skm.precision_score(y, pred),
        "f1[0]": skm.f1_score(y, pred, pos_label=0),
    }
    for name, value in expected.items():
        assert metrics[name]["value"] == pytest.approx(value, abs=1e-12), name
        assert metrics[name]["ci_low"] < value < metrics[name]["ci_high"], name


def test_regressor_metrics(cli, tmp_path, reference_frame):
    from sklearn.linear_model import LinearRegression

    frame = reference_frame.dropna(subset=["temp", "dewp", "humid"])[["temp", "dewp", "humid"]]
    data = tmp_path / "weather.parquet"
    io.write_table(data, frame)
    model = LinearRegression().fit(frame[["dewp", "humid"]], frame["temp"])
    joblib.dump(model, tmp_path / "lr.joblib")
    report = cli.json(
        "register",
        tmp_path / "lr.joblib",
        "--name",
        "temp",
        "--train-data",
        data,
        "--target",
        "temp",
        "--eval-data",
        data,
        "--bootstrap",
        "100",
    )
    metrics = report["results"]["eval_metrics"]
    pred = model.predict(frame[["dewp", "humid"]])
    assert metrics["r2"]["value"] == pytest.approx(skm.r2_score(frame["temp"], pred), abs=1e-12)
    assert metrics["mae"]["value"] == pytest.approx(skm.mean_absolute_error(frame["temp"], pred), abs=1e-12)
    assert metrics["rmse"]["value"] == pytest.approx(skm.root_mean_squared_error(frame["temp"], pred), abs=1e-12)
    assert report["results"]["task"] == "regressor"


def test_versions_are_numbered_and_latest_is_last_registered(cli, model_file, other_model_file):
    cli.json("register", model_file, "--name", "m", "--version", "1.0.0")
    assert cli.json("register", other_model_file, "--name", "m")["results"]["version"] == "1"
    assert cli.json("register", model_file, "--name", "m", "--allow-duplicate")["results"]["version"] == "2"
    listed = cli.json("models", "list", "m")["results"]["versions"]
    assert [v["version"] for v in listed] == ["1.0.0", "1", "2"]
    assert cli.json("models", "show", "m")["results"]["manifest"]["version"] == "2"


def test_same_bytes_register_is_idempotent(cli, model_file, registry_dir):
    first = cli.json("register", model_file, "--name", "m", "--metric", "auc=0.7")
    again = cli.json("register", model_file, "--name", "m")
    assert (first["results"]["created"], again["results"]["created"]) == (True, False)
    assert again["results"]["version"] == "1" and "already registered" in again["messages"][0]
    assert len(Registry(registry_dir).versions("m")) == 1


def test_version_label_exists_is_exit_4(cli, model_file, other_model_file):
    cli.json("register", model_file, "--name", "m", "--version", "v1")
    result = cli("register", other_model_file, "--name", "m", "--version", "v1")
    assert result.exit_code == 4 and "already exists" in result.stderr


def test_metrics_params_tags_recorded(cli, model_file, tmp_path):
    (tmp_path / "m.json").write_text('{"auc": 0.71, "logloss": 0.5}')
    r = cli.json(
        "register",
        model_file,
        "--name",
        "m",
        "--metric",
        "auc=0.72",
        "--metrics-file",
        tmp_path / "m.json",
        "--param",
        "max_iter=30",
        "--tag",
        "team=ops",
        "--description",
        "hello",
    )
    m = cli.json("models", "show", "m")["results"]["manifest"]
    assert m["metrics"] == {"auc": 0.72, "logloss": 0.5}  # --metric wins over the file
    assert m["params"] == {"max_iter": "30"} and m["tags"] == {"team": "ops"} and m["description"] == "hello"
    assert r["model"]["sha256"] == m["files"]["model.joblib"]["sha256"]


def test_promote_rollback_history(cli, model_file, other_model_file):
    cli.json("register", model_file, "--name", "m")
    cli.json("register", other_model_file, "--name", "m")
    assert cli.json("models", "promote", "m:1", "production")["results"] == {
        "name": "m",
        "alias": "production",
        "from": None,
        "to": "1",
    }
    cli.json("models", "promote", "m:2", "production", "--reason", "better")
    assert cli.json("models", "show", "m@production")["results"]["manifest"]["version"] == "2"
    rolled = cli.json("models", "rollback", "m", "--reason", "bad night")["results"]
    assert (rolled["from"], rolled["to"]) == ("2", "1")
    assert cli.json("models", "show", "m@production")["results"]["manifest"]["version"] == "1"
    # Nothing left to roll back to: exit 4, alias unchanged.
    result = cli("models", "rollback", "m")
    assert result.exit_code == 4 and "no earlier version" in result.stderr
    events = cli.json("models", "history", "m")["results"]["events"]
    assert [e["event"] for e in events] == ["registered", "registered", "alias_moved", "alias_moved", "rolled_back"]
    assert events[3]["reason"] == "better" and events[4]["reason"] == "bad night"
    assert all(e["time"] and e["user"] for e in events)


def test_repeated_rollbacks_walk_back(cli, model_file, other_model_file, tmp_path):
    cli.json("register", model_file, "--name", "m")
    cli.json("register", other_model_file, "--name", "m")
    cli.json("register", model_file, "--name", "m", "--allow-duplicate")
    for version in ("1", "2", "3"):
        cli.json("models", "promote", f"m:{version}", "production")
    assert cli.json("models", "rollback", "m")["results"]["to"] == "2"
    assert cli.json("models", "rollback", "m")["results"]["to"] == "1"
    assert cli("models", "rollback", "m").exit_code == 4


def test_rollback_refuses_an_altered_artifact_and_unknown_models(cli, model_file, other_model_file, registry_dir):
    cli.json("register", model_file, "--name", "m")
    cli.json("register", other_model_file, "--name", "m")
    cli.json("models", "promote", "m:1", "production")
    cli.json("models", "promote", "m:2", "production")
    with (registry_dir / "m" / "versions" / "1" / "model.joblib").open("ab") as fh:
        fh.write(b"\0")
    result = cli("models", "rollback", "m")
    assert result.exit_code == 4 and "altered" in result.stderr
    assert cli.json("models", "list", "m")["results"]["aliases"] == {"production": "2"}  # not moved onto it
    result = cli("models", "rollback", "nosuch")
    assert result.exit_code == 4 and "no model named 'nosuch'" in result.stderr
    assert not (registry_dir / "nosuch").exists()  # and no trace of it on disk


def test_register_with_alias(cli, model_file):
    cli.json("register", model_file, "--name", "m", "--alias", "staging")
    assert cli.json("models", "list", "m")["results"]["aliases"] == {"staging": "1"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["models", "show", "nope"], "no model named 'nope'"),
        (["models", "show", "m:9"], "no version '9'"),
        (["models", "show", "m@production"], "no alias 'production'"),
        (["models", "promote", "m:9", "production"], "no version '9'"),
    ],
)
def test_not_found_is_exit_4(cli, model_file, args, message):
    cli.json("register", model_file, "--name", "m")
    result = cli(*args)
    assert result.exit_code == 4 and message in result.stderr


def test_altered_artifact_is_detected(registered, cli, registry_dir):
    artifact = registry_dir / "flights" / "versions" / "1" / "model.joblib"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    result = cli("models", "show", "flights:1")
    assert result.exit_code == 4 and "model.joblib was altered after registration" in result.stderr
    assert cli("models", "promote", "flights:1", "production").exit_code == 4
    with pytest.raises(IntegrityError):
        LoadedModel.load(Registry(registry_dir), "flights:1")


def test_load_model_verifies_then_unpickles(registered, registry_dir, model_file):
    loaded = LoadedModel.load(Registry(registry_dir), "flights")
    estimator, version = loaded.estimator, loaded.version
    assert type(estimator).__name__ == "Pipeline" and version.version == "1"


def test_other_scikit_learn_version_warns_or_fails_when_strict(registered, registry_dir):
    edit_manifest_as_registered(
        registry_dir / "flights", "1", lambda m: m["libraries"].update({"scikit-learn": "1.0.2"})
    )
    registry = Registry(registry_dir)
    with pytest.warns(MlopsWarning, match=r"scikit-learn 1\.0\.2.*this is scikit-learn"):
        LoadedModel.load(registry, "flights")
    with pytest.raises(VersionMismatch):
        LoadedModel.load(registry, "flights", LoadOptions(strict=True))


@pytest.mark.parametrize(
    "make, code, message",
    [
        (lambda p: None, 3, "no such model file"),
        (lambda p: p.write_bytes(b"not a pickle"), 3, "cannot be unpickled"),
        (lambda p: joblib.dump({"a": 1}, p), 3, "not an estimator"),
    ],
)
def test_bad_model_files(cli, tmp_path, make, code, message):
    path = tmp_path / "model.joblib"
    make(path)
    result = cli("register", path, "--name", "m")
    assert result.exit_code == code and message in result.stderr
    assert not (cli.registry / "m" / "versions").exists() or not any((cli.registry / "m" / "versions").iterdir())


def test_unfitted_model_is_refused(cli, tmp_path):
    from sklearn.linear_model import LogisticRegression

    joblib.dump(LogisticRegression(), tmp_path / "m.joblib")
    result = cli("register", tmp_path / "m.joblib", "--name", "m")
    assert result.exit_code == 3 and "not fitted" in result.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--train-data", "MISSING", "--target", "delayed"], "no such file"),
        (["--train-data", str(REFERENCE), "--target", "nope"], "no target column 'nope'"),
    ],
)
def test_bad_data_is_exit_3_and_leaves_no_version(cli, model_file, tmp_path, extra, message):
    extra = [str(tmp_path / "missing.parquet") if a == "MISSING" else a for a in extra]
    result = cli("register", model_file, "--name", "m", *extra)
    assert result.exit_code == 3 and message in result.stderr, result.stderr
    assert not (cli.registry / "m" / "versions").exists() or not any((cli.registry / "m" / "versions").iterdir())
    assert not any((cli.registry / "m" / ".staging").glob("*")) if (cli.registry / "m").exists() else True


def test_training_data_without_model_columns(cli, model_file, tmp_path):
    data = tmp_path / "narrow.parquet"
    io.write_table(data, pd.DataFrame({"temp": [1.0], "delayed": [0]}))
    result = cli("register", model_file, "--name", "m", "--train-data", data, "--target", "delayed")
    assert result.exit_code == 3 and "lacks the model's feature columns" in result.stderr


# --- the CLI contract: output options, errors ------------------------------------------------------------------


def test_json_error_envelope_and_one_line_error(cli):
    result = cli("models", "show", "nope", "--json")
    assert result.exit_code == 4
    report = json.loads(result.stdout)
    assert (report["status"], report["exit_code"], report["command"]) == ("error", 4, "models show")
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no model named 'nope'")


def test_output_file_and_overwrite(cli, model_file, tmp_path):
    out = tmp_path / "report.json"
    cli.json("register", model_file, "--name", "m", "-o", out)
    assert json.loads(out.read_text())["results"]["version"] == "1"
    # An existing output is refused before any work: no second version is registered.
    result = cli("register", model_file, "--name", "m", "--allow-duplicate", "-o", out)
    assert result.exit_code == 3 and "already exists" in result.stderr
    assert len(cli.json("models", "list", "m")["results"]["versions"]) == 1
    cli.json("models", "list", "-o", out, "--overwrite")
    assert json.loads(out.read_text())["command"] == "models list"


def test_envelope_fields(cli, model_file):
    report = cli.json("register", model_file, "--name", "m")
    assert set(report) == {
        "schema_version",
        "command",
        "mlops_version",
        "created_at",
        "status",
        "exit_code",
        "inputs",
        "model",
        "results",
        "messages",
    }
    assert report["created_at"].endswith("Z") and report["status"] == "pass" and report["exit_code"] == 0


def test_quiet_prints_nothing(cli, model_file):
    result = cli("register", model_file, "--name", "m", "-q")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""


def test_tables_have_no_colour_codes_when_not_a_terminal(cli, registered):
    result = cli("models", "show", "flights")
    assert result.exit_code == 0 and "\x1b[" not in result.stdout and "input schema" in result.stdout


def test_unexpected_exception_is_exit_5_with_traceback_file(cli, model_file, monkeypatch, tmp_path):
    import tempfile
    from pathlib import Path

    from mlops_cli import register as registry_module  # registering moved out of registry.py

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def broken(*args, **kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(registry_module, "register", broken)
    result = cli("register", model_file, "--name", "m")
    assert result.exit_code == 5
    line = result.stderr.strip()
    assert line.startswith("error: internal error: ZeroDivisionError: simulated bug") and "\n" not in line
    path = line.split("traceback saved to ")[1].rstrip(")")
    assert Path(path).parent == tmp_path and "ZeroDivisionError" in Path(path).read_text()


def test_usage_error_is_exit_2(cli):
    assert cli("register").exit_code == 2
    assert cli("models", "list", "--no-such-option").exit_code == 2
    assert cli("register", "x.joblib", "--name", "m", "--metric", "auc").exit_code == 2


# --- retries, crashes and damage (found in review) -------------------------------------------------------------


def test_promoting_where_the_alias_already_points_is_not_a_step(cli, model_file, other_model_file):
    cli.json("register", model_file, "--name", "m")
    cli.json("register", other_model_file, "--name", "m")
    cli.json("models", "promote", "m:1", "production")
    cli.json("models", "promote", "m:2", "production")
    again = cli.json("models", "promote", "m:2", "production")["results"]  # a retried release step
    assert (again["from"], again["to"]) == ("2", "2")
    assert [e["event"] for e in cli.json("models", "history", "m")["results"]["events"]].count("alias_moved") == 2
    rolled = cli.json("models", "rollback", "m")["results"]
    assert (rolled["from"], rolled["to"]) == ("2", "1")


def test_a_retried_register_still_sets_its_alias(cli, model_file):
    cli.json("register", model_file, "--name", "m")  # the first try died before it set the alias
    retry = cli.json("register", model_file, "--name", "m", "--alias", "production")
    assert retry["results"]["version"] == "1"
    assert cli.json("models", "list", "m")["results"]["aliases"] == {"production": "1"}


def test_rollback_after_a_crash_between_the_alias_file_and_its_event(cli, model_file, other_model_file, registry_dir):
    cli.json("register", model_file, "--name", "m")
    cli.json("register", other_model_file, "--name", "m")
    cli.json("models", "promote", "m:1", "production")
    (registry_dir / "m" / "aliases.json").write_text('{"production": "2"}')  # moved, but the event never logged
    rolled = cli.json("models", "rollback", "m")["results"]
    assert (rolled["from"], rolled["to"]) == ("2", "1")


def test_an_event_after_a_torn_line_stands_on_its_own_line(cli, model_file, other_model_file, registry_dir):
    cli.json("register", model_file, "--name", "m")
    cli.json("register", other_model_file, "--name", "m")
    with (registry_dir / "m" / "events.jsonl").open("a") as fh:
        fh.write('{"event": "alias_mo')  # a crash mid-append
    cli.json("models", "promote", "m:1", "production")
    cli.json("models", "promote", "m:2", "production")
    events = cli.json("models", "history", "m")["results"]["events"]
    assert [e["event"] for e in events] == ["registered", "registered", "alias_moved", "alias_moved"]
    assert cli.json("models", "rollback", "m")["results"]["to"] == "1"


def test_latest_is_a_reference_and_a_reserved_word(cli, model_file, other_model_file):
    cli.json("register", model_file, "--name", "m")
    cli.json("register", other_model_file, "--name", "m")
    assert cli.json("models", "show", "m:latest")["results"]["manifest"]["version"] == "2"
    for args in (
        ("models", "promote", "m:1", "latest"),
        ("register", model_file, "--name", "n", "--version", "latest"),
    ):
        result = cli(*args)
        assert result.exit_code == 4 and "reserved" in result.stderr


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "versions" / "1" / "manifest.json").write_text('{"name": "m"}'), "damaged"),
        (lambda d: (d / "aliases.json").write_text("{not json"), "unreadable"),
    ],
)
def test_a_damaged_registry_is_exit_4_and_does_not_hide_other_models(cli, model_file, registry_dir, damage, message):
    cli.json("register", model_file, "--name", "m")
    cli.json("register", model_file, "--name", "ok")
    damage(registry_dir / "m")
    result = cli("models", "show", "m:1" if message == "damaged" else "m@production")
    assert result.exit_code == 4 and message in result.stderr and result.stderr.count("\n") == 1
    listed = cli.json("models", "list")
    by_name = {m["name"]: m for m in listed["results"]["models"]}
    assert by_name["ok"]["versions"] == 1
    assert message in by_name["m"]["error"] and listed["messages"]


def test_metrics_file_values_must_be_numbers(cli, model_file, tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"auc": "high"}')
    result = cli("register", model_file, "--name", "m", "--metrics-file", metrics)
    assert result.exit_code == 3 and "'auc'" in result.stderr


def test_output_that_is_a_folder_is_refused(cli, tmp_path):
    result = cli("models", "list", "-o", tmp_path, "--overwrite")
    assert result.exit_code == 3 and "is a folder" in result.stderr


def test_a_failed_command_leaves_its_error_report_in_the_output_file(cli, tmp_path):
    out = tmp_path / "report.json"
    assert cli("models", "show", "nope", "-o", out).exit_code == 4
    report = json.loads(out.read_text())
    assert (report["status"], report["exit_code"], report["command"]) == ("error", 4, "models show")
    # ...but an output that exists without --overwrite is the error itself, and is kept
    out.write_text("yesterday")
    assert cli("models", "show", "nope", "-o", out).exit_code == 3
    assert out.read_text() == "yesterday"


@pytest.mark.parametrize(
    "command",
    [
        ("drift-report", CURRENT, "--model", "flights"),
        ("retrain", "flights", "--data", CURRENT, "--target", "delayed", "--check-only", "--trigger", "schedule"),
    ],
)
def test_every_command_that_loads_a_model_has_strict(cli, registered, registry_dir, command):
    edit_manifest_as_registered(
        registry_dir / "flights", "1", lambda m: m["libraries"].update({"scikit-learn": "1.0.2"})
    )
    if command[0] == "retrain":
        cli.json("models", "promote", "flights:1", "production")
    result = cli(*command, "--strict")
    assert result.exit_code == 4 and "scikit-learn 1.0.2" in result.stderr
    relaxed = cli(*command, "--json")
    assert relaxed.exit_code == 0 and "warning: flights:1 was registered under scikit-learn 1.0.2" in relaxed.stderr


def test_rerunning_an_old_register_does_not_move_the_alias_back(cli, model_file, other_model_file):
    cli.json("register", model_file, "--name", "m", "--alias", "production")
    cli.json("register", other_model_file, "--name", "m", "--alias", "production")
    cli.json("register", model_file, "--name", "m", "--alias", "production")  # last week's CI job, re-run
    assert cli.json("models", "list", "m")["results"]["aliases"] == {"production": "2"}


def test_rollback_after_a_crash_while_promoting_an_older_version(cli, model_file, other_model_file, registry_dir):
    for path in (model_file, other_model_file):
        cli.json("register", path, "--name", "m")
    cli.json("register", model_file, "--name", "m", "--allow-duplicate")
    for version in ("1", "2", "3"):
        cli.json("models", "promote", f"m:{version}", "production")
    (registry_dir / "m" / "aliases.json").write_text('{"production": "1"}')  # re-promoting 1: its event was lost
    rolled = cli.json("models", "rollback", "m")["results"]
    assert (rolled["from"], rolled["to"]) == ("1", "3")
