"""The Smooth API client: List Tasks and Get Task over httpx, with retries.

Only this module speaks HTTP to the API. It returns validated :mod:`archiver.models`
objects and raises :mod:`archiver.exceptions` errors; httpx's own exceptions never leave it.
Retries use stamina (exponential backoff with jitter; ``Retry-After`` honoured); tests
switch them off with ``stamina.set_testing(True)``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import stamina

from archiver.config import ClientConfig
from archiver.exceptions import (
    ApiError,
    ApiUnreachable,
    ApiUrlWrong,
    AuthError,
    CircuitOpen,
    MalformedPayload,
    RequestWithheld,
    TaskNotFound,
    TransientApiError,
)
from archiver.jsonvalues import MAX_DEPTH, loads_json
from archiver.models import TaskInfo, parse_envelope, parse_task
from archiver.redact import redact

if TYPE_CHECKING:
    from aiolimiter import AsyncLimiter

log = logging.getLogger(__name__)

#: Longest ``Retry-After`` honoured; a server asking for more gets this.
MAX_RETRY_AFTER_S = 60.0
RETRY_WAIT_INITIAL_S = 0.5
RETRY_WAIT_MAX_S = 10.0
USER_AGENT = "smooth-archiver"


@dataclass(frozen=True)
class SkippedItem:
    """A List Tasks item that failed validation: why, and its id and ``created_at`` when
    they can still be read, so the task can be tracked by id and read with Get Task."""

    message: str
    task_id: str | None
    created_at: int | None


@dataclass
class ListPage:
    """One page of List Tasks: the valid tasks and the malformed items."""

    tasks: list[TaskInfo]
    size: int
    skipped: list[SkippedItem] = field(default_factory=list)


def _salvage(item: Any) -> tuple[str | None, int | None]:
    """The id and ``created_at`` of a malformed list item, where they are usable."""
    if not isinstance(item, dict):
        return None, None
    task_id, created_at = item.get("id"), item.get("created_at")
    if not isinstance(task_id, str) or not task_id.strip():
        task_id = None
    if type(created_at) is not int or not -(2**63) <= created_at < 2**63:
        created_at = None
    return task_id, created_at


def _backoff_hook(exc: BaseException) -> bool | float:
    """stamina's ``on`` hook: retry transient errors, waiting ``Retry-After`` when given."""
    if isinstance(exc, ApiUnreachable):
        return False  # the client already tried; the pass ends
    if isinstance(exc, TransientApiError):
        if exc.retry_after is not None:
            return exc.retry_after
        return True
    return False


def _log_retry(details: stamina.instrumentation.RetryDetails) -> None:
    """One debug line per scheduled retry: what, which attempt, why and how long the wait.

    Debug only: a request that succeeds on a retry is nothing an operator must act on; one
    that finally fails is reported where it fails (tasks.last_error, the error log line)."""
    log.debug(
        "retrying (attempt %d, waiting %.1fs): %s",
        details.retry_num + 1,
        details.wait_for,
        details.caused_by,
    )


stamina.instrumentation.set_on_retry_hooks([_log_retry])


#: OpenSSL's verify codes for a chain that ends at a CA nobody trusts here (X509_V_ERR_
#: UNABLE_TO_GET_ISSUER_CERT, DEPTH_ZERO_SELF_SIGNED_CERT, SELF_SIGNED_CERT_IN_CHAIN,
#: UNABLE_TO_GET_ISSUER_CERT_LOCALLY, UNABLE_TO_VERIFY_LEAF_SIGNATURE).
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})


