"""Online features with a real Redis (Debian's redis-server on 127.0.0.1): `mlops features materialize|list|show`,
lookups with their cache, the missing-feature policy, and `mlops serve --features` as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CURRENT, REFERENCE, ROOT, Cli, run_mlops
from redis_server import RedisServer, free_port
from serving import Server, rows_of

from mlops_cli import io
from mlops_cli.errors import InputError, InvalidData, StoreUnavailable
from mlops_cli.features.assemble import ABSENT, assemble, fill_values
from mlops_cli.features.lookup import Lookup
from mlops_cli.features.store import Store, entity_text, pointer
from mlops_cli.scoring import key_text

ENTITY = "flight_id"
ROWS = 2_000


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def url(redis_server) -> str:
    redis_server.client().flushall()
    return redis_server.url


@pytest.fixture(scope="module")
def registry(tmp_path_factory, model_file) -> Path:
    """flights:1, registered with its training data (so a reference profile to fill from)."""
    path = tmp_path_factory.mktemp("registry") / "registry"
    Cli(path).json("register", model_file, "--name", "flights", "--train-data", REFERENCE, "--target", "delayed")
    return path


@pytest.fixture(scope="module")
def frame():
    """The first rows of the sample's current data, each with an entity id."""
    data = io.read_table(CURRENT).head(ROWS).reset_index(drop=True)
    data.insert(0, ENTITY, np.arange(ROWS) + 1000)
    return data


@pytest.fixture(scope="module")
def table(tmp_path_factory, frame) -> Path:
    path = tmp_path_factory.mktemp("features") / "features.parquet"
    frame.to_parquet(path)
    return path


def materialize(cli: Cli, table: Path, url: str, *extra, expect: int = 0, name: str = "flights") -> dict:
    return cli.json("features", "materialize", table, "--entity", ENTITY, "--name", name, "--store", url, *extra,
                    expect=expect)  # fmt: skip


# --- materialize, list, show ---------------------------------------------------------------------------------


def test_materialize_versions_flip_and_drop_the_old_one(cli, table, url, redis_server):
    first = materialize(cli, table, url)
    view = first["results"]["view"]
    assert view["version"] == 1 and view["rows"] == ROWS and view["entity"] == ENTITY
    assert first["inputs"][0]["sha256"] == io.sha256_file(table) and first["inputs"][0]["rows"] == ROWS
    assert view["kinds"]["carrier"] == "categorical" and view["kinds"]["temp"] == "numeric"
    client = redis_server.client()
    assert json.loads(client.get(pointer("flights")))["version"] == 1
    second = materialize(cli, table, url, "--features", "carrier,temp", "--ttl-s", "600")
    assert second["results"]["view"]["version"] == 2 and second["results"]["previous_version"] == 1
    assert second["results"]["keys_dropped"] == ROWS
    assert client.keys(f"{pointer('flights')}:v1:*") == []  # the old version is gone
    assert json.loads(client.get(f"{pointer('flights')}:v2:1000")) == [
        table_value(table, 1000, "carrier"),
        table_value(table, 1000, "temp"),
    ]
    assert 0 < client.ttl(f"{pointer('flights')}:v2:1000") <= 600
    listed = cli.json("features", "list", "--store", url)["results"]["views"]
    assert [(v["name"], v["version"], v["features"]) for v in listed] == [("flights", 2, ["carrier", "temp"])]
    shown = cli.json("features", "show", "flights", "--store", url)["results"]["view"]
    assert shown["source"]["sha256"] == io.sha256_file(table) and shown["ttl_s"] == 600
    table_output = cli("features", "list", "--store", url)
    assert table_output.exit_code == 0 and "flights" in table_output.stdout


def test_a_flip_whose_reply_is_lost_keeps_the_live_version(cli, table, url, redis_server, monkeypatch):
    """The pointer flip took effect but its reply never came (a read timeout): the load fails, and the keys the
    pointer now names must stay."""
    from mlops_cli.features import materialize as materialize_lib

    flip = materialize_lib._flip

    def flip_then_lose_the_reply(*args):
        flip(*args)
        raise StoreUnavailable("redis: no answer within the read timeout")

    monkeypatch.setattr(materialize_lib, "_flip", flip_then_lose_the_reply)
    cli("features", "materialize", table, "--entity", ENTITY, "--name", "lost", "--store", url)
    client = redis_server.client()
    live = json.loads(client.get(pointer("lost")))["version"]
    assert len(client.keys(f"{pointer('lost')}:v{live}:*")) == ROWS


def table_value(table: Path, entity: int, column: str):
    frame = pq.read_table(table).to_pandas()
    value = frame.loc[frame[ENTITY] == entity, column].iloc[0]
    return None if value != value else value.item() if hasattr(value, "item") else value


def test_materialize_from_csv_keeps_text_ids(cli, tmp_path, url, redis_server):
    path = tmp_path / "f.csv"
    path.write_text("id,x,y\n007,1.5,a\n8,,b\n")
    done = cli.json("features", "materialize", path, "--entity", "id", "--name", "csv", "--store", url)
    assert done["results"]["view"]["rows"] == 2
    client = redis_server.client()
    assert json.loads(client.get(f"{pointer('csv')}:v1:007")) == [1.5, "a"]
    assert json.loads(client.get(f"{pointer('csv')}:v1:8")) == [None, "b"]  # an empty cell is null


