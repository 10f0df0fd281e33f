"""Online features (issue 18's Performance section), in one run against one redis-server started here.

    python benchmarks/run.py features                    # or: python benchmarks/bench_features.py
    BENCH_ENTITIES=1000000 python benchmarks/run.py features   # the issue's full size (slow on a busy 2-core box)

  * materialize: `mlops_cli.features.materialize` (streamed read, pipelined batches of 10,000, versioned keys, the
    pointer flip, the table's sha256 in a thread) against a hand-written redis-py loop over the same Parquet file
    writing the same keys and values (one pipeline per 10,000-row batch: `SET key json`), in the same process,
    alternating, BENCH_REPEATS times; rows/s medians and their ratio (target: >= 0.8). For scale, a loop of
    `HSET key field value ...` per entity (Feast's hash-per-entity layout) is timed too, once. BENCH_ENTITIES entities
    (default 200,000: the machine has 2 busy cores) x 20 float features.
  * serve by id: `mlops serve` of the sample pipeline (13 features) with --features and --feature-cache-s 0 (every
    request goes to Redis), one keep-alive connection, requests alternating between a full row and the same row's
    entity id alone (which goes first alternates too), BENCH_ROUNDS rounds of BENCH_REQUESTS of each; per round the
    p50/p99 of each and the p99 difference, reported as medians over the rounds (target: <= 2 ms at concurrency 1),
    with the 1-minute load average before and after (a busy machine widens p99 for both kinds alike).
  * local cache hit: in-process, the whole per-row cost of a cache hit on the request path (`Lookup.cached` for one
    id and `assemble` of its row); median microseconds (target: <= 100 us).
Results: build/bench/features.json.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import OUT, ROOT, save  # noqa: E402

ENTITIES = int(os.environ.get("BENCH_ENTITIES", "200000"))
FEATURES = 20
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "1000"))  # of each kind, per round
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
BATCH = 10_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing: make system (Debian's redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


def feature_table(path: Path) -> None:
    rng = np.random.default_rng(0)
    columns = {"entity_id": np.arange(ENTITIES)}
    for j in range(FEATURES):
        columns[f"f{j:02d}"] = rng.normal(size=ENTITIES).round(6)
    pq.write_table(pa.table(columns), path)


def hand_written(url: str, path: Path, layout: str) -> float:
    """The loop one would write by hand: rows/s."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=300)  # FLUSHALL of 1M keys takes seconds
    started = time.perf_counter()
    rows = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH):
        ids = batch.column(0).to_pylist()
        names = batch.schema.names[1:]
        columns = [batch.column(i + 1).to_pylist() for i in range(len(names))]
        pipe = client.pipeline(transaction=False)
        if layout == "set":
            for key, values in zip(ids, zip(*columns, strict=True), strict=True):
                pipe.set(f"hand:{key}", json.dumps(values, separators=(",", ":")))
        else:
            for key, values in zip(ids, zip(*columns, strict=True), strict=True):
                pipe.hset(f"hand:{key}", mapping=dict(zip(names, values, strict=True)))
        pipe.execute()
        rows += batch.num_rows
    return rows / (time.perf_counter() - started)


def ours(url: str, path: Path) -> float:
    from mlops_cli.features.materialize import MaterializeOptions, materialize
    from mlops_cli.features.store import Store

    store = Store(url, timeout_s=30)
    started = time.perf_counter()
    materialize(store, path, MaterializeOptions(entity="entity_id", name="bench", batch_size=BATCH))
    seconds = time.perf_counter() - started
    store.close()
    return ENTITIES / seconds


def bench_materialize(url: str, folder: Path) -> dict[str, object]:
    import redis

    path = folder / "features.parquet"
    feature_table(path)
    client = redis.Redis.from_url(url, socket_timeout=300)  # FLUSHALL of 1M keys takes seconds
    runs: dict[str, list[float]] = {"mlops": [], "hand_set": [], "hand_hset": []}
    for repeat in range(REPEATS):
        for name in runs:
            if name == "hand_hset" and repeat:
                continue  # for scale only, and the slowest: once
            client.flushall()
            rate = ours(url, path) if name == "mlops" else hand_written(url, path, name.removeprefix("hand_"))
            runs[name].append(rate)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "entities": ENTITIES,
        "features": FEATURES,
        "repeats": REPEATS,
        "mlops_rows_per_s": round(medians["mlops"]),
        "hand_set_rows_per_s": round(medians["hand_set"]),
        "hand_hset_rows_per_s": round(medians["hand_hset"]),
        "ratio_vs_hand_set": round(medians["mlops"] / medians["hand_set"], 3),
        "ratio_target": 0.8,
    }


def bench_cache_hit() -> dict[str, object]:
    from mlops_cli.features.assemble import ABSENT, assemble
    from mlops_cli.features.lookup import Entity, Lookup
    from mlops_cli.features.store import Record

    names = [f"f{j:02d}" for j in range(13)]
    record = Record("bench", 1, "id", names, dict.fromkeys(names, "numeric"), None, 1, {}, "now")
    lookup = Lookup(store=None, view="bench", ttl_s=3600)  # type: ignore[arg-type]  # never reaches the store
    entity = Entity(record, [float(j) for j in range(13)])
    lookup._record = record  # as after a fetch: hits come from its version
    lookup._cache[(1, "42")] = (time.monotonic() + 3600, entity)  # a warm cache
    values = {"id": [42], **{n: [ABSENT] for n in names}}
    samples = []
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(10_000):
            found, missing = lookup.cached(["42"])
            assert not missing
            assemble(values, 1, names, "bench", [0], found.entities, policy="reject", version=found.version).check()
        samples.append((time.perf_counter() - started) / 10_000 * 1e6)
    return {"cache_hit_us_median": round(statistics.median(samples), 2), "cache_hit_target_us": 100}


