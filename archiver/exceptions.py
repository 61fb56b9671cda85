"""Every error the archiver raises on purpose derives from :class:`ArchiverError`.

Third-party errors (httpx, SQLAlchemy, pydantic) are wrapped into these at the module
boundary that calls the library, so callers only ever catch archiver errors. Each message
names the value at fault, what was expected and what to do about it.
"""

from __future__ import annotations


class ArchiverError(Exception):
    """Base class of every error the archiver raises on purpose."""

    #: Process exit code the CLI uses when this error ends a command.
    exit_code: int = 1


class ConfigError(ArchiverError):
    """A setting (flag, environment variable or file) is missing or invalid."""

    exit_code = 2


class ApiError(ArchiverError):
    """The Smooth API could not be reached or answered with an unexpected status."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TransientApiError(ApiError):
    """A failure that may go away on retry: connection error, timeout, 5xx or 429."""

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class ApiUnreachable(TransientApiError):
    """No connection to the API could be made at all in this pass (refused, no route, DNS):
    the pass ends at once instead of retrying every task."""


class ApiUrlWrong(ApiError):
    """The answers prove the API URL wrong (List Tasks or every Get Task answered 404):
    a configuration error, not a reason to record tasks as gone."""

    exit_code = 2


class AuthError(ApiError):
    """The API rejected the key (401/403). Nothing else will work until the key is fixed."""

    exit_code = 2


class TaskNotFound(ApiError):
    """Get Task answered 404: the task does not exist (any more)."""


class MalformedPayload(ApiError):
    """The API answered, but the body is not what the API reference describes."""


class CircuitOpen(ApiError):
    """Too many API requests failed in a row: the pass stops instead of hammering the API."""


class RequestWithheld(ArchiverError):
    """A Get Task request was not sent: the pass began to stop while it waited for a
    request slot. Nothing was read, so nothing is saved; the next pass reads the task."""


class LockHeld(ArchiverError):
    """Another run of the same command holds the archive's lock."""

    exit_code = 75


class LeaseLost(ArchiverError):
    """Another run took over the task's lease before this one saved it; nothing of this
    run's work on the task was committed, and the other run carries on with it."""


class StorageError(ArchiverError):
    """The database or blob storage failed (disk full, permissions, connection lost)."""


class DataRefused(StorageError):
    """The database refused one task's values themselves (not a lock, disk or connection
    problem): that task fails with this message, the pass goes on."""


class BlobStoreError(StorageError):
    """The blob storage (local folder or fsspec backend) failed to create, write or read."""


class ArtifactError(ArchiverError):
    """Fetching one artifact (recording or downloads archive) failed; the pass goes on."""


class ArtifactLinkRefused(ArtifactError):
    """The artifact host answered 403/404/410: the presigned link expired or is not valid."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class ArtifactTransferError(ArtifactError):
    """A failure that may go away on retry: connection, timeout, 5xx, 429, truncation."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransferInterrupted(ArtifactError):
    """The pass is stopping (a signal) while an artifact streamed; the partial blob was
    dropped and the artifact keeps its state for the next pass."""


class ArtifactRejected(ArtifactError):
    """The artifact will not be fetched as it is: too large, or not an http(s) link."""
