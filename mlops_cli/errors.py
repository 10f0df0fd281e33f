"""The one exception tree. Each class carries the exit code the CLI turns it into.

MlopsError (exit 5, a bug if it escapes as the base class)
 ├── InputError (exit 3): MissingFile, EmptyInput, UnreadableFile, SchemaMismatch, InvalidData, OutputExists
 └── RegistryError (exit 4): ModelNotFound, VersionExists, IntegrityError, InvalidName, LockTimeout,
                             VersionMismatch, NothingToRollBack, AliasMoved

Interrupted (a KeyboardInterrupt, exit 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM, as a shell reports them)
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


class AliasMoved(RegistryError):
    """An alias moved between reading it and moving it (another process promoted meanwhile)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the command stopped and removed what it had started to write.

    A BaseException like KeyboardInterrupt, not an MlopsError, so that no `except Exception` on the way out (an
    unpickler's, a library's) can swallow it; the CLI turns it into exit 128 + the signal number.
    """

    def __init__(self, signum: int, hint: str | None = None) -> None:
        import signal

        self.signal_name = signal.Signals(signum).name
        self.message = f"interrupted by {self.signal_name}"
        super().__init__(self.message)
        self.hint = hint
        self.signum = signum
        self.exit_code = 128 + signum

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class MlopsWarning(UserWarning):
    """A warning the tool shows the user and records in the report's `messages`."""
