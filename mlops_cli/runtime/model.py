"""`LoadedModel`: a verified model and its spec, and `score`, the one way mlops turns rows into predictions.

Every command and service predicts through `LoadedModel.score`: the same coercion against the registered input
contract, the same invalid-row reasons, the same argmax-versus-`predict` rule. So a row gets the same answer from
score-batch, the gates, the reports, retrain and the servers. Nothing here prints, exits, touches signals or
`sys.stdout`, or keeps state that changes per call (bar the predictor's locked first-rows check): one LoadedModel
can serve many threads at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import InputError, InvalidData, MlopsWarning, VersionMismatch
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


RUNTIMES = ("auto", "sklearn", "onnx")


@dataclass(frozen=True)
class LoadOptions:
    """How a command loads its models: `--runtime`, `--strict`, and whether this host unpickles (`--no-pickle`)."""

    runtime: str = "auto"
    strict: bool = False  # a scikit-learn version other than the recorded one is an error, not a warning
    allow_pickle: bool = True

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise InputError(f"--runtime {self.runtime!r}", f"use one of {', '.join(RUNTIMES)}")


@dataclass
class LoadedModel:
    """A model ready to score: its spec, the predictor that answers (scikit-learn or ONNX), and, when it came from
    the registry, its version. `estimator` is the scikit-learn object when one was loaded (None for ONNX alone)."""

    spec: ModelSpec
    predictor: Any  # Predictor | OnnxPredictor: one interface, predict(features) -> (prediction, proba)
    version: Version | None = None
    estimator: Any = None
    runtime: str = RUNTIME

    @classmethod
    def of(
        cls, estimator: Any, spec: ModelSpec, *, version: Version | None = None, probe: Any = None, proba: bool = True
    ) -> LoadedModel:
        """A scikit-learn estimator in memory (being registered, or just trained) or loaded from the registry."""
        predictor = Predictor(estimator, task=spec.task, proba=proba, probe=probe)
        return cls(spec, predictor, version, estimator, RUNTIME)

    @classmethod
    def load(
        cls, registry: Registry, ref: str | Version, load: LoadOptions | None = None, *, proba: bool = True
    ) -> LoadedModel:
        """Resolve, verify every stored hash the load reads, then load the runtime asked for: `onnx` (the version's
        verified ONNX graph), `sklearn` (its pickle, or its skops file where pickle is refused), or `auto` (ONNX
        when the version has one and onnxruntime is installed). Library-version differences warn (raise with
        `strict`): a model may predict differently under another scikit-learn."""
        from mlops_cli.registry import Version
        from mlops_cli.runtime import formats

        load = load or LoadOptions()
        runtime = load.runtime
        version = ref if isinstance(ref, Version) else registry.resolve(ref)
        spec = ModelSpec.of(version)
        if runtime == "onnx" or (runtime == "auto" and formats.has_onnx(version) and formats.onnx_installed()):
            return cls(spec, formats.load_onnx(version, spec), version, None, "onnx")
        _check_libraries(version, load.strict)
        estimator = formats.load_estimator(version, allow_pickle=load.allow_pickle)
        return cls.of(estimator, spec, version=version, probe=_probe(version, spec) if proba else None, proba=proba)

    @property
    def ref(self) -> str:
        return self.version.ref if self.version is not None else self.spec.ref

    @property
    def classes(self) -> np.ndarray | None:
        return self.predictor.classes  # type: ignore[no-any-return]

    @property
    def with_proba(self) -> bool:
        return bool(self.predictor.with_proba)

    def summary(self) -> dict[str, Any]:
        """The `model` block of a report envelope, with the runtime that answers."""
        base = self.version.summary() if self.version is not None else {}
        return {**base, "runtime": self.runtime}

    def score(self, data: Any) -> Scored:
        """Coerce and check `data` against the input contract, then predict the rows that fit it. `data` is a
        DataFrame, an Arrow RecordBatch/Table, or a mapping of column name to values (the fast path for a few rows:
        no pandas unless a column needs coercing). Extra columns are ignored; a missing feature raises
        SchemaMismatch."""
        import numpy as np

        features, invalid, reasons = contract.validate(self._columns(data), self.spec)
        n = len(invalid)
        # ONNX: one thread per session call; a large batch is cut into row chunks, one thread each
        used = threads.for_rows(n) if self.runtime == RUNTIME else 1
        classes = tuple(self.classes.tolist()) if self.classes is not None else None
        if invalid.all():  # every row rejected, or no rows: the model is not called
            width = len(classes) if self.with_proba and classes else 0
            empty = np.empty(0, dtype=object)
            return Scored(empty, np.empty((0, width)) if width else None, invalid, reasons, classes, self.runtime, used)
        if invalid.any():
            features = (
                features[~invalid] if not isinstance(features, dict) else {k: v[~invalid] for k, v in features.items()}
            )
        prediction, proba = self.predictor.predict(features)
        return Scored(prediction, proba, invalid, reasons, classes, self.runtime, used)

    def _columns(self, data: Any) -> Any:
        import pandas as pd

        if isinstance(data, pd.DataFrame) or isinstance(data, Mapping):
            return data
        from mlops_cli import io

        self.spec.require_features(data.schema.names, where="the data")
        batch = contract.prepare_arrow(data.select(self.spec.feature_names), self.spec)
        return io.to_pandas(batch)

    def as_estimator(self) -> Any:
        """A scikit-learn-style view whose predict/predict_proba go through `score` (for permutation importance,
        which calls the estimator itself)."""
        return _as_estimator(self)


def _check_libraries(version: Version, strict: bool) -> None:
    from mlops_cli.registry import library_versions

    recorded = version.manifest["libraries"].get("scikit-learn")
    running = library_versions()["scikit-learn"]
    if recorded != running:
        message = (
            f"{version.ref} was registered under scikit-learn {recorded}, "
            f"this is scikit-learn {running}; predictions may differ"
        )
        if strict:
            raise VersionMismatch(message, "run under the recorded version, or drop --strict")
        warnings.warn(message, MlopsWarning, stacklevel=3)


def _probe(version: Version, spec: ModelSpec) -> pd.DataFrame | None:
    """Rows from across the training distribution (the stored sample), to check that argmax(predict_proba) is
    predict before any row is scored."""
    from mlops_cli import io
    from mlops_cli.registry import SAMPLE

    if spec.task != "classifier" or SAMPLE not in version.manifest["files"] or not spec.feature_names:
        return None
    sample = io.read_table(version.file(SAMPLE), columns=spec.feature_names).head(CHECK_ROWS)
    return contract.validate(sample, spec)[0]  # type: ignore[no-any-return]


def _as_estimator(model: LoadedModel) -> Any:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

    class Runtime(BaseEstimator):
        """Answers `predict` and `predict_proba` through the runtime, for scikit-learn utilities that take an
        estimator. Every row must fit the contract (callers pass rows that do)."""

        def __init__(self, model: LoadedModel | None = None) -> None:
            self.model = model

        def fit(self, *args: Any, **kwargs: Any) -> Runtime:
            return self

        def _scored(self, X: Any) -> Scored:  # noqa: N803
            scored = self.model.score(X)  # type: ignore[union-attr]
            scored.require_all("the rows")
            return scored

        def predict(self, X: Any) -> np.ndarray:  # noqa: N803
            return self._scored(X).prediction

        def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
            return self._scored(X).proba  # type: ignore[return-value]

    mixin = ClassifierMixin if model.spec.task == "classifier" else RegressorMixin
    adapter = type("RuntimeEstimator", (mixin, Runtime), {})(model)
    if model.classes is not None:
        adapter.classes_ = model.classes
    return adapter