def connection_failure(exc: BaseException) -> str | None:
    """Why a connection could not be made, when its causes say so: aiohttp's transport
    reports a refused connection and an untrusted certificate alike as ConnectTimeout."""
    causes: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(causes) < 8:
        causes.append(seen)
        seen = seen.__cause__ or seen.__context__
    for cause in causes:
        # ssl's own exception (aiohttp's wrappers subclass it without its details).
        if isinstance(cause, ssl.SSLCertVerificationError) and type(cause).__module__ == "ssl":
            detail = str(cause.verify_message or cause.reason).rstrip(".")
            if cause.verify_code in _UNKNOWN_ISSUER:
                return (
                    f"TLS certificate not trusted: {detail}; for a proxy or a private CA, "
                    "set SSL_CERT_FILE to its CA bundle"
                )
            return f"TLS certificate rejected: {detail}"  # expired, another host's name...
        if isinstance(cause, ssl.SSLError) and type(cause).__module__ == "ssl":
            return f"TLS handshake failed: {cause.reason or cause}"
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if (
            isinstance(cause, OSError)
            and cause.errno is not None
            and "Name or service" in str(cause)
        ):
            return "host name not found"
    return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _tls_verification(api_url: str) -> ssl.SSLContext | bool:
    """What the transport verifies TLS with: httpx's default (certifi's CA bundle) for an
    https API. Requests only ever go to the API URL, so an http one never uses TLS: it gets
    a context that trusts no CA at all (it would refuse any certificate), which costs
    nothing to make where loading the bundle takes ~35 ms of start-up."""
    if urlsplit(api_url).scheme == "https":
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing. The API authenticates by header and sets no
    cookies; reading ``Set-Cookie`` into a jar costs ~0.05 ms per response (httpx builds
    urllib request and response stand-ins for it), a tenth of the client's time per poll."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _HttpClient(httpx.AsyncClient):
    """httpx's client with :class:`_NoCookies` as its jar: no cookie is stored from a
    response or sent with a request (a load balancer's affinity cookie is not needed:
    every request stands alone)."""

    _jar = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._jar

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        if cookies:
            raise ValueError("the API client keeps no cookies")


