"""Request bodies to rows, and answers back, for the three protocols `mlops serve` speaks.

- mlops: `POST /predict` with `{"rows": [{...}, ...]}` or `{"columns": [...], "data": [[...], ...]}`, optional
  `"ids"`; each answer row carries `prediction`, `proba_<class>`, `model_version` and `route`.
- MLflow's scoring server: `POST /invocations` with `dataframe_split`, `dataframe_records`, `instances`, `inputs`,
  or a CSV body; the answer is `{"predictions": [...]}`, so a client written for `mlflow models serve` works as is.
- The Open Inference Protocol (V2, KServe and Triton): one named input tensor per column, or one [rows, features]
  tensor in the model's feature order; one output tensor per answer column.

Only the columns the served models read (and the split key) are taken from a body. Values must be JSON scalars.
Errors never quote a caller's value: they name the column and, where it helps, the row.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlops_cli.errors import Malformed, SchemaMismatch, TooLarge
from mlops_cli.runtime.contract import SCALARS

MAX_EXTRA_COLUMNS = 1024  # columns a row may carry beyond the ones read: more is an abuse, not a request


@dataclass(frozen=True)
class Rows:
    values: dict[str, list[Any]]  # column -> one JSON value per row, for the columns the models read
    n: int
    ids: list[Any] | None = None
    features: Any = None  # with online features: the `Assembled` rows (where each feature came from)


class Reader:
    """Turns a body into `Rows` for the columns `names` (in the models' feature order: a V2 matrix's columns)."""

    def __init__(self, names: list[str], features: list[str], max_rows: int, absent: Any = None) -> None:
        self.names = names
        self.features = features
        self.max_rows = max_rows
        self.absent = absent  # what a row that lacks a column holds: None, or a marker when features are looked up
        self.max_columns = len(names) + MAX_EXTRA_COLUMNS

    # --- mlops ---------------------------------------------------------------------------------------------------

    def mlops(self, body: Any) -> Rows:
        if not isinstance(body, dict):
            raise Malformed(
                "the body must be a JSON object", 'send {"rows": [{...}]} or {"columns": [...], "data": [...]}'
            )
        ids = body.get("ids")
        if "rows" in body:
            rows = self.records(body["rows"], "rows")
        elif "columns" in body and "data" in body:
            rows = self.split(body["columns"], body["data"])
        else:
            raise Malformed("the body has neither rows nor columns and data", 'send {"rows": [{...}]}')
        if ids is not None and (not isinstance(ids, list) or len(ids) != rows.n):
            raise Malformed(f"ids must be a list of {rows.n} values, one per row", "send one id per row, or none")
        if ids is not None and not all(isinstance(i, SCALARS) for i in ids):
            raise Malformed("ids must be text or numbers", "send one id per row")
        return Rows(rows.values, rows.n, ids)

    def records(self, records: Any, where: str) -> Rows:
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise Malformed(f"{where} must be a list of objects, one per row", 'send [{"column": value, ...}, ...]')
        self._rows(len(records))
        for i, record in enumerate(records):
            if len(record) > self.max_columns:
                raise TooLarge(
                    f"row {i + 1} has {len(record):,} columns; the model reads {len(self.names)}",
                    "send the columns the model reads",
                )
        absent = self.absent
        values = {name: [record.get(name, absent) for record in records] for name in self.names}
        return self._checked(values, len(records))

    def split(self, columns: Any, data: Any) -> Rows:
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise Malformed("columns must be a list of column names", 'send {"columns": ["a", "b"], "data": [[1, 2]]}')
        if len(columns) > self.max_columns:
            raise TooLarge(f"{len(columns):,} columns; the model reads {len(self.names)}", "send the columns it reads")
        if not isinstance(data, list) or not all(isinstance(r, list) and len(r) == len(columns) for r in data):
            raise Malformed(
                f"data must be a list of rows of {len(columns)} values each", "send one value per column in each row"
            )
        self._rows(len(data))
        position = {name: i for i, name in enumerate(columns)}
        values = {name: [row[position[name]] for row in data] for name in self.names if name in position}
        return self._checked(values, len(data))

    def columnar(self, mapping: Any, where: str) -> Rows:
        """`{"column": [values...], ...}` (MLflow's `inputs` as a dict)."""
        if not isinstance(mapping, dict) or not all(isinstance(v, list) for v in mapping.values()):
            raise Malformed(f"{where} must map each column to a list of values", 'send {"column": [1, 2], ...}')
        if len(mapping) > self.max_columns:
            raise TooLarge(f"{len(mapping):,} columns; the model reads {len(self.names)}", "send the columns it reads")
        lengths = {len(v) for v in mapping.values()}
        if len(lengths) > 1:
            raise Malformed(f"the columns of {where} differ in length", "send one value per row in every column")
        n = lengths.pop() if lengths else 0
        self._rows(n)
        return self._checked({name: mapping[name] for name in self.names if name in mapping}, n)

    # --- MLflow --------------------------------------------------------------------------------------------------

    def mlflow_json(self, body: Any) -> Rows:
        if not isinstance(body, dict):
            raise Malformed("the body must be a JSON object", "see MLflow's scoring protocol")
        if "dataframe_split" in body:
            frame = body["dataframe_split"]
            if not isinstance(frame, dict):
                raise Malformed("dataframe_split must be an object with columns and data", "see MLflow's protocol")
            return self.split(frame.get("columns"), frame.get("data"))
        if "dataframe_records" in body:
            return self.records(body["dataframe_records"], "dataframe_records")
        for key in ("instances", "inputs"):
            if key in body:
                value = body[key]
                if isinstance(value, dict):
                    return self.columnar(value, key)
                if isinstance(value, list) and value and all(isinstance(r, list) for r in value):
                    return self.split(self.features, value)  # rows of values in the model's feature order
                return self.records(value, key)
        raise Malformed(
            "the body has none of dataframe_split, dataframe_records, instances, inputs",
            "see MLflow's scoring protocol",
        )

    def csv(self, body: bytes) -> Rows:
        import csv
        import io

        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Malformed("the CSV body is not UTF-8", "send UTF-8 text") from exc
        lines = list(csv.reader(io.StringIO(text)))
        if not lines:
            raise Malformed("the CSV body is empty", "send a header line and one line per row")
        rows: list[list[str | None]] = [[None if v == "" else v for v in line] for line in lines[1:] if line]
        return self.split(lines[0], rows)

    # --- Open Inference Protocol (V2) ----------------------------------------------------------------------------

    def v2(self, body: Any) -> Rows:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, dict) for t in inputs):
            raise Malformed("inputs must be a list of tensors", "see the Open Inference Protocol's infer request")
        tensors = {}
        for tensor in inputs:
            name, shape, data = tensor.get("name"), tensor.get("shape"), tensor.get("data")
            if not isinstance(name, str) or not isinstance(shape, list) or not isinstance(data, list):
                raise Malformed("each input needs a name, a shape and data", "see the infer request")
            if not all(isinstance(d, int) and d >= 0 for d in shape):
                raise Malformed(f"input {name!r} has an invalid shape", "give its dimensions as integers")
            tensors[name] = (shape, _flat(data))
        if len(tensors) == 1 and next(iter(tensors)) not in self.names:
            shape, flat = next(iter(tensors.values()))
            width = len(self.features)
            if len(shape) != 2 or shape[1] != width or len(flat) != shape[0] * width:
                raise SchemaMismatch(
                    f"one input tensor must have shape [rows, {width}]: the model's features in order",
                    f"its features are {self.features}",
                )
            matrix = [flat[i * width : (i + 1) * width] for i in range(shape[0])]
            return self.split(self.features, matrix)
        mapping = {}
        for name, (shape, flat) in tensors.items():
            if len(flat) != (shape[0] if shape else 0) or any(d != 1 for d in shape[1:]):
                raise Malformed(f"input {name!r} must hold one value per row", "give it shape [rows] or [rows, 1]")
            mapping[name] = flat
        return self.columnar(mapping, "inputs")

    # --- checks --------------------------------------------------------------------------------------------------

    def _rows(self, n: int) -> None:
        if n > self.max_rows:
            raise TooLarge(f"{n:,} rows in one request; this server takes at most {self.max_rows:,}", "split it")

    def _checked(self, values: dict[str, list[Any]], n: int) -> Rows:
        bad = not_scalar(values, self.absent)
        if bad:
            row = min(bad)
            raise SchemaMismatch(
                f"column {bad[row]!r} holds a list or an object at row {row + 1}", "send one plain value per cell"
            )
        return Rows(values, n)


