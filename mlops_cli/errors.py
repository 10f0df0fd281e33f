"""The one exception tree. Each class carries the exit code the CLI turns it into.

MlopsError (exit 5, a bug if it escapes as the base class)
 ├── InputError (exit 3): MissingFile, EmptyInput, UnreadableFile, SchemaMismatch, InvalidData, OutputExists
 └── RegistryError (exit 4): ModelNotFound, VersionExists, IntegrityError, InvalidName, LockTimeout,
                             VersionMismatch, NothingToRollBack
"""

from __future__ import annotations


class MlopsError(Exception):
    """Base of every error the tool raises on purpose. `hint` says what to do about it."""

    exit_code = 5

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        return f"{text} ({self.hint})" if self.hint else text


class InputError(MlopsError):
    exit_code = 3


class MissingFile(InputError):
    pass


class EmptyInput(InputError):
    pass


class UnreadableFile(InputError):
    pass


class SchemaMismatch(InputError):
    pass


class InvalidData(InputError):
    pass


class OutputExists(InputError):
    pass


class RegistryError(MlopsError):
    exit_code = 4


class ModelNotFound(RegistryError):
    pass


class VersionExists(RegistryError):
    pass


class IntegrityError(RegistryError):
    pass


class InvalidName(RegistryError):
    pass


class LockTimeout(RegistryError):
    pass


class VersionMismatch(RegistryError):
    pass


class NothingToRollBack(RegistryError):
    pass


class MlopsWarning(UserWarning):
    """A warning the tool shows the user and records in the report's `messages`."""
