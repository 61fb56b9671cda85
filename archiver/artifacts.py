"""Artifacts: copying a task's recording and downloads archive into blob storage.

The Smooth API hands out ``recording_url`` and ``downloads_url`` as presigned links that
expire. With ``--downloads`` the pass that finalizes a terminal task calls
:meth:`ArtifactSync.settle`, which brings each artifact to a final state and records it in
the ``artifacts`` table (one row per task and kind):

* ``""`` from the API: there is no such artifact -> ``absent``.
* ``null``: not available yet -> ``pending`` (``pending_since`` set); ``failed`` once it is
  still null a grace period after the archiver first saw it so.
* a link: streamed (never held whole in memory) through SHA-256 into a temporary blob,
  moved to its final name once size and hash are known -> ``stored``. 403/404/410 from the
  artifact host means the link expired: Get Task is asked again (``downloads=true``) for
  fresh links, a bounded number of times. Connection errors, timeouts, 5xx and truncated
  transfers leave the artifact ``pending`` with ``last_error`` and a back-off
  (``next_attempt_at``); after ``artifact_max_attempts`` attempts it is ``failed``. A link
  that is not http(s), a redirect to anything but http(s), or a body over the size limit
  (enforced while streaming) is ``failed`` at once.
* a stored downloads archive is listed into ``artifact_files`` from the stored zip, never
  extracted; a corrupt or non-zip archive stays stored with the listing error recorded.

The task is finalized only when both artifacts reached a final state (stored, absent,
failed). Presigned query strings never reach the database, logs or messages.

Data flows one way: the engine passes in the task the API returned; this module fetches
the links, writes :mod:`archiver.blobs` and the ``artifacts`` rows.
"""

from __future__ import annotations

import asyncio
import logging
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import stamina
from sqlalchemy import Connection, delete, func, select

from archiver.blobs import CHUNK_BYTES, BlobInfo, BlobStore, blob_key, extension_for
from archiver.client import (
    RETRY_WAIT_INITIAL_S,
    RETRY_WAIT_MAX_S,
    USER_AGENT,
    SmoothClient,
    parse_retry_after,
)
from archiver.config import (
    ARTIFACT_RETRY_BACKOFF_CAP_S,
    DEFAULT_RETRY_ATTEMPTS,
    ClientConfig,
    SyncOptions,
    default_blob_url,
    format_duration,
    format_size,
)
from archiver.db import Database, dialect_insert
from archiver.exceptions import (
    ApiError,
    ArchiverError,
    ArtifactError,
    ArtifactLinkRefused,
    ArtifactRejected,
    ArtifactTransferError,
    AuthError,
    BlobStoreError,
    LeaseLost,
    TransferInterrupted,
)
from archiver.models import TERMINAL_STATUSES, TaskInfo, strip_query
from archiver.redact import redact
from archiver.schema import artifact_files, artifacts, tasks
from archiver.stats import RunStats
from archiver.timestamps import to_utc, utcnow

log = logging.getLogger(__name__)

KINDS = ("recording", "downloads")
PENDING, STORED, ABSENT, FAILED = "pending", "stored", "absent", "failed"
STATES = (PENDING, STORED, ABSENT, FAILED)
FINAL_STATES = frozenset({STORED, ABSENT, FAILED})
#: What an artifact host answers for an expired or invalid presigned link.
REFUSED_STATUSES = frozenset({403, 404, 410})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
#: Members listed per downloads archive; a larger archive is listed this far and says so.
MAX_LISTED_FILES = 100_000
MAX_ERROR_CHARS = 2000
#: Failed attempts (over passes, each already retried within its pass) before an artifact
#: is held back from the next passes.
ARTIFACT_BACKOFF_AFTER_ATTEMPTS = 3

RunDb = Callable[..., Awaitable[Any]]


def _as_utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _clean(text: str) -> str:
    """A message safe to store and show: presigned query strings masked, length capped."""
    return redact(text, [])[:MAX_ERROR_CHARS]


