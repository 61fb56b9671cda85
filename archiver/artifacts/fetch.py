"""Fetching presigned artifact links into blob storage: streamed through SHA-256 with a
size cap, redirects only to http(s), transient failures retried within the pass; never
sends the API key."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import stamina

from archiver.artifacts.states import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    REFUSED_STATUSES,
)
from archiver.artifacts.zips import list_zip
from archiver.blobs import CHUNK_BYTES, BlobInfo, BlobStore, BlobWriter, blob_key, extension_for
from archiver.client import (
    RETRY_WAIT_INITIAL_S,
    RETRY_WAIT_MAX_S,
    USER_AGENT,
    connection_failure,
    parse_retry_after,
)
from archiver.config import (
    DEFAULT_RETRY_ATTEMPTS,
    ArtifactConfig,
    format_size,
)
from archiver.exceptions import (
    ArtifactLinkRefused,
    ArtifactRejected,
    ArtifactTransferError,
    TransferInterrupted,
)
from archiver.models import strip_query
from archiver.store.artifacts import clean_message

log = logging.getLogger(__name__)


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


def _bulk_transport(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """aiohttp's transport (the API client's too), its read buffer one CHUNK_BYTES: a body
    streams through it with about a third less CPU than through httpcore's (1 GiB:
    4.5-5.6 -> 3.5-3.8 CPU-s, benchmarks/artifacts.py); with aiohttp's default 64 KiB
    buffer the socket is paused and resumed every 128 KiB and most of that gain is lost.
    TLS is verified with the context the transport builds as httpx's default transport
    does (certifi's CA bundle), loaded once."""
    import aiohttp
    from httpx_aiohttp import AiohttpTransport

    def session() -> aiohttp.ClientSession:
        # Made by the transport at its first request, inside the running event loop.
        connector = aiohttp.TCPConnector(
            limit=limits.max_connections or 0,
            keepalive_timeout=limits.keepalive_expiry,
            ssl=transport.ssl_context,
        )
        return aiohttp.ClientSession(connector=connector, read_bufsize=CHUNK_BYTES)

    transport = AiohttpTransport(limits=limits, client=session)
    return transport


def _failure(exc: httpx.HTTPError) -> str:
    """What went wrong with a request that got no response, in an operator's words."""
    reason = connection_failure(exc)
    if reason is not None:
        return reason
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"connection failed ({type(exc).__name__}: {clean_message(str(exc))})"


def _retry_transfer(exc: BaseException) -> bool | float:
    """stamina's ``on`` hook for artifact transfers: transient failures are retried
    (waiting ``Retry-After`` when the host gave one), refusals and rejections are not."""
    if isinstance(exc, ArtifactTransferError):
        return exc.retry_after if exc.retry_after is not None else True
    return False


#: Address ranges a redirect may lead to only when the link itself pointed into them: the
#: cloud metadata service (169.254.169.254), this machine, and private networks are not
#: where an artifact host sends a download, but where a hostile one would aim.
_LINK_LOCAL, _LOOPBACK, _PRIVATE = "link-local", "loopback", "private"


def address_kind(address: str) -> str | None:
    """The restricted range an IP address is in (link-local, loopback, private), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return _LINK_LOCAL
    if ip.is_loopback or ip.is_unspecified:  # 0.0.0.0 reaches this machine too
        return _LOOPBACK
    if ip.is_private or ip.is_reserved or ip.is_multicast:
        return _PRIVATE
    return None


async def _host_kinds(host: str) -> set[str | None]:
    """The ranges of every address ``host`` is (an IP) or resolves to."""
    try:
        return {address_kind(host.strip("[]"))}
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return {None}  # unresolvable: the request itself will fail and be retried
    return {address_kind(str(info[4][0])) for info in infos}


def redirect_refusal(link: set[str | None], target: set[str | None]) -> str | None:
    """Why a redirect from a link resolving into ``link`` ranges to one resolving into
    ``target`` ranges is refused (None: followed)."""
    for kind in sorted(k for k in target if k is not None):
        if kind not in link:
            return kind
    return None


async def _check_redirect(url: str, target: httpx.URL, what: str) -> None:
    """ArtifactRejected when a redirect leads into a restricted range the link was not in."""
    kind = redirect_refusal(await _host_kinds(httpx.URL(url).host), await _host_kinds(target.host))
    if kind is not None:
        raise ArtifactRejected(
            f"{what} redirects to {strip_query(str(target))!r}, a {kind} address; a "
            f"redirect is followed into {kind} addresses only when the link itself points "
            "there, so nothing was fetched."
        )


class ArtifactFetcher:
    """Streams artifact links into a blob store, with a size cap and no redirects to
    anything but http(s). Never sends the API key: artifact hosts get plain GETs."""

    def __init__(
        self,
        store: BlobStore,
        config: ArtifactConfig,
        *,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.store = store
        self.max_bytes = config.max_bytes
        self.should_stop = should_stop or (lambda: False)
        self.requests = 0
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
        )
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=limits,
            transport=_bulk_transport(limits),
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
            except httpx.HTTPError as exc:
                raise ArtifactTransferError(
                    f"{what} {shown}: {_failure(exc)}; retried on a later pass."
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
                    await _check_redirect(url, target, f"{what} {shown}")
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
        label = f"{what} {strip_query(url)}"
        encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
        # Content-Length is the stored size only of a body stored as it came.
        length = None if encoded else _content_length(response)
        if length is not None and length > self.max_bytes:
            raise ArtifactRejected(
                f"{label} is {format_size(length)} (Content-Length), over the "
                f"{self._limit_text()} limit; nothing was stored. Raise --max-artifact-size "
                "and run `archiver verify --repair --retry-failed` to fetch it."
            )
        content_type = response.headers.get("content-type")
        key = blob_key(task_id, created, kind, extension_for(content_type, url))
        store = self.store
        await asyncio.to_thread(store.discard_temporaries, task_id, kind)
        writer = await asyncio.to_thread(store.begin, task_id, kind)
        # An unencoded body is stored as it comes (aiter_raw skips httpx's re-chunking); a
        # host that compresses anyway gets decoded, as before.
        body = response.aiter_bytes() if encoded else response.aiter_raw()
        blob = await self._write(body, writer, key, length, label)
        files: list[dict[str, Any]] | None = None
        listing_error = None
        if kind == "downloads":
            files, listing_error = await asyncio.to_thread(list_zip, store, key)
        return Fetched(blob, content_type, files, listing_error)

    async def _write(
        self,
        body: AsyncIterator[bytes],
        writer: BlobWriter,
        key: str,
        length: int | None,
        label: str,
    ) -> BlobInfo:
        """Stream ``body`` into ``writer`` and commit it as ``key`` once it is whole (all
        ``length`` bytes, when known); the temporary blob is removed on any failure."""
        spool = _Spool(writer)
        committed = False
        try:
            async for piece in body:
                spool.received += len(piece)
                self._check_streaming(spool.received, label)
                await spool.add(piece)
            await spool.flush()
            if length is not None and writer.size != length:
                raise ArtifactTransferError(
                    f"{label}: received {writer.size} of {length} bytes; retried on a later pass."
                )
            blob = await asyncio.to_thread(writer.commit, key)
            committed = True
            return blob
        except httpx.TimeoutException as exc:
            raise ArtifactTransferError(
                f"{label}: timed out after {spool.received} bytes ({type(exc).__name__}); "
                "retried on a later pass."
            ) from None
        except httpx.HTTPError as exc:
            raise ArtifactTransferError(
                f"{label}: the transfer broke after {spool.received} bytes "
                f"({type(exc).__name__}: {clean_message(str(exc))}); retried on a later pass."
            ) from None
        finally:
            if not committed:
                await spool.drain()
                await asyncio.to_thread(writer.abort)

    def _check_streaming(self, received: int, label: str) -> None:
        """Stop a transfer that grew past the size limit or whose pass is stopping."""
        if received > self.max_bytes:
            raise ArtifactRejected(
                f"{label} grew past the {self._limit_text()} limit while "
                "streaming; the transfer was stopped and nothing was stored. Raise "
                "--max-artifact-size and run `archiver verify --repair --retry-failed`."
            )
        if self.should_stop():
            raise TransferInterrupted(f"{label}: the pass is stopping")


def _content_length(response: httpx.Response) -> int | None:
    """The response's Content-Length, if it gives a readable one."""
    raw_length = response.headers.get("content-length")
    if raw_length is not None and raw_length.strip().isdigit():
        return int(raw_length)
    return None


class _Spool:
    """Hands a body to a blob writer: writing (and hashing) runs on a thread while the
    next megabyte arrives, one write in flight, handed over in CHUNK_BYTES pieces, never
    one per socket read."""

    def __init__(self, writer: BlobWriter) -> None:
        self.writer = writer
        #: Bytes received so far (for the size limit and messages).
        self.received = 0
        self._pieces: list[bytes] = []
        self._pending = 0
        self._writing: asyncio.Future[None] | None = None

    async def add(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._pending += len(piece)
        if self._pending >= CHUNK_BYTES:
            if self._writing is not None:
                # Shielded: a cancelled transfer must still see this write end (drain)
                # before the temporary file is removed.
                await asyncio.shield(self._writing)
            chunk, self._pieces, self._pending = b"".join(self._pieces), [], 0
            loop = asyncio.get_running_loop()
            self._writing = loop.run_in_executor(None, self.writer.write, chunk)

    async def flush(self) -> None:
        """Write what is left, once the write in flight has ended."""
        if self._writing is not None:
            await asyncio.shield(self._writing)
            self._writing = None
        if self._pieces:
            await asyncio.to_thread(self.writer.write, b"".join(self._pieces))

    async def drain(self) -> None:
        """After a failure: the write in flight must end before the temporary file is
        removed; its own error, if any, is secondary to the one being raised."""
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
