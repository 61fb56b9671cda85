"""Tests of the Smooth API simulator (archiver.simulator), over real HTTP on loopback."""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from archiver.simulator import Simulator, SimulatorConfig
from tests.conftest import TEST_API_KEY, start_archiver

# A verbatim copy of ../shared/smooth-api/get-task.openapi.md (the published reference),
# kept in the repo so the conformance test never skips.
SPEC = Path(__file__).resolve().parent / "data" / "smooth-get-task.openapi.md"
START = SimulatorConfig().start
TERMINAL = {"done", "failed", "cancelled"}
FILE_URL = re.compile(
    r"^http://127\.0\.0\.1:\d+/files/tsk_[0-9a-f]{12}/(recording\.mp4|downloads\.zip)"
    r"\?X-Amz-Signature=[0-9a-f]+&X-Amz-Expires=3600$"
)

MakeSim = Callable[..., tuple[Simulator, httpx.Client]]


@pytest.fixture
def make_sim() -> Iterator[MakeSim]:
    """Factory: start a Simulator with the given config knobs; stop everything afterwards."""
    started: list[tuple[Simulator, httpx.Client]] = []

    def _make(**knobs: Any) -> tuple[Simulator, httpx.Client]:
        sim = Simulator(SimulatorConfig(**knobs))
        sim.start()
        client = httpx.Client(base_url=sim.base_url, timeout=10.0)
        started.append((sim, client))
        return sim, client

    yield _make
    for sim, client in started:
        client.close()
        sim.stop()


def _list_all(client: httpx.Client, limit: int = 128) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {"l": limit}
    while True:
        page = client.get("/task", params=params).json()["r"]
        if not page:
            return out
        out.extend(page)
        params["t"] = page[-1]["created_at"]


def _events(client: httpx.Client, task_id: str, event_t: int = 0) -> list[dict[str, Any]]:
    r = client.get(f"/task/{task_id}", params={"event_t": event_t})
    assert r.status_code in (200, 202)
    events = r.json()["r"]["events"]
    assert isinstance(events, list)
    return events


def test_list_is_newest_first_and_t_is_strictly_before(make_sim: MakeSim) -> None:
    """List Tasks is ordered newest first and `t` keeps only tasks created strictly before it."""
    sim, client = make_sim(tasks=25, spacing_s=60.0)
    page = client.get("/task", params={"l": 5}).json()["r"]
    assert len(page) == 5
    stamps = [t["created_at"] for t in page]
    assert stamps == sorted(stamps, reverse=True)
    assert stamps[0] == START + 24 * 60  # the newest task exists at the default initial time
    assert all(t["events"] is None and t["downloads_url"] is None for t in page)

    nxt = client.get("/task", params={"l": 5, "t": stamps[-1]}).json()["r"]
    assert nxt and all(t["created_at"] < stamps[-1] for t in nxt)
    assert nxt[0]["created_at"] == stamps[-1] - 60

    everything = _list_all(client, limit=7)
    assert [t["id"] for t in everything] == list(reversed(list(sim.truth())))
    assert len({t["id"] for t in everything}) == 25


def test_list_limit_default_and_bounds(make_sim: MakeSim) -> None:
    """`l` defaults to 32, accepts 1..128 and gives 422 with a detail outside that range."""
    _, client = make_sim(tasks=140, events_per_task=1, spacing_s=1.0)
    assert len(client.get("/task").json()["r"]) == 32
    assert len(client.get("/task", params={"l": 1}).json()["r"]) == 1
    assert len(client.get("/task", params={"l": 128}).json()["r"]) == 128
    for bad in ("0", "129", "-1", "abc", ""):
        r = client.get("/task", params={"l": bad})
        assert r.status_code == 422, bad
        assert "detail" in r.json()
    assert client.get("/task", params={"t": "soon"}).status_code == 422


def test_created_at_group_ties_straddle_a_page_boundary(make_sim: MakeSim) -> None:
    """With created_at_group larger than a page, a strictly-before cursor skips tied tasks."""
    sim, client = make_sim(tasks=80, events_per_task=1, created_at_group=40)
    page1 = client.get("/task", params={"l": 32}).json()["r"]
    group_ts = page1[0]["created_at"]
    assert all(t["created_at"] == group_ts for t in page1)
    ids = [t["id"] for t in page1]
    assert ids == sorted(ids, reverse=True)  # stable tie order: id desc

    page2 = client.get("/task", params={"l": 32, "t": group_ts}).json()["r"]
    assert all(t["created_at"] < group_ts for t in page2)
    whole_group = client.get("/task", params={"l": 128, "t": group_ts + 1}).json()["r"]
    assert [t["created_at"] for t in whole_group[:40]] == [group_ts] * 40
    assert whole_group[:32] == page1  # re-reading the boundary gives the same order
    assert len({t["id"] for t in whole_group[:40]} - set(ids)) == 8  # lost by a naive cursor
    assert len(sim.truth()) == 80


def test_get_task_status_codes(make_sim: MakeSim) -> None:
    """Get Task answers 200 when terminal, 202 while waiting/running and 404 for unknown ids."""
    sim, client = make_sim(tasks=20)
    truth = sim.truth()
    codes = {}
    for tid, entry in truth.items():
        r = client.get(f"/task/{tid}")
        codes[entry["task"]["status"]] = r.status_code
        expected = 200 if entry["task"]["status"] in TERMINAL else 202
        assert r.status_code == expected
        assert r.json()["r"]["status"] == entry["task"]["status"]
    assert 202 in codes.values() and 200 in codes.values()
    r = client.get("/task/tsk_000000000000")
    assert r.status_code == 404
    assert r.json() == {"detail": "Task not found"}
    assert client.get("/nope").status_code == 404


