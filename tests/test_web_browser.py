"""`archiver serve` in a real browser: the system Chromium (/usr/bin/chromium, a Debian
package) driven by Playwright. Playwright's own browser download is never used.

Pages load without console errors or CSP violations, the task list's count and pages
match the database, filters work through the form, the committed WebM recording loads
its metadata and seeks over HTTP Range (206), hostile outputs stay inert, and the token
of a server bound beyond loopback is enforced (real `archiver serve`, reached on
127.0.0.1 only). Screenshots of the four pages are taken on SQLite; with
WRITE_DOCS_SCREENSHOTS=1 they replace docs/img/*.png.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from archiver.store.database import Database
from archiver.store.schema import artifacts, tasks
from archiver.web import build_app, open_archive, start
from tests.conftest import TEST_API_KEY, run_archiver
from tests.test_web import TOKEN, start_serve, stop
from tests.webseed import (
    DOWNLOADS_TASK,
    HOSTILE,
    RECORDING_TASK,
    newest_first,
    seed_web_archive,
    serving,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--mute-audio",
]
#: Seek the page's recording and resolve with its position once the frame is there.
SEEK_AND_WAIT = """(to) => new Promise((resolve) => {
    const v = document.getElementById('recording');
    v.addEventListener('seeked', () => resolve(v.currentTime), {once: true});
    v.currentTime = to;
})"""
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless system Chromium for the module."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def archive(database: Database, make_simulator: Any, tmp_path: Path) -> Database:
    """The web seed. Playwright's sync API marks its asyncio loop as running in this
    thread; the seed's sync pass (asyncio.run, signal handlers: main thread only) runs
    with that mark lifted for the while."""
    playwright_loop = asyncio.events._get_running_loop()
    asyncio.events._set_running_loop(None)
    try:
        seed_web_archive(database, make_simulator, str(tmp_path / "blobs"))
    finally:
        asyncio.events._set_running_loop(playwright_loop)
    return database


class Watched:
    """A page whose console errors, uncaught errors, dialogs and blob responses are kept."""

    def __init__(self, context: Any) -> None:
        self.page = context.new_page()
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.blob_statuses: list[int] = []
        self.page.on(
            "console",
            lambda msg: (
                self.problems.append(f"console {msg.type}: {msg.text}")
                if msg.type in ("error", "warning")
                else None
            ),
        )
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        self.page.on("dialog", self._dialog)
        self.page.on("response", self._response)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _response(self, response: Any) -> None:
        if "/blob/" in response.url:
            self.blob_statuses.append(response.status)

    def goto(self, url: str) -> Any:
        response = self.page.goto(url, wait_until="load")
        assert response is not None
        return response


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 860})
    yield ctx
    ctx.close()


def shot(page: Any, name: str, tmp_path: Path, database: Database, **options: Any) -> None:
    """A PNG of the page (into docs/img with WRITE_DOCS_SCREENSHOTS=1, SQLite only)."""
    target = tmp_path / f"{name}.png"
    page.screenshot(path=str(target), **options)
    assert target.stat().st_size > 5_000 and target.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("WRITE_DOCS_SCREENSHOTS") == "1" and database.dialect == "sqlite":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, DOCS_IMG / f"{name}.png")


def test_pages_load_without_console_errors(archive: Database, context: Any, tmp_path: Path) -> None:
    """Tasks, Task, Costs and Health render with no console error, CSP violation or
    uncaught error (no CDN, no inline script or style); screenshots of each."""
    watched = Watched(context)
    page = watched.page
    with serving(archive.url) as server:
        for path, name, title in (
            ("tasks", "tasks", "Tasks"),
            (f"task?id={RECORDING_TASK}", "task", RECORDING_TASK),
            ("costs?by=day&group=status", "costs", "Costs"),
            ("health", "health", "Health"),
        ):
            response = watched.goto(server.url + path)
            assert response.status == 200, path
            assert title in page.locator("h1").inner_text(), path
            if name == "task":
                page.wait_for_function(
                    "document.getElementById('recording').readyState >= 1", timeout=10_000
                )
                page.locator("#timeline summary").first.click()
                page.evaluate(SEEK_AND_WAIT, 1.5)  # a settled frame for the screenshot
            shot(page, name, tmp_path, archive, full_page=True)
        watched.goto(server.url + f"task?id={DOWNLOADS_TASK}")
        assert page.locator("table.files tbody tr").count() == 2
    assert watched.problems == []


def test_count_pagination_and_filters(archive: Database, context: Any) -> None:
    """The count matches the database; Next walks every task once in order; the filter
    form narrows the list to exactly the matching tasks."""
    with archive.reading() as conn:
        total = conn.scalar(select(func.count()).select_from(tasks))
        failed = set(conn.scalars(select(tasks.c.id).where(tasks.c.status == "failed")))
    watched = Watched(context)
    page = watched.page
    with serving(archive.url, page_size=10) as server:
        watched.goto(server.url + "tasks")
        assert page.locator("#task-count").get_attribute("data-count") == str(total)
        seen: list[str] = []
        while True:
            seen += page.locator("td.id a").all_inner_texts()
            following = page.locator("#next-page")
            if following.count() == 0:
                break
            following.click()
            page.wait_for_load_state("load")
        assert seen == newest_first(archive)

        watched.goto(server.url + "tasks")
        page.select_option("select[name=status]", "failed")
        page.click("button[type=submit]")
        page.wait_for_load_state("load")
        assert page.locator("#task-count").get_attribute("data-count") == str(len(failed))
        assert set(page.locator("td.id a").all_inner_texts()) == failed
        assert set(page.locator("td .status").all_inner_texts()) == {"failed"}

        page.fill("input[name=q]", "captcha")
        page.click("button[type=submit]")
        page.wait_for_load_state("load")
        assert page.locator("td.id a").all_inner_texts() == ["tsk_manual_object"]
    assert watched.problems == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_recording_loads_metadata_and_seeks(archive: Database, context: Any) -> None:
    """The <video> reads the recording's metadata and seeks over Range requests (206)."""
    watched = Watched(context)
    page = watched.page
    with serving(archive.url) as server:
        watched.goto(server.url + f"task?id={RECORDING_TASK}")
        page.wait_for_function("document.getElementById('recording').readyState >= 1")
        duration = page.evaluate("document.getElementById('recording').duration")
        assert 3.5 < duration < 4.5
        seeked = page.evaluate(SEEK_AND_WAIT, 2.5)
        assert abs(seeked - 2.5) < 0.5
        # The timeline's first event (+5 s) is past the 4 s recording: the script clamps
        # to the end, through the page's one script file.
        page.locator("button.seek").first.click()
        page.wait_for_function("document.getElementById('recording').currentTime > 3.5")
    assert 206 in watched.blob_statuses
    assert watched.problems == []


