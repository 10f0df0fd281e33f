"""score-batch --engine dask against a real cluster: a `dask scheduler` and two `dask worker` processes on 127.0.0.1,
started once for the module. The predictions and every figure of the report must be the local engine's; failures,
kills and signals must leave no OUTPUT."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CURRENT, REFERENCE, ROOT, Cli

from mlops_cli import io

BIN = Path(sys.executable).parent
# Figures that measure the run rather than the data: the only ones allowed to differ between engines.
TIMINGS = {"wall_seconds", "rows_per_second", "peak_rss_mb", "engine"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_worker(address: str, name: str, log: Any) -> subprocess.Popen:
    # --no-nanny: the process we start is the worker itself, so killing it loses the worker (a nanny would restart
    # it); one thread each, as on a 2-core machine.
    return subprocess.Popen(
        [BIN / "dask", "worker", address, "--no-nanny", "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"]
        + ["--name", name],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _workers(address: str) -> int:
    from distributed import Client

    with Client(address, timeout=10, set_as_default=False) as client:
        return len(client.scheduler_info(n_workers=-1)["workers"])


def _wait_for_workers(address: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _workers(address) < n:
        assert time.monotonic() < deadline, f"fewer than {n} Dask workers after {timeout} s"
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[str]:
    """The scheduler's address; two workers attached."""
    logs = tmp_path_factory.mktemp("dask-logs")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    with (logs / "scheduler.log").open("w") as log, (logs / "workers.log").open("w") as workers_log:
        scheduler = subprocess.Popen(
            [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        procs = [scheduler]
        try:
            procs += [_start_worker(address, f"w{i}", workers_log) for i in (1, 2)]
            _wait_for_workers(address, 2)
            yield address
        finally:
            _stop(procs[1:] + procs[:1])


@pytest.fixture(scope="module")
def reg(tmp_path_factory, model_file, other_model_file) -> Cli:
    """flights:1 and :2 (accept anything), `strict` (rejects NaNs and unseen categories)."""
    cli = Cli(tmp_path_factory.mktemp("dask") / "registry")
    common = ["--train-data", REFERENCE, "--target", "delayed", "--sample-size", "500", "-q"]
    for args in (
        [model_file, "--name", "flights"],
        [other_model_file, "--name", "flights"],
        [model_file, "--name", "strict", "--rejects-missing", "--rejects-unseen"],
    ):
        assert cli("register", *args, *common).exit_code == 0
    return cli


def _write_parts(frame: pd.DataFrame, folder: Path, files: int) -> Path:
    """`frame` cut into `files` Parquet files, the first half under a hive partition folder (month=1/, which sorts
    first), one of them empty."""
    folder.mkdir()
    sizes = np.diff(np.linspace(0, len(frame), files + 1).astype(int))
    sizes[3] += sizes[4]
    sizes[4] = 0  # an empty file: it still gets its (empty) part
    start = 0
    for i, size in enumerate(sizes):
        where = folder / ("month=1" if i < files // 2 else "")
        where.mkdir(exist_ok=True)
        table = pa.Table.from_pandas(frame.iloc[start : start + size], preserve_index=False)
        pq.write_table(table, where / f"part-{i:02d}.parquet")
        start += size
    return folder


@pytest.fixture(scope="module")
def big(tmp_path_factory, current_frame) -> Path:
    """120,000 rows in 20 files: more rows than the quantile sample holds, so the sample is a real sample."""
    frame = pd.concat([current_frame] * 4, ignore_index=True)
    return _write_parts(frame, tmp_path_factory.mktemp("big") / "in.parquet", 20)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory, current_frame, reg) -> Path:
    """The rows `strict` accepts, in 20 files, but for rows 1 and 6 of month=1/part-06 and a row of two later files."""
    from mlops_cli.registry import Registry
    from mlops_cli.runtime import LoadedModel

    invalid = LoadedModel.load(Registry(reg.registry), "strict").score(current_frame).invalid
    frame = current_frame[~invalid].reset_index(drop=True)
    first = int(np.linspace(0, len(frame), 21).astype(int)[6])  # the first row of part-06
    frame.loc[[first, first + 5, first + 9_000], "temp"] = np.nan
    frame.loc[[first + 5, first + 12_000], "carrier"] = "ZZ"
    return _write_parts(frame, tmp_path_factory.mktemp("dirty") / "in.parquet", 20)


def _run(reg: Cli, *args: Any, expect: int = 0) -> dict[str, Any]:
    result = reg("score-batch", *args, "--json")
    assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr)
    return json.loads(result.stdout)


def _same_report(local: dict[str, Any], dask: dict[str, Any]) -> None:
    a, b = (dict(r["results"]) for r in (local, dask))
    assert a.pop("engine") == {"name": "local"}
    assert b["engine"]["name"] == "dask" and b["engine"]["partitions"] == 20
    for key in TIMINGS:
        a.pop(key, None), b.pop(key, None)
    a["output"].pop("path"), b["output"].pop("path")
    assert a == b  # every figure: counts, reasons, routing, class shares, proba means and quantiles, bit for bit
    assert local["inputs"] == dask["inputs"] and local["model"] == dask["model"]
    assert local["messages"] == dask["messages"]


@pytest.mark.parametrize(
    "model, data, extra",
    [
        ("flights", "big", ["--id-column", "flight", "--batch-size", "2500"]),
        ("flights:1", "big", ["--challenger", "flights:2", "--split-key", "flight", "--challenger-share", "0.3"]),
        ("strict", "dirty", ["--on-invalid", "null", "--keep-all"]),
        ("strict", "dirty", ["--on-invalid", "skip", "--id-column", "flight", "--no-proba"]),
    ],
    ids=["plain", "challenger", "null", "skip"],
)
def test_dask_equals_local(reg, cluster, tmp_path, request, model, data, extra):
    source = request.getfixturevalue(data)
    local = _run(reg, model, source, tmp_path / "local.parquet", *extra)
    out = tmp_path / "dask.parquet"
    dask = _run(reg, model, source, out, *extra, "--engine", "dask", "--scheduler", cluster)
    _same_report(local, dask)
    assert sorted(p.name for p in out.iterdir()) == [f"part-{i:05d}.parquet" for i in range(20)]  # one per file
    assert pq.read_table(out / "part-00004.parquet").num_rows == 0  # the empty input file
    expected = pd.read_parquet(tmp_path / "local.parquet")
    pd.testing.assert_frame_equal(io.read_table(out), io.read_table(tmp_path / "local.parquet"))
    assert len(expected) == dask["results"]["rows_written"]
    if data == "big" and "--challenger" not in extra:
        assert dask["results"]["models"][0]["prediction"]["quantiles_exact"] is False  # the sample was sampled
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_invalid_rows_name_the_file_and_row_and_write_nothing(reg, cluster, tmp_path, dirty):
    out = tmp_path / "scores.parquet"
    local = reg("score-batch", "strict", dirty, tmp_path / "local.parquet")
    result = reg("score-batch", "strict", dirty, out, "--engine", "dask", "--scheduler", cluster)
    assert result.exit_code == 3 and not out.exists()
    # The first failing file, as the local engine meets it, whichever task fails first on the cluster.
    assert result.stderr == local.stderr
    assert "month=1/part-06.parquet: 2 row(s) cannot be scored: " in result.stderr
    assert "temp: missing value (rows 1, 6)" in result.stderr
    assert "carrier: unseen category (row 6, e.g. 'ZZ')" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == []


def test_unreachable_scheduler_is_one_line_naming_it(reg, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    env = {**os.environ, "MLOPS_DASK_CONNECT_TIMEOUT": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_cli", "--registry", reg.registry, "score-batch", "flights", CURRENT]
        + [tmp_path / "out.parquet", "--engine", "dask", "--scheduler", address],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Dask scheduler at " + address)
    assert time.monotonic() - started < 30 and not (tmp_path / "out.parquet").exists()