# --- database ------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactRow:
    """One row of ``artifacts`` as the state machine needs it."""

    task_id: str
    kind: str
    state: str
    attempts: int
    pending_since: datetime | None
    next_attempt_at: datetime | None
    blob_url: str | None
    size_bytes: int | None
    sha256: str | None
    last_error: str | None


def load_artifacts(conn: Connection, task_id: str) -> dict[str, ArtifactRow]:
    """The task's artifact rows by kind."""
    rows = conn.execute(select(artifacts).where(artifacts.c.task_id == task_id))
    return {
        row.kind: ArtifactRow(
            task_id=row.task_id,
            kind=row.kind,
            state=row.state,
            attempts=row.attempts,
            pending_since=_as_utc(row.pending_since),
            next_attempt_at=_as_utc(row.next_attempt_at),
            blob_url=row.blob_url,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            last_error=row.last_error,
        )
        for row in rows
    }


def save_artifact(
    conn: Connection,
    task_id: str,
    kind: str,
    values: dict[str, Any],
    *,
    owner: str | None,
    files: Sequence[dict[str, Any]] | None = None,
) -> None:
    """Insert or update one artifact row (and replace the task's file listing if given).

    With ``owner``, raises LeaseLost (the caller's transaction rolls back) unless that run
    still holds the task's lease.
    """
    if owner is not None:
        holder = conn.scalar(select(tasks.c.lease_owner).where(tasks.c.id == task_id))
        if holder != owner:
            raise LeaseLost(task_id)
    if "last_error" in values and values["last_error"] is not None:
        values = {**values, "last_error": _clean(values["last_error"])}
    row = {"task_id": task_id, "kind": kind, **values}
    stmt = dialect_insert(conn, artifacts).values(row)
    conn.execute(stmt.on_conflict_do_update(index_elements=["task_id", "kind"], set_=values))
    if files is not None:
        conn.execute(delete(artifact_files).where(artifact_files.c.task_id == task_id))
        if files:
            conn.execute(artifact_files.insert(), [{"task_id": task_id, **f} for f in files])


def _artifacts_to_do(now: datetime) -> Any:
    """Finalized, terminal, not gone tasks whose artifacts are not all in a final state:
    a kind without a row (archived while downloads were off) or a row still pending and
    not in back-off."""
    settled = (
        select(artifacts.c.task_id)
        .where(artifacts.c.state.in_(sorted(FINAL_STATES)))
        .group_by(artifacts.c.task_id)
        .having(func.count() >= len(KINDS))
    )
    held_back = select(artifacts.c.task_id).where(
        artifacts.c.state == PENDING, artifacts.c.next_attempt_at > now
    )
    return (
        select(tasks.c.id)
        .where(tasks.c.finalized_at.is_not(None))
        .where(tasks.c.gone_at.is_(None))
        .where(tasks.c.status.in_(sorted(TERMINAL_STATUSES)))
        .where(tasks.c.id.not_in(settled))
        .where(tasks.c.id.not_in(held_back))
    )


def tasks_missing_artifacts(conn: Connection, now: datetime | None = None) -> list[str]:
    """Finalized tasks whose artifacts still need work, oldest first.

    ``sync --downloads`` and ``backfill --downloads`` revisit them (with fresh links from
    Get Task), so turning downloads on later covers the history already archived, and an
    artifact left pending by a failure is retried whatever its task's state.
    """
    query = _artifacts_to_do(now or utcnow()).order_by(
        tasks.c.created_at.asc().nulls_first(), tasks.c.id
    )
    return list(conn.scalars(query))


def artifact_status(conn: Connection) -> dict[str, Any]:
    """Artifact counts by state and the bytes stored, for ``archiver status``."""
    by_state = {state: 0 for state in STATES}
    for state, count in conn.execute(
        select(artifacts.c.state, func.count()).group_by(artifacts.c.state)
    ):
        by_state[state] = count
    stored_bytes = conn.scalar(
        select(func.coalesce(func.sum(artifacts.c.size_bytes), 0)).where(
            artifacts.c.state == STORED
        )
    )
    to_do: int | None = 0
    if any(by_state.values()):  # only archives that ever ran with --downloads
        to_do = conn.scalar(select(func.count()).select_from(_artifacts_to_do(utcnow()).subquery()))
    return {
        "artifacts_by_state": by_state,
        "artifact_bytes_stored": int(stored_bytes or 0),
        "tasks_with_artifacts_to_do": int(to_do or 0),
    }