def test_hostile_outputs_stay_inert(archive: Database, context: Any) -> None:
    """Outputs and payloads carrying <img onerror> / </script><script> show as literal text
    and never run: no dialog opens on the task pages or the list."""
    watched = Watched(context)
    page = watched.page
    with serving(archive.url) as server:
        for task_id, output in HOSTILE.items():
            watched.goto(server.url + f"task?id={task_id}")
            assert page.locator("#output").inner_text() == output
            page.locator("#timeline summary").first.click()
            payload = page.locator("#timeline .payload").first.inner_text()
            assert "<svg onload=alert(2)>" in payload and "</script><script>alert(3)" in payload
            assert "<i>browser_action</i>" in page.locator("#timeline .name").first.inner_text()
            assert page.locator("img, svg[onload]").count() == 0
        watched.goto(server.url + "tasks?q=alert")
        assert set(page.locator("td.id a").all_inner_texts()) == set(HOSTILE)
        page.wait_for_timeout(300)  # time for an injected handler to have fired
    assert watched.dialogs == []
    assert watched.problems == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_token_enforced_in_the_browser(archive: Database, browser: Any) -> None:
    """Bound to 0.0.0.0, the real `archiver serve` answers 401 without the token or with a
    wrong one; with it (HTTP Basic), the pages and the recording's Range requests work."""
    proc, base = start_serve(archive.url, "--host", "0.0.0.0", env={"ARCHIVER_SERVE_TOKEN": TOKEN})
    try:
        for credentials in (None, {"username": "me", "password": TOKEN + "-wrong"}):
            stranger = browser.new_context(http_credentials=credentials)
            for route in ("tasks", f"blob/recording?task={RECORDING_TASK}", "healthz"):
                assert stranger.request.get(base + route).status == 401, route
            page = stranger.new_page()
            try:  # Chromium either shows the 401 or gives up on the credentials
                status = page.goto(base + "tasks").status  # type: ignore[union-attr]
            except Exception as exc:
                assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
            else:
                assert status == 401 and "Tasks" not in page.title()
            stranger.close()
        trusted = browser.new_context(http_credentials={"username": "me", "password": TOKEN})
        watched = Watched(trusted)
        assert watched.goto(base + f"task?id={RECORDING_TASK}").status == 200
        watched.page.wait_for_function("document.getElementById('recording').readyState >= 1")
        assert 206 in watched.blob_statuses
        trusted.close()
    finally:
        stop(proc)