def test_lifecycle_polling_with_advance(make_sim: MakeSim) -> None:
    """advance() moves a task waiting -> running -> terminal; the last events ride with it."""
    sim, client = make_sim(
        tasks=1, events_per_task=8, duration_s=(30.0, 40.0), initial_time=START - 5
    )
    assert client.get("/task").json()["r"] == [] and sim.truth() == {}  # not created yet
    sim.set_time(START)
    (tid,) = sim.truth()
    cursor, seen, statuses, credits = 0, [], [], []
    while True:
        r = client.get(f"/task/{tid}", params={"event_t": cursor})
        task = r.json()["r"]
        statuses.append(task["status"])
        credits.append(task["credits_used"])
        assert r.status_code == (200 if task["status"] in TERMINAL else 202)
        seen.extend(task["events"])
        if task["events"]:
            cursor = task["events"][-1]["timestamp"]
        if task["status"] in TERMINAL:
            assert task["events"], "the final event arrives with the terminal status"
            break
        assert task["output"] is None and task["recording_url"] is None
        assert task["live_url"].startswith(f"https://live.smooth.sh/{tid}?token=")
        sim.advance(1.0)
    assert statuses[0] == "waiting" and "running" in statuses
    assert credits == sorted(credits) and credits[0] == 0
    assert seen == sim.truth()[tid]["events"] and len(seen) == 8
    assert task["live_url"] == "" and task["recording_url"] is None  # artifacts not ready yet
    sim.advance(10.0)
    rec = client.get(f"/task/{tid}").json()["r"]["recording_url"]
    assert rec == "" or FILE_URL.match(rec)


def test_event_t_is_strictly_after(make_sim: MakeSim) -> None:
    """`events` holds exactly the events with timestamp strictly greater than event_t."""
    sim, client = make_sim(tasks=3, events_per_task=30, event_tie_rate=0.3)
    sim.finish_all()
    for tid, entry in sim.truth().items():
        every = entry["events"]
        stamps = [e["timestamp"] for e in every]
        assert len(stamps) != len(set(stamps)), "the tie rate produced ties"
        assert _events(client, tid) == every
        for cut in sorted({s + d for s in stamps for d in (-1, 0, 1)}):
            want = [e for e in every if e["timestamp"] > cut]
            assert _events(client, tid, cut) == want, cut


def test_null_timestamp_events_only_at_event_t_zero(make_sim: MakeSim) -> None:
    """Events with a null timestamp are returned for event_t=0 only (SQL `timestamp > E`)."""
    sim, client = make_sim(
        tasks=4, events_per_task=20, null_event_timestamp_rate=0.3, null_event_id_rate=0.2
    )
    sim.finish_all()
    nulls = 0
    for tid, entry in sim.truth().items():
        every = entry["events"]
        nulls += sum(e["timestamp"] is None for e in every)
        assert _events(client, tid, 0) == every
        non_null = [e for e in every if e["timestamp"] is not None]
        assert _events(client, tid, 1) == non_null
        assert _events(client, tid, non_null[0]["timestamp"] - 1) == non_null
    assert nulls > 0
    ids = [e["id"] for v in sim.truth().values() for e in v["events"]]
    assert None in ids


def test_ignore_event_t_returns_all_visible_events(make_sim: MakeSim) -> None:
    """With ignore_event_t (a server bug) event_t is ignored and every visible event returned."""
    sim, client = make_sim(tasks=3, events_per_task=12, ignore_event_t=True)
    for tid, entry in sim.truth().items():
        every = entry["events"]
        last = max([e["timestamp"] for e in every], default=0)
        assert _events(client, tid, last) == every
        assert _events(client, tid, 10**15) == every


def test_downloads_url_only_with_downloads_true(make_sim: MakeSim) -> None:
    """downloads_url is filled only for downloads=true on terminal tasks (URL or "")."""
    sim, client = make_sim(tasks=30, events_per_task=2)
    truth = sim.truth()
    running = [t for t, e in truth.items() if e["task"]["status"] not in TERMINAL]
    assert running
    for tid in running:
        r = client.get(f"/task/{tid}", params={"downloads": "true"}).json()["r"]
        assert r["downloads_url"] is None
    sim.finish_all()
    kinds = set()
    for tid in sim.truth():
        assert client.get(f"/task/{tid}").json()["r"]["downloads_url"] is None
        off = client.get(f"/task/{tid}", params={"downloads": "false"}).json()["r"]
        assert off["downloads_url"] is None
        url = client.get(f"/task/{tid}", params={"downloads": "true"}).json()["r"]["downloads_url"]
        assert url == "" or FILE_URL.match(url)
        kinds.add("none" if url == "" else "url")
    assert kinds == {"none", "url"}
    assert all(t["downloads_url"] is None for t in _list_all(client))


def test_bad_query_parameters_give_422(make_sim: MakeSim) -> None:
    """A non-integer event_t or a non-boolean downloads is rejected with 422 and a detail."""
    sim, client = make_sim(tasks=2)
    tid = next(iter(sim.truth()))
    for params in ({"event_t": "abc"}, {"event_t": "1.5"}, {"downloads": "maybe"}):
        r = client.get(f"/task/{tid}", params=params)
        assert r.status_code == 422, params
        assert r.json()["detail"]
    assert client.get(f"/task/{tid}", params={"event_t": "-5"}).status_code in (200, 202)


