"""score-batch: predictions equal the model's own, schema checks, --on-invalid, challenger split, interrupted runs,
bounded memory."""

from __future__ import annotations

import io as stdio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import CURRENT, CURRENT_CSV, REFERENCE, ROOT, Cli
from conftest import sample_train as train
from rich.console import Console

from mlops_cli import io, render, scoring
from mlops_cli.profile import QUANTILES
from mlops_cli.registry import Registry
from mlops_cli.report import Report
from mlops_cli.runtime.predictor import Predictor

FEATURES = train.FEATURES


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reg(tmp_path_factory, model_file, other_model_file) -> Cli:
    """One registry for the module: flights:1 and :2 (accept anything), `strict` (rejects NaNs and unseen
    categories; the same artifact as flights:1), flights@production -> 1."""
    cli = Cli(tmp_path_factory.mktemp("scoring") / "registry")
    common = ["--train-data", REFERENCE, "--target", "delayed", "--sample-size", "500", "-q"]
    for args in (
        [model_file, "--name", "flights"],
        [other_model_file, "--name", "flights"],
        [model_file, "--name", "strict", "--rejects-missing", "--rejects-unseen"],
    ):
        assert cli("register", *args, *common).exit_code == 0
    assert cli("models", "promote", "flights:1", "production", "-q").exit_code == 0
    return cli


@pytest.fixture(scope="module")
def model(model_file):
    return joblib.load(model_file)


@pytest.fixture(scope="module")
def other_model(other_model_file):
    return joblib.load(other_model_file)


def _score(reg: Cli, *args, expect: int = 0) -> dict:
    return reg.json("score-batch", *args, expect=expect)


