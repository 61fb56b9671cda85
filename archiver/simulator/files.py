"""The artifact host: signs the presigned-looking file links and serves them.

``GET /files/<id>/recording.mp4`` and ``GET /files/<id>/downloads.zip`` answer the bytes of
:mod:`archiver.simulator.content` when the signature matches (403 otherwise) and the file is
available (404 otherwise). The artifact-host knobs of :class:`SimulatorConfig` (expiring and
single-use links, errors, truncation, slow or chunked transfers, redirects) are read per
request.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Protocol
from urllib.parse import unquote, urlsplit

from archiver.simulator import content
from archiver.simulator.config import ARTIFACT_DELAY_S, URL_EXPIRES_S, SimulatorConfig
from archiver.simulator.faults import FaultDraw, answer_file_fault
from archiver.simulator.httpd import Handler, HTTPError, hang_up
from archiver.simulator.scenario import Scenario, Task

__all__ = ["FILE_NAMES", "ArtifactHost"]

FILE_NAMES = ("recording.mp4", "downloads.zip")


def _link_sig(base: str, issued: float, nonce: int) -> str:
    """The signature of an expiring / single-use file link."""
    return hashlib.sha256(f"{base}:{issued!r}:{nonce}".encode()).hexdigest()


class Host(Protocol):
    """What the artifact host needs from the simulator it belongs to."""

    config: SimulatorConfig
    scenario: Scenario
    origin: str

    def now(self) -> float: ...
    def advance(self, seconds: float) -> None: ...
    def count(self, *keys: str, n: int = 1) -> None: ...


class ArtifactHost:
    """Presigned links and file serving for one simulator."""

    def __init__(self, sim: Host) -> None:
        self._sim = sim
        self._lock = threading.Lock()
        self._cache: dict[str, bytes] = {}
        self._hits: collections.Counter[str] = collections.Counter()  # per "id/name"
        self._issued = 0  # nonce of expiring / single-use links
        self._used: set[str] = set()
        self._faults = FaultDraw(f"files:{sim.config.file_fault_seed}")

    # ---- links

    def link(self, t: Task, name: str) -> str:
        """A fresh link to ``name`` of ``t`` (``recording_url_override`` replaces recordings)."""
        cfg = self._sim.config
        is_rec = name == "recording.mp4"
        sig = t.sig_recording if is_rec else t.sig_downloads
        origin = self._sim.origin
        if cfg.link_ttl_s is None and not cfg.single_use_links:
            url = (
                f"{origin}/files/{t.id}/{name}?X-Amz-Signature={sig}&X-Amz-Expires={URL_EXPIRES_S}"
            )
        else:
            # Expiring / single-use links: each issue gets its own date, nonce and signature.
            issued = self._sim.now()
            with self._lock:
                self._issued += 1
                nonce = self._issued
            expires = URL_EXPIRES_S if cfg.link_ttl_s is None else cfg.link_ttl_s
            url = (
                f"{origin}/files/{t.id}/{name}?X-Amz-Date={issued!r}&X-Amz-Expires={expires}"
                f"&X-Amz-Credential={nonce}&X-Amz-Signature={_link_sig(sig, issued, nonce)}"
            )
        if is_rec and cfg.recording_url_override is not None:
            return cfg.recording_url_override
        return url

    def _check_link(
        self, t: Task, is_rec: bool, query: dict[str, str], now: float, *, consume: bool
    ) -> None:
        cfg = self._sim.config
        sig = t.sig_recording if is_rec else t.sig_downloads
        if cfg.link_ttl_s is None and not cfg.single_use_links:
            if query.get("X-Amz-Signature") != sig:
                raise HTTPError(403, "SignatureDoesNotMatch")
            return
        try:
            issued = float(query.get("X-Amz-Date", ""))
            nonce = int(query.get("X-Amz-Credential", ""))
        except ValueError:
            raise HTTPError(403, "AuthorizationQueryParametersError") from None
        if query.get("X-Amz-Signature") != _link_sig(sig, issued, nonce):
            raise HTTPError(403, "SignatureDoesNotMatch")
        if cfg.link_ttl_s is not None and now > issued + cfg.link_ttl_s:
            raise HTTPError(403, "AccessDenied: Request has expired")
        if cfg.single_use_links:
            token = f"{nonce}"
            with self._lock:
                if token in self._used:
                    raise HTTPError(403, "AccessDenied: link already used")
                if consume:
                    self._used.add(token)

    # ---- bytes

    def body(self, t: Task, is_rec: bool) -> tuple[int, Iterator[bytes]]:
        """(size, chunks) of a file; big recordings are generated on the fly, never whole."""
        cfg = self._sim.config
        if is_rec and cfg.recording_bytes is not None:
            chunks = content.big_recording(cfg.seed, t, cfg.recording_bytes, cfg.file_chunk_bytes)
            return cfg.recording_bytes, chunks
        key = f"{t.id}/{'rec' if is_rec else 'zip'}"
        with self._lock:
            data = self._cache.get(key)
        if data is None:
            if is_rec and cfg.playable_recordings:
                data = content.playable_recording()
            elif is_rec:
                data = content.recording_bytes(cfg.seed, t)
            elif t.id in cfg.corrupt_zip_task_ids:
                data = content.downloads_zip(cfg.seed, t)[:-30]  # the end of the directory
            elif t.id in cfg.hostile_zip_task_ids:
                data = content.hostile_zip(t)
            else:
                data = content.downloads_zip(cfg.seed, t)
            with self._lock:
                self._cache[key] = data
        step = cfg.file_chunk_bytes
        return len(data), (data[i : i + step] for i in range(0, len(data), step))

    # ---- serving

    def serve(self, h: Handler, path: str, query: dict[str, str]) -> None:
        """Serve one presigned file link (or raise HTTPError before anything is sent)."""
        sim, cfg = self._sim, self._sim.config
        if h.command not in ("GET", "HEAD"):
            raise HTTPError(405, "Method Not Allowed")
        redirected = path.startswith("/redirected/")
        parts = path.split("/", 2)[2].split("/")
        if len(parts) != 2 or parts[1] not in FILE_NAMES:
            raise HTTPError(404, "NoSuchKey")
        task_id, name = unquote(parts[0]), parts[1]
        key = f"{task_id}/{name}"
        sim.count("file", f"file:{task_id}", f"file:{key}")
        fault = self._faults.draw(cfg.file_fault_rate, cfg.file_fault_kinds)
        if fault is not None and answer_file_fault(h, fault, cfg):
            sim.count("file_fault", f"file_fault:{fault}")
            return
        with self._lock:
            self._hits[key] += 1
            hit = self._hits[key]
        t = sim.scenario.by_id.get(task_id)
        now = sim.now()
        if t is None or t.created > now:
            raise HTTPError(404, "NoSuchKey")
        is_rec = name == "recording.mp4"
        self._check_link(t, is_rec, query, now, consume=not (cfg.file_redirect and not redirected))
        if hit <= len(cfg.file_errors):
            raise HTTPError(cfg.file_errors[hit - 1], "simulated artifact host error")
        if is_rec:
            ok = t.has_recording and now >= t.end + ARTIFACT_DELAY_S
        else:
            ok = t.has_downloads and now >= t.end
        if not ok:
            raise HTTPError(404, "NoSuchKey")
        if cfg.file_redirect and not redirected:
            location = (
                f"/redirected/{parts[0]}/{name}?{urlsplit(h.path).query}"
                if cfg.file_redirect == "http"
                else cfg.file_redirect
            )
            h.send_response(302)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        size, chunks = self.body(t, is_rec)
        ctype = cfg.recording_content_type if is_rec else cfg.downloads_content_type
        if is_rec and cfg.playable_recordings:
            ctype = content.PLAYABLE_CONTENT_TYPE
        sim.count(f"file_served:{key}")
        if fault == "truncate":
            sim.count("file_fault", "file_fault:truncate")
        truncate = fault == "truncate" or hit <= cfg.truncate_file_requests
        self._stream(h, size, chunks, ctype, truncate=truncate)

    def _stream(
        self, h: Handler, size: int, chunks: Iterator[bytes], ctype: str, *, truncate: bool
    ) -> None:
        sim, cfg = self._sim, self._sim.config
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        if cfg.file_chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(size))
        h.end_headers()
        if h.command == "HEAD":
            return
        limit = size // 2 if truncate else size
        sent = 0
        try:
            for chunk in chunks:
                if sent + len(chunk) > limit:
                    chunk = chunk[: limit - sent]
                if chunk:
                    if cfg.file_chunked:
                        h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    else:
                        h.wfile.write(chunk)
                    sent += len(chunk)
                    sim.count("file_bytes", n=len(chunk))
                if sent >= limit:
                    break
                if cfg.file_chunk_delay_s > 0:
                    time.sleep(cfg.file_chunk_delay_s)
            if truncate:
                hang_up(h)
                return
            if cfg.file_chunked:
                h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except OSError:  # the client went away (e.g. it stopped at its size limit)
            h.close_connection = True
            return
        if cfg.file_transfer_s > 0:
            sim.advance(cfg.file_transfer_s)
