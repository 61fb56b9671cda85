"""A faithful, deterministic simulator of the Smooth API, served over real HTTP.

Stdlib only. :class:`Simulator` precomputes a whole scenario (tasks and their events) from
:class:`SimulatorConfig` at construction, then serves it on a loopback port with a
``ThreadingHTTPServer`` (HTTP/1.1 keep-alive, ``Content-Length`` always sent). Every piece of
content is derived from ``random.Random(config.seed)``; the wall clock is never consulted for
content. Time is a *simulated* clock (epoch seconds) that only moves when told to
(:meth:`Simulator.advance`, :meth:`Simulator.set_time`, :meth:`Simulator.finish_all`, or the
``/_sim/...`` control endpoints).

API surface (base path ``/api/v1``, see /work/shared/smooth-api):

``GET /api/v1/task?l=L&t=T`` (List Tasks)
    ``{"r": [TaskResponse, ...]}`` newest first: ``created_at`` descending, ties broken by task
    id descending. ``l`` is 1..128 (default 32), ``t`` (optional, integer, in the
    ``created_at`` unit) keeps only tasks with ``created_at < t`` (strictly). Only tasks that
    exist by now are listed; with ``late_list_delay_s`` every 5th task (index 4, 9, 14, ...)
    shows up in the list only that many sim-seconds after its creation (Get Task finds it as
    soon as it exists). List items have ``events: null`` and ``downloads_url: null``.

``GET /api/v1/task/{id}?event_t=E&downloads=true|false`` (Get Task)
    ``{"r": TaskResponse}`` with HTTP 200 once terminal (done/failed/cancelled), 202 while
    waiting/running, 404 ``{"detail": "Task not found"}`` for unknown ids, ids of tasks not
    created yet, and ``gone_task_ids``. ``events`` holds the events visible now whose
    timestamp is strictly greater than ``E`` (default 0), in order.

    *Null timestamps*: an event whose ``timestamp`` is null is returned only when
    ``event_t == 0``, mimicking a SQL ``WHERE timestamp > :event_t`` filter (NULL > x is
    never true) behind an "event_t=0 means no filter" shortcut. A client that polls with a
    cursor therefore sees such events only on its very first poll, if they exist by then.

    With ``ignore_event_t`` (a simulated server bug) all visible events are returned.
    Query parameters are validated like FastAPI would: a non-integer ``event_t``/``l``/``t``
    or a non-boolean ``downloads`` gives 422 with a FastAPI-style ``{"detail": [...]}``.

Task life cycle (per task, seeded): created at ``start + i * spacing_s`` (with
``created_at_group`` G, the G tasks of a group are all created at the group's first slot and
share one ``created_at``); ``waiting`` for 1-5 s (at most a quarter of the run); ``running``
until ``created + duration``; then ``done`` (~80 %), ``failed`` (~12 %) or ``cancelled``.

Fields:

* ``id``: ``tsk_`` + 12 hex chars. ``agent_version``: an extra field not in the spec.
* ``output``: null until terminal, then any JSON value (string, object, array, number,
  boolean or null; an error string/object for failed tasks, null for cancelled ones).
* ``credits_used``: 0 while waiting, grows linearly while running, final value once terminal.
* ``device``: ``desktop`` / ``mobile`` / ``desktop-lg``.
* ``live_url``: ``https://live.smooth.sh/<id>?token=<hex>`` while waiting/running, ``""``
  once terminal (the live view is over).
* ``recording_url``: null while waiting/running and for the first ``ARTIFACT_DELAY_S`` (10)
  sim-seconds after the end ("not available yet"), then ``""`` (no recording; probability
  ``1 - recording_rate``) or a presigned-looking URL on this server.
* ``downloads_url``: null unless ``downloads=true`` was asked for *and* the task is terminal;
  then ``""`` (no downloaded files, ~30 %) or a presigned-looking URL on this server.
* ``created_at``: integer in ``created_at_unit``.
* ``events``: ``{"id", "name", "payload", "timestamp"}``. Names are ``browser_action``,
  ``session_action``, ``tool_call`` and rarely ``agent_note`` (an unseen name). Timestamps
  are integers in ``event_timestamp_unit`` (floor of the event's instant), non-decreasing,
  the last event exactly at the task's end (so it arrives in the same response as the
  terminal status). An event becomes visible at its instant; a "tied" event
  (``event_tie_rate``) reuses the previous event's timestamp although it becomes visible
  later, so two events with one timestamp can straddle a poll (with ``"s"`` timestamps
  this also happens naturally). Event ids are unique across the scenario (or null).

Extras beyond the brief: the presigned file URLs are actually served
(``GET /files/<id>/recording.mp4`` - deterministic bytes, ``GET /files/<id>/downloads.zip`` -
a small deterministic zip) when the signature matches (403 otherwise) and the file is
available (404 otherwise); ``X-Amz-Expires`` is not enforced. File requests count under
``stats["file"]`` / ``stats["file:<id>"]`` / ``stats["file:<id>/<name>"]`` (and bytes sent
under ``stats["file_bytes"]``) only.

Artifact-host knobs (all off by default): ``recording_bytes`` (a recording of that size,
generated on the fly so even 2 GiB is never held in memory), ``recording_content_type`` /
``downloads_content_type``, ``hostile_zip_task_ids`` (member names ``../../etc/passwd``,
``/etc/shadow``, ``C:/...``), ``corrupt_zip_task_ids`` (the zip's end is cut off),
``recording_url_override`` (e.g. a ``file://`` link), ``link_ttl_s`` (links carry
``X-Amz-Date`` and expire that many sim-seconds later: 403), ``single_use_links`` (each
issued link works once: 403 after), ``file_transfer_s`` (the sim clock advances per file
served, as a long transfer would), ``file_errors`` (statuses answered to the first
requests of each file, e.g. ``(410,)``), ``truncate_file_requests`` (the first N
transfers of each file stop halfway and hang up), ``file_chunk_bytes`` /
``file_chunk_delay_s`` (slow transfers), ``file_chunked`` (no Content-Length) and
``file_redirect`` (``"http"``: a 302 to ``/redirected/...`` on this server; any other
value is sent as the Location, e.g. ``file:///etc/passwd``). Helpers for tests:
:meth:`Simulator.file_bytes` and :meth:`Simulator.file_sha256`.

Control endpoints (no api key, no latency, not counted in stats): ``POST /_sim/advance?seconds=X``,
``POST /_sim/set_time?t=X``, ``POST /_sim/finish_all``, ``POST /_sim/reset_stats``,
``GET /_sim/now``, ``GET /_sim/stats``, ``GET /_sim/truth``.

CLI: ``python -m archiver.simulator --port 0 --tasks N --events M --latency-ms L --seed S
[--finish-all] [--created-at-group G] [--ignore-event-t] [--api-key K]`` prints the base URL
as its first stdout line and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import hashlib
import io
import json
import math
import random
import re
import signal
import socket
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from archiver.jsonvalues import loads_json

__all__ = [
    "ARTIFACT_DELAY_S",
    "LIST_DEFAULT_LIMIT",
    "LIST_MAX_LIMIT",
    "TERMINAL_STATUSES",
    "Simulator",
    "SimulatorConfig",
    "main",
]

API_PREFIX = "/api/v1"
LIST_DEFAULT_LIMIT = 32
LIST_MAX_LIMIT = 128
#: Sim-seconds after a task's end during which ``recording_url`` is still null.
ARTIFACT_DELAY_S = 10.0
URL_EXPIRES_S = 3600
TERMINAL_STATUSES = frozenset({"done", "failed", "cancelled"})
DEVICES = ("desktop", "mobile", "desktop-lg")
#: Probability that a task downloaded no files (``downloads_url == ""``).
NO_DOWNLOADS_RATE = 0.3
#: Probability that an event carries a name the spec does not list.
UNSEEN_EVENT_NAME_RATE = 0.03

_UNITS = {"s": 1, "ms": 1000}
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_TRUE = frozenset({"true", "1", "yes", "on", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "off", "f", "n"})


class _RawJson:
    """A JSON text sent verbatim as an output or payload (``raw_json_values``)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        loads_json(text)  # not JSON: fail when the scenario is built, not on a request
        self.text = text


