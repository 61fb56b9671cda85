"""The routes of `archiver serve` that are not pages: ``/`` (to the task list), stored
blobs with Range, the health probe ``/healthz`` and Prometheus ``/metrics``. Each answers
its own errors, in its own format."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.types import Receive, Scope, Send

from archiver import metrics as health_metrics
from archiver.exceptions import ArchiverError
from archiver.store.artifacts import KINDS
from archiver.web import blobserve, params, queries, render
from archiver.web.guard import BLOB_CSP
from archiver.web.params import BadRequest, max_age
from archiver.web.site import site_of


def home(request: Request) -> Response:
    return RedirectResponse("/tasks", status_code=302)


def blob(request: Request) -> Response:
    """A stored recording or downloads archive: ``/blob/<kind>?task=<id>``."""
    kind = request.path_params["kind"]
    task_id = params.text(request, "task")
    if kind not in KINDS or not task_id:
        return PlainTextResponse("no such blob\n", status_code=404)
    site = site_of(request)
    with site.database.reading() as conn:
        found = queries.stored_blob(conn, task_id, kind)
    if found is None:
        return PlainTextResponse(
            f"the {kind} of this task is not stored in the archive\n", status_code=404
        )
    try:
        opened = blobserve.open_blob(found.blob_url, site.settings.blob_root)
    except ArchiverError as exc:
        return PlainTextResponse(render.safe_message(str(exc)) + "\n", status_code=404)
    try:
        return _send(request, kind, found.content_type, opened, request.headers.get("range"))
    except BaseException:
        opened.handle.close()
        raise


def _send(
    request: Request,
    kind: str,
    content_type: str | None,
    opened: blobserve.OpenBlob,
    range_header: str | None,
) -> Response:
    """The blob's bytes (or the ``Range`` asked for) as a download, or played in the page
    when it is a recording of a media type a ``<video>`` can show."""
    ctype, inline = blobserve.served_type(kind, content_type)
    disposition = "inline" if inline else "attachment"
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'{disposition}; filename="{kind}.{opened.extension}"',
        "Content-Security-Policy": BLOB_CSP,
        "Cache-Control": "private, max-age=3600",
    }
    try:
        span = blobserve.parse_range(range_header, opened.size)
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
    return ClosingStream(
        opened.handle,
        blobserve.read_span(opened.handle, first, length),
        status_code=status,
        headers=headers,
        media_type=ctype,
    )


class ClosingStream(StreamingResponse):
    """A streamed blob whose reader is closed as soon as the response ends, also when
    the client goes away mid-transfer (the iterator alone would wait for the garbage
    collector, keeping the file or the S3 connection open)."""

    def __init__(self, handle: IO[bytes], content: Iterator[bytes], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.handle.close()


def full_json(request: Request) -> Response:
    """The whole JSON of a task's output (``/json/output?task=``) or of an event's payload
    or other fields (``/json/payload?task=&event=``), as a streamed download: a page
    shows only their beginning."""
    part = request.path_params["part"]
    task_id = params.text(request, "task")
    event = params.text(request, "event")
    if part not in queries.JSON_PARTS or not task_id:
        return PlainTextResponse("no such JSON value\n", status_code=404)
    event_id = None
    if part != "output":
        if not event or not (event.isascii() and event.isdigit()) or len(event) > 18:
            raise BadRequest("event is not an event of this task: open it from the task page.")
        event_id = int(event)
    with site_of(request).database.reading() as conn:
        found = queries.json_value(conn, part, task_id, event_id)
    if found is None:
        return PlainTextResponse("no such task or event in the archive\n", status_code=404)
    return StreamingResponse(
        render.json_download(*found),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{part}.json"',
            "Content-Security-Policy": BLOB_CSP,
        },
    )


def healthz(request: Request) -> Response:
    """The archive's health as JSON: 200 when fresh, 503 when stale or unreadable."""
    try:
        limit = max_age(request)
    except BadRequest as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    try:
        with site_of(request).database.reading() as conn:
            facts = health_metrics.read_health(conn)
    except ArchiverError as exc:
        return JSONResponse({"status": "error", "error": str(exc)}, status_code=503)
    stale = facts.is_stale(limit)
    body = {
        "status": "stale" if stale else "ok",
        **facts.as_dict(),
        "max_age_s": limit.total_seconds(),
    }
    return JSONResponse(body, status_code=503 if stale else 200)


def prometheus(request: Request) -> Response:
    """What ``--metrics-file`` writes, for each command's newest finished pass."""
    try:
        with site_of(request).database.reading() as conn:
            health = health_metrics.read_health(conn)
            runs = queries.last_finished_runs(conn, health_metrics.COMMANDS)
    except ArchiverError as exc:
        return PlainTextResponse(f"# archive unavailable: {exc}\n", status_code=503)
    text = health_metrics.metrics_text(runs, health)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")
