"""score-batch --engine dask against a real cluster: a `dask scheduler` and two `dask worker` processes on 127.0.0.1,
started once for the module. The predictions and every figure of the report must be the local engine's; failures,
kills and signals must leave no OUTPUT."""

from __future__ import annotations

import copy
import json
import math
import os
import re
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


@pytest.mark.parametrize("command", ["score-batch", "drift-report"])
def test_unreachable_scheduler_is_one_line_naming_it(reg, tmp_path, command):
    address = f"tcp://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    env = {**os.environ, "MLOPS_DASK_CONNECT_TIMEOUT": "2", "PYTHONPATH": str(ROOT)}
    args = (
        ["--registry", reg.registry, "score-batch", "flights", CURRENT, tmp_path / "out.parquet"]
        if command == "score-batch"
        else ["drift-report", REFERENCE, CURRENT]
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mlops_cli", *args, "--engine", "dask", "--scheduler", address],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the Dask scheduler at " + address)
    assert time.monotonic() - started < 30 and proc.stdout == "" and list(tmp_path.iterdir()) == []


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
    local, local_out = big_local
    out = tmp_path / "dask.parquet"
    with (tmp_path / "w3.log").open("w") as log:
        victim = _start_worker(cluster, "w3", log)
        try:
            _wait_for_workers(cluster, 3)
            proc = _mlops(reg, "score-batch", "flights:1", big, out, *PLAIN, "--engine", "dask", "--scheduler", cluster)
            _wait_for_parts(tmp_path, proc, 1)
            _kill_when_busy(cluster, "w3", victim, proc)
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


def test_a_worker_refuses_a_stored_sample_other_than_the_clients(reg):
    """drift-report --model reads the stored reference sample on a worker: only the file the client verified."""
    from mlops_cli.drift import partitioned
    from mlops_cli.registry import SAMPLE, Registry

    version = Registry(reg.registry).resolve("flights:1")
    path = version.file(SAMPLE)
    assert partitioned._verified(path, version.manifest["files"][SAMPLE]["sha256"]).num_rows == 500
    with pytest.raises(IntegrityError, match="not the file the client verified"):
        partitioned._verified(path, "0" * 64)


# --- drift-report on the cluster -------------------------------------------------------------------------------


def _drift_frame(n: int, shift: float, seed: int) -> pd.DataFrame:
    """Every kind of column the drift statistics treat apart: floats with NaNs and infinities, many ties, a point
    mass (zero-inflated), a constant, text and boolean categories, low-cardinality integers, integer and text
    identifiers, text with nulls."""
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1, n)
    x[rng.random(n) < 0.05] = np.nan
    if shift:
        x[:3] = [np.inf, -np.inf, np.inf]
    return pd.DataFrame(
        {
            "x": x,
            "ties": np.round(rng.normal(50 + 3 * shift, 10, n)),
            "const": np.full(n, 7.0),
            "rain": np.where(rng.random(n) < 0.7, 0.0, rng.exponential(2 + shift, n)),
            "city": rng.choice(["paris", "lyon", "nice", "lille"], n, p=[0.4, 0.3, 0.2, 0.1] if not shift else None),
            "level": rng.integers(0, 4 + int(shift), n),
            "id": np.arange(n) + seed * 10**6,
            "code": [f"c{v}" for v in rng.integers(0, 3 * n, n)],
            "flag": rng.random(n) < 0.3 + 0.2 * shift,
            "maybe": np.where(rng.random(n) < 0.5, None, rng.choice(["a", "b", "c"], n)),
        }
    )


@pytest.fixture(scope="module", params=[(900, 1_500), (3_000, 12_000)], ids=["exact-p", "asymptotic-p"])
def drift_data(request, tmp_path_factory) -> tuple[Path, Path]:
    """REFERENCE in 3 files, CURRENT in 20 (one empty, half under month=1/). At the first size scipy's exact KS
    p-value runs on the whole samples; at the second the asymptotic one."""
    ref_rows, cur_rows = request.param
    root = tmp_path_factory.mktemp("drift")
    ref = root / "ref.parquet"
    ref.mkdir()
    frame = _drift_frame(ref_rows, 0.0, 1)
    for i, part in enumerate(np.array_split(np.arange(ref_rows), 3)):
        pq.write_table(pa.Table.from_pandas(frame.iloc[part], preserve_index=False), ref / f"part-{i}.parquet")
    return ref, _write_parts(_drift_frame(cur_rows, 0.5, 2), root / "cur.parquet", 20)


