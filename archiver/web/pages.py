"""The HTML pages of `archiver serve`: the task list, one task, costs and health, and the
error pages the application's exception handlers answer with. Handlers are plain
functions: Starlette runs them in its thread pool, where blocking database reads belong."""

from __future__ import annotations

import binascii
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from archiver import metrics as health_metrics
from archiver import report as reports
from archiver.web import params, queries, render
from archiver.web.chart import costs_chart
from archiver.web.params import BadRequest, config_errors_are_bad_requests, isoday
from archiver.web.site import site_of
from archiver.web.timeline import Timeline


def _task_filter(request: Request) -> queries.TaskFilter:
    flt = queries.TaskFilter(
        status=params.text(request, "status"),
        device=params.text(request, "device"),
        since=params.day(request, "since"),
        until=params.day(request, "until"),
        text=params.text(request, "q"),
    )
    if flt.since and flt.until and flt.until < flt.since:
        raise BadRequest("until is before since: the range is inclusive at both ends.")
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
    sort = params.choice(request, "sort", tuple(queries.SORTS), "created")
    flt = _task_filter(request)
    cursor = _cursor(params.text(request, "after"), sort)
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
        title="Tasks",
        page=result,
        form=form,
        menus=options,
        first_page=cursor is None,
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
    by = params.choice(request, "by", reports.BY_CHOICES, "day")
    group = params.choice(request, "group", ("", *reports.GROUP_CHOICES), "")
    since = params.day(request, "since")
    until = params.day(request, "until")
    with config_errors_are_bad_requests(), site.database.reading() as conn:
        result = reports.credits_report(
            conn, since=since, until=until, by=by, group_by=(group,) if group else ()
        )
    return site.page(
        request,
        "costs.html",
        title="Costs",
        report=result,
        chart=costs_chart(result),
        label=lambda p: reports.period_label(p, by) or reports.NO_DATE,
        form={"by": by, "group": group, "since": isoday(since), "until": isoday(until)},
        by_choices=reports.BY_CHOICES,
        group_choices=reports.GROUP_CHOICES,
    )


def health(request: Request) -> Response:
    site = site_of(request)
    found = health_metrics.read_status(site.database, max_age=params.max_age(request))
    return site.page(
        request,
        "health.html",
        title="Health",
        lines=found.lines,
        stale=found.stale,
        status=found.report,
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
