"""The chat page at ``/``: static files shipped in the package (``api/static``), no build step, no CDN.

Contract: `mount_page(app)` serves ``GET /`` (index.html) and ``GET /static/<file>`` (the page's
script and style sheet) without a key — the page asks for one and sends it to the API itself. Every
response of the page carries `CSP` (scripts, styles and connections from this origin only, no inline
script or style, no frames, no plugins) and ``X-Content-Type-Options: nosniff``; the page talks only
to the public endpoints and shows what they return as text, never as HTML. The routes are not in
the OpenAPI schema.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse

from api.protocol import ErrorResponse

STATIC = Path(__file__).with_name("static")

#: the page's Content-Security-Policy: nothing runs or loads unless it comes from this origin's files
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}
_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


def mount_page(app: FastAPI) -> None:
    """Add the page's routes to `app` (see the module contract)."""

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in _FILES:  # only the page's own files; no path is ever joined from the request
            err = ErrorResponse.make(f"no static file {name!r}", 404)
            return JSONResponse(err.model_dump(), status_code=404)
        return FileResponse(STATIC / name, media_type=_FILES[name], headers=HEADERS)