@pytest.mark.parametrize(
    ("rows", "what"),
    [
        ({"flight_id": [1, 2, 1], "x": [1.0, 2.0, 3.0]}, "repeats at row 3"),
        ({"flight_id": [1, None, 3], "x": [1.0, 2.0, 3.0]}, "empty at row 2"),
    ],
)
def test_a_bad_table_leaves_the_previous_version_live(cli, tmp_path, url, redis_server, rows, what):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"flight_id": [1, 2, 3], "x": [1.0, 2.0, 3.0]}), good)
    materialize(cli, good, url)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table(rows), bad)
    result = cli("features", "materialize", bad, "--entity", ENTITY, "--name", "flights", "--store", url,
                 "--batch-size", "2")  # fmt: skip
    assert result.exit_code == 3, result.stderr
    assert what in result.stderr and result.stderr.count("\n") == 1
    client = redis_server.client()
    assert json.loads(client.get(pointer("flights")))["version"] == 1
    assert sorted(client.keys(f"{pointer('flights')}:v*")) == [
        f"{pointer('flights')}:v1:{i}".encode() for i in (1, 2, 3)
    ]


def test_materialize_input_and_store_errors(cli, tmp_path, table, url):
    missing = cli(
        "features", "materialize", tmp_path / "nope.parquet", "--entity", ENTITY, "--name", "f", "--store", url
    )
    assert missing.exit_code == 3 and "no such file" in missing.stderr
    no_column = cli("features", "materialize", table, "--entity", "nope", "--name", "f", "--store", url)
    assert no_column.exit_code == 3 and "no entity column 'nope'" in no_column.stderr
    bad_name = cli("features", "materialize", table, "--entity", ENTITY, "--name", "Bad/Name", "--store", url)
    assert bad_name.exit_code == 4 and "invalid feature view name" in bad_name.stderr
    started = time.monotonic()
    dead = cli("features", "materialize", table, "--entity", ENTITY, "--name", "f",
               "--store", f"redis://:hunter2@127.0.0.1:{free_port()}/0", "--timeout-s", "0.5")  # fmt: skip
    assert dead.exit_code == 3 and "cannot be reached" in dead.stderr  # a dead service, as a dead Kafka broker
    assert "hunter2" not in dead.stderr  # a password in the URL is a secret
    assert time.monotonic() - started < 5  # no retries with backoff
    unknown = cli("features", "show", "nope", "--store", url)
    assert unknown.exit_code == 4 and "no feature view 'nope'" in unknown.stderr


@pytest.mark.slow
def test_materialize_killed_mid_load_keeps_readers_on_the_old_version(cli, tmp_path, url, redis_server):
    """kill -9 in the middle of a load: readers stay on the previous version, whole; the next load takes over the
    dead process's lock at once and sweeps what it left."""
    small = tmp_path / "small.parquet"
    pq.write_table(pa.table({ENTITY: [1, 2], "x": [10.0, 20.0]}), small)
    materialize(cli, small, url)
    big = tmp_path / "big.parquet"
    n = 300_000
    pq.write_table(pa.table({ENTITY: np.arange(n), "x": np.arange(n) * 2.0}), big)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlops_cli",
            "features",
            "materialize",
            str(big),
            "--entity",
            ENTITY,
            "--name",
            "flights",
            "--store",
            url,
            "--batch-size",
            "500",
            "-q",
        ],  # fmt: skip
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    client = redis_server.client()
    lookup = Lookup(Store(url), "flights", ttl_s=0)
    seen_partial = False
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not seen_partial:
            seen_partial = client.exists(f"{pointer('flights')}:v2:5000") == 1
            found = lookup.get(["1", "2", "5000"])  # a reader during the load: the old version, whole
            assert [e.values if e else None for e in found] == [[10.0], [20.0], None]
            time.sleep(0.01)
        assert seen_partial, "the load never started writing"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(30)
    assert json.loads(client.get(pointer("flights")))["version"] == 1
    found = lookup.get(["1", "2", "5000"])
    assert [e.record.version if e else None for e in found] == [1, 1, None]
    left = len(client.keys(f"{pointer('flights')}:v2:*"))
    assert 0 < left < n  # half a table, which no reader saw
    again = materialize(cli, small, url)  # the dead process's lock is taken over, its keys swept
    assert again["results"]["orphan_keys_swept"] == left
    assert again["results"]["view"]["version"] == 3
    assert client.keys(f"{pointer('flights')}:v2:*") == []


def test_a_live_load_locks_out_a_second_one(cli, table, url, redis_server):
    redis_server.client().set(f"{pointer('flights')}:lock", "otherhost 1 token", ex=30)
    result = cli("features", "materialize", table, "--entity", ENTITY, "--name", "flights", "--store", url)
    assert result.exit_code == 4 and "another materialize" in result.stderr and "otherhost" in result.stderr


