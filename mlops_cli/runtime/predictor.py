"""One model call per batch: predictions and, for classifiers, probabilities in the model's class order.

For a classifier with `predict_proba`, each batch costs one `predict_proba` call and `prediction` is the class of
highest probability. That equals `predict` for scikit-learn's classifiers but not for every estimator (a tuned
decision threshold, for one). So `predict` is compared with the argmax at load, on the version's stored reference
sample (rows from the whole training distribution, decision boundary included), and again on the first CHECK_ROWS
rows scored, however the batches cut them; one disagreement and every later batch calls `predict` as well.
Threshold classifiers skip the comparison: they always call `predict`.

Safe for threads: the only state that changes after load is that first-rows check, and it is taken under a lock;
once it is over (or decided), a call reads two booleans.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import InvalidData

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

CHECK_ROWS = 5_000


class Predictor:
    def __init__(self, estimator: Any, *, task: str, proba: bool = True, probe: pd.DataFrame | None = None) -> None:
        import numpy as np

        self.estimator = estimator
        classes = getattr(estimator, "classes_", None)
        self.classes: np.ndarray | None = np.asarray(classes) if task == "classifier" and classes is not None else None
        self.with_proba = proba and self.classes is not None and hasattr(estimator, "predict_proba")
        # An estimator fitted on an array warns on every call that passes a DataFrame: give it the array.
        self._as_array = hasattr(estimator, "n_features_in_") and not hasattr(estimator, "feature_names_in_")
        self._argmax_is_predict = not _has_decision_threshold(estimator)
        self._checking = self.with_proba and self._argmax_is_predict
        self._checked_rows = 0
        self._lock = threading.Lock()
        if self._checking and probe is not None and len(probe):
            try:
                data = self._data(probe.dropna().iloc[:CHECK_ROWS])
                self._argmax_is_predict = self._agrees(
                    data, np.asarray(self.estimator.predict_proba(data), dtype=float)
                )
            except (ValueError, TypeError, KeyError):
                pass  # rows it cannot take: the scored batches decide

    def _data(self, features: Any) -> Any:
        if isinstance(features, dict):  # validated columns (a server's rows): scikit-learn takes a DataFrame
            import pandas as pd

            features = pd.DataFrame(features)
        return features.to_numpy() if self._as_array else features

    def _agrees(self, data: Any, proba: np.ndarray) -> bool:
        import numpy as np

        return bool(np.array_equal(np.asarray(self.estimator.predict(data)), self._argmax(proba)))

    def predict(self, features: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """(prediction, probabilities in the order of `classes` or None) for the rows of `features` (a DataFrame,
        or a mapping of column name to values)."""
        import numpy as np

        data = self._data(features)
        try:
            if not self.with_proba:
                return _one_dimensional(np.asarray(self.estimator.predict(data))), None
            if self._checking:
                proba, prediction = self._checked(data)
            else:
                proba = np.asarray(self.estimator.predict_proba(data), dtype=float)
                prediction = (
                    self._argmax(proba) if self._argmax_is_predict else np.asarray(self.estimator.predict(data))
                )
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidData(
                f"the model cannot score this data ({type(exc).__name__}: {short(exc)})",
                "check the columns and types against the model's schema",
            ) from exc
        return _one_dimensional(prediction), proba

    def _checked(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """A batch scored during the first-rows check: (proba, prediction), `predict` compared with the argmax on
        the rows still to check. A Pipeline's transformers run once for both calls (Pipeline.predict_proba and
        .predict are its transformers' `transform` then the final step's method: the same numbers, half the cost
        of a one-row call, which a ColumnTransformer dominates)."""
        import numpy as np

        model, xt = self.estimator, data
        if _is_pipeline(model):
            for _, step in model.steps[:-1]:
                if step is not None and step != "passthrough":
                    xt = step.transform(xt)
            model = model.steps[-1][1]
        proba = np.asarray(model.predict_proba(xt), dtype=float)
        with self._lock:
            if self._checking:
                n = min(len(proba), CHECK_ROWS - self._checked_rows)
                if not np.array_equal(np.asarray(model.predict(_head(xt, n))), self._argmax(proba[:n])):
                    self._argmax_is_predict = False
                self._checked_rows += n
                self._checking = self._argmax_is_predict and self._checked_rows < CHECK_ROWS
            agrees = self._argmax_is_predict
        return proba, self._argmax(proba) if agrees else np.asarray(model.predict(xt))

    def _argmax(self, proba: np.ndarray) -> np.ndarray:
        import numpy as np

        return self.classes[np.argmax(proba, axis=1)]  # type: ignore[index]


def _is_pipeline(estimator: Any) -> bool:
    from sklearn.pipeline import Pipeline

    return isinstance(estimator, Pipeline) and len(estimator.steps) > 1


def _head(data: Any, n: int) -> Any:
    """The first `n` rows of a DataFrame, an array or a sparse matrix."""
    return data.iloc[:n] if hasattr(data, "iloc") else data[:n]


def _one_dimensional(prediction: np.ndarray) -> np.ndarray:
    if prediction.ndim != 1:
        raise InvalidData(
            f"the model returns predictions of shape {prediction.shape}", "only single-output models can be scored"
        )
    return prediction


def _has_decision_threshold(estimator: Any) -> bool:
    """scikit-learn's threshold classifiers (FixedThresholdClassifier, TunedThresholdClassifierCV), alone or as the
    last step of a Pipeline: their `predict` is not the argmax of `predict_proba` by design."""
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    return any(cls.__name__ == "BaseThresholdClassifier" for cls in type(final).__mro__)


def short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""