# --- issue 24: the demo's archive in the browser, on a phone and a laptop ----------------

SCREENS = {"phone": {"width": 390, "height": 844}, "laptop": {"width": 1280, "height": 800}}
#: The archive `archiver demo` built (module-wide: one demo run for these tests).
DemoArchive = tuple[str, list[str]]


@pytest.fixture(scope="module")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> DemoArchive:
    """`archiver demo` run as a user runs it: (its database URL, its tasks with a stored
    recording)."""
    folder = tmp_path_factory.mktemp("demo") / "archive"
    done = run_archiver("demo", "--dir", str(folder))
    assert done.returncode == 0, done.stderr
    url = f"sqlite:///{folder / 'demo.db'}"
    db = Database(url, read_only=True)
    with db.reading() as conn:
        recorded = sorted(
            conn.scalars(
                select(artifacts.c.task_id).where(
                    artifacts.c.kind == "recording", artifacts.c.state == "stored"
                )
            )
        )
    db.dispose()
    return url, recorded


def test_demo_recordings_play(demo_archive: DemoArchive, browser: Any) -> None:
    """A task page of the demo's archive plays its recording: readyState >= 2, duration > 0."""
    url, recorded = demo_archive
    assert recorded, "the demo stored no recording"
    context = browser.new_context(viewport=SCREENS["laptop"])
    watched = Watched(context)
    with serving(url) as server:
        watched.goto(server.url + f"task?id={recorded[0]}")
        watched.page.wait_for_function(
            "document.getElementById('recording').readyState >= 2", timeout=10_000
        )
        duration = watched.page.evaluate("document.getElementById('recording').duration")
        assert watched.page.locator("#recording-fallback").is_hidden()
    context.close()
    assert 0 < duration < 60
    assert watched.problems == []


#: Text ranges of these elements that take more than one line on the page (JS).
WRAPPED = """(selector) => [...document.querySelectorAll(selector)].filter((el) => {
    const range = document.createRange();
    range.selectNodeContents(el);
    const tops = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
    return tops.size > 1;
}).map((el) => el.textContent)"""