def _expected(model, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return model.predict(frame[FEATURES]), model.predict_proba(frame[FEATURES])


def _assert_predictions(out: pd.DataFrame, model, frame: pd.DataFrame) -> None:
    prediction, proba = _expected(model, frame)
    np.testing.assert_array_equal(out["prediction"].to_numpy(), prediction)
    for i, label in enumerate(model.classes_):
        np.testing.assert_allclose(out[f"proba_{label}"].to_numpy(), proba[:, i], rtol=0, atol=1e-12)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


# --- predictions ----------------------------------------------------------------------------------------------


def test_parquet_predictions_equal_the_models_own(reg, tmp_path, model, current_frame):
    out = tmp_path / "scores.parquet"
    report = _score(reg, "flights@production", CURRENT, out, "--id-column", "flight", "--keep-columns", "date,delayed")
    scores = pd.read_parquet(out)
    assert list(scores.columns) == [
        "flight",
        "date",
        "delayed",
        "prediction",
        "proba_0",
        "proba_1",
        "model_name",
        "model_version",
    ]
    _assert_predictions(scores, model, current_frame)
    np.testing.assert_array_equal(scores["flight"], current_frame["flight"])  # row order preserved
    assert (scores["model_name"] == "flights").all() and (scores["model_version"] == "1").all()

    r = report["results"]
    assert (r["rows_read"], r["rows_scored"], r["rows_rejected"], r["rows_written"]) == (30_000, 30_000, 0, 30_000)
    assert report["inputs"][0]["sha256"] == io.sha256_file(CURRENT) and report["inputs"][0]["rows"] == 30_000
    assert report["model"]["sha256"] == io.sha256_file(reg.registry / "flights/versions/1/model.joblib")
    assert r["rows_per_second"] > 0 and r["peak_rss_mb"] > 0 and r["split"] is None
    # The prediction distribution: exact below QUANTILE_SAMPLE rows, so it must match numpy on the same values.
    prediction, proba = _expected(model, current_frame)
    summary = r["models"][0]["prediction"]
    assert summary["rows"] == 30_000 and summary["quantiles_exact"] is True
    assert summary["class_shares"]["1"] == pytest.approx(np.mean(prediction == 1), abs=1e-12)
    assert summary["proba_mean"]["1"] == pytest.approx(proba[:, 1].mean(), abs=1e-12)
    expected_q = np.quantile(proba[:, 1], QUANTILES)
    assert [summary["proba_quantiles"]["1"][f"{q:g}"] for q in QUANTILES] == pytest.approx(expected_q, abs=1e-12)


def test_csv_predictions_equal_the_models_own(reg, tmp_path, model):
    out = tmp_path / "scores.csv"
    report = _score(reg, "flights:1", CURRENT_CSV, out, "--id-column", "flight", "--batch-size", "7000")
    scores = pd.read_csv(out)
    _assert_predictions(scores, model, io.read_table(CURRENT_CSV))
    assert report["results"]["batches"] == 5 and report["results"]["input_format"] == "csv"


def test_folder_of_parquet_files_in_name_order(reg, tmp_path, model, current_frame):
    folder = tmp_path / "parts.parquet"
    folder.mkdir()
    for i, (start, stop) in enumerate([(0, 9_000), (9_000, 9_001), (9_001, 30_000)]):
        _write(current_frame.iloc[start:stop], folder / f"part-{i}.parquet")
    out = tmp_path / "scores.parquet"
    report = _score(reg, "flights:1", folder, out, "--keep-all", "--batch-size", "4000")
    scores = pd.read_parquet(out)
    _assert_predictions(scores, model, current_frame)
    assert list(scores.columns[:17]) == list(current_frame.columns)
    assert report["results"]["rows_read"] == 30_000


def test_extra_columns_any_order_and_safe_coercion(reg, tmp_path, model, current_frame):
    frame = current_frame[list(reversed(current_frame.columns))].assign(extra="x")
    frame["distance"] = frame["distance"].astype("float64")  # ints trained, floats given
    frame["sched_dep_hour"] = frame["sched_dep_hour"].astype("int64")
    frame["temp"] = frame["temp"].map(lambda v: None if pd.isna(v) else repr(v))  # numbers as text
    out = tmp_path / "scores.parquet"
    _score(reg, "flights:1", _write(frame, tmp_path / "in.parquet"), out)
    _assert_predictions(pd.read_parquet(out), model, current_frame)


def test_no_proba_and_csv_gz_output(reg, tmp_path, model, current_frame):
    out = tmp_path / "scores.csv.gz"
    report = _score(reg, "flights:1", CURRENT, out, "--no-proba")
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["prediction", "model_name", "model_version"]
    np.testing.assert_array_equal(scores["prediction"], model.predict(current_frame[FEATURES]))
    assert "proba_mean" not in report["results"]["models"][0]["prediction"]


def test_regressor(reg, tmp_path, current_frame):
    from sklearn.linear_model import LinearRegression

    numeric = ["distance", "sched_dep_hour", "day_of_week"]
    regressor = LinearRegression().fit(current_frame[numeric], current_frame["temp"].fillna(70))
    joblib.dump(regressor, tmp_path / "reg.joblib")
    assert reg("register", tmp_path / "reg.joblib", "--name", "temp-lr", "-q").exit_code == 0
    out = tmp_path / "scores.parquet"
    report = _score(reg, "temp-lr", CURRENT, out, "--batch-size", "6000")
    expected = regressor.predict(current_frame[numeric])
    np.testing.assert_allclose(pd.read_parquet(out)["prediction"], expected, rtol=0, atol=1e-12)
    summary = report["results"]["models"][0]["prediction"]
    assert summary["mean"] == pytest.approx(expected.mean(), rel=1e-12)
    assert summary["std"] == pytest.approx(expected.std(ddof=1), rel=1e-9)
    assert (summary["min"], summary["max"]) == (expected.min(), expected.max())
    assert summary["quantiles"]["0.5"] == pytest.approx(np.median(expected), abs=1e-12)


def test_quantile_sample_does_not_depend_on_the_batch_size(reg, tmp_path, monkeypatch, model, current_frame):
    monkeypatch.setattr(scoring, "QUANTILE_SAMPLE", 2_000)
    registry = Registry(reg.registry)
    results = []
    for batch_size in (1_000, 30_000):
        out = tmp_path / f"scores-{batch_size}.parquet"
        options = scoring.ScoreOptions(batch_size=batch_size)
        results.append(scoring.score_batch(registry, "flights:1", CURRENT, out, options=options).results)
    first, second = (r["models"][0]["prediction"] for r in results)
    # The sample, hence the quantiles, is the same whatever the batches; sums differ in the last bits at most.
    assert first["proba_quantiles"] == second["proba_quantiles"] and first["quantiles_exact"] is False
    assert first["proba_mean"]["1"] == pytest.approx(second["proba_mean"]["1"], abs=1e-12)
    exact = np.quantile(model.predict_proba(current_frame[FEATURES])[:, 1], [0.25, 0.5, 0.75])
    estimate = [first["proba_quantiles"]["1"][k] for k in ("0.25", "0.5", "0.75")]
    assert estimate == pytest.approx(exact, abs=0.02)


def test_predictor_falls_back_to_predict_when_argmax_differs():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import FixedThresholdClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(3_000, 3))
    y = (X[:, 0] + rng.normal(size=3_000) > 0).astype(int)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    thresholded = FixedThresholdClassifier(LogisticRegression(), threshold=0.2).fit(frame, y)
    predictor = Predictor(thresholded, task="classifier")
    prediction, proba = predictor.predict(frame)
    np.testing.assert_array_equal(prediction, thresholded.predict(frame))
    assert predictor._argmax_is_predict is False and proba.shape == (3_000, 2)
    # Fitted on an array: no "X has feature names" warning (an error under this suite's filterwarnings).
    plain = LogisticRegression().fit(X, y)
    prediction, _ = Predictor(plain, task="classifier").predict(frame)
    np.testing.assert_array_equal(prediction, plain.predict(X))


