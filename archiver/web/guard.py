"""The gate of `archiver serve`: on every request the Host check, the refusal of
cross-site requests and the token; on every response, refusals included, the security
headers (CSP and friends)."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

from starlette.responses import PlainTextResponse, RedirectResponse, Response
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
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def host_name(value: str) -> str:
    """The name in a Host header (or an Origin's netloc), lower case, without the port."""
    name = value.strip().lower()
    if name.startswith("["):
        return name.split("]", 1)[0] + "]"
    return name.rsplit(":", 1)[0] if name.count(":") == 1 else name


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


class Guard:
    """Every request, in this order:

    * the Host header: loopback names always; with a token also any IP address (a
      browser reaches an address under its own origin, so DNS rebinding needs a name),
      the ``--host`` name; and the names of ``--allow-host``. Anything else is 421, so a
      web page cannot reach the server through a name it controls.
    * a browser's cross-site request (``Sec-Fetch-Site: cross-site``, or an ``Origin``
      that is not this server's own) is 403: another website cannot make the operator's
      browser load pages, blobs or JSON from the view.
    * the token when one is set (HTTP Basic, any user name, the token as password; or
      ``Authorization: Bearer``), else 401.

    A path with a trailing slash is redirected to the path without it, by a relative
    link (the Host is never reflected). The security headers go on every response."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        *,
        served_host: str = "127.0.0.1",
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        names = {host_name(name) for name in allowed_hosts}
        served = host_name(served_host)
        if token is not None and served not in _WILDCARDS:
            names.add(served)
        self.allowed_hosts = frozenset(names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in COMMON_HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(headers) or _slash_redirect(scope)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, headers: dict[str, str]) -> Response | None:
        host = host_name(headers.get("host", ""))
        if not self._host_allowed(host):
            return PlainTextResponse(
                "archiver serve: this server does not answer to that host name; reach it as "
                "127.0.0.1/localhost, or name the host with --allow-host (and set "
                "ARCHIVER_SERVE_TOKEN).\n",
                status_code=421,
            )
        if _cross_site(headers):
            return PlainTextResponse(
                "archiver serve: cross-site requests are refused; open the view directly.\n",
                status_code=403,
            )
        if self.token is None or self._authorized(headers.get("authorization", "")):
            return None
        return PlainTextResponse(
            "archiver serve: the token is required (HTTP Basic auth with any user name and "
            "the token as password, or Authorization: Bearer <token>).\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="archiver", charset="UTF-8"'},
        )

    def _host_allowed(self, host: str) -> bool:
        if is_loopback(host) or host in self.allowed_hosts:
            return True
        return self.token is not None and _is_address(host)

    def _authorized(self, value: str) -> bool:
        assert self.token is not None
        scheme, _, credential = value.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            given = credential.strip().encode("latin-1")
        elif scheme == "basic":
            try:
                decoded = base64.b64decode(credential.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            given = decoded.partition(b":")[2]
        else:
            return False
        return hmac.compare_digest(given, self.token)


def _cross_site(headers: dict[str, str]) -> bool:
    """Whether a browser made this request for another site's page."""
    if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    try:
        netloc = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        return True
    # The scheme is not compared: a TLS proxy in front serves https for this http server.
    return not netloc or netloc != headers.get("host", "").strip().lower()


def _slash_redirect(scope: Scope) -> Response | None:
    """``/tasks/`` to ``/tasks`` (query kept), by a path only: never the Host, never
    ``//`` (which a browser would take for another host)."""
    path: str = scope.get("path", "")
    if path == "/" or not path.endswith("/"):
        return None
    location = "/" + quote(path.strip("/"), safe="/")
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        location += "?" + quote(query, safe="=&%+")
    return RedirectResponse(location, status_code=307)