def _walk(local: Any, dask: Any, where: str = "$") -> list[str]:
    """Every difference between two JSON documents: keys, lengths, strings, and floats beyond 1e-9."""
    if isinstance(local, dict) and isinstance(dask, dict):
        out = [f"{where}: keys {sorted(set(local) ^ set(dask))}"] if set(local) != set(dask) else []
        return out + [d for k in set(local) & set(dask) for d in _walk(local[k], dask[k], f"{where}.{k}")]
    if isinstance(local, list) and isinstance(dask, list):
        if len(local) != len(dask):
            return [f"{where}: {len(local)} vs {len(dask)} items"]
        return [d for i, (a, b) in enumerate(zip(local, dask, strict=True)) for d in _walk(a, b, f"{where}[{i}]")]
    if isinstance(local, float) or isinstance(dask, float):
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (local, dask))
        if numbers and math.isclose(local, dask, rel_tol=1e-9, abs_tol=1e-9):
            return []
    elif local == dask and type(local) is type(dask):
        return []
    return [f"{where}: {local!r} (local) vs {dask!r} (dask)"]


@pytest.mark.parametrize(
    "extra",
    [[], ["--stattest", "psi", "--numeric", "id,level", "--categorical", "ties"]],
    ids=["auto", "psi-forced-kinds"],
)
def test_drift_report_on_dask_equals_local(cluster, tmp_path, drift_data, extra):
    ref, cur = drift_data
    reg = Cli(tmp_path / "registry")  # no model: drift between two datasets
    pages = {engine: tmp_path / f"{engine}.html" for engine in ("local", "dask")}
    local = reg.json("drift-report", ref, cur, "--html", pages["local"], *extra)
    dask = reg.json(
        "drift-report", ref, cur, "--html", pages["dask"], *extra, "--engine", "dask", "--scheduler", cluster
    )
    assert dask["results"].pop("engine") == {"name": "dask", "scheduler": cluster, "workers": 2}
    for report in (local, dask):
        report.pop("created_at")
        report["results"].pop("html")
    assert _walk(local, dask) == []
    statuses = {r["name"]: (r["kind"], r["status"]) for r in dask["results"]["features"]}
    assert len(statuses) == 10 and statuses["x"] == ("numeric", "ok")  # not a run where nothing was compared
    # The page and the table come from the same report through the same writers.
    page = [re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "T", p.read_text()) for p in pages.values()]
    assert page[0] == page[1]
    table = [
        reg("drift-report", ref, cur, *extra, *e).stdout for e in ([], ["--engine", "dask", "--scheduler", cluster])
    ]
    assert table[0] == table[1]


@pytest.fixture(scope="module")
def scored_data(tmp_path_factory, reference_frame, current_frame) -> tuple[Path, Path]:
    """REFERENCE in 3 files and CURRENT in 20 (one empty, half under month=1/), both with predictions made upstream:
    `score` (probabilities) and `label` (0/1)."""
    root = tmp_path_factory.mktemp("scored")
    rng = np.random.default_rng(3)
    ref, cur = (
        frame.assign(score=rng.beta(2, 5 + shift, len(frame)), label=rng.integers(0, 2, len(frame)))
        for frame, shift in ((reference_frame, 0), (current_frame, 1))
    )
    folder = root / "ref.parquet"
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(ref)), 3)):
        pq.write_table(pa.Table.from_pandas(ref.iloc[part], preserve_index=False), folder / f"part-{i}.parquet")
    return folder, _write_parts(cur, root / "cur.parquet", 20)


def _without_times(report: dict[str, Any]) -> dict[str, Any]:
    report = copy.deepcopy(report)
    report.pop("created_at")
    report["results"].pop("html", None)
    return report


