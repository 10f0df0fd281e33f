"""What the tool needs to know about a fitted scikit-learn estimator, and one way to get predictions from it."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import InvalidData, MissingFile, SchemaMismatch, UnreadableFile

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def load_file(path: Path) -> tuple[Any, list[str]]:
    """Unpickle a joblib/pickle file; return the estimator and the warnings unpickling raised."""
    import joblib

    if not path.is_file():
        raise MissingFile(f"{path}: no such model file", "check the path")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator = joblib.load(path)
        except Exception as exc:  # unpickling can raise anything
            raise UnreadableFile(
                f"{path}: cannot be unpickled ({type(exc).__name__}: {exc})",
                "pass a joblib or pickle file of a fitted scikit-learn estimator",
            ) from exc
    if not hasattr(estimator, "predict"):
        raise UnreadableFile(
            f"{path}: holds a {type(estimator).__name__}, not an estimator with predict()",
            "pass a fitted scikit-learn estimator or Pipeline",
        )
    return estimator, [str(w.message).splitlines()[0] for w in caught]


def describe(estimator: Any) -> dict[str, Any]:
    """Class, task, classes and feature names of a fitted estimator."""
    from sklearn.base import is_classifier, is_regressor
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except NotFittedError as exc:
        raise UnreadableFile(f"the {type(estimator).__name__} is not fitted", "fit it before registering") from exc
    except TypeError:
        pass  # not a scikit-learn estimator; predict() is all we rely on
    task = "classifier" if is_classifier(estimator) else "regressor" if is_regressor(estimator) else "unknown"
    classes = getattr(estimator, "classes_", None)
    names = getattr(estimator, "feature_names_in_", None)
    return {
        "estimator_class": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        "task": task,
        "classes": [_plain(c) for c in classes] if classes is not None else None,
        "feature_names": [str(n) for n in names] if names is not None else None,
        "n_features": getattr(estimator, "n_features_in_", None),
    }


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def proba_column(label: Any) -> str:
    return f"proba_{label}"


def predict_frame(estimator: Any, features: pd.DataFrame, *, task: str, classes: list[Any] | None) -> pd.DataFrame:
    """`prediction` plus, for classifiers, one `proba_<class>` column per class, in the model's class order."""
    import numpy as np
    import pandas as pd

    try:
        prediction = np.asarray(estimator.predict(features))
        proba = (
            np.asarray(estimator.predict_proba(features), dtype=float)
            if task == "classifier" and hasattr(estimator, "predict_proba")
            else None
        )
        out = {"prediction": prediction}
        if proba is not None:
            for i, label in enumerate(classes or range(proba.shape[1])):
                out[proba_column(label)] = proba[:, i]
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidData(
            f"the model cannot score this data ({type(exc).__name__}: {_short(exc)})",
            "check the columns and types against the model's schema",
        ) from exc
    return pd.DataFrame(out, index=features.index)


