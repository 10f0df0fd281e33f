"""One runtime: the same file gets the same predictions from every command.

One CSV of labelled flights, every number in it read as text (as a CSV gives them), goes to register's eval
metrics, score-batch, drift-report, abtest's model comparison, smoke-test, checklist and retrain's performance
trigger. Each reports something computed from the model's predictions on those rows; each must equal what
score-batch wrote, computed independently here with scikit-learn's metrics.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import CURRENT, REFERENCE
from sklearn.metrics import accuracy_score, roc_auc_score

from mlops_cli import io


@pytest.fixture
def labelled_csv(tmp_path) -> tuple:
    """3,000 labelled June-August flights as a CSV, with a few rows whose numbers carry spaces and a plus sign:
    text that the input contract coerces to the same numbers."""
    frame = io.read_table(CURRENT)
    frame = frame[frame["delayed"].notna()].head(3_000).reset_index(drop=True)
    frame["delayed"] = frame["delayed"].astype(int)
    text = frame.astype(str).replace({"nan": "", "<NA>": "", "None": ""})
    text.loc[::50, "distance"] = " +" + text.loc[::50, "distance"] + " "
    path = tmp_path / "labelled.csv"
    text.to_csv(path, index=False)
    return path, frame


def test_every_command_gets_the_same_predictions(cli, model_file, tmp_path, labelled_csv):
    path, frame = labelled_csv
    registered = cli.json(
        "register", model_file, "--name", "flights", "--train-data", REFERENCE, "--target", "delayed",
        "--eval-data", path, "--bootstrap", "50",
    )  # fmt: skip
    out = tmp_path / "scored.parquet"
    scored = cli.json("score-batch", "flights", path, out)
    assert scored["results"]["rows_scored"] == len(frame) and scored["model"]["runtime"] == "sklearn"
    predictions = io.read_table(out)
    y = frame["delayed"].to_numpy()
    accuracy = accuracy_score(y, predictions["prediction"])
    auc = roc_auc_score(y, predictions["proba_1"])

    # the typed Parquet rows score the same as their text in the CSV
    typed = tmp_path / "typed.parquet"
    frame.to_parquet(typed)
    cli.json("score-batch", "flights", typed, tmp_path / "typed-scored.parquet")
    pd.testing.assert_frame_equal(predictions, io.read_table(tmp_path / "typed-scored.parquet"))

    recorded = registered["results"]["eval_metrics"]
    assert recorded["accuracy"]["value"] == pytest.approx(accuracy, abs=1e-12)
    assert recorded["roc_auc"]["value"] == pytest.approx(auc, abs=1e-12)

    models = cli.json(
        "abtest", "--champion", "flights:1", "--challenger", "flights:1", "--data", path, "--bootstrap", "50",
        expect=1,
    )  # fmt: skip
    assert models["results"]["champion"]["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert models["results"]["champion"]["metrics"]["roc_auc"] == pytest.approx(auc, abs=1e-12)

    drift = cli.json("drift-report", path, "--model", "flights:1")
    performance = drift["results"]["summary"]["performance"]["metrics"]
    assert performance["accuracy"]["current"] == pytest.approx(accuracy, abs=1e-12)
    prediction_drift = drift["results"]["summary"]["prediction_drift"]
    assert prediction_drift["mean_current"] == pytest.approx(predictions["proba_1"].mean(), abs=1e-12)

    smoke = cli.json("smoke-test", "flights:1", "--data", path, "--max-latency-ms", "2000")
    single = next(s for s in smoke["results"]["steps"] if s["id"] == "single_row")["evidence"]
    assert single["prediction"] == [int(predictions["prediction"].iloc[0])]
    assert single["probabilities"] == pytest.approx([predictions["proba_0"].iloc[0], predictions["proba_1"].iloc[0]])

    cli.json("models", "promote", "flights:1", "production")
    retrain = cli.json(
        "retrain", "flights", "--data", path, "--target", "delayed", "--trigger", "performance", "--check-only",
        "--metric", "accuracy",
    )  # fmt: skip
    assert retrain["results"]["job"]["triggers"]["performance"]["current"] == pytest.approx(accuracy, abs=1e-12)

    result = cli("checklist", "flights:1", "--eval-data", path, "--policy", _relaxed(tmp_path), "--json")
    checklist = json.loads(result.stdout)
    smoke_item = next(i for i in checklist["results"]["items"] if i["id"] == "smoke_test")
    assert smoke_item["status"] == "pass", smoke_item


def _relaxed(tmp_path):
    path = tmp_path / "relaxed.toml"
    path.write_text("[budgets]\nlatency_p99_ms = 2000\n")
    return path


def test_text_rows_that_break_the_contract_are_counted_not_fatal_in_drift(cli, model_file, tmp_path, labelled_csv):
    path, frame = labelled_csv
    cli.json("register", model_file, "--name", "flights", "--train-data", REFERENCE, "--target", "delayed")
    broken = pd.read_csv(path, dtype=str, keep_default_na=False)
    broken.loc[:9, "temp"] = "warm"
    bad = tmp_path / "bad.csv"
    broken.to_csv(bad, index=False)
    drift = cli.json("drift-report", bad, "--model", "flights:1")
    assert any(
        "10 rows of CURRENT break the input contract" in m and "temp: not a number" in m for m in drift["messages"]
    )
    assert drift["results"]["summary"]["prediction_drift"] is not None
    assert np.isfinite(drift["results"]["summary"]["prediction_drift"]["mean_current"])