class SmoothClient:
    """Async client for the two read endpoints the archiver needs."""

    def __init__(
        self, config: ClientConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self.requests = 0
        #: Requests answered with a well-formed body (the API was reached and understood).
        self.successes = 0
        #: Whether any HTTP response came back at all in this client's life.
        self.reached = False
        self.consecutive_failures = 0
        self._unreached_attempts = 0
        #: Event-loop time after which failed requests are not retried (set by the engine).
        self.retry_deadline: float | None = None
        #: Whether the pass is stopping (set by the engine): a Get Task request that
        #: waited for a slot is then not sent (RequestWithheld).
        self.halted: Callable[[], bool] | None = None
        self._limiter: AsyncLimiter | None = None
        if config.rate_limit is not None:
            from aiolimiter import AsyncLimiter  # only with --rate-limit (start-up time)

            self._limiter = AsyncLimiter(config.rate_limit, 1.0)
        # One connection more than Get Task requests may hold: backfill lists while it
        # polls, and a List Tasks request waiting for a connection would starve the
        # workers it feeds.
        limits = httpx.Limits(
            max_connections=config.task_requests + 1,
            max_keepalive_connections=config.task_requests + 1,
        )
        #: Get Task requests in flight, at most ``task_requests``. The pass runs a few
        #: more workers than that (engine.workers), each ready to send the moment a slot
        #: frees, so a slot never waits for the CPU work of the answer before it.
        self._task_slots = asyncio.Semaphore(config.task_requests)
        if transport is None:
            # httpcore's own pool spends O(connections) per request checking idle sockets,
            # which dominates at high concurrency; aiohttp's pool does not (benchmarks/).
            # Imported here: `status` reaches this module (through artifacts) but sends no
            # request, and aiohttp is slow to import.
            from httpx_aiohttp import AiohttpTransport

            transport = AiohttpTransport(limits=limits, verify=_tls_verification(config.api_url))
        self._http = _HttpClient(
            base_url=config.api_url,
            headers={"apikey": config.api_key.reveal(), "user-agent": USER_AGENT},
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=limits,
            transport=transport,
            follow_redirects=False,
        )
        #: The API URL ending in "/": requests go out as complete URLs, which httpx parses
        #: once instead of three times (base URL, path and parameters merged). httpx
        #: writes a bare host without its "/" path, hence the check.
        root = str(self._http.base_url.copy_with(query=None, fragment=None))
        self._root = root if root.endswith("/") else root + "/"

    async def __aenter__(self) -> SmoothClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_tasks(self, *, before: int | None, limit: int) -> ListPage:
        """One page of List Tasks, newest first, created strictly before ``before``."""
        params: dict[str, Any] = {"l": limit}
        if before is not None:
            params["t"] = before
        context = f"List Tasks (t={before}, l={limit})"
        body = await self._get_json(self._url("task", params), context=context, listing=True)
        items = parse_envelope(body, context=context)
        if not isinstance(items, list):
            raise MalformedPayload(
                f"{context}: expected 'r' to be a list of tasks, got {type(items).__name__}."
            )
        self.successes += 1
        page = ListPage(tasks=[], size=len(items))
        for index, item in enumerate(items):
            try:
                page.tasks.append(parse_task(item, context=f"{context} item {index}"))
            except MalformedPayload as exc:
                task_id, created_at = _salvage(item)
                page.skipped.append(SkippedItem(str(exc), task_id, created_at))
        return page

    async def get_task(
        self, task_id: str, *, event_t: int = 0, downloads: bool = False
    ) -> TaskInfo:
        """Get Task with the events strictly after ``event_t``."""
        params: dict[str, Any] = {"event_t": event_t}
        if downloads:
            params["downloads"] = "true"
        context = f"Get Task {task_id!r} (event_t={event_t})"
        url = self._url("task/" + quote(task_id, safe=""), params)
        body = await self._get_json(url, context=context, task_id=task_id)
        task = parse_task(parse_envelope(body, context=context), context=context)
        if task.id != task_id:
            raise MalformedPayload(
                f"{context}: the API answered with task id {task.id!r}; expected {task_id!r}."
            )
        self.successes += 1
        return task

    def _url(self, path: str, params: dict[str, Any]) -> str:
        return f"{self._root}{path}?{urlencode(params)}"

    async def _get_json(
        self,
        url: str,
        *,
        context: str,
        task_id: str | None = None,
        listing: bool = False,
    ) -> Any:
        """GET with retries; counts failures in a row for the circuit breaker."""
        self._check_circuit(context)
        try:
            body = await self._get_json_retrying(
                url, context=context, task_id=task_id, listing=listing
            )
        except TransientApiError:
            # Only failures of the API as a whole count; a malformed task is that task's
            # problem and neither opens nor resets the circuit.
            self.consecutive_failures += 1
            raise
        except (MalformedPayload, CircuitOpen):
            raise
        except ApiError:
            self.consecutive_failures = 0
            raise
        self.consecutive_failures = 0
        return body

    def _check_circuit(self, context: str) -> None:
        """Raise CircuitOpen once ``circuit_breaker_failures`` requests failed in a row."""
        if self.consecutive_failures >= self.config.circuit_breaker_failures:
            raise CircuitOpen(
                f"{context}: not sent; the last {self.consecutive_failures} API requests failed "
                "in a row, so this pass stops early (the next pass starts afresh)."
            )

    def _may_send(self, context: str) -> None:
        """Raise CircuitOpen, or RequestWithheld once the pass is stopping (``halted``)."""
        self._check_circuit(context)
        if self.halted is not None and self.halted():
            raise RequestWithheld(f"{context}: not sent, the pass is stopping")

    async def _rate_limited(self) -> bool:
        """Wait for a token of ``--rate-limit``; whether there is such a limit."""
        if self._limiter is None:
            return False
        await self._limiter.acquire()
        return True

    async def _get_json_retrying(
        self,
        url: str,
        *,
        context: str,
        task_id: str | None,
        listing: bool,
    ) -> Any:
        # The first attempt runs outside stamina: setting up its retry machinery costs
        # ~0.04 ms per request, most requests succeed, and this is the hot path of every
        # poll. A failure enters stamina with that failure as its first attempt, so the
        # waits, the attempt count, the hooks and the deadline are stamina's as before.
        try:
            return await self._get_json_once(url, context=context, task_id=task_id, listing=listing)
        except Exception as exc:
            if _backoff_hook(exc) is False:
                raise
            first_failure: Exception | None = exc
            last_failure: Exception = exc
        retry_budget = None
        if self.retry_deadline is not None:
            # --max-runtime: no new retries once the run's deadline has passed.
            retry_budget = max(self.retry_deadline - asyncio.get_running_loop().time(), 0.001)
        try:
            async for attempt in stamina.retry_context(
                on=_backoff_hook,
                attempts=self.config.retry_attempts,
                timeout=retry_budget,
                wait_initial=RETRY_WAIT_INITIAL_S,
                wait_max=RETRY_WAIT_MAX_S,
            ):
                with attempt:
                    if first_failure is not None:
                        failure, first_failure = first_failure, None
                        raise failure
                    try:
                        return await self._get_json_once(
                            url, context=context, task_id=task_id, listing=listing
                        )
                    except RequestWithheld:
                        raise
                    except Exception as exc:
                        last_failure = exc
                        raise
        except RequestWithheld:
            # The pass began to stop while a retry waited for its slot: the request failed
            # with its last attempt's error, which is what the task and the circuit count.
            raise last_failure from None
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    async def _get_json_once(
        self,
        url: str,
        *,
        context: str,
        task_id: str | None,
        listing: bool,
    ) -> Any:
        if task_id is None:
            await self._rate_limited()
            status, raw = await self._exchange(url, context=context, task_id=None, listing=listing)
        else:
            async with self._task_slots:  # held for the exchange alone, not the parsing
                # Asked again after each wait: the pass may have begun to stop, or other
                # requests failed, meanwhile. A token is taken only with a slot in hand, so
                # requests waiting for a slot never burst above --rate-limit.
                self._may_send(context)
                if await self._rate_limited():
                    self._may_send(context)
                status, raw = await self._exchange(
                    url, context=context, task_id=task_id, listing=listing
                )
        try:
            return loads_json(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            # A proxy's error page, a captive portal or a cut-off body behind a 200: a fault
            # on the way, not data, so it is retried like a 5xx.
            raise TransientApiError(
                f"{context}: HTTP {status} but the body is not a JSON document ({exc}); "
                f"first bytes: {self._excerpt(raw, 80)}."
            ) from None
        except RecursionError:
            raise MalformedPayload(
                f"{context}: the JSON body is nested too deeply to read (more than "
                f"{MAX_DEPTH:,} levels); this is not a TaskResponse."
            ) from None

    async def _exchange(
        self, url: str, *, context: str, task_id: str | None, listing: bool
    ) -> tuple[int, bytes]:
        """One GET: its status and body, or the error its status or the transport means."""
        self.requests += 1
        try:
            async with (
                asyncio.timeout(self.config.total_timeout_s),
                self._http.stream("GET", url) as response,
            ):
                self.reached = True
                status = response.status_code
                if status in (401, 403):
                    # Said without the request's context: the key is the problem,
                    # whichever request met it.
                    raise AuthError(
                        f"the Smooth API at {self.config.api_url} rejected the key (HTTP "
                        f"{status}): CIRCLEMIND_API_KEY is wrong, revoked or for another "
                        "account; set it to a valid key.",
                        status_code=status,
                    )
                if status == 404 and task_id is not None:
                    raise TaskNotFound(f"{context}: HTTP 404, no such task.", status_code=404)
                if status == 404 and listing:
                    raise ApiUrlWrong(
                        f"List Tasks at {self.config.api_url}/task answered HTTP 404: the API "
                        "URL looks wrong. Check --api-url / ARCHIVER_API_URL (it should end in "
                        "/api/v1, e.g. https://api.smooth.sh/api/v1).",
                        status_code=404,
                    )
                if status == 429 or status >= 500:
                    raise TransientApiError(
                        f"{context}: HTTP {status}.",
                        status_code=status,
                        retry_after=parse_retry_after(response.headers.get("retry-after")),
                    )
                if status not in (200, 202):
                    detail = await self._read_capped(response, context)
                    raise ApiError(
                        f"{context}: unexpected HTTP {status}: {self._excerpt(detail, 200)}",
                        status_code=status,
                    )
                raw = await self._read_capped(response, context)
        except (httpx.TimeoutException, TimeoutError, httpx.TransportError) as exc:
            raise self._transport_error(context, exc) from None
        return status, raw

    #: Connection attempts made before the first response of a client's life, after which
    #: an unreachable API ends the pass (a pass that cannot connect fails in seconds).
    UNREACHABLE_AFTER = 2

    def _transport_error(self, context: str, exc: BaseException) -> TransientApiError:
        reason = connection_failure(exc)
        if reason is not None:
            self._unreached_attempts += 0 if self.reached else 1
            message = f"{context}: {reason} ({self.config.api_url})."
            if not self.reached and self._unreached_attempts >= self.UNREACHABLE_AFTER:
                return ApiUnreachable(
                    f"cannot connect to the Smooth API at {self.config.api_url} ({reason}): "
                    "check --api-url / ARCHIVER_API_URL, the network and any proxy; nothing "
                    "was changed in the archive."
                )
            return TransientApiError(message)
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            return TransientApiError(f"{context}: timed out ({type(exc).__name__}).")
        return TransientApiError(f"{context}: connection failed ({type(exc).__name__}: {exc}).")

    def _excerpt(self, body: bytes, limit: int) -> str:
        """The first ``limit`` characters of a body, as a repr, for an error message (stored
        in last_error and sync_runs). The key (a 422 may echo the apikey header) is masked
        in the whole body first, as sent, JSON-escaped or URL-encoded, so no cut can leave
        a part of it; then URL query strings; then the repr is masked again as it writes
        the key."""
        key = self.config.api_key.reveal()
        text = redact(body.decode("utf-8", "replace"), [key])
        return redact(repr(text[:limit]), [key, repr(key)[1:-1]])

    async def _read_capped(self, response: httpx.Response, context: str) -> bytes:
        limit = self.config.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise MalformedPayload(
                    f"{context}: the response is larger than {limit} bytes; raise the cap "
                    "only if the API really sends such bodies."
                )
            chunks.append(chunk)
        return b"".join(chunks)
