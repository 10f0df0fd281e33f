"""Model names, aliases and references: `NAME`, `NAME:VERSION`, `NAME@ALIAS`.

Names, version labels and aliases share one rule: lowercase letters, digits, `.`, `_`, `-`, 1-64 characters,
and not made of dots alone (so `.` and `..` can never become path components).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlops_cli.errors import InvalidName

_NAME = re.compile(r"[a-z0-9._-]{1,64}")


def validate_name(value: str, what: str = "name") -> str:
    """Return `value` if it is a valid name, alias or version label; raise InvalidName otherwise."""
    if not _NAME.fullmatch(value) or set(value) == {"."}:
        raise InvalidName(
            f"invalid {what} {value!r}",
            "use 1-64 characters: lowercase letters, digits, '.', '_' or '-'",
        )
    return value


LATEST = "latest"  # NAME:latest is the most recently registered version; no version or alias may take the word


def validate_label(value: str, what: str) -> str:
    """A version label or alias to create: a valid name that is not the reserved `latest`."""
    validate_name(value, what)
    if value == LATEST:
        raise InvalidName(f"{what} {LATEST!r} is reserved", f"NAME:{LATEST} always means the newest version")
    return value


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def parse_ref(text: str) -> ModelRef:
    """Parse `NAME`, `NAME:VERSION` or `NAME@ALIAS`."""
    if ":" in text and "@" in text:
        raise InvalidName(f"invalid model reference {text!r}", "use NAME, NAME:VERSION or NAME@ALIAS")
    if ":" in text:
        name, version = text.split(":", 1)
        return ModelRef(validate_name(name), version=validate_name(version, "version"))
    if "@" in text:
        name, alias = text.split("@", 1)
        return ModelRef(validate_name(name), alias=validate_name(alias, "alias"))
    return ModelRef(validate_name(text))
