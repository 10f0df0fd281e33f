"""What the tool needs to know about a fitted scikit-learn estimator, and one way to get predictions from it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import InvalidData, MissingFile, UnreadableFile

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
        raise UnreadableFile(f"{path}: holds a {type(estimator).__name__}, not an estimator with predict()",
                             "pass a fitted scikit-learn estimator or Pipeline")
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
        out = {"prediction": prediction}
        if task == "classifier" and hasattr(estimator, "predict_proba"):
            proba = np.asarray(estimator.predict_proba(features), dtype=float)
            for i, label in enumerate(classes or range(proba.shape[1])):
                out[proba_column(label)] = proba[:, i]
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidData(f"the model cannot score this data ({type(exc).__name__}: {_short(exc)})",
                          "check the columns and types against the model's schema") from exc
    return pd.DataFrame(out, index=features.index)


def proba_matrix(predictions: pd.DataFrame, classes: list[Any]) -> np.ndarray:
    return predictions[[proba_column(c) for c in classes]].to_numpy(dtype=float)


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""
