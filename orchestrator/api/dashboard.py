"""The monitoring page: a login form, a cookie, the page (run list and run view) and its headers.

A browser cannot send ``Authorization``, and a key in the URL ends up in access logs, history
and Referers, so the page is opened by a login form: the key is POSTed once, checked (a monitor
or admin key), and kept in an ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other
site's page sends it) cookie for eight hours; ``Secure`` when the request came over HTTPS.
The API honours that cookie on ``GET`` requests only, so it can read but never act: a cross-site
form cannot submit, cancel or resume with it even where ``SameSite`` is not enforced.
``/dashboard?key=...`` (the old way) redirects to ``/dashboard`` and sets nothing: the key is
dropped from the address bar and the login form asks for it.

Every response here carries a strict CSP (scripts and styles only with this response's nonce,
requests to this origin only, no framing), ``X-Frame-Options: DENY`` and
``Referrer-Policy: no-referrer``. A missing, wrong, revoked or too weak key gets the login form
(401), never an error body or a trace.
"""

from __future__ import annotations

import secrets
from importlib import resources as package_files

from flask import Response, current_app, redirect, request
from flask_openapi3 import APIBlueprint, Tag
from markupsafe import escape
from pydantic import BaseModel, Field
from werkzeug.wrappers import Response as WerkzeugResponse

from orchestrator.auth import Principal, Scope, authenticate
from orchestrator.errors import Unauthorized

api = APIBlueprint("dashboard", __name__, abp_tags=[Tag(name="dashboard")], doc_ui=False)

#: The cookie the login form sets; its value is the key (HttpOnly: no script can read it).
COOKIE = "orch_dashboard"
COOKIE_MAX_AGE_S = 8 * 3600
#: Keys that may open the page.
PAGE_SCOPES = {Scope.MONITOR, Scope.ADMIN}
#: The endpoints that authenticate themselves (the login form must be reachable without a key).
ENDPOINTS = {"dashboard.page", "dashboard.run_page", "dashboard.login", "dashboard.logout"}


class RunPath(BaseModel):
    execution_id: str = Field(max_length=64)


def cookie_header() -> str | None:
    """``Bearer <key>`` from the dashboard cookie, for a ``GET`` with no ``Authorization``."""
    key = request.cookies.get(COOKIE)
    return f"Bearer {key}" if key else None


def _principal() -> Principal | None:
    """The key behind the header or the cookie, if it may open the page."""
    header = request.headers.get("Authorization") or cookie_header()
    if not header:
        return None
    try:
        principal = authenticate(current_app.extensions["orchestrator"].db, header)
    except Unauthorized:
        return None
    return principal if principal.scope in PAGE_SCOPES else None


def _static(name: str) -> str:
    return (package_files.files("orchestrator") / "static" / name).read_text()


def _secured(body: str, status: int = 200) -> Response:
    """``body`` (with ``{{nonce}}`` filled in) and the headers every page here carries."""
    nonce = secrets.token_urlsafe(16)
    response = Response(body.replace("{{nonce}}", nonce), status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def _login_form(message: str = "", status: int = 401) -> Response:
    target = request.path if request.path.startswith("/dashboard/runs/") else "/dashboard"
    page = _static("login.html").replace("{{message}}", str(escape(message)))
    return _secured(page.replace("{{next}}", str(escape(target))), status)


def _page() -> Response | WerkzeugResponse:
    if "key" in request.args:  # the old /dashboard?key=...: drop it from the URL, set nothing
        return redirect(request.path, code=303)
    if _principal() is None:
        had_key = bool(request.headers.get("Authorization") or request.cookies.get(COOKIE))
        return _login_form("That key is unknown, revoked or not a monitor key." if had_key else "")
    return _secured(_static("dashboard.html"))


@api.get("/dashboard")
def page() -> Response | WerkzeugResponse:
    """The monitoring page: quotas, capacity, workers and the run list, with filters."""
    return _page()


@api.get("/dashboard/runs/<execution_id>")
def run_page(path: RunPath) -> Response | WerkzeugResponse:
    """One run: its stages' live state, time and cost against the estimate, errors,
    deliverables (the same page, drawn for the run in the path)."""
    return _page()


@api.post("/dashboard/login")
def login() -> Response | WerkzeugResponse:
    """Check a monitor or admin key posted by the form and keep it in the page's cookie."""
    key = (request.form.get("key") or "").strip()
    target = request.form.get("next") or "/dashboard"
    if not target.startswith("/dashboard") or "//" in target or "\\" in target:
        target = "/dashboard"  # never an open redirect
    try:
        principal = authenticate(current_app.extensions["orchestrator"].db, f"Bearer {key}")
    except Unauthorized:
        return _login_form("That key is unknown or revoked.")
    if principal.scope not in PAGE_SCOPES:
        return _login_form("The dashboard needs a monitor or admin key.")
    response = redirect(target, code=303)
    response.set_cookie(
        COOKIE,
        key,
        max_age=COOKIE_MAX_AGE_S,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@api.post("/dashboard/logout")
def logout() -> WerkzeugResponse:
    """Forget the cookie."""
    response = redirect("/dashboard", code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
    return response