@dataclass(frozen=True)
class StoredArtifact:
    """A row ``verify`` checks."""

    task_id: str
    kind: str
    state: str
    blob_url: str | None
    size_bytes: int | None
    sha256: str | None
    event_t: int


def artifacts_to_verify(
    conn: Connection, task_ids: Sequence[str] | None, *, states: Iterable[str] = (STORED,)
) -> list[StoredArtifact]:
    query = (
        select(
            artifacts.c.task_id,
            artifacts.c.kind,
            artifacts.c.state,
            artifacts.c.blob_url,
            artifacts.c.size_bytes,
            artifacts.c.sha256,
            tasks.c.event_t,
        )
        .join(tasks, tasks.c.id == artifacts.c.task_id)
        .where(artifacts.c.state.in_(list(states)))
        .order_by(artifacts.c.task_id, artifacts.c.kind)
    )
    if task_ids:
        query = query.where(artifacts.c.task_id.in_(list(task_ids)))
    return [StoredArtifact(**row._asdict()) for row in conn.execute(query)]


# --- zip listing ---------------------------------------------------------------------


def _zip_time(date_time: tuple[int, ...]) -> datetime | None:
    """A member's modified time (zip stores no time zone; taken as UTC), None if invalid."""
    try:
        year, month, day, hour, minute, second = date_time[:6]
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def list_zip(store: BlobStore, key: str) -> tuple[list[dict[str, Any]], str | None]:
    """The members of a stored zip (read from its central directory, nothing extracted).

    Returns (members, error): a corrupt or non-zip blob gives no members and the reason.
    """
    try:
        with store.open(key) as handle, zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
    except BlobStoreError:
        raise
    except Exception as exc:  # any parse failure of untrusted bytes: recorded, not raised
        return [], (
            f"the downloads archive {store.url_for(key)} is stored as it came but is not a "
            f"readable zip ({type(exc).__name__}: {str(exc)[:200]}); no members listed."
        )
    members = [
        {
            "name": info.filename.replace("\x00", "\ufffd"),
            "size_bytes": info.file_size,
            "compressed_bytes": info.compress_size,
            "modified_at": _zip_time(info.date_time),
        }
        for info in infos[:MAX_LISTED_FILES]
    ]
    error = None
    if len(infos) > MAX_LISTED_FILES:
        error = (
            f"the downloads archive {store.url_for(key)} has {len(infos)} members; only the "
            f"first {MAX_LISTED_FILES} are listed in artifact_files."
        )
    return members, error


# --- fetching ------------------------------------------------------------------------