MODEL_CASES = {
    # The stored sample as the reference: importance, prediction drift of proba_1, performance on the labels.
    "stored-reference": ("scored", ["--model", "flights:1"], [False, True]),
    "reference-path": ("scored", ["--model", "flights:1"], [True, True]),
    # Rows the model refuses: prediction drift over the others, and a message each for them and for performance.
    "invalid-rows": ("dirty", ["--model", "strict"], [False, True]),
    "upstream-scores": ("scored", ["--model", "flights:1", "--prediction-column", "score"], [False, True]),
    "upstream-labels": ("scored", ["--model", "flights:1", "--prediction-column", "label"], [False, True]),
    "upstream-both-sides": ("scored", ["--model", "flights:1", "--prediction-column", "score"], [True, True]),
    "upstream-no-model": ("scored", ["--prediction-column", "score"], [True, True]),
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_drift_report_with_a_model_on_dask_equals_local(reg, cluster, tmp_path, request, case):
    """With --model (and --prediction-column): the model scores CURRENT on the workers; every figure of the report
    (prediction drift, performance, importance, the feature table) is the local engine's, and so are the page and
    the table."""
    data, extra, paths = MODEL_CASES[case]
    if data == "dirty":
        cur = request.getfixturevalue("dirty")
        ref = None
    else:
        ref, cur = request.getfixturevalue("scored_data")
    args = [p for p, given in zip((ref, cur), paths, strict=True) if given]
    pages = {engine: tmp_path / f"{engine}.html" for engine in ("local", "dask")}
    local = reg.json("drift-report", *args, *extra, "--html", pages["local"])
    dask = reg.json("drift-report", *args, *extra, "--html", pages["dask"], "--engine", "dask", "--scheduler", cluster)
    assert dask["results"].pop("engine") == {"name": "dask", "scheduler": cluster, "workers": 2}
    assert _walk(_without_times(local), _without_times(dask)) == []
    summary = dask["results"]["summary"]
    assert summary["prediction_drift"]["statistics"]  # compared, not skipped
    if "--model" in extra:
        assert dask["model"]["sha256"] and summary["weighted_drifted_share"] is not None
        if "--prediction-column" not in extra or case == "upstream-scores":
            assert summary["prediction_drift"]["kind"] == "numeric"
    if case == "invalid-rows":
        assert any(
            m.startswith("prediction drift: 4 rows of CURRENT break the input contract") for m in dask["messages"]
        )
    elif "--model" in extra:
        assert summary["performance"]["rows"] > 1000
    page = [re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "T", p.read_text()) for p in pages.values()]
    assert page[0] == page[1]
    if case in ("stored-reference", "invalid-rows"):  # the table renders the same report: twice is enough
        table = [
            reg("drift-report", *args, *extra, *e).stdout for e in ([], ["--engine", "dask", "--scheduler", cluster])
        ]
        assert table[0] == table[1]


def test_drift_report_when_the_model_refuses_every_row_skips_prediction_drift_on_both_engines(
    reg, cluster, tmp_path, current_frame
):
    """Every row of CURRENT breaks `strict`'s contract (a missing value): no predictions to compare, so prediction
    drift is skipped with the reason, on both engines alike (it was an internal error, exit 5)."""
    frame = current_frame.head(3000).copy()
    frame["temp"] = float("nan")
    cur = _write_parts(frame, tmp_path / "all-bad.parquet", 6)
    local = reg.json("drift-report", cur, "--model", "strict")
    dask = reg.json("drift-report", cur, "--model", "strict", "--engine", "dask", "--scheduler", cluster)
    dask["results"].pop("engine")
    assert _walk(_without_times(local), _without_times(dask)) == []
    assert local["results"]["summary"]["prediction_drift"] is None
    assert any(m.startswith("prediction drift skipped: all 3,000 rows of CURRENT break") for m in dask["messages"])


def _kill_when_busy(
    cluster: str, name: str, victim: subprocess.Popen, proc: subprocess.Popen, holding: str | None = None
) -> None:
    """kill -9 the worker `name` as soon as it runs a task of `proc`'s run or, with `holding`, as soon as it runs
    or holds the result of a task of that function."""
    from distributed import Client

    def tasks(dask_scheduler: Any) -> list[tuple[str, list[str]]]:
        return [
            (str(t.key), [w.name for w in t.who_has or ()] + ([t.processing_on.name] if t.processing_on else []))
            for t in dask_scheduler.tasks.values()
        ]

    with Client(cluster, timeout=10, set_as_default=False) as client:
        deadline = time.monotonic() + 120
        while True:
            if holding is not None:
                if any(k.startswith(holding) and name in on for k, on in client.run_on_scheduler(tasks)):
                    break
            else:
                info = client.scheduler_info(n_workers=-1)["workers"]
                mine = [a for a, w in info.items() if w.get("name") == name]
                if mine and client.processing(mine).get(mine[0]):
                    break  # it holds a task right now
            assert time.monotonic() < deadline and proc.poll() is None, f"{name} never ran a task"
            time.sleep(0.02)
    victim.kill()


