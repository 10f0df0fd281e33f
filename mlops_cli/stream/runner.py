"""`mlops stream`: consume feature messages from a Kafka topic, score them, produce the answers, commit.

Delivery is at least once. One batch at a time, in the main thread: consume up to `max_batch_rows` messages, score
them through the one runtime (champion and challenger, as `mlops serve` routes them), produce one output or
dead-letter message per input message, flush the producer and check every delivery report, and only then commit the
batch's offsets. That commit is asynchronous: the loop goes on to the next batch, and the coordinator's answer comes
back inside a later `consume` (a failed one is counted: its messages are answered again). One unanswered for
--timeout-s is a silent coordinator: Unreachable, exit 3. At the exit, what was answered is committed synchronously
(waited for at most --timeout-s). A crash or kill -9 at any point loses nothing: what was not committed is consumed
again after a restart, and answered again (a duplicate, never a gap). Downstream jobs deduplicate on the input topic,
partition and offset that every answer carries. A message whose answer the broker refuses for itself (too large)
never blocks its partition: its dead letter is sent again cut, or, if even that is refused, it is counted as
unproducible and committed past.

Rebalances: librdkafka calls the assignment callbacks only inside `consume`, and every batch consumed before that
call has its commit sent by then, ahead of the rebalance's own requests to the same coordinator, so a revoked
partition has nothing answered and not sent for commit. A commit refused because a rebalance took the partition away leaves its
messages to the new owner (answered twice, not lost).

Signals are the CLI's (`mlops_cli/cli/_common.py`): SIGTERM or SIGINT raise `Interrupted` in the main thread, but
never inside a batch's produce-flush-commit (a commit window): the batch finishes, everything answered is committed,
and the stream then leaves the group (`close`) and returns its counts; the CLI exits 0. The alias is followed as
`mlops serve` follows it (`mlops_cli.online.following`): a thread re-reads it (every --poll-s, and at once on
SIGHUP), and a new version is loaded, verified and warmed up there, then swapped in between two batches.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import InputError, Interrupted, MlopsError, Unreachable
from mlops_cli.interrupts import commit_window
from mlops_cli.stream.messages import Codec, Incoming, Outgoing

if TYPE_CHECKING:
    from mlops_cli.online.following import Current, Followed
    from mlops_cli.online.predlog import PredictionLog
    from mlops_cli.registry import Registry
    from mlops_cli.runtime import LoadOptions
    from mlops_cli.stream.endpoint import Endpoint, StreamMetrics

IDLE_POLL_S = 0.1  # how long one consume call waits for a first message when nothing is buffered
LAG_EVERY_S = 1.0
# librdkafka's errors about one message rather than the broker: it is refused for itself, and would be again.
PER_MESSAGE_ERRORS = (
    "MSG_SIZE_TOO_LARGE",
    "RECORD_LIST_TOO_LARGE",
    "INVALID_RECORD",
    "INVALID_MSG_SIZE",
)


@dataclass(frozen=True)
class StreamOptions:
    brokers: str
    input_topic: str
    output_topic: str
    group: str
    dead_letter_topic: str | None = None
    key_column: str | None = None
    challenger: str | None = None
    challenger_share: float = 0.1
    split_key: list[str] = field(default_factory=list)
    max_batch_rows: int = 500
    max_wait_ms: float = 0.0
    log_dir: Path | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    start_from: str = "earliest"
    max_messages: int | None = None
    idle_exit_s: float | None = None
    poll_s: float = 0.5
    timeout_s: float = 30.0  # connecting, a batch's delivery, a commit: past it the broker is unreachable
    session_timeout_ms: int = 10_000
    kafka: dict[str, str] = field(default_factory=dict)  # more librdkafka settings (security, client.id, ...)
    load: LoadOptions | None = None


@dataclass
class Counts:
    messages_in: int = 0
    messages_out: int = 0
    dead_lettered: int = 0
    unproducible: int = 0  # messages whose answer or dead letter the broker refused even cut: committed past
    batches: int = 0
    commits_failed: int = 0
    switches: list[dict[str, Any]] = field(default_factory=list)


class Stream:
    def __init__(self, registry: Registry, ref: str, options: StreamOptions) -> None:
        from mlops_cli.online.following import Followed
        from mlops_cli.online.routing import CHALLENGER, CHAMPION
        from mlops_cli.runtime import LoadOptions

        load = options.load or LoadOptions()
        self.options = options
        self.champion = Followed(registry, ref, CHAMPION, load)
        self.challenger = Followed(registry, options.challenger, CHALLENGER, load) if options.challenger else None
        self.counts = Counts()
        self.stopped_by: str | None = None
        self.port: int | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._metrics: StreamMetrics | None = None
        self._log: PredictionLog | None = None
        self._served: dict[str, Current] = {}
        self._positions: dict[tuple[str, int], int] = {}  # next offset to answer, per assigned partition
        self._lag_at = 0.0
        self._commit_stuck = False  # a commit thread still waits on the coordinator: the consumer is not closed
        self._answered: dict[tuple[str, int], int] = {}  # next offset, per partition, answered and delivered
        self._pending: dict[tuple[tuple[str, int, int], ...], float] = {}  # asynchronous commits: when sent
        self._undelivered: list[tuple[Any, Any]] = []  # delivery reports of failed messages, during a flush
        self._refreeze = False  # a new model version came in: the collector's frozen heap is out of date
        self._idle_since = 0.0  # the last message, or the last assignment (a group join is not idleness)
        self._joined = False
        self._ready = False
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by SIGHUP (re-check now) and at the end (stop waiting)
        self._force = False
        self._kafka_error: str | None = None
        self._kafka_code: int | None = None
        self._down_since: float | None = None  # librdkafka said every broker is down; cleared when one answers

    def models(self) -> list[Followed]:
        return [f for f in (self.champion, self.challenger) if f is not None]

    # --- start and stop ----------------------------------------------------------------------------------------

    def load(self) -> None:
        """Every model loaded, verified and warmed up before Kafka is touched (errors: exit 4 or 3)."""
        from mlops_cli.online.routing import check_pair
        from mlops_cli.runtime import threads

        for followed in self.models():
            followed.start()
        # One BLAS/OpenMP thread, as a server worker: a fork-join per batch over 2 busy cores stalled up to 10 times
        # longer. After the load: threadpoolctl limits only the libraries loaded by then (scikit-learn's OpenMP).
        threads.pin_single()
        if self.challenger is not None:
            check_pair(self.champion, self.challenger)
        self._freeze()

    def run(self, announce: Any = None) -> Counts:
        """Consume until --max-messages, --idle-exit-s or a signal; returns the counts (`stopped_by` says why)."""
        from mlops_cli.online.routing import Router
        from mlops_cli.stream.endpoint import Endpoint, StreamMetrics

        options = self.options
        metrics = self._metrics = StreamMetrics()
        for followed in self.models():
            followed.on_switch = self._switched
            current = followed.current
            assert current is not None, "load() first"
            metrics.served(followed, current, None)
            self._served[followed.role] = current
        router = Router(self.champion, self.challenger, options.challenger_share, options.split_key)
        self.codec = Codec(router, options.output_topic, options.dead_letter_topic, options.key_column)
        endpoint: Endpoint | None = None
        follower = threading.Thread(target=self._follow, name="mlops-follow", daemon=True)
        try:
            self._connect()
            if options.metrics_port is not None:
                endpoint = Endpoint(options.metrics_host, options.metrics_port, metrics, self._readiness)
                self.port = endpoint.port
            if options.log_dir is not None:
                self._log = self._open_log(options.log_dir)
            follower.start()
            self._consumer.subscribe(
                [options.input_topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
            )
            self._ready = True
            metrics.ready.set(1)
            if announce is not None:
                announce(self)
            self._loop()
            with commit_window():
                self._commit_answered()
        except Interrupted as stop:
            if isinstance(stop.__context__, MlopsError):
                # The signal waited for a batch that then failed (the broker lost): that failure is the outcome,
                # not a clean stop, and the batch is not committed.
                raise stop.__context__ from None
            self.stopped_by = stop.signal_name  # between batches: everything answered so far is committed
            with commit_window():
                self._commit_answered()
        finally:
            self._ready = False
            metrics.ready.set(0)
            self._stop.set()
            self._wake.set()
            self._close(endpoint)
        return self.counts

    def _connect(self) -> None:
        from confluent_kafka import KafkaException

        options = self.options
        common = {
            "bootstrap.servers": options.brokers,
            "client.id": "mlops-stream",
            "error_cb": self._on_kafka_error,
            "log_level": 2,  # librdkafka's own lines (every failed connect) would flood stderr; errors come via error_cb
            **options.kafka,
        }
        try:
            self._clients(common)
        except KafkaException as exc:  # a setting librdkafka refuses (a --kafka-option's name or value)
            raise InputError(f"Kafka client settings: {exc.args[0].str()}", "check --kafka-option") from None
        wanted = [options.input_topic, options.output_topic]
        if options.dead_letter_topic is not None:
            wanted.append(options.dead_letter_topic)
        for client in (self._consumer, self._producer):
            try:
                # All topics, not the named ones: naming a topic asks a broker that auto-creates topics to make it.
                metadata = client.list_topics(timeout=options.timeout_s)
            except KafkaException as exc:
                raise Unreachable(
                    f"no Kafka broker answered at {options.brokers} within {options.timeout_s:g} s "
                    f"({self._kafka_error or exc.args[0].str()})",
                    "check --brokers and that the broker is running",
                ) from None
        missing = [t for t in wanted if t not in metadata.topics or metadata.topics[t].error is not None]
        if missing:
            raise InputError(
                f"no topic {', '.join(repr(t) for t in missing)} on {options.brokers}", "create the topics first"
            )

    def _clients(self, common: dict[str, Any]) -> None:
        """The consumer (manual commits) and the idempotent producer."""
        from confluent_kafka import Consumer, Producer

        options = self.options
        self._consumer = Consumer(
            {
                **common,
                "group.id": options.group,
                "enable.auto.commit": False,  # offsets are committed by the loop, after the answers are delivered
                "enable.auto.offset.store": False,
                "auto.offset.reset": options.start_from,
                "session.timeout.ms": options.session_timeout_ms,
                "heartbeat.interval.ms": max(100, options.session_timeout_ms // 3),
                "on_commit": self._on_commit,
            }
        )
        self._producer = Producer(
            {
                **common,
                "enable.idempotence": True,  # broker-side retries neither reorder nor duplicate a batch's answers
                "acks": "all",
                "linger.ms": 5,
                # Delivery reports of failed messages only, to one callback: a Python call (and a callback object)
                # per delivered answer cost 2% of the throughput. Every failure still reports.
                "delivery.report.only.error": True,
                "on_delivery": self._on_undelivered,
                "message.timeout.ms": int(options.timeout_s * 1000),
            }
        )

    def _open_log(self, directory: Path) -> PredictionLog:
        from mlops_cli.online.predlog import PredictionLog

        metrics = self._metrics
        assert metrics is not None

        def counted(result: str, rows: int) -> None:
            metrics.log_rows.labels(result).inc(rows)

        return PredictionLog(directory, 0, on_rows=counted)

    def _close(self, endpoint: Endpoint | None) -> None:
        # Leaves the group at once: its partitions go to the other members now. Not while a commit is stuck (the
        # coordinator silent): closing would wait on it too (the session timeout frees the partitions).
        if self._consumer is not None and not self._commit_stuck:
            self._consumer.close()
        if self._log is not None:
            self._log.close()
        if endpoint is not None:
            endpoint.close()

    # --- the loop ----------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        options = self.options
        wait_s = options.max_wait_ms / 1000
        self._idle_since = time.monotonic()
        while True:
            n = options.max_batch_rows
            if options.max_messages is not None:
                n = min(n, options.max_messages - self.counts.messages_in)
                if n <= 0:
                    self.stopped_by = "max-messages"
                    return
            batch = self._consume(n, wait_s)
            if self._refreeze:  # between two batches, once per switch
                self._refreeze = False
                self._freeze()
            now = time.monotonic()
            if batch:
                self._idle_since = now
                self._process(batch, time.perf_counter())
            elif options.idle_exit_s is not None and now - self._idle_since >= self._idle_limit(options.idle_exit_s):
                self.stopped_by = "idle"
                return
            self._check_commits(now)
            if now - self._lag_at >= LAG_EVERY_S:
                self._lag_at = now
                self._update_lag()
                self._check_broker(now)

    def _idle_limit(self, idle_exit_s: float) -> float:
        """Idle means no message since the last assignment. Before the first one (a group join takes a while), a
        member that never gets a partition (more members than partitions) still stops, after --timeout-s."""
        return idle_exit_s if self._joined else max(idle_exit_s, self.options.timeout_s)

    def _consume(self, n: int, wait_s: float) -> list[Any]:
        """Up to n messages: what is buffered now (or, with --max-wait-ms, what arrives within it), else the first
        message to arrive within IDLE_POLL_S."""
        from confluent_kafka import KafkaError

        consumer = self._consumer
        messages = consumer.consume(n, wait_s) or consumer.consume(1, IDLE_POLL_S)
        out = []
        for message in messages:
            error = message.error()
            if error is None:
                out.append(message)
            elif error.fatal():
                raise Unreachable(f"the Kafka consumer failed: {error.str()}", "restart mlops stream")
            elif error.code() != KafkaError._PARTITION_EOF:
                self._say(f"kafka: {error.str()}")
        return out

    def _process(self, batch: list[Any], started: float) -> None:
        metrics = self._metrics
        assert metrics is not None
        incoming = [Incoming(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers()) for m in batch]
        with commit_window():  # a signal waits until this batch is answered and committed
            answered = self.codec.answer(incoming)
            lost = self._produce(incoming, answered.out)
            self._commit(incoming)
            dead = sum(1 for i, o in enumerate(answered.out) if o.dead and i not in lost)
            out = len(answered.out) - len(lost) - dead
            self.counts.messages_in += len(batch)
            self.counts.messages_out += out
            self.counts.dead_lettered += dead
            self.counts.unproducible += len(lost)
            self.counts.batches += 1
        metrics.messages.labels("in").inc(len(batch))
        metrics.messages.labels("out").inc(out)
        metrics.messages.labels("dead_letter").inc(dead)
        metrics.messages.labels("unproducible").inc(len(lost))
        if answered.routed is not None:
            metrics.answered(answered.routed, answered.score_seconds)
            if self._log is not None and answered.values is not None:
                self._submit(answered, incoming[0], started)
        metrics.batch_seconds.observe(time.perf_counter() - started)

    def _produce(self, incoming: list[Incoming], out: list[Outgoing]) -> set[int]:
        """Every answer acknowledged by the broker, or Unreachable (and nothing of the batch committed).

        A message refused for itself (too large for the broker's or the producer's `message.max.bytes`, invalid)
        must not block its partition: a restart would meet it again, for ever. A broker refuses a whole record
        batch for one message, so what was refused is sent again one message at a time to know which. A refused
        answer is replaced in `out` by a dead letter saying so, a refused dead letter by its cut (`Codec.instead`);
        what still cannot be produced is said on stderr and returned (positions in `out`), and the batch is
        committed past it."""
        refused = self._alone(out, self._send(dict(enumerate(out))))
        lost: set[int] = set()
        for _ in range(2):  # a refused answer becomes a dead letter; a refused dead letter, its cut
            instead: dict[int, Outgoing] = {}
            for i, error in refused.items():
                item = self.codec.instead(incoming[i], out[i], error.str())
                if item is None:
                    lost.add(i)
                else:
                    instead[i] = out[i] = item
            refused = self._alone(out, self._send(instead)) if instead else {}
        lost |= refused.keys()
        for i in sorted(lost):
            message = incoming[i]
            self._say(
                f"{message.topic}/{message.partition}/{message.offset}: the broker refused its "
                f"{'dead letter' if out[i].dead else 'answer'}; committed without one"
            )
        return lost

    def _alone(self, out: list[Outgoing], refused: dict[int, Any]) -> dict[int, Any]:
        """Of the refused messages, those refused again when sent one at a time."""
        return {i: error for i in sorted(refused) if (error := self._send({i: out[i]}).get(i)) is not None}

    def _send(self, items: dict[int, Outgoing]) -> dict[int, Any]:
        """Produce and flush `items`; returns the ones refused for themselves, with the error. Anything else the
        broker or the producer says (a timeout, a lost broker) is Unreachable."""
        from confluent_kafka import KafkaError, KafkaException

        per_message = {getattr(KafkaError, name) for name in PER_MESSAGE_ERRORS}
        producer = self._producer
        refused: dict[int, Any] = {}
        failed: list[Any] = []
        self._undelivered.clear()
        for i, item in items.items():
            while True:
                try:
                    producer.produce(item.topic, item.value, item.key, headers=item.headers)
                    break
                except BufferError:  # the producer's queue is full: let deliveries drain it
                    producer.poll(0.05)
                except KafkaException as exc:  # refused before it was queued: librdkafka's own checks
                    if exc.args[0].code() not in per_message:
                        failed.append(exc.args[0])
                    else:
                        refused[i] = exc.args[0]
                    break
        left = producer.flush(self.options.timeout_s)
        if self._undelivered:
            refused.update(self._which(items, per_message, failed))
        if left or failed:
            why = failed[0].str() if failed else f"{left} messages not acknowledged in {self.options.timeout_s:g} s"
            raise Unreachable(
                f"the broker did not take the answers ({why}); their input offsets were not committed",
                "check the broker; a restart answers the uncommitted messages again",
            )
        return refused

    def _on_undelivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._undelivered.append((error, message))

    def _which(self, items: dict[int, Outgoing], per_message: set[int], failed: list[Any]) -> dict[int, Any]:
        """The items the failed delivery reports are about (a report names no index: found by content). Other
        failures go to `failed`. Where identical messages are not all refused, it cannot say which were: all of
        them are taken as refused, and `_alone` sends each again by itself to find out."""
        where: dict[tuple[str, bytes | None, bytes], list[int]] = {}
        for i, item in items.items():
            where.setdefault((item.topic, item.key, item.value), []).append(i)
        refused: dict[int, Any] = {}
        for error, message in self._undelivered:
            at = where.get((message.topic(), message.key(), message.value()))
            if error.code() in per_message and at:
                refused.update(dict.fromkeys(at, error))
            else:
                failed.append(error)
        return refused

    def _commit(self, incoming: list[Incoming]) -> None:
        """Send the batch's offsets (its answers are delivered), asynchronously: the coordinator's answer comes
        back to `_on_commit` inside a later `consume`, while the loop goes on (a synchronous commit's round trip was
        4% of the throughput). `_check_commits` bounds the wait; the exit commits synchronously."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets: dict[tuple[str, int], int] = {}
        for message in incoming:
            offsets[(message.topic, message.partition)] = message.offset + 1
        for key, offset in offsets.items():
            self._answered[key] = offset
            if key in self._positions:  # still assigned: the lag counts from here
                self._positions[key] = offset
        sent = _commit_key(offsets)
        self._pending[sent] = time.monotonic()
        try:
            self._consumer.commit(
                offsets=[TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()],
                asynchronous=True,
            )
        except KafkaException as exc:  # refused before it was sent (the consumer is not in a group at the moment)
            del self._pending[sent]
            self._commit_failed(exc.args[0].str())

    def _on_commit(self, error: Any, partitions: list[Any]) -> None:
        """librdkafka's answer to an asynchronous commit (in `consume`, or in `close`)."""
        if self._pending.pop(_commit_key({(tp.topic, tp.partition): tp.offset for tp in partitions}), None) is None:
            return  # not one of the loop's commits
        errors = [e for e in (error, *(tp.error for tp in partitions)) if e is not None]
        if errors:
            self._commit_failed(errors[0].str())
        else:
            self._commit_booked()

    def _commit_failed(self, why: str) -> None:
        # A rebalance gave a partition to another member (its new owner answers these messages again), or the
        # coordinator is moving (the next commit carries the same or higher offsets): a duplicate, not a loss.
        metrics = self._metrics
        assert metrics is not None
        self.counts.commits_failed += 1
        metrics.commits.labels("failed").inc()
        self._say(f"commit failed, these messages will be answered again: {why}")

    def _commit_booked(self) -> None:
        metrics = self._metrics
        assert metrics is not None
        metrics.commits.labels("ok").inc()

    def _check_commits(self, now: float) -> None:
        """A commit unanswered for --timeout-s is a silent coordinator: Unreachable (exit 3), nothing more sent."""
        if self._pending and now - min(self._pending.values()) > self.options.timeout_s:
            self._commit_stuck = True
            raise self._not_committed()

    def _commit_answered(self) -> None:
        """At the exit: everything answered on the partitions still assigned, committed synchronously (an
        asynchronous commit still in flight, or one refused, is covered by it)."""
        from confluent_kafka import KafkaException, TopicPartition

        if not self._answered:
            return
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in self._answered.items()]
        try:
            self._commit_within(offsets)
        except KafkaException as exc:
            self._commit_failed(exc.args[0].str())
            return
        self._pending.clear()
        self._answered.clear()
        self._commit_booked()

    def _commit_within(self, offsets: list[Any]) -> None:
        """A synchronous commit, waited for at most --timeout-s. confluent-kafka's `commit` takes no timeout (nor
        does librdkafka's): it waits for the coordinator's answer, for ever if none comes. So it runs in a thread;
        past the deadline, Unreachable (the thread is left waiting; nothing more is committed)."""
        outcome: list[BaseException | None] = []
        done = threading.Event()

        def commit() -> None:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 (handed to the main thread, which raises it)
                outcome.append(exc)
            finally:
                done.set()

        threading.Thread(target=commit, name="mlops-commit", daemon=True).start()
        if not done.wait(self.options.timeout_s):
            self._commit_stuck = True
            raise self._not_committed()
        error = outcome[0]
        if error is not None:
            raise error

    def _not_committed(self) -> Unreachable:
        return Unreachable(
            f"the group coordinator did not answer the offset commit within {self.options.timeout_s:g} s; "
            "these offsets may not be committed",
            "check the broker; a restart answers the uncommitted messages again",
        )

    def _submit(self, answered: Any, first: Incoming, started: float) -> None:
        from mlops_cli.online.predlog import Entry

        routed = answered.routed
        spec = routed.parts[0].current.model.spec if routed.parts else self.champion.current.model.spec  # type: ignore[union-attr]
        latency_ms = (time.perf_counter() - started) * 1000
        request_id = f"{first.topic}/{first.partition}/{first.offset}"
        assert self._log is not None
        self._log.submit(Entry(answered.values, routed, spec, answered.ids, request_id, time.time(), latency_ms))

    # --- partitions, lag -----------------------------------------------------------------------------------------

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import KafkaException

        metrics = self._metrics
        assert metrics is not None
        try:  # where this member starts: the lag counts from there until its own first commit
            partitions = consumer.committed(partitions, timeout=self.options.timeout_s)
        except KafkaException as exc:  # not known yet: the lag counts from the low watermark meanwhile
            self._say(f"kafka: the group's committed offsets are unknown ({exc.args[0].str()})")
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._positions[key] = max(self._positions.get(key, -1), tp.offset)  # no offset: negative
        self._idle_since = time.monotonic()
        self._joined = True
        metrics.assigned.set(len(self._positions))

    def _revoked(self, consumer: Any, partitions: list[Any]) -> None:
        # Nothing to commit here: this runs inside `consume`, and every batch consumed before it has its commit
        # sent, before this rebalance's JoinGroup, to the same coordinator. One the rebalance refuses is counted.
        metrics = self._metrics
        assert metrics is not None
        for tp in partitions:
            self._answered.pop((tp.topic, tp.partition), None)
            if self._positions.pop((tp.topic, tp.partition), None) is not None:
                try:
                    metrics.lag.remove(tp.topic, str(tp.partition))
                except KeyError:
                    pass
        metrics.assigned.set(len(self._positions))

    def _update_lag(self) -> None:
        metrics = self._metrics
        assert metrics is not None
        for (topic, partition), position in list(self._positions.items()):
            from confluent_kafka import TopicPartition

            try:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except Exception:  # noqa: BLE001 (no fetch yet for this partition: its lag is not known yet)
                continue
            if high is None or high < 0:
                continue
            start = position if position >= 0 else low
            metrics.lag.labels(topic, str(partition)).set(max(0, high - start))

    # --- alias following, readiness, messages ----------------------------------------------------------------

    def recheck(self) -> None:
        """SIGHUP: re-read the aliases now, and retry a version that failed (as `mlops serve` does)."""
        self._force = True
        self._wake.set()

    def _follow(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.options.poll_s)
            self._wake.clear()
            force, self._force = self._force, False
            for followed in self.models():
                if followed.follows:
                    followed.check(force=force)

    def _switched(self, followed: Followed, result: str, new: Current | None, error: str | None) -> None:
        metrics = self._metrics
        assert metrics is not None
        metrics.switches.labels(followed.role, result).inc()
        if new is not None:
            old = self._served.get(followed.role)
            metrics.served(followed, new, old)
            self._served[followed.role] = new
            self.counts.switches.append(
                {"role": followed.role, "from": old.version if old else None, "to": new.version, "at": time.time()}
            )
            self._say(f"{followed.role} {followed.ref}: now version {new.version}")
            self._refreeze = True
        if error is not None:
            self._say(f"{followed.role} {followed.ref}: switch failed, still scoring with the old version: {error}")

    def _readiness(self) -> tuple[bool, dict[str, Any]]:
        details = {
            "models": [f.details() for f in self.models()],
            "partitions": sorted(f"{t}/{p}" for t, p in self._positions),
        }
        return self._ready, details

    def _on_kafka_error(self, error: Any) -> None:
        from confluent_kafka import KafkaError

        self._kafka_error = error.str()
        if error.code() == KafkaError._ALL_BROKERS_DOWN and self._down_since is None:
            self._down_since = time.monotonic()
        if self._ready and error.code() != self._kafka_code:  # one line per kind of error, not one per retry
            self._say(f"kafka: {error.str()}")
        self._kafka_code = error.code()

    def _check_broker(self, now: float) -> None:
        """While every broker is down: back (say so), or down for --timeout-s (exit 3; a restart loses nothing)."""
        from confluent_kafka import KafkaException

        down_since = self._down_since
        if down_since is None:
            return
        try:
            self._consumer.list_topics(timeout=1.0)
        except KafkaException:
            if now - down_since >= self.options.timeout_s:
                raise Unreachable(
                    f"lost the Kafka broker at {self.options.brokers} for {self.options.timeout_s:g} s "
                    f"({self._kafka_error})",
                    "check the broker; a restart answers every uncommitted message",
                ) from None
            return
        self._down_since, self._kafka_code = None, None
        self._say("kafka: the broker answers again")

    @staticmethod
    def _freeze() -> None:
        """The loaded models and libraries are the heap for good: out of the collector's sight, a full collection
        no longer walks them (one took 90 ms, 4% of a 50,000-message run). Again after a switch: the old version's
        cycles are collected, the new one frozen. As `mlops serve` does before forking."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    @staticmethod
    def _say(line: str) -> None:
        print(f"mlops stream: {line}", file=sys.stderr, flush=True)


def _commit_key(offsets: dict[tuple[str, int], int]) -> tuple[tuple[str, int, int], ...]:
    """A commit's identity, the same from the offsets sent and from librdkafka's answer."""
    return tuple(sorted((topic, partition, offset) for (topic, partition), offset in offsets.items()))
