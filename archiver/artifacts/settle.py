"""The artifact state machine: brings each artifact of a terminal task to a final state.

::

    API link            what happens                                    state
    ""                  there is no such artifact                       absent (final)
    null                not available yet; asked again on later passes  pending, then
                                                                        failed after the grace
    a link              streamed into blob storage (fetch.py)           stored (final)
    host refuses it     fresh links from Get Task, a few per pass       pending
    (403/404/410)
    blob storage        not counted as an attempt (the artifact is not  pending
    fails (full, no     at fault); the pass goes on archiving every
    permission, S3)     task's status and events, and says so once
    transfer keeps      retried within the pass, then on later passes   pending, then failed
    failing             (held back after 3 attempts)                    after max attempts
    too large, not      nothing fetched                                 failed (final)
    http(s)

The task is finalized only when both artifacts are final (stored, absent, failed).
``archiver verify --repair`` fetches artifacts again with :class:`RepairSettler`
(repair.py), which changes what a failure does, not how an artifact is fetched."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from archiver.artifacts.cleanup import sweep_temporaries
from archiver.artifacts.fetch import ArtifactFetcher, Fetched
from archiver.artifacts.states import (
    ABSENT,
    ARTIFACT_BACKOFF_AFTER_ATTEMPTS,
    FAILED,
    FINAL_STATES,
    KINDS,
    PENDING,
    STORED,
    RunDb,
)
from archiver.blobs import BlobStore
from archiver.client import (
    SmoothClient,
)
from archiver.config import (
    ARTIFACT_RETRY_BACKOFF_CAP_S,
    ArtifactConfig,
    backoff_after,
    default_blob_url,
    format_duration,
    format_size,
)
from archiver.exceptions import (
    ApiError,
    ArtifactLinkRefused,
    ArtifactRejected,
    ArtifactTransferError,
    AuthError,
    BlobStoreError,
    LeaseLost,
    RequestWithheld,
    TransferInterrupted,
)
from archiver.models import TaskInfo, strip_query
from archiver.stats import RunStats
from archiver.store.artifacts import ArtifactRow, load_artifacts, save_artifact
from archiver.store.state import record_blob_failure, record_blob_success
from archiver.timestamps import to_utc, utcnow

if TYPE_CHECKING:
    from archiver.masking import Masker

log = logging.getLogger(__name__)


@dataclass
class SettleResult:
    """What :meth:`ArtifactSync.settle` did for one task."""

    final: bool = True
    #: kind -> the failure of this pass (each is also in ``artifacts.last_error``).
    errors: dict[str, str] = field(default_factory=dict)
    #: kind -> why blob storage could not take it (also in ``last_error``; logged once
    #: per pass by the settler, so the caller counts these without a line each).
    blob_errors: dict[str, str] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)


class _Links:
    """The task's current links; ``refresh`` asks Get Task again with downloads=true."""

    def __init__(self, client: SmoothClient, task: TaskInfo, event_t: int) -> None:
        self.client = client
        self.task = task
        self.event_t = event_t

    def url(self, kind: str) -> str | None:
        return self.task.artifact_link(kind)

    async def refresh(self) -> None:
        self.task = await self.client.get_task(self.task.id, event_t=self.event_t, downloads=True)


@dataclass
class Attempt:
    """One artifact being fetched in this pass: what its outcome is recorded against."""

    task_id: str
    kind: str
    #: The artifact's state before this pass (pending if it has no row yet).
    current: str
    #: Fetch attempts over all passes, this one's included.
    attempts: int
    result: SettleResult


