"""The API client in isolation: httpx.MockTransport stands in for the API."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import stamina

from archiver.client import (
    MAX_RETRY_AFTER_S,
    SmoothClient,
    _backoff_hook,
    _tls_verification,
    parse_retry_after,
)
from archiver.config import ApiKey, ClientConfig, validate_api_url
from archiver.exceptions import (
    ApiError,
    AuthError,
    CircuitOpen,
    MalformedPayload,
    RequestWithheld,
    TaskNotFound,
    TransientApiError,
)
from tests.conftest import TlsServer

KEY = "sk-unit-7d1f00aa"
TASK = {"id": "t1", "status": "running", "events": [{"name": "x", "payload": {}, "timestamp": 5}]}


def make_client(
    handler: Callable[[httpx.Request], httpx.Response], **config: object
) -> SmoothClient:
    cfg = ClientConfig(api_url="http://api.test/api/v1", api_key=ApiKey(KEY), **config)  # type: ignore[arg-type]
    return SmoothClient(cfg, transport=httpx.MockTransport(handler))


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _get(client: SmoothClient, task_id: str = "t1"):  # type: ignore[no-untyped-def]
    async with client:
        return await client.get_task(task_id, event_t=7, downloads=True)


def test_get_task_sends_key_header_and_cursor() -> None:
    """Get Task sends the apikey header, event_t and downloads=true, and parses the task."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"r": TASK})

    task = run(_get(make_client(handler)))
    assert task.id == "t1" and task.events and task.events[0].timestamp == 5
    assert seen[0].headers["apikey"] == KEY
    assert seen[0].url.params["event_t"] == "7" and seen[0].url.params["downloads"] == "true"


