"""The model runtime, tested directly: coercion, invalid reasons, the argmax fallback, threads and latency."""

from __future__ import annotations

import threading
import time

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from mlops_cli.errors import InvalidData, SchemaMismatch
from mlops_cli.register import RegisterOptions, register
from mlops_cli.registry import Registry
from mlops_cli.runtime import LoadedModel, ModelSpec, latency, threads
from mlops_cli.runtime.predictor import CHECK_ROWS
from mlops_cli.schema import infer


def _data(n: int = 4_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "count": rng.integers(0, 50, n),
            "flag": rng.random(n) < 0.3,
            "colour": rng.choice(["red", "green", "blue"], n),
        }
    )
    frame["y"] = ((frame["x"] + 0.05 * frame["count"] + frame["flag"] + (frame["colour"] == "red")) > 1.2).astype(int)
    return frame


FEATURES = ["x", "count", "flag", "colour"]


def _pipeline() -> object:
    encode = ColumnTransformer(
        [("colour", OneHotEncoder(handle_unknown="ignore"), ["colour"])], remainder="passthrough"
    )
    return make_pipeline(encode, LogisticRegression(max_iter=500))


class ShiftedThreshold(ClassifierMixin, BaseEstimator):
    """predict() says 1 from a probability of 0.3 on: not the argmax of predict_proba, as a tuned threshold does."""

    def __init__(self, inner=None):
        self.inner = inner

    def fit(self, X, y):  # noqa: N803
        self.inner = _pipeline().fit(X, y)
        self.classes_ = self.inner.classes_
        self.feature_names_in_ = self.inner.feature_names_in_
        return self

    def predict_proba(self, X):  # noqa: N803
        return self.inner.predict_proba(X)

    def predict(self, X):  # noqa: N803
        return np.where(self.inner.predict_proba(X)[:, 1] >= 0.3, 1, 0)


def _register(tmp_path, estimator, *, name="m", **options) -> LoadedModel:
    frame = _data()
    estimator.fit(frame[FEATURES], frame["y"])
    path = tmp_path / f"{name}.joblib"
    joblib.dump(estimator, path)
    train = tmp_path / f"{name}-train.parquet"
    frame.to_parquet(train)
    registry = Registry(tmp_path / "registry")
    register(registry, path, name, RegisterOptions(train_data=train, target="y", **options))
    return LoadedModel.load(registry, name)


@pytest.fixture
def model(tmp_path) -> LoadedModel:
    return _register(tmp_path, _pipeline())


def test_spec_is_a_typed_frozen_view_of_the_manifest(model):
    spec = model.spec
    assert spec.ref == "m:1" and spec.task == "classifier" and spec.classes == (0, 1)
    assert spec.feature_names == FEATURES
    kinds = {f.name: f.kind for f in spec.features}
    assert kinds == {"x": "numeric", "count": "numeric", "flag": "boolean", "colour": "categorical"}
    assert spec.features[1].integer and not spec.features[0].integer
    assert spec.features[3].categories == frozenset({"red", "green", "blue"})
    assert spec == ModelSpec.of(model.version)
    with pytest.raises(AttributeError):
        spec.task = "regressor"  # type: ignore[misc]


def test_text_is_coerced_to_the_registered_types(model):
    typed = _data(500, seed=1)[FEATURES]
    text = typed.astype(str)  # every value as a CSV read as text gives it: "1.25", "17", "True", "red"
    assert all(pd.api.types.is_string_dtype(text[c]) for c in FEATURES)
    a, b = model.score(typed), model.score(text)
    assert not b.invalid.any()
    np.testing.assert_array_equal(a.prediction, b.prediction)
    np.testing.assert_array_equal(a.proba, b.proba)
    # ... and the same as the estimator's own answer on typed rows
    np.testing.assert_array_equal(a.prediction, model.estimator.predict(typed))
    np.testing.assert_allclose(a.proba, model.estimator.predict_proba(typed), rtol=0, atol=0)


