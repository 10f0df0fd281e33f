"""Reading a model file: unpickling it, and what the tool needs to know about the fitted estimator inside."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mlops_cli.errors import MissingFile, UnreadableFile


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