def test_api_key_is_required_when_configured(make_sim: MakeSim) -> None:
    """With api_key set, requests without the right `apikey` header get 401 with a detail."""
    sim, client = make_sim(tasks=2, api_key="sekret")
    for headers in ({}, {"apikey": "wrong"}):
        r = client.get("/task", headers=headers)
        assert r.status_code == 401
        assert "detail" in r.json()
    assert client.get("/task", headers={"apikey": "sekret"}).status_code == 200
    assert sim.stats["status:401"] == 2


def test_same_seed_same_scenario(make_sim: MakeSim) -> None:
    """The same seed yields the same truth and API answers; another seed yields others."""
    a, ca = make_sim(seed=7, tasks=10, events_per_task=5, null_event_timestamp_rate=0.1)
    b, cb = make_sim(seed=7, tasks=10, events_per_task=5, null_event_timestamp_rate=0.1)
    c, _ = make_sim(seed=8, tasks=10, events_per_task=5, null_event_timestamp_rate=0.1)

    def norm(sim: Simulator, obj: Any) -> Any:
        return json.loads(json.dumps(obj).replace(sim.base_url.removesuffix("/api/v1"), "X"))

    assert norm(a, a.truth()) == norm(b, b.truth())
    for sim in (a, b):
        sim.finish_all()
    assert norm(a, a.truth()) == norm(b, b.truth())
    assert norm(a, _list_all(ca)) == norm(b, _list_all(cb))
    assert set(a.truth()).isdisjoint(c.truth())


def test_scenario_event_shape(make_sim: MakeSim) -> None:
    """Events: unique ids, known (or rare unseen) names, object payloads, sorted timestamps."""
    sim, _ = make_sim(tasks=40, events_per_task=25)
    sim.finish_all()
    truth = sim.truth()
    ids: list[str] = []
    names = set()
    for tid, entry in truth.items():
        events = entry["events"]
        assert len(events) == 25
        stamps = [e["timestamp"] for e in events]
        assert stamps == sorted(stamps)
        assert all(isinstance(s, int) and s >= 10**11 for s in stamps)  # ms by default
        assert stamps[0] >= entry["task"]["created_at"] * 1000
        for e in events:
            assert set(e) == {"id", "name", "payload", "timestamp"}
            assert isinstance(e["payload"], dict)
            names.add(e["name"])
            ids.append(e["id"])
        assert re.fullmatch(r"tsk_[0-9a-f]{12}", tid)
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"evt_[0-9a-f]+", i) for i in ids)
    assert {"browser_action", "session_action", "tool_call"} <= names
    assert names <= {"browser_action", "session_action", "tool_call", "agent_note"}
    statuses = {e["task"]["status"] for e in truth.values()}
    assert statuses <= TERMINAL and "done" in statuses
    outputs = {type(e["task"]["output"]).__name__ for e in truth.values()}
    assert len(outputs) >= 3


def test_finish_all_terminates_everything(make_sim: MakeSim) -> None:
    """finish_all() makes every task terminal (200) with all events and final artifacts."""
    sim, client = make_sim(tasks=15, events_per_task=4, late_list_delay_s=1000.0)
    before = sim.now()
    sim.finish_all()
    assert sim.now() > before
    listed = _list_all(client)
    assert len(listed) == 15
    for t in listed:
        assert t["status"] in TERMINAL and t["recording_url"] is not None
        r = client.get(f"/task/{t['id']}")
        assert r.status_code == 200 and len(r.json()["r"]["events"]) == 4
        assert r.json()["r"]["credits_used"] >= 1


def test_recording_rate_extremes(make_sim: MakeSim) -> None:
    """recording_rate=0 gives "" recordings, 1 gives URLs, once artifacts are available."""
    for rate, check in ((0.0, lambda u: u == ""), (1.0, lambda u: bool(FILE_URL.match(u)))):
        sim, _ = make_sim(tasks=8, events_per_task=1, recording_rate=rate)
        sim.finish_all()
        assert all(check(e["task"]["recording_url"]) for e in sim.truth().values())


def test_timestamp_units(make_sim: MakeSim) -> None:
    """event_timestamp_unit and created_at_unit switch between seconds and milliseconds."""
    sim, client = make_sim(
        tasks=3, events_per_task=5, event_timestamp_unit="s", created_at_unit="ms"
    )
    sim.finish_all()
    listed = _list_all(client)
    assert all(t["created_at"] >= 10**11 for t in listed)
    for t in listed:
        stamps = [e["timestamp"] for e in _events(client, t["id"])]
        assert all(10**9 <= s < 10**11 for s in stamps)
        assert min(stamps) >= t["created_at"] // 1000


def test_gone_and_malformed_tasks(make_sim: MakeSim) -> None:
    """gone_task_ids answer 404 yet stay listed; malformed_task_ids answer a malformed 200."""
    ids = list(Simulator(SimulatorConfig(tasks=6)).truth())
    gone, bad = ids[1], ids[2]
    _, client = make_sim(
        tasks=6, gone_task_ids=frozenset({gone}), malformed_task_ids=frozenset({bad})
    )
    r = client.get(f"/task/{gone}")
    assert r.status_code == 404 and r.json() == {"detail": "Task not found"}
    assert gone in {t["id"] for t in _list_all(client)}
    r = client.get(f"/task/{bad}")
    assert r.status_code == 200
    body = r.json()["r"]
    assert body["id"] == bad and body["status"] == 123 and body["events"] == "x"