# --- schema errors --------------------------------------------------------------------------------------------


def test_missing_feature_column_is_exit_3_naming_it(reg, tmp_path, current_frame):
    source = _write(current_frame.drop(columns=["temp", "carrier"]), tmp_path / "in.parquet")
    out = tmp_path / "scores.parquet"
    result = reg("score-batch", "flights", source, out)
    assert result.exit_code == 3 and "'carrier'" in result.stderr and "'temp'" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [source]


def test_a_column_of_the_wrong_type_is_exit_3(reg, tmp_path, current_frame):
    source = _write(current_frame.assign(carrier=1), tmp_path / "in.parquet")
    result = reg("score-batch", "flights", source, tmp_path / "scores.parquet")
    assert result.exit_code == 3 and "'carrier'" in result.stderr


def test_existing_output_is_refused_before_any_work(reg, tmp_path):
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"previous")
    result = reg("score-batch", "no-such-model", CURRENT, out)  # exit 3 (output), not 4 (model): checked first
    assert result.exit_code == 3 and "already exists" in result.stderr and out.read_bytes() == b"previous"
    _score(reg, "flights", CURRENT, out, "--overwrite")
    assert pq.read_metadata(out).num_rows == 30_000


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--keep-columns", "nope"], 3, "nope"),
        (["--keep-all", "--keep-columns", "flight"], 2, "--keep-all"),
        (["--challenger", "flights:2"], 2, "--split-key"),
        (["--split-key", "flight"], 2, "--challenger"),
        (["--challenger", "flights:2", "--split-key", "flight", "--challenger-share", "1"], 2, "share"),
        (["--challenger", "flights:2", "--split-key", "nope"], 3, "nope"),
    ],
)
def test_bad_options(reg, tmp_path, args, code, words):
    result = reg("score-batch", "flights", CURRENT, tmp_path / "scores.parquet", *args)
    assert result.exit_code == code and words in result.output, result.output
    assert not (tmp_path / "scores.parquet").exists()


def test_bad_paths(reg, tmp_path, current_frame):
    cases = [
        (tmp_path / "missing.parquet", tmp_path / "a.parquet", 3, "no such file"),
        (_write(current_frame.head(0), tmp_path / "empty.parquet"), tmp_path / "b.parquet", 3, "no rows"),
        (CURRENT, tmp_path / "no-folder" / "c.parquet", 3, "does not exist"),
        (CURRENT, tmp_path / "d.txt", 2, ".parquet"),
    ]
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(CURRENT.read_bytes()[:5_000])
    cases.append((corrupt, tmp_path / "e.parquet", 3, "corrupt.parquet"))
    for source, out, code, words in cases:
        result = reg("score-batch", "flights", source, out)
        assert result.exit_code == code and words in result.output, (source, result.output)
        assert not out.exists()
    _score(reg, "flights", CURRENT, tmp_path / "f.parquet", "--keep-all")
    result = reg("score-batch", "flights", tmp_path / "f.parquet", tmp_path / "g.parquet", "--keep-all")
    assert result.exit_code == 3 and "clash" in result.stderr and "'prediction'" in result.stderr


def test_altered_artifact_is_exit_4(reg, tmp_path):
    import shutil

    copy = tmp_path / "registry"
    shutil.copytree(reg.registry, copy)
    with (copy / "flights/versions/1/model.joblib").open("ab") as fh:
        fh.write(b"\0")
    result = Cli(copy)("score-batch", "flights:1", CURRENT, tmp_path / "scores.parquet")
    assert result.exit_code == 4 and "altered" in result.stderr
    assert not (tmp_path / "scores.parquet").exists()


