"""HTTP plumbing of the simulator: the threading server, the handler, error answers and
FastAPI-style query parsing. The routes live on :class:`~archiver.simulator.Simulator`."""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from archiver.simulator.scenario import ENCODER

__all__ = [
    "HTTPError",
    "Handler",
    "Router",
    "Server",
    "hang_up",
    "json_bytes",
    "q_bool",
    "q_int",
    "qerr",
    "send",
]

_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})


class HTTPError(Exception):
    """Answer ``status`` with ``{"detail": detail}``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail


def json_bytes(obj: Any) -> bytes:
    return ENCODER.encode(obj).encode()


def qerr(kind: str, name: str, msg: str, value: str) -> HTTPError:
    """A FastAPI-style 422 for one bad query parameter."""
    return HTTPError(422, [{"type": kind, "loc": ["query", name], "msg": msg, "input": value}])


def q_int(query: dict[str, str], name: str, default: int | None) -> int | None:
    raw = query.get(name)
    if raw is None:
        return default
    s = raw.strip()
    if _INT_RE.match(s):
        return int(s)
    if _FLOAT_RE.match(s) and float(s).is_integer():
        return int(float(s))
    raise qerr(
        "int_parsing",
        name,
        "Input should be a valid integer, unable to parse string as an integer",
        raw,
    )


def q_bool(query: dict[str, str], name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    s = raw.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise qerr(
        "bool_parsing", name, "Input should be a valid boolean, unable to interpret input", raw
    )


def send(
    h: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    ctype: str = "application/json",
    headers: dict[str, str] | None = None,
) -> None:
    """One complete response with a Content-Length (no body for HEAD)."""
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def hang_up(h: BaseHTTPRequestHandler) -> None:
    """Close the connection now, whatever was (or was not) sent."""
    h.close_connection = True
    with contextlib.suppress(OSError):
        h.wfile.flush()
        h.connection.shutdown(socket.SHUT_RDWR)


class Router(Protocol):
    """What the server hands each request to."""

    def handle(self, h: Handler) -> None: ...


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, addr: tuple[str, int], sim: Router) -> None:
        self.sim = sim
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client hanging up mid-transfer (size limit, kill) is routine
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Cut idle keep-alive connections so a stopped simulator really stops answering."""
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SmoothSim/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        self.server.sim.handle(self)

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch
