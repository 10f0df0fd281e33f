"""`mlops serve` as a real process: real HTTP on 127.0.0.1, real signals, real alias moves in the registry."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CURRENT, REFERENCE, Cli, run_mlops
from serving import Server, rows_of

from mlops_cli import io

pytestmark = pytest.mark.slow
SECRET = "Zq-secret-value-7"  # planted in bad requests: no answer may quote it


@pytest.fixture(scope="module")
def registry(tmp_path_factory, model_file, other_model_file) -> Path:
    """flights:1 and flights:2 (with ONNX graphs), production -> 1."""
    path = tmp_path_factory.mktemp("serve") / "registry"
    cli = Cli(path)
    for artifact in (model_file, other_model_file):
        cli.json("register", artifact, "--name", "flights", "--train-data", REFERENCE, "--target", "delayed",
                 "--formats", "onnx")  # fmt: skip
    cli.json("models", "promote", "flights:1", "production")
    return path


@pytest.fixture(scope="module")
def current_rows():
    frame = io.read_table(CURRENT)
    return frame.head(10_000).reset_index(drop=True)


@pytest.mark.parametrize("runtime", ["sklearn", "onnx"])
def test_online_answers_equal_score_batch_bit_for_bit(registry, current_rows, tmp_path, runtime):
    """10,000 rows scored by score-batch and by the server, with a challenger on the same split key: the same
    prediction, the same probabilities to the last bit, the same model for every row."""
    data = tmp_path / "rows.parquet"
    current_rows.to_parquet(data)
    batch_out = tmp_path / "batch.parquet"
    split = ("--challenger", "flights:2", "--challenger-share", "0.3", "--split-key", "carrier,flight")
    done = run_mlops("score-batch", "flights@production", data, batch_out, "--on-invalid", "null",
                     "--runtime", runtime, *split, registry=registry)  # fmt: skip
    assert done.returncode == 0, done.stderr
    batch = io.read_table(batch_out)
    rows = rows_of(current_rows)
    with Server(
        registry, "flights@production", "--runtime", runtime, "--on-invalid", "null", *split, tmp=tmp_path
    ) as server:
        server.wait_ready()
        answers = []
        for start in range(0, len(rows), 2_000):
            status, headers, body = server.post_json("/predict", {"rows": rows[start : start + 2_000]})
            assert status == 200, body
            answers += body["predictions"]
        assert server.stop() == 0
    assert len(answers) == len(batch)
    online = {name: [a.get(name) for a in answers] for name in ("prediction", "proba_0", "proba_1", "model_version")}
    assert set(online["model_version"]) == {"1", "2"}  # both models answered
    assert online["model_version"] == batch["model_version"].tolist()
    for name in ("proba_0", "proba_1"):
        expected = batch[name].to_numpy()
        got = np.array([np.nan if v is None else v for v in online[name]])
        assert np.array_equal(got, expected, equal_nan=True), name  # bit for bit, not approximately
    expected_prediction = [None if p != p else int(p) for p in batch["prediction"].tolist()]
    assert online["prediction"] == expected_prediction


def test_protocols_give_the_same_answers(registry, current_rows, tmp_path):
    rows = rows_of(current_rows.head(20))
    features = [c for c in current_rows.columns]
    with Server(registry, "flights@production", tmp=tmp_path) as server:
        server.wait_ready()
        status, headers, body = server.post_json("/predict", {"rows": rows, "ids": list(range(20))})
        assert status == 200 and headers["x-model-version"] == "1" and "x-request-id" in headers
        expected = [a["prediction"] for a in body["predictions"]]
        assert [a["id"] for a in body["predictions"]] == list(range(20))
        split = {"columns": features, "data": [[r[c] for c in features] for r in rows]}
        assert [a["prediction"] for a in server.post_json("/predict", split)[2]["predictions"]] == expected
        for payload in (
            {"dataframe_split": split},
            {"dataframe_records": rows},
            {"instances": rows},
            {"inputs": {c: [r[c] for r in rows] for c in features}},
        ):
            status, _, answer = server.post_json("/invocations", payload)
            assert status == 200 and answer == {"predictions": expected}, (list(payload), answer)
        csv_text = ",".join(features) + "\n"
        csv_text += "".join(",".join("" if r[c] is None else str(r[c]) for c in features) + "\n" for r in rows)
        status, _, raw = server.request("POST", "/invocations", csv_text.encode(), {"content-type": "text/csv"})
        assert status == 200 and json.loads(raw) == {"predictions": expected}
        # Open Inference Protocol: one tensor per column
        model = json.loads(server.get("/v2/models/flights")[2])
        assert model["name"] == "flights" and model["versions"] == ["1"]
        inputs = []
        for item in model["inputs"]:
            values = [r[item["name"]] for r in rows]
            inputs.append({"name": item["name"], "shape": [20], "datatype": item["datatype"], "data": values})
        status, _, answer = server.post_json("/v2/models/flights/infer", {"id": "a1", "inputs": inputs})
        assert status == 200 and answer["id"] == "a1" and answer["model_version"] == "1"
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert outputs["prediction"]["data"] == expected and outputs["proba_1"]["shape"] == [20]
        for path in ("/ping", "/health", "/v2/health/live", "/v2/health/ready", "/v2/models/flights/ready", "/livez"):
            assert server.get(path)[0] == 200, path
        assert server.get("/version")[2].decode().startswith("0.")
        assert server.get("/v2/models/other")[0] == 404
        models = json.loads(server.get("/models")[2])["models"]
        assert models[0]["version"] == "1" and len(models[0]["sha256"]) == 64 and models[0]["runtime"] == "onnx"


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_bad_requests_get_a_4xx_envelope_that_quotes_nothing(registry, current_rows, tmp_path):
    row = rows_of(current_rows.head(1))[0]
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    auth = {"authorization": "Bearer s3cret"}
    with Server(registry, "flights@production", "--max-body-mb", "0.05", "--max-request-rows", "100",
                "--token-file", token, tmp=tmp_path) as server:  # fmt: skip
        server.wait_ready()
        cases = {
            "malformed JSON": (400, b'{"rows": [{"temp": ' + SECRET.encode(), "application/json"),
            "truncated JSON": (400, json.dumps({"rows": [row]}).encode()[:-7], "application/json"),
            "not an object": (400, json.dumps([SECRET]).encode(), "application/json"),
            "wrong media type": (415, b"temp=1", "application/x-www-form-urlencoded"),
            "missing feature": (422, json.dumps({"rows": [{"temp": SECRET}]}).encode(), "application/json"),
            "a list for a value": (422, json.dumps({"rows": [{**row, "temp": [SECRET]}]}).encode(), "application/json"),
            "number for a category": (422, json.dumps({"rows": [{**row, "carrier": 7}]}).encode(), "application/json"),
            "text for a number": (422, json.dumps({"rows": [{**row, "temp": SECRET}]}).encode(), "application/json"),
            "10,000 columns": (413, json.dumps({"rows": [{f"c{i}": 1 for i in range(10_000)}]}).encode(), "application/json"),
            "a large body": (413, b'{"rows": [' + b" " * 200_000 + b"]}", "application/json"),
            "too many rows": (413, json.dumps({"rows": [row] * 101}).encode(), "application/json"),
        }  # fmt: skip
        for name, (expected, body, media) in cases.items():
            status, _, raw = server.request("POST", "/predict", body, {"content-type": media, **auth})
            assert status == expected, (name, status, raw[:300])
            answer = json.loads(raw)
            assert answer["status"] == "error" and answer["error"]["code"] == expected, name
            assert SECRET not in raw.decode(), name
        assert server.post_json("/predict", {"rows": [row]})[0] == 401  # no token
        assert server.post_json("/predict", {"rows": [row]}, {"authorization": "Bearer wrong"})[0] == 401
        assert server.get("/livez")[0] == 200 and server.get("/readyz")[0] == 200  # probes stay open
        assert server.get("/nowhere", headers=auth)[0] == 404
        # a request that stops halfway through its body, then a 1 GB announcement: no 500, the worker lives on
        _raw(
            server.port,
            b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"ro',
        )
        answer = _raw(server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n"
                      b"Authorization: Bearer s3cret\r\nContent-Type: application/json\r\n\r\n{")  # fmt: skip
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        status, _, body = server.post_json("/predict", {"rows": [row]}, auth)
        assert status == 200 and body["predictions"][0]["model_version"] == "1"
        metrics = server.get("/metrics", headers=auth)[2].decode()
        assert 'code="500"' not in metrics
        assert server.stop() == 0
    assert "Traceback" not in server.log.read_text()


def test_invalid_rows_fail_the_request_or_are_answered_with_their_reason(registry, current_rows, tmp_path):
    rows = rows_of(current_rows.head(3))
    rows[1]["temp"] = "warm"
    with Server(registry, "flights@production", tmp=tmp_path) as server:
        server.wait_ready()
        status, _, body = server.post_json("/predict", {"rows": rows})
        assert status == 422 and "temp: not a number (row 2)" in body["error"]["message"]
        assert "warm" not in json.dumps(body)
    with Server(registry, "flights@production", "--on-invalid", "null", tmp=tmp_path) as server:
        server.wait_ready()
        status, _, body = server.post_json("/predict", {"rows": rows})
        answers = body["predictions"]
        assert (
            status == 200 and answers[1]["prediction"] is None and answers[1]["invalid_reason"] == "temp: not a number"
        )
        assert answers[0]["prediction"] in (0, 1) and "invalid_reason" not in answers[0]


def _promote(registry: Path, version: str) -> None:
    done = run_mlops("models", "promote", f"flights:{version}", "production", "-q", registry=registry)
    assert done.returncode == 0, done.stderr


def test_alias_moves_five_times_under_load_with_no_failed_request(registry, current_rows, tmp_path):
    rows = rows_of(current_rows.head(4))
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()
    with Server(registry, "flights@production", "--workers", "2", "--poll-s", "0.2", tmp=tmp_path) as server:
        server.wait_ready()

        def client() -> None:
            while not stop.is_set():
                status, headers, body = server.post_json("/predict", {"rows": rows})
                versions = {a["model_version"] for a in body["predictions"]} if status == 200 else set()
                results.append((status, headers.get("x-model-version")))
                assert versions == {headers.get("x-model-version")} or status != 200

        threads = [threading.Thread(target=client) for _ in range(16)]
        for t in threads:
            t.start()
        try:
            for target in ("2", "1", "2", "1", "2"):
                _promote(registry, target)
                time.sleep(2.0)  # every worker serves the new version within 2 s of the move
                seen = {server.post_json("/predict", {"rows": rows})[1]["x-model-version"] for _ in range(20)}
                assert seen == {target}, (target, seen)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert server.stop() == 0
    statuses = [status for status, _ in results]
    assert len(statuses) > 100 and set(statuses) == {200}
    assert all(version in ("1", "2") for _, version in results)
    _promote(registry, "1")


def test_a_version_that_fails_to_load_keeps_the_old_one_serving(registry, current_rows, tmp_path):
    """production moves to flights:2, whose ONNX graph is then altered; SIGHUP makes the server re-check at once
    (its poll is 60 s). It keeps serving flights:1 and says so in /readyz, in a metric and in the event log."""
    import shutil

    copy = tmp_path / "registry"
    shutil.copytree(registry, copy)
    row = rows_of(current_rows.head(1))
    with Server(copy, "flights@production", "--poll-s", "60", tmp=tmp_path) as server:
        server.wait_ready()
        _promote(copy, "2")
        graph = copy / "flights" / "versions" / "2" / "model.onnx"
        graph.write_bytes(graph.read_bytes()[:-10] + b"0123456789")
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ready = json.loads(server.get("/readyz")[2])
            if "switch_error" in ready["models"][0]:
                break
            time.sleep(0.1)
        assert ready["status"] == "ready" and ready["models"][0]["version"] == "1"
        assert "flights:2 did not load" in ready["models"][0]["switch_error"]
        status, headers, _ = server.post_json("/predict", {"rows": row})
        assert status == 200 and headers["x-model-version"] == "1"
        metrics = server.get("/metrics")[2].decode()
        assert 'mlops_serve_alias_switches_total{result="failed",role="champion"} 1.0' in metrics  # labels sorted
    events = [json.loads(line) for line in (copy / "flights" / "events.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "serve_switch_failed"]
    assert len(failed) == 1 and failed[0]["to"] == "2" and failed[0]["serving"] == "1"


def test_sigterm_drains_flushes_the_log_and_exits_0(registry, current_rows, tmp_path):
    rows = rows_of(current_rows.head(200))
    log_dir = tmp_path / "log"
    with Server(registry, "flights@production", "--workers", "2", "--log-dir", log_dir, "--shutdown-delay-s", "1",
                "--challenger", "flights:2", "--split-key", "carrier,flight", "--shadow", "flights:2",
                tmp=tmp_path) as server:  # fmt: skip
        server.wait_ready()
        for i in range(40):
            part = rows[5 * i : 5 * i + 5]
            status, _, _ = server.post_json("/predict", {"rows": part, "ids": [f"{i}-{j}" for j in range(5)]})
            assert status == 200
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert server.get("/readyz")[0] == 503  # readiness goes false first, while requests are still answered
        assert server.post_json("/predict", {"rows": rows[:5]})[0] in (200, 503)
        assert server.process.wait(60) == 0
    log = io.read_table(log_dir)
    served = log[log["route"] != "shadow"]
    assert len(served) >= 200 and len(log[log["route"] == "shadow"]) >= 200
    assert set(served["route"]) == {"champion", "challenger"} and set(
        log[log["route"] == "shadow"]["model_version"]
    ) == {"2"}
    assert {"id", "prediction", "proba_1", "model_name", "model_version", "invalid_reason", "request_id", "received_at",
            "latency_ms", "route", "temp", "carrier"} <= set(log.columns)  # fmt: skip
    assert not [p for p in log_dir.rglob("*") if p.name.startswith(".")]  # nothing half-written left
    report = run_mlops("drift-report", log_dir, "--model", "flights:1", "--json", registry=registry)
    assert report.returncode == 0, report.stderr
    inputs = json.loads(report.stdout)["inputs"]
    assert [i["rows"] for i in inputs if i["path"] == str(log_dir)] == [len(log)], inputs


def _predicted(server: Server) -> float:
    metrics = server.get("/metrics")[2].decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
        if line.startswith('mlops_serve_requests_total{code="200",handler="/predict"}')
    )  # fmt: skip


def test_a_killed_worker_is_replaced_and_metrics_stay_bounded(registry, current_rows, tmp_path):
    rows = rows_of(current_rows.head(1))
    with Server(registry, "flights@production", "--workers", "2", tmp=tmp_path) as server:
        server.wait_ready()
        folder = next(tmp_path.glob("mlops-serve-metrics-*"))
        for round_ in range(3):
            for _ in range(10):
                assert server.post_json("/predict", {"rows": rows})[0] == 200
            # a worker counts a request once its answer is sent: wait for the count before killing one
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _predicted(server) < 10 * (round_ + 1):
                time.sleep(0.05)
            victim = server.workers()[0]
            import os

            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (victim in server.workers() or len(server.workers()) < 2):
                time.sleep(0.1)
            assert len(server.workers()) == 2 and victim not in server.workers()
            server.wait_ready()
        files = sorted(p.name for p in folder.iterdir())
        assert all(name.endswith(("_0.db", "_1.db")) for name in files), files  # named by slot, not by pid
        metrics = server.get("/metrics")[2].decode()
        assert _predicted(server) >= 30  # the dead workers' counts were kept
        check = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        assert server.stop() == 0


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit status waits for whatever reaps in this container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_of_a_killed_supervisor_exit(registry, current_rows, tmp_path):
    """kill -9 of the supervisor: its workers get SIGTERM from the kernel, drain and exit (the port is freed)."""
    import os

    with Server(registry, "flights@production", "--workers", "2", tmp=tmp_path) as server:
        server.wait_ready()
        workers = server.workers()
        assert len(workers) == 2
        server.process.kill()
        server.process.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(map(_running, workers)):
            time.sleep(0.1)
        alive = [pid for pid in workers if _running(pid)]
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        assert not alive, "workers outlived their supervisor"


def test_concurrent_requests_are_stacked_into_one_model_call(registry, current_rows, tmp_path):
    rows = rows_of(current_rows.head(1))
    with Server(registry, "flights@production", "--max-wait-ms", "20", tmp=tmp_path) as server:
        server.wait_ready()
        threads = [threading.Thread(target=server.post_json, args=("/predict", {"rows": rows})) for _ in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = server.get("/metrics")[2].decode()
    calls = float(
        next(line.split()[1] for line in metrics.splitlines() if line.startswith("mlops_serve_batch_rows_count"))
    )
    rows_total = float(
        next(line.split()[1] for line in metrics.splitlines() if line.startswith("mlops_serve_batch_rows_sum"))
    )
    assert rows_total == 32 and calls < 16, (calls, rows_total)


def test_serve_refuses_what_it_cannot_start(registry, tmp_path):
    done = run_mlops("serve", "flights@staging", registry=registry)
    assert done.returncode == 4 and "no alias 'staging'" in done.stderr
    done = run_mlops("serve", "flights@production", "--challenger", "flights:2", registry=registry)
    assert done.returncode == 2
    with socket.create_server(("127.0.0.1", 0)) as busy:
        done = run_mlops("serve", "flights:1", "--port", busy.getsockname()[1], registry=registry)
    assert done.returncode == 3 and "cannot listen" in done.stderr


@pytest.mark.parametrize("with_nan", [False, True])
def test_scores_observed_in_bulk_export_what_observing_one_by_one_exports(with_nan):
    """The score histogram is fed a batch at a time (`observe_all`): the same series as prometheus_client's own
    `observe` per value, values on a bucket's bound included."""
    import math

    from prometheus_client import CollectorRegistry, Histogram

    from mlops_cli.online.metrics import SCORE_BUCKETS, observe_all

    values = np.concatenate([np.random.default_rng(5).random(2_000), SCORE_BUCKETS, [0.0, 1.0, 0.95, 0.05]])
    if with_nan:
        values[[3, 17]] = np.nan
    series = []
    for bulk in (False, True):
        registry = CollectorRegistry()
        child = Histogram("s", "s", ["v"], buckets=SCORE_BUCKETS, registry=registry).labels("1")
        if bulk:
            observe_all(child, values[:1000])
            observe_all(child, values[1000:])
            observe_all(child, values[:0])
        else:
            for value in values.tolist():
                child.observe(value)
        series.append({(s.name, s.labels.get("le")): s.value for m in registry.collect() for s in m.samples
                       if not s.name.endswith("_created")})  # fmt: skip
    one_by_one, bulk = series
    assert one_by_one.keys() == bulk.keys() and len(one_by_one) == len(SCORE_BUCKETS) + 3  # +Inf, count, sum
    for key, value in one_by_one.items():
        if key[0] == "s_sum":
            assert math.isnan(bulk[key]) if with_nan else bulk[key] == pytest.approx(value, rel=1e-12)
        else:
            assert bulk[key] == value, key