@pytest.mark.parametrize("when", ["mid-load", "before the flip"])
def test_a_load_that_lost_its_lock_fails_and_never_flips(tmp_path, url, redis_server, when):
    """A load stalls past its lock's expiry and another takes the lock over: at its next renewal (mid-load) or at
    its flip, the stalled load finds the lock is not its own, fails in one line (exit 4) and leaves the pointer."""
    from mlops_cli.errors import FeatureViewLocked
    from mlops_cli.features.materialize import MaterializeOptions
    from mlops_cli.features.materialize import materialize as load

    client = redis_server.client()
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({ENTITY: [1, 2, 3, 4], "x": [1.0, 2.0, 3.0, 4.0]}), path)
    store = Store(url)
    load(store, path, MaterializeOptions(entity=ENTITY, name="flights"))
    lock = f"{pointer('flights')}:lock"
    steal_at = 1 if when == "mid-load" else 4

    def stall(rows, total):
        if rows == steal_at:  # as if this load slept past the lock's expiry and another load took it
            client.set(lock, "otherhost 1 thief")

    with pytest.raises(FeatureViewLocked) as error:
        load(store, path, MaterializeOptions(entity=ENTITY, name="flights", batch_size=1, on_progress=stall))
    assert "lost its lock" in error.value.one_line() and "\n" not in error.value.one_line()
    assert error.value.exit_code == 4
    assert json.loads(client.get(pointer("flights")))["version"] == 1  # never flipped
    assert client.get(lock) == b"otherhost 1 thief"  # the other load's lock is left alone
    assert sorted(client.keys(f"{pointer('flights')}:v*")) == [
        f"{pointer('flights')}:v1:{i}".encode() for i in (1, 2, 3, 4)
    ]


def test_a_load_that_lost_its_lock_before_its_sweep_leaves_the_new_owners_keys(tmp_path, url, redis_server):
    """The sweep of keys left by killed loads runs under the lock: a load that stalled before it while another load
    took over must not unlink the keys the other load is writing."""
    from mlops_cli.errors import FeatureViewLocked
    from mlops_cli.features.materialize import MaterializeOptions
    from mlops_cli.features.materialize import materialize as load

    client = redis_server.client()
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({ENTITY: [1, 2], "x": [1.0, 2.0]}), path)
    store = Store(url)
    load(store, path, MaterializeOptions(entity=ENTITY, name="flights"))
    theirs = [f"{pointer('flights')}:v7:{i}" for i in range(3)]
    record = store.record

    def stalled(name):  # read just after the lock is taken, before the sweep: the other load takes over here
        store.record = record  # type: ignore[method-assign]  (once)
        client.set(f"{pointer('flights')}:lock", "otherhost 1 thief")
        for key in theirs:
            client.set(key, "[1.0]")
        return record(name)

    store.record = stalled  # type: ignore[method-assign]
    with pytest.raises(FeatureViewLocked):
        load(store, path, MaterializeOptions(entity=ENTITY, name="flights"))
    assert all(client.exists(key) for key in theirs)
    assert json.loads(client.get(pointer("flights")))["version"] == 1


def test_a_load_that_outlasts_its_ttl_is_refused_and_never_flips(tmp_path, url, redis_server):
    """With one absolute expiry, keys written after it are stored already expired (Redis answers OK and keeps
    nothing): such a load must fail rather than publish a view missing its last entities."""
    from mlops_cli.features.materialize import MaterializeOptions
    from mlops_cli.features.materialize import materialize as load

    client = redis_server.client()
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({ENTITY: [1, 2, 3], "x": [1.0, 2.0, 3.0]}), path)
    store = Store(url)
    load(store, path, MaterializeOptions(entity=ENTITY, name="flights"))
    slow = MaterializeOptions(
        entity=ENTITY, name="flights", ttl_s=1, batch_size=1, on_progress=lambda rows, total: time.sleep(0.6)
    )
    with pytest.raises(InputError) as error:
        load(store, path, slow)
    assert "took longer than --ttl-s 1" in error.value.one_line() and error.value.exit_code == 3
    assert json.loads(client.get(pointer("flights")))["version"] == 1
    assert sorted(client.keys(f"{pointer('flights')}:v*")) == [
        f"{pointer('flights')}:v1:{i}".encode() for i in (1, 2, 3)
    ]


def test_entities_written_early_and_late_in_a_load_expire_together(tmp_path, url, redis_server):
    from mlops_cli.features.materialize import MaterializeOptions
    from mlops_cli.features.materialize import materialize as load

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({ENTITY: [1, 2, 3], "x": [1.0, 2.0, 3.0]}), path)
    options = MaterializeOptions(
        entity=ENTITY, name="flights", ttl_s=60, batch_size=1, on_progress=lambda rows, total: time.sleep(0.3)
    )
    report = load(Store(url), path, options)
    client = redis_server.client()
    expiry = [client.execute_command("PEXPIRETIME", f"{pointer('flights')}:v1:{i}") for i in (1, 2, 3)]
    assert expiry[0] == expiry[1] == expiry[2] > 0  # batches 0.6 s apart, one expiry
    expires_at = report.results["view"]["expires_at"]
    assert expires_at is not None
    from datetime import datetime

    assert abs(datetime.fromisoformat(expires_at).timestamp() * 1000 - expiry[0]) < 1
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000  # whole seconds alone were up to 999 ms early
    assert 55_000 < expiry[0] - now_ms <= 60_000


