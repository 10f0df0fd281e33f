"""score-batch --engine dask against a real cluster: a `dask scheduler` and two `dask worker` processes on 127.0.0.1,
started once for the module. The predictions and every figure of the report must be the local engine's; failures,
kills and signals must leave no OUTPUT."""

from __future__ import annotations

import copy
import json
import os
import signal
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

from mlops_cli import io, scoring
from mlops_cli.errors import IntegrityError

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
    """150,000 rows in 20 files: the champion scores more rows than the quantile sample holds (70% of them), so
    the sample is a real sample."""
    frame = pd.concat([current_frame] * 5, ignore_index=True)
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


PLAIN = ["--id-column", "flight", "--batch-size", "5000", "--challenger", "flights:2", "--challenger-share", "0.3"]


@pytest.fixture(scope="module")
def big_local(reg, big, tmp_path_factory) -> tuple[dict[str, Any], Path]:
    """The local engine's report and predictions on `big`: flights with flights:2 as a 30% challenger."""
    out = tmp_path_factory.mktemp("big-local") / "local.parquet"
    return _run(reg, "flights:1", big, out, *PLAIN), out


def _run(reg: Cli, *args: Any, expect: int = 0) -> dict[str, Any]:
    result = reg("score-batch", *args, "--json")
    assert result.exit_code == expect, (result.exit_code, result.stdout, result.stderr)
    return json.loads(result.stdout)


def _same_report(local: dict[str, Any], dask: dict[str, Any]) -> None:
    a, b = (copy.deepcopy(r["results"]) for r in (local, dask))
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
        ("flights:1", "big", PLAIN),
        ("strict", "dirty", ["--on-invalid", "null", "--keep-all"]),
        ("strict", "dirty", ["--on-invalid", "skip", "--id-column", "flight", "--no-proba"]),
    ],
    ids=["challenger", "null", "skip"],
)
def test_dask_equals_local(reg, cluster, tmp_path, request, model, data, extra):
    source = request.getfixturevalue(data)
    if extra is PLAIN:
        local, local_out = request.getfixturevalue("big_local")
    else:
        local_out = tmp_path / "local.parquet"
        local = _run(reg, model, source, local_out, *extra)
    out = tmp_path / "dask.parquet"
    dask = _run(reg, model, source, out, *extra, "--engine", "dask", "--scheduler", cluster)
    _same_report(local, dask)
    assert sorted(p.name for p in out.iterdir()) == [f"part-{i:05d}.parquet" for i in range(20)]  # one per file
    assert pq.read_table(out / "part-00004.parquet").num_rows == 0  # the empty input file
    expected = io.read_table(local_out)
    pd.testing.assert_frame_equal(io.read_table(out), expected)
    assert len(expected) == dask["results"]["rows_written"]
    if data == "big":
        champion, challenger = dask["results"]["models"]
        assert champion["prediction"]["quantiles_exact"] is False  # more than 100,000 rows: a real sample
        assert challenger["rows_routed"] > 0 and dask["results"]["split"]["observed_share"] > 0.25
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


def test_bad_input_and_existing_output_fail_before_any_task(reg, cluster, tmp_path):
    from conftest import CURRENT_CSV

    out = tmp_path / "scores.parquet"
    result = reg("score-batch", "flights", CURRENT_CSV, out, "--engine", "dask", "--scheduler", cluster)
    assert result.exit_code == 3 and "--engine dask reads Parquet" in result.stderr and not out.exists()
    out.mkdir()
    result = reg("score-batch", "flights", CURRENT, out, "--engine", "dask", "--scheduler", cluster)
    assert result.exit_code == 3 and "already exists" in result.stderr
    result = reg("score-batch", "flights", CURRENT, tmp_path / "s.csv", "--engine", "dask", "--scheduler", cluster)
    assert result.exit_code == 2