class ArtifactSync:
    """Brings a terminal task's artifacts to a final state (see the module docstring).

    ``client`` asks Get Task for fresh links; ``config`` says how artifacts are fetched,
    retried and given up on."""

    def __init__(
        self,
        *,
        run_db: RunDb,
        client: SmoothClient,
        config: ArtifactConfig,
        owner: str | None,
        store: BlobStore | None = None,
        should_stop: Callable[[], bool] | None = None,
        stats: RunStats | None = None,
        masker: Masker | None = None,
    ) -> None:
        self.run_db = run_db
        #: ``--mask-rules``: the stored source URL and error texts are masked (the fetcher
        #: still gets the links as sent: TaskInfo.artifact_link).
        self.masker = masker
        self.client = client
        self.config = config
        self.owner = owner
        self.store = store or BlobStore(config.blob_url or default_blob_url())
        self.stats = stats if stats is not None else RunStats()
        self.fetcher = ArtifactFetcher(self.store, config, should_stop=should_stop)
        #: Blob storage failed in this pass (said once, loudly); a success clears it.
        self.blob_failing = False
        self._blob_success_noted = False

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def sweep_temporaries(self) -> int:
        """Remove what transfers killed mid-way left in blob storage (cleanup.py)."""
        return await sweep_temporaries(self.run_db, self.store)

    async def settle(
        self, task: TaskInfo, *, event_t: int = 0, kinds: Sequence[str] = KINDS
    ) -> SettleResult:
        """Bring each artifact of a terminal ``task`` (read with downloads=true) as far as
        it goes now; ``result.final`` says whether all of them reached a final state."""
        try:
            rows = await self.run_db(load_artifacts, task.id)
            links = _Links(self.client, task, event_t)
            result = SettleResult()
            for kind in kinds:
                row = rows.get(kind)
                if row is not None and self._done(row):
                    result.states[kind] = row.state
                    continue
                state = await self._settle_one(links, kind, row, result)
                result.states[kind] = state
                if state not in FINAL_STATES:
                    result.final = False
            return result
        except LeaseLost:
            log.info("task %s: another run took it over; artifacts left to it", task.id)
            return SettleResult(final=False)

    # -- what the settler decides (RepairSettler decides otherwise) ---------------------

    def _done(self, row: ArtifactRow) -> bool:
        """Whether the artifact of ``row`` is left as it is: it reached a final state."""
        return row.state in FINAL_STATES

    def _held_back(self, row: ArtifactRow | None, url: str | None) -> bool:
        """Whether the artifact waits out its back-off after a failed attempt."""
        return bool(
            row is not None
            and row.next_attempt_at is not None
            and row.next_attempt_at > utcnow()
            and url
        )

    # -- one artifact ----------------------------------------------------------------

    async def _save(
        self, task_id: str, kind: str, values: dict[str, Any], files: Any = None
    ) -> None:
        if self.masker is not None:
            for name in ("source_url", "last_error"):
                if values.get(name):
                    values[name] = self.masker.text(values[name])
        await self.run_db(save_artifact, task_id, kind, values, owner=self.owner, files=files)

    async def _settle_one(
        self, links: _Links, kind: str, row: ArtifactRow | None, result: SettleResult
    ) -> str:
        task = links.task
        if self._held_back(row, links.url(kind)):
            return PENDING  # in back-off after a failed attempt
        attempt = Attempt(
            task.id,
            kind,
            current=row.state if row is not None else PENDING,
            attempts=row.attempts if row is not None else 0,
            result=result,
        )
        refreshes = 0  # fresh links asked for this artifact in this pass
        while True:
            url = links.url(kind)
            if url is None or url == "":
                return await self._no_link(links.task, kind, row, url, result)
            attempt.attempts += 1
            try:
                fetched = await self.fetcher.download(task.id, to_utc(task.created_at), kind, url)
            except ArtifactLinkRefused as exc:
                if refreshes >= self.config.link_refreshes:
                    message = (
                        f"{exc} Still refused after {refreshes} fresh link(s) from Get Task; "
                        "retried on a later pass."
                    )
                    return await self._transient(attempt, message)
                refreshes += 1
                try:
                    failure = await self._refresh(links, exc)
                except RequestWithheld:
                    return attempt.current  # the pass is stopping: as an interrupted transfer
                if failure is not None:
                    return await self._transient(attempt, failure)
                continue
            except ArtifactRejected as exc:
                return await self._failed(attempt, str(exc))
            except ArtifactTransferError as exc:
                return await self._transient(attempt, str(exc))
            except TransferInterrupted:
                return attempt.current
            except BlobStoreError as exc:
                return await self._blob_store_failed(attempt, str(exc))
            return await self._stored(attempt, row, url, fetched)

    async def _blob_store_failed(self, attempt: Attempt, message: str) -> str:
        """Blob storage could not take the artifact (full, not writable, a bucket error):
        not the artifact's fault, so not an attempt; it keeps its state (pending) and the
        reason, and is fetched again once blob storage works."""
        if not self.blob_failing:
            self.blob_failing = True
            log.error(
                "blob storage %s is failing: %s Artifacts stay pending until it works again "
                "(each with this reason in artifacts.last_error); every task's status and "
                "events are still archived.",
                self.store.url,
                message,
            )
        await self.run_db(record_blob_failure, self.store.url, message, utcnow())
        await self._save(
            attempt.task_id, attempt.kind, {"state": attempt.current, "last_error": message}
        )
        attempt.result.blob_errors[attempt.kind] = message
        return attempt.current

    async def _refresh(self, links: _Links, refused: ArtifactLinkRefused) -> str | None:
        """Ask Get Task for fresh links after ``refused``; why that failed, if it did."""
        try:
            await links.refresh()
        except AuthError:
            raise
        except ApiError as api_exc:
            return f"{refused} Asking Get Task for a fresh link failed: {api_exc}"
        self.stats.artifact_link_refreshes += 1
        return None

    async def _stored(
        self, attempt: Attempt, row: ArtifactRow | None, url: str, fetched: Fetched
    ) -> str:
        task_id, kind = attempt.task_id, attempt.kind
        values: dict[str, Any] = {
            "state": STORED,
            "blob_url": fetched.blob.url,
            "size_bytes": fetched.blob.size,
            "sha256": fetched.blob.sha256,
            "content_type": fetched.content_type,
            "source_url": strip_query(url),
            "fetched_at": utcnow(),
            "attempts": attempt.attempts,
            "last_error": fetched.listing_error,
            "next_attempt_at": None,
        }
        await self._save(task_id, kind, values, files=fetched.files)
        self.stats.artifacts_stored += 1
        if not self._blob_success_noted:
            self._blob_success_noted = True
            await self.run_db(record_blob_success, utcnow())
        if fetched.blob.rewritten:
            self.stats.artifact_bytes += fetched.blob.size
        log.info(
            "task %s: %s stored (%s) at %s",
            task_id,
            kind,
            format_size(fetched.blob.size),
            fetched.blob.url,
        )
        return STORED

    async def _no_link(
        self,
        task: TaskInfo,
        kind: str,
        row: ArtifactRow | None,
        url: str | None,
        result: SettleResult,
    ) -> str:
        field_name = f"{kind}_url"
        if url == "":
            await self._save(
                task.id,
                kind,
                {"state": ABSENT, "last_error": None, "next_attempt_at": None},
            )
            return ABSENT
        now = utcnow()
        since = row.pending_since if row is not None and row.pending_since else now
        waited = (now - since).total_seconds()
        grace = self.config.grace_s
        if waited >= grace:
            message = (
                f"{field_name} of task {task.id!r} was still null {format_duration(waited)} "
                f"after the archiver first saw the task finished (grace period "
                f"{format_duration(grace)}): the API never provided it. Raise --artifact-grace "
                "to wait longer."
            )
            await self._save(
                task.id,
                kind,
                {"state": FAILED, "pending_since": since, "last_error": message},
            )
            result.errors[kind] = message
            return FAILED
        if row is None or row.pending_since is None:
            await self._save(task.id, kind, {"state": PENDING, "pending_since": since})
        log.info("task %s: %s not available yet; will ask again", task.id, field_name)
        return PENDING

    async def _transient(self, attempt: Attempt, message: str) -> str:
        """A failure that may pass: retried on a later pass, up to the attempt limit."""
        attempts = attempt.attempts
        if attempts >= self.config.max_attempts:
            return await self._failed(attempt, f"gave up after {attempts} attempts: {message}")
        # Retried on the next pass; held back only once it failed several passes in a row.
        backoff = backoff_after(
            attempts,
            first_s=self.config.retry_backoff_s,
            after=ARTIFACT_BACKOFF_AFTER_ATTEMPTS,
            cap_s=ARTIFACT_RETRY_BACKOFF_CAP_S,
        )
        await self._save(
            attempt.task_id,
            attempt.kind,
            {
                "state": PENDING,
                "attempts": attempts,
                "last_error": message,
                "next_attempt_at": utcnow() + backoff if backoff is not None else None,
            },
        )
        attempt.result.errors[attempt.kind] = message
        return PENDING

    async def _failed(self, attempt: Attempt, message: str) -> str:
        """A failure for good: the artifact is recorded as failed."""
        await self._save(
            attempt.task_id,
            attempt.kind,
            {
                "state": FAILED,
                "attempts": attempt.attempts,
                "last_error": message,
                "next_attempt_at": None,
            },
        )
        attempt.result.errors[attempt.kind] = message
        return FAILED