@pytest.mark.parametrize(
    "store",
    [
        "redis://localhost:notaport/0",
        "redis://:secret@localhost:99999/0",
        "http://127.0.0.1:6379/0",
        "localhost:6379",
        "redis:///0",
        "redis://127.0.0.1:6379/first",
        "redis://:secret@127.0.0.1:6379/0?db=x",
        "unix://",
    ],
)
def test_a_malformed_store_url_is_a_usage_error_in_one_line(cli, store):
    result = cli("features", "list", "--store", store)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "--store" in result.stderr, result.stderr
    assert "secret" not in result.stderr
    with pytest.raises(InputError):  # a library caller gets an input error, in one line too
        Store(store)


def test_crash_files_do_not_hold_a_store_password():
    from mlops_cli.cli._common import _redacted

    argv = ["mlops", "features", "list", "--store", "redis://:secret@h:1/0", "--features=redis://:secret@h:1/0",
            "--features", "carrier,temp"]  # fmt: skip
    shown = _redacted(argv)
    assert "secret" not in " ".join(shown) and shown[4] == "redis://:***@h:1/0" and shown[-1] == "carrier,temp"


def test_redacted_hides_every_password():
    from mlops_cli.features.store import redacted

    for url in ["redis://:secret@h:1/0", "redis://user:secret@h:1/0", "redis://h:notaport/0?password=secret",
                "unix:///tmp/r.sock?db=0&password=secret", "rediss://:secret@h:bad/0"]:  # fmt: skip
        assert "secret" not in redacted(url) and "***" in redacted(url), redacted(url)
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# --- lookups ----------------------------------------------------------------------------------------------------


def test_ttl_expiry_makes_an_entity_unknown(cli, tmp_path, url):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({ENTITY: [1], "x": [1.0]}), path)
    materialize(cli, path, url, "--ttl-s", "1")
    lookup = Lookup(Store(url), "flights", ttl_s=0)  # no local cache: the store's own expiry
    assert lookup.get(["1"])[0] is not None
    time.sleep(2.1)  # Redis expires keys with a resolution of a millisecond, lazily or by its 10 Hz sweep
    assert lookup.get(["1"]) == [None]


def test_a_lookup_after_a_flip_is_of_one_version(cli, tmp_path, url):
    """A cached entity of version 1 and an uncached one after the flip to version 2: both come from version 2."""
    for version, value in ((1, 1.0), (2, 2.0)):
        path = tmp_path / f"v{version}.parquet"
        pq.write_table(pa.table({ENTITY: [1, 2], "x": [value, value]}), path)
        materialize(cli, path, url)
        if version == 1:
            lookup = Lookup(Store(url), "flights", ttl_s=60)
            assert lookup.get(["1"])[0].values == [1.0]  # cached
    found = lookup.find(["1", "2"])
    assert found.version == 2 and [e.values for e in found.entities] == [[2.0], [2.0]]
    assert [e.record.version for e in found.entities] == [2, 2]
    assert lookup.find(["1"]).version == 2  # and the cache now answers from version 2


def test_local_cache_is_lru_with_ttl_and_answers_without_the_store(cli, tmp_path, url, redis_server):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({ENTITY: [1, 2, 3], "x": [1.0, 2.0, 3.0]}), path)
    materialize(cli, path, url)
    lookup = Lookup(Store(url, timeout_s=0.2), "flights", max_entries=2, ttl_s=0.5)
    lookup.get(["1", "2"])
    lookup.get(["1"])  # 1 is now the most recently used
    lookup.get(["3"])  # evicts 2
    found, missing = lookup.cached(["1", "2", "3"])
    assert missing == [1] and [e.values for e in found.entities if e] == [[1.0], [3.0]]
    time.sleep(0.6)
    assert lookup.cached(["1", "3"])[1] == [0, 1]  # expired
    lookup.get(["1"])
    redis_server.pause()  # the store hangs: a cache hit does not notice, a miss fails fast
    try:
        assert lookup.get(["1"])[0].values == [1.0]
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="did not answer in time"):
            lookup.get(["3"])
        assert time.monotonic() - started < 1.5
    finally:
        redis_server.resume()


@pytest.mark.parametrize("values", [[0, 7, -12, 10**12], [1.0, 2.5, -3.0, 0.1], ["007", "a b", "é", ""], [True, False]])
def test_request_ids_find_what_a_load_wrote(values):
    """A JSON id's key text is the text a table's column is loaded under (scoring.key_text)."""
    assert [entity_text(v) for v in values] == key_text([pa.array(values)]).to_pylist()


# --- the missing-feature policy -----------------------------------------------------------------------------------


