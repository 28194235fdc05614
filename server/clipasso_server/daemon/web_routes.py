"""The live web page: ``/`` (every job) and ``/jobs/{id}`` (one job), served from the package.

The page is three static files under ``daemon/web/`` (plain HTML, CSS and JavaScript: no build
step, no CDN, nothing fetched from elsewhere). They hold no data, so they load without the
token; everything the page shows comes from the ``/v1`` API, which the page calls on the
daemon's own origin with the token as a Bearer header, under the same checks as any client.
The files are read once when the app is built and answered from memory with an ETag, and a
strict Content-Security-Policy keeps the page to its own origin.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from inkscape_clipasso import protocol

#: what the browser may load: only this origin's own script, style, API and the image blobs
#: the page makes from the (authorised) thumbnail responses
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' blob:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
_ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
    "icon.svg": "image/svg+xml",
}
#: names of the routes that answer without the token (static files that carry no data)
PUBLIC_ROUTES = frozenset({"web-index", "web-job", "web-asset"})
#: sent by the page with every API call: it watches jobs, it does not wait for them, so its
#: reads do not keep a job from being cancelled as abandoned (see JobQueue.cancel_abandoned)
VIEWER_HEADER = "X-Clipasso-Viewer"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


ASSETS = web.AppKey("web_assets", dict)


def load_assets() -> dict[str, Asset]:
    """The page's files from the installed package, each with a content hash as its ETag."""
    folder = resources.files("clipasso_server.daemon") / "web"
    assets = {}
    for name, content_type in _ASSETS.items():
        body = (folder / name).read_bytes()
        assets[name] = Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return assets


def add_web_routes(app: web.Application) -> None:
    """Register the page's routes on ``app`` (the API's own application)."""
    app[ASSETS] = load_assets()
    app.router.add_get("/", index_page, name="web-index")
    app.router.add_get("/jobs/{job_id}", job_page, name="web-job")
    app.router.add_get("/web/{name}", asset, name="web-asset")


def is_public(request: web.Request) -> bool:
    """Whether the request is for one of the page's static files (no token needed)."""
    route = request.match_info.route
    return route.name in PUBLIC_ROUTES


def is_viewer(request: web.Request) -> bool:
    """Whether an API request comes from the page (a watcher, not the job's client)."""
    return request.headers.get(VIEWER_HEADER) == "1"


async def index_page(request: web.Request) -> web.StreamResponse:
    """The list of every job, newest first, and the form for a new one."""
    return _answer(request, "index.html")


async def job_page(request: web.Request) -> web.StreamResponse:
    """One job's page: the same document; the script reads the id from the address."""
    if not protocol.is_job_id(request.match_info["job_id"]):
        raise web.HTTPNotFound()
    return _answer(request, "index.html")


async def asset(request: web.Request) -> web.StreamResponse:
    """The page's script and style sheet."""
    name = request.match_info["name"]
    if name not in _ASSETS or name == "index.html":
        raise web.HTTPNotFound()
    return _answer(request, name)


def _answer(request: web.Request, name: str) -> web.StreamResponse:
    item: Asset = request.app[ASSETS][name]
    headers = {
        "ETag": item.etag,
        # revalidate every time: a new daemon version must never run an old script
        "Cache-Control": "no-cache",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }
    if item.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=item.body, content_type=item.content_type, charset="utf-8", headers=headers
    )
