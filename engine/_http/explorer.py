"""The interactive API explorer at ``/docs``: Swagger UI over ``/openapi.json``.

Every file comes from the package itself (Swagger UI is vendored under
``static/vendor/swagger-ui``), so the explorer works on a machine that is offline and
never makes the browser ask another origin for anything. Like the document, it needs
no token: it shows what the API is, and every call tried from it carries the bearer
token the visitor types into its *Authorize* dialog.
"""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from string import Template

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .request import ApiError

__all__ = ["CONTENT_SECURITY_POLICY", "explorer_routes"]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""The web UI's policy: same-origin scripts, styles, images and requests only."""

_VENDOR = "vendor/swagger-ui/"
_FILES = {
    "swagger-ui-bundle.js": (_VENDOR, "text/javascript; charset=utf-8"),
    "swagger-ui.css": (_VENDOR, "text/css; charset=utf-8"),
    "favicon-32x32.png": (_VENDOR, "image/png"),
    "LICENSE": (_VENDOR, "text/plain; charset=utf-8"),
    "explorer.js": ("", "text/javascript; charset=utf-8"),
}


@cache
def _read(name: str) -> bytes:
    """A file of the package's static folder, read on first use (the bundle is large)."""
    return resources.files("engine._http.static").joinpath(name).read_bytes()


def explorer_routes() -> list[Route]:
    """``/docs`` and the files it loads, ``/docs/{name}``."""

    async def page(request: Request) -> Response:
        base = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
        text = Template(_read("docs.html").decode("utf-8")).safe_substitute(base=base)
        headers = {"Cache-Control": "no-cache", "Content-Security-Policy": CONTENT_SECURITY_POLICY}
        return HTMLResponse(text, headers=headers)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _FILES:
            raise ApiError("not_found", "no such file")
        folder, media_type = _FILES[name]
        return Response(
            _read(folder + name), media_type=media_type, headers={"Cache-Control": "no-cache"}
        )

    return [
        Route("/docs", page, methods=["GET"]),
        Route("/docs/{name}", asset, methods=["GET"]),
    ]