class Predictor:
    """Predictions batch after batch, at the cost of one model call per batch.

    For a classifier with `predict_proba` and `proba=True`, each batch costs one `predict_proba` call, and
    `prediction` is the class of highest probability. That equals `predict` for scikit-learn's classifiers but not
    for every estimator (a tuned decision threshold, for one). So `predict` is compared with the argmax on `probe`
    (the version's stored reference sample: rows from the whole training distribution, decision boundary included)
    and on the first CHECK_ROWS rows scored, however the batches cut them; one disagreement and every batch calls
    `predict` as well. Threshold classifiers skip the comparison: they always call `predict`.
    """

    CHECK_ROWS = 5_000

    def __init__(self, estimator: Any, *, task: str, proba: bool = True, probe: pd.DataFrame | None = None) -> None:
        import numpy as np

        self.estimator = estimator
        classes = getattr(estimator, "classes_", None)
        self.classes: np.ndarray | None = np.asarray(classes) if task == "classifier" and classes is not None else None
        self.with_proba = proba and self.classes is not None and hasattr(estimator, "predict_proba")
        # An estimator fitted on an array warns on every call that passes a DataFrame: give it the array.
        self._as_array = hasattr(estimator, "n_features_in_") and not hasattr(estimator, "feature_names_in_")
        self._argmax_is_predict = not _has_decision_threshold(estimator)
        self._checked_rows = 0
        if self.with_proba and self._argmax_is_predict and probe is not None and len(probe):
            with contextlib.suppress(ValueError, TypeError, KeyError):  # rows it cannot take: the batches decide
                self._compare(self._data(probe.dropna().iloc[: self.CHECK_ROWS]))

    def _data(self, features: pd.DataFrame) -> Any:
        return features.to_numpy() if self._as_array else features

    def _compare(self, data: Any, proba: np.ndarray | None = None) -> None:
        import numpy as np

        own = np.asarray(self.estimator.predict(data))
        proba = np.asarray(self.estimator.predict_proba(data), dtype=float) if proba is None else proba
        self._argmax_is_predict = bool(np.array_equal(own, self._argmax(proba)))

    def predict(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
        """(prediction, probabilities in the order of `classes` or None) for the rows of `features`."""
        import numpy as np

        data = self._data(features)
        try:
            if not self.with_proba:
                return self._checked(np.asarray(self.estimator.predict(data))), None
            proba = np.asarray(self.estimator.predict_proba(data), dtype=float)
            if self._argmax_is_predict and self._checked_rows < self.CHECK_ROWS:
                n = min(len(features), self.CHECK_ROWS - self._checked_rows)
                self._compare(data[:n] if self._as_array else data.iloc[:n], proba[:n])
                self._checked_rows += n
            prediction = self._argmax(proba) if self._argmax_is_predict else np.asarray(self.estimator.predict(data))
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidData(
                f"the model cannot score this data ({type(exc).__name__}: {_short(exc)})",
                "check the columns and types against the model's schema",
            ) from exc
        return self._checked(prediction), proba

    def _argmax(self, proba: np.ndarray) -> np.ndarray:
        import numpy as np

        return self.classes[np.argmax(proba, axis=1)]  # type: ignore[index]

    @staticmethod
    def _checked(prediction: np.ndarray) -> np.ndarray:
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


def proba_matrix(predictions: pd.DataFrame, classes: list[Any]) -> np.ndarray:
    return predictions[[proba_column(c) for c in classes]].to_numpy(dtype=float)


def align_labels(y: Any, classes: list[Any] | None) -> Any:
    """Labels read from files may be floats (1.0, a nullable column) where the model's classes are ints (1)."""
    import numpy as np

    y = np.asarray(y)
    if classes and all(isinstance(c, (int, np.integer)) for c in classes) and np.issubdtype(y.dtype, np.floating):
        fractional = np.mod(y, 1) != 0
        if fractional.any():  # 0.7 is no class: truncating it to 0 would make up a label
            raise SchemaMismatch(
                f"labels hold fractions ({', '.join(map(str, np.unique(y[fractional])[:5]))}) where the model's "
                f"classes are {classes}",
                "check the target column",
            )
        return y.astype(np.int64)
    return y


def scorer_for(estimator: Any, manifest: dict[str, Any], data: pd.DataFrame, target: str) -> Any:
    """A `metrics.Scorer` of the model's predictions on labelled `data` (rows without a label must be dropped)."""
    import numpy as np

    from mlops_cli import metrics

    features = [f["name"] for f in manifest.get("features") or []] or [c for c in data.columns if c != target]
    missing = [f for f in features if f not in data.columns]
    if missing:
        raise SchemaMismatch(
            f"the data lacks the model's feature columns {missing}", "pass data with the model's schema"
        )
    task, classes = manifest["task"], list(manifest.get("classes") or [])
    y_true = data[target].to_numpy()
    if task == "classifier":
        labels = align_labels(y_true, classes)
        # A label the model cannot predict would silently count as a wrong answer (or a negative): refuse it.
        unknown = ~np.isin(np.asarray(labels).astype(str), [str(c) for c in classes]) if classes else None
        if unknown is not None and unknown.any():
            examples = list(dict.fromkeys(np.asarray(y_true, dtype=object)[unknown].tolist()))[:5]
            raise SchemaMismatch(
                f"{int(unknown.sum()):,} labelled rows hold values of {target!r} the model was not trained on "
                f"({', '.join(map(repr, examples))})",
                f"the model's classes are {classes}; check the target column",
            )
    predictions = predict_frame(estimator, data[features], task=task, classes=classes)
    if task != "classifier":
        return metrics.Scorer("regressor", y_true, predictions["prediction"].to_numpy())
    has_proba = bool(classes) and all(proba_column(c) in predictions.columns for c in classes)
    return metrics.Scorer(
        "classifier",
        labels,
        align_labels(predictions["prediction"].to_numpy(), classes),
        proba_matrix(predictions, classes) if has_proba else None,
        classes,
    )


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""
