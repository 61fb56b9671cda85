"""The HTML pages of `archiver serve`: the task list, one task, costs and health, and the
error pages the application's exception handlers answer with. Handlers are plain
functions: Starlette runs them in its thread pool, where blocking database reads belong."""

from __future__ import annotations

import binascii
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from archiver import metrics as health_metrics
from archiver import report as reports
from archiver.web import params, queries, render
from archiver.web.chart import costs_chart
from archiver.web.params import BadRequest, config_errors_are_bad_requests, isoday
from archiver.web.site import site_of
from archiver.web.timeline import Timeline

T = TypeVar("T")
#: The query parameters each filtered page understands; any other is a mistake to show.
TASK_LIST_PARAMS = ("status", "device", "since", "until", "q", "sort", "after")
COSTS_PARAMS = ("by", "group", "since", "until")


class Problems(list[str]):
    """What was wrong with a page's filters: each is shown on the page (status 400),
    which still applies the filters that were right."""

    def take(self, parse: Callable[[], T], default: T) -> T:
        """``parse()``, or ``default`` with its BadRequest noted."""
        try:
            return parse()
        except BadRequest as exc:
            self.append(str(exc))
            return default

    def unknown(self, request: Request, known: tuple[str, ...]) -> None:
        for name in dict.fromkeys(request.query_params.keys()):
            if name not in known:
                shown = name if len(name) <= 100 else name[:100] + "…"
                self.append(
                    f"{shown!r} is not a filter of this page: it takes {', '.join(known)} "
                    "(the form's From and To are since and until)."
                )

    @property
    def status_code(self) -> int:
        return 400 if self else 200


def _task_filter(request: Request, problems: Problems) -> queries.TaskFilter:
    flt = queries.TaskFilter(
        status=problems.take(lambda: params.text(request, "status"), None),
        device=problems.take(lambda: params.text(request, "device"), None),
        since=problems.take(lambda: params.day(request, "since"), None),
        until=problems.take(lambda: params.day(request, "until"), None),
        text=problems.take(lambda: params.text(request, "q"), None),
    )
    if flt.since and flt.until and flt.until < flt.since:
        problems.append("until is before since: the range is inclusive at both ends.")
        flt = queries.TaskFilter(flt.status, flt.device, flt.since, None, flt.text)
    return flt


#: What a page link that is not one of this view's raises while it is read back.
_NOT_A_LINK = (ValueError, TypeError, RecursionError, binascii.Error)


def _cursor(after: str | None, sort: str) -> tuple[Any, str] | None:
    if not after:
        return None
    try:
        return queries.decode_cursor(after, sort)
    except _NOT_A_LINK:
        raise BadRequest(
            "after is not a page link of this list: start again from the first page."
        ) from None


def _events_after(request: Request) -> tuple[Any, int] | None:
    token = params.text(request, "events_after")
    if not token:
        return None
    try:
        return queries.decode_event_cursor(token)
    except _NOT_A_LINK:
        raise BadRequest(
            "events_after is not a page link of this task's events: start again from its "
            "first events."
        ) from None


def task_list(request: Request) -> Response:
    site = site_of(request)
    problems = Problems()
    problems.unknown(request, TASK_LIST_PARAMS)
    sort = problems.take(
        lambda: params.choice(request, "sort", tuple(queries.SORTS), "created"), "created"
    )
    flt = _task_filter(request, problems)
    cursor = problems.take(lambda: _cursor(params.text(request, "after"), sort), None)
    with site.database.reading() as conn:
        result = queries.task_page(
            conn, flt, sort=sort, cursor=cursor, limit=site.settings.page_size
        )
        options = site.menus(conn)
    form = {
        "status": flt.status or "",
        "device": flt.device or "",
        "since": isoday(flt.since),
        "until": isoday(flt.until),
        "q": flt.text or "",
        "sort": sort,
    }
    return site.page(
        request,
        "tasks.html",
        problems.status_code,
        title="Tasks",
        page=result,
        form=form,
        menus=options,
        first_page=cursor is None,
        problems=problems,
    )