# --- --on-invalid ---------------------------------------------------------------------------------------------


@pytest.fixture
def dirty(tmp_path, current_frame) -> tuple[Path, pd.DataFrame]:
    """40 rows: temp missing in rows 3 and 6 (1-based), carrier unseen ('ZZ') in row 8 and also temp in row 6."""
    frame = current_frame[current_frame[FEATURES].notna().all(axis=1)].head(40).reset_index(drop=True)
    frame.loc[[2, 5], "temp"] = np.nan
    frame.loc[[5, 7], "carrier"] = "ZZ"
    return _write(frame, tmp_path / "dirty.parquet"), frame


def test_on_invalid_fail_names_rows_and_columns(reg, tmp_path, dirty):
    source, _ = dirty
    out = tmp_path / "scores.parquet"
    result = reg("score-batch", "strict", source, out)
    assert result.exit_code == 3 and not out.exists()
    assert "temp: missing value (rows 3, 6)" in result.stderr
    assert "carrier: unseen category (rows 6, 8, e.g. 'ZZ')" in result.stderr
    assert "3 row(s) cannot be scored" in result.stderr
    # The same rows are fine for a model that accepts NaNs and unseen categories.
    _score(reg, "flights", source, out)


def test_on_invalid_skip_leaves_rows_out_and_counts_them(reg, tmp_path, dirty, model):
    source, frame = dirty
    out = tmp_path / "scores.parquet"
    r = _score(reg, "strict", source, out, "--on-invalid", "skip", "--id-column", "flight")["results"]
    assert (r["rows_read"], r["rows_scored"], r["rows_rejected"], r["rows_written"]) == (40, 37, 3, 37)
    assert r["rejected_by_reason"] == {"temp: missing value": 2, "carrier: unseen category": 2}
    kept = frame.drop(index=[2, 5, 7])
    scores = pd.read_parquet(out)
    _assert_predictions(scores, model, kept)
    np.testing.assert_array_equal(scores["flight"], kept["flight"])


def test_on_invalid_null_keeps_rows_with_a_reason(reg, tmp_path, dirty, model):
    source, frame = dirty
    out = tmp_path / "scores.csv"
    r = _score(reg, "strict", source, out, "--on-invalid", "null")["results"]
    assert (r["rows_read"], r["rows_scored"], r["rows_rejected"], r["rows_written"]) == (40, 37, 3, 40)
    scores = pd.read_csv(out)
    assert scores["invalid_reason"].fillna("").tolist()[:8] == [
        "",
        "",
        "temp: missing value",
        "",
        "",
        "carrier: unseen category; temp: missing value",
        "",
        "carrier: unseen category",
    ]
    bad = scores["invalid_reason"].notna()
    assert scores.loc[bad, ["prediction", "proba_0", "proba_1"]].isna().all().all()
    _assert_predictions(scores[~bad].astype({"prediction": int}), model, frame[~bad.to_numpy()])


def test_text_that_is_not_a_number_follows_on_invalid(reg, tmp_path, current_frame):
    text = current_frame.head(50).copy()
    text["distance"] = text["distance"].astype(str)
    text.loc[10, "distance"] = "far"
    source = _write(text, tmp_path / "in.csv")
    for name in ("flights", "strict"):  # `strict` also checks for missing values: the bad text is not one
        out = tmp_path / f"{name}.parquet"
        result = reg("score-batch", name, source, out)
        assert result.exit_code == 3 and "distance: not a number (row 11, e.g. 'far')" in result.stderr
        r = _score(reg, name, source, out, "--on-invalid", "skip")["results"]
        assert r["rejected_by_reason"] == {"distance: not a number": 1} and r["rows_written"] == 49