def test_task_id_is_encoded_into_one_path_segment() -> None:
    """An id with a slash or '..' cannot address another endpoint."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(404, json={"detail": "nope"})

    with pytest.raises(TaskNotFound):
        run(_get(make_client(handler), "../x/y"))
    assert seen[0].startswith("/api/v1/task/..%2Fx%2Fy")


@pytest.mark.parametrize(
    ("api_url", "prefix"),
    [
        ("http://api.test", "/"),
        ("http://api.test/", "/"),
        ("http://api.test:8080/api/v1", "/api/v1/"),
        ("https://api.test/smooth/api/v1/", "/smooth/api/v1/"),
    ],
)
def test_requests_go_under_the_api_url_whatever_its_form(api_url: str, prefix: str) -> None:
    """A bare host or a path, with or without a trailing slash: requests go under it."""
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        if request.url.path.endswith("/task"):
            return httpx.Response(200, json={"r": []})
        return httpx.Response(202, json={"r": {**TASK, "id": "a b/c"}})

    base = validate_api_url(api_url)
    client = SmoothClient(
        ClientConfig(api_url=base, api_key=ApiKey(KEY)), transport=httpx.MockTransport(handler)
    )

    async def both() -> None:
        async with client:
            await client.list_tasks(before=None, limit=5)
            await client.get_task("a b/c", event_t=7)

    run(both())
    host = httpx.URL(api_url).host
    assert [u.host for u in seen] == [host, host]
    assert [u.raw_path.decode() for u in seen] == [
        f"{prefix}task?l=5",
        f"{prefix}task/a%20b%2Fc?event_t=7",
    ]


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_raises_auth_error_without_the_key(status: int) -> None:
    """401/403 raise AuthError (exit 2) whose message never contains the key."""
    client = make_client(lambda r: httpx.Response(status, json={"detail": f"bad key {KEY}"}))
    with pytest.raises(AuthError) as info:
        run(_get(client))
    assert info.value.exit_code == 2
    assert KEY not in str(info.value)


def test_transient_errors_are_retried_until_success() -> None:
    """5xx and connection errors are retried (stamina), then the answer is used."""
    stamina.set_testing(True, attempts=4)
    answers: list[Callable[[], httpx.Response]] = [
        lambda: httpx.Response(503),
        lambda: (_ for _ in ()).throw(httpx.ConnectError("refused")),
        lambda: httpx.Response(429, headers={"Retry-After": "0"}),
        lambda: httpx.Response(200, json={"r": {**TASK, "status": "done"}}),
    ]
    client = make_client(lambda r: answers.pop(0)())
    task = run(_get(client))
    assert task.status == "done" and client.requests == 4


def test_retries_give_up_with_a_transient_error() -> None:
    """When every attempt fails the last transient error surfaces, naming the status."""
    stamina.set_testing(True, attempts=3)
    client = make_client(lambda r: httpx.Response(502))
    with pytest.raises(TransientApiError, match="HTTP 502"):
        run(_get(client))
    assert client.requests == 3


def test_a_request_waiting_for_its_slot_once_the_pass_stops_is_withheld() -> None:
    """A Get Task that gets its slot after the pass began to stop is not sent."""
    client = make_client(lambda r: httpx.Response(200, json={"r": TASK}))
    client.halted = lambda: True
    with pytest.raises(RequestWithheld, match="not sent"):
        run(_get(client))
    assert client.requests == 0 and client.consecutive_failures == 0


def test_a_withheld_retry_fails_with_the_error_of_the_attempt_before() -> None:
    """When the pass stops while a failed request waits to be retried, the request fails
    with its real error (the task records it, the circuit counts it), not as withheld."""
    stamina.set_testing(True, attempts=3)
    stopping: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stopping.append(True)  # the pass begins to stop while this answer is on its way
        return httpx.Response(503)

    client = make_client(handler)
    client.halted = lambda: bool(stopping)
    with pytest.raises(TransientApiError, match="HTTP 503"):
        run(_get(client))
    assert client.requests == 1 and client.consecutive_failures == 1


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not a JSON document"),
        (json.dumps({"r": {"id": "t1", "status": 5}}).encode(), "field 'status'"),
        (json.dumps({"r": {"status": "done"}}).encode(), "field 'id'"),
        (json.dumps({"x": 1}).encode(), "'r' member"),
        (json.dumps({"r": {"id": "other", "status": "done"}}).encode(), "expected 't1'"),
        (
            json.dumps({"r": {**TASK, "events": [{"name": "x", "timestamp": 2**70}]}}).encode(),
            "timestamp",
        ),
    ],
)
def test_bodies_that_are_not_a_task_raise_malformed_payload(body: bytes, match: str) -> None:
    """Absurd nesting, wrong types and missing fields: MalformedPayload."""
    client = make_client(lambda r: httpx.Response(200, content=body))
    with pytest.raises(MalformedPayload, match=match):
        run(_get(client))


@pytest.mark.parametrize(
    "body", [b"<html><h1>Bad gateway</h1></html>", b"\xff\xfe{not utf-8", b'{"r": {"id": "t1"']
)
def test_a_200_that_is_not_a_json_document_is_transient_and_retried(body: bytes) -> None:
    """An HTML error page, invalid UTF-8 or a cut-off body behind a 200 is a fault on the
    way (a proxy, a captive portal): retried, and transient if it persists."""
    stamina.set_testing(True, attempts=3)
    client = make_client(lambda r: httpx.Response(200, content=body))
    with pytest.raises(TransientApiError, match="not a JSON document"):
        run(_get(client))
    assert client.requests == 3


def test_oversized_body_is_refused_while_streaming() -> None:
    """A body over max_response_bytes fails that request without being read whole."""
    client = make_client(
        lambda r: httpx.Response(200, content=b"x" * 5000), max_response_bytes=1000
    )
    with pytest.raises(MalformedPayload, match="larger than 1000 bytes"):
        run(_get(client))


def test_circuit_breaker_stops_sending_after_consecutive_failures() -> None:
    """After N failures in a row the client refuses further requests with CircuitOpen."""
    client = make_client(lambda r: httpx.Response(500), circuit_breaker_failures=3)

    async def hammer() -> None:
        async with client:
            for _ in range(3):
                with pytest.raises(TransientApiError):
                    await client.get_task("t1")
            with pytest.raises(CircuitOpen):
                await client.get_task("t1")

    run(hammer())
    assert client.requests == 3


def test_a_success_resets_the_circuit_breaker() -> None:
    """Failures separated by successes never open the circuit."""
    answers = iter([500, 200, 500, 200, 500, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, json={"r": {**TASK, "status": "done"}})

    client = make_client(handler, circuit_breaker_failures=2)

    async def alternate() -> int:
        ok = 0
        async with client:
            for _ in range(6):
                try:
                    await client.get_task("t1")
                    ok += 1
                except TransientApiError:
                    pass
        return ok

    assert run(alternate()) == 3


def test_rate_limit_spaces_out_concurrent_requests() -> None:
    """With --rate-limit 20, 30 concurrent requests cannot all start within one second."""
    starts: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        starts.append(asyncio.get_running_loop().time())
        return httpx.Response(200, json={"r": {**TASK, "status": "done"}})

    client = make_client(handler, rate_limit=20.0)  # type: ignore[arg-type]

    async def burst() -> None:
        async with client:
            await asyncio.gather(*(client.get_task("t1") for _ in range(30)))

    run(burst())
    assert len(starts) == 30
    # A leaky bucket of 20/s admits at most ~20 in the first second: the 30th comes later.
    assert starts[-1] - starts[0] >= 0.4


def test_list_tasks_keeps_valid_items_and_reports_malformed_ones() -> None:
    """Malformed List items are reported with their id and created_at where readable; the
    other tasks are still returned."""
    page = {
        "r": [
            {"id": "a", "status": "done"},
            {"id": 5},
            {"id": "b", "status": "running"},
            {"id": "c", "status": 123, "created_at": 1700},
            {"id": " ", "status": "done", "created_at": True},
        ]
    }
    client = make_client(lambda r: httpx.Response(200, json=page))

    async def listing():  # type: ignore[no-untyped-def]
        async with client:
            return await client.list_tasks(before=None, limit=5)

    result = run(listing())
    assert [t.id for t in result.tasks] == ["a", "b"]
    assert result.size == 5
    assert [(s.task_id, s.created_at) for s in result.skipped] == [
        (None, None),  # an int id is no id
        ("c", 1700),
        (None, None),  # a blank id and a boolean created_at are not usable either
    ]
    assert "item 1" in result.skipped[0].message and "item 3" in result.skipped[1].message


def test_retry_after_seconds_date_and_cap() -> None:
    """Retry-After in seconds or as an HTTP date, capped, and used as stamina's wait."""
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    date = (now + timedelta(seconds=20)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(date, now=now) == pytest.approx(20.0)
    assert parse_retry_after("99999") == MAX_RETRY_AFTER_S
    assert parse_retry_after("soon") is None
    assert _backoff_hook(TransientApiError("x", retry_after=4.0)) == 4.0
    assert _backoff_hook(TransientApiError("x")) is True
    assert _backoff_hook(MalformedPayload("x")) is False


def test_no_retries_after_the_run_deadline() -> None:
    """With --max-runtime passed, a failing request is not retried for minutes."""
    stamina.set_testing(False)  # real retry timing: the deadline is what is under test
    client = make_client(lambda r: httpx.Response(500))

    async def late() -> None:
        client.retry_deadline = asyncio.get_running_loop().time() - 1.0
        async with client:
            with pytest.raises(TransientApiError):
                await client.get_task("t1")

    run(late())
    assert client.requests <= 2  # five attempts without a deadline


def test_a_first_failure_is_retried_after_staminas_wait(caplog: pytest.LogCaptureFixture) -> None:
    """With production retries, a failed first attempt is retried after the wait stamina
    computes (here the server's Retry-After), logged as attempt 2 at debug level."""
    stamina.set_testing(False)
    answers = [
        httpx.Response(503, headers={"Retry-After": "0.3"}),
        httpx.Response(200, json={"r": {**TASK, "status": "done"}}),
    ]
    client = make_client(lambda r: answers.pop(0))
    with caplog.at_level("DEBUG", logger="archiver.client"):
        task = run(_get(client))
    assert task.status == "done" and client.requests == 2
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 1 and retries[0].startswith("retrying (attempt 2, waiting 0.3s)")


def test_cookies_set_by_a_response_are_never_sent_back() -> None:
    """The client keeps no cookie jar: a Set-Cookie (a load balancer's, say) is ignored."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"r": TASK}, headers={"set-cookie": "affinity=abc; Path=/"})

    async def twice() -> None:
        async with make_client(handler) as client:
            await client.get_task("t1")
            await client.get_task("t1")

    run(twice())
    assert len(seen) == 2 and all("cookie" not in r.headers for r in seen)


def test_tls_is_verified_with_the_ca_bundle_and_never_switched_off() -> None:
    """An https API is verified as httpx does by default; an http one, which never uses
    TLS, gets a context that still checks every certificate and trusts none."""
    assert _tls_verification("https://api.smooth.sh/api/v1") is True
    context = _tls_verification("http://127.0.0.1:8080/api/v1")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.get_ca_certs() == []


def test_an_https_api_with_an_untrusted_certificate_is_refused_before_the_key_is_sent(
    tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS is verified: an untrusted certificate fails the request with a message that
    says so (not a timeout), the key is never sent; once its CA is trusted, it works."""
    config = ClientConfig(api_url=f"{tls_server.url}/api/v1", api_key=ApiKey(KEY))

    async def get() -> str:
        async with SmoothClient(config) as client:
            return (await client.get_task("t1")).id

    with pytest.raises(TransientApiError, match="TLS certificate not trusted") as refused:
        run(get())
    assert "timed out" not in str(refused.value) and KEY not in str(refused.value)
    assert tls_server.requests == []

    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca_file))  # httpx's context trusts it
    assert run(get()) == "t1"
    assert tls_server.requests == ["/api/v1/task/t1?event_t=0"]