def check_link(url: str, *, what: str) -> None:
    """ArtifactRejected unless ``url`` is an http(s) link with a host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ArtifactRejected(
            f"{what} {strip_query(url)!r} is not a valid URL; expected an http(s) link. "
            "Nothing was fetched."
        ) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ArtifactRejected(
            f"{what} {strip_query(url)!r} is not an http:// or https:// link; only those are "
            "followed, so nothing was fetched."
        )


@dataclass(frozen=True)
class Fetched:
    """A stored artifact and what was learnt on the way."""

    blob: BlobInfo
    content_type: str | None
    files: list[dict[str, Any]] | None = None
    listing_error: str | None = None


def _retry_transfer(exc: Exception) -> bool | float:
    """stamina's ``on`` hook for artifact transfers: transient failures are retried
    (waiting ``Retry-After`` when the host gave one), refusals and rejections are not."""
    if isinstance(exc, ArtifactTransferError):
        return exc.retry_after if exc.retry_after is not None else True
    return False


class ArtifactFetcher:
    """Streams artifact links into a blob store, with a size cap and no redirects to
    anything but http(s). Never sends the API key: artifact hosts get plain GETs."""

    def __init__(
        self,
        store: BlobStore,
        *,
        max_bytes: int,
        timeout_s: float,
        connect_timeout_s: float,
        max_connections: int,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.should_stop = should_stop or (lambda: False)
        self.requests = 0
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
            # Stored as it came: ask hosts not to compress on the fly.
            headers={"user-agent": USER_AGENT, "accept-encoding": "identity"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _limit_text(self) -> str:
        return format_size(self.max_bytes)

    async def download(
        self, task_id: str, created: datetime | None, kind: str, url: str
    ) -> Fetched:
        """Fetch one link into the store, retrying transient failures (connection errors,
        timeouts, 5xx, 429 with its Retry-After, truncated bodies) within the pass with
        back-off, the stream restarted from its start; raises an ArtifactError subclass
        when the failure persists or is not transient."""
        async for attempt in stamina.retry_context(
            on=_retry_transfer,
            attempts=DEFAULT_RETRY_ATTEMPTS,
            wait_initial=RETRY_WAIT_INITIAL_S,
            wait_max=RETRY_WAIT_MAX_S,
        ):
            with attempt:
                return await self._download_once(task_id, created, kind, url)
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _download_once(
        self, task_id: str, created: datetime | None, kind: str, url: str
    ) -> Fetched:
        what = f"{kind} link of task {task_id!r}"
        check_link(url, what=what)
        shown = strip_query(url)
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            self.requests += 1
            try:
                response = await self._http.send(
                    self._http.build_request("GET", current), stream=True
                )
            except httpx.TimeoutException as exc:
                raise ArtifactTransferError(
                    f"{what} {shown}: timed out ({type(exc).__name__}); retried on a later pass."
                ) from None
            except httpx.HTTPError as exc:
                raise ArtifactTransferError(
                    f"{what} {shown}: connection failed ({type(exc).__name__}: "
                    f"{_clean(str(exc))}); retried on a later pass."
                ) from None
            try:
                status = response.status_code
                if status in REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise ArtifactTransferError(
                            f"{what} {shown}: HTTP {status} redirect without a Location."
                        )
                    try:
                        target = response.url.join(location)
                    except (httpx.InvalidURL, ValueError):
                        target = None
                    if target is None or target.scheme not in ("http", "https"):
                        raise ArtifactRejected(
                            f"{what} {shown} redirects to {strip_query(location)!r}, which is "
                            "not an http(s) link; redirects are only followed to http(s), "
                            "so nothing was fetched."
                        )
                    current = str(target)
                    continue
                if status in REFUSED_STATUSES:
                    raise ArtifactLinkRefused(
                        f"{what} {shown}: the artifact host answered HTTP {status} "
                        "(expired or invalid presigned link).",
                        status_code=status,
                    )
                if status != 200:
                    raise ArtifactTransferError(
                        f"{what} {shown}: the artifact host answered HTTP {status}; expected 200.",
                        retry_after=parse_retry_after(response.headers.get("retry-after")),
                    )
                return await self._store_body(response, task_id, created, kind, url, what)
            finally:
                await response.aclose()
        raise ArtifactTransferError(
            f"{what} {shown}: more than {MAX_REDIRECTS} redirects; retried on a later pass."
        )

    async def _store_body(
        self,
        response: httpx.Response,
        task_id: str,
        created: datetime | None,
        kind: str,
        url: str,
        what: str,
    ) -> Fetched:
        shown = strip_query(url)
        length: int | None = None
        raw_length = response.headers.get("content-length")
        if raw_length is not None and raw_length.strip().isdigit():
            length = int(raw_length)
        encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
        if length is not None and not encoded and length > self.max_bytes:
            raise ArtifactRejected(
                f"{what} {shown} is {format_size(length)} (Content-Length), over the "
                f"{self._limit_text()} limit; nothing was stored. Raise --max-artifact-size "
                "and run `archiver verify --repair --retry-failed` to fetch it."
            )
        content_type = response.headers.get("content-type")
        key = blob_key(task_id, created, kind, extension_for(content_type, url))
        store = self.store
        await asyncio.to_thread(store.discard_temporaries, task_id, kind)
        writer = await asyncio.to_thread(store.begin, task_id, kind)
        committed = False
        try:
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                if writer.size + len(chunk) > self.max_bytes:
                    raise ArtifactRejected(
                        f"{what} {shown} grew past the {self._limit_text()} limit while "
                        "streaming; the transfer was stopped and nothing was stored. Raise "
                        "--max-artifact-size and run `archiver verify --repair --retry-failed`."
                    )
                if self.should_stop():
                    raise TransferInterrupted(f"{what} {shown}: the pass is stopping")
                await asyncio.to_thread(writer.write, chunk)
            if length is not None and not encoded and writer.size != length:
                raise ArtifactTransferError(
                    f"{what} {shown}: received {writer.size} of {length} bytes; retried on a "
                    "later pass."
                )
            blob = await asyncio.to_thread(writer.commit, key)
            committed = True
        except httpx.TimeoutException as exc:
            raise ArtifactTransferError(
                f"{what} {shown}: timed out after {writer.size} bytes ({type(exc).__name__}); "
                "retried on a later pass."
            ) from None
        except httpx.HTTPError as exc:
            raise ArtifactTransferError(
                f"{what} {shown}: the transfer broke after {writer.size} bytes "
                f"({type(exc).__name__}: {_clean(str(exc))}); retried on a later pass."
            ) from None
        finally:
            if not committed:
                await asyncio.to_thread(writer.abort)
        files: list[dict[str, Any]] | None = None
        listing_error = None
        if kind == "downloads":
            files, listing_error = await asyncio.to_thread(list_zip, store, key)
        return Fetched(blob, content_type, files, listing_error)


# --- the state machine -----------------------------------------------------------------


@dataclass
class SettleResult:
    """What :meth:`ArtifactSync.settle` did for one task."""

    final: bool = True
    #: kind -> the failure of this pass (each is also in ``artifacts.last_error``).
    errors: dict[str, str] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)


class _Links:
    """The task's current links; ``refresh`` asks Get Task again with downloads=true."""

    def __init__(self, client: SmoothClient, task: TaskInfo, event_t: int) -> None:
        self.client = client
        self.task = task
        self.event_t = event_t

    def url(self, kind: str) -> str | None:
        return self.task.recording_url if kind == "recording" else self.task.downloads_url

    async def refresh(self) -> None:
        self.task = await self.client.get_task(self.task.id, event_t=self.event_t, downloads=True)