_SCALAR_TYPES = frozenset(SCALARS)


def not_scalar(values: Mapping[str, list[Any]], absent: Any = None) -> dict[int, str]:
    """Rows holding a list or an object (JSON's only non-scalars) in one of `values`' columns, with the first such
    column; `absent` (what a row that lacks a column holds) passes. For `serve`'s requests and `stream`'s messages.
    The common case, none, costs one set of types per column."""
    allowed = _SCALAR_TYPES | {type(absent)}
    out: dict[int, str] = {}
    for name, column in values.items():
        if set(map(type, column)) <= allowed:
            continue
        for row, value in enumerate(column):
            if row not in out and not isinstance(value, SCALARS) and value is not absent:
                out[row] = name
    return out


def error_envelope(code: int, message: str, hint: str | None) -> dict[str, Any]:
    """The one JSON error body of the services (`serve`, and `stream`'s metrics port). Never a caller's value."""
    return {"status": "error", "error": {"code": code, "message": message, "hint": hint}}


def _flat(data: list[Any]) -> list[Any]:
    if not any(isinstance(d, list) for d in data):
        return data
    out: list[Any] = []
    for d in data:
        out.extend(_flat(d) if isinstance(d, list) else [d])
    return out


def loads(body: bytes) -> Any:
    """JSON, or a 400 that does not quote the body."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        position = f" (at byte {exc.pos})" if isinstance(exc, json.JSONDecodeError) else ""
        raise Malformed(f"the body is not valid JSON{position}", "send a JSON object") from exc


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(type(value).__name__)


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_plain)  # made once: json.dumps with
# options builds an encoder per call, which a stream pays for every message
# `JSONEncoder.encode` still builds CPython's C encoder on every call (a quarter of a small answer's encoding time);
# this is the one it builds, made once. Without a circular-reference check: answers are built here, never circular.
_make_encoder = getattr(json.encoder, "c_make_encoder", None)  # None where there is no C encoder (not CPython)
_C_ENCODER = (
    _make_encoder(None, _plain, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)
    if _make_encoder is not None
    else None
)


def dumps(obj: Any) -> bytes:
    if _C_ENCODER is None:
        return _ENCODER.encode(obj).encode()
    return "".join(_C_ENCODER(obj, 0)).encode()


def answer_rows(routed: Any, ids: list[Any] | None, features: Any = None) -> list[dict[str, Any]]:
    """The mlops answer: one object per row, score-batch's columns (and, with online features, the view's version
    and any features filled from the reference profile)."""
    import math

    from mlops_cli.runtime import proba_column

    columns = [proba_column(c) for c in routed.classes]
    proba = routed.proba.tolist() if routed.proba is not None else None  # one conversion, not one per row
    out = []
    for i in range(routed.n):
        row: dict[str, Any] = {} if ids is None else {"id": ids[i]}
        row["prediction"] = routed.prediction[i]
        if proba is not None:
            for name, value in zip(columns, proba[i], strict=True):
                row[name] = None if math.isnan(value) else value
        row["model_version"] = routed.version[i]
        row["route"] = routed.route[i]
        if routed.reasons[i] is not None:
            row["invalid_reason"] = routed.reasons[i]
        if features is not None:
            row.update(features.flags(i))
        out.append(row)
    return out


def feature_columns(features: Any) -> dict[str, list[Any]]:
    """With online features, per row: the view version its features came from (null: it needed no lookup), the
    features filled from the reference profile (null: none) and why. /invocations adds them as top-level keys next
    to `predictions` (MLflow's own server adds metadata keys so, and its client, `PredictionsResponse`, reads only
    `predictions`); V2 as output tensors."""
    if features is None:
        return {}
    filled = [None if f is None else f.split(",") for f in features.filled]
    return {"feature_view_version": features.versions, "features_filled": filled, "feature_fallback": features.fallback}


def v2_feature_outputs(features: Any) -> list[dict[str, Any]]:
    """`feature_columns` as V2 tensors: a version of 0 is a row that needed no lookup (versions start at 1); the
    filled features are comma-joined, "" when none."""
    if features is None:
        return []
    n = len(features.versions)
    return [
        {
            "name": "feature_view_version",
            "shape": [n],
            "datatype": "INT64",
            "data": [v or 0 for v in features.versions],
        },
        {"name": "features_filled", "shape": [n], "datatype": "BYTES", "data": [f or "" for f in features.filled]},
        {"name": "feature_fallback", "shape": [n], "datatype": "BYTES", "data": [f or "" for f in features.fallback]},
    ]


def v2_outputs(routed: Any) -> list[dict[str, Any]]:
    import math

    from mlops_cli.runtime import proba_column

    n = routed.n
    predictions = routed.prediction
    kinds = {type(p) for p in predictions if p is not None}
    datatype = "FP64" if kinds <= {float} else "INT64" if kinds <= {int} else "BOOL" if kinds <= {bool} else "BYTES"
    if datatype == "BYTES":
        predictions = [None if p is None else str(p) for p in predictions]
    outputs = [{"name": "prediction", "shape": [n], "datatype": datatype, "data": predictions}]
    if routed.proba is not None:
        for j, label in enumerate(routed.classes):
            data = [None if math.isnan(v) else v for v in routed.proba[:, j].tolist()]
            outputs.append({"name": proba_column(label), "shape": [n], "datatype": "FP64", "data": data})
    outputs.append({"name": "model_version", "shape": [n], "datatype": "BYTES", "data": routed.version})
    return outputs


def v2_datatype(kind: str | None) -> str:
    return {"numeric": "FP64", "boolean": "BOOL"}.get(kind or "", "BYTES")


def is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json") or media == ""


def is_csv(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() in ("text/csv", "application/csv")
