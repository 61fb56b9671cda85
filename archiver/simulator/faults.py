"""Fault injection: which request fails (seeded, in request order) and how it fails.

API faults (``fault_rate`` / ``fault_kinds``) imitate a flaky API or the proxies in front of
it; file faults (``file_fault_rate`` / ``file_fault_kinds``) imitate presigned object storage
under load. The caller counts each applied fault in the stats.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Sequence

from archiver.simulator.config import SimulatorConfig
from archiver.simulator.httpd import Handler, hang_up, json_bytes, send

__all__ = ["FaultDraw", "answer_api_fault", "answer_file_fault"]

_HTML_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


class FaultDraw:
    """A thread-safe seeded draw: one per request, so the n-th request's fault depends only
    on the seed and n."""

    def __init__(self, seed: int | str) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self, rate: float, kinds: Sequence[str]) -> str | None:
        if rate <= 0 or not kinds:
            return None
        with self._lock:
            if self._rng.random() >= rate:
                return None
            return self._rng.choice(kinds)


def answer_api_fault(h: Handler, fault: str, cfg: SimulatorConfig) -> bool:
    """Answer an API request with ``fault``; False when it should then proceed normally."""
    if fault == "spike":
        time.sleep(cfg.latency_spike_ms / 1000.0)
        return False
    if fault == "drop":
        hang_up(h)
        return True
    if fault in ("500", "502", "503", "429"):
        headers = {"Retry-After": cfg.retry_after} if fault == "429" else {}
        send(h, int(fault), json_bytes({"detail": f"simulated {fault}"}), headers=headers)
    elif fault == "garbage":
        send(h, 200, b'\x00\xff{"r": [garbage')
    elif fault == "html200":
        send(h, 200, _HTML_502, "text/html")
    elif fault == "truncate":
        body = json_bytes({"r": {"id": "x", "status": "running", "events": []}}) * 4
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        with contextlib.suppress(OSError):
            h.wfile.write(body[: len(body) // 2])
        hang_up(h)
    else:
        raise ValueError(f"unknown fault kind {fault!r}")
    return True


def answer_file_fault(h: Handler, fault: str, cfg: SimulatorConfig) -> bool:
    """Answer a file request with ``fault``; False for "truncate", which the caller applies
    to the transfer itself (when there is one)."""
    if fault == "truncate":
        return False
    if fault == "drop":
        hang_up(h)
    elif fault in ("503", "429"):
        code, text = ("SlowDown", "Please reduce your request rate.")
        if fault == "429":
            code, text = "TooManyRequests", "Too many requests."
        headers = {"Retry-After": cfg.retry_after} if fault == "429" else {}
        body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        body += f"<Message>{text}</Message></Error>"
        send(h, int(fault), body.encode(), "application/xml", headers)
    else:
        raise ValueError(f"unknown file fault kind {fault!r}")
    return True
