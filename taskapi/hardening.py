"""Behind a proxy on purpose, with browser-facing defences: ProxyFix, Talisman headers, CORS, limits.

- ProxyFix trusts X-Forwarded-For/-Proto only as deep as TRUSTED_PROXY_COUNT (0: not at all),
  so request.remote_addr (rate-limit key, logs) is the real client and request.is_secure
  tells whether the client used HTTPS (HSTS, FORCE_HTTPS).
- Talisman: HSTS on HTTPS, nosniff, frame denial, no referrer, and a CSP that allows nothing
  for JSON; the /docs page gets one that allows its own assets and its one nonce'd script.
- CORS only for the origins in CORS_ORIGINS (none by default).
"""

from __future__ import annotations

import flask
from flask import Flask
from flask_cors import CORS
from flask_talisman import Talisman
from werkzeug.datastructures import Headers
from werkzeug.middleware.proxy_fix import ProxyFix

from taskapi.limits import init_limiter

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

    def __init__(self, wsgi_app) -> None:  # noqa: ANN001
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):  # noqa: ANN001, ANN204
        environ["HTTP_X_FORWARDED_PROTO"] = environ.get("wsgi.url_scheme", "http")
        return self.wsgi_app(environ, start_response)


class PrecomputedTalisman(Talisman):
    """Talisman, with the headers of every view that has no options of its own (all but the docs
    page) computed once instead of rebuilt from the policy on each response. HSTS depends on
    the request (HTTPS or not), so it is still decided per response."""

    _static: list[tuple[str, str]] | None = None

    def _set_response_headers(self, response):  # noqa: ANN001, ANN202 - Talisman's hook
        view = flask.current_app.view_functions.get(flask.request.endpoint)
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


def init_hardening(app: Flask) -> None:
    """After the blueprints: the limiter and Talisman's per-view options need the view functions."""
    hops = app.config["TRUSTED_PROXY_COUNT"]
    app.wsgi_app = ResolvedProto(app.wsgi_app)
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    talisman = PrecomputedTalisman(
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
    docs = "api-docs.openapi_swagger_ui"
    if docs in app.view_functions:
        render_docs = app.view_functions[docs]  # a bound method: Talisman needs a function to mark

        def docs_page():
            return render_docs()

        app.view_functions[docs] = talisman(content_security_policy=DOCS_CSP,
                                            content_security_policy_nonce_in=["script-src"])(docs_page)
    if app.config["CORS_ORIGINS"]:
        CORS(app, resources={r"/api/*": {"origins": app.config["CORS_ORIGINS"]}}, expose_headers=EXPOSED_HEADERS,
             allow_headers=ALLOWED_HEADERS, methods=["GET", "POST", "PUT", "PATCH", "DELETE"], max_age=600)
    init_limiter(app)
