"""ONNX and skops beside pickle: stored at registration only when proven equal, loaded only as recorded."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import CURRENT, register_args
from custom_transformers import Log1p
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlops_cli.errors import IntegrityError, ModelNotFound
from mlops_cli.registry import Registry
from mlops_cli.runtime import LoadedModel, LoadOptions

NUMERIC = [f"f{i}" for i in range(6)]


def _numeric(tmp_path, estimator, *, regression: bool = False, nan: bool = False) -> tuple:
    """A fitted estimator on synthetic numeric data, written with its training data."""
    if regression:
        X, y = make_regression(n_samples=3_000, n_features=6, noise=5.0, random_state=0)
    else:
        X, y = make_classification(n_samples=3_000, n_features=6, n_informative=4, random_state=0)
    frame = pd.DataFrame(X, columns=NUMERIC)
    if nan:
        frame.loc[frame.index % 7 == 0, "f1"] = np.nan
    frame["y"] = y
    estimator.fit(frame[NUMERIC], frame["y"])
    model = tmp_path / "model.joblib"
    joblib.dump(estimator, model)
    train = tmp_path / "train.parquet"
    frame.to_parquet(train)
    return model, train, frame


def _register(cli, model, train, *extra):
    return cli.json("register", model, "--name", "m", "--train-data", train, "--target", "y", *extra)


def _both(registry_dir, ref="m"):
    registry = Registry(registry_dir)
    return LoadedModel.load(registry, ref, LoadOptions("sklearn")), LoadedModel.load(registry, ref, LoadOptions("onnx"))


def _assert_equal_answers(sklearn_model, onnx_model, rows, tolerance=1e-5):
    a, b = sklearn_model.score(rows), onnx_model.score(rows)
    assert (a.runtime, b.runtime) == ("sklearn", "onnx")
    np.testing.assert_array_equal(a.invalid, b.invalid)
    if a.proba is not None:
        np.testing.assert_array_equal(a.prediction, b.prediction)
        np.testing.assert_allclose(a.proba, b.proba, rtol=0, atol=tolerance)
    else:  # a regressor: float32 error relative to the typical size of the values, as registration measures it
        scale = max(1.0, float(np.mean(np.abs(a.prediction))))
        assert np.abs(a.prediction - b.prediction).max() / scale <= tolerance


def test_sample_pipeline_both_runtimes_agree(cli, model_file, registry_dir, current_frame):
    report = cli.json(
        *register_args(model_file, "--eval-data", CURRENT, "--bootstrap", "50", "--formats", "onnx,skops")
    )
    onnx = report["results"]["formats"]["onnx"]
    assert onnx["stored"] is True and onnx["agreement"]["label_agreement"] == 1.0, onnx
    assert onnx["agreement"]["data"] == ["reference sample", "eval data"]
    assert 0 < onnx["agreement"]["max_abs_difference"] <= 1e-5  # float32 in the graph: close, not identical
    manifest = json.loads((registry_dir / "flights/versions/1/manifest.json").read_text())
    assert {"model.onnx", "model.skops"} <= set(manifest["files"])
    sklearn_model, onnx_model = _both(registry_dir, "flights")
    _assert_equal_answers(sklearn_model, onnx_model, current_frame)
    # numbers as text, as a CSV gives them: the same answers from both runtimes
    _assert_equal_answers(sklearn_model, onnx_model, pd.read_csv(CURRENT.with_suffix(".csv"), dtype=str).head(2_000))


@pytest.mark.parametrize(
    "estimator, kwargs",
    [
        (RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0), {}),
        (HistGradientBoostingClassifier(max_iter=50, random_state=0), {"nan": True}),
        (make_pipeline(StandardScaler(), LogisticRegression()), {}),
        (make_pipeline(StandardScaler(), Ridge()), {"regression": True}),
    ],
    ids=["forest-100", "hist-gradient-boosting", "logistic", "regressor"],
)
def test_models_convert_and_agree(cli, tmp_path, registry_dir, estimator, kwargs):
    model, train, frame = _numeric(tmp_path, estimator, **kwargs)
    report = _register(cli, model, train, "--formats", "onnx")
    assert report["results"]["formats"]["onnx"]["stored"] is True, report["messages"]
    sklearn_model, onnx_model = _both(registry_dir)
    _assert_equal_answers(sklearn_model, onnx_model, frame[NUMERIC])
    auto = LoadedModel.load(Registry(registry_dir), "m")
    assert auto.runtime == "onnx" and auto.summary()["runtime"] == "onnx"


def test_a_custom_transformer_is_registered_without_onnx(cli, tmp_path, registry_dir):
    model, train, frame = _numeric(tmp_path, make_pipeline(Log1p(), LogisticRegression()))
    result = cli("register", model, "--name", "m", "--train-data", train, "--target", "y", "--formats", "onnx")
    assert result.exit_code == 0
    assert "no onnx file stored: cannot convert it to ONNX" in result.stdout
    manifest = json.loads((registry_dir / "m/versions/1/manifest.json").read_text())
    assert "model.onnx" not in manifest["files"] and manifest["formats"]["onnx"]["stored"] is False
    assert LoadedModel.load(Registry(registry_dir), "m").runtime == "sklearn"  # auto falls back
    with pytest.raises(ModelNotFound, match="has no ONNX file"):
        LoadedModel.load(Registry(registry_dir), "m", LoadOptions("onnx"))


def test_a_conversion_beyond_the_tolerance_is_not_stored(cli, tmp_path, registry_dir):
    model, train, _ = _numeric(tmp_path, RandomForestClassifier(n_estimators=20, random_state=0))
    report = _register(cli, model, train, "--formats", "onnx", "--onnx-tolerance", "0")
    onnx = report["results"]["formats"]["onnx"]
    assert onnx["stored"] is False and "beyond the tolerance" in onnx["reason"]
    assert onnx["agreement"]["max_abs_difference"] > 0  # measured and recorded even when refused


def test_a_tampered_onnx_file_is_refused(cli, tmp_path, registry_dir):
    model, train, frame = _numeric(tmp_path, make_pipeline(StandardScaler(), LogisticRegression()))
    _register(cli, model, train, "--formats", "onnx")
    path = registry_dir / "m/versions/1/model.onnx"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="altered after registration"):
        LoadedModel.load(Registry(registry_dir), "m")


def test_skops_loads_only_the_reviewed_types(cli, tmp_path, registry_dir):
    model, train, frame = _numeric(tmp_path, make_pipeline(Log1p(), LogisticRegression()))
    report = _register(cli, model, train, "--formats", "skops")
    skops = report["results"]["formats"]["skops"]
    assert skops["stored"] is False and skops["untrusted_types"] == ["custom_transformers.Log1p"]
    # reviewed and trusted explicitly: stored, with exactly that list recorded
    report = _register(
        cli, model, train, "--formats", "skops", "--trust", "custom_transformers.Log1p", "--allow-duplicate"
    )
    skops = report["results"]["formats"]["skops"]
    assert skops["stored"] is True and "custom_transformers.Log1p" in skops["trusted_types"]
    safe = LoadedModel.load(Registry(registry_dir), "m:2", LoadOptions(allow_pickle=False))
    pickled = LoadedModel.load(Registry(registry_dir), "m:2")
    np.testing.assert_array_equal(safe.score(frame[NUMERIC]).proba, pickled.score(frame[NUMERIC]).proba)


def test_no_pickle_refuses_a_version_with_only_a_pickle(cli, tmp_path, registry_dir):
    model, train, _ = _numeric(tmp_path, make_pipeline(StandardScaler(), LogisticRegression()))
    _register(cli, model, train)
    with pytest.raises(IntegrityError, match="pickle files are refused"):
        LoadedModel.load(Registry(registry_dir), "m", LoadOptions(allow_pickle=False))


def test_an_edited_trusted_types_list_is_refused(cli, tmp_path, registry_dir):
    model, train, _ = _numeric(tmp_path, make_pipeline(StandardScaler(), LogisticRegression()))
    _register(cli, model, train, "--formats", "skops")
    path = registry_dir / "m/versions/1/manifest.json"
    manifest = json.loads(path.read_text())
    manifest["formats"]["skops"]["trusted_types"].append("os.system")
    path.write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="altered after registration"):
        LoadedModel.load(Registry(registry_dir), "m", LoadOptions(allow_pickle=False))


def test_onnx_answers_do_not_depend_on_the_batch(cli, tmp_path, registry_dir):
    """One row, one answer: alone, in a small batch, or in a batch large enough to run in parallel chunks."""
    from mlops_cli.runtime.onnx import PARALLEL_ROWS

    model, train, frame = _numeric(tmp_path, RandomForestClassifier(n_estimators=100, random_state=0))
    _register(cli, model, train, "--formats", "onnx")
    onnx = LoadedModel.load(Registry(registry_dir), "m", LoadOptions("onnx"))
    assert onnx.predictor.threads >= 1
    rows = frame[NUMERIC].head(50)
    big = pd.concat([rows] * (PARALLEL_ROWS // len(rows) + 2), ignore_index=True)
    singles = np.vstack([onnx.score(rows.iloc[[i]]).proba for i in range(len(rows))])
    np.testing.assert_array_equal(onnx.score(rows).proba, singles)
    whole = onnx.score(big).proba
    for start in range(0, len(big) - len(rows) + 1, len(rows)):
        np.testing.assert_array_equal(whole[start : start + len(rows)], singles)
