"""The gate of `archiver serve`: the token or the loopback Host check on every request,
and the security headers (CSP and friends) on every response."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from archiver.web.access import is_loopback

#: Pages: nothing but this origin's own files; no inline script, no plugins, no framing.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
#: Blobs are bytes to play or save, never a document that could run anything.
BLOB_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"
COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class Guard:
    """Every request: the token when one is set (HTTP Basic, any user name, the token as
    password; or ``Authorization: Bearer``), a loopback Host header when none is (so a web
    page cannot reach a loopback-only server through DNS rebinding), and the security
    headers on every response."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        refusal = self._refusal(headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in COMMON_HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, headers: dict[str, bytes]) -> Response | None:
        if self.token is None:
            host = headers.get("host", b"").decode("latin-1").strip().lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not is_loopback(name):
                return PlainTextResponse(
                    "archiver serve: this server answers only to 127.0.0.1/localhost; to "
                    "reach it under another name, set ARCHIVER_SERVE_TOKEN.\n",
                    status_code=421,
                )
            return None
        if self._authorized(headers.get("authorization", b"")):
            return None
        return PlainTextResponse(
            "archiver serve: the token is required (HTTP Basic auth with any user name and "
            "the token as password, or Authorization: Bearer <token>).\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="archiver", charset="UTF-8"'},
        )

    def _authorized(self, value: bytes) -> bool:
        assert self.token is not None
        scheme, _, credential = value.partition(b" ")
        scheme = scheme.lower()
        if scheme == b"bearer":
            given = credential.strip()
        elif scheme == b"basic":
            try:
                decoded = base64.b64decode(credential.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            given = decoded.partition(b":")[2]
        else:
            return False
        return hmac.compare_digest(given, self.token)
