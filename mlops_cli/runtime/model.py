"""`LoadedModel`: a verified model and its spec, and `score`, the one way mlops turns rows into predictions.

Every command and service predicts through `LoadedModel.score`: the same coercion against the registered input
contract, the same invalid-row reasons, the same argmax-versus-`predict` rule. So a row gets the same answer from
score-batch, the gates, the reports, retrain and the servers. Nothing here prints, exits, touches signals or
`sys.stdout`, or keeps state that changes per call (bar the predictor's locked first-rows check): one LoadedModel
can serve many threads at once.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import InvalidData, MlopsWarning, VersionMismatch
from mlops_cli.runtime import contract, threads
from mlops_cli.runtime.predictor import CHECK_ROWS, Predictor
from mlops_cli.runtime.spec import ModelSpec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlops_cli.registry import Registry, Version

RUNTIME = "sklearn"


def proba_column(label: Any) -> str:
    return f"proba_{label}"


@dataclass(frozen=True)
class Scored:
    """What a model said about a batch of rows.

    `prediction` and `proba` hold one entry per *scored* row, in input order; the rows that broke the input contract
    (`invalid`, one flag per input row) were never given to the model, and `reasons` says why, per reason, as masks
    over the input rows. `proba` columns follow `classes`."""

    prediction: np.ndarray
    proba: np.ndarray | None
    invalid: np.ndarray
    reasons: dict[str, np.ndarray]
    classes: tuple[Any, ...] | None
    runtime: str = RUNTIME
    threads: int | None = None  # BLAS/OpenMP threads the call ran with; None: the libraries' default

    @property
    def rows(self) -> int:
        return len(self.invalid)

    @property
    def scored_rows(self) -> np.ndarray:
        """Positions, among the input rows, of the rows that were scored."""
        import numpy as np

        return np.flatnonzero(~self.invalid)

    def frame(self, index: Any = None) -> pd.DataFrame:
        """`prediction` plus one `proba_<class>` column per class, for the scored rows (`index`: the input's)."""
        import pandas as pd

        out: dict[str, Any] = {"prediction": self.prediction}
        if self.proba is not None:
            for i, label in enumerate(self.classes or range(self.proba.shape[1])):
                out[proba_column(label)] = self.proba[:, i]
        rows = self.scored_rows
        return pd.DataFrame(out, index=index[rows] if index is not None else rows)

    def rejected(self) -> dict[str, int]:
        """Rows per reason."""
        return {label: int(mask.sum()) for label, mask in self.reasons.items()}

    def require_all(self, where: str) -> None:
        """InvalidData when any row broke the contract: for reports that need every row scored."""
        if not self.invalid.any():
            return
        import numpy as np

        first = int(np.flatnonzero(self.invalid)[0])
        raise InvalidData(
            f"{where}: {int(self.invalid.sum()):,} of {self.rows:,} rows do not fit the model's input contract "
            f"({'; '.join(sorted(self.reasons))}; first at row {first + 1})",
            "fix the data, or score it with mlops score-batch --on-invalid null to see each row's reason",
        )


@dataclass
class LoadedModel:
    """A model ready to score: its estimator, its spec and, when it came from the registry, its version."""

    estimator: Any
    spec: ModelSpec
    version: Version | None = None
    predictor: Predictor = field(init=False)
    proba: bool = True
    probe: pd.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.predictor = Predictor(self.estimator, task=self.spec.task, proba=self.proba, probe=self.probe)
        self.probe = None  # only needed for the decision above

    @classmethod
    def load(cls, registry: Registry, ref: str | Version, *, strict: bool = False, proba: bool = True) -> LoadedModel:
        """Resolve, verify every stored hash the load reads, then unpickle. Library-version differences warn
        (raise with `strict`): a model may predict differently under another scikit-learn."""
        from mlops_cli.registry import ARTIFACT, SAMPLE, Version, _library_versions
        from mlops_cli.runtime.artifacts import load_file

        version = ref if isinstance(ref, Version) else registry.resolve(ref)
        artifact = version.file(ARTIFACT)  # integrity first: an altered file is never unpickled
        recorded = version.manifest["libraries"].get("scikit-learn")
        running = _library_versions()["scikit-learn"]
        if recorded != running:
            message = (
                f"{version.ref} was registered under scikit-learn {recorded}, "
                f"this is scikit-learn {running}; predictions may differ"
            )
            if strict:
                raise VersionMismatch(message, "run under the recorded version, or drop --strict")
            warnings.warn(message, MlopsWarning, stacklevel=2)
        estimator, _ = load_file(artifact)
        spec = ModelSpec.of(version)
        probe = None
        if proba and spec.task == "classifier" and SAMPLE in version.manifest["files"] and spec.feature_names:
            # Rows from across the training distribution, to check that argmax(predict_proba) is predict.
            from mlops_cli import io

            probe = io.read_table(version.file(SAMPLE), columns=spec.feature_names).head(CHECK_ROWS)
            probe = contract.validate(probe, spec)[0]
        return cls(estimator, spec, version, proba=proba, probe=probe)

    @property
    def ref(self) -> str:
        return self.version.ref if self.version is not None else self.spec.ref

    @property
    def classes(self) -> np.ndarray | None:
        return self.predictor.classes

    @property
    def with_proba(self) -> bool:
        return self.predictor.with_proba

    def summary(self) -> dict[str, Any]:
        """The `model` block of a report envelope, with the runtime that answers."""
        base = self.version.summary() if self.version is not None else {}
        return {**base, "runtime": RUNTIME}

    def score(self, data: Any) -> Scored:
        """Coerce and check `data` (a DataFrame, or an Arrow RecordBatch/Table) against the input contract, then
        predict the rows that fit it. Extra columns are ignored; a missing feature column raises SchemaMismatch."""
        import numpy as np

        frame = self._frame(data)
        features, invalid, reasons = contract.validate(frame, self.spec)
        n = len(features)
        used = threads.for_rows(n - int(invalid.sum()))
        classes = tuple(self.classes.tolist()) if self.classes is not None else None
        if invalid.all():
            width = len(classes) if self.with_proba and classes else 0
            empty = np.empty(0, dtype=object)
            return Scored(empty, np.empty((0, width)) if width else None, invalid, reasons, classes, threads=used)
        valid = features if not invalid.any() else features[~invalid]
        prediction, proba = self.predictor.predict(valid)
        return Scored(prediction, proba, invalid, reasons, classes, threads=used)

    def _frame(self, data: Any) -> pd.DataFrame:
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            return data
        from mlops_cli import io

        names = data.schema.names
        self.spec.require_features(names, where="the data")
        batch = contract.prepare_arrow(data.select(self.spec.feature_names), self.spec)
        return io.to_pandas(batch)

    def as_estimator(self) -> Any:
        """A scikit-learn-style view whose predict/predict_proba go through `score` (for permutation importance,
        which calls the estimator itself)."""
        return _AsEstimator(self)


class _AsEstimator:
    """Answers `predict` and `predict_proba` through the runtime, for scikit-learn utilities that take an estimator.
    Every row must fit the contract (the reference sample does)."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self.classes_ = model.classes
        self._estimator_type = "classifier" if model.spec.task == "classifier" else "regressor"

    def fit(self, *args: Any, **kwargs: Any) -> _AsEstimator:
        return self

    def __sklearn_tags__(self) -> Any:
        return self._model.estimator.__sklearn_tags__()

    def predict(self, X: Any) -> np.ndarray:
        scored = self._model.score(X)
        scored.require_all("the permuted reference sample")
        return scored.prediction

    def predict_proba(self, X: Any) -> np.ndarray:
        scored = self._model.score(X)
        scored.require_all("the permuted reference sample")
        return scored.proba  # type: ignore[return-value]
