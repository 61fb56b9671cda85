"""Scenario generation: every task and event of a simulated run, and what the API shows of
them at a given sim instant (views, event filtering, listing, ground truth).

Nothing here does I/O. Each task draws from its own sub-generator, seeded from
``random.Random(config.seed)``, so the same config always yields the same scenario and knobs
that change one task's draws do not reshuffle the others. File links are not built here: the
caller passes a ``link`` function (the artifact host signs them).
"""

from __future__ import annotations

import bisect
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from archiver.simulator.config import (
    ARTIFACT_DELAY_S,
    DEVICES,
    NO_DOWNLOADS_RATE,
    UNITS,
    UNSEEN_EVENT_NAME_RATE,
    SimulatorConfig,
)

__all__ = ["ENCODER", "Link", "Scenario", "Task", "knob_draw", "to_unit", "words"]

ENCODER = json.JSONEncoder(ensure_ascii=False)

#: ``link(task, file_name) -> URL``: a presigned link to ``recording.mp4`` / ``downloads.zip``.
Link = Callable[["Task", str], str]


def to_unit(t: float, mult: int) -> int:
    """Epoch seconds -> integer in the unit (floor; rounding guards float noise)."""
    return math.floor(round(t * mult, 6))


def _knob_rng(seed: int, task_id: str, knob: str) -> random.Random:
    """A generator of its own for one knob of one task, so turning a knob on changes
    nothing else in the scenario."""
    return random.Random(f"{seed}:{task_id}:{knob}")


def knob_draw(seed: int, task_id: str, knob: str) -> float:
    """One seeded draw in [0, 1) for ``knob`` of a task (selects the task when < rate)."""
    return _knob_rng(seed, task_id, knob).random()


@dataclass(slots=True, eq=False)
class Task:
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
    # event index -> (sim instant its payload is filled in, its JSON until then)
    late: dict[int, tuple[float, str]]
    pause: tuple[float, float, str] | None  # (from, until, status) of an unknown status
    credits_bump: int  # credits added after the end, linearly over settle_s
    settle_s: float
    settled: float  # sim instant after which nothing about the task changes

    def status_at(self, now: float) -> str:
        if now >= self.end:
            return self.final_status
        if self.pause is not None and self.pause[0] <= now < self.pause[1]:
            return self.pause[2]
        if now >= self.run_start:
            return "running"
        return "waiting"

    def credits_at(self, now: float) -> int:
        if now >= self.end:
            if self.credits_bump and now < self.end + self.settle_s:
                return self.credits_final + math.floor(
                    self.credits_bump * (now - self.end) / self.settle_s
                )
            return self.credits_final + self.credits_bump
        if now >= self.run_start:
            span = self.end - self.run_start
            frac = (now - self.run_start) / span if span > 0 else 1.0
            return min(self.credits_final, max(0, math.floor(self.credits_final * frac)))
        return 0

    def is_over(self, now: float) -> bool:
        """Ended (terminal status, HTTP 200 on Get Task)."""
        return now >= self.end


# --------------------------------------------------------------------------- content

