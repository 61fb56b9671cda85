"""``archiver serve``: a read-only web view of the archive (tasks, events, recordings,
costs, health). This module imports nothing of the web stack until :func:`serve` runs, so
the other commands start as fast as before."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from archiver.exceptions import ConfigError
from archiver.web.access import is_loopback

if TYPE_CHECKING:  # pragma: no cover
    from archiver.store.database import Database

ENV_SERVE_TOKEN = "ARCHIVER_SERVE_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8377
DEFAULT_MAX_AGE = "1h"
MIN_TOKEN_CHARS = 16


def serve_token(host: str, environ: dict[str, str] | None = None) -> str | None:
    """The token from ARCHIVER_SERVE_TOKEN; required unless ``host`` is loopback."""
    env = os.environ if environ is None else environ
    token = env.get(ENV_SERVE_TOKEN, "").strip() or None
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"--host {host!r} is reachable from other machines, so a token is required: "
            f"export {ENV_SERVE_TOKEN} (at least {MIN_TOKEN_CHARS} characters; never on the "
            "command line), e.g. the output of `python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`, or bind to 127.0.0.1."
        )
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{ENV_SERVE_TOKEN} is {len(token)} characters long: use at least "
            f"{MIN_TOKEN_CHARS} random characters, e.g. from `python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'`."
        )
    return token


def open_archive(database_url: str) -> Database:
    """The archive opened read-only at the connection (SQLite ``mode=ro``, PostgreSQL
    ``default_transaction_read_only``): a missing SQLite file or a schema that is not this
    version's is a ConfigError (exit 2); serve never creates or migrates anything."""
    from archiver.store.database import Database

    database = Database(database_url, read_only=True)
    try:
        database.prepare()
    except BaseException:
        database.dispose()
        raise
    return database


@dataclass
class Running:
    """A server started by :func:`start`: its URL, and how to stop it."""

    url: str
    server: Any
    thread: threading.Thread | None

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)


def build_app(
    database: Database,
    *,
    blob_url: str | None = None,
    max_age: str = DEFAULT_MAX_AGE,
    token: str | None = None,
    page_size: int | None = None,
    served_host: str = DEFAULT_HOST,
    allowed_hosts: tuple[str, ...] = (),
) -> Any:
    from archiver.blobs import BlobStore
    from archiver.metrics import parse_duration
    from archiver.web.app import Settings, create_app

    settings = Settings(
        database=database,
        blob_root=BlobStore(blob_url, create=False) if blob_url else None,
        max_age=parse_duration(max_age, option="--max-age"),
        token=token,
        served_host=served_host,
        allowed_hosts=allowed_hosts,
    )
    if page_size is not None:
        settings = replace(settings, page_size=page_size)
    return create_app(settings)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port is a clear error (exit 2)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: a response's headers and body go out as two
    # writes, and with Nagle's algorithm the second waits for the client's delayed ACK
    # (40 ms on Linux) on every keep-alive request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"cannot listen on {host}:{port}: {reason}; choose another --port, or a --host "
            "that is an address of this machine."
        ) from None
    # Listening from here on: a client that connects before the server loop runs waits
    # in the backlog instead of being refused.
    sock.listen(2048)
    return sock


def _url(sock: socket.socket) -> str:
    address = sock.getsockname()
    shown = f"[{address[0]}]" if ":" in address[0] else address[0]
    return f"http://{shown}:{address[1]}/"


def _server(app: Any) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    return uvicorn.Server(config)


def start(app: Any, host: str = DEFAULT_HOST, port: int = 0) -> Running:
    """Serve ``app`` from a background thread (tests, benchmarks); returns once listening."""
    sock = _bind(host, port)
    server = _server(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="archiver-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        raise RuntimeError(f"the web server did not start on {host}:{port}")
    return Running(_url(sock), server, thread)


def serve(
    *,
    database_url: str,
    blob_url: str | None,
    host: str,
    port: int,
    max_age: str,
    echo: Callable[[str], None],
    allowed_hosts: tuple[str, ...] = (),
) -> None:
    """Run `archiver serve` in the foreground until Ctrl-C / SIGTERM."""
    from archiver.metrics import parse_duration

    token = serve_token(host)
    parse_duration(max_age, option="--max-age")  # a bad value is an error before any work
    database = open_archive(database_url)
    app = build_app(
        database,
        blob_url=blob_url,
        max_age=max_age,
        token=token,
        served_host=host,
        allowed_hosts=allowed_hosts,
    )

    try:
        sock = _bind(host, port)
        echo(f"archiver serve: {database.display_url()} (read-only) at {_url(sock)}")
        if token:
            echo(f"  every request needs the token in {ENV_SERVE_TOKEN} (HTTP Basic password)")
        echo("  press Ctrl-C to stop")
        try:
            _server(app).run(sockets=[sock])
        except KeyboardInterrupt:
            # uvicorn shuts down on Ctrl-C, then raises it again: the stop asked for,
            # not an error to report.
            echo("archiver serve: stopped")
    finally:
        database.dispose()


__all__ = ["DEFAULT_HOST", "DEFAULT_MAX_AGE", "DEFAULT_PORT", "ENV_SERVE_TOKEN", "serve"]