def test_late_listed_tasks(make_sim: MakeSim) -> None:
    """Every 5th task shows up in List only late_list_delay_s after creation (Get works)."""
    sim, client = make_sim(tasks=10, events_per_task=2, spacing_s=60.0, late_list_delay_s=300)
    ids = list(sim.truth())
    listed = {t["id"] for t in _list_all(client)}
    assert ids[9] not in listed and ids[4] in listed  # task 4's delay has just passed
    assert set(ids) - listed == {ids[9]}
    assert client.get(f"/task/{ids[9]}").status_code in (200, 202)
    sim.advance(300)
    assert {t["id"] for t in _list_all(client)} == set(ids)


def test_request_stats(make_sim: MakeSim) -> None:
    """stats counts list/get/get:<id>/status:<code> for API requests; reset_stats clears it."""
    sim, client = make_sim(tasks=3)
    sim.finish_all()
    tid = next(iter(sim.truth()))
    client.get("/task")
    client.get("/task", params={"l": 0})
    for _ in range(3):
        client.get(f"/task/{tid}")
    client.get("/task/tsk_unknown")
    s = sim.stats
    assert s["list"] == 2 and s["get"] == 4 and s[f"get:{tid}"] == 3
    assert s["status:200"] == 4 and s["status:422"] == 1 and s["status:404"] == 1
    sim.reset_stats()
    assert sum(sim.stats.values()) == 0


def test_control_endpoints(make_sim: MakeSim) -> None:
    """The /_sim/ control endpoints advance the clock, finish all, and expose stats/truth."""
    sim, client = make_sim(tasks=5, events_per_task=3)
    root = sim.base_url.removesuffix("/api/v1")
    t0 = sim.now()
    assert httpx.post(f"{root}/_sim/advance", params={"seconds": 12.5}).json()["now"] == t0 + 12.5
    assert sim.now() == t0 + 12.5
    assert httpx.post(f"{root}/_sim/advance", params={"seconds": "x"}).status_code == 422
    assert httpx.get(f"{root}/_sim/advance").status_code == 405
    client.get("/task")
    assert httpx.get(f"{root}/_sim/stats").json() == {"list": 1, "status:200": 1}
    httpx.post(f"{root}/_sim/finish_all")
    truth = httpx.get(f"{root}/_sim/truth").json()
    assert truth == sim.truth()
    assert all(v["task"]["status"] in TERMINAL for v in truth.values())


def test_presigned_files_are_served(make_sim: MakeSim) -> None:
    """Recording/downloads URLs serve deterministic bytes; a wrong signature gets 403."""
    sim, _ = make_sim(tasks=12, events_per_task=1, recording_rate=1.0)
    sim.finish_all()
    tid = next(iter(sim.truth()))
    rec = sim.truth()[tid]["task"]["recording_url"]
    r1, r2 = httpx.get(rec), httpx.get(rec)
    assert r1.status_code == 200 and r1.content == r2.content and len(r1.content) > 1000
    assert r1.headers["content-type"] == "video/mp4"
    assert httpx.get(rec.replace("Signature=", "Signature=0")).status_code == 403
    urls = [e["task"]["downloads_url"] for e in sim.truth().values()]
    url = next(u for u in urls if u)
    zf = zipfile.ZipFile(io.BytesIO(httpx.get(url).content))
    assert zf.namelist() and zf.testzip() is None
    assert sim.stats["file"] == 4


def test_keep_alive_and_stop(make_sim: MakeSim) -> None:
    """Responses are HTTP/1.1 keep-alive with Content-Length; stop() cuts the connections."""
    sim, client = make_sim(tasks=2)
    r = client.get("/task")
    assert r.http_version == "HTTP/1.1"
    assert r.headers["content-length"] == str(len(r.content))
    assert r.headers.get("connection", "").lower() != "close"
    sim.stop()
    with pytest.raises(httpx.TransportError):
        client.get("/task")


def _spec_schemas() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    lines = SPEC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("````yaml"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("````"))
    doc = yaml.safe_load("\n".join(lines[start + 1 : end]))
    schemas: dict[str, Any] = doc["components"]["schemas"]
    return schemas


def test_conformance_with_openapi_schema(make_sim: MakeSim) -> None:
    """Sample 200/202 Get Task bodies and every List item validate against the OpenAPI spec."""
    jsonschema = pytest.importorskip("jsonschema")
    schemas = _spec_schemas()

    def validator(name: str) -> Any:
        schema = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}}
        return jsonschema.Draft202012Validator(schema)

    envelope, task_schema = validator("ApiResponse_TaskResponse"), validator("TaskResponse")
    sim, client = make_sim(
        tasks=30, events_per_task=6, null_event_id_rate=0.2, null_event_timestamp_rate=0.2
    )
    seen_codes = set()
    for tid in sim.truth():
        for params in ({}, {"downloads": "true"}, {"event_t": 1}):
            r = client.get(f"/task/{tid}", params=params)
            seen_codes.add(r.status_code)
            envelope.validate(r.json())
    assert seen_codes == {200, 202}
    listed = client.get("/task", params={"l": 128}).json()
    assert len(listed["r"]) == 30
    for item in listed["r"]:
        task_schema.validate(item)
    sim.finish_all()
    for tid in sim.truth():
        envelope.validate(client.get(f"/task/{tid}", params={"downloads": "true"}).json())
    # and the deliberately malformed body really is non-conforming
    bad_id = next(iter(sim.truth()))
    _, bad_client = make_sim(tasks=30, malformed_task_ids=frozenset({bad_id}))
    assert not envelope.is_valid(bad_client.get(f"/task/{bad_id}").json())