def test_a_decision_threshold_is_honoured_however_the_input_is_ordered(reg, tmp_path, model_file, current_frame):
    from broken_models import HighThreshold
    from sklearn.model_selection import FixedThresholdClassifier

    from mlops_cli.runtime import predictor as model_lib

    thresholded = HighThreshold(joblib.load(model_file))
    path = tmp_path / "thr.joblib"
    joblib.dump(thresholded, path)
    assert reg("register", path, "--name", "thr", "--train-data", REFERENCE, "--target", "delayed", "-q").exit_code == 0
    # The first rows are the surest (the argmax and the threshold agree there); the differing ones come later.
    p1 = thresholded.predict_proba(current_frame[FEATURES])[:, 1]
    ordered = current_frame.iloc[np.argsort(np.abs(p1 - 0.6))[::-1]].reset_index(drop=True)
    source = _write(ordered, tmp_path / "ordered.parquet")
    out = tmp_path / "scores.parquet"
    _score(reg, "thr", source, out, "--batch-size", "200")
    scored = pd.read_parquet(out)
    np.testing.assert_array_equal(scored["prediction"].to_numpy(), thresholded.predict(ordered[FEATURES]))
    # scikit-learn's own threshold classifiers are known without a comparison
    fixed = FixedThresholdClassifier(joblib.load(model_file), threshold=0.7)
    assert model_lib._has_decision_threshold(fixed) and not model_lib._has_decision_threshold(joblib.load(model_file))


def test_an_output_that_appears_mid_run_is_not_replaced(tmp_path):
    from mlops_cli.errors import OutputExists

    out = tmp_path / "scores.parquet"
    table = pa.table({"x": [1.0, 2.0]})
    with pytest.raises(OutputExists, match="appeared"), io.TableWriter(out, table.schema, overwrite=False) as writer:
        writer.write(table)
        out.write_bytes(b"the other run's file")  # a second cron run finished first
    assert out.read_bytes() == b"the other run's file" and [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]
    with io.TableWriter(out, table.schema, overwrite=True) as writer:  # --overwrite: replacing is the point
        writer.write(table)
    assert pq.read_table(out).num_rows == 2


# --- challenger split -----------------------------------------------------------------------------------------


def test_split_hash_known_answers():
    # Published FNV-1a 64 test vectors, and splitmix64's first output for seed 0 (its finalizer of the golden gamma).
    assert [int(h) for h in scoring.fnv1a64(pa.array(["", "a", "foobar"]))] == [
        0xCBF29CE484222325,
        0xAF63DC4C8601EC8C,
        0x85944171F73967E8,
    ]
    assert int(scoring.splitmix64(np.array([0x9E3779B97F4A7C15], dtype=np.uint64))[0]) == 0xE220A8397B1DCDAF
    # A sliced array (what a CSV re-batch hands over) hashes like a fresh one; ints hash as their decimal text.
    sliced = pa.array(["zz", "flight-1", "é", "a much longer key than the others"]).slice(1, 3)
    np.testing.assert_array_equal(scoring.fnv1a64(sliced), scoring.fnv1a64(pa.array(sliced.to_pylist())))
    np.testing.assert_array_equal(
        scoring.split_hash(scoring.key_text([pa.array([17, 4242])])), scoring.split_hash(pa.array(["17", "4242"]))
    )


def test_split_hash_is_the_same_in_another_process():
    keys = [str(k) for k in range(0, 5_000, 7)]
    here = scoring.split_hash(pa.array(keys)).tolist()
    code = (
        "import json, sys, pyarrow as pa; from mlops_cli.scoring import split_hash; "
        "print(json.dumps(split_hash(pa.array(json.loads(sys.stdin.read()))).tolist()))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "123"},
        check=True,
    )
    assert json.loads(other.stdout) == here


def test_challenger_split_is_deterministic_and_close_to_the_share(reg, tmp_path, current_frame, model, other_model):
    source = _write(current_frame.assign(row_id=np.arange(len(current_frame))), tmp_path / "in.parquet")
    args = [
        "flights@production",
        source,
        "--challenger",
        "flights:2",
        "--challenger-share",
        "0.3",
        "--split-key",
        "row_id",
        "--id-column",
        "row_id",
    ]
    first = _score(reg, *args[:2], tmp_path / "a.parquet", *args[2:], "--batch-size", "7000")["results"]
    second = _score(reg, *args[:2], tmp_path / "b.parquet", *args[2:])["results"]
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    assert a["model_version"].tolist() == b["model_version"].tolist()
    to_challenger = (a["model_version"] == "2").to_numpy()
    assert abs(to_challenger.mean() - 0.3) < 0.02  # 30,000 independent keys: sd 0.0026
    assert first["split"]["observed_share"] == pytest.approx(to_challenger.mean())
    assert [m["rows_routed"] for m in first["models"]] == [int((~to_challenger).sum()), int(to_challenger.sum())]
    for one, other in zip(first["models"], second["models"], strict=True):
        assert one["rows_scored"] == other["rows_scored"]
        assert one["prediction"]["proba_quantiles"] == other["prediction"]["proba_quantiles"]
    # Each row was scored by the model that its row says.
    _assert_predictions(a[~to_challenger], model, current_frame[~to_challenger])
    _assert_predictions(a[to_challenger], other_model, current_frame[to_challenger])
    expected = scoring.split_hash(pa.array([str(i) for i in range(len(current_frame))])) < 0.3
    np.testing.assert_array_equal(to_challenger, expected)


