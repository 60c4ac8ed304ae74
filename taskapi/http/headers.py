"""Headers on every response, and who the client is behind the proxies.

- X-Request-ID: the client's (if sane) or a new one, on every response and log line.
- Cache-Control: no-store and Vary: Authorization on API responses.
- Retry-After only where it belongs (429, 503).

- ProxyFix trusts X-Forwarded-For/-Proto only as deep as TRUSTED_PROXY_COUNT (0: not at all),
  so request.remote_addr (rate-limit key, logs) is the real client and request.is_secure
  tells whether the client used HTTPS (HSTS, FORCE_HTTPS).
- Talisman: HSTS on HTTPS, nosniff, frame denial, no referrer, and a CSP that allows nothing
  for JSON; the /docs page gets one that allows its own assets and its one nonce'd script.
- CORS only for the origins in CORS_ORIGINS (none by default).
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlencode

import flask
from flask import Flask, Response, current_app, g, request
from flask_cors import CORS
from flask_talisman import Talisman
from werkzeug.datastructures import Headers
from werkzeug.http import quote_etag
from werkzeug.middleware.proxy_fix import ProxyFix

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")

JSON_CSP = {"default-src": "'none'", "frame-ancestors": "'none'", "base-uri": "'none'", "form-action": "'none'"}
DOCS_CSP = {"default-src": "'self'", "script-src": "'self'", "style-src": "'self' 'unsafe-inline'",
            "img-src": "'self' data:", "connect-src": "'self'", "frame-ancestors": "'none'",
            "base-uri": "'none'", "form-action": "'none'"}
EXPOSED_HEADERS = ["ETag", "Link", "Location", "Retry-After", "X-Request-ID", "X-RateLimit-Limit",
                   "X-RateLimit-Remaining", "X-RateLimit-Reset", "Idempotent-Replayed", "X-Cache"]
ALLOWED_HEADERS = ["Authorization", "Content-Type", "If-Match", "If-None-Match", "Idempotency-Key", "X-Request-ID"]


class ResolvedProto:
    """Talisman reads X-Forwarded-Proto itself (HSTS, force_https); make the header say what
    ProxyFix decided from the trusted hops, so an untrusted client cannot claim HTTPS."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ["HTTP_X_FORWARDED_PROTO"] = environ.get("wsgi.url_scheme", "http")
        return self.wsgi_app(environ, start_response)


class PrecomputedTalisman(Talisman):
    """Talisman, with the headers of every view that has no options of its own (all but the docs
    page) computed once instead of rebuilt from the policy on each response. HSTS depends on
    the request (HTTPS or not), so it is still decided per response."""

    _static: list[tuple[str, str]] | None = None

    def _set_response_headers(self, response: Response) -> Response:  # Talisman's hook
        view = flask.current_app.view_functions.get(flask.request.endpoint or "")
        if getattr(view, "talisman_view_options", None):
            return super()._set_response_headers(response)
        if self._static is None:
            headers, options = Headers(), self._get_local_options()
            self._set_feature_policy_headers(headers, options)
            self._set_permissions_policy_headers(headers, options)
            self._set_document_policy_headers(headers, options)
            self._set_frame_options_headers(headers, options)
            self._set_content_security_policy_headers(headers, options)
            self._set_referrer_policy_headers(headers)
            self._static = list(headers.items())
        for name, value in self._static:
            response.headers[name] = value
        self._set_hsts_headers(response.headers)
        return response


# Talisman's per-view decorator only marks a view; the app's Talisman (init_security_headers)
# reads the mark. The docs page declares its policy with it (http/api.py).
view_policy = Talisman()


def init_security_headers(app: Flask) -> None:
    """ProxyFix for the trusted hops, Talisman's headers (each view's own policy where it
    declares one) and CORS for CORS_ORIGINS."""
    hops = app.config["TRUSTED_PROXY_COUNT"]
    app.wsgi_app = ResolvedProto(app.wsgi_app)  # type: ignore[method-assign]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    PrecomputedTalisman(
        app,
        force_https=app.config["FORCE_HTTPS"],
        strict_transport_security=True,
        strict_transport_security_max_age=31_536_000,
        strict_transport_security_include_subdomains=True,
        frame_options="DENY",
        content_security_policy=JSON_CSP,
        referrer_policy="no-referrer",
        session_cookie_secure=True,
        x_xss_protection=False,
    )
    if app.config["CORS_ORIGINS"]:
        CORS(app, resources={r"/api/*": {"origins": app.config["CORS_ORIGINS"]}}, expose_headers=EXPOSED_HEADERS,
             allow_headers=ALLOWED_HEADERS, methods=["GET", "POST", "PUT", "PATCH", "DELETE"], max_age=600)


def assign_request_id() -> None:
    supplied = request.headers.get("X-Request-ID", "")
    g.request_id = supplied if REQUEST_ID_RE.fullmatch(supplied) else uuid.uuid4().hex


def add_request_id(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
    return response


def no_store(response: Response) -> Response:
    """API responses are per caller and change often: nothing may be stored by caches."""
    headers = response.headers
    headers.setdefault("Cache-Control", "no-store")
    if "HTTP_AUTHORIZATION" in request.environ:
        vary = headers.get("Vary")
        if not vary:
            headers["Vary"] = "Authorization"
        elif "authorization" not in vary.lower():
            headers["Vary"] = f"{vary}, Authorization"
    return response


def drop_stray_retry_after(response: Response) -> Response:
    """flask-limiter adds Retry-After (its window's reset) to every limited response: it belongs
    on 429 only. A 503 keeps the short dependency value its problem set."""
    if response.status_code == 503 and "dependency_retry_after" in g:
        response.headers["Retry-After"] = g.dependency_retry_after
    elif response.status_code not in (429, 503):
        response.headers.pop("Retry-After", None)
    return response


# --- response headers a view sets -----------------------------------------------------------

def etag_header(tag: str) -> dict[str, str]:
    """`ETag: "<tag>"` (a strong tag; If-Match also accepts its weak form)."""
    return {"ETag": quote_etag(tag)}


def not_modified(tag: str) -> Response:
    """304 for a conditional GET whose If-None-Match still matches: no body, the ETag."""
    response = current_app.response_class(status=304, headers=etag_header(tag))
    response.headers.pop("Content-Type", None)
    return response


def next_link(cursor: str | None) -> dict[str, str]:
    """`Link: <…>; rel="next"` for the same request with the new cursor.

    The target is a relative reference (RFC 8288 resolves it against the request URL), so a
    cached page never sends clients to the host name another client happened to use.
    """
    if cursor is None:
        return {}
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"] + [("cursor", cursor)]
    return {"Link": f'<{request.script_root}{request.path}?{urlencode(args)}>; rel="next"'}
