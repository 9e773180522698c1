"""The console's routes on the admin API: the page, its static files, the live feed and the dry run.

``register_console(app, ops)`` is called by ``AdminApi.app()``; errors raised here (``BadRequestError``,
``CommandRefusedError``) go through the admin API's one error table.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from runtime.adapters.console.feed import Feed
from runtime.adapters.scripting.engine import build_solution_scripts
from runtime.core.errors import CommandRefusedError
from runtime.services.commands import BadRequestError, Operations
from runtime.services.dryrun import DryRunMessage, run_dry

_STATIC = resources.files(__package__).joinpath("static")
_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".png": "image/png",
          ".svg": "image/svg+xml"}
# Everything the page loads comes from this server; no inline script, no framing, no referrer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type), read once: only these names are served (no paths, no traversal)."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in _STATIC.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _TYPES:
            files[entry.name] = (entry.read_bytes(), _TYPES[suffix])
    return files


class ConsoleRoutes:
    def __init__(self, ops: Operations) -> None:
        self._ops = ops
        self._files = _static_files()
        self.feed = Feed(ops)

    def _file(self, name: str) -> web.Response:
        found = self._files.get(name)
        if found is None:
            raise web.HTTPNotFound()
        body, ctype = found
        return web.Response(body=body, content_type=ctype, charset="utf-8" if ctype.startswith("text") else None,
                            headers=SECURITY_HEADERS)

    async def page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    async def pipeline_test(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            raise BadRequestError("bad_json", f"the body is not valid JSON: {exc}") from None
        message = DryRunMessage.from_json(body)
        loaded = self._ops.runtime.loaded
        if loaded is None:
            raise CommandRefusedError("no_solution", f"no solution is loaded (the instance is "
                                      f"{self._ops.runtime.state.value}); use nuviot-runtime test-message with the file")
        scripts = build_solution_scripts(loaded.doc)  # a fresh copy: the live engines' globals stay untouched
        answer = run_dry(loaded.doc, scripts, self._ops.devices.get, message)
        answer["solution"] = {"key": loaded.doc.solution.key, "version": loaded.doc.solution.version}
        answer["instanceState"] = self._ops.runtime.state.value
        return web.Response(body=orjson.dumps(answer), content_type="application/json")


def register_console(app: web.Application, ops: Operations) -> ConsoleRoutes:
    routes = ConsoleRoutes(ops)
    app.router.add_get("/ui", routes.page)
    app.router.add_get("/ui/", routes.page)
    app.router.add_get("/ui/static/{name}", routes.static)
    app.router.add_get("/feed", routes.feed.handle)
    app.router.add_post("/pipeline/test", routes.pipeline_test)
    app.on_shutdown.append(routes.feed.on_shutdown)
    return routes