def test_same_key_same_model_from_parquet_and_csv_and_rows_without_key(reg, tmp_path, current_frame):
    frame = current_frame.head(3_000).astype({"flight": "Int64"})
    frame.loc[[0, 10, 20], "flight"] = pd.NA
    args = ["--challenger", "flights:2", "--challenger-share", "0.5", "--split-key", "flight"]
    parquet = _score(reg, "flights@production", _write(frame, tmp_path / "in.parquet"), tmp_path / "a.parquet", *args)
    csv = _score(reg, "flights@production", _write(frame, tmp_path / "in.csv"), tmp_path / "b.parquet", *args)
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    assert a["model_version"].tolist() == b["model_version"].tolist()
    assert (a.assign(flight=frame["flight"]).groupby("flight")["model_version"].nunique() == 1).all()
    assert a.loc[[0, 10, 20], "model_version"].tolist() == ["1", "1", "1"]  # no key: the champion
    assert parquet["results"]["split"]["rows_without_key"] == csv["results"]["split"]["rows_without_key"] == 3


# --- rendering ------------------------------------------------------------------------------------------------


def test_tables_render(reg, tmp_path, dirty):
    source, _ = dirty
    report = _score(
        reg,
        "strict",
        source,
        tmp_path / "s.parquet",
        "--on-invalid",
        "skip",
        "--challenger",
        "flights:2",
        "--split-key",
        "flight",
        "--challenger-share",
        "0.01",
    )
    buffer = stdio.StringIO()
    render.render_score_batch(
        Report("score-batch", results=report["results"], inputs=report["inputs"], messages=report["messages"]),
        Console(file=buffer, width=100),
    )
    text = buffer.getvalue()
    assert "strict:1" in text and "flights:2" in text and "temp: missing value" in text and "proba_1" in text
    assert "split on flight" in text


# --- processes: interruption and memory -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_input(tmp_path_factory, current_frame) -> Path:
    """600,000 rows: long enough at --batch-size 500 that a signal lands mid-scoring, not in the final commit (where
    it is only recorded and the run completes, exit 0): 300,000 rows once finished that close on an idle machine."""
    path = tmp_path_factory.mktemp("big") / "big.parquet"
    pq.write_table(
        pa.Table.from_pandas(pd.concat([current_frame] * 20, ignore_index=True), preserve_index=False),
        path,
        row_group_size=20_000,
    )
    return path


