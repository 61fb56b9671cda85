"""The ASGI application of `archiver serve`: server-rendered pages over a read-only archive.

Routes: ``/tasks`` (list), ``/task?id=`` (one task), ``/blob/<kind>?task=`` (a stored
recording or downloads archive, with Range), ``/costs``, ``/health``, ``/healthz``,
``/metrics``, ``/json/<part>?task=`` (an output or event payload as a JSON download) and
``/static/``. Task ids go in the query string, never in the path, so an
id with ``/`` or ``..`` in it cannot be rewritten by a browser's path normalisation.

The pages are in :mod:`archiver.web.pages`, the other routes in
:mod:`archiver.web.endpoints`; what they share (settings, database, templates) is the
:class:`~archiver.web.site.Site` on ``app.state.site``. A page's bad query parameter
(:class:`~archiver.web.params.BadRequest`) is answered 400 and an unreadable archive 503
by the application's exception handlers. :class:`~archiver.web.guard.Guard` wraps it
all: the token or Host check, and the security headers.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from archiver.exceptions import ArchiverError
from archiver.web import endpoints, pages
from archiver.web.guard import Guard
from archiver.web.params import BadRequest
from archiver.web.site import HERE, Settings, Site


def routes() -> list[BaseRoute]:
    return [
        Route("/", endpoints.home),
        Route("/tasks", pages.task_list),
        Route("/task", pages.task),
        Route("/blob/{kind}", endpoints.blob, methods=["GET", "HEAD"]),
        Route("/json/{part}", endpoints.full_json),
        Route("/costs", pages.costs),
        Route("/health", pages.health),
        Route("/healthz", endpoints.healthz),
        Route("/metrics", endpoints.prometheus),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]


def create_app(settings: Settings) -> Guard:
    app = Starlette(
        routes=routes(),
        exception_handlers={BadRequest: pages.bad_request, ArchiverError: pages.unavailable},
    )
    # The Guard redirects /path/ to /path itself, by a relative link: Starlette's own
    # redirect names the Host header's host.
    app.router.redirect_slashes = False
    app.state.site = Site(settings)
    return Guard(
        app,
        settings.token,
        served_host=settings.served_host,
        allowed_hosts=settings.allowed_hosts,
    )


__all__ = ["Settings", "create_app"]
