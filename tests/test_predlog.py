"""The prediction log's writer, in process: entries built in bulk give the rows each request would have alone."""

from __future__ import annotations

import time

import pandas as pd
import pyarrow.parquet as pq
from conftest import CURRENT

from mlops_cli.online.predlog import Entry, PredictionLog
from mlops_cli.online.routing import Router
from mlops_cli.registry import Registry
from mlops_cli.runtime import LoadedModel, contract


class _Current:
    def __init__(self, model: LoadedModel) -> None:
        self.model, self.version = model, "1"


class _Fixed:
    """A Followed that never moves (the router only reads `current`)."""

    def __init__(self, model: LoadedModel) -> None:
        self.current = _Current(model)


def test_one_row_requests_logged_in_bulk_keep_each_rows_features(cli, registered, tmp_path):
    """60 one-row requests, one with text in a numeric column (a reason, its value null) and one whose categorical
    column holds a number (the bulk conversion fails: each request on its own, that one's features null): every
    logged feature is what validating that request alone gives, and the bad requests' neighbours are not nulled."""
    model = LoadedModel.load(Registry(cli.registry), "flights:1")
    spec = model.spec
    router = Router(_Fixed(model))  # type: ignore[arg-type]
    rows = pd.read_parquet(CURRENT, columns=spec.feature_names).dropna().head(60)
    numeric = next(f.name for f in spec.features if f.kind == "numeric")
    categorical = next(f.name for f in spec.features if f.kind == "categorical")
    log = PredictionLog(tmp_path / "log", 0)
    alone = []
    for i in range(len(rows)):
        values = {k: [v.item() if hasattr(v, "item") else v] for k, v in rows.iloc[i].items()}
        if i == 7:
            values[numeric] = ["not a number"]
        routed = router.score(values, 1)
        if i == 12:  # scored, then logged with a value from_values refuses for the whole column
            routed_12 = routed.prediction[0]
            values = {**values, categorical: [123]}
            alone.append({name: [None] for name in spec.feature_names})
        else:
            alone.append(contract.validate(contract.from_values(values, spec), spec)[0])
        assert log.submit(Entry(values, routed, spec, [i], f"r{i}", time.time(), 1.0))
    log.close()
    files = sorted((tmp_path / "log").rglob("*.parquet"))
    assert len(files) == 1
    logged = pq.read_table(files[0]).to_pandas()
    assert logged["request_id"].tolist() == [f"r{i}" for i in range(len(rows))]
    for i, features in enumerate(alone):
        for name in spec.feature_names:
            want, got = features[name][0], logged[name].iloc[i]
            assert (pd.isna(want) and pd.isna(got)) or str(want) == str(got) or float(want) == float(got), (i, name)
    assert pd.isna(logged[numeric].iloc[7]) and not pd.isna(logged[numeric].iloc[6])
    assert logged.loc[12, spec.feature_names].isna().all() and logged.loc[11, spec.feature_names].notna().all()
    assert logged["prediction"].iloc[12] == routed_12  # its answer is logged all the same
