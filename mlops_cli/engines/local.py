"""The local engine: every partition in this process, in order."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def map_partitions(fn: Callable[[T], Any], items: Iterable[T]) -> Iterator[Any]:
    """fn(item) for each item, in order."""
    for item in items:
        yield fn(item)
