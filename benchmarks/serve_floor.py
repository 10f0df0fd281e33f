"""The floor for serving a scikit-learn model on this stack: a minimal hand-written Starlette app (bench_serve.py).

    SERVE_FLOOR_MODEL=model.joblib SERVE_FLOOR_SHA256=<hex> \
        python -m uvicorn serve_floor:app --app-dir benchmarks --workers 2 --loop uvloop --http httptools

POST /predict {"rows": [{"feature": value, ...}, ...]} answers {"proba": [[...], ...]}: the rows become a pandas
DataFrame in the model's column order and go to predict_proba. No validation, no logging, no metrics: what is left is
the cost of HTTP, JSON and one predict_proba call. The model file's sha256 is checked before it is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os

import joblib
import pandas as pd
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def _load() -> object:
    path, expected = os.environ["SERVE_FLOOR_MODEL"], os.environ["SERVE_FLOOR_SHA256"]
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != expected:
        raise RuntimeError(f"{path}: sha256 {digest} is not the manifest's {expected}")
    return joblib.load(path)


MODEL = _load()
COLUMNS = list(MODEL.feature_names_in_)


async def predict(request: Request) -> Response:
    rows = json.loads(await request.body())["rows"]
    proba = MODEL.predict_proba(pd.DataFrame(rows, columns=COLUMNS))
    return JSONResponse({"proba": proba.tolist()})


async def ping(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ping", ping)])
