"""The simulator: a :class:`Scenario` served over real HTTP, with a simulated clock, request
stats, fault injection, the artifact host and the ``/_sim/`` control endpoints."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from archiver.simulator.config import (
    API_PREFIX,
    LIST_DEFAULT_LIMIT,
    LIST_MAX_LIMIT,
    RUNTIME_KNOBS,
    SimulatorConfig,
    with_runtime_knobs,
)
from archiver.simulator.faults import FaultDraw, answer_api_fault
from archiver.simulator.files import ArtifactHost
from archiver.simulator.httpd import (
    Handler,
    HTTPError,
    Server,
    json_bytes,
    q_bool,
    q_int,
    qerr,
    send,
)
from archiver.simulator.scenario import ENCODER, Scenario, Task, knob_draw

__all__ = ["CAPTIVE_PORTAL_PAGE", "Simulator"]

CAPTIVE_PORTAL_PAGE = (
    b"<!DOCTYPE html><html><head><title>Sign in to the network</title></head><body>"
    b"<h1>Welcome!</h1><p>Please accept the terms of use to continue.</p>"
    b'<form method="post" action="/portal/accept"><button>Accept</button></form>'
    b"</body></html>"
)


class Simulator:
    """The simulated Smooth API. ``with Simulator(cfg) as sim: sim.base_url ...``."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.scenario = Scenario(self.config)
        self._tasks = self.scenario.tasks
        self._by_id = self.scenario.by_id
        self._lock = threading.Lock()
        self._gets_in_flight = 0
        self._faults = FaultDraw(self.config.fault_seed)
        # Every API request, counted on arrival; wait_for_requests() waits on it.
        self._api_requests = 0
        self._api_cv = threading.Condition()
        self._listings: collections.Counter[str] = collections.Counter()  # per task id
        self._now = self.scenario.initial_time()
        self.stats: collections.Counter[str] = collections.Counter()
        self.base_url = ""
        self.origin = "http://127.0.0.1:0"
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.files = ArtifactHost(self)

    # ---- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; return the base URL (``http://HOST:PORT/api/v1``)."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = Server((host, port), self)
        real_port = server.server_address[1]
        url_host = f"[{host}]" if ":" in host else host
        self.origin = f"http://{url_host}:{real_port}"
        self.base_url = self.origin + API_PREFIX
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"smooth-sim:{real_port}",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and cut open connections. Idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- clock

    def now(self) -> float:
        with self._lock:
            return self._now

    def set_time(self, t: float) -> None:
        with self._lock:
            self._now = float(t)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("cannot advance by a negative amount")
        with self._lock:
            self._now += seconds

    def finish_all(self) -> None:
        """Move the clock (never backwards) past every task's end + artifact delay and every
        listing delay, so all tasks exist, are listed, terminal, with all events/artifacts."""
        target = self.scenario.settled_time()
        with self._lock:
            if target is not None:
                self._now = max(self._now, target)

    # ---- stats & truth

    def reset_stats(self) -> None:
        """Clear :attr:`stats` and the :attr:`api_requests` counter."""
        with self._lock:
            self.stats.clear()
        with self._api_cv:
            self._api_requests = 0

    @property
    def api_requests(self) -> int:
        """API requests (any path under /api/v1, whatever the answer) since the start or the
        last :meth:`reset_stats`, counted on arrival."""
        with self._api_cv:
            return self._api_requests

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """Block until :attr:`api_requests` reaches ``count`` (True) or ``timeout`` wall-clock
        seconds pass (False). The count is taken when a request arrives, before latency,
        faults or the answer, so e.g. a test can SIGKILL a client right after its k-th
        request, while that request is still in flight."""
        with self._api_cv:
            return self._api_cv.wait_for(lambda: self._api_requests >= count, timeout)

    def count(self, *keys: str, n: int = 1) -> None:
        """Add ``n`` to each of the ``keys`` of :attr:`stats`."""
        with self._lock:
            for k in keys:
                self.stats[k] += n

    def truth(self) -> dict[str, dict[str, Any]]:
        """Ground truth now: ``task_id -> {"task": <Get Task view with downloads=true, without
        "events">, "events": [every visible event, in order]}`` for every task that exists
        (``created <= now``), in creation order. Gone/malformed tasks appear with their real,
        well-formed data. Returns fresh objects.

        It is the state as served now (a late payload not filled in yet, credits not settled
        yet, an unknown status); after :meth:`finish_all` it is the settled state a perfect
        archiver must end with. Duplicated events appear twice: compare as multisets."""
        return self.scenario.truth(self.now(), self.files.link)

    def file_bytes(self, task_id: str, name: str) -> bytes:
        """The exact bytes the file link of a task serves (tests; small files only)."""
        t = self._by_id[task_id]
        return b"".join(self.files.body(t, name == "recording.mp4")[1])

    def file_sha256(self, task_id: str, name: str) -> tuple[int, str]:
        """(size, SHA-256) of what a file link serves, computed as a stream."""
        t = self._by_id[task_id]
        size, chunks = self.files.body(t, name == "recording.mp4")
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        return size, digest.hexdigest()

    # ---- request handling

    def handle(self, h: Handler) -> None:
        """Route one request (called by the handler thread)."""
        length = h.headers.get("Content-Length")
        if length:
            with contextlib.suppress(ValueError):
                h.rfile.read(int(length))
        parts = urlsplit(h.path)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))  # last value wins
        extra: dict[str, str] = {}
        try:
            if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
                with self._api_cv:
                    self._api_requests += 1
                    self._api_cv.notify_all()
                if self.config.captive_portal:
                    self.count("captive_portal")
                    send(h, 200, CAPTIVE_PORTAL_PAGE, "text/html; charset=utf-8")
                    return
                fault = self._faults.draw(self.config.fault_rate, self.config.fault_kinds)
                if fault is not None:
                    self.count("fault", f"fault:{fault}")
                    if answer_api_fault(h, fault, self.config):
                        return
                status, body = self._api(h, path, query)
            elif path.startswith("/_sim/"):
                status, body = self._control(h.command, path, query)
            elif path.startswith(("/files/", "/redirected/")):
                self.files.serve(h, path, query)  # streams its own response
                return
            else:
                raise HTTPError(404, "Not Found")
        except HTTPError as e:
            status, body = e.status, json_bytes({"detail": e.detail})
            if e.status == 405:
                extra["Allow"] = "GET"
        except Exception as e:  # a simulator bug: answer like a real server would
            status, body = 500, json_bytes({"detail": f"Internal Server Error: {e!r}"})
        send(h, status, body, headers=extra)

    def _api(self, h: Handler, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        if not path.startswith(API_PREFIX + "/task/"):
            return self._api_answer(h, path, query)
        # Get Task requests being answered at once, and the most seen (a client's limit).
        with self._lock:
            self._gets_in_flight += 1
            top = self.stats["get_in_flight_max"]
            self.stats["get_in_flight_max"] = max(top, self._gets_in_flight)
        try:
            return self._api_answer(h, path, query)
        finally:
            with self._lock:
                self._gets_in_flight -= 1

    def _api_answer(self, h: Handler, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        cfg = self.config
        if cfg.latency_ms > 0:
            time.sleep(cfg.latency_ms / 1000.0)
        route_keys: tuple[str, ...] = ()
        status = 500
        try:
            rest = path[len(API_PREFIX) :]
            if rest == "/task":
                route_keys = ("list",)
            elif (
                rest.startswith("/task/") and "/" not in rest[len("/task/") :] and rest != "/task/"
            ):
                route_keys = ("get", "get:" + unquote(rest[len("/task/") :]))
            if cfg.api_key is not None and h.headers.get("apikey") != cfg.api_key:
                raise HTTPError(401, "Invalid or missing API key")
            if not route_keys:
                raise HTTPError(404, "Not Found")
            if h.command != "GET":
                raise HTTPError(405, "Method Not Allowed")
            if route_keys[0] == "list":
                status, body = self._list(query)
            else:
                status, body = self._get(route_keys[1][len("get:") :], query)
            return status, body
        except HTTPError as e:
            status = e.status
            raise
        finally:
            self.count(*route_keys, f"status:{status}")

    def _list(self, query: dict[str, str]) -> tuple[int, bytes]:
        limit = q_int(query, "l", LIST_DEFAULT_LIMIT)
        assert limit is not None
        before = q_int(query, "t", None)
        if limit < 1:
            msg = "Input should be greater than or equal to 1"
            raise qerr("greater_than_equal", "l", msg, query["l"])
        if limit > LIST_MAX_LIMIT:
            msg = f"Input should be less than or equal to {LIST_MAX_LIMIT}"
            raise qerr("less_than_equal", "l", msg, query["l"])
        now = self.now()
        link = self.files.link
        items = [
            Scenario.malformed_view(t)
            if self._malformed_listing(t)
            else self.scenario.view(t, now, downloads=False, listing=True, link=link)
            for t in self.scenario.listing(now, before, limit)
        ]
        return 200, json_bytes({"r": items})

    def _malformed_listing(self, t: Task) -> bool:
        """Whether this listing of ``t`` is malformed (counts the listing when ``t`` is one
        of the malformed_list_item tasks)."""
        cfg = self.config
        chosen = t.id in cfg.malformed_list_item_ids or (
            cfg.malformed_list_item_rate > 0
            and knob_draw(self.scenario.config.seed, t.id, "list_item")
            < cfg.malformed_list_item_rate
        )
        if not chosen:
            return False
        with self._lock:
            self._listings[t.id] += 1
            malformed = self._listings[t.id] <= cfg.malformed_list_listings
            if malformed:
                self.stats["list_malformed"] += 1
        return malformed

    def _get(self, task_id: str, query: dict[str, str]) -> tuple[int, bytes]:
        cfg = self.config
        event_t = q_int(query, "event_t", 0)
        assert event_t is not None
        downloads = q_bool(query, "downloads")
        now = self.now()
        t = self._by_id.get(task_id)
        if t is None or t.created > now or task_id in cfg.gone_task_ids:
            raise HTTPError(404, "Task not found")
        if task_id in cfg.malformed_task_ids:
            return 200, json_bytes({"r": Scenario.malformed_view(t)})
        view = self.scenario.view(t, now, downloads=downloads, listing=False, link=self.files.link)
        code = 200 if t.is_over(now) else 202
        head = ENCODER.encode(view)
        events = self.scenario.events_json(t, now, event_t, ignore_event_t=cfg.ignore_event_t)
        return code, ('{"r": ' + head[:-1] + ', "events": [' + events + "]}}").encode()

    def _control(self, method: str, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        name = path[len("/_sim/") :]
        posts = {"advance", "set_time", "finish_all", "reset_stats"}
        gets = {"now", "stats", "truth"}
        if name == "config":  # GET shows, POST changes request-time knobs
            if method not in ("GET", "POST"):
                raise HTTPError(405, "Method Not Allowed")
            if method == "POST":
                try:
                    self.config = with_runtime_knobs(self.config, query)
                except ValueError as e:
                    raise HTTPError(422, str(e)) from None
            return 200, json_bytes({k: getattr(self.config, k) for k in RUNTIME_KNOBS})
        if name not in posts | gets:
            raise HTTPError(404, "Not Found")
        if (name in posts) != (method == "POST") or (name in gets and method != "GET"):
            raise HTTPError(405, "Method Not Allowed")

        def number(key: str) -> float:
            raw = query.get(key)
            try:
                return float(raw) if raw is not None else math.nan
            except ValueError:
                return math.nan

        if name == "advance":
            secs = number("seconds")
            if not math.isfinite(secs) or secs < 0:
                raise HTTPError(422, "seconds must be a non-negative number")
            self.advance(secs)
        elif name == "set_time":
            t = number("t")
            if not math.isfinite(t):
                raise HTTPError(422, "t must be a number (epoch seconds)")
            self.set_time(t)
        elif name == "finish_all":
            self.finish_all()
        elif name == "reset_stats":
            self.reset_stats()
        elif name == "stats":
            with self._lock:
                return 200, json_bytes(dict(self.stats))
        elif name == "truth":
            return 200, json_bytes(self.truth())
        return 200, json_bytes({"now": self.now()})