_WORDS = (
    "alpha", "bravo", "cart", "checkout", "delta", "flight", "hotel", "invoice", "login",
    "menu", "order", "price", "report", "search", "table", "ticket", "user", "zürich", "café",
)  # fmt: skip
_SITES = (
    "https://example.com", "https://shop.example.org", "https://news.example.net",
    "https://www.google.com", "https://github.com", "https://flights.example.io",
)  # fmt: skip


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _make_output(rng: random.Random, status: str) -> Any:
    if status == "cancelled":
        return None
    if status == "failed":
        if rng.random() < 0.5:
            return f"Error: {words(rng, 3)} failed after {rng.randint(1, 9)} attempts"
        return {"error": "AgentError", "message": words(rng, 4), "retryable": rng.random() < 0.5}
    kind = rng.choice(("string", "string", "object", "object", "array", "number", "bool", "null"))
    if kind == "string":
        return f"{words(rng, rng.randint(2, 8)).capitalize()} ✓"
    if kind == "object":
        return {
            "title": words(rng, 3),
            "price": round(rng.uniform(1, 999), 2),
            "in_stock": rng.random() < 0.5,
            "tags": [words(rng, 1) for _ in range(rng.randint(0, 3))],
            "meta": {"page": rng.randint(1, 20), "source": rng.choice(_SITES)},
        }
    if kind == "array":
        return [{"name": words(rng, 2), "value": rng.randint(0, 10_000)} for _ in range(3)]
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
            inp = {"text": words(rng, rng.randint(1, 4))}
        elif action == "scroll":
            inp = {"direction": rng.choice(("up", "down")), "amount": rng.randint(1, 10)}
        elif action == "wait":
            inp = {"seconds": rng.randint(1, 5)}
        else:
            inp = {"selector": f"#{rng.choice(_WORDS)}", "prompt": words(rng, 3)}
        return {"name": action, "input": inp}
    if name == "session_action":
        action = rng.choice(("goto", "screenshot", "evaluate_js", "extract"))
        return {"name": action, "input": {"url": rng.choice(_SITES)} if action == "goto" else {}}
    if name == "tool_call":
        if rng.random() < 0.5:
            tool = rng.choice(("get_weather", "lookup_order", "send_email", "fetch_quote"))
            return {"name": tool, "input": {"query": words(rng, 2), "n": rng.randint(1, 5)}}
        code = 200 if rng.random() < 0.9 else rng.choice((400, 500))
        return {"code": code, "output": words(rng, 3) if code == 200 else {"error": "tool"}}
    return {"text": words(rng, 5), "level": rng.choice(("info", "debug"))}


def _unique_hex(rng: random.Random, bits: int, seen: set[str]) -> str:
    width = bits // 4
    while True:
        h = f"{rng.getrandbits(bits):0{width}x}"
        if h not in seen:
            seen.add(h)
            return h


def _build_events(
    cfg: SimulatorConfig, rng: random.Random, run_start: float, end: float, event_ids: set[str]
) -> tuple[list[float], list[dict[str, Any]]]:
    """(visible instants, event dicts) of one task, in order."""
    ev_mult = UNITS[cfg.event_timestamp_unit]
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
        ts: int | None = to_unit(at, ev_mult)
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
    return instants, dicts


def _duplicate_events(
    rng: random.Random, rate: float, instants: list[float], dicts: list[dict[str, Any]]
) -> tuple[list[float], list[dict[str, Any]]]:
    """Send some events without an id twice: the copy follows the original, visible halfway
    to the next event (or with the original when it is the last)."""
    out_at: list[float] = []
    out: list[dict[str, Any]] = []
    for k, (at, d) in enumerate(zip(instants, dicts, strict=True)):
        out_at.append(at)
        out.append(d)
        if d["id"] is None and rng.random() < rate:
            nxt = instants[k + 1] if k + 1 < len(instants) else at
            out_at.append((at + nxt) / 2)
            out.append(dict(d))
    return out_at, out


def _incomplete(payload: dict[str, Any], form: str) -> dict[str, Any] | None:
    if form == "null":
        return None
    if form == "empty":
        return {}
    return dict(list(payload.items())[:1])  # "partial": the first key only


def _late_payloads(
    cfg: SimulatorConfig, rng: random.Random, instants: Sequence[float], dicts: list[dict[str, Any]]
) -> dict[int, tuple[float, str]]:
    """Events with an id whose payload is filled in late_payload_delay_s after they appear."""
    late: dict[int, tuple[float, str]] = {}
    for k, d in enumerate(dicts):
        if d["id"] is not None and rng.random() < cfg.late_payload_rate:
            early = {**d, "payload": _incomplete(d["payload"], cfg.late_payload_form)}
            late[k] = (instants[k] + cfg.late_payload_delay_s, ENCODER.encode(early))
    return late


