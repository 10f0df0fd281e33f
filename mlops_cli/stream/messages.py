"""Kafka messages to rows, and rows' answers to output and dead-letter messages. No Kafka calls here.

An input message is one JSON object: a row of features, optionally its id (`--key-column`). A message that is not
a JSON object, or whose model columns hold lists or objects, is undecodable; a row that breaks the input contract
is invalid (score-batch's reasons; a value of a type its feature never takes, found per row before the model call,
so that the rest of the batch is scored in one call). Both go to the dead-letter topic with the original bytes and the reason, or,
without a dead-letter topic, to the output topic with a null prediction and the reason, so that every input message
has exactly one answer. Each answer names the input topic, partition and offset: downstream jobs deduplicate on
those three (delivery is at least once).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from mlops_cli.errors import MlopsError

if TYPE_CHECKING:
    from mlops_cli.online.routing import Routed, Router

# Dead-letter headers: the reason, where the message came from, which model turned it down, and, on a dead letter
# cut to TRUNCATED_BYTES because the broker refused it whole, the original value's length.
REASON, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, MODEL, TRUNCATED = (
    "mlops.reason",
    "mlops.topic",
    "mlops.partition",
    "mlops.offset",
    "mlops.model",
    "mlops.truncated",
)
TRUNCATED_BYTES = 1024


class Incoming(NamedTuple):
    """What the loop needs of a consumed message (confluent-kafka's Message, or a test's). A tuple: thousands a
    second are made."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    timestamp_ms: int | None = None


class Outgoing(NamedTuple):
    """A message to produce (a tuple, as `Incoming`: one per input message)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None
    dead: bool = False  # a dead-letter message (or, without a dead-letter topic, an answer without a prediction)


@dataclass
class Answered:
    """A batch's messages to produce, in input order, and what the model call said (for metrics and the log)."""

    out: list[Outgoing] = field(default_factory=list)
    routed: Routed | None = None
    values: dict[str, list[Any]] | None = None
    ids: list[Any] | None = None
    undecodable: int = 0
    score_seconds: float = 0.0  # the model call alone (the router's), for the prediction-duration metric


