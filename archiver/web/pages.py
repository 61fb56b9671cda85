"""The HTML pages of `archiver serve`: the task list, one task, costs and health, and the
error pages the application's exception handlers answer with. Handlers are plain
functions: Starlette runs them in its thread pool, where blocking database reads belong."""

from __future__ import annotations

import binascii
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from archiver import metrics as health_metrics
from archiver import report as reports
from archiver.web import queries, render
from archiver.web.chart import costs_chart
from archiver.web.params import (
    BadRequest,
    choice,
    config_errors_are_bad_requests,
    day,
    isoday,
    max_age,
)
from archiver.web.site import site_of

#: One event of the task page's timeline, formatted: offset, name, seek position (empty
#: when the recording cannot seek there), time, payload, other fields.
EventRow = tuple[str, str, str, str, str, str]


def _task_filter(params: QueryParams) -> queries.TaskFilter:
    flt = queries.TaskFilter(
        status=params.get("status") or None,
        device=params.get("device") or None,
        since=day(params.get("since"), "since"),
        until=day(params.get("until"), "until"),
        text=params.get("q") or None,
    )
    if flt.since and flt.until and flt.until < flt.since:
        raise BadRequest("until is before since: the range is inclusive at both ends.")
    return flt


def _cursor(after: str | None, sort: str) -> tuple[Any, str] | None:
    if not after:
        return None
    try:
        return queries.decode_cursor(after, sort)
    except (ValueError, TypeError, binascii.Error):
        raise BadRequest(
            "after is not a page link of this list: start again from the first page."
        ) from None


def task_list(request: Request) -> Response:
    site = site_of(request)
    params = request.query_params
    sort = choice(params.get("sort"), tuple(queries.SORTS), "sort", "created")
    flt = _task_filter(params)
    cursor = _cursor(params.get("after"), sort)
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


def _event_rows(detail: queries.TaskDetail) -> list[EventRow]:
    """Everything per event formatted here, once: the template only places strings."""
    recording = detail.artifacts.get("recording")
    seekable = recording is not None and recording.state == "stored"
    return [
        (
            render.offset_label(ev.offset_s),
            ev.name,
            f"{ev.offset_s:.3f}"
            if seekable and ev.offset_s is not None and ev.offset_s >= 0
            else "",
            render.utc(ev.timestamp_utc),
            render.payload_view(ev),
            render.extra_view(ev),
        )
        for ev in detail.events
    ]


def task(request: Request) -> Response:
    site = site_of(request)
    task_id = request.query_params.get("id")
    if not task_id:
        raise BadRequest("id is missing: open a task from the task list.")
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
    kind, text = render.output_view(detail.row)
    return site.page(
        request,
        "task.html",
        title=f"Task {task_id}",
        d=detail,
        t=detail.row,
        output_kind=kind,
        output_text=text,
        events=_event_rows(detail),
        usd=reports.usd(detail.row.credits_used),
        created=queries.aware(detail.row.created_at_utc),
        aware=queries.aware,
    )


def costs(request: Request) -> Response:
    site = site_of(request)
    params = request.query_params
    by = choice(params.get("by"), reports.BY_CHOICES, "by", "day")
    group = choice(params.get("group"), ("", *reports.GROUP_CHOICES), "group", "")
    since = day(params.get("since"), "since")
    until = day(params.get("until"), "until")
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
    found = health_metrics.read_status(site.database, max_age=max_age(request))
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
