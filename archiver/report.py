"""``archiver report``: what tasks cost, for people without a SQL client.

The numbers come from the SQL views analysts use (``credits_by_day``, ``task_summary``;
see docs/analysts.md), so a report and a query never disagree. ``credits`` adds the
view's days up into weeks (starting Monday) or months, optionally broken down by status
and/or device; ``top`` lists the most expensive tasks. Each renders as an aligned table
(with totals and a bar per row), CSV or JSON.

Dates are UTC calendar dates of task creation; ``--since`` and ``--until`` are both
inclusive. Tasks whose creation time is not known yet (tracked by id, never polled) have
no day: they appear as ``(no date)`` when no date range is given and are left out of
ranges. 1 credit = US$0.01; dollars are computed from the credit sums, exactly.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection

from archiver.escapes import visible
from archiver.exceptions import ConfigError
from archiver.jsonvalues import escape_surrogates, loads_json, storage_json
from archiver.store import reports as views

BY_CHOICES = ("day", "week", "month")
GROUP_CHOICES = ("status", "device")
FORMATS = ("table", "csv", "json")
DEFAULT_TOP_LIMIT = 10
BAR_WIDTH = 24
OUTPUT_PREVIEW_CHARS = 40
NO_DATE = "(no date)"
#: C0 and C1 control characters (ESC starts a terminal's escape sequences).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
NONE_LABEL = "-"


def usd(credits: int | None) -> Decimal | None:
    """US dollars for a number of credits (1 credit = US$0.01), exact."""
    return None if credits is None else Decimal(credits) / 100


# --- options -------------------------------------------------------------------------


def check_range(since: date | None, until: date | None) -> None:
    if since is not None and until is not None and until < since:
        raise ConfigError(
            f"--until {until.isoformat()} is before --since {since.isoformat()}: "
            "the range is inclusive at both ends, so give --until on or after --since."
        )


def check_choice(value: str, choices: Sequence[str], option: str) -> str:
    if value not in choices:
        raise ConfigError(f"{option} {value!r} is not valid: use one of {', '.join(choices)}.")
    return value


# --- credits -------------------------------------------------------------------------


def period_start(day: date, by: str) -> date:
    """The first day of the day/week (Monday)/month that ``day`` falls in."""
    if by == "week":
        return day - timedelta(days=day.weekday())
    if by == "month":
        return day.replace(day=1)
    return day


def period_label(start: date | None, by: str) -> str | None:
    """``2026-01-31`` for days and weeks (the Monday), ``2026-01`` for months."""
    if start is None:
        return None
    return start.strftime("%Y-%m") if by == "month" else start.isoformat()


@dataclass
class CreditsRow:
    """One period (and group): how many tasks were created and what they cost."""

    period: date | None
    groups: tuple[str | None, ...]
    tasks: int = 0
    credits_used: int = 0

    @property
    def usd(self) -> Decimal:
        return Decimal(self.credits_used) / 100


@dataclass
class CreditsReport:
    by: str
    group_by: tuple[str, ...]
    since: date | None
    until: date | None
    rows: list[CreditsRow] = field(default_factory=list)

    @property
    def tasks(self) -> int:
        return sum(row.tasks for row in self.rows)

    @property
    def credits_used(self) -> int:
        return sum(row.credits_used for row in self.rows)

    @property
    def usd(self) -> Decimal:
        return Decimal(self.credits_used) / 100


def _sort_key(value: Any) -> tuple[bool, Any]:
    return (value is None, value if value is not None else "")


def credits_report(
    conn: Connection,
    *,
    since: date | None = None,
    until: date | None = None,
    by: str = "day",
    group_by: Sequence[str] = (),
) -> CreditsReport:
    """Tasks and credits per day, week or month (and status/device), from credits_by_day."""
    check_choice(by, BY_CHOICES, "--by")
    groups = tuple(dict.fromkeys(check_choice(g, GROUP_CHOICES, "--group-by") for g in group_by))
    check_range(since, until)
    buckets: dict[tuple[date | None, tuple[str | None, ...]], CreditsRow] = {}
    for row in views.credits_rows(conn, since=since, until=until):
        day = _as_date(row.day)
        start = period_start(day, by) if day is not None else None
        key_groups = tuple(getattr(row, g) for g in groups)
        bucket = buckets.setdefault((start, key_groups), CreditsRow(start, key_groups))
        bucket.tasks += int(row.tasks)
        bucket.credits_used += int(row.credits_used or 0)
    ordered = sorted(
        buckets.values(),
        key=lambda r: (_sort_key(r.period), *(_sort_key(g) for g in r.groups)),
    )
    return CreditsReport(by=by, group_by=groups, since=since, until=until, rows=ordered)


def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


# --- top -----------------------------------------------------------------------------


@dataclass
class TopTask:
    task_id: str
    status: str | None
    device: str | None
    created_at_utc: datetime | None
    credits_used: int | None
    duration_s: float | None
    events: int
    output_text: str | None
    #: The output on one line, whatever its JSON type (``output_text`` is text outputs').
    output_preview: str = ""

    @property
    def usd(self) -> Decimal | None:
        return usd(self.credits_used)


def top_tasks(
    conn: Connection,
    *,
    limit: int = DEFAULT_TOP_LIMIT,
    since: date | None = None,
    until: date | None = None,
    status: str | None = None,
) -> list[TopTask]:
    """The ``limit`` most expensive tasks (by credits_used) from task_summary."""
    if limit < 1:
        raise ConfigError(f"--limit {limit} is not a positive number of tasks: use 1 or more.")
    check_range(since, until)
    if status is not None:
        known = views.known_statuses(conn)
        if status not in known:
            raise ConfigError(
                f"--status {status!r} is not the status of any archived task: use one of "
                f"{', '.join(known) or '(none yet)'}."
            )
    return [
        TopTask(
            task_id=row.task_id,
            status=row.status,
            device=row.device,
            created_at_utc=_utc(row.created_at_utc),
            credits_used=row.credits_used,
            duration_s=None if row.duration_s is None else float(row.duration_s),
            events=int(row.events or 0),
            output_text=row.output_text,
            output_preview=output_preview(row.output, row.output_raw),
        )
        for row in views.top_rows(conn, limit=limit, since=since, until=until, status=status)
    ]


def output_preview(output: Any, output_raw: str | None) -> str:
    """A task's output as sent, on one line: a string as its text, any other JSON value
    compact (``{"title":"...","price":12.5}``); empty when there is none."""
    value = output if output_raw is None else loads_json(output_raw)
    if value is None:
        return ""
    return one_line(escape_surrogates(value) if isinstance(value, str) else storage_json(value))


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# --- rendering -----------------------------------------------------------------------


def supports_unicode(stream: Any = None) -> bool:
    """Whether block characters can be written to ``stream`` (default stdout)."""
    encoding = getattr(stream or sys.stdout, "encoding", None) or "ascii"
    try:
        "█▏".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(value: float, maximum: float, *, width: int = BAR_WIDTH, unicode: bool = True) -> str:
    """A horizontal bar ``value/maximum`` of ``width`` characters (block or ``#``)."""
    if maximum <= 0 or value <= 0:
        return ""
    fraction = min(value / maximum, 1.0)
    if not unicode:
        return "#" * max(1, round(fraction * width))
    eighths = max(1, round(fraction * width * 8))
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


def _money(value: Decimal | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def _int(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    rows = [[visible(cell) for cell in row] for row in rows]  # archived text: one line each
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(headers), rule, *(line(row) for row in rows)]


def _range_text(since: date | None, until: date | None) -> str:
    """The days a report covers, in words: ``all dates``, ``since 2027-01-01``,
    ``until 2027-01-31`` or ``2027-01-01 to 2027-01-31``."""
    if since is None and until is None:
        return "all dates"
    if until is None:
        return f"since {since}"
    if since is None:
        return f"until {until}"
    return f"{since} to {until}"


def _top_title(count: int, since: date | None, until: date | None) -> str:
    days = "" if since is None and until is None else f" created {_range_text(since, until)}"
    if count == 0:
        return f"No tasks with credits{days or ' yet'}"
    if count == 1:
        return f"The most expensive task{days}"
    return f"The {count} most expensive tasks{days}"


def render_credits(report: CreditsReport, fmt: str, *, unicode: bool | None = None) -> str:
    """The report as ``table``, ``csv`` or ``json`` text (ending with a newline)."""
    check_choice(fmt, FORMATS, "--format")
    if fmt == "json":
        return json.dumps(_credits_json(report), indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["period", *report.group_by, "tasks", "credits_used", "usd"])
        for row in report.rows:
            writer.writerow(
                [
                    period_label(row.period, report.by) or "",
                    *(visible(g or "") for g in row.groups),
                    row.tasks,
                    row.credits_used,
                    f"{row.usd:.2f}",
                ]
            )
        return out.getvalue()
    unicode = supports_unicode() if unicode is None else unicode
    top = max((row.credits_used for row in report.rows), default=0)
    headers = [report.by, *report.group_by, "tasks", "credits", "usd", ""]
    n_groups = len(report.group_by)
    body = [
        [
            period_label(row.period, report.by) or NO_DATE,
            *(g if g is not None else NONE_LABEL for g in row.groups),
            _int(row.tasks),
            _int(row.credits_used),
            _money(row.usd),
            bar(row.credits_used, top, unicode=unicode),
        ]
        for row in report.rows
    ]
    total = ["total", *([""] * n_groups), _int(report.tasks), _int(report.credits_used)]
    total += [_money(report.usd), ""]
    right = {n_groups + 1, n_groups + 2, n_groups + 3}
    lines = _table(headers, [*body, total], right)
    rule = lines[1]
    title = f"Credits by {report.by}"
    if report.group_by:
        title += f", by {' and '.join(report.group_by)}"
    title += f", {_range_text(report.since, report.until)} (UTC day of task creation)"
    if report.by == "week":
        title += "; weeks start on Monday"
    if not report.rows:
        lines = [*lines[:2], "(no tasks)", *lines[2:]]
    lines.insert(len(lines) - 1, rule)
    return "\n".join([title, "", *lines, "", "1 credit = US$0.01"]) + "\n"


def _credits_json(report: CreditsReport) -> dict[str, Any]:
    return {
        "by": report.by,
        "group_by": list(report.group_by),
        "since": report.since.isoformat() if report.since else None,
        "until": report.until.isoformat() if report.until else None,
        "rows": [
            {
                "period": period_label(row.period, report.by),
                **dict(zip(report.group_by, row.groups, strict=True)),
                "tasks": row.tasks,
                "credits_used": row.credits_used,
                "usd": float(row.usd),
            }
            for row in report.rows
        ],
        "totals": {
            "tasks": report.tasks,
            "credits_used": report.credits_used,
            "usd": float(report.usd),
        },
    }


def _top_dict(task: TopTask) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "status": task.status,
        "device": task.device,
        "created_at_utc": (
            task.created_at_utc.isoformat(timespec="seconds") if task.created_at_utc else None
        ),
        "credits_used": task.credits_used,
        "usd": None if task.usd is None else float(task.usd),
        "duration_s": task.duration_s,
        "events": task.events,
        "output_text": task.output_text,
    }


def one_line(text: str | None, limit: int = OUTPUT_PREVIEW_CHARS) -> str:
    """``text`` on one line (whitespace runs as one space, control characters as their
    escapes, so archived text cannot drive a terminal), cut to ``limit`` characters."""
    if not text:
        return ""
    flat = _CONTROL.sub(lambda m: repr(m.group())[1:-1], " ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _csv_cell(name: str, value: Any) -> Any:
    if value is None:
        return ""
    if name == "usd":
        return f"{value:.2f}"
    return visible(value) if isinstance(value, str) else value


def render_top(
    tasks: list[TopTask],
    fmt: str,
    *,
    unicode: bool | None = None,
    since: date | None = None,
    until: date | None = None,
) -> str:
    """The most expensive tasks as ``table``, ``csv`` or ``json`` text (the table's title
    names the days ``since``/``until``)."""
    check_choice(fmt, FORMATS, "--format")
    dicts = [_top_dict(task) for task in tasks]
    if fmt == "json":
        return json.dumps({"tasks": dicts}, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        fields = list(_top_dict(TopTask("", None, None, None, None, None, 0, None)))
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for entry in dicts:
            writer.writerow({k: _csv_cell(k, v) for k, v in entry.items()})
        return out.getvalue()
    unicode = supports_unicode() if unicode is None else unicode
    ellipsis = "…" if unicode else "..."
    top = max((task.credits_used or 0 for task in tasks), default=0)
    headers = ["task", "status", "device", "created (UTC)", "credits", "usd", "duration"]
    headers += ["events", "output", ""]
    body = [
        [
            task.task_id,
            task.status or NONE_LABEL,
            task.device or NONE_LABEL,
            task.created_at_utc.strftime("%Y-%m-%d %H:%M") if task.created_at_utc else "",
            _int(task.credits_used),
            _money(task.usd),
            "" if task.duration_s is None else f"{task.duration_s:,.0f}s",
            _int(task.events),
            one_line(task.output_preview).replace("…", ellipsis),
            bar(task.credits_used or 0, top, width=12, unicode=unicode),
        ]
        for task in tasks
    ]
    credits = sum(task.credits_used or 0 for task in tasks)
    total = ["total", "", "", "", _int(credits), _money(Decimal(credits) / 100), "", "", "", ""]
    lines = _table(headers, [*body, total], {4, 5, 6, 7})
    if not tasks:
        lines = [*lines[:2], "(no tasks)", *lines[2:]]
    lines.insert(len(lines) - 1, lines[1])
    title = _top_title(len(tasks), since, until)
    return "\n".join([title, "", *lines, "", "1 credit = US$0.01"]) + "\n"