_RAW_MARK = "\x00raw-json:"
#: The placeholder a _RawJson encodes to, as it appears in encoded text.
_RAW_PLACEHOLDER = re.compile(r'"\\u0000raw-json:(?:[^"\\]|\\.)*"')


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, _RawJson):
            return _RAW_MARK + o.text
        return super().default(o)


_ENCODER = _Encoder(ensure_ascii=False)


def _encode(obj: Any) -> str:
    """JSON text of ``obj``, with each _RawJson's text spliced in as written."""
    text = _ENCODER.encode(obj)
    if "\\u0000raw-json:" not in text:
        return text
    return _RAW_PLACEHOLDER.sub(lambda m: json.loads(m.group())[len(_RAW_MARK) :], text)


FAULT_KINDS = ("500", "502", "503", "429", "drop", "truncate", "garbage", "html200", "spike")


@dataclass(frozen=True)
class SimulatorConfig:
    """Knobs of a simulated scenario. Same config (incl. seed) -> same scenario."""

    seed: int = 0
    tasks: int = 20  # number of tasks in the scenario
    events_per_task: int = 10  # events each task emits over its run
    start: int = 1_764_000_000  # epoch seconds at which task 0 is created
    spacing_s: float = 60.0  # seconds between consecutive task creations
    duration_s: tuple[float, float] = (30.0, 600.0)  # run length range (seeded draw)
    # sim clock at start (epoch seconds); None = the moment the last task is created
    initial_time: float | None = None
    event_timestamp_unit: str = "ms"  # "ms" or "s": unit of event timestamps
    created_at_unit: str = "s"  # "ms" or "s": unit of created_at
    created_at_group: int = 1  # this many consecutive tasks share one created_at
    event_tie_rate: float = 0.0  # P(event timestamp == previous event's timestamp)
    null_event_id_rate: float = 0.0  # P(event id is null)
    null_event_timestamp_rate: float = 0.0  # P(event timestamp is null)
    ignore_event_t: bool = False  # server bug: return all visible events regardless of event_t
    latency_ms: float = 0.0  # added latency per API request
    api_key: str | None = None  # when set, requests need header `apikey: <this>` (else 401)
    gone_task_ids: frozenset[str] = frozenset()  # Get Task -> 404 (still listed)
    malformed_task_ids: frozenset[str] = frozenset()  # Get Task -> 200 with a malformed body
    late_list_delay_s: float = 0.0  # every 5th task is listed only this long after creation
    recording_rate: float = 0.8  # P(a finished task has a recording)
    # API fault injection (chaos tests): each API request draws one fault with this
    # probability, the kind chosen uniformly from fault_kinds. Deterministic per fault_seed
    # and request order. Kinds: "500", "502", "503", "429" (with Retry-After: 0), "drop"
    # (connection closed, no response), "truncate" (half the body, then close), "garbage"
    # (200 with bytes that are not JSON), "html200" (200 with an HTML error page),
    # "spike" (latency_spike_ms added, then a normal answer).
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    fault_seed: int = 0
    latency_spike_ms: float = 500.0
    # -- artifact serving (GET /files/...); the defaults keep the plain behaviour above
    recording_bytes: int | None = None  # recording size; None = small (2-32 KB); streamed
    recording_content_type: str = "video/mp4"
    downloads_content_type: str = "application/zip"
    hostile_zip_task_ids: frozenset[str] = frozenset()  # zips with ../, /abs, C:\ names
    corrupt_zip_task_ids: frozenset[str] = frozenset()  # downloads.zip is a truncated zip
    recording_url_override: str | None = None  # recording_url is this link (e.g. file://)
    link_ttl_s: float | None = None  # file links expire this many sim-seconds after issue
    single_use_links: bool = False  # each issued file link works once, then 403
    file_transfer_s: float = 0.0  # sim clock advance per file fully served
    file_errors: tuple[int, ...] = ()  # statuses for the first requests of each file
    truncate_file_requests: int = 0  # the first N 200s of each file stop halfway
    file_chunk_bytes: int = 64 * 1024  # bytes per write when serving a file
    file_chunk_delay_s: float = 0.0  # wall-clock pause between chunks (slow transfer)
    file_chunked: bool = False  # Transfer-Encoding: chunked, no Content-Length
    file_redirect: str | None = None  # "http": 302 to /redirected/...; else a Location URL
    # JSON texts sent verbatim (so "1.0", "-0.0", "1e308", "\\ud83d" arrive as written):
    # task i's output is text (i // 2) % n when i is even; event k of task i has payload
    # text ((i + k) // 3) % n when i + k is divisible by 3. truth() reports them parsed
    # (in process: GET /_sim/truth cannot encode lone surrogates or deep nesting).
    raw_json_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; valid: {list(FAULT_KINDS)}")
        if self.tasks < 0:
            raise ValueError("tasks must be >= 0")
        if self.events_per_task < 0:
            raise ValueError("events_per_task must be >= 0")
        if self.spacing_s < 0:
            raise ValueError("spacing_s must be >= 0")
        lo, hi = self.duration_s
        if not 0 < lo <= hi:
            raise ValueError("duration_s must be (lo, hi) with 0 < lo <= hi")
        if self.event_timestamp_unit not in _UNITS:
            raise ValueError("event_timestamp_unit must be 'ms' or 's'")
        if self.created_at_unit not in _UNITS:
            raise ValueError("created_at_unit must be 'ms' or 's'")
        if self.created_at_group < 1:
            raise ValueError("created_at_group must be >= 1")
        for name in (
            "event_tie_rate",
            "null_event_id_rate",
            "null_event_timestamp_rate",
            "recording_rate",
            "fault_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.recording_bytes is not None and self.recording_bytes < 0:
            raise ValueError("recording_bytes must be >= 0")
        if self.file_chunk_bytes < 1:
            raise ValueError("file_chunk_bytes must be >= 1")
        if min(self.file_transfer_s, self.file_chunk_delay_s, self.link_ttl_s or 0.0) < 0:
            raise ValueError("file_transfer_s, file_chunk_delay_s and link_ttl_s must be >= 0")
        if self.latency_ms < 0 or self.late_list_delay_s < 0:
            raise ValueError("latency_ms and late_list_delay_s must be >= 0")


def _to_unit(t: float, mult: int) -> int:
    """Epoch seconds -> integer in the unit (floor; rounding guards float noise)."""
    return math.floor(round(t * mult, 6))


@dataclass(slots=True, eq=False)
class _Task:
    index: int
    id: str
    created: float  # sim instant the task starts to exist
    created_at: int  # as reported, in created_at_unit
    listed_at: float  # sim instant from which List Tasks shows it
    run_start: float  # waiting -> running
    end: float  # running -> terminal
    final_status: str
    output: Any
    credits_final: int
    device: str
    token: str
    has_recording: bool
    has_downloads: bool
    sig_recording: str
    sig_downloads: str
    agent_version: str
    event_dicts: list[dict[str, Any]]
    event_json: list[str]  # pre-serialised events, in order
    visible_at: list[float]  # per event, non-decreasing
    nn_idx: list[int]  # indices of events with a non-null timestamp
    nn_ts: list[int]  # their timestamps, non-decreasing

    def status_at(self, now: float) -> str:
        if now >= self.end:
            return self.final_status
        if now >= self.run_start:
            return "running"
        return "waiting"


# --------------------------------------------------------------------------- scenario


_WORDS = (
    "alpha", "bravo", "cart", "checkout", "delta", "flight", "hotel", "invoice", "login",
    "menu", "order", "price", "report", "search", "table", "ticket", "user", "zürich", "café",
)  # fmt: skip
_SITES = (
    "https://example.com", "https://shop.example.org", "https://news.example.net",
    "https://www.google.com", "https://github.com", "https://flights.example.io",
)  # fmt: skip


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _make_output(rng: random.Random, status: str) -> Any:
    if status == "cancelled":
        return None
    if status == "failed":
        if rng.random() < 0.5:
            return f"Error: {_words(rng, 3)} failed after {rng.randint(1, 9)} attempts"
        return {"error": "AgentError", "message": _words(rng, 4), "retryable": rng.random() < 0.5}
    kind = rng.choice(("string", "string", "object", "object", "array", "number", "bool", "null"))
    if kind == "string":
        return f"{_words(rng, rng.randint(2, 8)).capitalize()} ✓"
    if kind == "object":
        return {
            "title": _words(rng, 3),
            "price": round(rng.uniform(1, 999), 2),
            "in_stock": rng.random() < 0.5,
            "tags": [_words(rng, 1) for _ in range(rng.randint(0, 3))],
            "meta": {"page": rng.randint(1, 20), "source": rng.choice(_SITES)},
        }
    if kind == "array":
        return [{"name": _words(rng, 2), "value": rng.randint(0, 10_000)} for _ in range(3)]
    if kind == "number":
        return rng.randint(0, 10**6) if rng.random() < 0.5 else round(rng.uniform(0, 1000), 3)
    if kind == "bool":
        return rng.random() < 0.5
    return None


def _make_payload(rng: random.Random, name: str) -> dict[str, Any]:
    if name == "browser_action":
        action = rng.choice(("navigate", "click", "type", "scroll", "wait", "extract"))
        if action == "navigate":
            inp: dict[str, Any] = {"url": f"{rng.choice(_SITES)}/{rng.choice(_WORDS)}"}
        elif action == "click":
            inp = {"x": rng.randint(0, 1920), "y": rng.randint(0, 1080)}
        elif action == "type":
            inp = {"text": _words(rng, rng.randint(1, 4))}
        elif action == "scroll":
            inp = {"direction": rng.choice(("up", "down")), "amount": rng.randint(1, 10)}
        elif action == "wait":
            inp = {"seconds": rng.randint(1, 5)}
        else:
            inp = {"selector": f"#{rng.choice(_WORDS)}", "prompt": _words(rng, 3)}
        return {"name": action, "input": inp}
    if name == "session_action":
        action = rng.choice(("goto", "screenshot", "evaluate_js", "extract"))
        return {"name": action, "input": {"url": rng.choice(_SITES)} if action == "goto" else {}}
    if name == "tool_call":
        if rng.random() < 0.5:
            tool = rng.choice(("get_weather", "lookup_order", "send_email", "fetch_quote"))
            return {"name": tool, "input": {"query": _words(rng, 2), "n": rng.randint(1, 5)}}
        code = 200 if rng.random() < 0.9 else rng.choice((400, 500))
        return {"code": code, "output": _words(rng, 3) if code == 200 else {"error": "tool"}}
    return {"text": _words(rng, 5), "level": rng.choice(("info", "debug"))}


def _unique_hex(rng: random.Random, bits: int, seen: set[str]) -> str:
    width = bits // 4
    while True:
        h = f"{rng.getrandbits(bits):0{width}x}"
        if h not in seen:
            seen.add(h)
            return h


def _build_scenario(cfg: SimulatorConfig) -> list[_Task]:
    """Precompute every task and event. Each task draws from its own sub-generator (seeded
    from the master one), so knobs that change per-task draws do not reshuffle other tasks."""
    master = random.Random(cfg.seed)
    ca_mult = _UNITS[cfg.created_at_unit]
    ev_mult = _UNITS[cfg.event_timestamp_unit]
    task_ids: set[str] = set()
    event_ids: set[str] = set()
    tasks: list[_Task] = []
    lo, hi = cfg.duration_s
    raws = [_RawJson(text) for text in cfg.raw_json_values]
    for i in range(cfg.tasks):
        rng = random.Random(master.getrandbits(64))
        tid = "tsk_" + _unique_hex(rng, 48, task_ids)
        created = cfg.start + (i - i % cfg.created_at_group) * cfg.spacing_s
        duration = rng.uniform(lo, hi)
        run_start = created + min(rng.uniform(1.0, 5.0), duration / 4)
        end = created + duration
        r = rng.random()
        final_status = "done" if r < 0.8 else "failed" if r < 0.92 else "cancelled"
        output = _make_output(rng, final_status)
        credits_final = rng.randint(1, 400)
        device = rng.choice(DEVICES)
        token = f"{rng.getrandbits(64):016x}"
        has_recording = rng.random() < cfg.recording_rate
        has_downloads = rng.random() >= NO_DOWNLOADS_RATE
        sig_rec = f"{rng.getrandbits(256):064x}"
        sig_dl = f"{rng.getrandbits(256):064x}"
        agent_version = f"0.{rng.randint(3, 5)}.{rng.randint(0, 9)}"
        listed_at = created + (cfg.late_list_delay_s if i % 5 == 4 else 0.0)

        n = cfg.events_per_task
        instants = sorted(rng.uniform(run_start, end) for _ in range(max(n - 1, 0)))
        if n:
            instants.append(end)  # the last event lands exactly at the end
        dicts: list[dict[str, Any]] = []
        last_ts: int | None = None
        for k, at in enumerate(instants):
            # Fixed number of draws per event, whatever the rates are.
            r_tie, r_null_ts, r_null_id, r_name = (rng.random() for _ in range(4))
            eid = "evt_" + _unique_hex(rng, 64, event_ids)
            ts: int | None = _to_unit(at, ev_mult)
            if k > 0 and last_ts is not None and r_tie < cfg.event_tie_rate:
                ts = last_ts
            if ts is not None:
                last_ts = ts
            if r_null_ts < cfg.null_event_timestamp_rate:
                ts = None
            if r_name < UNSEEN_EVENT_NAME_RATE:
                name = "agent_note"
            else:
                name = ("browser_action", "browser_action", "tool_call", "session_action")[
                    int(r_name * 4) % 4
                ]
            dicts.append(
                {
                    "id": None if r_null_id < cfg.null_event_id_rate else eid,
                    "name": name,
                    "payload": _make_payload(rng, name),
                    "timestamp": ts,
                }
            )
        if raws:  # after the draws, so the rest of the scenario is unchanged
            if i % 2 == 0:
                output = raws[(i // 2) % len(raws)]
            for k, d in enumerate(dicts):
                if (i + k) % 3 == 0:
                    d["payload"] = raws[((i + k) // 3) % len(raws)]
        nn_idx = [k for k, d in enumerate(dicts) if d["timestamp"] is not None]
        tasks.append(
            _Task(
                index=i,
                id=tid,
                created=created,
                created_at=_to_unit(created, ca_mult),
                listed_at=listed_at,
                run_start=run_start,
                end=end,
                final_status=final_status,
                output=output,
                credits_final=credits_final,
                device=device,
                token=token,
                has_recording=has_recording,
                has_downloads=has_downloads,
                sig_recording=sig_rec,
                sig_downloads=sig_dl,
                agent_version=agent_version,
                event_dicts=dicts,
                event_json=[_encode(d) for d in dicts],
                visible_at=instants,
                nn_idx=nn_idx,
                nn_ts=[dicts[k]["timestamp"] for k in nn_idx],
            )
        )
    return tasks


# --------------------------------------------------------------------------- HTTP plumbing


class _HTTPError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail


def _qerr(kind: str, name: str, msg: str, value: str) -> _HTTPError:
    """A FastAPI-style 422 for one bad query parameter."""
    return _HTTPError(422, [{"type": kind, "loc": ["query", name], "msg": msg, "input": value}])


def _q_int(query: dict[str, str], name: str, default: int | None) -> int | None:
    raw = query.get(name)
    if raw is None:
        return default
    s = raw.strip()
    if _INT_RE.match(s):
        return int(s)
    if _FLOAT_RE.match(s) and float(s).is_integer():
        return int(float(s))
    raise _qerr(
        "int_parsing",
        name,
        "Input should be a valid integer, unable to parse string as an integer",
        raw,
    )


def _q_bool(query: dict[str, str], name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    s = raw.strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise _qerr(
        "bool_parsing", name, "Input should be a valid boolean, unable to interpret input", raw
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, addr: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SmoothSim/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        self.server.sim._handle(self)

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch


def _json_bytes(obj: Any) -> bytes:
    return _encode(obj).encode()


def _link_sig(base: str, issued: float, nonce: int) -> str:
    """The signature of an expiring / single-use file link."""
    return hashlib.sha256(f"{base}:{issued!r}:{nonce}".encode()).hexdigest()


# --------------------------------------------------------------------------- the simulator


class Simulator:
    """The simulated Smooth API. ``with Simulator(cfg) as sim: sim.base_url ...``."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        cfg = self.config
        self._tasks = _build_scenario(cfg)
        self._by_id = {t.id: t for t in self._tasks}
        self._ca_mult = _UNITS[cfg.created_at_unit]
        # List order: created_at desc, then id desc; plus -created_at ascending for bisect.
        self._order = sorted(self._tasks, key=lambda t: (t.created_at, t.id), reverse=True)
        self._order_neg_ca = [-t.created_at for t in self._order]
        self._lock = threading.Lock()
        self._fault_lock = threading.Lock()
        self._fault_rng = random.Random(self.config.fault_seed)
        if cfg.initial_time is not None:
            self._now = float(cfg.initial_time)
        elif self._tasks:
            self._now = max(t.created for t in self._tasks)
        else:
            self._now = float(cfg.start)
        self.stats: collections.Counter[str] = collections.Counter()
        self.base_url = ""
        self._origin = "http://127.0.0.1:0"
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._file_cache: dict[str, bytes] = {}
        self._file_hits: collections.Counter[str] = collections.Counter()  # per "id/name"
        self._links_issued = 0  # nonce of expiring / single-use links
        self._links_used: set[str] = set()

    # ---- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; return the base URL (``http://HOST:PORT/api/v1``)."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = _Server((host, port), self)
        real_port = server.server_address[1]
        url_host = f"[{host}]" if ":" in host else host
        self._origin = f"http://{url_host}:{real_port}"
        self.base_url = self._origin + API_PREFIX
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
        target = max(
            (max(t.end + ARTIFACT_DELAY_S + 1.0, t.listed_at) for t in self._tasks),
            default=self._now,
        )
        with self._lock:
            self._now = max(self._now, target)

    # ---- stats & truth

    def reset_stats(self) -> None:
        with self._lock:
            self.stats.clear()

    def _count(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self.stats[k] += 1

    def truth(self) -> dict[str, dict[str, Any]]:
        """Ground truth now: ``task_id -> {"task": <Get Task view with downloads=true, without
        "events">, "events": [every visible event, in order]}`` for every task that exists
        (``created <= now``), in creation order. Gone/malformed tasks appear with their real,
        well-formed data. Returns fresh objects."""
        now = self.now()
        out: dict[str, dict[str, Any]] = {}
        for t in self._tasks:
            if t.created > now:
                continue
            view = self._view(t, now, downloads=True, listing=False)
            k = bisect.bisect_right(t.visible_at, now)
            events = loads_json("[" + ",".join(t.event_json[:k]) + "]")
            if isinstance(view["output"], _RawJson):
                view["output"] = loads_json(view["output"].text)
            out[t.id] = {"task": view, "events": events}
        return out

    # ---- views

    def _file_url(self, t: _Task, name: str, sig: str) -> str:
        cfg = self.config
        if cfg.link_ttl_s is None and not cfg.single_use_links:
            return (
                f"{self._origin}/files/{t.id}/{name}"
                f"?X-Amz-Signature={sig}&X-Amz-Expires={URL_EXPIRES_S}"
            )
        # Expiring / single-use links: each issue gets its own date, nonce and signature.
        with self._lock:
            self._links_issued += 1
            nonce = self._links_issued
            issued = self._now
        expires = URL_EXPIRES_S if cfg.link_ttl_s is None else cfg.link_ttl_s
        return (
            f"{self._origin}/files/{t.id}/{name}?X-Amz-Date={issued!r}&X-Amz-Expires={expires}"
            f"&X-Amz-Credential={nonce}&X-Amz-Signature={_link_sig(sig, issued, nonce)}"
        )

    def _view(self, t: _Task, now: float, *, downloads: bool, listing: bool) -> dict[str, Any]:
        """TaskResponse without ``events`` (List adds ``events: null``)."""
        status = t.status_at(now)
        terminal = status in TERMINAL_STATUSES
        if terminal:
            credits = t.credits_final
        elif status == "running":
            frac = (now - t.run_start) / (t.end - t.run_start) if t.end > t.run_start else 1.0
            credits = min(t.credits_final, max(0, math.floor(t.credits_final * frac)))
        else:
            credits = 0
        recording: str | None = None
        if terminal and now >= t.end + ARTIFACT_DELAY_S:
            recording = (
                self._file_url(t, "recording.mp4", t.sig_recording) if t.has_recording else ""
            )
            if recording and self.config.recording_url_override is not None:
                recording = self.config.recording_url_override
        dl: str | None = None
        if downloads and terminal and not listing:
            dl = self._file_url(t, "downloads.zip", t.sig_downloads) if t.has_downloads else ""
        view: dict[str, Any] = {
            "id": t.id,
            "status": status,
            "output": t.output if terminal else None,
            "credits_used": credits,
            "device": t.device,
            "live_url": "" if terminal else f"https://live.smooth.sh/{t.id}?token={t.token}",
            "recording_url": recording,
            "downloads_url": dl,
            "created_at": t.created_at,
            "agent_version": t.agent_version,
        }
        if listing:
            view["events"] = None
        return view

    def _events_json(self, t: _Task, now: float, event_t: int) -> str:
        k = bisect.bisect_right(t.visible_at, now)
        ej = t.event_json
        if self.config.ignore_event_t:
            return ",".join(ej[:k])
        if event_t == 0:
            # Null timestamps pass; real ones must still be > 0 (always, for epoch times).
            if not t.nn_ts or t.nn_ts[0] > 0:
                return ",".join(ej[:k])
            keep = [i for i in range(k) if (ts := t.event_dicts[i]["timestamp"]) is None or ts > 0]
            return ",".join([ej[i] for i in keep])
        j = bisect.bisect_right(t.nn_ts, event_t)  # first non-null timestamp > event_t
        m = bisect.bisect_left(t.nn_idx, k)  # non-null events that are visible
        return ",".join([ej[i] for i in t.nn_idx[j:m]])

    # ---- request handling

    def _handle(self, h: _Handler) -> None:
        length = h.headers.get("Content-Length")
        if length:
            with contextlib.suppress(ValueError):
                h.rfile.read(int(length))
        parts = urlsplit(h.path)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))  # last value wins
        ctype = "application/json"
        extra: dict[str, str] = {}
        try:
            if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
                fault = self._draw_fault()
                if fault is not None and self._apply_fault(h, fault):
                    return
                status, body = self._api(h, path, query)
            elif path.startswith("/_sim/"):
                status, body = self._control(h.command, path, query)
            elif path.startswith(("/files/", "/redirected/")):
                self._files(h, path, query)  # streams its own response
                return
            else:
                raise _HTTPError(404, "Not Found")
        except _HTTPError as e:
            status, body = e.status, _json_bytes({"detail": e.detail})
            if e.status == 405:
                extra["Allow"] = "GET"
        except Exception as e:  # a simulator bug: answer like a real server would
            status, body = 500, _json_bytes({"detail": f"Internal Server Error: {e!r}"})
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _draw_fault(self) -> str | None:
        cfg = self.config
        if cfg.fault_rate <= 0 or not cfg.fault_kinds:
            return None
        with self._fault_lock:
            if self._fault_rng.random() >= cfg.fault_rate:
                return None
            return self._fault_rng.choice(cfg.fault_kinds)

    def _apply_fault(self, h: _Handler, fault: str) -> bool:
        """Answer with ``fault``; False when the request should then proceed normally."""
        self._count("fault", f"fault:{fault}")
        if fault == "spike":
            time.sleep(self.config.latency_spike_ms / 1000.0)
            return False
        if fault == "drop":
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return True
        headers: dict[str, str] = {}
        if fault in ("500", "502", "503", "429"):
            status, ctype = int(fault), "application/json"
            body = _json_bytes({"detail": f"simulated {fault}"})
            if fault == "429":
                headers["Retry-After"] = "0"
        elif fault == "garbage":
            status, ctype, body = 200, "application/json", b'\x00\xff{"r": [garbage'
        elif fault == "html200":
            status, ctype = 200, "text/html"
            body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        elif fault == "truncate":
            status, ctype = 200, "application/json"
            body = _json_bytes({"r": {"id": "x", "status": "running", "events": []}}) * 4
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            with contextlib.suppress(OSError):
                h.wfile.write(body[: len(body) // 2])
                h.wfile.flush()
                h.connection.shutdown(socket.SHUT_RDWR)
            h.close_connection = True
            return True
        else:
            raise ValueError(f"unknown fault kind {fault!r}")
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(body)
        return True

    def _api(self, h: _Handler, path: str, query: dict[str, str]) -> tuple[int, bytes]:
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
                raise _HTTPError(401, "Invalid or missing API key")
            if not route_keys:
                raise _HTTPError(404, "Not Found")
            if h.command != "GET":
                raise _HTTPError(405, "Method Not Allowed")
            if route_keys[0] == "list":
                status, body = self._list(query)
            else:
                status, body = self._get(route_keys[1][len("get:") :], query)
            return status, body
        except _HTTPError as e:
            status = e.status
            raise
        finally:
            self._count(*route_keys, f"status:{status}")

    def _list(self, query: dict[str, str]) -> tuple[int, bytes]:
        limit = _q_int(query, "l", LIST_DEFAULT_LIMIT)
        assert limit is not None
        before = _q_int(query, "t", None)
        if limit < 1:
            msg = "Input should be greater than or equal to 1"
            raise _qerr("greater_than_equal", "l", msg, query["l"])
        if limit > LIST_MAX_LIMIT:
            msg = f"Input should be less than or equal to {LIST_MAX_LIMIT}"
            raise _qerr("less_than_equal", "l", msg, query["l"])
        now = self.now()
        neg = self._order_neg_ca
        pos = bisect.bisect_left(neg, -_to_unit(now, self._ca_mult))  # created_at <= now
        if before is not None:
            pos = max(pos, bisect.bisect_right(neg, -before))  # created_at < before
        items: list[dict[str, Any]] = []
        order = self._order
        while pos < len(order) and len(items) < limit:
            t = order[pos]
            pos += 1
            if t.created <= now and t.listed_at <= now:
                items.append(self._view(t, now, downloads=False, listing=True))
        return 200, _json_bytes({"r": items})

    def _get(self, task_id: str, query: dict[str, str]) -> tuple[int, bytes]:
        event_t = _q_int(query, "event_t", 0)
        assert event_t is not None
        downloads = _q_bool(query, "downloads")
        now = self.now()
        t = self._by_id.get(task_id)
        if t is None or t.created > now or task_id in self.config.gone_task_ids:
            raise _HTTPError(404, "Task not found")
        if task_id in self.config.malformed_task_ids:
            bad = {
                "id": t.id,
                "status": 123,
                "output": None,
                "credits_used": "lots",
                "device": "toaster",
                "created_at": t.created_at,
                "events": "x",
            }
            return 200, _json_bytes({"r": bad})
        view = self._view(t, now, downloads=downloads, listing=False)
        code = 200 if view["status"] in TERMINAL_STATUSES else 202
        head = _encode(view)
        body = '{"r": ' + head[:-1] + ', "events": [' + self._events_json(t, now, event_t) + "]}}"
        return code, body.encode()

    def _control(self, method: str, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        name = path[len("/_sim/") :]
        posts = {"advance", "set_time", "finish_all", "reset_stats"}
        gets = {"now", "stats", "truth"}
        if name not in posts | gets:
            raise _HTTPError(404, "Not Found")
        if (name in posts) != (method == "POST") or (name in gets and method != "GET"):
            raise _HTTPError(405, "Method Not Allowed")

        def number(key: str) -> float:
            raw = query.get(key)
            try:
                return float(raw) if raw is not None else math.nan
            except ValueError:
                return math.nan

        if name == "advance":
            secs = number("seconds")
            if not math.isfinite(secs) or secs < 0:
                raise _HTTPError(422, "seconds must be a non-negative number")
            self.advance(secs)
        elif name == "set_time":
            t = number("t")
            if not math.isfinite(t):
                raise _HTTPError(422, "t must be a number (epoch seconds)")
            self.set_time(t)
        elif name == "finish_all":
            self.finish_all()
        elif name == "reset_stats":
            self.reset_stats()
        elif name == "stats":
            with self._lock:
                return 200, _json_bytes(dict(self.stats))
        elif name == "truth":
            return 200, _json_bytes(self.truth())
        return 200, _json_bytes({"now": self.now()})

    def _files(self, h: _Handler, path: str, query: dict[str, str]) -> None:
        """Serve one presigned file link (or raise _HTTPError before anything is sent)."""
        cfg = self.config
        if h.command not in ("GET", "HEAD"):
            raise _HTTPError(405, "Method Not Allowed")
        redirected = path.startswith("/redirected/")
        parts = path.split("/", 2)[2].split("/")
        if len(parts) != 2 or parts[1] not in ("recording.mp4", "downloads.zip"):
            raise _HTTPError(404, "NoSuchKey")
        task_id, name = unquote(parts[0]), parts[1]
        key = f"{task_id}/{name}"
        self._count("file", f"file:{task_id}", f"file:{key}")
        with self._lock:
            self._file_hits[key] += 1
            hit = self._file_hits[key]
        t = self._by_id.get(task_id)
        now = self.now()
        if t is None or t.created > now:
            raise _HTTPError(404, "NoSuchKey")
        is_rec = name == "recording.mp4"
        self._check_link(t, is_rec, query, now, consume=not (cfg.file_redirect and not redirected))
        if hit <= len(cfg.file_errors):
            raise _HTTPError(cfg.file_errors[hit - 1], "simulated artifact host error")
        if is_rec:
            ok = t.has_recording and now >= t.end + ARTIFACT_DELAY_S
        else:
            ok = t.has_downloads and now >= t.end
        if not ok:
            raise _HTTPError(404, "NoSuchKey")
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
        size, chunks = self._file_body(t, is_rec)
        ctype = cfg.recording_content_type if is_rec else cfg.downloads_content_type
        self._count(f"file_served:{key}")
        self._stream(h, size, chunks, ctype, truncate=hit <= cfg.truncate_file_requests)

    def _check_link(
        self, t: _Task, is_rec: bool, query: dict[str, str], now: float, *, consume: bool
    ) -> None:
        cfg = self.config
        sig = t.sig_recording if is_rec else t.sig_downloads
        if cfg.link_ttl_s is None and not cfg.single_use_links:
            if query.get("X-Amz-Signature") != sig:
                raise _HTTPError(403, "SignatureDoesNotMatch")
            return
        try:
            issued = float(query.get("X-Amz-Date", ""))
            nonce = int(query.get("X-Amz-Credential", ""))
        except ValueError:
            raise _HTTPError(403, "AuthorizationQueryParametersError") from None
        if query.get("X-Amz-Signature") != _link_sig(sig, issued, nonce):
            raise _HTTPError(403, "SignatureDoesNotMatch")
        if cfg.link_ttl_s is not None and now > issued + cfg.link_ttl_s:
            raise _HTTPError(403, "AccessDenied: Request has expired")
        if cfg.single_use_links:
            token = f"{nonce}"
            with self._lock:
                if token in self._links_used:
                    raise _HTTPError(403, "AccessDenied: link already used")
                if consume:
                    self._links_used.add(token)

    def _file_body(self, t: _Task, is_rec: bool) -> tuple[int, Iterator[bytes]]:
        """(size, chunks) of a file; big recordings are generated on the fly, never whole."""
        cfg = self.config
        if is_rec and cfg.recording_bytes is not None:
            return cfg.recording_bytes, self._big_recording(t, cfg.recording_bytes)
        key = f"{t.id}/{'rec' if is_rec else 'zip'}"
        with self._lock:
            data = self._file_cache.get(key)
        if data is None:
            if is_rec:
                data = self._recording_bytes(t)
            elif t.id in cfg.corrupt_zip_task_ids:
                data = self._downloads_zip(t)[:-30]  # the end of the central directory is cut
            elif t.id in cfg.hostile_zip_task_ids:
                data = self._hostile_zip(t)
            else:
                data = self._downloads_zip(t)
            with self._lock:
                self._file_cache[key] = data
        step = cfg.file_chunk_bytes
        return len(data), (data[i : i + step] for i in range(0, len(data), step))

    def _big_recording(self, t: _Task, size: int) -> Iterator[bytes]:
        """``size`` video-like bytes: an ftyp header, then a seeded 1 MiB block, cycled."""
        rng = random.Random(f"{self.config.seed}:{t.id}:bigrec")
        head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
        block = rng.randbytes(1024 * 1024)
        twice = block + block
        step = min(self.config.file_chunk_bytes, len(block))
        first = head[:size]
        if first:
            yield first
        sent, offset = len(first), 0
        while sent < size:
            n = min(step, size - sent)
            yield twice[offset : offset + n]
            offset = (offset + n) % len(block)
            sent += n

    def file_bytes(self, task_id: str, name: str) -> bytes:
        """The exact bytes the file link of a task serves (tests; small files only)."""
        t = self._by_id[task_id]
        return b"".join(self._file_body(t, name == "recording.mp4")[1])

    def file_sha256(self, task_id: str, name: str) -> tuple[int, str]:
        """(size, SHA-256) of what a file link serves, computed as a stream."""
        t = self._by_id[task_id]
        size, chunks = self._file_body(t, name == "recording.mp4")
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        return size, digest.hexdigest()

    def _stream(
        self, h: _Handler, size: int, chunks: Iterator[bytes], ctype: str, *, truncate: bool
    ) -> None:
        cfg = self.config
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
                    with self._lock:
                        self.stats["file_bytes"] += len(chunk)
                if sent >= limit:
                    break
                if cfg.file_chunk_delay_s > 0:
                    time.sleep(cfg.file_chunk_delay_s)
            if truncate:
                h.wfile.flush()
                h.close_connection = True
                with contextlib.suppress(OSError):
                    h.connection.shutdown(socket.SHUT_RDWR)
                return
            if cfg.file_chunked:
                h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except OSError:  # the client went away (e.g. it stopped at its size limit)
            h.close_connection = True
            return
        if cfg.file_transfer_s > 0:
            self.advance(cfg.file_transfer_s)

    def _recording_bytes(self, t: _Task) -> bytes:
        seed = hashlib.sha256(f"{self.config.seed}:{t.id}:rec".encode()).digest()
        size = 2048 + int.from_bytes(seed[:2], "big") % 30_000
        chunks = [b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"]
        block = seed
        while sum(map(len, chunks)) < size:
            block = hashlib.sha256(block).digest()
            chunks.append(block)
        return b"".join(chunks)[:size]

    def _downloads_zip(self, t: _Task) -> bytes:
        rng = random.Random(f"{self.config.seed}:{t.id}:zip")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for k in range(rng.randint(1, 3)):
                info = zipfile.ZipInfo(
                    f"download_{k}_{rng.choice(_WORDS)}.txt", (2025, 1, 1, 0, 0, 0)
                )
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, (_words(rng, 20) + "\n").encode() * rng.randint(1, 20))
        return buf.getvalue()

    def _hostile_zip(self, t: _Task) -> bytes:
        """A zip whose member names try to escape: ../, absolute, drive and UNC paths."""
        names = (
            "../../etc/passwd",
            "/etc/shadow",
            "..\\..\\windows\\system32\\evil.dll",
            "C:/Users/Public/evil.txt",
            "a/../../../escape.txt",
            "./ok/../../dot.txt",
            "normal/ok.txt",
            "ünïcödé/名前.txt",
        )
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for k, name in enumerate(names):
                info = zipfile.ZipInfo(name, (2026, 1, 2, 3, 4, 6))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, f"{t.id} member {k}\n".encode() * 10)
        return buf.getvalue()


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m archiver.simulator", description="Serve a simulated Smooth API."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tasks", type=int, default=20)
    p.add_argument("--events", type=int, default=10, help="events per task")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finish-all", action="store_true", help="start with every task finished")
    p.add_argument("--created-at-group", type=int, default=1)
    p.add_argument("--ignore-event-t", action="store_true")
    p.add_argument("--api-key", default=None)
    p.add_argument("--event-timestamp-unit", choices=sorted(_UNITS), default="ms")
    p.add_argument("--created-at-unit", choices=sorted(_UNITS), default="s")
    p.add_argument("--recording-rate", type=float, default=0.8)
    p.add_argument(
        "--recording-bytes", type=int, default=None, help="recording size (generated on the fly)"
    )
    p.add_argument("--file-chunk-bytes", type=int, default=64 * 1024)
    a = p.parse_args(argv)
    sim = Simulator(
        SimulatorConfig(
            seed=a.seed,
            tasks=a.tasks,
            events_per_task=a.events,
            latency_ms=a.latency_ms,
            created_at_group=a.created_at_group,
            ignore_event_t=a.ignore_event_t,
            api_key=a.api_key,
            event_timestamp_unit=a.event_timestamp_unit,
            created_at_unit=a.created_at_unit,
            recording_rate=a.recording_rate,
            recording_bytes=a.recording_bytes,
            file_chunk_bytes=a.file_chunk_bytes,
        )
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    url = sim.start(a.host, a.port)
    if a.finish_all:
        sim.finish_all()
    print(url, flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
