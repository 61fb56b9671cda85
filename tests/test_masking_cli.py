"""Masking with the real ``archiver`` command: a bad rules file or a hash rule without a key
exits 2 before any request; after ``sync -vv --mask-rules`` and after ``mask --apply
--yes -vv`` no unmasked marker is in the SQLite file, its WAL or the logs."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from archiver.jsonvalues import dumps_json
from archiver.simulator import Simulator
from tests.conftest import TEST_API_KEY, run_archiver
from tests.test_masking import RULES, email, marker


def archive_files(db: Path) -> bytes:
    """The database file and its WAL, as bytes (what a grep of the disk would read)."""
    wal = db.with_name(db.name + "-wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@contextmanager
def wal_kept(db: Path) -> Iterator[None]:
    """An idle connection on the archive for the duration, so the last archiver process
    to close it does not delete the WAL: the test reads what the WAL holds."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("SELECT count(*) FROM sqlite_master").fetchall()  # opens the file and WAL
    try:
        yield
    finally:
        conn.close()


def marked_simulator(make_simulator: type[Simulator]) -> tuple[Simulator, list[str]]:
    """A finished account whose outputs and event payloads hold unique markers: nested,
    in keys, in arrays, beside lone surrogates, 3,000 levels deep, some in events without
    ids."""
    marks = [marker() for _ in range(5)]
    addr = email()
    raw = (
        json.dumps({"contact": addr, f"key {marks[0]}": [1, marks[1]]}),
        '"\\ud83d ' + marks[2] + ' \\udfff"',
        "[" * 3000 + json.dumps(marks[3]) + "]" * 3000,
        json.dumps([{"a": [{"b": marks[4]}]}]),
    )
    sim = make_simulator(tasks=6, events_per_task=6, null_event_id_rate=0.5, raw_json_values=raw)
    sim.finish_all()
    return sim, [*marks, addr]


def environment(sim: Simulator, db: Path) -> dict[str, str]:
    return {
        "CIRCLEMIND_API_KEY": TEST_API_KEY,
        "ARCHIVER_API_URL": sim.base_url,
        "ARCHIVER_DATABASE_URL": f"sqlite:///{db}",
    }


def test_a_bad_rules_file_exits_2_with_one_line_before_any_request(
    tmp_path: Path, make_simulator: type[Simulator]
) -> None:
    """Invalid regex, unknown key, duplicate name, wrong type, a missing file, a hash rule
    without ARCHIVER_MASK_KEY (or with a short one): exit 2, one line naming the file, the
    rule and the problem; the API is never asked and no archive is created."""
    sim = make_simulator(tasks=2)
    db = tmp_path / "archive.db"
    hashing = '[[rule]]\nname = "ids"\npattern = "ID-[0-9]+"\nreplace = "hash"\n'
    cases = [
        ('[[rule]]\nname = "a"\npattern = "(unclosed"\n', {}, "'a' (rule #1): pattern"),
        ('[[rule]]\nname = "a"\npattern = "x"\nscope = "all"\n', {}, "unknown key 'scope'"),
        (
            '[[rule]]\nname = "a"\npattern = "x"\n[[rule]]\nname = "a"\npattern = "y"\n',
            {},
            "duplicate",
        ),
        ('[[rule]]\nname = "a"\npattern = ["x"]\n', {}, "pattern must be a string, got list"),
        (None, {}, "no such file"),
        (hashing, {}, "'ids' has replace = \"hash\" but ARCHIVER_MASK_KEY is not set"),
        (hashing, {"ARCHIVER_MASK_KEY": "short"}, "shorter than 16 characters"),
    ]
    for number, (text, env, problem) in enumerate(cases):
        path = tmp_path / f"rules{number}.toml"
        if text is not None:
            path.write_text(text)
        done = run_archiver("sync", "--mask-rules", str(path), env={**environment(sim, db), **env})
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"archiver: error: mask rules {path}")
        assert problem in lines[0], lines[0]
    assert sim.api_requests == 0
    assert not db.exists()


def test_sync_at_vv_writes_no_marker_to_the_database_its_wal_or_the_logs(
    tmp_path: Path, make_simulator: type[Simulator]
) -> None:
    """`archiver sync -vv --mask-rules`: the markers the API sent are nowhere in the SQLite
    file, its WAL or the debug log; their replacements are in the archive."""
    sim, secrets = marked_simulator(make_simulator)
    truth = dumps_json(sim.truth())
    assert all(s in truth for s in secrets)  # the API does send them
    db, rules = tmp_path / "archive.db", tmp_path / "rules.toml"
    rules.write_text(RULES)
    env = environment(sim, db)
    assert run_archiver("db", "upgrade", env=env).returncode == 0
    with wal_kept(db):
        done = run_archiver("sync", "-vv", "--mask-rules", str(rules), env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "DEBUG" in done.stderr  # -vv did log at debug level
        assert db.with_name("archive.db-wal").stat().st_size > 0  # there is a WAL to read
        files = archive_files(db)
    leaked = [s for s in secrets if s.encode() in files or s in done.stderr]
    assert not leaked, leaked
    assert b"[masked:marker]" in files and b"[masked:emails]" in files


def test_mask_apply_dry_run_changes_nothing_and_yes_leaves_no_marker_on_disk(
    tmp_path: Path, make_simulator: type[Simulator]
) -> None:
    """An archive synced without rules holds the markers; `mask --apply` lists what would
    change and leaves the files byte for byte; `--yes` rewrites them so that neither the
    database file nor its WAL holds any marker, and audits each task."""
    sim, secrets = marked_simulator(make_simulator)
    db, rules = tmp_path / "archive.db", tmp_path / "rules.toml"
    rules.write_text(RULES)
    env = environment(sim, db)
    assert run_archiver("db", "upgrade", env=env).returncode == 0
    with wal_kept(db):
        assert run_archiver("sync", env=env).returncode == 0
        before = archive_files(db)
        assert all(s.encode() in before for s in secrets)
        args = ("mask", "--mask-rules", str(rules), "--apply", "--reason", "DSR 42")
        dry = run_archiver(*args, env=env)
        assert dry.returncode == 0, dry.stderr
        assert "dry run" in dry.stdout and "nothing was changed" in dry.stdout
        assert hashlib.sha256(archive_files(db)).digest() == hashlib.sha256(before).digest()
        done = run_archiver(*args, "--yes", "--actor", "dpo", "-vv", env=env)
        assert done.returncode == 0, done.stderr
        after = archive_files(db)
    leaked = [s for s in secrets if s.encode() in after or s in done.stdout + done.stderr]
    assert not leaked, leaked
    assert "DEBUG" in done.stderr  # -vv did log at debug level
    changed = [line for line in done.stdout.splitlines() if line.startswith("tsk_")]
    assert changed and len(changed) == len(
        [line for line in dry.stdout.splitlines() if line.startswith("tsk_")]
    )
    conn = sqlite3.connect(db)
    audits = conn.execute("SELECT task_id, actor, reason, command FROM erasures").fetchall()
    conn.close()
    assert sorted(audits) == sorted(
        (line.split(":")[0], "dpo", "DSR 42", "mask") for line in changed
    )