class ArtifactSync:
    """Brings a terminal task's artifacts to a final state (see the module docstring)."""

    def __init__(
        self,
        *,
        run_db: RunDb,
        client: SmoothClient,
        options: SyncOptions,
        client_config: ClientConfig,
        owner: str | None,
        store: BlobStore | None = None,
        should_stop: Callable[[], bool] | None = None,
        stats: RunStats | None = None,
    ) -> None:
        self.run_db = run_db
        self.client = client
        self.options = options
        self.owner = owner
        self.store = store or BlobStore(options.blob_url or default_blob_url())
        self.stats = stats if stats is not None else RunStats()
        self.fetcher = ArtifactFetcher(
            self.store,
            max_bytes=options.max_artifact_bytes,
            timeout_s=client_config.timeout_s,
            connect_timeout_s=client_config.connect_timeout_s,
            max_connections=client_config.max_connections,
            should_stop=should_stop,
        )

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def settle(
        self,
        task: TaskInfo,
        *,
        event_t: int = 0,
        kinds: Sequence[str] = KINDS,
        repair: bool = False,
    ) -> SettleResult:
        """Bring each artifact of a terminal ``task`` (read with downloads=true) as far as
        it goes now; ``result.final`` says whether all of them reached a final state.

        With ``repair`` (``archiver verify --repair``) the given kinds are fetched again
        whatever their state; a failure then only updates ``last_error``.
        """
        try:
            rows = await self.run_db(load_artifacts, task.id)
            links = _Links(self.client, task, event_t)
            result = SettleResult()
            for kind in kinds:
                row = rows.get(kind)
                if row is not None and row.state in FINAL_STATES and not repair:
                    result.states[kind] = row.state
                    continue
                state = await self._settle_one(links, kind, row, result, repair=repair)
                result.states[kind] = state
                if state not in FINAL_STATES:
                    result.final = False
            return result
        except LeaseLost:
            log.info("task %s: another run took it over; artifacts left to it", task.id)
            return SettleResult(final=False)

    async def _save(
        self, task_id: str, kind: str, values: dict[str, Any], files: Any = None
    ) -> None:
        await self.run_db(save_artifact, task_id, kind, values, owner=self.owner, files=files)

    async def _settle_one(
        self,
        links: _Links,
        kind: str,
        row: ArtifactRow | None,
        result: SettleResult,
        *,
        repair: bool,
    ) -> str:
        task = links.task
        now = utcnow()
        attempts = row.attempts if row is not None else 0
        current = row.state if row is not None else PENDING
        if (
            not repair
            and row is not None
            and row.next_attempt_at is not None
            and row.next_attempt_at > now
            and links.url(kind)
        ):
            return PENDING  # in back-off after a failed attempt
        refreshes = 0  # fresh links asked for this artifact in this pass
        while True:
            url = links.url(kind)
            if url is None or url == "":
                return await self._no_link(links.task, kind, row, url, result, repair=repair)
            attempts += 1
            try:
                fetched = await self.fetcher.download(task.id, to_utc(task.created_at), kind, url)
            except ArtifactLinkRefused as exc:
                if refreshes < self.options.artifact_link_refreshes:
                    refreshes += 1
                    try:
                        await links.refresh()
                    except AuthError:
                        raise
                    except ApiError as api_exc:
                        message = f"{exc} Asking Get Task for a fresh link failed: {api_exc}"
                        return await self._transient(
                            task.id, kind, current, attempts, message, result, repair
                        )
                    self.stats.artifact_link_refreshes += 1
                    continue
                message = (
                    f"{exc} Still refused after {refreshes} fresh link(s) from Get Task; "
                    "retried on a later pass."
                )
                return await self._transient(
                    task.id, kind, current, attempts, message, result, repair
                )
            except ArtifactRejected as exc:
                return await self._failed(
                    task.id, kind, current, attempts, str(exc), result, repair
                )
            except ArtifactTransferError as exc:
                return await self._transient(
                    task.id, kind, current, attempts, str(exc), result, repair
                )
            except TransferInterrupted:
                return current
            values: dict[str, Any] = {
                "state": STORED,
                "blob_url": fetched.blob.url,
                "size_bytes": fetched.blob.size,
                "sha256": fetched.blob.sha256,
                "content_type": fetched.content_type,
                "source_url": strip_query(url),
                "fetched_at": utcnow(),
                "attempts": attempts,
                "last_error": fetched.listing_error,
                "next_attempt_at": None,
            }
            if repair and row is not None and row.sha256 and row.sha256 != fetched.blob.sha256:
                log.warning(
                    "task %s %s: the API now serves different content (sha256 %s, was %s)",
                    task.id,
                    kind,
                    fetched.blob.sha256,
                    row.sha256,
                )
            await self._save(task.id, kind, values, files=fetched.files)
            self.stats.artifacts_stored += 1
            if fetched.blob.rewritten:
                self.stats.artifact_bytes += fetched.blob.size
            log.info(
                "task %s: %s stored (%s) at %s",
                task.id,
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
        *,
        repair: bool,
    ) -> str:
        field_name = f"{kind}_url"
        if repair:
            message = (
                f"verify --repair: Get Task gives {field_name}={url!r} for task {task.id!r} "
                "now, so the blob cannot be fetched again."
            )
            await self._save(task.id, kind, {"last_error": message})
            result.errors[kind] = message
            return row.state if row is not None else PENDING
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
        grace = self.options.artifact_grace_s
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

    async def _keep_for_repair(
        self,
        task_id: str,
        kind: str,
        current: str,
        attempts: int,
        message: str,
        result: SettleResult,
    ) -> str:
        """``verify --repair`` failed to re-fetch: the row keeps its state, notes why."""
        await self._save(task_id, kind, {"attempts": attempts, "last_error": message})
        result.errors[kind] = message
        return current

    async def _transient(
        self,
        task_id: str,
        kind: str,
        current: str,
        attempts: int,
        message: str,
        result: SettleResult,
        repair: bool,
    ) -> str:
        max_attempts = self.options.artifact_max_attempts
        if repair:
            return await self._keep_for_repair(task_id, kind, current, attempts, message, result)
        if attempts >= max_attempts:
            return await self._failed(
                task_id,
                kind,
                current,
                attempts,
                f"gave up after {attempts} attempts: {message}",
                result,
                repair,
            )
        # Retried on the next pass; held back only once it failed several passes in a row.
        held = attempts - ARTIFACT_BACKOFF_AFTER_ATTEMPTS
        base = self.options.artifact_retry_backoff_s
        backoff = min(base * 2 ** max(held, 0), ARTIFACT_RETRY_BACKOFF_CAP_S)
        await self._save(
            task_id,
            kind,
            {
                "state": PENDING,
                "attempts": attempts,
                "last_error": message,
                "next_attempt_at": utcnow() + timedelta(seconds=backoff) if held >= 0 else None,
            },
        )
        result.errors[kind] = message
        return PENDING

    async def _failed(
        self,
        task_id: str,
        kind: str,
        current: str,
        attempts: int,
        message: str,
        result: SettleResult,
        repair: bool,
    ) -> str:
        if repair:
            return await self._keep_for_repair(task_id, kind, current, attempts, message, result)
        await self._save(
            task_id,
            kind,
            {"state": FAILED, "attempts": attempts, "last_error": message, "next_attempt_at": None},
        )
        result.errors[kind] = message
        return FAILED