@pytest.mark.parametrize("holding", ["_score", "_values"], ids=["scoring", "holding-predictions"])
def test_a_killed_worker_mid_drift_report_gives_the_same_report(reg, cluster, tmp_path, scored_data, holding):
    """kill -9 a worker while it scores a file for drift-report --model, or once it holds scored predictions:
    Dask runs its tasks again on the others (the scoring of the predictions it held included; one lost worker is
    within Dask's allowed failures) and the report is the local one, written whole. Never a hang."""
    _, cur = scored_data
    local = reg.json("drift-report", cur, "--model", "flights:1")
    out = tmp_path / "drift.json"
    with (tmp_path / "w3.log").open("w") as log:
        victim = _start_worker(cluster, "w3", log)
        try:
            _wait_for_workers(cluster, 3)
            proc = _mlops(reg, "drift-report", cur, "--model", "flights:1", "-o", out, "--engine", "dask",
                          "--scheduler", cluster)  # fmt: skip
            _kill_when_busy(cluster, "w3", victim, proc, holding)
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            _stop([victim])
    assert proc.returncode == 0, stderr
    dask = json.loads(stdout)
    assert dask["results"].pop("engine")["name"] == "dask"
    assert _walk(_without_times(local), _without_times(dask)) == []
    assert json.loads(out.read_text())["results"]["summary"] == dask["results"]["summary"]
    assert [p.name for p in tmp_path.iterdir() if p.name != "w3.log"] == ["drift.json"]
    _wait_for_workers(cluster, 2)


def test_a_killed_scheduler_is_exit_3_in_bounded_time_and_no_output(reg, tmp_path, big):
    """kill -9 of the scheduler mid-run: the client must not wait for it (Dask's client would retry for its whole
    connect timeout, then log): one line, exit 3, nothing written."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    port = address.rsplit(":", 1)[1]
    log = (tmp_path / "cluster.log").open("w")
    scheduler = subprocess.Popen(
        [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    procs = [scheduler]
    out = tmp_path / "run" / "scores.parquet"
    out.parent.mkdir()
    client = None
    try:
        procs.append(_start_worker(address, "lone", log))
        _wait_for_workers(address, 1)
        env = {**os.environ, "MLOPS_DASK_CONNECT_TIMEOUT": "5", "PYTHONPATH": str(ROOT)}
        client = subprocess.Popen(
            [sys.executable, "-m", "mlops_cli", "--registry", reg.registry, "score-batch", "flights:1", big, out]
            + ["--batch-size", "2000", "--engine", "dask", "--scheduler", address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + 60
        while not any(p.name.startswith(".") for p in out.parent.iterdir()):  # the parts' hidden folder: running
            assert client.poll() is None and time.monotonic() < deadline, client.communicate()
            time.sleep(0.05)
        time.sleep(0.3)
        scheduler.kill()
        killed = time.monotonic()
        stdout, stderr = client.communicate(timeout=60)
        assert time.monotonic() - killed < 20
        assert client.returncode == 3, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: lost the Dask scheduler at " + address), stderr
        assert stdout == "" and list(out.parent.iterdir()) == []
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        _stop(procs)
        log.close()


def test_a_worker_keeps_only_the_last_models_it_used():
    from mlops_cli.engines import dask as engine

    built: list[str] = []

    def build(name: str) -> Any:
        built.append(name)
        return object()

    engine._CACHE.clear()
    first = engine.worker_cached("a", lambda: build("a"))
    engine.worker_cached("b", lambda: build("b"))
    assert engine.worker_cached("a", lambda: build("a")) is first  # used again: kept, and now the most recent
    engine.worker_cached("c", lambda: build("c"))  # evicts b, the least recently used
    assert list(engine._CACHE) == ["a", "c"] and len(engine._CACHE) == engine.CACHED_MODELS
    engine.worker_cached("b", lambda: build("b"))
    assert built == ["a", "b", "c", "b"]
    engine._CACHE.clear()


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