def test_arrow_batches_score_like_frames(model):
    typed = _data(300, seed=2)
    batch = pa.RecordBatch.from_pandas(typed.astype({"x": str, "count": str}), preserve_index=False)
    a, b = model.score(typed), model.score(batch)
    np.testing.assert_array_equal(a.prediction, b.prediction)
    np.testing.assert_array_equal(a.proba, b.proba)


def test_invalid_rows_get_reasons_and_never_reach_the_model(model):
    rows = _data(6, seed=3)[FEATURES].astype(object)
    rows.loc[1, "x"] = "n/a"
    rows.loc[2, "flag"] = "maybe"
    rows.loc[4, "x"] = "oops"
    rows.loc[4, "flag"] = "perhaps"
    scored = model.score(rows)
    assert scored.invalid.tolist() == [False, True, True, False, True, False]
    assert scored.rejected() == {"x: not a number": 2, "flag: not a boolean": 2}
    assert scored.reasons["x: not a number"].tolist() == [False, True, False, False, True, False]
    assert len(scored.prediction) == 3 and scored.proba.shape == (3, 2)
    assert scored.scored_rows.tolist() == [0, 3, 5]
    assert scored.frame(rows.index).index.tolist() == [0, 3, 5]
    with pytest.raises(InvalidData, match="3 of 6 rows"):
        scored.require_all("the rows")


def test_contract_rejects_missing_and_unseen_only_when_registered_so(tmp_path):
    strict = _register(tmp_path, _pipeline(), name="strict", accepts_missing=False, accepts_unseen=False)
    rows = _data(4, seed=4)[FEATURES]
    rows.loc[0, "x"] = np.nan
    rows.loc[2, "colour"] = "purple"
    scored = strict.score(rows)
    assert scored.rejected() == {"x: missing value": 1, "colour: unseen category": 1}
    lenient = _register(tmp_path, _pipeline(), name="lenient")
    lenient_scored = lenient.score(rows.assign(x=rows["x"].fillna(0.0)))
    assert not lenient_scored.invalid.any()


def test_missing_column_and_impossible_type_raise(model):
    rows = _data(5)[FEATURES]
    with pytest.raises(SchemaMismatch, match=r"lacks m:1's feature columns \['colour'\]"):
        model.score(rows.drop(columns=["colour"]))
    with pytest.raises(SchemaMismatch, match="'x' holds datetime64"):
        model.score(rows.assign(x=pd.Timestamp("2024-01-01")))


def test_argmax_fallback_is_decided_at_load_from_the_stored_sample(tmp_path):
    model = _register(tmp_path, ShiftedThreshold())
    assert model.predictor._argmax_is_predict is False  # decided before any row was scored
    rows = _data(1000, seed=5)[FEATURES]
    np.testing.assert_array_equal(model.score(rows).prediction, model.estimator.predict(rows))


def test_argmax_fallback_without_a_sample_checks_the_first_rows(tmp_path):
    frame = _data()
    estimator = ShiftedThreshold().fit(frame[FEATURES], frame["y"])
    spec = ModelSpec.from_manifest(
        {"task": "classifier", "classes": [0, 1], "features": [{"name": f} for f in FEATURES]}
    )
    model = LoadedModel.of(estimator, spec)
    assert model.predictor._argmax_is_predict is True  # nothing seen yet
    rows = _data(50, seed=6)[FEATURES]
    np.testing.assert_array_equal(model.score(rows).prediction, estimator.predict(rows))
    assert model.predictor._argmax_is_predict is False


def test_eight_threads_at_once_get_identical_answers(tmp_path):
    """Scoring from 8 threads while the first-rows check is still running: every thread's answer equals the
    model's own predict, row for row, and equals a sequential run."""
    frame = _data()
    estimator = ShiftedThreshold().fit(frame[FEATURES], frame["y"])
    spec = ModelSpec.from_manifest({"task": "classifier", "classes": [0, 1], "features": infer(frame, FEATURES)})
    model = LoadedModel.of(estimator, spec)  # no probe: the check happens while the threads score
    typed = [_data(400, seed=10 + i)[FEATURES] for i in range(8)]
    expected = [estimator.predict(b) for b in typed]
    batches = [b.astype(str) for b in typed]  # the coercion runs in the threads too
    results: list[object] = [None] * 8
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        results[i] = [model.score(batches[i]).prediction for _ in range(5)]

    workers = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for i in range(8):
        for prediction in results[i]:  # type: ignore[union-attr]
            np.testing.assert_array_equal(prediction, expected[i])
    assert model.predictor._checked_rows <= CHECK_ROWS