def _mlops(reg: Cli, *args: Any) -> subprocess.Popen:
    argv = [sys.executable, "-m", "mlops_cli", "--registry", str(reg.registry), *map(str, args), "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _hidden(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def _wait_for_parts(folder: Path, proc: subprocess.Popen, parts: int, timeout: float = 120) -> None:
    """Until the run's hidden folder holds `parts` finished parts: the run is under way."""
    deadline = time.monotonic() + timeout
    while sum(len(list(h.glob("part-*.parquet"))) for h in _hidden(folder) if h.is_dir()) < parts:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run wrote no part"
        time.sleep(0.05)


def test_a_killed_worker_is_replaced_and_the_output_is_still_the_local_one(reg, cluster, tmp_path, big, big_local):
    """kill -9 a worker while it runs a task: the scheduler runs its tasks again on the others; the parts it left
    half-written are not published; the output and report are the local engine's."""
    from distributed import Client

    local, local_out = big_local
    out = tmp_path / "dask.parquet"
    with (tmp_path / "w3.log").open("w") as log:
        victim = _start_worker(cluster, "w3", log)
        try:
            _wait_for_workers(cluster, 3)
            proc = _mlops(reg, "score-batch", "flights:1", big, out, *PLAIN, "--engine", "dask", "--scheduler", cluster)
            _wait_for_parts(tmp_path, proc, 1)
            with Client(cluster, timeout=10, set_as_default=False) as client:
                deadline = time.monotonic() + 60
                while True:
                    info = client.scheduler_info(n_workers=-1)["workers"]
                    mine = [a for a, w in info.items() if w.get("name") == "w3"]
                    if mine and client.processing(mine).get(mine[0]):
                        break  # w3 holds a task right now
                    assert time.monotonic() < deadline and proc.poll() is None, "w3 never ran a task"
                    time.sleep(0.02)
            victim.kill()
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            _stop([victim])
    assert proc.returncode == 0, stderr
    _same_report(local, {**json.loads(stdout)})
    pd.testing.assert_frame_equal(io.read_table(out), io.read_table(local_out))
    assert sorted(p.name for p in out.iterdir()) == [f"part-{i:05d}.parquet" for i in range(20)]
    assert _hidden(tmp_path) == []
    _wait_for_workers(cluster, 2)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_on_the_client_leaves_yesterdays_output(reg, cluster, tmp_path, big, signum):
    out = tmp_path / "scores.parquet"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"yesterday")
    proc = _mlops(
        reg, "score-batch", "flights", big, out, "--batch-size", "1000", "--overwrite", "--engine", "dask",
        "--scheduler", cluster,
    )  # fmt: skip
    _wait_for_parts(tmp_path, proc, 1)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    assert "nothing was written" in stderr
    assert [p.name for p in out.iterdir()] == ["part-00000.parquet"]
    assert (out / "part-00000.parquet").read_bytes() == b"yesterday"
    assert _hidden(tmp_path) == []


def test_without_a_scheduler_a_local_cluster_runs_it(reg, tmp_path, dirty):
    local = _run(reg, "strict", dirty, tmp_path / "local.parquet", "--on-invalid", "null")
    dask = _run(reg, "strict", dirty, tmp_path / "dask.parquet", "--on-invalid", "null", "--engine", "dask")
    assert dask["results"]["engine"]["scheduler"] is None and dask["results"]["engine"]["workers"] >= 1
    _same_report(local, dask)


def test_a_worker_refuses_an_artifact_other_than_the_clients(reg, tmp_path):
    """The check each worker makes after LoadedModel.load verified the file against the registry: that it is the
    artifact the client resolved (another registry copy on the worker, or a version re-created meanwhile)."""
    from mlops_cli.registry import Registry

    job = scoring._Job(reg.registry, (), scoring.ScoreOptions(), None, tmp_path, "parquet")  # type: ignore[arg-type]
    assert scoring._load_verified(job, "flights:1", Registry(reg.registry).resolve("flights:1").summary()["sha256"])
    with pytest.raises(IntegrityError, match="not the artifact the client verified"):
        scoring._load_verified(job, "flights:1", "0" * 64)


def test_a_result_taken_by_the_client_is_freed_on_its_worker(cluster):
    """Results the client has taken must not stay in the workers' memory until the run ends: that made a worker's
    memory grow with the number of partitions (measured: 460 → 657 MB from 5M to 20M rows) instead of their size."""
    from mlops_cli.engines import EngineOptions
    from mlops_cli.engines import dask as engine

    held: list[int] = []
    with engine.cluster(EngineOptions("dask", cluster)) as c:

        def in_memory(i: int, _: Any) -> None:
            state = c.client.run_on_scheduler(lambda dask_scheduler: [t.state for t in dask_scheduler.tasks.values()])
            held.append(sum(s == "memory" for s in state))

        # time.sleep: a task the workers can import (not this module), slow enough to finish one after another.
        results = engine.map_partitions(c, time.sleep, [0.05] * 40, on_result=in_memory)
    assert results == [None] * 40 and len(held) == 40
    # Releases travel to the scheduler in the background: a few results may still be held, never most of them.
    assert max(held[10:]) <= 8, held
