"""ONNX: a fitted scikit-learn model as a computation graph, converted at registration and run by onnxruntime.

Loading an ONNX file runs no code, and onnxruntime answers one row in tens of microseconds where a scikit-learn
pipeline spends about a millisecond in Python. Numbers travel as float32 (tree thresholds are float32 in the graph:
float64 inputs made HistGradientBoosting disagree on 0.1% of rows, float32 on none), text as strings, a missing
text value as "" (ONNX string tensors hold no NaN; see `_for_conversion`).

The conversion is checked at registration on the stored reference sample (and the eval data): labels must agree
and probabilities stay within a tolerance, or no ONNX file is stored. Optional: `pip install 'mlops-cli[onnx]'`.
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import InvalidData, MlopsError
from mlops_cli.runtime.predictor import short

if TYPE_CHECKING:
    import numpy as np

    from mlops_cli.runtime.spec import ModelSpec

ONNX_FILE = "model.onnx"
OPSET = {"": 17, "ai.onnx.ml": 3}
MISSING_TEXT = ""  # how a missing text value is fed to the graph


class NotConvertible(MlopsError):
    """The model cannot be converted (an estimator or option skl2onnx does not support, a custom transformer)."""


def convert(estimator: Any, spec: ModelSpec) -> bytes:
    """The ONNX graph of a fitted estimator, with one input per feature (or one matrix `X` for a model fitted on an
    array). NotConvertible says why not."""
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError as exc:
        raise NotConvertible("skl2onnx is not installed", "pip install 'mlops-cli[onnx]'") from exc
    if spec.task not in ("classifier", "regressor"):
        raise NotConvertible(f"a {spec.task} model", "only classifiers and regressors are converted")
    kinds = {f.name: f.kind for f in spec.features}
    if _selects_columns(estimator):
        unsupported = [n for n, k in kinds.items() if k not in ("numeric", "boolean", "categorical")]
        if unsupported:
            raise NotConvertible(f"features {unsupported} have no ONNX input type (dates, or no recorded type)")
        types = [
            (n, StringTensorType([None, 1]) if k == "categorical" else FloatTensorType([None, 1]))
            for n, k in kinds.items()
        ]
    else:  # the model reads one matrix: every feature must be a number
        text = [n for n, k in kinds.items() if k not in ("numeric", "boolean", None)]
        if text:
            raise NotConvertible(
                f"features {text} are not numbers, and the model has no ColumnTransformer to select them"
            )
        types = [("X", FloatTensorType([None, len(spec.features)]))]
    # zipmap off: probabilities as one matrix, not a list of dicts
    options = {"zipmap": False} if spec.task == "classifier" else None
    try:
        with warnings.catch_warnings():
            # protobuf 6 warns that skl2onnx hands it numpy booleans for ints (protobuf 7 refuses them, hence the
            # pin in the extra); the graph is checked against the artifact before it is stored.
            warnings.simplefilter("ignore", DeprecationWarning)
            graph = to_onnx(_for_conversion(estimator), initial_types=types, options=options, target_opset=OPSET)
    except Exception as exc:  # skl2onnx raises whatever its converters raise
        raise NotConvertible(f"{type(exc).__name__}: {short(exc)}") from exc
    return bytes(graph.SerializeToString())


def _selects_columns(estimator: Any) -> bool:
    """A Pipeline that starts with a ColumnTransformer picks its columns by name: one graph input per feature.
    Anything else reads one matrix, `X`, of the features in order."""
    from sklearn.compose import ColumnTransformer

    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    return isinstance(first, ColumnTransformer)


def _for_conversion(estimator: Any) -> Any:
    """A copy in which imputers of missing text look for "" (how the runtime feeds a missing text value): skl2onnx
    converts SimpleImputer only when its missing value is a string, and NaN never reaches a string tensor."""
    from sklearn.impute import SimpleImputer

    target = copy.deepcopy(estimator)
    stack = [target]
    while stack:
        node = stack.pop()
        if isinstance(node, SimpleImputer):
            text = getattr(node, "_fit_dtype", None)
            if text is not None and text.kind in "OUS" and _is_nan(node.missing_values):
                node.missing_values = MISSING_TEXT
            continue
        for attr in ("steps", "transformers_"):
            for step in getattr(node, attr, None) or []:
                stack.append(step[1])
        if hasattr(node, "estimator") and not isinstance(node.estimator, str):
            stack.append(node.estimator)
    return target


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and value != value


PARALLEL_ROWS = 8_192  # below this, one call; above, row chunks on several threads (the session releases the GIL)


class OnnxPredictor:
    """`Predictor`'s interface over an onnxruntime session. `prediction` is the graph's label output: the converted
    `predict`, which registration found equal to scikit-learn's on every sample row."""

    def __init__(self, graph: bytes, spec: ModelSpec, *, threads: int = 1) -> None:
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread inside the session, always: with several, onnxruntime sums a tree ensemble in an order that
        # depends on the batch size (measured: 16 rows differed from the same rows in a batch of 300 by 6e-8), and
        # the same row must get the same answer in any batch. Large batches run in row chunks on `threads` threads
        # instead (`predict`): each row is still summed in one thread, in one order.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.threads = threads
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.spec = spec
        self.inputs = [(i.name, i.type) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.classes: np.ndarray | None = np.asarray(spec.classes) if spec.task == "classifier" else None
        self.with_proba = self.classes is not None and len(self.outputs) > 1

    def feed(self, features: Any) -> dict[str, np.ndarray]:
        """The graph's inputs from validated features (a DataFrame, or a mapping of column name to array)."""
        import numpy as np

        if [name for name, _ in self.inputs] == ["X"]:
            if isinstance(features, dict):
                return {"X": np.column_stack([_numbers(features[n]) for n in self.spec.feature_names])}
            return {"X": features.to_numpy(dtype=np.float32, na_value=np.nan)}
        out = {}
        for name, type_ in self.inputs:
            column = features[name]
            out[name] = (_text(column) if type_ == "tensor(string)" else _numbers(column)).reshape(-1, 1)
        return out

    def _run(self, feed: dict[str, np.ndarray]) -> list[Any]:
        import numpy as np

        rows = len(next(iter(feed.values())))
        if self.threads <= 1 or rows < PARALLEL_ROWS:
            return self.session.run(None, feed)  # type: ignore[no-any-return]
        cuts = np.linspace(0, rows, self.threads + 1).astype(int)
        chunks = [{k: v[a:b] for k, v in feed.items()} for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        parts = list(_pool(self.threads).map(lambda chunk: self.session.run(None, chunk), chunks))
        return [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))]

    def predict(self, features: Any) -> tuple[np.ndarray, np.ndarray | None]:
        import numpy as np

        try:
            results = self._run(self.feed(features))
        except Exception as exc:  # onnxruntime's errors have no common base we can name
            raise InvalidData(
                f"the ONNX model cannot score this data ({type(exc).__name__}: {short(exc)})",
                "check the columns and types against the model's schema",
            ) from exc
        if self.classes is None:
            return np.asarray(results[0], dtype=np.float64).reshape(-1), None
        labels = np.asarray(results[0]).reshape(-1)
        prediction = labels.astype(self.classes.dtype) if self.classes.dtype.kind in "iub" else labels
        proba = np.asarray(results[1], dtype=np.float64) if self.with_proba else None
        return prediction, proba


def _numbers(column: Any) -> np.ndarray:
    import numpy as np

    if hasattr(column, "to_numpy"):
        return column.to_numpy(dtype=np.float32, na_value=np.nan)  # type: ignore[no-any-return]
    return np.asarray(column, dtype=np.float32)


def _text(column: Any) -> np.ndarray:
    import numpy as np
    import pandas as pd

    values = column.to_numpy(dtype=object) if hasattr(column, "to_numpy") else np.asarray(column, dtype=object)
    missing = pd.isna(values)
    if missing.any():
        values = values.copy()
        values[missing] = MISSING_TEXT
    return values.astype(str)


_pools: dict[int, Any] = {}


def _pool(threads: int) -> Any:
    """One thread pool per size for the process, made when a large batch first needs it."""
    from concurrent.futures import ThreadPoolExecutor

    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="mlops-onnx")
    return _pools[threads]