@pytest.mark.parametrize("screen", list(SCREENS))
def test_every_page_keeps_to_the_screen_width(
    demo_archive: DemoArchive, browser: Any, screen: str
) -> None:
    """At 390x844 and 1280x800 no page scrolls sideways (wide tables scroll in their own
    box), task ids and times stay on one line, and the timeline's names line up."""
    url, recorded = demo_archive
    context = browser.new_context(viewport=SCREENS[screen])
    watched = Watched(context)
    page = watched.page
    with serving(url) as server:
        for path in ("tasks", f"task?id={recorded[0]}", "costs?group=status", "health"):
            watched.goto(server.url + path)
            width, inner = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
            assert width <= inner, f"{path} is {width} px wide at {inner} px"
            assert page.evaluate(WRAPPED, "td.id a, td.when") == [], path
        watched.goto(server.url + f"task?id={recorded[0]}")
        names = page.locator("#timeline .name")
        lefts = {round(names.nth(i).bounding_box()["x"]) for i in range(names.count())}
        assert names.count() > 2 and len(lefts) == 1, lefts
    context.close()
    assert watched.problems == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_recording_the_browser_cannot_play_shows_a_download_link(
    database: Database, make_simulator: Any, browser: Any, tmp_path: Path
) -> None:
    """A stored recording Chromium cannot play (the simulator's video-like bytes) is
    replaced by a visible note whose link downloads it, instead of a black player."""
    sim = make_simulator(tasks=4, events_per_task=2, seed=24, recording_rate=1.0)
    sim.finish_all()
    env = {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database.url,
    }
    done = run_archiver("sync", "--downloads", "--blob-url", str(tmp_path / "blobs"), env=env)
    assert done.returncode == 0, done.stderr
    task_id = sorted(sim.truth())[0]
    context = browser.new_context(viewport=SCREENS["laptop"])
    watched = Watched(context)
    with serving(database.url) as server:
        watched.goto(server.url + f"task?id={task_id}")
        fallback = watched.page.locator("#recording-fallback")
        fallback.wait_for(state="visible", timeout=10_000)
        assert watched.page.locator("#recording").is_hidden()
        with watched.page.expect_download() as download:
            fallback.locator("a").click()
        saved = download.value.path()
        assert Path(saved).read_bytes() == sim.file_bytes(task_id, "recording.mp4")
    context.close()


class _EvilSite(BaseHTTPRequestHandler):
    """Another website: its page makes the browser ask the view for a page, a blob and a
    JSON download, frames the view, and links to it."""

    view = ""

    def do_GET(self) -> None:
        view = self.view
        body = f"""<!doctype html><title>evil</title>
<img src="{view}tasks?from=img">
<video src="{view}blob/recording?task={RECORDING_TASK}"></video>
<iframe src="{view}tasks?from=iframe"></iframe>
<script>fetch("{view}json/output?task={RECORDING_TASK}", {{mode: "no-cors"}});</script>
<a id="link" href="{view}tasks?from=link">the archive</a>""".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Statuses:
    """The view's application, noting the status it answered for each path it served."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: dict[str, int] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def noting(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.seen[scope["path"]] = message["status"]
            await send(message)

        await self.app(scope, receive, noting)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_another_website_cannot_use_the_view_through_the_browser(
    archive: Database, context: Any
) -> None:
    """A page on another site (localhost, against the view's 127.0.0.1) that loads the
    view's page, blob and JSON, frames it or links to it is refused (403) by the view
    itself, before any work; the view opened directly works in the same browser."""
    evil = ThreadingHTTPServer(("127.0.0.1", 0), _EvilSite)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    database = open_archive(archive.url)
    view = Statuses(build_app(database))
    running = start(view)
    page = context.new_page()
    try:
        _EvilSite.view = running.url
        page.goto(f"http://localhost:{evil.server_address[1]}/", wait_until="load")
        page.wait_for_timeout(500)  # the fetch and the video
        framed = dict(view.seen)
        page.click("#link")
        page.wait_for_load_state("load")
        linked = view.seen["/tasks"]
        direct = page.goto(running.url + "tasks")
        assert direct is not None and direct.status == 200
        assert "Tasks" in page.locator("h1").inner_text()
    finally:
        running.stop()
        database.dispose()
        evil.shutdown()
    expected = {"/tasks": 403, "/blob/recording": 403, "/json/output": 403}
    assert framed == expected
    assert linked == 403