def test_small_batches_run_on_one_thread_large_ones_on_the_default(model):
    rows = _data(2_000, seed=7)[FEATURES]
    assert model.score(rows.head(1)).threads == 1
    assert model.score(rows).threads is None
    assert threads.default_threads() >= 1


def test_a_model_that_sleeps_fails_the_latency_budget_quickly(tmp_path, model):
    class Sleepy:
        def __getattr__(self, name):
            return getattr(model.estimator, name)

        def predict_proba(self, X):  # noqa: N803
            time.sleep(0.2)
            return model.estimator.predict_proba(X)

    slow = LoadedModel.of(Sleepy(), model.spec)
    start = time.perf_counter()
    result = latency.single_row(slow, _data(50)[FEATURES], budget_ms=50)
    assert result["within_budget"] is False and result["median_round_p99_ms"] >= 200
    assert time.perf_counter() - start < 10  # decided early: not 1,000 calls of 200 ms


def test_latency_of_a_fast_model_is_judged_on_the_median_round(model):
    result = latency.single_row(model, _data(50)[FEATURES], budget_ms=1_000, calls=50)
    assert result["within_budget"] is True and result["rounds"] == latency.ROUNDS
    assert result["calls"] == 50 * latency.ROUNDS and result["threads"] == 1
    assert result["spread_ms"][0] <= result["median_round_p99_ms"] <= result["spread_ms"][1]


class _Counted(FunctionTransformer):
    """A pass-through step that counts its transform calls."""

    calls = 0

    def transform(self, X):  # noqa: N803
        type(self).calls += 1
        return super().transform(X)


class _LowThreshold(LogisticRegression):
    """predict() says 1 from a probability of 0.3 on, inside a Pipeline (not one of scikit-learn's threshold
    classifiers, so the runtime must find out by comparing)."""

    def predict(self, X):  # noqa: N803
        return np.where(self.predict_proba(X)[:, 1] >= 0.3, 1, 0)


def test_first_rows_check_runs_a_pipelines_transformers_once_and_keeps_predicts_answers():
    """During the first-rows check, a Pipeline's predict_proba and predict share one pass of its transformers
    (half the cost of a one-row call); the answers are still the pipeline's own predict, row for row."""
    frame = _data()
    encode = ColumnTransformer(
        [("colour", OneHotEncoder(handle_unknown="ignore"), ["colour"])], remainder="passthrough"
    )
    pipeline = make_pipeline(_Counted(), encode, _LowThreshold(max_iter=500)).fit(frame[FEATURES], frame["y"])
    spec = ModelSpec.from_manifest({"task": "classifier", "classes": [0, 1], "features": infer(frame, FEATURES)})
    agreeing = LoadedModel.of(make_pipeline(_Counted(), clone(encode), LogisticRegression(max_iter=500)).fit(
        frame[FEATURES], frame["y"]), spec)  # fmt: skip
    rows = _data(300, seed=11)[FEATURES]
    _Counted.calls = 0
    answers = [agreeing.score(rows.iloc[[i]]).prediction[0] for i in range(20)]
    assert _Counted.calls == 20  # one pass per batch while the check runs (it was two)
    assert agreeing.predictor._checking
    np.testing.assert_array_equal(answers, agreeing.estimator.predict(rows.iloc[:20]))
    model = LoadedModel.of(pipeline, spec)
    got = np.concatenate([model.score(rows.iloc[[i]]).prediction for i in range(len(rows))])
    np.testing.assert_array_equal(got, pipeline.predict(rows))
    assert model.predictor._argmax_is_predict is False
    for i in range(0, len(rows), 37):  # the same numbers as the pipeline's own call on the same row
        np.testing.assert_array_equal(model.score(rows.iloc[[i]]).proba, pipeline.predict_proba(rows.iloc[[i]]))
