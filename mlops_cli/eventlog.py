"""A model's event log: append-only JSON lines, each chained to the line before it by sha256.

Every event carries `prev`, the sha256 of the previous line's bytes (its newline excluded; null on the first line),
so an edited, inserted or deleted line breaks the chain at the line after it. Logs written before the chain existed
have no `prev`: an unchained prefix is legacy, accepted (and reported by `mlops verify`); an unchained or mis-chained
event after the first chained one is damage. A line that is no JSON object is a torn write (a crash mid-append): it
is skipped, and the line after it, if any, chains to it like any other.

The chain proves that nothing was edited in place; whoever can write the folder can still rewrite the whole log and
recompute it. `head`, the hash of the last line, kept somewhere else (a CI log), tells that apart.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TAIL_CHUNK = 1 << 16


@dataclass
class EventLog:
    """A parsed log: its events, and what is wrong with its chain."""

    events: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # damage: the chain is broken
    warnings: list[str] = field(default_factory=list)  # torn lines
    legacy: int = 0  # events before the first chained one (written by an mlops without the chain)
    chained: bool = False  # whether the chain has begun
    head: str | None = None  # sha256 of the last line: the `prev` of the next event


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def read(path: Path) -> EventLog:
    """Parse the log at `path` (an absent file is an empty log). Never raises on damage: it is listed instead."""
    return parse(path.read_bytes()) if path.exists() else EventLog()


def parse(data: bytes) -> EventLog:
    log = EventLog()
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the newline that ends the last line; anything else is a last line torn mid-append
    previous: str | None = None
    for number, line in enumerate(lines, start=1):
        event = _event(line)
        if event is None:
            where = "the last line" if number == len(lines) else f"line {number}"
            log.warnings.append(f"{where} is no event (a write torn by a crash); skipped")
        elif "prev" in event:
            log.chained = True
            if event["prev"] != previous:
                log.problems.append(
                    f"line {number} does not chain to line {number - 1}: line {number - 1} was edited, or lines "
                    "were inserted or deleted between them"
                    if number > 1
                    else "line 1 does not start the chain: the lines before it were deleted"
                )
            log.events.append(event)
        elif log.chained:
            log.problems.append(f"line {number} is an event without `prev` after the chain began (added by hand?)")
            log.events.append(event)
        else:
            log.legacy += 1
            log.events.append(event)
        previous = line_hash(line)
    log.head = previous
    return log


def _event(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one event, chained to the current last line. The caller holds the model's lock."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        last, torn = _last_line(fd, size)
        record = {**record, "prev": line_hash(last) if size else None}
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        if torn:
            line = b"\n" + line  # a crash tore the last line: end it, so this event stands on a line of its own
        while line:
            line = line[os.write(fd, line) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_line(fd: int, size: int) -> tuple[bytes, bool]:
    """The file's last line (without its newline), and whether it lacks that newline (torn). Reads from the end."""
    if size == 0:
        return b"", False
    torn = os.pread(fd, 1, size - 1) != b"\n"
    end = size if torn else size - 1
    position, tail = end, b""
    while position > 0:
        start = max(0, position - TAIL_CHUNK)
        tail = os.pread(fd, position - start, start) + tail
        position = start
        cut = tail.rfind(b"\n")
        if cut >= 0:
            return tail[cut + 1 :], torn
    return tail, torn
