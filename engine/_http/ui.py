"""The web UI: a Flow Manager, a flow page (GRAPH, VERSIONS, PERMISSIONS, RUNS, RUN), the
runs table and a run's page, app-wide settings.

Pages are small server-rendered shells; ``app.js`` fills them from the management API
with the administrator token the sign-in page keeps in the browser's session storage.
Nothing is shown or changed before a valid administrator token: the shells hold no
data, and every call the script makes carries the token. The flow graph is drawn by
the Mermaid bundle vendored in ``static/vendor/mermaid``, served from the package.
"""

from __future__ import annotations

import functools
import hashlib
import html
from importlib import resources
from string import Template

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .request import ApiError

__all__ = ["ui_routes"]

_STATIC = {
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "graph-renderer.js": "text/javascript; charset=utf-8",
}
_VENDOR = "vendor/mermaid/mermaid.min.js"  # Mermaid 12.3.0, see vendor/mermaid/README.md
_PAGES = {
    "flows": ("Flow Manager", "flows.html"),
    "flow": ("Flow", "flow.html"),
    "runs": ("Runs", "runs.html"),
    "run": ("Run", "run.html"),
    "settings": ("App-wide permissions", "settings.html"),
    "sign-in": ("Sign in", "sign-in.html"),
}
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
}
# The frame that runs Mermaid: a sandbox with an opaque origin, holding no data and no
# token, that alone may use the inline styles Mermaid draws with. Only this site's
# pages may frame it.
_RENDERER_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; sandbox allow-scripts"
    ),
    "X-Frame-Options": "SAMEORIGIN",
}


def _read(name: str) -> str:
    return resources.files("engine._http.static").joinpath(name).read_text(encoding="utf-8")


@functools.cache
def _vendored() -> tuple[bytes, str]:
    """The Mermaid bundle (read once, on first use: it is large) and its ETag."""
    data = resources.files("engine._http.static").joinpath(_VENDOR).read_bytes()
    return data, f'"{hashlib.sha256(data).hexdigest()[:32]}"'


def ui_routes() -> list[Route]:
    """The routes of the web UI: ``/``, ``/flows/{flow}``, ``/runs``, ``/runs/{run_id}``,
    ``/settings``, ``/sign-in``."""
    layout = Template(_read("page.html"))
    bodies = {page: Template(_read(file)) for page, (_, file) in _PAGES.items()}
    static = {name: _read(name).encode("utf-8") for name in _STATIC}

    def render(request: Request, page: str, flow: str = "", run: str = "") -> Response:
        base = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
        values = {
            "base": base,
            "flow": html.escape(flow, quote=True),
            "run": html.escape(run, quote=True),
        }
        title = flow if page == "flow" else f"Run {run}" if page == "run" else _PAGES[page][0]
        main = bodies[page].safe_substitute(values)
        text = layout.safe_substitute(values, page=page, title=html.escape(title), main=main)
        return HTMLResponse(text, headers=_HEADERS)

    async def flows(request: Request) -> Response:
        return render(request, "flows")

    async def flow(request: Request) -> Response:
        return render(request, "flow", str(request.path_params["flow"]))

    async def runs(request: Request) -> Response:
        return render(request, "runs")

    async def run(request: Request) -> Response:
        return render(request, "run", run=str(request.path_params["run_id"]))

    async def settings(request: Request) -> Response:
        return render(request, "settings")

    async def sign_in(request: Request) -> Response:
        return render(request, "sign-in")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static:
            raise ApiError("not_found", "no such file")
        return Response(
            static[name], media_type=_STATIC[name], headers={"Cache-Control": "no-cache"}
        )

    renderer = Template(_read("graph-renderer.html"))

    async def graph_renderer(request: Request) -> Response:
        base = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
        return HTMLResponse(renderer.safe_substitute(base=base), headers=_RENDERER_HEADERS)

    async def mermaid(request: Request) -> Response:
        data, etag = _vendored()
        headers = {"Cache-Control": "no-cache", "ETag": etag}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=_STATIC["app.js"], headers=headers)

    return [
        Route("/", flows, methods=["GET"]),
        Route("/flows/{flow}", flow, methods=["GET"]),
        Route("/runs", runs, methods=["GET"]),
        Route("/runs/{run_id}", run, methods=["GET"]),
        Route("/settings", settings, methods=["GET"]),
        Route("/sign-in", sign_in, methods=["GET"]),
        Route("/graph-renderer", graph_renderer, methods=["GET"]),
        Route("/static/vendor/mermaid.min.js", mermaid, methods=["GET"]),
        Route("/static/{name}", asset, methods=["GET"]),
    ]