def test_a_certificate_for_another_host_is_rejected_by_name_not_blamed_on_the_ca(
    tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trusted CA's certificate for another name fails as 'rejected', with no CA advice."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_server.ca_file))
    other_name = tls_server.url.replace("127.0.0.1", "localhost")  # the certificate: 127.0.0.1
    config = ClientConfig(api_url=f"{other_name}/api/v1", api_key=ApiKey(KEY))

    async def get() -> None:
        async with SmoothClient(config) as client:
            await client.get_task("t1")

    with pytest.raises(TransientApiError, match=r"TLS certificate rejected: .*localhost") as bad:
        run(get())
    assert "SSL_CERT_FILE" not in str(bad.value) and ".;" not in str(bad.value)
    assert tls_server.requests == []


def test_a_key_echoed_in_an_error_body_is_masked_even_as_repr_escapes_it() -> None:
    """A body quoting a key with characters repr escapes never shows the key either way."""
    key = "sk-q'uote\\d-7d1f00aa"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, content=f"bad key {key}".encode())

    cfg = ClientConfig(api_url="http://api.test/api/v1", api_key=ApiKey(key))
    client = SmoothClient(cfg, transport=httpx.MockTransport(handler))
    with pytest.raises(ApiError) as failed:
        run(_get(client))
    message = str(failed.value)
    assert "bad key" in message and key not in message and repr(key)[1:-1] not in message
