"""The dashboard at ``/dashboard/``: one HTML page, one script and one style sheet, shipped as
package data and served as they are (no build step, nothing fetched from elsewhere).  The page
is public; everything it shows comes from the token-checked ``/volley/v1`` routes
(``routes/overview.py``), called by the script with the token the user pasted.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

router = APIRouter(include_in_schema=False)

# Only this origin's own files and JSON; no inline script, so text that slipped into the DOM as
# markup still could not run, and no framing (clickjacking).
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
FILES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


@cache
def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def _file(name: str) -> Response:
    return Response(_read(name), media_type=FILES[name], headers=HEADERS)


@router.get("/dashboard")
def dashboard_redirect() -> RedirectResponse:
    # relative, so that a service behind a path prefix redirects within it
    return RedirectResponse("dashboard/", status_code=308)


@router.get("/dashboard/")
def dashboard_page() -> Response:
    return _file("index.html")


@router.get("/dashboard/dashboard.js")
def dashboard_script() -> Response:
    return _file("dashboard.js")


@router.get("/dashboard/dashboard.css")
def dashboard_style() -> Response:
    return _file("dashboard.css")
