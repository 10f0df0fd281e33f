"""Kafka messages to rows, and rows' answers to output and dead-letter messages. No Kafka calls here.

An input message is one JSON object: a row of features, optionally its id (`--key-column`). A message that is not
a JSON object, or whose model columns hold lists or objects, is undecodable; a row that breaks the input contract
is invalid (score-batch's reasons). Both go to the dead-letter topic with the original bytes and the reason, or,
without a dead-letter topic, to the output topic with a null prediction and the reason, so that every input message
has exactly one answer. Each answer names the input topic, partition and offset: downstream jobs deduplicate on
those three (delivery is at least once).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlops_cli.errors import MlopsError
from mlops_cli.runtime.contract import SCALARS

if TYPE_CHECKING:
    from mlops_cli.online.routing import Routed, Router

# Dead-letter headers: the reason, where the message came from, and which model turned it down.
REASON, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, MODEL = (
    "mlops.reason",
    "mlops.topic",
    "mlops.partition",
    "mlops.offset",
    "mlops.model",
)


@dataclass(frozen=True)
class Incoming:
    """What the loop needs of a consumed message (confluent-kafka's Message, or a test's)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Outgoing:
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
        names = self.router.columns()
        rows: list[dict[str, Any]] = []
        good: list[int] = []
        problems: dict[int, str] = {}
        for i, message in enumerate(batch):
            row, problem = _decode(message.value, names)
            if problem is not None:
                problems[i] = problem
            else:
                rows.append(row)  # type: ignore[arg-type]
                good.append(i)
        answers: dict[int, Outgoing] = {i: self._dead(batch[i], reason) for i, reason in problems.items()}
        result = Answered(undecodable=len(problems))
        if rows:
            values = {name: [row.get(name) for row in rows] for name in names}
            ids = [row.get(self.key_column) for row in rows] if self.key_column else None
            try:
                routed = self.router.score(values, len(rows))
            except MlopsError as exc:
                # A batch-wide problem (a column holding numbers in some messages and text in others): each message
                # alone, so that only the ones at fault are turned down.
                if len(batch) > 1:
                    return self._one_by_one(batch)
                return Answered([self._dead(batch[0], exc.one_line())], undecodable=1)
            result.routed, result.values, result.ids = routed, values, ids
            self._answers(batch, good, rows, routed, answers)
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
        rows: list[dict[str, Any]],
        routed: Routed,
        answers: dict[int, Outgoing],
    ) -> None:
        from mlops_cli.serve.protocols import answer_rows, dumps

        name = self.router.champion.ref.name
        for j, answer in enumerate(answer_rows(routed, None)):
            message = batch[good[j]]
            reason = routed.reasons[j]
            if reason is not None and self.dead_letter_topic is not None:
                answers[good[j]] = self._dead(message, reason, routed.version[j])
                continue
            item_id = rows[j].get(self.key_column) if self.key_column else None
            body = {"id": item_id, "key": _text(message.key), **answer, "model_name": name}
            body.update(topic=message.topic, partition=message.partition, offset=message.offset)
            key = message.key if message.key is not None else (None if item_id is None else str(item_id).encode())
            answers[good[j]] = Outgoing(self.output_topic, key, dumps(body), dead=reason is not None)

    def _dead(self, message: Incoming, reason: str, version: str = "") -> Outgoing:
        if self.dead_letter_topic is None:
            from mlops_cli.serve.protocols import dumps

            body: dict[str, Any] = {"id": None, "key": _text(message.key), "prediction": None, "invalid_reason": reason}
            body.update(topic=message.topic, partition=message.partition, offset=message.offset)
            return Outgoing(self.output_topic, message.key, dumps(body), dead=True)
        model = self.router.champion.ref.name + (f":{version}" if version else "")
        headers = list(message.headers or []) + [
            (REASON, reason.encode()),
            (SOURCE_TOPIC, message.topic.encode()),
            (SOURCE_PARTITION, str(message.partition).encode()),
            (SOURCE_OFFSET, str(message.offset).encode()),
            (MODEL, model.encode()),
        ]
        return Outgoing(self.dead_letter_topic, message.key, message.value or b"", headers, dead=True)


def _decode(value: bytes | None, names: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    """A message's row, or why it has none. Reasons never quote the message's values."""
    if value is None:
        return None, "undecodable: the message has no value"
    try:
        row = json.loads(value)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None, "undecodable: not JSON"
    if not isinstance(row, dict):
        return None, "undecodable: not a JSON object"
    for name in names:
        if not isinstance(row.get(name), SCALARS):
            return None, f"undecodable: column {name!r} holds a list or an object"
    return row, None


def _text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8", "replace")
