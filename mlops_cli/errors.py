"""The one exception tree. Each class carries the exit code the CLI turns it into, and the HTTP status the servers
answer with (the one error-to-status map: `http_status`).

MlopsError (exit 5, HTTP 500: a bug if it escapes as the base class)
 ├── InputError (exit 3, HTTP 400): MissingFile, EmptyInput, UnreadableFile, OutputExists,
 │     SchemaMismatch and InvalidData (HTTP 422: rows that break the input contract),
 │     Unreachable (HTTP 503: a service the command needs, a Kafka broker or Redis, does not answer)
 │       └── ClusterError (--engine dask: the scheduler cannot be reached, no workers, workers lost)
 │   └── RequestError: what only a server's caller can get wrong or meet: Malformed 400, Unauthorized 401,
 │         NotFound 404, TooLarge 413, UnsupportedMediaType 415, Overloaded 429, NotReady 503, DeadlineExceeded 504
 └── RegistryError (exit 4, HTTP 503): ModelNotFound, VersionExists, IntegrityError, InvalidName, LockTimeout,
     │                       VersionMismatch, NothingToRollBack, AliasMoved
     └── FeatureStoreError (the online feature store, Redis): FeatureViewNotFound, FeatureViewLocked, and
                             StoreUnavailable, which is also an Unreachable (exit 3)

Interrupted (a KeyboardInterrupt, exit 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP, as a shell
            reports them)
"""

from __future__ import annotations


class MlopsError(Exception):
    """Base of every error the tool raises on purpose. `hint` says what to do about it."""

    exit_code = 5
    http_status = 500

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        return f"{text} ({self.hint})" if self.hint else text

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:
        # Raised on a Dask worker and re-raised on the client: pickle keeps the hint (Exception pickles args only).
        return type(self), (self.message, self.hint)


class InputError(MlopsError):
    exit_code = 3
    http_status = 400


class MissingFile(InputError):
    pass


class EmptyInput(InputError):
    pass


class UnreadableFile(InputError):
    pass


class SchemaMismatch(InputError):
    http_status = 422


class InvalidData(InputError):
    http_status = 422


class OutputExists(InputError):
    pass


class Unreachable(InputError):
    """A service the command reads from or writes to (a Kafka broker, Redis) did not answer in time."""

    http_status = 503


class ClusterError(Unreachable):
    """--engine dask: the scheduler cannot be reached, it has no workers, or the workers died under the run."""


class RequestError(InputError):
    """A server's answer to a request it will not serve. Messages never quote the caller's values."""


class Malformed(RequestError):
    http_status = 400


class Unauthorized(RequestError):
    http_status = 401


class NotFound(RequestError):
    http_status = 404


class TooLarge(RequestError):
    http_status = 413


class UnsupportedMediaType(RequestError):
    http_status = 415


class Overloaded(RequestError):
    http_status = 429


class NotReady(RequestError):
    http_status = 503


class DeadlineExceeded(RequestError):
    http_status = 504


class RegistryError(MlopsError):
    exit_code = 4
    http_status = 503  # in a server, the registry is a service it needs


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


class FeatureStoreError(RegistryError):
    """The online feature store failed or lacks what was asked for (in a server: 503, a service it needs)."""


class StoreUnavailable(Unreachable, FeatureStoreError):
    """Redis cannot be reached, or did not answer within the timeout: exit 3 and HTTP 503, as a dead broker."""


class FeatureViewNotFound(FeatureStoreError):
    pass


class FeatureViewLocked(FeatureStoreError):
    """Another materialize of the same feature view is loading."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived: the command stopped and removed what it had started to write.

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