def _build_tasks(cfg: SimulatorConfig) -> list[Task]:
    """Precompute every task and event."""
    master = random.Random(cfg.seed)
    ca_mult = UNITS[cfg.created_at_unit]
    task_ids: set[str] = set()
    event_ids: set[str] = set()
    tasks: list[Task] = []
    lo, hi = cfg.duration_s
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
        instants, dicts = _build_events(cfg, rng, run_start, end, event_ids)
        # Knobs of issue 9: each from its own generator, drawn only when switched on.
        if cfg.duplicate_event_rate > 0:
            dup_rng = _knob_rng(cfg.seed, tid, "duplicate")
            instants, dicts = _duplicate_events(dup_rng, cfg.duplicate_event_rate, instants, dicts)
        late: dict[int, tuple[float, str]] = {}
        if cfg.late_payload_rate > 0:
            late = _late_payloads(cfg, _knob_rng(cfg.seed, tid, "late"), instants, dicts)
        pause: tuple[float, float, str] | None = None
        if cfg.unknown_status_rate > 0 or cfg.unknown_final_status_rate > 0:
            status_rng = _knob_rng(cfg.seed, tid, "status")
            r_pause, r_final = status_rng.random(), status_rng.random()
            if r_pause < cfg.unknown_status_rate:
                third = (end - run_start) / 3
                pause = (run_start + third, run_start + 2 * third, cfg.unknown_status)
            if r_final < cfg.unknown_final_status_rate:
                final_status, output = cfg.unknown_final_status, None
        bump = 0
        if cfg.credits_settle_s > 0:
            bump = _knob_rng(cfg.seed, tid, "credits").randint(1, 5)
        settled = max(
            [end + ARTIFACT_DELAY_S, end + cfg.credits_settle_s]
            + [fill for fill, _ in late.values()]
        )
        nn_idx = [k for k, d in enumerate(dicts) if d["timestamp"] is not None]
        tasks.append(
            Task(
                index=i,
                id=tid,
                created=created,
                created_at=to_unit(created, ca_mult),
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
                event_json=[ENCODER.encode(d) for d in dicts],
                visible_at=instants,
                nn_idx=nn_idx,
                nn_ts=[dicts[k]["timestamp"] for k in nn_idx],
                late=late,
                pause=pause,
                credits_bump=bump,
                settle_s=cfg.credits_settle_s,
                settled=settled,
            )
        )
    return tasks


# --------------------------------------------------------------------------- the scenario


