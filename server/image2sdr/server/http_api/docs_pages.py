"""/docs (Swagger UI) and /redoc (ReDoc) over /openapi.json, their scripts and styles served from the package."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

__all__ = ["DOCS_ASSETS", "add_docs"]

# Swagger UI's and ReDoc's scripts and styles, as fastapi-offline ships them (no CDN: the
# docs work with no network). Served under /static/ like the page's own files, which need
# no token: a browser cannot add one to a <script> it loads.
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
_DOCS_ASSETS_URL = "/static/docs"


def add_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc (ReDoc) over /openapi.json, their files served from the package."""
    app.add_api_route("/docs", _swagger_ui, methods=["GET"], name="docs", include_in_schema=False)
    app.add_api_route("/redoc", _redoc, methods=["GET"], name="redoc", include_in_schema=False)
    app.mount(_DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")


def _swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{_DOCS_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{_DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{_DOCS_ASSETS_URL}/favicon.png",
    )


def _redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{_DOCS_ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{_DOCS_ASSETS_URL}/favicon.png",
        with_google_fonts=False,  # fonts from Google are a network fetch too
    )