# --- verify ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """The outcome of verifying one stored blob."""

    item: StoredArtifact
    problem: str | None  # None (ok), "missing" or "corrupt"
    detail: str = ""


def check_blob(store: BlobStore, item: StoredArtifact) -> Check:
    """Re-read one stored blob and compare size and SHA-256 with its row."""
    if not item.blob_url:
        return Check(item, "missing", "the row has no blob_url")
    target, key = store, store.key_from_url(item.blob_url)
    if key is None:
        target, key = BlobStore.for_blob_url(item.blob_url)
    digest = target.sha256(key)
    if digest is None:
        return Check(item, "missing", "no blob at this URL")
    size, sha = digest
    if size != item.size_bytes:
        return Check(item, "corrupt", f"{size} bytes, the table says {item.size_bytes}")
    if sha != item.sha256:
        return Check(item, "corrupt", f"sha256 {sha}, the table says {item.sha256}")
    return Check(item, None)


def verify_blobs(
    db: Database, store: BlobStore, task_ids: Sequence[str] | None
) -> tuple[list[Check], list[StoredArtifact]]:
    """Check every stored blob (or those of ``task_ids``); also returns the failed rows."""
    with db.reading() as conn:
        stored = artifacts_to_verify(conn, task_ids)
        failed = artifacts_to_verify(conn, task_ids, states=(FAILED,))
    checks = []
    for item in stored:
        try:
            checks.append(check_blob(store, item))
        except ArchiverError as exc:  # unreadable storage: reported per blob, not fatal
            checks.append(Check(item, "missing", f"cannot be read: {exc}"))
    return checks, failed


