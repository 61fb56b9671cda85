"""Logging (text and JSON lines, -q, -v, redaction) and the progress bar's TTY rule."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archiver import logs
from archiver.logs import setup_logging
from archiver.progress import BarProgress, LineProgress, NullProgress, make_progress
from archiver.redact import REDACTED
from tests.conftest import ARCHIVER_BIN, TEST_API_KEY, run_archiver

SECRET = "sk-live-0123456789abcdef"
SIGNED = "https://files.example/tsk_1/recording.mp4?X-Amz-Signature=deadbeef&X-Amz-Expires=3600"
JSON_KEYS = {"time", "level", "event", "logger", "run_id", "task_id"}
SUMMARY_COUNTS = {
    "tasks_discovered",
    "tasks_polled",
    "tasks_finalized",
    "events_inserted",
    "artifacts_stored",
    "errors",
    "requests",
}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging replaces the root handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level, hook = list(root.handlers), root.level, sys.excepthook
    yield
    sys.excepthook = hook
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logs._format = None
    logs.set_run_id(None)


def env_for(sim: Any, database_url: str) -> dict[str, str]:
    return {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": database_url,
    }


def emit_secrets(log: logging.Logger) -> None:
    """Log the secret and a presigned link every way a record can carry them."""
    log.warning("key %s and link %s", SECRET, SIGNED)
    log.info("plain %s", f"{SECRET}-in-a-word", extra={"task_id": f"tsk_{SECRET}"})
    try:
        raise ValueError(f"boom {SECRET} at {SIGNED}")
    except ValueError:
        log.exception("fetching %s failed", SIGNED)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_and_signed_links_never_reach_a_log_line(
    log_format: str, capsys: pytest.CaptureFixture[str], restore_logging: None, monkeypatch
) -> None:
    """The API key (given or from the environment) and URL query strings are masked in
    messages, arguments, extra fields and tracebacks, in both formats."""
    monkeypatch.setenv("CIRCLEMIND_API_KEY", SECRET)
    setup_logging(log_format=log_format)  # no explicit secrets: the environment's key
    emit_secrets(logging.getLogger("archiver.test"))
    err = capsys.readouterr().err
    assert SECRET not in err
    assert "deadbeef" not in err and "X-Amz-Signature" not in err
    assert REDACTED in err and "ValueError" in err
    if log_format == "json":
        lines = [json.loads(line) for line in err.splitlines()]
        assert len(lines) == 3
        assert lines[2]["exception"].startswith("Traceback")


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_archived_text_cannot_forge_a_log_line(
    log_format: str, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """A task id or error text with a newline, ANSI escapes or a bidi override is logged
    on one line with those written as escapes, in both formats."""
    setup_logging(log_format=log_format)
    hostile = "tsk_1\n2026-01-01T00:00:00 INFO archiver: all good\x1b[2J\u202e"
    logging.getLogger("archiver.engine").error("task %s failed: %s", hostile, "boom\r")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert not any(char in err for char in ("\x1b", "\r", "\u202e"))
    shown = err if log_format == "text" else json.loads(err)["event"]
    assert "tsk_1\\x0a2026-01-01T00:00:00 INFO archiver: all good\\x1b[2J\\u202e" in shown


def test_json_lines_carry_the_documented_fields(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """Each JSON line has time (UTC, Z), level, event, logger, run_id and task_id."""
    setup_logging(log_format="json")
    logs.set_run_id("run-1")
    logging.getLogger("archiver.engine").error(
        "task %s failed: %s", "tsk_1", "HTTP 500", extra={"task_id": "tsk_1"}
    )
    logs.set_run_id(None)
    logging.getLogger("archiver.engine").info("between runs")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert set(first) == JSON_KEYS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["level"] == "error" and first["event"] == "task tsk_1 failed: HTTP 500"
    assert (first["run_id"], first["task_id"], first["logger"]) == (
        "run-1",
        "tsk_1",
        "archiver.engine",
    )
    assert second["run_id"] is None and second["task_id"] is None


def test_a_crash_is_a_json_line_too(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """In JSON mode an uncaught exception is logged as one critical line with its traceback."""
    setup_logging(log_format="json")
    try:
        raise RuntimeError(f"bug near {SIGNED}")
    except RuntimeError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    (line,) = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert entry["level"] == "critical" and entry["event"].startswith("crashed: RuntimeError")
    assert "Traceback" in entry["exception"] and "deadbeef" not in line


def test_sync_json_log_lines_parse_and_end_with_the_summary(tmp_path: Path, make_simulator) -> None:
    """`sync -v --log-format json`: every line is JSON; per-request lines, a task error
    with its task_id, and one summary line with counts, all tagged with the run id."""
    probe = make_simulator(tasks=5, seed=61)
    bad = sorted(probe.truth())[1]
    sim = make_simulator(tasks=5, seed=61, malformed_task_ids=frozenset({bad}))
    sim.finish_all()
    env = env_for(sim, f"sqlite:///{tmp_path}/a.db")
    done = run_archiver("sync", "-v", "--log-format", "json", env=env)
    assert done.returncode == 1, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert all(set(line) >= JSON_KEYS for line in lines)
    requests = [line for line in lines if line["logger"] == "httpx"]
    assert len(requests) >= 6  # -v: one line per HTTP request
    assert all("event_t=" not in line["event"] for line in requests)  # query strings masked
    errors = [line for line in lines if line["level"] == "error"]
    assert [line["task_id"] for line in errors] == [bad]
    summary = lines[-1]
    assert summary["summary"] is True and summary["outcome"] == "partial"
    assert summary["level"] == "warning" and summary["command"] == "sync"
    assert set(summary["counts"]) >= SUMMARY_COUNTS
    assert summary["counts"]["tasks_polled"] == 4 and summary["counts"]["errors"] == 1
    assert summary["counts"]["requests"] == len(requests)
    assert summary["duration_s"] >= 0
    # The new archive is announced before the run starts; every later line has its id.
    notice = lines[0]
    assert notice["event"] == f"creating a new archive at {tmp_path / 'a.db'}"
    assert notice["run_id"] is None
    run_ids = {line["run_id"] for line in lines[1:] if line["logger"].startswith("archiver")}
    assert run_ids == {summary["run_id"]} and summary["run_id"]
    assert TEST_API_KEY not in done.stderr


def test_quiet_prints_only_warnings_and_the_summary(tmp_path: Path, make_simulator) -> None:
    """`sync -q` into a new archive: the notice that it is created, the task error and
    the one summary line, nothing else."""
    probe = make_simulator(tasks=4, seed=62)
    bad = sorted(probe.truth())[0]
    sim = make_simulator(tasks=4, seed=62, malformed_task_ids=frozenset({bad}))
    sim.finish_all()
    env = env_for(sim, f"sqlite:///{tmp_path}/a.db")
    done = run_archiver("sync", "-q", env=env)
    lines = done.stderr.splitlines()
    assert len(lines) == 3, done.stderr
    assert lines[0].endswith(f" INFO archiver: creating a new archive at {tmp_path / 'a.db'}")
    assert " ERROR " in lines[1] and bad in lines[1]
    assert re.search(
        r"sync partial: discovered 4, polled 3, finalized 3, events inserted \d+, "
        r"artifacts stored 0, gone 0, errors 1, requests \d+, duration \d+\.\ds$",
        lines[2],
    )
    assert " INFO " not in "\n".join(lines[1:])


def test_missing_key_is_one_json_line_in_json_mode(tmp_path: Path) -> None:
    """A configuration error is reported as one JSON error line with --log-format json."""
    done = run_archiver(
        "sync",
        "--log-format",
        "json",
        env={"ARCHIVER_DATABASE_URL": f"sqlite:///{tmp_path}/a.db"},
    )
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    entry = json.loads(line)
    assert entry["level"] == "error" and "CIRCLEMIND_API_KEY" in entry["event"]


def run_on_pty(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run `archiver` with stderr on a pseudo-terminal (80x24); returns (code, stderr)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        [ARCHIVER_BIN, *args],
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env={k: v for k, v in os.environ.items() if k != "CIRCLEMIND_API_KEY"} | env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


BAR = re.compile(r"\d+/\d+ \[")  # tqdm's "n/total [elapsed<remaining, rate]"


def test_progress_bar_only_on_a_terminal(tmp_path: Path, make_simulator) -> None:
    """backfill shows a bar when stderr is a terminal and never when it is a pipe;
    sync shows one on a terminal only when it has more than 50 tasks to poll."""
    sim = make_simulator(tasks=60, events_per_task=1, seed=63)
    sim.finish_all()
    piped = run_archiver("backfill", env=env_for(sim, f"sqlite:///{tmp_path}/piped.db"))
    assert piped.returncode == 0, piped.stderr
    assert not BAR.search(piped.stderr) and "\r" not in piped.stderr
    code, tty = run_on_pty(["backfill"], env_for(sim, f"sqlite:///{tmp_path}/tty.db"))
    assert code == 0, tty
    assert BAR.search(tty) and "backfill" in tty and "60/60" in tty
    code, busy = run_on_pty(["sync"], env_for(sim, f"sqlite:///{tmp_path}/sync.db"))
    assert code == 0 and "60/60" in busy, busy
    small = make_simulator(tasks=5, events_per_task=1, seed=64)
    small.finish_all()
    code, quiet = run_on_pty(["sync"], env_for(small, f"sqlite:///{tmp_path}/small.db"))
    assert code == 0 and not BAR.search(quiet) and "sync ok" in quiet, quiet


def test_make_progress_picks_by_terminal_and_threshold(monkeypatch) -> None:
    """Not a TTY: log lines; a TTY: a bar that appears only above min_total; -q: nothing."""
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert isinstance(make_progress("sync"), LineProgress)
    assert isinstance(make_progress("sync", enabled=False), NullProgress)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    bar = make_progress("sync", min_total=50)
    assert isinstance(bar, BarProgress)
    bar.add_total(30)
    bar.advance(3)
    assert not bar.shown
    bar.add_total(30)
    assert bar.shown
    bar.close()
