"""`mlops stream` as a real process against a real Kafka-protocol broker (Tansu, started here on 127.0.0.1): real
messages through confluent-kafka, real signals, kill -9, alias moves in the registry, two members of one group."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import CURRENT, REFERENCE, Cli, run_mlops
from serving import rows_of
from streaming import Broker, Silencer, StreamProcess, free_port

from mlops_cli import io

pytestmark = pytest.mark.slow
SECRET = "Zq-secret-value-7"  # planted in bad messages: no answer's reason may quote it


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    running = Broker(tmp_path_factory.mktemp("tansu"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory, model_file, other_model_file) -> Path:
    """flights:1 and flights:2, production -> 1; and flights-b:1 (flights:2's artifact under another name)."""
    path = tmp_path_factory.mktemp("stream") / "registry"
    cli = Cli(path)
    for name, artifact in (("flights", model_file), ("flights", other_model_file), ("flights-b", other_model_file)):
        cli.json("register", artifact, "--name", name, "--train-data", REFERENCE, "--target", "delayed")
    cli.json("models", "promote", "flights:1", "production")
    return path


@pytest.fixture(scope="module")
def rows():
    """10,000 rows of the sample's current data as JSON values, each with its `row_id`."""
    frame = io.read_table(CURRENT).head(10_000).reset_index(drop=True)
    out = rows_of(frame)
    for i, row in enumerate(out):
        row["row_id"] = i
    return frame, out


def _topics(broker: Broker, partitions: int = 3) -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    names = (f"in-{tag}", f"out-{tag}", f"dlq-{tag}")
    broker.topics(*names, partitions=partitions)
    return names


def _encode(rows: list[dict]) -> list[bytes]:
    return [json.dumps(r).encode() for r in rows]


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _metrics_port(stream: StreamProcess) -> int:
    match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", stream.log.read_text())
    assert match, stream.log.read_text()
    return int(match.group(1))


def _wait(condition, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _answers(broker: Broker, topic: str, expect: int) -> list[dict]:
    return [json.loads(m.value()) for m in broker.read(topic, expect)]


def test_ten_thousand_messages_answered_as_score_batch_answers_them(broker, registry, rows, tmp_path):
    """10,000 messages over 3 partitions, with a challenger of another name on a split key: one answer per input
    offset, and the same model (name and version, per row), prediction and probabilities to the last bit as
    score-batch gives the same rows."""
    frame, records = rows
    source, out, _ = _topics(broker)
    broker.produce(source, _encode(records))
    split = ("--challenger", "flights-b:1", "--challenger-share", "0.3", "--split-key", "carrier,flight")
    with StreamProcess(registry, "flights@production", broker, "--input-topic", source, "--output-topic", out,
                       "--key-column", "row_id", "--max-messages", len(records), "--json", *split,
                       tmp=tmp_path) as stream:  # fmt: skip
        assert stream.wait(180) == 0, stream.log.read_text()
    report = stream.report()
    assert report["status"] == "pass"
    results = report["results"]
    assert (results["messages_in"], results["messages_out"], results["dead_lettered"]) == (10_000, 10_000, 0)
    assert results["stopped_by"] == "max-messages"

    answers = _answers(broker, out, 10_000)
    assert len(answers) == 10_000  # committed before exit, nothing produced twice
    assert Counter((a["partition"], a["offset"]) for a in answers).most_common(1)[0][1] == 1
    assert {a["topic"] for a in answers} == {source}
    assert {(a["route"], a["model_name"]) for a in answers} == {("champion", "flights"), ("challenger", "flights-b")}

    data = tmp_path / "rows.parquet"
    frame.to_parquet(data)
    batch_out = tmp_path / "batch.parquet"
    done = run_mlops("score-batch", "flights@production", data, batch_out, "--on-invalid", "null", *split,
                     registry=registry)  # fmt: skip
    assert done.returncode == 0, done.stderr
    batch = io.read_table(batch_out)
    by_id = sorted(answers, key=lambda a: a["id"])
    assert [a["id"] for a in by_id] == list(range(10_000))
    assert [a["model_version"] for a in by_id] == batch["model_version"].astype(str).tolist()
    assert {a["route"] for a in by_id} == {"champion", "challenger"}
    assert [a["prediction"] for a in by_id] == batch["prediction"].tolist()
    for column in ("proba_0", "proba_1"):
        got = np.array([a[column] for a in by_id], dtype=float)
        assert np.array_equal(got, batch[column].to_numpy(dtype=float), equal_nan=True), column


def test_kill_9_mid_stream_then_restart_loses_no_message(broker, registry, rows, tmp_path):
    """kill -9 while batches are in flight (some answers out, not all), then a restart in the same group: every
    input offset has an answer (some twice: at least once), none is missing."""
    _, records = rows
    source, out, dlq = _topics(broker)
    values = _encode(records) + [b"{broken"] * 50  # 10,050 messages, some for the dead-letter topic
    broker.produce(source, values)
    group = f"g-{source}"
    # Small batches: hundreds of produce-flush-commit rounds back to back, so the kill lands inside one.
    args = ("--input-topic", source, "--output-topic", out, "--dead-letter-topic", dlq, "--max-batch-rows", "20",
            "--group", group)  # fmt: skip
    with StreamProcess(registry, "flights@production", broker, *args, "--metrics-port", "0", tmp=tmp_path) as first:
        first.wait_started()
        port = _metrics_port(first)

        def answered() -> float:  # the stream's own count: one local HTTP call, no reading of the topic
            match = re.search(r'mlops_stream_messages_total\{result="out"\} (\S+)', _get(port, "/metrics")[1].decode())
            return float(match.group(1)) if match else 0.0

        _wait(lambda: answered() >= 1_000, 120, "the first answers")
        first.process.kill()  # SIGKILL: no clean-up runs
        assert first.wait(30) == -signal.SIGKILL
    # Measured after the kill: the process was still answering when it died.
    before = broker.read(out, 1) + broker.read(dlq, 0, quiet_s=0.5)
    committed = sum(max(0, o) for o in broker.committed(group, source, 3).values())
    assert 0 < len(before) < len(values), "the kill came before the start or after the end: the test proves nothing"
    assert committed < len(values)

    with StreamProcess(registry, "flights@production", broker, *args, "--idle-exit-s", "3", "--json",
                       tmp=tmp_path) as second:  # fmt: skip
        assert second.wait(180) == 0, second.log.read_text()
    assert second.report()["results"]["stopped_by"] == "idle"

    answers = _answers(broker, out, 1) + [
        {"partition": int(dict(m.headers())["mlops.partition"]), "offset": int(dict(m.headers())["mlops.offset"])}
        for m in broker.read(dlq, 1)
    ]
    seen = Counter((a["partition"], a["offset"]) for a in answers)
    consumed = broker.read(source, len(values))
    expected = {(m.partition(), m.offset()) for m in consumed}
    assert len(expected) == len(values)
    assert set(seen) == expected  # every input message answered; nothing answered that was not sent


def test_malformed_and_invalid_messages_go_to_the_dead_letter_topic_and_never_stop_the_consumer(
    broker, registry, rows, tmp_path
):
    _, records = rows
    source, out, dlq = _topics(broker, partitions=1)
    good = records[:20]
    bad_number = {**records[20], "distance": f"far-{SECRET}"}  # breaks the input contract: "distance: not a number"
    nested = {**records[21], "carrier": {"code": SECRET}}
    mistyped = {**records[22], "carrier": 7}  # a number where the model reads a text category
    values = [*_encode(good[:10]), f"not json {SECRET}".encode(), b"[1, 2, 3]", json.dumps(bad_number).encode(),
              json.dumps(nested).encode(), b"\xff\xfe", json.dumps(mistyped).encode(), *_encode(good[10:])]  # fmt: skip
    broker.produce(source, values)
    prom = tmp_path / "stream.prom"
    with StreamProcess(registry, "flights@production", broker, "--input-topic", source, "--output-topic", out,
                       "--dead-letter-topic", dlq, "--idle-exit-s", "1", "--prom-file", prom,
                       "--json", tmp=tmp_path) as stream:  # fmt: skip
        assert stream.wait(120) == 0, stream.log.read_text()
    results = stream.report()["results"]
    assert (results["messages_in"], results["messages_out"], results["dead_lettered"]) == (26, 20, 6)
    # --prom-file is the run's job textfile, written once at exit by the report writer, as every command's
    textfile = prom.read_text()
    labels = 'command="stream",model="flights"'
    assert f"mlops_job_exit_code{{{labels}}} 0" in textfile
    assert f"mlops_job_last_success_timestamp_seconds{{{labels}}} " in textfile
    assert f'mlops_stream_run_messages{{{labels},result="dead_letter"}} 6' in textfile
    assert f'mlops_stream_run_messages{{{labels},result="unproducible"}} 0' in textfile
    assert "mlops_stream_invalid_rows_total" not in textfile  # the live metrics are --metrics-port's
    check = subprocess.run(["promtool", "check", "metrics"], input=textfile, capture_output=True, text=True)
    assert "error" not in (check.stdout + check.stderr).lower(), check.stdout + check.stderr

    answers = _answers(broker, out, 20)
    assert sorted(a["offset"] for a in answers) == [*range(10), *range(16, 26)]
    assert all(a["prediction"] is not None for a in answers)
    dead = broker.read(dlq, 6)
    assert [m.value() for m in dead] == values[10:16]  # the original bytes, in order
    reasons = {int(dict(m.headers())["mlops.offset"]): dict(m.headers())["mlops.reason"].decode() for m in dead}
    assert reasons[10] == reasons[14] == "undecodable: not JSON"
    assert reasons[11] == "undecodable: not a JSON object"
    assert reasons[12] == "distance: not a number"
    assert reasons[13] == "undecodable: column 'carrier' holds a list or an object"
    assert reasons[15] == "carrier: not text"
    assert not any(SECRET in r for r in reasons.values())


def _codec(registry: Path, dead_letter_topic: str | None, challenger: str | None = None):
    from mlops_cli.online.following import Followed
    from mlops_cli.online.routing import Router
    from mlops_cli.registry import Registry
    from mlops_cli.runtime import LoadOptions
    from mlops_cli.stream.messages import Codec

    models = [Followed(Registry(registry), ref, role, LoadOptions())
              for ref, role in (("flights@production", "champion"), (challenger, "challenger")) if ref]  # fmt: skip
    for followed in models:
        followed.start()
    split = {"share": 0.5, "split_key": ["flight"]} if challenger else {}
    return Codec(Router(*models, **split), "out", dead_letter_topic, "row_id")


def test_without_a_dead_letter_topic_each_bad_message_gets_an_answer_with_the_reason(registry, rows):
    """The codec alone (no broker): one answer per message, in order; bad ones with a null prediction and why."""
    from mlops_cli.stream.messages import Incoming

    _, records = rows
    codec = _codec(registry, None)
    values = [json.dumps(records[0]).encode(), b"{broken", json.dumps({**records[1], "distance": "far"}).encode(),
              None, json.dumps(records[2]).encode()]  # fmt: skip
    answered = codec.answer([Incoming("in", 0, i, b"k", v) for i, v in enumerate(values)])
    answers = [json.loads(o.value) for o in answered.out]
    assert {o.topic for o in answered.out} == {"out"}
    assert [a["offset"] for a in answers] == [0, 1, 2, 3, 4]
    assert [o.dead for o in answered.out] == [False, True, True, True, False]
    assert [a.get("invalid_reason") for a in answers] == [
        None, "undecodable: not JSON", "distance: not a number", "undecodable: the message has no value", None
    ]  # fmt: skip
    assert [a["prediction"] is None for a in answers] == [False, True, True, True, False]
    assert [a["id"] for a in answers] == [0, None, 1, None, 2]


def test_a_mistyped_message_is_turned_down_alone_and_the_rest_scored_in_one_call(registry, rows):
    """One message with a number where the model reads a category: it alone is dead-lettered with score-batch's
    form of reason, and the other 499 are scored by one model call, not one message at a time."""
    from mlops_cli.stream.messages import Incoming

    _, records = rows
    values = _encode(records[:500])
    values[7] = json.dumps({**records[7], "carrier": 12}).encode()
    values[9] = json.dumps({**records[9], "distance": "far"}).encode()  # flagged by the model call, row by row
    answered = _codec(registry, "dlq").answer([Incoming("in", 0, i, None, v) for i, v in enumerate(values)])
    assert answered.routed is not None and answered.routed.n == 499  # one call for the valid rows
    dead = {i: dict(o.headers)["mlops.reason"].decode() for i, o in enumerate(answered.out) if o.dead}
    assert dead == {7: "carrier: not text", 9: "distance: not a number"}
    assert [o.value for o in answered.out if o.dead] == [values[7], values[9]]


def test_each_row_names_the_model_that_answered_it_in_answers_and_dead_letters(registry, rows):
    """With a challenger of another name, `model_name` and the dead letter's `mlops.model` are the answering
    model's, row by row."""
    from mlops_cli.stream.messages import Incoming

    _, records = rows
    batch = [{**r, "distance": "far"} if i % 2 else r for i, r in enumerate(records[:200])]  # every other invalid
    codec = _codec(registry, "dlq", challenger="flights-b:1")
    answered = codec.answer([Incoming("in", 0, i, None, v) for i, v in enumerate(_encode(batch))])
    routes = answered.routed.route
    good = [json.loads(o.value) for o in answered.out if not o.dead]
    assert {(a["route"], a["model_name"]) for a in good} == {("champion", "flights"), ("challenger", "flights-b")}
    models = [dict(o.headers)["mlops.model"].decode() for o in answered.out if o.dead]
    assert models == [{"champion": "flights:1", "challenger": "flights-b:1"}[r] for r in routes[1::2]]
    assert set(models) == {"flights:1", "flights-b:1"}


def test_alias_switch_mid_stream_and_sigterm_commits_leaves_and_exits_0(broker, registry, rows, tmp_path):
    """The alias moves while the stream runs: later messages are answered by the new version, none fails. Metrics
    say the messages, the lag and the version; SIGTERM then exits 0 with everything committed."""
    _, records = rows
    copy = tmp_path / "registry"
    subprocess.run(["cp", "-a", str(registry), str(copy)], check=True)
    source, out, _ = _topics(broker)
    group = f"g-{source}"
    args = ("--input-topic", source, "--output-topic", out, "--group", group, "--poll-s", "0.2", "--metrics-port",
            "0", "--json")  # fmt: skip
    with StreamProcess(copy, "flights@production", broker, *args, tmp=tmp_path) as stream:
        stream.wait_started()
        port = _metrics_port(stream)
        _wait(lambda: _get(port, "/readyz")[0] == 200, 60, "ready")
        broker.produce(source, _encode(records[:1000]))
        _wait(lambda: len(broker.read(out, quiet_s=0.2, timeout=5)) >= 1000, 60, "the first 1000 answers")
        metrics = _get(port, "/metrics")[1].decode()
        assert 'mlops_stream_messages_total{result="in"} 1000.0' in metrics
        assert 'mlops_stream_model_info{model="flights",role="champion"' in metrics

        def caught_up() -> bool:  # the lag is measured once a second, from the fetch responses' high watermarks
            text = _get(port, "/metrics")[1].decode()
            lags = [line for line in text.splitlines() if line.startswith("mlops_stream_consumer_lag_messages{")]
            return len(lags) == 3 and all(line.endswith(" 0.0") for line in lags)

        _wait(caught_up, 30, "the lag of 3 partitions at 0")
        assert "mlops_stream_batch_duration_seconds_bucket" in metrics
        check = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True)
        assert "error" not in (check.stdout + check.stderr).lower(), check.stdout + check.stderr

        Cli(copy).json("models", "promote", "flights:2", "production")
        _wait(lambda: "now version 2" in stream.log.read_text(), 60, "the switch")
        broker.produce(source, _encode(records[1000:2000]))
        _wait(lambda: len(broker.read(out, quiet_s=0.2, timeout=5)) >= 2000, 60, "the next 1000 answers")
        ready = json.loads(_get(port, "/readyz")[1])
        assert ready["models"][0]["version"] == "2"
        assert len(ready["partitions"]) == 3
        assert stream.stop(signal.SIGTERM) == 0, stream.log.read_text()
    results = stream.report()["results"]
    assert results["stopped_by"] == "SIGTERM"
    assert results["messages_in"] == 2000
    assert [(s["from"], s["to"]) for s in results["switches"]] == [("1", "2")]
    answers = _answers(broker, out, 2000)
    versions = {(a["partition"], a["offset"]): a["model_version"] for a in answers}
    assert len(versions) == len(answers) == 2000
    by_offset = sorted(answers, key=lambda a: (a["partition"], a["offset"]))
    for partition in range(3):
        seq = [a["model_version"] for a in by_offset if a["partition"] == partition]
        assert seq == sorted(seq) and seq[0] == "1" and seq[-1] == "2"  # 1 until the switch, then 2; nothing else

    # Everything was committed before the exit: the group's offsets are one past each partition's last message.
    last = {}
    for a in answers:
        last[a["partition"]] = max(last.get(a["partition"], -1), a["offset"])
    assert broker.committed(group, source, 3) == {p: o + 1 for p, o in last.items()}


def test_sighup_re_checks_the_alias_at_once_and_does_not_stop_the_stream(broker, registry, tmp_path):
    """The services' convention: SIGHUP re-reads the alias now (here the poll is an hour), and the stream goes on."""
    copy = tmp_path / "registry"
    subprocess.run(["cp", "-a", str(registry), str(copy)], check=True)
    source, out, _ = _topics(broker)
    args = ("--input-topic", source, "--output-topic", out, "--group", f"g-{source}", "--poll-s", "3600", "--json")
    with StreamProcess(copy, "flights@production", broker, *args, tmp=tmp_path) as stream:
        stream.wait_started()
        Cli(copy).json("models", "promote", "flights:2", "production")
        stream.process.send_signal(signal.SIGHUP)
        _wait(lambda: "now version 2" in stream.log.read_text(), 60, "the switch on SIGHUP")
        assert stream.process.poll() is None
        assert stream.stop(signal.SIGTERM) == 0, stream.log.read_text()
    results = stream.report()["results"]
    assert results["stopped_by"] == "SIGTERM" and [(s["from"], s["to"]) for s in results["switches"]] == [("1", "2")]


def test_two_consumers_in_one_group_split_the_partitions_and_ctrl_c_stops_one_cleanly(broker, registry, rows, tmp_path):
    """Two members share four partitions; Ctrl-C stops one as SIGTERM does: exit 0."""
    _, records = rows
    source, out, _ = _topics(broker, partitions=4)
    group = f"g-{source}"
    args = ("--input-topic", source, "--output-topic", out, "--group", group, "--metrics-port", "0", "--json")
    with (
        StreamProcess(registry, "flights@production", broker, *args, tmp=tmp_path) as a,
        StreamProcess(registry, "flights@production", broker, *args, tmp=tmp_path) as b,
    ):
        a.wait_started()
        b.wait_started()
        ports = [_metrics_port(a), _metrics_port(b)]

        def split() -> bool:
            parts = [json.loads(_get(p, "/readyz")[1]).get("partitions", []) for p in ports]
            return all(len(p) == 2 for p in parts) and len(set(parts[0]) | set(parts[1])) == 4

        _wait(split, 60, "two partitions each")
        broker.produce(source, _encode(records[:4000]))
        _wait(lambda: len(broker.read(out, quiet_s=0.2, timeout=5)) >= 4000, 90, "4000 answers")
        assert b.stop(signal.SIGINT) == 0, b.log.read_text()
        assert a.stop() == 0, a.log.read_text()
    assert [s.report()["results"]["stopped_by"] for s in (a, b)] == ["SIGTERM", "SIGINT"]
    counts = [s.report()["results"]["messages_in"] for s in (a, b)]
    assert sum(counts) == 4000 and min(counts) > 0
    answers = _answers(broker, out, 4000)
    assert len({(x["partition"], x["offset"]) for x in answers}) == 4000
    assert sum(broker.committed(group, source, 4).values()) == 4000


def test_a_message_too_large_to_produce_is_cut_or_counted_and_never_blocks_its_partition(
    broker, registry, rows, tmp_path
):
    """The producer takes at most 20,000 bytes a message here. A 25,000-byte undecodable message: its dead letter is
    sent cut to 1,024 bytes with `mlops.truncated`. One whose own headers are too large: even cut, its dead letter
    cannot be produced; it is counted (unproducible), said in one line, and committed past. The messages after both
    are answered, and the group's offset is at the end: a restart would not meet them again."""
    _, records = rows
    source, out, dlq = _topics(broker, partitions=1)
    big = b"{" + b"x" * 25_000
    values = [*_encode(records[:5]), big, *_encode(records[5:10]), b"{broken", *_encode(records[10:15])]
    broker.produce(source, values, headers={11: [("trace", b"t" * 25_000)]})
    group = f"g-{source}"
    with StreamProcess(registry, "flights@production", broker, "--input-topic", source, "--output-topic", out,
                       "--dead-letter-topic", dlq, "--group", group, "--kafka-option", "message.max.bytes=20000",
                       "--idle-exit-s", "1", "--json", tmp=tmp_path) as stream:  # fmt: skip
        assert stream.wait(120) == 0, stream.log.read_text()
    results = stream.report()["results"]
    counts = ("messages_in", "messages_out", "dead_lettered", "unproducible")
    assert tuple(results[k] for k in counts) == (17, 15, 1, 1)
    lines = [line for line in stream.log.read_text().splitlines() if "refused" in line]
    assert len(lines) == 1 and f"{source}/0/11:" in lines[0], stream.log.read_text()
    assert sorted(a["offset"] for a in _answers(broker, out, 15)) == [*range(5), *range(6, 11), *range(12, 17)]
    (dead,) = broker.read(dlq, 1)
    headers = dict(dead.headers())
    assert dead.value() == big[:1024] and headers["mlops.truncated"] == b"25001"
    assert headers["mlops.offset"] == b"5" and headers["mlops.reason"] == b"undecodable: not JSON"
    assert broker.committed(group, source, 1) == {0: 17}


def test_a_commit_the_coordinator_never_answers_is_exit_3_within_timeout(registry, rows, tmp_path):
    """The group coordinator takes the offset commit and never answers (a relay swallows it; the broker and the
    client are real): one line, exit 3 within --timeout-s (librdkafka's own commit would wait far longer), and
    nothing committed."""
    _, records = rows
    relay_port = free_port()
    own = Broker(tmp_path, advertised_port=relay_port)
    relay = Silencer(relay_port, own.port)
    try:
        source, out, _ = _topics(own, partitions=1)
        own.produce(source, _encode(records[:10]))
        relay.hold()
        group = f"g-{source}"
        with StreamProcess(registry, "flights@production", own, "--input-topic", source, "--output-topic", out,
                           "--group", group, "--timeout-s", "3", tmp=tmp_path) as stream:  # fmt: skip
            stream.wait_started()
            _wait(relay.held.is_set, 60, "the first commit")
            started = time.monotonic()
            assert stream.wait(60) == 3, stream.log.read_text()
            assert time.monotonic() - started < 30
        errors = [line for line in stream.log.read_text().splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "did not answer the offset commit within 3 s" in errors[0], errors
        assert stream.log.read_text().strip().splitlines()[-1] == errors[0]
        assert _answers(own, out, 1)  # the first batch's answers went out; its offsets were not committed
        assert own.committed(group, source, 1)[0] < 0
    finally:
        relay.close()
        own.stop()


def test_lag_after_a_restart_counts_from_the_group_committed_offsets(broker, registry, rows, tmp_path):
    """A member that has committed nothing yet (just restarted, nothing new to answer) reports the lag from the
    group's committed offset, 0 here, not the whole partition."""
    _, records = rows
    source, out, _ = _topics(broker, partitions=1)
    broker.produce(source, _encode(records[:50]))
    args = ("--input-topic", source, "--output-topic", out, "--group", f"g-{source}")
    with StreamProcess(registry, "flights@production", broker, *args, "--idle-exit-s", "1", tmp=tmp_path) as first:
        assert first.wait(120) == 0, first.log.read_text()
    with StreamProcess(registry, "flights@production", broker, *args, "--metrics-port", "0", tmp=tmp_path) as second:
        second.wait_started()
        port = _metrics_port(second)
        series = f'mlops_stream_consumer_lag_messages{{partition="0",topic="{source}"}} '

        def lag() -> str | None:
            text = _get(port, "/metrics")[1].decode()
            return next((line[len(series) :] for line in text.splitlines() if line.startswith(series)), None)

        _wait(lambda: lag() is not None, 60, "the lag")
        assert lag() == "0.0"
        assert second.stop() == 0


def test_a_member_joining_mid_stream_loses_nothing_and_answers_nothing_twice(broker, registry, rows, tmp_path):
    """A second member joins while the first is answering a steady flow: the group rebalances, both go on, every
    input offset is answered, and, unless a commit was refused (counted), none twice: each member committed what it
    had answered before its partitions were revoked."""
    _, records = rows
    source, out, _ = _topics(broker, partitions=4)
    group = f"g-{source}"
    args = ("--input-topic", source, "--output-topic", out, "--group", group, "--max-batch-rows", "50",
            "--metrics-port", "0", "--idle-exit-s", "4", "--json")  # fmt: skip
    values = _encode(records[:4000])
    sent = threading.Event()

    def trickle() -> None:  # 4,000 messages over 20 s and more
        for start in range(0, len(values), 100):
            broker.produce(source, values[start : start + 100])
            time.sleep(0.5)
        sent.set()

    with StreamProcess(registry, "flights@production", broker, *args, tmp=tmp_path) as a:
        a.wait_started()
        producer = threading.Thread(target=trickle, daemon=True)
        producer.start()
        port_a = _metrics_port(a)
        _wait(lambda: 'mlops_stream_messages_total{result="out"} 0.0' not in _get(port_a, "/metrics")[1].decode(),
              60, "the first answers")  # fmt: skip
        with StreamProcess(registry, "flights@production", broker, *args, tmp=tmp_path) as b:
            b.wait_started()
            port_b = _metrics_port(b)
            _wait(lambda: json.loads(_get(port_b, "/readyz")[1]).get("partitions"), 60, "b's partitions")
            assert not sent.is_set(), "the flow ended before the second member joined: the test proves nothing"
            producer.join(120)
            assert b.wait(180) == 0, b.log.read_text()
        assert a.wait(180) == 0, a.log.read_text()
    results = [s.report()["results"] for s in (a, b)]
    assert sum(r["messages_in"] for r in results) >= 4000 and min(r["messages_in"] for r in results) > 0
    answers = _answers(broker, out, 4000)
    seen = Counter((x["partition"], x["offset"]) for x in answers)
    assert len(seen) == 4000  # every input offset answered
    twice = sum(n - 1 for n in seen.values())
    failed = sum(r["commits_failed"] for r in results)
    assert twice <= failed * 50, (twice, failed)  # a duplicate only from a batch whose commit was refused
    assert sum(broker.committed(group, source, 4).values()) == 4000


def test_unreachable_broker_is_one_line_and_exit_3_in_bounded_time(registry, tmp_path):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    done = run_mlops("stream", "flights@production", "--brokers", f"127.0.0.1:{port}", "--input-topic", "in",
                     "--output-topic", "out", "--timeout-s", "2", registry=registry, timeout=60)  # fmt: skip
    elapsed = time.monotonic() - started
    assert done.returncode == 3, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no Kafka broker answered"), done.stderr
    assert elapsed < 30


def test_missing_topic_is_exit_3(broker, registry):
    source, _, _ = _topics(broker, partitions=1)
    result = Cli(registry)("stream", "flights@production", "--brokers", broker.address, "--input-topic", source,
                           "--output-topic", f"absent-{uuid.uuid4().hex}", "--timeout-s", "10")  # fmt: skip
    assert result.exit_code == 3, result.stderr
    assert "create the topics first" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_broker_lost_mid_stream_is_exit_3_in_bounded_time(registry, rows, tmp_path):
    """The broker dies under a running stream (its own broker here): a line on stderr, then exit 3 once it has been
    gone for --timeout-s, never a silent wait."""
    _, records = rows
    own = Broker(tmp_path)
    try:
        source, out, _ = _topics(own, partitions=1)
        own.produce(source, _encode(records[:10]))
        with StreamProcess(registry, "flights@production", own, "--input-topic", source, "--output-topic", out,
                           "--timeout-s", "2", tmp=tmp_path) as stream:  # fmt: skip
            stream.wait_started()
            _wait(lambda: len(own.read(out, quiet_s=0.2, timeout=5)) >= 10, 60, "the answers")
            own.stop()
            started = time.monotonic()
            assert stream.wait(60) == 3, stream.log.read_text()
            assert time.monotonic() - started < 30
        last = stream.log.read_text().strip().splitlines()[-1]
        assert last.startswith("error: lost the Kafka broker at"), stream.log.read_text()
    finally:
        own.stop()