def bench_serve(url: str, folder: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    registry = folder / "registry"
    model = folder / "model.joblib"
    sample = ROOT / "sample_data"
    run = [sys.executable, "-m", "mlops_cli", "--registry", str(registry)]
    subprocess.run([sys.executable, str(sample / "train.py"), str(sample / "reference.parquet"), str(model),
                    "--max-iter", "50"], check=True, capture_output=True, env=env)  # fmt: skip
    subprocess.run([*run, "register", str(model), "--name", "flights", "--train-data", str(sample / "reference.parquet"),
                    "--target", "delayed", "-q"], check=True, env=env)  # fmt: skip
    table = pq.read_table(sample / "current.parquet")
    table = table.append_column("flight_id", pa.array(np.arange(table.num_rows)))
    pq.write_table(table, folder / "flights.parquet")
    subprocess.run([*run, "features", "materialize", str(folder / "flights.parquet"), "--entity", "flight_id",
                    "--name", "flights", "--store", url, "-q"], check=True, env=env)  # fmt: skip
    log = folder / "serve.log"
    with log.open("wb") as err:
        server = subprocess.Popen([*run, "serve", "flights", "--port", "0", "--features", url, "--feature-view",
                                   "flights", "--entity-column", "flight_id", "--feature-cache-s", "0"],
                                  stderr=err, env=env)  # fmt: skip
    try:
        port = None
        for _ in range(1200):
            match = re.search(r"on http://[^:]+:(\d+) with", log.read_text())
            if match:
                port = int(match.group(1))
                break
            time.sleep(0.1)
        assert port is not None, log.read_text()
        full = [_json_row(r) for r in table.slice(0, 500).to_pylist()]
        by_id = [{"flight_id": r["flight_id"]} for r in full]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(600):  # ready, and warm
            try:
                connection.request("GET", "/readyz")
                if connection.getresponse().read() and _post(connection, {"rows": [by_id[0]]}) >= 0:
                    break
            except OSError:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                time.sleep(0.1)
        for i in range(200):
            _post(connection, {"rows": [full[i % 500]]})
            _post(connection, {"rows": [by_id[i % 500]]})
        load_before = os.getloadavg()
        rounds = []
        for r in range(ROUNDS):
            latency: dict[str, list[float]] = {"full_row": [], "by_id": []}
            for i in range(REQUESTS):
                order = ("full_row", "by_id") if (i + r) % 2 == 0 else ("by_id", "full_row")  # alternated
                for name in order:
                    rows = full if name == "full_row" else by_id
                    latency[name].append(_post(connection, {"rows": [rows[(i * 7 + r) % 500]]}))
            rounds.append({name: np.array(values) * 1000 for name, values in latency.items()})
        load_after = os.getloadavg()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    out: dict[str, object] = {
        "serve_requests_each_per_round": REQUESTS,
        "serve_rounds": ROUNDS,
        "serve_concurrency": 1,
        "serve_load_average_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "cpu_count": os.cpu_count(),
    }
    for name in ("full_row", "by_id"):
        out[f"serve_{name}_p50_ms"] = round(statistics.median(float(np.percentile(x[name], 50)) for x in rounds), 3)
        out[f"serve_{name}_p99_ms"] = round(statistics.median(float(np.percentile(x[name], 99)) for x in rounds), 3)
    extras = [float(np.percentile(x["by_id"], 99) - np.percentile(x["full_row"], 99)) for x in rounds]
    out["serve_p99_extra_ms_by_round"] = [round(e, 3) for e in extras]
    out["serve_p99_extra_ms"] = round(statistics.median(extras), 3)  # the median of the rounds' differences
    out["serve_p50_extra_ms"] = round(out["serve_by_id_p50_ms"] - out["serve_full_row_p50_ms"], 3)  # type: ignore[operator]
    out["serve_p99_extra_target_ms"] = 2.0
    return out


def _json_row(row: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in row.items():
        if hasattr(value, "isoformat"):
            value = value.isoformat()  # type: ignore[union-attr]
        if isinstance(value, float) and value != value:
            value = None
        out[key] = value
    return out


def _post(connection: http.client.HTTPConnection, body: object) -> float:
    """One request's latency in seconds (it must answer 200)."""
    data = json.dumps(body).encode()
    started = time.perf_counter()
    connection.request("POST", "/predict", body=data, headers={"content-type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    seconds = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {answer[:300]!r}")
    return seconds


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        folder = Path(tmp)
        process, url = start_redis(folder)
        try:
            results: dict[str, object] = {}
            results.update(bench_cache_hit())
            results.update(bench_serve(url, folder))
            results.update(bench_materialize(url, folder))
        finally:
            process.terminate()
            process.wait(30)
    save("features", results)


if __name__ == "__main__":
    main()
