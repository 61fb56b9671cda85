"""What every handler of `archiver serve` shares: the settings, the Jinja environment and
the filter menus' cache, as one :class:`Site` kept on the application's ``state``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup
from sqlalchemy import Connection
from starlette.requests import Request
from starlette.responses import HTMLResponse, StreamingResponse

from archiver.blobs import BlobStore
from archiver.escapes import visible
from archiver.store.database import Database
from archiver.web import queries, render

HERE = Path(__file__).parent
#: How long the filter menus' statuses and devices (a full scan of tasks) are reused.
CHOICES_TTL_S = 60.0


@dataclass(frozen=True)
class Settings:
    database: Database
    #: Read blobs under this root instead of the one recorded in artifacts.blob_url.
    blob_root: BlobStore | None
    max_age: timedelta
    token: str | None
    page_size: int = queries.PAGE_SIZE
    #: The --host the view listens on, and the other names it answers to (--allow-host).
    served_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        finalize=_shown,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(render.FILTERS)
    env.globals["query"] = lambda **params: urlencode(
        {k: v for k, v in params.items() if v not in (None, "")}
    )
    return env


def _shown(value: Any) -> Any:
    """Every value a template prints, before it is escaped: control characters and bidi
    overrides written as their escapes (multi-line blocks keep newlines and tabs)."""
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return visible(value, keep_lines=isinstance(value, render.TextBlock))


class Site:
    """One application's shared state (``app.state.site``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database = settings.database
        self.env = _environment()
        #: When the filter menus were read, and what they were.
        self._menus: tuple[float, dict[str, list[str]]] | None = None

    def menus(self, conn: Connection) -> dict[str, list[str]]:
        """The statuses and devices of the filter menus, read again after CHOICES_TTL_S."""
        now = time.monotonic()
        cached = self._menus
        if cached is None or now - cached[0] > CHOICES_TTL_S:
            cached = self._menus = (now, queries.choices(conn))
        return cached[1]

    def page(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.env.get_template(name).render(request=request, **context)
        return HTMLResponse(html, status_code=status_code)

    def stream(self, request: Request, name: str, **context: Any) -> StreamingResponse:
        """A page sent as it is rendered: the parts it reads lazily (a task's events) are
        read, formatted and sent a little at a time, never held whole."""
        pieces = self.env.get_template(name).generate(request=request, **context)
        return StreamingResponse(render.chunked(pieces), media_type="text/html; charset=utf-8")


def site_of(request: Request) -> Site:
    """The :class:`Site` of the application serving ``request``."""
    site: Site = request.app.state.site
    return site
