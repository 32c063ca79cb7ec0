"""The web inbox's routes: ``GET /inbox`` (the page), ``GET /`` (a redirect to it) and
``GET /inbox/static/{path}`` (its scripts, styles and catalogs).

The files are the project's own, read once at import from the package (no build step, no
CDN) and answered from memory with an ETag: ``Cache-Control: no-cache`` lets the browser keep
them and revalidate with one 304 per file, so a hub upgrade is picked up at the next load
without versioned names. Every answer carries a Content-Security-Policy with no
``unsafe-inline`` (scripts and styles come from files on this origin only, the page may not be
framed) and ``nosniff``: customer text that slipped into markup could still not run.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path
from typing import Final

from aiohttp import web

from hub.openapi import BINARY, operation

routes = web.RouteTableDef()

STATIC_DIR: Final = Path(__file__).parent / "static"
STATIC_PREFIX: Final = "/inbox/static/"
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_TYPES: Final = {".js": "text/javascript", ".css": "text/css", ".json": "application/json",
                 ".html": "text/html", ".svg": "image/svg+xml"}


class StaticFile:
    """One file of ``static/`` as served: its bytes, type and strong ETag."""

    __slots__ = ("body", "content_type", "etag")

    def __init__(self, path: Path) -> None:
        self.body = path.read_bytes()
        self.content_type = (_TYPES.get(path.suffix)
                             or mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


def _load() -> dict[str, StaticFile]:
    """Every file under ``static/`` by its path relative to it: the only names answered, so
    no request path ever reaches the file system."""
    return {p.relative_to(STATIC_DIR).as_posix(): StaticFile(p)
            for p in sorted(STATIC_DIR.rglob("*")) if p.is_file()}


FILES: Final = _load()


def _serve(request: web.Request, found: StaticFile) -> web.Response:
    headers = {**SECURITY_HEADERS, "ETag": found.etag, "Cache-Control": "no-cache"}
    if found.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if found.content_type.startswith(("text/", "application/json")) else None
    return web.Response(body=found.body, content_type=found.content_type, charset=charset,
                        headers=headers)


@routes.get("/")
@operation("The web inbox (a redirect to /inbox)", {302: BINARY}, role=None, tag="web")
async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/inbox", headers=SECURITY_HEADERS)


@routes.get("/inbox")
@operation("The web inbox page (HTML; it signs in and works through this API)", {200: BINARY},
           role=None, tag="web",
           description="Served with a Content-Security-Policy without unsafe-inline and "
                       "frame-ancestors 'none'. The page itself holds no data: it signs in "
                       "with POST /api/v1/auth/login and reads everything through /api/v1.")
async def inbox(request: web.Request) -> web.Response:
    return _serve(request, FILES["index.html"])


@routes.get(STATIC_PREFIX + "{path:.+}")
@operation("The web inbox's scripts, styles and interface catalogs", {200: BINARY, 404: None},
           role=None, tag="web", path_params={"path": "file name under the page's static "
                                                      "directory (e.g. app.js, i18n/zh.json)"},
           description="With an ETag and Cache-Control: no-cache (If-None-Match answers 304).")
async def static(request: web.Request) -> web.Response:
    found = FILES.get(request.match_info["path"])
    if found is None:
        raise web.HTTPNotFound()
    return _serve(request, found)