def test_assemble_takes_the_row_first_then_the_store_then_the_policy(tmp_path, url, registry):
    from mlops_cli.registry import Registry

    cli = Cli(registry)

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({ENTITY: [1, 2], "temp": [50.0, None], "carrier": ["AA", "B6"]}), path)
    materialize(cli, path, url)
    lookup = Lookup(Store(url), "flights")
    values = {ENTITY: [1, 2, 3], "temp": [ABSENT, 60.0, ABSENT], "carrier": [ABSENT, None, ABSENT],
              "origin": ["JFK", ABSENT, "LGA"]}  # fmt: skip
    names = ["temp", "carrier", "origin"]
    found = lookup.get(["1", "2", "3"])
    rejected = assemble(values, 3, names, "flights", [0, 1, 2], found, policy="reject")
    with pytest.raises(InvalidData) as error:
        rejected.check()
    assert "missing feature origin (row 2)" in error.value.message and "unknown entity (row 3)" in error.value.message
    assert "LGA" not in error.value.message  # never the caller's values
    version = Registry(registry).resolve("flights")
    from mlops_cli.runtime import ModelSpec

    fills = fill_values(json.loads(version.file("profile.json").read_text()), ModelSpec.from_manifest(version.manifest))
    filled = assemble(values, 3, names, "flights", [0, 1, 2], found, policy="fill", fill=fills)
    filled.check()
    assert filled.values["temp"] == [50.0, 60.0, fills["temp"]]  # the store's; the row's own; the profile's
    assert filled.values["carrier"] == ["AA", None, fills["carrier"]]  # a null sent is kept: the contract judges it
    assert filled.values["origin"] == ["JFK", fills["origin"], "LGA"]
    assert filled.from_store == ["temp,carrier", None, None]
    assert filled.filled == [None, "origin", "temp,carrier"]
    assert filled.fallback == [None, "missing feature", "unknown entity"]
    assert filled.fallbacks == {"missing feature": 1, "unknown entity": 1}
    reference = io.read_table(REFERENCE)
    assert fills["temp"] == pytest.approx(float(reference["temp"].median()))
    assert fills["carrier"] == reference["carrier"].value_counts().index[0]


# --- mlops serve --features ---------------------------------------------------------------------------------------

PROBA = ("prediction", "proba_0", "proba_1")


def serve_args(url: str, *extra) -> tuple:
    return ("--features", url, "--feature-view", "flights", "--entity-column", ENTITY, *extra)


@pytest.mark.slow
def test_serving_by_id_answers_as_the_full_row_does(registry, frame, table, url, tmp_path):
    Cli(registry).json("features", "materialize", table, "--entity", ENTITY, "--name", "flights", "--store", url)
    full = rows_of(frame.head(300))
    by_id = [{ENTITY: row[ENTITY]} for row in full]
    log = tmp_path / "log"
    with Server(registry, "flights", *serve_args(url, "--log-dir", log), tmp=tmp_path) as server:
        server.wait_ready()
        status, _, expected = server.post_json("/predict", {"rows": full})  # every feature sent: no lookup
        assert status == 200, expected
        for _ in range(2):  # from the store, then from the local cache
            status, _, got = server.post_json("/predict", {"rows": by_id})
            assert status == 200, got
            assert [[p[k] for k in PROBA] for p in got["predictions"]] == [
                [p[k] for k in PROBA] for p in expected["predictions"]
            ]  # bit for bit
            assert {p["feature_view_version"] for p in got["predictions"]} == {1}
        # A feature computed at request time is taken from the request, the rest from the store.
        now = {"sched_dep_hour": 21, "precip": 1.0, "visib": 0.5}
        changed = {**full[0], **now}
        status, _, want = server.post_json("/predict", {"rows": [changed]})
        status, _, mixed = server.post_json("/predict", {"rows": [{ENTITY: full[0][ENTITY], **now}]})
        assert status == 200 and [mixed["predictions"][0][k] for k in PROBA] == [
            want["predictions"][0][k] for k in PROBA
        ]
        assert mixed["predictions"][0]["proba_1"] != expected["predictions"][0]["proba_1"]
        # The MLflow protocol looks up the same way.
        status, _, mlflow = server.post_json("/invocations", {"dataframe_records": by_id[:5]})
        assert status == 200 and mlflow["predictions"] == [p["prediction"] for p in expected["predictions"][:5]]
        # Unknown entity, and a row with neither its features nor an id: 422, with the rows but never the ids.
        status, _, body = server.post_json("/predict", {"rows": [by_id[0], {ENTITY: 987654321}, {"temp": 1.0}]})
        assert status == 422
        message = body["error"]["message"]
        assert "unknown entity (row 2)" in message and "no entity id (row 3)" in message
        assert "987654321" not in message
        # A flip while rows of version 1 are cached: a request mixing a cached id and an uncached one is answered
        # from version 2 alone, each row flagged and logged with the version its features came from.
        newer = frame.assign(temp=frame["temp"] + 15.0)
        newer.to_parquet(tmp_path / "v2.parquet")
        Cli(registry).json("features", "materialize", tmp_path / "v2.parquet", "--entity", ENTITY, "--name",
                           "flights", "--store", url)  # fmt: skip
        expected_v2 = server.post_json("/predict", {"rows": rows_of(newer.iloc[[0, 400]])})[2]["predictions"]
        status, _, flipped = server.post_json("/predict", {"rows": [by_id[0], {ENTITY: int(frame[ENTITY][400])}]})
        assert status == 200, flipped
        assert [p["feature_view_version"] for p in flipped["predictions"]] == [2, 2]
        assert [[p[k] for k in PROBA] for p in flipped["predictions"]] == [[p[k] for k in PROBA] for p in expected_v2]
        metrics = server.get("/metrics")[2].decode()
        check = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        values = metric_values(metrics)
        assert values['mlops_serve_feature_store_lookups_total{result="hit"}'] >= 300
        assert values['mlops_serve_feature_cache_lookups_total{result="hit"}'] >= 300
        assert values['mlops_serve_feature_fallbacks_total{action="rejected",reason="unknown_entity"}'] == 1
        assert values["mlops_serve_feature_lookup_duration_seconds_count"] >= 1
        assert server.stop() == 0
    logged = io.read_table(log)
    by_store = logged[logged["features_from_store"].notna()]
    assert len(by_store) == 600 + 5 + 1 + 2  # the by-id rows, the MLflow rows, the mixed row, the flipped ones
    assert by_store["feature_view_version"].tolist().count(2) == 2 and set(logged["feature_view"]) == {"flights"}
    after_flip = logged[logged["entity_id"].isin([str(by_id[0][ENTITY]), str(frame[ENTITY][400])])]
    after_flip = after_flip[after_flip["feature_view_version"] == 2]
    assert sorted(after_flip["temp"]) == sorted(newer["temp"].iloc[[0, 400]])  # version 2's values, logged as 2
    assert by_store["features_from_store"].iloc[0].split(",") == [f for f in frame.columns if f in SERVED]
    mine = by_store.loc[by_store["entity_id"] == str(full[0][ENTITY]), "features_from_store"]
    assert sorted("precip" in sent.split(",") for sent in mine) == [False, True, True, True, True]  # the mixed row