class Scenario:
    """All tasks of one config, and what the API shows of them at a sim instant."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.tasks = _build_tasks(config)
        self.by_id = {t.id: t for t in self.tasks}
        self.ca_mult = UNITS[config.created_at_unit]
        # List order: created_at desc, then id desc; plus -created_at ascending for bisect.
        self._order = sorted(self.tasks, key=lambda t: (t.created_at, t.id), reverse=True)
        self._order_neg_ca = [-t.created_at for t in self._order]

    def initial_time(self) -> float:
        """The clock at start: ``initial_time``, else when the last task is created."""
        if self.config.initial_time is not None:
            return float(self.config.initial_time)
        return max((t.created for t in self.tasks), default=float(self.config.start))

    def settled_time(self) -> float | None:
        """A sim instant by which every task exists, is listed, ended and has settled (all
        events and payloads, credits, artifact links); None without tasks."""
        return max((max(t.settled + 1.0, t.listed_at) for t in self.tasks), default=None)

    def listing(self, now: float, before: int | None, limit: int) -> list[Task]:
        """Tasks List Tasks shows at ``now``: newest first, ``created_at < before``."""
        neg = self._order_neg_ca
        pos = bisect.bisect_left(neg, -to_unit(now, self.ca_mult))  # created_at <= now
        if before is not None:
            pos = max(pos, bisect.bisect_right(neg, -before))  # created_at < before
        items: list[Task] = []
        order = self._order
        while pos < len(order) and len(items) < limit:
            t = order[pos]
            pos += 1
            if t.created <= now and t.listed_at <= now:
                items.append(t)
        return items

    def view(
        self, t: Task, now: float, *, downloads: bool, listing: bool, link: Link
    ) -> dict[str, Any]:
        """TaskResponse without ``events`` (List adds ``events: null``)."""
        status = t.status_at(now)
        over = t.is_over(now)
        credits = t.credits_at(now)
        recording: str | None = None
        if over and now >= t.end + ARTIFACT_DELAY_S:
            recording = link(t, "recording.mp4") if t.has_recording else ""
        dl: str | None = None
        if downloads and over and not listing:
            dl = link(t, "downloads.zip") if t.has_downloads else ""
        view: dict[str, Any] = {
            "id": t.id,
            "status": status,
            "output": t.output if over else None,
            "credits_used": credits,
            "device": t.device,
            "live_url": "" if over else f"https://live.smooth.sh/{t.id}?token={t.token}",
            "recording_url": recording,
            "downloads_url": dl,
            "created_at": t.created_at,
            "agent_version": t.agent_version,
        }
        if listing:
            view["events"] = None
        return view

    @staticmethod
    def malformed_view(t: Task) -> dict[str, Any]:
        """A TaskResponse that breaks the spec (wrong types), keeping id and created_at."""
        return {
            "id": t.id,
            "status": 123,
            "output": None,
            "credits_used": "lots",
            "device": "toaster",
            "created_at": t.created_at,
            "events": "x",
        }

    def events_json(self, t: Task, now: float, event_t: int, *, ignore_event_t: bool) -> str:
        """The comma-joined JSON of the events Get Task returns for ``event_t`` at ``now``.

        Events with a null timestamp pass only when ``event_t == 0``, mimicking a SQL
        ``WHERE timestamp > :event_t`` (NULL > x is never true) behind an "event_t=0 means no
        filter" shortcut."""
        k = bisect.bisect_right(t.visible_at, now)
        if ignore_event_t:
            return self._join(t, range(k), now)
        if event_t == 0:
            # Null timestamps pass; real ones must still be > 0 (always, for epoch times).
            if not t.nn_ts or t.nn_ts[0] > 0:
                return self._join(t, range(k), now)
            keep = [i for i in range(k) if (ts := t.event_dicts[i]["timestamp"]) is None or ts > 0]
            return self._join(t, keep, now)
        j = bisect.bisect_right(t.nn_ts, event_t)  # first non-null timestamp > event_t
        m = bisect.bisect_left(t.nn_idx, k)  # non-null events that are visible
        return self._join(t, t.nn_idx[j:m], now)

    @staticmethod
    def _join(t: Task, idx: range | list[int], now: float) -> str:
        """The events ``idx`` as served at ``now`` (a late payload as it is by then)."""
        ej = t.event_json
        if not t.late:
            if isinstance(idx, range):
                return ",".join(ej[idx.start : idx.stop])
            return ",".join([ej[i] for i in idx])
        out = []
        for i in idx:
            late = t.late.get(i)
            out.append(late[1] if late is not None and now < late[0] else ej[i])
        return ",".join(out)

    def truth(self, now: float, link: Link) -> dict[str, dict[str, Any]]:
        """``task_id -> {"task": <Get Task view, downloads=true, without "events">, "events":
        [every visible event, in order]}`` for every task that exists at ``now``."""
        out: dict[str, dict[str, Any]] = {}
        for t in self.tasks:
            if t.created > now:
                continue
            view = self.view(t, now, downloads=True, listing=False, link=link)
            k = bisect.bisect_right(t.visible_at, now)
            events = json.loads("[" + self._join(t, range(k), now) + "]")
            out[t.id] = {"task": view, "events": events}
        return out