async def repair_artifacts(
    db: Database,
    store: BlobStore,
    client_config: ClientConfig,
    options: SyncOptions,
    todo: Sequence[StoredArtifact],
    *,
    owner: str,
) -> dict[tuple[str, str], str | None]:
    """Fetch the given artifacts again with fresh links; (task, kind) -> error or None."""

    async def run_db(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def work() -> Any:
            with db.transaction() as conn:
                return fn(conn, *args, **kwargs)

        return await asyncio.to_thread(work)

    by_task: dict[str, list[StoredArtifact]] = {}
    for item in todo:
        by_task.setdefault(item.task_id, []).append(item)
    outcome: dict[tuple[str, str], str | None] = {}
    async with SmoothClient(client_config) as client:
        sync = ArtifactSync(
            run_db=run_db,
            client=client,
            options=options,
            client_config=client_config,
            owner=owner,
            store=store,
        )
        try:
            for task_id, items in by_task.items():
                kinds = [item.kind for item in items]
                try:
                    task = await client.get_task(
                        task_id, event_t=max(items[0].event_t, 0), downloads=True
                    )
                except AuthError:
                    raise
                except ApiError as exc:
                    for kind in kinds:
                        outcome[(task_id, kind)] = f"Get Task failed: {exc}"
                    continue
                result = await sync.settle(
                    task, event_t=max(items[0].event_t, 0), kinds=kinds, repair=True
                )
                for kind in kinds:
                    if kind in result.errors:
                        outcome[(task_id, kind)] = result.errors[kind]
                    elif result.states.get(kind) == STORED:
                        outcome[(task_id, kind)] = None
                    else:
                        outcome[(task_id, kind)] = "another run holds the task; try again later"
        finally:
            await sync.aclose()
    return outcome


def verify_and_report(
    db: Database, store: BlobStore, task_ids: Sequence[str] | None, *, echo: Callable[[str], None]
) -> tuple[Callable[[bool], list[StoredArtifact]], list[Check]]:
    """``archiver verify``: check the blobs and print one line per problem and a summary.

    Returns (what --repair would fetch, given --retry-failed or not; the bad checks).
    """
    checks, failed = verify_blobs(db, store, task_ids)
    bad = [check for check in checks if check.problem]
    for check in bad:
        item = check.item
        echo(
            f"{check.problem:<8} {item.task_id} {item.kind:<9} {item.blob_url or '-'}: "
            f"{check.detail}"
        )
    missing = sum(1 for check in bad if check.problem == "missing")
    echo(
        f"verified {len(checks)} stored blob(s): {len(checks) - len(bad)} ok, {missing} "
        f"missing, {len(bad) - missing} corrupt"
        + (
            f"; {len(failed)} artifact(s) recorded as failed are not checked "
            "(see artifacts.last_error; --repair --retry-failed retries them)"
            if failed
            else ""
        )
    )

    def todo(retry_failed: bool) -> list[StoredArtifact]:
        return [check.item for check in bad] + (list(failed) if retry_failed else [])

    return todo, bad


def repair_and_report(
    db: Database,
    store: BlobStore,
    client_config: ClientConfig,
    options: SyncOptions,
    todo: Sequence[StoredArtifact],
    *,
    echo: Callable[[str], None],
) -> int:
    """``archiver verify --repair``: fetch ``todo`` again under the ``verify`` lock; prints
    one line per artifact and returns how many could not be repaired."""
    from archiver.locks import RunLock

    lock = RunLock(db, "verify")
    try:
        lock.acquire()
        with db.transaction() as conn:
            claimed = set(lock.claim(conn, sorted({item.task_id for item in todo})))
        outcome = asyncio.run(
            repair_artifacts(
                db,
                store,
                client_config,
                options,
                [item for item in todo if item.task_id in claimed],
                owner=lock.owner,
            )
        )
    finally:
        lock.release()
    unrepaired = 0
    for item in todo:
        error = outcome.get(
            (item.task_id, item.kind), "another run is working on this task; try again later"
        )
        if error is None:
            echo(f"repaired {item.task_id} {item.kind}")
        else:
            unrepaired += 1
            echo(f"not repaired {item.task_id} {item.kind}: {error}")
    echo(f"repaired {len(todo) - unrepaired} of {len(todo)}")
    return unrepaired


__all__ = [
    "FINAL_STATES",
    "KINDS",
    "ArtifactError",
    "ArtifactFetcher",
    "ArtifactSync",
    "Check",
    "SettleResult",
    "artifact_status",
    "check_blob",
    "list_zip",
    "load_artifacts",
    "repair_artifacts",
    "save_artifact",
    "verify_blobs",
]