def task(request: Request) -> Response:
    site = site_of(request)
    task_id = params.text(request, "id")
    if not task_id:
        raise BadRequest("id is missing: open a task from the task list.")
    after = _events_after(request)
    with site.database.reading() as conn:
        detail = queries.task_detail(conn, task_id)
    if detail is None:
        return site.page(
            request,
            "error.html",
            404,
            title="No such task",
            message=f"No task with id {task_id!r} is in this archive.",
        )
    kind, output = render.output_view(detail.row)
    recording = detail.artifacts.get("recording")
    created = queries.aware(detail.row.created_at_utc)
    events = Timeline(
        site.database,
        task_id,
        created,
        seekable=recording is not None and recording.state == "stored",
        after=after,
    )
    return site.stream(
        request,
        "task.html",
        title=f"Task {task_id}",
        d=detail,
        t=detail.row,
        output_kind=kind,
        output=output,
        events=events,
        events_continued=after is not None,
        usd=reports.usd(detail.row.credits_used),
        created=created,
        aware=queries.aware,
    )


def costs(request: Request) -> Response:
    site = site_of(request)
    problems = Problems()
    problems.unknown(request, COSTS_PARAMS)
    by = problems.take(lambda: params.choice(request, "by", reports.BY_CHOICES, "day"), "day")
    group = problems.take(
        lambda: params.choice(request, "group", ("", *reports.GROUP_CHOICES), ""), ""
    )
    since = problems.take(lambda: params.day(request, "since"), None)
    until = problems.take(lambda: params.day(request, "until"), None)
    if since and until and until < since:
        problems.append("until is before since: the range is inclusive at both ends.")
        until = None
    with config_errors_are_bad_requests(), site.database.reading() as conn:
        result = reports.credits_report(
            conn, since=since, until=until, by=by, group_by=(group,) if group else ()
        )
    return site.page(
        request,
        "costs.html",
        problems.status_code,
        title="Costs",
        report=result,
        chart=costs_chart(result),
        label=lambda p: reports.period_label(p, by) or reports.NO_DATE,
        form={"by": by, "group": group, "since": isoday(since), "until": isoday(until)},
        by_choices=reports.BY_CHOICES,
        group_choices=reports.GROUP_CHOICES,
        problems=problems,
    )


def _run_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``status``'s last runs for the table: times as datetimes, and each run's length."""
    rows = []
    for run in runs:
        started = _when(run["started_at"])
        finished = _when(run["finished_at"])
        length = (finished - started).total_seconds() if started and finished else None
        rows.append({**run, "started_at": started, "duration_s": length})
    return rows


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def health(request: Request) -> Response:
    site = site_of(request)
    found = health_metrics.read_status(site.database, max_age=params.max_age(request))
    # The last runs are the table below, once: the text stops where they begin.
    lines = found.lines
    if "last runs:" in lines:
        lines = lines[: lines.index("last runs:")]
    return site.page(
        request,
        "health.html",
        title="Health",
        lines=lines,
        stale=found.stale,
        runs=_run_rows(found.report["last_runs"]),
    )


#: The routes answered with HTML pages, errors included.
PAGES = frozenset({task_list, task, costs, health})


def bad_request(request: Request, exc: Exception) -> Response:
    """A :class:`BadRequest` out of a page: 400, the message on the error page."""
    return site_of(request).page(request, "error.html", 400, title="Bad request", message=str(exc))


def unavailable(request: Request, exc: Exception) -> Response:
    """Any other ArchiverError out of a page (the archive cannot be read): 503, the message
    on the error page. From a route that is not a page (a blob's lookup) it goes on to the
    server's plain 500, as it always has."""
    if request.scope.get("endpoint") not in PAGES:
        raise exc
    return site_of(request).page(
        request, "error.html", 503, title="Archive unavailable", message=str(exc)
    )