def _start(reg: Cli, source: Path, out: Path, *args) -> subprocess.Popen:
    argv = [
        sys.executable,
        "-m",
        "mlops_cli",
        "--registry",
        str(reg.registry),
        "score-batch",
        "flights",
        str(source),
        str(out),
        "--batch-size",
        "500",
        *map(str, args),
    ]
    return subprocess.Popen(
        argv, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_until_writing(proc: subprocess.Popen, out: Path) -> None:
    """Until some batches are in the temporary file (the run is mid-way), or fail if it ends first."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        temps = list(out.parent.glob(f".{out.name}.*.tmp"))
        if temps and temps[0].exists() and temps[0].stat().st_size > 0:
            time.sleep(0.3)
            assert proc.poll() is None, "the run finished before it could be interrupted: make the input bigger"
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no temporary output appeared within 60 s")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_run_leaves_no_output(reg, tmp_path, big_input, signum, code):
    out = tmp_path / "scores.parquet"
    proc = _start(reg, big_input, out)
    _wait_until_writing(proc, out)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code and f"interrupted by {signal.Signals(signum).name}" in stderr
    assert list(tmp_path.iterdir()) == []  # neither OUTPUT nor a temporary file


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_overwrite_keeps_the_previous_file(reg, tmp_path, big_input, signum):
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"yesterday's predictions")
    proc = _start(reg, big_input, out, "--overwrite")
    _wait_until_writing(proc, out)
    proc.send_signal(signum)
    proc.communicate(timeout=60)
    assert proc.returncode == (143 if signum == signal.SIGTERM else -signal.SIGKILL)
    assert out.read_bytes() == b"yesterday's predictions"
    leftovers = {p.name for p in tmp_path.iterdir()} - {out.name}
    if signum == signal.SIGTERM:
        assert leftovers == set()
    else:  # SIGKILL cannot be caught: at most a hidden temporary file is left, never a partial OUTPUT
        assert all(name.startswith(f".{out.name}.") and name.endswith(".tmp") for name in leftovers)


@pytest.mark.slow
@pytest.mark.parametrize("suffix, big_rows", [(".parquet", 2_000_000), (".csv", 1_000_000)])
def test_memory_is_bounded_by_the_batch_not_the_file(reg, tmp_path, suffix, big_rows):
    from sklearn.linear_model import LogisticRegression

    columns = [f"x{i}" for i in range(8)]
    rng = np.random.default_rng(1)
    train_frame = pd.DataFrame(rng.normal(size=(2_000, 8)), columns=columns)
    fitted = LogisticRegression().fit(train_frame, (train_frame["x0"] > 0).astype(int))
    joblib.dump(fitted, tmp_path / "lr.joblib")
    assert reg("register", tmp_path / "lr.joblib", "--name", "wide", "-q").exit_code == 0

    def write(path: Path, rows: int) -> Path:
        schema = pa.schema([(c, pa.float64()) for c in columns])
        writer = pq.ParquetWriter(path, schema) if suffix == ".parquet" else pacsv.CSVWriter(str(path), schema)
        with writer:
            for _ in range(rows // 100_000):
                block = rng.normal(size=(100_000, 8))
                table = pa.table({c: block[:, i] for i, c in enumerate(columns)})
                if suffix == ".parquet":
                    writer.write_table(table, row_group_size=50_000)
                else:
                    writer.write_table(table)
        return path

    def peak_mb(source: Path) -> float:
        argv = [
            sys.executable,
            "-m",
            "mlops_cli",
            "--registry",
            str(reg.registry),
            "score-batch",
            "wide",
            str(source),
            str(tmp_path / f"{source.stem}-scores.parquet"),
            "--batch-size",
            "20000",
            "-q",
        ]
        with (tmp_path / "stderr.txt").open("w+") as stderr:
            proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=stderr)
            _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS, as benchmarks/_util.py measures it
            proc.returncode = os.waitstatus_to_exitcode(status)
            assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()
        return usage.ru_maxrss / 1024

    small = peak_mb(write(tmp_path / f"small{suffix}", 100_000))
    big = peak_mb(write(tmp_path / f"big{suffix}", big_rows))  # 128 MB of float64 (Parquet) or 190 MB of text (CSV)
    # Loading the big file whole would add at least its size (and pandas a copy); streaming adds next to nothing.
    # (pyarrow's threaded CSV reader read ahead without bound: +150 MB here before it was made single-threaded.)
    assert big < small + 80, (small, big)


def test_nested_columns_cannot_be_kept_in_a_csv_output(reg, tmp_path, current_frame):
    frame = current_frame.head(20).assign(legs=[[1, 2]] * 20)
    source = _write(frame, tmp_path / "nested.parquet")
    result = reg("score-batch", "flights", source, tmp_path / "out.csv", "--keep-all")
    assert result.exit_code == 3 and "'legs'" in result.stderr and "CSV" in result.stderr
    assert not (tmp_path / "out.csv").exists()
    _score(reg, "flights", source, tmp_path / "out.parquet", "--keep-all")  # Parquet holds them
    assert pd.read_parquet(tmp_path / "out.parquet")["legs"].map(list).tolist() == [[1, 2]] * 20


def test_a_model_that_calls_sys_exit_is_not_a_success(reg, tmp_path, model_file, current_frame):
    from broken_models import Exits

    path = tmp_path / "exits.joblib"
    joblib.dump(Exits(joblib.load(model_file)), path)
    assert reg("register", path, "--name", "exits", "-q").exit_code == 0
    source = _write(current_frame.head(50), tmp_path / "in.parquet")
    result = reg("score-batch", "exits", source, tmp_path / "out.parquet")
    assert result.exit_code == 5 and "SystemExit" in result.stderr
    assert list(tmp_path.glob("out*")) == [] and list(tmp_path.glob(".out*")) == []
