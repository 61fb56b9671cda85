"""Sync state: versioned JSON values under a key (discovery's watermark, backfill's
cursor, the created_at groups List Tasks cannot page through, whether blob storage is
failing), each migrated step by step to the version this archiver reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from archiver.exceptions import ConfigError, StorageError
from archiver.store.engines import dialect_insert
from archiver.store.schema import sync_state, tasks
from archiver.timestamps import to_utc

#: Current version of each state key's value.
STATE_VERSIONS: dict[str, int] = {"discovery": 1, "backfill": 1, "unlisted": 1, "blob_storage": 1}


def get_state(conn: Connection, key: str, *, for_update: bool = False) -> dict[str, Any] | None:
    """The value under ``key``, upgraded to its current version; None when there is none.
    ``for_update`` locks the row until the transaction ends (PostgreSQL; SQLite's
    transactions already hold the write lock)."""
    query = select(sync_state.c.version, sync_state.c.value).where(sync_state.c.key == key)
    row = conn.execute(query.with_for_update() if for_update else query).first()
    if row is None:
        return None
    version, value = row.version, dict(row.value)
    target = STATE_VERSIONS[key]
    if version > target:
        raise StorageError(
            f"sync state {key!r} is at version {version}, newer than this archiver "
            f"understands ({target}); upgrade smooth-archiver."
        )
    # Future format changes add a step here: (key, from_version) -> upgraded value.
    while version < target:
        value = _STATE_STEPS[(key, version)](value)
        version += 1
    return value


_STATE_STEPS: dict[tuple[str, int], Any] = {}


def raise_discovery_watermark(conn: Connection, newest: int, now: datetime) -> None:
    """Move discovery's watermark up to ``newest`` (a created_at), never down."""
    state = get_state(conn, "discovery") or {}
    known = state.get("newest_created_at")
    if known is None or newest > known:
        put_state(conn, "discovery", {**state, "newest_created_at": newest}, now)


def put_state(conn: Connection, key: str, value: dict[str, Any], now: datetime) -> None:
    row = {"key": key, "version": STATE_VERSIONS[key], "value": value, "updated_at": now}
    stmt = dialect_insert(conn, sync_state).values(row)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={"version": row["version"], "value": value, "updated_at": now},
        )
    )


def _locked_state(conn: Connection, key: str, now: datetime) -> dict[str, Any]:
    """The value under ``key`` (``{}`` when new), its row locked for a read-modify-write
    that a concurrent run cannot overwrite."""
    conn.execute(
        dialect_insert(conn, sync_state)
        .values(key=key, version=STATE_VERSIONS[key], value={}, updated_at=now)
        .on_conflict_do_nothing(index_elements=["key"])
    )
    return get_state(conn, key, for_update=True) or {}


#: created_at groups List Tasks cannot page through ("unlisted"):
#:
# State "unlisted", version 1: {"groups": {"<created_at>": {"listed": int, "command": str,
# "first_seen_at": iso, "last_seen_at": iso, "acknowledged_at": iso | None}}}


def record_unlisted_group(
    conn: Connection, created_at: int, listed: int, *, command: str, now: datetime
) -> bool:
    """Record that a full page of List Tasks shared ``created_at`` (the rest of that group,
    if any, cannot be listed); returns whether an operator already acknowledged it."""
    state = _locked_state(conn, "unlisted", now)
    groups = state.setdefault("groups", {})
    stamp = now.isoformat(timespec="seconds")
    group = groups.setdefault(
        str(created_at), {"first_seen_at": stamp, "acknowledged_at": None, "listed": 0}
    )
    group.update(listed=max(group["listed"], listed), command=command, last_seen_at=stamp)
    put_state(conn, "unlisted", state, now)
    return group["acknowledged_at"] is not None


def acknowledge_unlisted(conn: Connection, created_at: int, now: datetime) -> dict[str, Any]:
    """Mark a recorded group as dealt with (``status`` stops showing it, passes that meet it
    again only warn); returns it as :func:`unlisted_groups` shows it. ConfigError when no
    such group is recorded."""
    state = _locked_state(conn, "unlisted", now)
    groups = state.setdefault("groups", {})
    group = groups.get(str(created_at))
    if group is None:
        recorded = ", ".join(groups) or "none"
        raise ConfigError(
            f"--ack-unlisted {created_at}: no group of unlisted tasks with that created_at is "
            f"recorded (recorded: {recorded}); `archiver status` shows the created_at to give."
        )
    if group["acknowledged_at"] is None:
        group["acknowledged_at"] = now.isoformat(timespec="seconds")
        put_state(conn, "unlisted", state, now)
    return _describe_unlisted(conn, created_at, group)


def unlisted_groups(conn: Connection) -> list[dict[str, Any]]:
    """The recorded groups not yet acknowledged, oldest first, with how many tasks of that
    created_at the archive holds by now."""
    state = get_state(conn, "unlisted") or {}
    return [
        _describe_unlisted(conn, int(key), group)
        for key, group in sorted(state.get("groups", {}).items(), key=lambda kv: int(kv[0]))
        if group["acknowledged_at"] is None
    ]


def _describe_unlisted(conn: Connection, created_at: int, group: dict[str, Any]) -> dict[str, Any]:
    archived = conn.scalar(select(func.count()).where(tasks.c.created_at == created_at)) or 0
    utc = to_utc(created_at)
    return {
        "created_at": created_at,
        "created_at_utc": None if utc is None else utc.isoformat(sep=" "),
        "listed": group["listed"],
        "archived": archived,
        **{name: group.get(name) for name in ("command", "first_seen_at", "last_seen_at")},
        "acknowledged_at": group["acknowledged_at"],
    }


#: Whether blob storage is failing:
#:
# State "blob_storage", version 1: {"url": str, "failing_since": iso | None,
# "last_failure_at": iso, "last_error": str, "recovered_at": iso | None}


def record_blob_failure(conn: Connection, url: str, message: str, now: datetime) -> None:
    """A write to blob storage failed: it is failing since now, unless it already was."""
    state = _locked_state(conn, "blob_storage", now)
    stamp = now.isoformat(timespec="seconds")
    if not state.get("failing_since"):
        state["failing_since"] = stamp
    state.update(url=url, last_failure_at=stamp, last_error=message, recovered_at=None)
    put_state(conn, "blob_storage", state, now)


def record_blob_success(conn: Connection, now: datetime) -> None:
    """A blob was stored: blob storage works (again)."""
    state = get_state(conn, "blob_storage")
    if state and state.get("failing_since"):
        state.update(failing_since=None, recovered_at=now.isoformat(timespec="seconds"))
        put_state(conn, "blob_storage", state, now)


def blob_storage_failure(conn: Connection) -> dict[str, Any] | None:
    """Since when blob storage is failing and why (None while it works)."""
    state = get_state(conn, "blob_storage") or {}
    if not state.get("failing_since"):
        return None
    return {
        name: state.get(name) for name in ("url", "failing_since", "last_failure_at", "last_error")
    }