SERVED = ["carrier", "origin", "dest", "sched_dep_hour", "day_of_week", "distance", "temp", "dewp", "humid",
          "wind_speed", "precip", "pressure", "visib"]  # fmt: skip


def metric_values(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.fixture(scope="module")
def two_profiles(tmp_path_factory, model_file, other_model_file) -> Path:
    """flights:1 and flights:2, registered with reference data whose `temp` differs (so their reference profiles
    fill `temp` with different values)."""
    folder = tmp_path_factory.mktemp("two")
    shifted = folder / "shifted.parquet"
    reference = io.read_table(REFERENCE)
    reference["temp"] = reference["temp"] + 40.0
    reference.to_parquet(shifted)
    path = folder / "registry"
    for model, data in ((model_file, REFERENCE), (other_model_file, shifted)):
        Cli(path).json("register", model, "--name", "flights", "--train-data", data, "--target", "delayed")
    return path


def profile_fills(registry: Path, ref: str) -> dict:
    from mlops_cli.registry import Registry
    from mlops_cli.runtime import ModelSpec

    version = Registry(registry).resolve(ref)
    return fill_values(json.loads(version.file("profile.json").read_text()), ModelSpec.from_manifest(version.manifest))


@pytest.mark.slow
def test_redis_down_mid_serve_is_503_fast_and_never_leaks_the_store(two_profiles, frame, table, tmp_path):
    """Its own Redis, with a password, paused (hangs) then stopped mid-serve: 503 with the reason, the first after
    the read timeout and the next ones at once (short circuit) until Redis answers again; /readyz says so; rows
    that carry every feature are still served; no answer, log or metric names the password or the address. Under
    --on-missing-feature fill an unknown entity is filled from the profile of the model that answers it, flagged
    in /predict, /invocations and V2 answers."""
    registry = two_profiles
    redis = RedisServer(tmp_path, password="secret")
    try:
        Cli(registry).json(
            "features", "materialize", table, "--entity", ENTITY, "--name", "flights", "--store", redis.url
        )
        log = tmp_path / "log"
        args = serve_args(redis.url, "--on-missing-feature", "fill", "--feature-cache-s", "0",
                          "--feature-timeout-s", "0.5", "--poll-s", "0.1", "--log-dir", log,
                          "--challenger", "flights:2", "--challenger-share", "0.5", "--split-key", ENTITY)  # fmt: skip
        full = rows_of(frame.head(3))
        unknown = [{ENTITY: -i} for i in range(1, 21)]
        bodies = []
        with Server(registry, "flights:1", *args, tmp=tmp_path) as server:
            server.wait_ready()
            status, _, body = server.post_json("/predict", {"rows": [{ENTITY: full[0][ENTITY]}, *unknown]})
            assert status == 200, body
            known, *filled = body["predictions"]
            assert "features_filled" not in known
            assert all(p["features_filled"] == SERVED and p["feature_fallback"] == "unknown entity" for p in filled)
            assert {p["route"] for p in filled} == {"champion", "challenger"}
            status, _, mlflow = server.post_json("/invocations", {"dataframe_records": [{ENTITY: full[0][ENTITY]},
                                                                                         unknown[0]]})  # fmt: skip
            assert status == 200 and mlflow["feature_view_version"] == [1, 1]
            assert mlflow["features_filled"] == [None, SERVED] and mlflow["feature_fallback"] == [
                None,
                "unknown entity",
            ]
            v2 = {"inputs": [{"name": ENTITY, "shape": [2], "datatype": "INT64", "data": [full[0][ENTITY], -1]}]}
            status, _, answer = server.post_json("/v2/models/flights/infer", v2)
            outputs = {o["name"]: o["data"] for o in answer["outputs"]}
            assert status == 200 and outputs["features_filled"] == ["", ",".join(SERVED)], answer
            assert outputs["feature_view_version"] == [1, 1] and outputs["feature_fallback"] == ["", "unknown entity"]

            redis.pause()
            started = time.monotonic()
            status, _, body = server.post_json("/predict", {"rows": [{ENTITY: full[1][ENTITY]}]})
            assert status == 503 and "did not answer in time" in body["error"]["message"]
            assert time.monotonic() - started < 2
            bodies.append(body)
            for _ in range(10):  # known down: 503 at once, not after the 0.5 s read timeout
                started = time.monotonic()
                status, _, body = server.post_json("/predict", {"rows": [{ENTITY: full[1][ENTITY]}]})
                assert status == 503 and time.monotonic() - started < 0.1, body
            assert server.post_json("/predict", {"rows": full})[0] == 200  # needs no lookup
            wait_for(lambda: server.get("/readyz")[0] == 503)
            assert b"feature store is down" in server.get("/readyz")[2]
            bodies.append(server.get("/readyz")[2].decode())
            redis.resume()
            wait_for(lambda: server.get("/readyz")[0] == 200)
            assert server.post_json("/predict", {"rows": [{ENTITY: full[1][ENTITY]}]})[0] == 200  # recovered

            redis.stop()
            status, _, body = server.post_json("/predict", {"rows": [{ENTITY: full[1][ENTITY]}]})
            assert status == 503 and "cannot be reached" in body["error"]["message"]
            bodies.append(body)
            wait_for(lambda: server.get("/readyz")[0] == 503)
            redis.start()  # back, but empty (no persistence): the view is gone
            wait_for(lambda: server.get("/readyz")[0] == 200)
            status, _, body = server.post_json("/predict", {"rows": [{ENTITY: full[1][ENTITY]}]})
            assert status == 503 and "no feature view 'flights'" in body["error"]["message"]
            bodies.append(body)
            Cli(registry).json("features", "materialize", table, "--entity", ENTITY, "--name", "flights",
                               "--store", redis.url)  # fmt: skip
            status, _, body = server.post_json("/predict", {"rows": [{ENTITY: full[1][ENTITY]}]})
            assert status == 200 and "features_filled" not in body["predictions"][0], body
            metrics_text = server.get("/metrics")[2].decode()
            metrics = metric_values(metrics_text)
            assert metrics["mlops_serve_feature_store_errors_total"] >= 2
            assert metrics["mlops_serve_feature_store_short_circuits_total"] >= 10
            assert metrics['mlops_serve_feature_fallbacks_total{action="filled",reason="unknown_entity"}'] == 22
            assert server.stop() == 0
            text = json.dumps(bodies) + metrics_text + server.log.read_text()
            assert "secret" not in text and f":{redis.port}" not in json.dumps(bodies)
    finally:
        redis.stop()
    logged = io.read_table(log)
    logged = logged[logged["features_filled"].notna()]
    champion, challenger = profile_fills(registry, "flights:1"), profile_fills(registry, "flights:2")
    assert champion["temp"] != challenger["temp"]
    for route, fills in (("champion", champion), ("challenger", challenger)):
        rows = logged[logged["route"] == route]
        assert len(rows) > 0 and set(rows["temp"]) == {fills["temp"]}, route  # the answering model's profile


def test_a_split_key_from_the_store_routes_the_row_its_fills_were_chosen_for(two_profiles, frame, tmp_path, url):
    """The split key is a view column but not a model feature, and the view lacks `temp`: each row by id is routed
    on the store's split key, and `temp` is filled from the profile of the model that answers it."""
    view = frame.drop(columns=["temp"]).assign(region=[f"r{i % 17}" for i in range(len(frame))])
    path = tmp_path / "view.parquet"
    view.to_parquet(path)
    Cli(two_profiles).json("features", "materialize", path, "--entity", ENTITY, "--name", "flights", "--store", url)
    log = tmp_path / "log"
    args = serve_args(url, "--on-missing-feature", "fill", "--log-dir", log, "--challenger", "flights:2",
                      "--challenger-share", "0.5", "--split-key", "region")  # fmt: skip
    with Server(two_profiles, "flights:1", *args, tmp=tmp_path) as server:
        server.wait_ready()
        status, _, body = server.post_json("/predict", {"rows": [{ENTITY: int(i)} for i in frame[ENTITY][:40]]})
        assert status == 200, body
        assert {p["route"] for p in body["predictions"]} == {"champion", "challenger"}
        assert server.stop() == 0
    logged = io.read_table(log)
    for ref, route in (("flights:1", "champion"), ("flights:2", "challenger")):
        rows = logged[logged["route"] == route]
        assert len(rows) > 0 and set(rows["temp"]) == {profile_fills(two_profiles, ref)["temp"]}, route


def test_while_redis_is_down_one_request_a_second_tries_it(registry, frame, table, tmp_path):
    """Past the short circuit's retry time, one request probes the store; the others arriving meanwhile keep the
    fast 503 instead of each waiting out the read timeout."""
    redis = RedisServer(tmp_path)
    try:
        Cli(registry).json(
            "features", "materialize", table, "--entity", ENTITY, "--name", "flights", "--store", redis.url
        )
        args = serve_args(redis.url, "--feature-cache-s", "0", "--feature-timeout-s", "1", "--poll-s", "30")
        one = {"rows": [{ENTITY: int(frame[ENTITY].iloc[0])}]}
        with Server(registry, "flights", *args, tmp=tmp_path) as server:
            server.wait_ready()
            redis.pause()
            assert server.post_json("/predict", one)[0] == 503  # after the read timeout: the circuit opens
            time.sleep(1.2)  # past the retry time
            import concurrent.futures

            def timed() -> tuple[int, float]:
                started = time.monotonic()
                status = server.post_json("/predict", one)[0]
                return status, time.monotonic() - started

            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                results = list(pool.map(lambda _: timed(), range(4)))
            assert [status for status, _ in results] == [503] * 4
            assert sum(seconds >= 0.8 for _, seconds in results) == 1, results  # one probe waited the timeout
            redis.resume()
    finally:
        redis.stop()


def wait_for(condition, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_serve_refuses_to_start_without_its_view(registry, url, tmp_path):
    done = run_mlops("serve", "flights", "--port", "0", *serve_args(url), registry=registry, timeout=120)
    assert done.returncode == 4 and "no feature view 'flights'" in done.stderr, done.stderr
    half = run_mlops("serve", "flights", "--features", url, registry=registry, timeout=60)
    assert half.returncode == 2


def test_serve_fill_refuses_to_start_with_a_challenger_without_a_profile(
    model_file, other_model_file, table, url, tmp_path
):
    """`fill` needs the profile of every model that may answer a row: a challenger without one is refused at start
    (as score-batch refuses it), not found out by 503s on every request looked up by id."""
    registry = tmp_path / "registry"
    Cli(registry).json("register", model_file, "--name", "flights", "--train-data", REFERENCE, "--target", "delayed")
    Cli(registry).json("register", other_model_file, "--name", "flights")  # no training data: no profile
    Cli(registry).json("features", "materialize", table, "--entity", ENTITY, "--name", "flights", "--store", url)
    args = ("--challenger", "flights:2", "--split-key", ENTITY, "--on-missing-feature", "fill")
    done = run_mlops("serve", "flights:1", "--port", "0", *serve_args(url, *args), registry=registry, timeout=120)
    assert done.returncode == 4 and "flights:2 has no reference profile" in done.stderr, done.stderr


# --- score-batch --features ---------------------------------------------------------------------------------------


def test_score_batch_by_id_equals_scoring_the_full_rows(registry, frame, table, url, tmp_path):
    cli = Cli(registry)
    cli.json("features", "materialize", table, "--entity", ENTITY, "--name", "flights", "--store", url)
    full_out, by_id_out = tmp_path / "full.parquet", tmp_path / "by_id.parquet"
    cli.json("score-batch", "flights", table, full_out, "--id-column", ENTITY)
    ids = tmp_path / "ids.csv"  # ids as text, and one feature computed "now" (the same value as the table's)
    frame[[ENTITY, "temp"]].to_csv(ids, index=False)
    online = ("--features", url, "--feature-view", "flights", "--entity-column", ENTITY)
    report = cli.json("score-batch", "flights", ids, by_id_out, "--id-column", ENTITY, "--batch-size", "700", *online)
    features = report["results"]["features"]
    assert features["version"] == 1 and features["rows_looked_up"] == ROWS and features["unknown_entities"] == 0
    assert "temp" not in features["looked_up"] and "carrier" in features["looked_up"]
    full, by_id = io.read_table(full_out), io.read_table(by_id_out)
    assert by_id[ENTITY].astype(int).tolist() == full[ENTITY].tolist()
    for column in ("prediction", "proba_0", "proba_1"):
        assert np.array_equal(by_id[column].to_numpy(), full[column].to_numpy()), column  # bit for bit

    unknown = tmp_path / "unknown.parquet"
    pq.write_table(pa.table({ENTITY: [1000, -1, 1001, -2]}), unknown)
    out = tmp_path / "out.parquet"
    rejected = cli("score-batch", "flights", unknown, out, *online)
    assert rejected.exit_code == 3 and "unknown entity (rows 2, 4)" in rejected.stderr and not out.exists()
    filled = cli.json("score-batch", "flights", unknown, out, *online, "--on-missing-feature", "fill")
    assert filled["results"]["features"]["fallbacks"] == {"unknown entity": 2}
    flagged = io.read_table(out)["features_filled"].tolist()
    assert flagged[0] is None and flagged[2] is None and flagged[1].split(",") == SERVED == flagged[3].split(",")


@pytest.mark.slow
def test_score_batch_fills_a_challenger_row_from_the_challengers_profile(two_profiles, table, url, tmp_path):
    import pandas as pd

    cli = Cli(two_profiles)
    cli.json("features", "materialize", table, "--entity", ENTITY, "--name", "flights", "--store", url)
    unknown = tmp_path / "unknown.parquet"
    pq.write_table(pa.table({ENTITY: np.arange(-40, 0)}), unknown)
    out = tmp_path / "out.parquet"
    cli.json("score-batch", "flights:1", unknown, out, "--id-column", ENTITY, "--challenger", "flights:2",
             "--challenger-share", "0.5", "--features", url, "--feature-view", "flights", "--entity-column", ENTITY,
             "--on-missing-feature", "fill")  # fmt: skip
    scored = io.read_table(out)
    assert set(scored["model_version"]) == {"1", "2"} and scored["features_filled"].notna().all()
    for ref, route in (("flights:1", "1"), ("flights:2", "2")):
        stand_in = tmp_path / f"{route}.parquet"
        pd.DataFrame([profile_fills(two_profiles, ref)]).to_parquet(stand_in)  # the row its own profile makes
        expected = tmp_path / f"{route}-expected.parquet"
        cli.json("score-batch", ref, stand_in, expected)
        want = io.read_table(expected)["proba_1"].iloc[0]
        assert set(scored.loc[scored["model_version"] == route, "proba_1"]) == {want}, ref