def test_cli_prints_url_and_serves() -> None:
    """`python -m archiver.simulator` prints its base URL first, serves, and exits on SIGTERM."""
    cmd = [sys.executable, "-m", "archiver.simulator", "--port", "0", "--tasks", "5"]
    cmd += ["--events", "3", "--latency-ms", "1", "--seed", "3", "--finish-all"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=15), "no URL printed in time"
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", url)
        tasks = httpx.get(f"{url}/task", timeout=10).json()["r"]
        assert len(tasks) == 5 and all(t["status"] in TERMINAL for t in tasks)
        r = httpx.get(f"{url}/task/{tasks[0]['id']}", timeout=10)
        assert r.status_code == 200 and len(r.json()["r"]["events"]) == 3
        stats = httpx.get(url.removesuffix("/api/v1") + "/_sim/stats", timeout=10).json()
        assert stats["list"] == 1 and stats["get"] == 1
    finally:
        proc.terminate()
        rc = proc.wait(timeout=10)
    assert rc == 0


@contextlib.contextmanager
def _cli(*args: str, key: str | None = None) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run `python -m archiver.simulator ARGS` with CIRCLEMIND_API_KEY set to ``key`` (or
    unset); yield its base URL and the process; SIGTERM it afterwards."""
    env = {k: v for k, v in os.environ.items() if k != "CIRCLEMIND_API_KEY"}
    if key is not None:
        env["CIRCLEMIND_API_KEY"] = key
    cmd = [sys.executable, "-m", "archiver.simulator", "--port", "0", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=15), "no URL printed in time"
        yield proc.stdout.readline().strip(), proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _cli_fails(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archiver.simulator", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_help_describes_every_option() -> None:
    """`--help` lists every option with a help text, and no option takes an API key."""
    from archiver.simulator.cli import parser

    out = _cli_fails("--help")
    assert out.returncode == 0
    actions = [a for a in parser()._actions if a.option_strings]
    assert len(actions) > 20
    for action in actions:
        assert action.help and len(action.help) > 10, action.option_strings
        assert all(opt in out.stdout for opt in action.option_strings)
    assert "--api-key" not in out.stdout and "CIRCLEMIND_API_KEY" in out.stdout


def test_cli_takes_the_key_from_the_environment_and_never_prints_it() -> None:
    """CIRCLEMIND_API_KEY sets the key (401 without it); `--api-key` is refused in one line."""
    key = "sk-cli-test-7f3a9c"
    with _cli("--tasks", "2", key=key) as (url, proc):
        assert httpx.get(f"{url}/task", timeout=10).status_code == 401
        assert httpx.get(f"{url}/task", headers={"apikey": "nope"}, timeout=10).status_code == 401
        assert httpx.get(f"{url}/task", headers={"apikey": key}, timeout=10).status_code == 200
    out, err = proc.communicate(timeout=10)
    assert key not in out + err and "required" in err
    with _cli("--tasks", "2", key="") as (url, _):  # empty = unset: no key needed
        assert httpx.get(f"{url}/task", timeout=10).status_code == 200
    refused = _cli_fails("--api-key", key)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "CIRCLEMIND_API_KEY" in refused.stderr
    assert key not in refused.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--fault-rate", "1.5"), "'1.5'"),
        (("--fault-kinds", "503,teapot"), "'503,teapot'"),
        (("--tasks", "-3"), "'-3'"),
        (("--port", "70000"), "'70000'"),
        (("--file-errors", "503,42"), "'42'"),
        (("--duration-s", "9", "3"), "--duration-s"),
    ],
)
def test_cli_rejects_bad_values_in_one_line(args: tuple[str, ...], named: str) -> None:
    """A bad option value exits 2 with one line naming the value and what is valid."""
    out = _cli_fails(*args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert named in out.stderr and "see --help" in out.stderr


def test_cli_fault_options_reach_the_server() -> None:
    """--fault-rate/--fault-kinds/--latency-ms/--created-at-group configure the served API."""
    args = ("--tasks", "6", "--fault-rate", "1", "--fault-kinds", "503", "--latency-ms", "1")
    with _cli(*args, "--created-at-group", "3", "--finish-all") as (url, _):
        assert [httpx.get(f"{url}/task", timeout=10).status_code for _ in range(3)] == [503] * 3
        root = url.removesuffix("/api/v1")
        stats = httpx.get(f"{root}/_sim/stats", timeout=10).json()
        assert stats == {"fault": 3, "fault:503": 3}
        knobs = httpx.post(f"{root}/_sim/config", params={"fault_rate": "0"}, timeout=10)
        assert knobs.status_code == 200 and knobs.json()["fault_rate"] == 0.0
        assert httpx.get(f"{url}/task", timeout=10).status_code == 200  # the clock kept
    with _cli("--tasks", "6", "--created-at-group", "3", "--finish-all") as (url, _):
        stamps = [t["created_at"] for t in httpx.get(f"{url}/task", timeout=10).json()["r"]]
        assert len(stamps) == 6 and len(set(stamps)) == 2


# --------------------------------------------------------------------------- issue 9 knobs


def _norm(sim: Simulator, obj: Any) -> Any:
    """``obj`` with the simulator's origin replaced, to compare two simulators' answers."""
    return json.loads(json.dumps(obj).replace(sim.base_url.removesuffix("/api/v1"), "X"))


def _key(event: dict[str, Any]) -> str:
    return json.dumps(event, sort_keys=True)


def _walk(sim: Simulator, client: httpx.Client, step: float) -> Iterator[dict[str, Any]]:
    """Step the clock from the first task's creation until everything settled, yielding
    ``{task_id: (http_code, Get Task body with event_t=0)}`` at every step."""
    sim.finish_all()
    end = sim.now()
    sim.set_time(START)
    while sim.now() <= end:
        snapshot = {}
        for tid in sim.truth():
            r = client.get(f"/task/{tid}")
            snapshot[tid] = (r.status_code, r.json()["r"])
        yield snapshot
        sim.advance(step)


def test_knobs_are_deterministic_per_seed_and_change_nothing_else(make_sim: MakeSim) -> None:
    """With every scenario knob on, the same seed gives the same truth; tasks keep their ids."""
    knobs = dict(
        tasks=12,
        events_per_task=12,
        seed=21,
        null_event_id_rate=0.4,
        duplicate_event_rate=0.5,
        late_payload_rate=0.3,
        unknown_status_rate=0.5,
        unknown_final_status_rate=0.3,
        credits_settle_s=20.0,
    )
    a, _ = make_sim(**knobs)
    b, _ = make_sim(**knobs)
    plain, _ = make_sim(tasks=12, events_per_task=12, seed=21, null_event_id_rate=0.4)
    for sim in (a, b, plain):
        sim.finish_all()
    assert _norm(a, a.truth()) == _norm(b, b.truth())
    assert list(a.truth()) == list(plain.truth())
    for tid, entry in plain.truth().items():
        other = a.truth()[tid]["task"]
        assert other["created_at"] == entry["task"]["created_at"]
        assert other["device"] == entry["task"]["device"]


def test_duplicate_events_are_identical_and_both_are_in_truth(make_sim: MakeSim) -> None:
    """duplicate_event_rate sends some id-less events twice, identical, and truth has both."""
    base = dict(tasks=8, events_per_task=20, seed=11, null_event_id_rate=0.5)
    plain, _ = make_sim(**base)
    sim, client = make_sim(**base, duplicate_event_rate=0.5)
    plain.finish_all()
    sim.finish_all()
    copies = 0
    for tid, entry in sim.truth().items():
        events, original = entry["events"], plain.truth()[tid]["events"]
        assert _events(client, tid) == events  # served as in truth, both copies
        sent = collections.Counter(map(_key, events))
        extra = sent - collections.Counter(map(_key, original))
        assert sum(sent.values()) == len(original) + sum(extra.values())  # nothing lost
        for key, n in extra.items():
            assert json.loads(key)["id"] is None
            assert sent[key] == 2 * n  # each copy is an exact repeat of an original
        for k, e in enumerate(events):  # a copy directly follows its original
            if k and _key(e) in extra and _key(events[k - 1]) != _key(e):
                assert _key(events[k + 1]) == _key(e)
        copies += sum(extra.values())
    assert copies > 0


def test_duplicate_copy_can_straddle_a_poll(make_sim: MakeSim) -> None:
    """A duplicate copy may appear after its original, with the same timestamp."""
    sim, client = make_sim(
        tasks=6, events_per_task=15, seed=12, null_event_id_rate=0.6, duplicate_event_rate=0.6
    )
    sim.finish_all()
    settled = sim.truth()
    straddled = 0
    for snapshot in _walk(sim, client, 1.0):
        for tid, (_, body) in snapshot.items():
            keys = [_key(e) for e in body["events"]]
            final = [_key(e) for e in settled[tid]["events"]]
            assert keys == final[: len(keys)]  # what is served is a prefix of the end result
            if keys and final[len(keys) - 1 : len(keys) + 1] == [keys[-1], keys[-1]]:
                straddled += 1  # the original is out, its copy is not yet
    assert straddled > 0


@pytest.mark.parametrize("form", ["partial", "null"])
def test_late_payload_is_filled_in_later_with_the_same_identity(
    make_sim: MakeSim, form: str
) -> None:
    """late_payload_rate serves some payloads incomplete first, then in full; truth: final."""
    base = dict(tasks=4, events_per_task=10, seed=13, duration_s=(30.0, 60.0), spacing_s=20.0)
    plain, _ = make_sim(**base)
    sim, client = make_sim(
        **base, late_payload_rate=0.4, late_payload_delay_s=6.0, late_payload_form=form
    )
    seen: dict[str, list[Any]] = collections.defaultdict(list)
    for snapshot in _walk(sim, client, 2.0):
        for _, body in snapshot.values():
            for e in body["events"]:
                assert e["id"] is not None
                if not seen[e["id"]] or seen[e["id"]][-1] != e:
                    seen[e["id"]].append(e)
    plain.finish_all()
    final = {e["id"]: e for v in plain.truth().values() for e in v["events"]}
    assert _norm(sim, sim.truth()) == _norm(plain, plain.truth())  # settled: final payloads
    updated = [versions for versions in seen.values() if len(versions) > 1]
    assert updated and len(updated) < len(seen)
    for versions in updated:
        first, last = versions[0], versions[-1]
        assert len(versions) == 2 and last == final[last["id"]]
        assert {k: first[k] for k in ("id", "name", "timestamp")} == {
            k: last[k] for k in ("id", "name", "timestamp")
        }
        if form == "null":
            assert first["payload"] is None
        else:
            assert first["payload"] == dict(list(last["payload"].items())[:1])


def test_unknown_status_while_running_then_normal_end(make_sim: MakeSim) -> None:
    """unknown_status shows mid-run with 202 on some tasks, which then end as usual."""
    base = dict(tasks=6, events_per_task=3, seed=14, duration_s=(30.0, 60.0), spacing_s=20.0)
    plain, _ = make_sim(**base)
    sim, client = make_sim(**base, unknown_status_rate=0.5, unknown_status="paused")
    history: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for snapshot in _walk(sim, client, 1.0):
        for tid, (code, body) in snapshot.items():
            if not history[tid] or history[tid][-1] != (code, body["status"]):
                history[tid].append((code, body["status"]))
    plain.finish_all()
    paused = {tid for tid, h in history.items() if (202, "paused") in h}
    assert paused and paused != set(history)
    for tid, h in history.items():
        final = plain.truth()[tid]["task"]["status"]
        assert h[-1] == (200, final) and sim.truth()[tid]["task"]["status"] == final
        before_end = [s for _, s in h[:-1]]
        if tid in paused:
            assert before_end == ["waiting", "running", "paused", "running"], h
        else:
            assert before_end == ["waiting", "running"], h


def test_unknown_final_status_stays(make_sim: MakeSim) -> None:
    """unknown_final_status_rate ends some tasks with a status the spec lacks, for good."""
    base = dict(tasks=12, events_per_task=3, seed=15)
    plain, _ = make_sim(**base)
    sim, client = make_sim(**base, unknown_final_status_rate=0.4, unknown_final_status="expired")
    for s in (plain, sim):
        s.finish_all()
    sim.advance(10_000)
    expired = [tid for tid, e in sim.truth().items() if e["task"]["status"] == "expired"]
    assert expired and len(expired) < 12
    for tid, entry in sim.truth().items():
        r = client.get(f"/task/{tid}")
        assert r.status_code == 200 and r.json()["r"]["status"] == entry["task"]["status"]
        if tid in expired:
            assert entry["task"]["output"] is None
        else:
            assert entry["task"]["status"] == plain.truth()[tid]["task"]["status"]
    listed = {t["id"]: t["status"] for t in _list_all(client)}
    assert {tid for tid, s in listed.items() if s == "expired"} == set(expired)


def test_credits_settle_after_the_end(make_sim: MakeSim) -> None:
    """credits_settle_s: credits_used still grows by 1-5 after the end, then settles."""
    base = dict(tasks=4, events_per_task=2, seed=16, duration_s=(20.0, 30.0), spacing_s=10.0)
    plain, _ = make_sim(**base)
    sim, client = make_sim(**base, credits_settle_s=12.0)
    after_end: dict[str, list[int]] = collections.defaultdict(list)
    for snapshot in _walk(sim, client, 1.0):
        for tid, (code, body) in snapshot.items():
            if code == 200:
                after_end[tid].append(body["credits_used"])
    plain.finish_all()
    for tid, credits in after_end.items():
        settled = sim.truth()[tid]["task"]["credits_used"]
        assert credits[0] == plain.truth()[tid]["task"]["credits_used"]  # first terminal read
        assert credits == sorted(credits) and credits[-1] == settled
        assert 1 <= settled - credits[0] <= 5
        assert credits.index(settled) <= 12  # settled within credits_settle_s
    assert len(after_end) == 4


def _fetch(url: str) -> str:
    try:
        r = httpx.get(url, timeout=10)
    except httpx.TransportError:
        return "hang-up"
    if r.status_code == 429:
        return f"429 Retry-After={r.headers['retry-after']}"
    return str(r.status_code)


def test_file_faults_are_seeded_and_counted(make_sim: MakeSim) -> None:
    """file_fault_rate answers 503/429/drop/truncate, the same per seed, counted in stats."""
    knobs = dict(tasks=10, events_per_task=1, seed=17, recording_rate=1.0)
    knobs |= dict(file_fault_rate=0.6, file_fault_seed=3, retry_after="2")
    outcomes = []
    for _ in range(2):
        sim, _ = make_sim(**knobs)
        sim.finish_all()
        urls = [e["task"]["recording_url"] for e in sim.truth().values()] * 4
        got = [_fetch(u) for u in urls]
        outcomes.append(got)
        s = sim.stats
        kinds = {k: s[f"file_fault:{k}"] for k in ("503", "429", "drop", "truncate")}
        assert all(kinds.values()) and s["file_fault"] == sum(kinds.values())
        assert got.count("503") == kinds["503"] and got.count("429 Retry-After=2") == kinds["429"]
        assert got.count("hang-up") == kinds["drop"] + kinds["truncate"]
        assert got.count("200") == len(urls) - s["file_fault"]
    assert outcomes[0] == outcomes[1]
    clean, _ = make_sim(**(knobs | dict(file_fault_rate=0.0)))
    clean.finish_all()
    assert {_fetch(e["task"]["recording_url"]) for e in clean.truth().values()} == {"200"}


def test_malformed_list_items_heal_after_n_listings(make_sim: MakeSim) -> None:
    """malformed_list_item_rate: List serves some items malformed N times, Get always well."""
    sim, client = make_sim(
        tasks=20, seed=18, malformed_list_item_rate=0.3, malformed_list_listings=2
    )
    truth = sim.truth()
    rounds = [client.get("/task", params={"l": 128}).json()["r"] for _ in range(3)]
    bad = [{t["id"] for t in page if t["status"] == 123} for page in rounds]
    assert bad[0] and len(bad[0]) < 20 and bad[1] == bad[0] and bad[2] == set()
    for page in rounds:
        assert [(t["id"], t["created_at"]) for t in page] == [
            (tid, truth[tid]["task"]["created_at"]) for tid in reversed(list(truth))
        ]
    for tid in bad[0]:
        r = client.get(f"/task/{tid}")
        assert r.json()["r"]["status"] == truth[tid]["task"]["status"]
    assert sim.stats["list_malformed"] == 2 * len(bad[0])
    chosen = rounds[2][0]["id"]
    sim.config = replace(sim.config, malformed_list_item_ids=frozenset({chosen}))
    items = {t["id"]: t for t in client.get("/task", params={"l": 128}).json()["r"]}
    assert items[chosen]["status"] == 123 and items[chosen]["credits_used"] == "lots"


def test_captive_portal_answers_html_with_200(make_sim: MakeSim) -> None:
    """captive_portal answers every API request 200 text/html; files and control still work."""
    sim, client = make_sim(tasks=3, recording_rate=1.0, api_key="k", captive_portal=True)
    sim.finish_all()
    tid = next(iter(sim.truth()))
    for path in ("/task", f"/task/{tid}", "/task/tsk_unknown", "/nope"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.text.lstrip().startswith("<!DOCTYPE html>")
    assert sim.stats["captive_portal"] == 4 and sim.stats["list"] == 0
    assert httpx.get(sim.truth()[tid]["task"]["recording_url"]).status_code == 200
    sim.config = replace(sim.config, captive_portal=False)
    assert client.get("/task", headers={"apikey": "k"}).json()["r"]


def test_wait_for_requests_counts_every_api_request(make_sim: MakeSim) -> None:
    """wait_for_requests(k) returns True once k API requests arrived, False on timeout."""
    sim, client = make_sim(tasks=3, api_key="k", fault_rate=0.5, fault_kinds=("503",))
    assert not sim.wait_for_requests(1, timeout=0.05)
    worker = threading.Thread(target=lambda: [client.get("/task") for _ in range(6)])
    worker.start()
    assert sim.wait_for_requests(6, timeout=30)
    worker.join()
    root = sim.base_url.removesuffix("/api/v1")
    httpx.get(f"{root}/_sim/now")  # neither control ...
    httpx.get(f"{root}/files/x/recording.mp4")  # ... nor file requests count
    assert sim.api_requests == 6 == sim.stats["status:401"] + sim.stats["fault"]
    assert not sim.wait_for_requests(7, timeout=0.05)
    sim.reset_stats()
    assert sim.api_requests == 0


def test_wait_for_requests_lands_a_kill_mid_sync(make_simulator, tmp_path: Path) -> None:
    """A real `archiver sync` SIGKILLed right after its k-th request was still working."""
    sim = make_simulator(tasks=30, events_per_task=3, seed=19, latency_ms=20.0)
    sim.finish_all()
    env = {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
    }
    proc = start_archiver("sync", "--concurrency", "2", "-q", env=env)
    try:
        assert sim.wait_for_requests(8, timeout=60)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # it had not finished: 31 requests at least
    assert 8 <= sim.api_requests < 31


def test_more_than_128_tasks_sharing_one_created_at(make_sim: MakeSim) -> None:
    """created_at_group=200: a page holds 128 of the group; the rest are only in Get Task."""
    sim, client = make_sim(tasks=260, events_per_task=1, created_at_group=200, spacing_s=1.0)
    truth = sim.truth()
    group_ts = START
    group = [tid for tid, e in truth.items() if e["task"]["created_at"] == group_ts]
    assert len(group) == 200
    page = client.get("/task", params={"l": 128, "t": group_ts + 1}).json()["r"]
    assert len(page) == 128 and {t["created_at"] for t in page} == {group_ts}
    assert [t["id"] for t in page] == sorted(group, reverse=True)[:128]
    assert client.get("/task", params={"l": 128, "t": group_ts}).json()["r"] == []
    listed = {t["id"] for t in _list_all(client)}  # naive: 60 newer + 68 of the group
    assert len(listed) == 128 and set(truth) - listed <= set(group)
    unlistable = set(group) - {t["id"] for t in page}  # even re-reading the boundary
    assert len(unlistable) == 72 and len(truth) == 260
    for tid in unlistable:
        assert client.get(f"/task/{tid}").status_code in (200, 202)


def test_config_endpoint_changes_request_time_knobs(make_sim: MakeSim) -> None:
    """POST /_sim/config changes request-time knobs; others and bad values get 422."""
    sim, client = make_sim(tasks=3)
    root = sim.base_url.removesuffix("/api/v1")
    shown = httpx.get(f"{root}/_sim/config").json()
    assert shown["captive_portal"] is False and "api_key" not in shown
    r = httpx.post(f"{root}/_sim/config", params={"captive_portal": "true", "retry_after": "7"})
    assert r.status_code == 200 and r.json()["captive_portal"] is True
    assert sim.config.retry_after == "7"
    assert client.get("/task").headers["content-type"].startswith("text/html")
    for bad in ({"tasks": "5"}, {"api_key": "x"}, {"fault_rate": "2"}, {"captive_portal": "?"}):
        r = httpx.post(f"{root}/_sim/config", params=bad)
        assert r.status_code == 422 and next(iter(bad)) in r.json()["detail"], bad
    assert sim.config.captive_portal and sim.config.tasks == 3
