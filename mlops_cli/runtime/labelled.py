"""A model's predictions on labelled rows, ready for metrics: register's eval metrics, abtest's paired comparison,
drift-report's performance block and retrain's holdout all score labelled data through this one function."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_cli.errors import SchemaMismatch

if TYPE_CHECKING:
    import pandas as pd

    from mlops_cli.metrics import Scorer
    from mlops_cli.runtime.model import LoadedModel, Scored


def align_labels(y: Any, classes: list[Any] | tuple[Any, ...] | None) -> Any:
    """Labels read from files may be floats (1.0, a nullable column) where the model's classes are ints (1)."""
    import numpy as np

    y = np.asarray(y)
    if classes and all(isinstance(c, (int, np.integer)) for c in classes) and np.issubdtype(y.dtype, np.floating):
        fractional = np.mod(y, 1) != 0
        if fractional.any():  # 0.7 is no class: truncating it to 0 would make up a label
            raise SchemaMismatch(
                f"labels hold fractions ({', '.join(map(str, np.unique(y[fractional])[:5]))}) where the model's "
                f"classes are {list(classes)}",
                "check the target column",
            )
        return y.astype(np.int64)
    return y


def scorer(model: LoadedModel, data: pd.DataFrame, target: str, *, where: str = "the labelled data") -> Scorer:
    """A `metrics.Scorer` of the model's predictions on labelled `data` (rows without a label must be dropped).
    Every row must fit the input contract: a metric over the rows that happen to fit would compare unlike sets."""
    model.spec.require_features(data.columns, where=where)
    y_true = data[target].to_numpy()
    labels = _labels(model, y_true, target)
    return _scorer(model, y_true, labels, model.score(data), where)


def scorer_of(model: LoadedModel, y_true: Any, scored: Scored, target: str, *, where: str) -> Scorer:
    """`scorer` from predictions the runtime made elsewhere (Dask workers): `scored` answers the rows of `y_true`."""
    return _scorer(model, y_true, _labels(model, y_true, target), scored, where)


def _labels(model: LoadedModel, y_true: Any, target: str) -> Any:
    """The labels as the model's classes, checked: a label the model cannot predict is refused."""
    import numpy as np

    spec = model.spec
    if spec.task != "classifier":
        return y_true
    classes = list(spec.classes or [])
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
    return labels


def _scorer(model: LoadedModel, y_true: Any, labels: Any, scored: Scored, where: str) -> Scorer:
    from mlops_cli import metrics

    spec = model.spec
    scored.require_all(where)
    if spec.task != "classifier":
        return metrics.Scorer("regressor", y_true, scored.prediction)
    classes = list(spec.classes or [])
    proba = None
    if scored.proba is not None and scored.classes is not None:
        order = [list(map(str, scored.classes)).index(str(c)) for c in classes]  # the spec's class order
        proba = scored.proba[:, order]
    return metrics.Scorer("classifier", labels, align_labels(scored.prediction, classes), proba, classes)
