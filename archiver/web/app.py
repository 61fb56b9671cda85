"""The ASGI application of `archiver serve`: server-rendered pages over a read-only archive.

Routes: ``/tasks`` (list), ``/task?id=`` (one task), ``/blob/<kind>?task=`` (a stored
recording or downloads archive, with Range), ``/costs``, ``/health``, ``/healthz``,
``/metrics`` and ``/static/``. Task ids go in the query string, never in the path, so an
id with ``/`` or ``..`` in it cannot be rewritten by a browser's path normalisation.
Handlers are plain functions: Starlette runs them in its thread pool, where blocking
database and blob reads belong.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from archiver import config as cfg
from archiver import metrics as health_metrics
from archiver import report as reports
from archiver.blobs import BlobStore
from archiver.exceptions import ArchiverError, ConfigError
from archiver.store.database import Database
from archiver.store.schema import sync_runs
from archiver.web import blobserve, queries, render
from archiver.web.access import is_loopback

HERE = Path(__file__).parent
KINDS = ("recording", "downloads")
#: Pages: nothing but this origin's own files; no inline script, no plugins, no framing.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
#: Blobs are bytes to play or save, never a document that could run anything.
BLOB_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"
COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
#: Series colours of the costs chart (colour-blind-safe palette), cycled; statuses keep
#: the colours their badges have on every page.
PALETTE = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb")
STATUS_COLORS = {
    "done": "#228833",
    "failed": "#cc3311",
    "cancelled": "#999999",
    "running": "#ccbb44",
    "waiting": "#66ccee",
}
#: Horizontal room one period label needs on the chart, in SVG units.
LABEL_WIDTH = 72


@dataclass(frozen=True)
class Settings:
    database: Database
    #: Read blobs under this root instead of the one recorded in artifacts.blob_url.
    blob_root: BlobStore | None
    max_age: timedelta
    token: str | None
    page_size: int = queries.PAGE_SIZE


class Guard:
    """Every request: the token when one is set (HTTP Basic, any user name, the token as
    password; or ``Authorization: Bearer``), a loopback Host header when none is (so a web
    page cannot reach a loopback-only server through DNS rebinding), and the security
    headers on every response."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        refusal = self._refusal(headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in COMMON_HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    extra.append((b"content-security-policy", PAGE_CSP.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, headers: dict[str, bytes]) -> Response | None:
        if self.token is None:
            host = headers.get("host", b"").decode("latin-1").strip().lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not is_loopback(name):
                return PlainTextResponse(
                    "archiver serve: this server answers only to 127.0.0.1/localhost; to "
                    "reach it under another name, set ARCHIVER_SERVE_TOKEN.\n",
                    status_code=421,
                )
            return None
        if self._authorized(headers.get("authorization", b"")):
            return None
        return PlainTextResponse(
            "archiver serve: the token is required (HTTP Basic auth with any user name and "
            "the token as password, or Authorization: Bearer <token>).\n",
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="archiver", charset="UTF-8"'},
        )

    def _authorized(self, value: bytes) -> bool:
        assert self.token is not None
        scheme, _, credential = value.partition(b" ")
        scheme = scheme.lower()
        if scheme == b"bearer":
            given = credential.strip()
        elif scheme == b"basic":
            try:
                decoded = base64.b64decode(credential.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            given = decoded.partition(b":")[2]
        else:
            return False
        return hmac.compare_digest(given, self.token)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(render.FILTERS)
    env.globals["query"] = lambda **params: urlencode(
        {k: v for k, v in params.items() if v not in (None, "")}
    )
    return env


class BadRequest(ArchiverError):
    """A query parameter the page cannot use; answered 400 with the message."""


def _day(value: str | None, name: str) -> date | None:
    try:
        return cfg.parse_day(value or None, option=name)
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None


def _choice(value: str | None, allowed: tuple[str, ...], name: str, default: str) -> str:
    if not value:
        return default
    if value not in allowed:
        raise BadRequest(f"{name} {value!r} is not valid: use one of {', '.join(allowed)}.")
    return value


#: How long the filter menus' statuses and devices (a full scan of tasks) are reused.
CHOICES_TTL_S = 60.0


def create_app(settings: Settings) -> Starlette:
    env = _environment()
    database = settings.database
    menus_cache: list[tuple[float, dict[str, list[str]]]] = []

    def menus(conn: Connection) -> dict[str, list[str]]:
        now = time.monotonic()
        if not menus_cache or now - menus_cache[0][0] > CHOICES_TTL_S:
            menus_cache[:] = [(now, queries.choices(conn))]
        return menus_cache[0][1]

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(request=request, **context)
        return HTMLResponse(html, status_code=status_code)

    def handles_errors(fn: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def wrapped(request: Request) -> Response:
            try:
                return fn(request)
            except BadRequest as exc:
                return page(request, "error.html", 400, title="Bad request", message=str(exc))
            except ArchiverError as exc:
                return page(
                    request, "error.html", 503, title="Archive unavailable", message=str(exc)
                )

        return wrapped

    @handles_errors
    def task_list(request: Request) -> Response:
        params = request.query_params
        sort = _choice(params.get("sort"), tuple(queries.SORTS), "sort", "created")
        flt = queries.TaskFilter(
            status=params.get("status") or None,
            device=params.get("device") or None,
            since=_day(params.get("since"), "since"),
            until=_day(params.get("until"), "until"),
            text=params.get("q") or None,
        )
        if flt.since and flt.until and flt.until < flt.since:
            raise BadRequest("until is before since: the range is inclusive at both ends.")
        cursor = None
        if params.get("after"):
            try:
                cursor = queries.decode_cursor(params["after"], sort)
            except (ValueError, TypeError, binascii.Error):
                raise BadRequest(
                    "after is not a page link of this list: start again from the first page."
                ) from None
        with database.reading() as conn:
            result = queries.task_page(
                conn, flt, sort=sort, cursor=cursor, limit=settings.page_size
            )
            options = menus(conn)
        form = {
            "status": flt.status or "",
            "device": flt.device or "",
            "since": flt.since.isoformat() if flt.since else "",
            "until": flt.until.isoformat() if flt.until else "",
            "q": flt.text or "",
            "sort": sort,
        }
        return page(
            request,
            "tasks.html",
            title="Tasks",
            page=result,
            form=form,
            menus=options,
            first_page=cursor is None,
        )

    @handles_errors
    def task(request: Request) -> Response:
        task_id = request.query_params.get("id")
        if not task_id:
            raise BadRequest("id is missing: open a task from the task list.")
        with database.reading() as conn:
            detail = queries.task_detail(conn, task_id)
        if detail is None:
            return page(
                request,
                "error.html",
                404,
                title="No such task",
                message=f"No task with id {task_id!r} is in this archive.",
            )
        kind, text = render.output_view(detail.row)
        recording = detail.artifacts.get("recording")
        seekable = recording is not None and recording.state == "stored"
        # Everything per event is formatted here, once: the template only places strings.
        events = [
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
        return page(
            request,
            "task.html",
            title=f"Task {task_id}",
            d=detail,
            t=detail.row,
            output_kind=kind,
            output_text=text,
            events=events,
            usd=reports.usd(detail.row.credits_used),
            created=queries.aware(detail.row.created_at_utc),
            aware=queries.aware,
        )

    def blob(request: Request) -> Response:
        kind = request.path_params["kind"]
        task_id = request.query_params.get("task", "")
        if kind not in KINDS or not task_id:
            return PlainTextResponse("no such blob\n", status_code=404)
        with database.reading() as conn:
            found = queries.stored_blob(conn, task_id, kind)
        if found is None:
            return PlainTextResponse(
                f"the {kind} of this task is not stored in the archive\n", status_code=404
            )
        try:
            opened = blobserve.open_blob(found.blob_url, settings.blob_root)
        except ArchiverError as exc:
            return PlainTextResponse(render.safe_message(str(exc)) + "\n", status_code=404)
        ctype = blobserve.media_type(found.content_type)
        inline = kind == "recording" and ctype.startswith(blobserve.INLINE_PREFIXES)
        if not inline and kind == "recording":
            ctype = blobserve.GENERIC
        disposition = "inline" if inline else "attachment"
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'{disposition}; filename="{kind}.{opened.extension}"',
            "Content-Security-Policy": BLOB_CSP,
            "Cache-Control": "private, max-age=3600",
        }
        try:
            span = blobserve.parse_range(request.headers.get("range"), opened.size)
        except blobserve.Unsatisfiable:
            opened.handle.close()
            return Response(
                status_code=416, headers={**headers, "Content-Range": f"bytes */{opened.size}"}
            )
        first, last = span if span is not None else (0, opened.size - 1)
        length = max(last - first + 1, 0)
        headers["Content-Length"] = str(length)
        status = 200
        if span is not None:
            status = 206
            headers["Content-Range"] = f"bytes {first}-{last}/{opened.size}"
        if request.method == "HEAD":
            opened.handle.close()
            return Response(status_code=status, headers=headers, media_type=ctype)
        return StreamingResponse(
            blobserve.read_span(opened.handle, first, length),
            status_code=status,
            headers=headers,
            media_type=ctype,
        )

    @handles_errors
    def costs(request: Request) -> Response:
        params = request.query_params
        by = _choice(params.get("by"), reports.BY_CHOICES, "by", "day")
        group = _choice(params.get("group"), ("", *reports.GROUP_CHOICES), "group", "")
        since = _day(params.get("since"), "since")
        until = _day(params.get("until"), "until")
        try:
            with database.reading() as conn:
                result = reports.credits_report(
                    conn, since=since, until=until, by=by, group_by=(group,) if group else ()
                )
        except ConfigError as exc:
            raise BadRequest(str(exc)) from None
        return page(
            request,
            "costs.html",
            title="Costs",
            report=result,
            chart=costs_chart(result),
            label=lambda p: reports.period_label(p, by) or reports.NO_DATE,
            form={
                "by": by,
                "group": group,
                "since": since.isoformat() if since else "",
                "until": until.isoformat() if until else "",
            },
            by_choices=reports.BY_CHOICES,
            group_choices=reports.GROUP_CHOICES,
        )

    def _max_age(request: Request) -> timedelta:
        value = request.query_params.get("max_age")
        if not value:
            return settings.max_age
        try:
            return health_metrics.parse_duration(value, option="max_age")
        except ConfigError as exc:
            raise BadRequest(str(exc)) from None

    @handles_errors
    def health(request: Request) -> Response:
        max_age = _max_age(request)
        found = health_metrics.read_status(database, max_age=max_age)
        return page(
            request,
            "health.html",
            title="Health",
            lines=found.lines,
            stale=found.stale,
            status=found.report,
        )

    def healthz(request: Request) -> Response:
        try:
            max_age = _max_age(request)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            with database.reading() as conn:
                facts = health_metrics.read_health(conn)
        except ArchiverError as exc:
            return JSONResponse({"status": "error", "error": str(exc)}, status_code=503)
        stale = facts.is_stale(max_age)
        body = {
            "status": "stale" if stale else "ok",
            **facts.as_dict(),
            "max_age_s": max_age.total_seconds(),
        }
        return JSONResponse(body, status_code=503 if stale else 200)

    def prometheus(request: Request) -> Response:
        try:
            with database.reading() as conn:
                text = metrics_text(conn)
        except ArchiverError as exc:
            return PlainTextResponse(f"# archive unavailable: {exc}\n", status_code=503)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def home(request: Request) -> Response:
        return RedirectResponse("/tasks", status_code=302)

    routes = [
        Route("/", home),
        Route("/tasks", task_list),
        Route("/task", task),
        Route("/blob/{kind}", blob, methods=["GET", "HEAD"]),
        Route("/costs", costs),
        Route("/health", health),
        Route("/healthz", healthz),
        Route("/metrics", prometheus),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    return Guard(app, settings.token)  # type: ignore[return-value]


# --- costs chart ---------------------------------------------------------------------


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar]
    legend: list[tuple[str, str]]
    ticks: list[tuple[float, str]]
    labels: list[tuple[float, str]]


def costs_chart(report: reports.CreditsReport, width: int = 900, height: int = 260) -> Chart:
    """A stacked bar chart of credits per period (stacks: the group), drawn as SVG by the
    template: no script, the same numbers as the table."""
    periods = list(dict.fromkeys(row.period for row in report.rows))
    series = list(dict.fromkeys(row.groups for row in report.rows))
    colors = {
        key: STATUS_COLORS.get(key[0] or "", PALETTE[i % len(PALETTE)])
        if report.group_by == ("status",)
        else PALETTE[i % len(PALETTE)]
        for i, key in enumerate(series)
    }
    totals: dict[Any, int] = {}
    for row in report.rows:
        totals[row.period] = totals.get(row.period, 0) + row.credits_used
    top = max(totals.values(), default=0) or 1
    left, bottom, top_pad = 60, 30, 10
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    slot = plot_w / max(len(periods), 1)
    bars: list[Bar] = []
    stacked: dict[Any, int] = {}
    for row in report.rows:
        i = periods.index(row.period)
        base = stacked.get(row.period, 0)
        stacked[row.period] = base + row.credits_used
        h = plot_h * row.credits_used / top
        y = top_pad + plot_h - plot_h * (base + row.credits_used) / top
        name = reports.period_label(row.period, report.by) or reports.NO_DATE
        group = " / ".join(g or reports.NONE_LABEL for g in row.groups)
        bars.append(
            Bar(
                x=left + i * slot + slot * 0.1,
                y=y,
                width=max(slot * 0.8, 1.0),
                height=h,
                color=colors[row.groups],
                title=f"{name} {group}: {row.credits_used:,} credits, US${row.usd:,.2f}".replace(
                    "  ", " "
                ),
            )
        )
    ticks = [
        (top_pad + plot_h - plot_h * f, f"{round(top * f):,}") for f in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    step = max(1, math.ceil(LABEL_WIDTH / slot))
    labels = [
        (left + i * slot + slot / 2, reports.period_label(p, report.by) or reports.NO_DATE)
        for i, p in enumerate(periods)
        if i % step == 0
    ]
    legend = [
        (" / ".join(g or reports.NONE_LABEL for g in key), colors[key])
        for key in series
        if report.group_by
    ]
    return Chart(width, height, bars, legend, ticks, labels)


# --- /metrics ------------------------------------------------------------------------


class _Merged(Collector):
    """Several registries' metrics as one exposition: each family once, samples joined."""

    def __init__(self, registries: list[CollectorRegistry], drop: frozenset[str]) -> None:
        self.registries = registries
        self.drop = drop

    def collect(self) -> Any:
        families: dict[str, Metric] = {}
        for registry in self.registries:
            for family in registry.collect():
                if family.name in self.drop:
                    continue
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                merged.samples.extend(family.samples)
        return iter(families.values())


def metrics_text(conn: Connection, now: datetime | None = None) -> bytes:
    """The Prometheus metrics ``--metrics-file`` writes (one set per command that has run),
    built from the newest finished ``sync_runs`` row of each command and the archive's
    health. The detail counters ``sync_runs`` does not keep are left out rather than
    reported as 0."""
    from archiver.stats import STORED_COUNTERS, RunResult, RunStats, counter_fields

    health = health_metrics.read_health(conn, now or datetime.now(UTC))
    registries = []
    for command in health_metrics.COMMANDS:
        row = conn.execute(
            select(sync_runs)
            .where(sync_runs.c.command == command, sync_runs.c.finished_at.is_not(None))
            .order_by(sync_runs.c.started_at.desc(), sync_runs.c.id.desc())
            .limit(1)
        ).first()
        if row is None:
            continue
        result = RunResult(
            run_id=row.run_id,
            command=command,
            stats=RunStats(**{name: int(row._mapping[name] or 0) for name in STORED_COUNTERS}),
            outcome=row.outcome,
            started_at=queries.aware(row.started_at) or datetime.now(UTC),
            finished_at=queries.aware(row.finished_at),
        )
        registries.append(health_metrics.build_registry(result, health))
    drop = frozenset(f"archiver_last_run_{name}" for name, _, kept in counter_fields() if not kept)
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_Merged(registries, drop))
    return generate_latest(combined)
