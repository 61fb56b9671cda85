"""The routes of `archiver serve` that are not pages: ``/`` (to the task list), stored
blobs with Range, the health probe ``/healthz`` and Prometheus ``/metrics``. Each answers
its own errors, in its own format."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from archiver import metrics as health_metrics
from archiver.exceptions import ArchiverError
from archiver.store.artifacts import KINDS
from archiver.web import blobserve, queries, render
from archiver.web.guard import BLOB_CSP
from archiver.web.params import BadRequest, max_age
from archiver.web.site import site_of


def home(request: Request) -> Response:
    return RedirectResponse("/tasks", status_code=302)


def blob(request: Request) -> Response:
    """A stored recording or downloads archive: ``/blob/<kind>?task=<id>``."""
    kind = request.path_params["kind"]
    task_id = request.query_params.get("task", "")
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
    return _send(request, kind, blobserve.media_type(found.content_type), opened)


def _send(request: Request, kind: str, ctype: str, opened: blobserve.OpenBlob) -> Response:
    """The blob's bytes (or the ``Range`` asked for) as a download, or played in the page
    when it is a recording of a media type a ``<video>`` can show."""
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