class Codec:
    """Turns a batch of messages into answers with `router`; `key_column` names the row's id, if any."""

    def __init__(
        self,
        router: Router,
        output_topic: str,
        dead_letter_topic: str | None,
        key_column: str | None,
    ) -> None:
        self.router = router
        self.output_topic = output_topic
        self.dead_letter_topic = dead_letter_topic
        self.key_column = key_column

    def answer(self, batch: Sequence[Incoming]) -> Answered:
        from mlops_cli.serve.protocols import not_scalar

        names = self.router.columns()
        decoded = [_decode(message.value) for message in batch]
        problems: dict[int, str] = {i: row for i, row in enumerate(decoded) if type(row) is str}
        good = [i for i, row in enumerate(decoded) if type(row) is dict]
        rows: list[dict[str, Any]] = [decoded[i] for i in good]  # type: ignore[misc]
        values = {name: [row.get(name) for row in rows] for name in names}
        # Per row, before the model call: a list or an object where the model reads a value (undecodable), or a
        # value of a type the feature can never take (a number for a category: score-batch's reason). Either would
        # make the whole batch's call fail; turned down alone, the other rows are still scored in one call.
        refused = {
            j: f"undecodable: column {name!r} holds a list or an object" for j, name in not_scalar(values).items()
        }
        for j, reason in self.router.mistyped(values).items():
            refused.setdefault(j, reason)  # a list where a category goes is undecodable first
        if refused:
            problems.update({good[j]: reason for j, reason in refused.items()})
            good = [i for j, i in enumerate(good) if j not in refused]
            rows = [row for j, row in enumerate(rows) if j not in refused]
            values = {name: [row.get(name) for row in rows] for name in names}
        answers: dict[int, Outgoing] = {i: self._dead(batch[i], reason) for i, reason in problems.items()}
        result = Answered(undecodable=len(problems))
        if rows:
            ids = [row.get(self.key_column) for row in rows] if self.key_column else None
            started = time.perf_counter()
            try:
                routed = self.router.score(values, len(rows))
            except MlopsError as exc:
                # The last resort, for what no row-level check foresees: a split key holding numbers in some
                # messages and text in others (its hash needs one type), a value the model itself refuses. Each
                # message alone, so that only the ones at fault are turned down.
                if len(batch) > 1:
                    return self._one_by_one(batch)
                return Answered([self._dead(batch[0], exc.one_line())], undecodable=1)
            result.score_seconds = time.perf_counter() - started
            result.routed, result.values, result.ids = routed, values, ids
            self._answers(batch, good, ids, routed, answers)
        result.out = [answers[i] for i in range(len(batch))]
        return result

    def _one_by_one(self, batch: Sequence[Incoming]) -> Answered:
        result = Answered()
        for message in batch:
            one = self.answer([message])
            result.out += one.out
            result.undecodable += one.undecodable
        return result

    def _answers(
        self,
        batch: Sequence[Incoming],
        good: list[int],
        ids: list[Any] | None,
        routed: Routed,
        answers: dict[int, Outgoing],
    ) -> None:
        """serve's answer rows (`answer_rows`: the same columns), plus the message's key, the name of the model
        that answered the row and where the message came from."""
        from mlops_cli.serve.protocols import answer_rows, dumps

        models = {part.route: part.current.model.spec.name or "" for part in routed.parts}
        output, dead_letter = self.output_topic, self.dead_letter_topic
        for j, answer in enumerate(answer_rows(routed, ids if ids is not None else [None] * routed.n)):
            message = batch[good[j]]
            reason = routed.reasons[j]
            name = models[routed.route[j]]
            if reason is not None and dead_letter is not None:
                answers[good[j]] = self._dead(message, reason, f"{name}:{routed.version[j]}")
                continue
            key = message.key
            answer["key"] = None if key is None else key.decode("utf-8", "replace")
            answer["model_name"] = name
            answer["topic"], answer["partition"], answer["offset"] = message.topic, message.partition, message.offset
            if key is None and answer["id"] is not None:
                key = str(answer["id"]).encode()
            answers[good[j]] = Outgoing(output, key, dumps(answer), dead=reason is not None)

    def _dead(self, message: Incoming, reason: str, model: str = "") -> Outgoing:
        """A dead letter; `model` (NAME:VERSION) is the model that turned the row down, none for a message turned
        down before any model saw it."""
        if self.dead_letter_topic is None:
            from mlops_cli.serve.protocols import dumps

            body: dict[str, Any] = {"id": None, "key": _text(message.key), "prediction": None, "invalid_reason": reason}
            body.update(topic=message.topic, partition=message.partition, offset=message.offset)
            return Outgoing(self.output_topic, message.key, dumps(body), dead=True)
        headers = list(message.headers or []) + [
            (REASON, reason.encode()),
            (SOURCE_TOPIC, message.topic.encode()),
            (SOURCE_PARTITION, str(message.partition).encode()),
            (SOURCE_OFFSET, str(message.offset).encode()),
            (MODEL, (model or self.router.champion.ref.name).encode()),
        ]
        return Outgoing(self.dead_letter_topic, message.key, message.value or b"", headers, dead=True)

    def instead(self, message: Incoming, item: Outgoing, error: str) -> Outgoing | None:
        """What to send in place of `item`, which the broker refused for itself: for an answer, a dead letter
        saying so; for a dead letter, its cut; None when nothing smaller can be sent."""
        if not item.dead:
            return self._dead(message, f"the broker refused the answer: {error}")
        return self.cut(item)

    def cut(self, item: Outgoing) -> Outgoing | None:
        """A dead letter the broker refused (too large), cut to its first TRUNCATED_BYTES with the original length
        in a header; None when cutting cannot help (an answer, or a value already that short)."""
        if not item.dead or item.topic != self.dead_letter_topic or len(item.value) <= TRUNCATED_BYTES:
            return None
        headers = [*(item.headers or []), (TRUNCATED, str(len(item.value)).encode())]
        return item._replace(value=item.value[:TRUNCATED_BYTES], headers=headers)


def _decode(value: bytes | None) -> dict[str, Any] | str:
    """A message's row, or why it has none. Reasons never quote the message's values."""
    if value is None:
        return "undecodable: the message has no value"
    try:
        row = json.loads(value)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return "undecodable: not JSON"
    if type(row) is not dict:
        return "undecodable: not a JSON object"
    return row


def _text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", "replace")
