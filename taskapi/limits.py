"""Rate limits (flask-limiter on Redis, shared by every worker and instance).

Keys: the user id when the request carries a token that verified completely (signature,
expiry and revocation, once per request: a forged or old token cannot spend someone else's
budget), else the client IP as
ProxyFix resolved it from TRUSTED_PROXY_COUNT hops (a client cannot spoof it). Login is
limited per IP and per IP + email, registration per IP, a password change per IP and per
account; every identity also has one overall budget (RATELIMIT_DEFAULT).
If Redis cannot be reached, flask-limiter counts in this process's memory instead: limits
are never switched off.
"""

from __future__ import annotations

import hashlib

from flask import Flask, current_app, g, request
from flask_limiter import Limiter

from taskapi.security import PREFIX, verified_subject


def client_ip() -> str:
    return request.remote_addr or "unknown"


def identity() -> str:
    """`user:<id>` for a token that verified completely (signature, expiry, revocation), else
    `ip:<client ip>`: a forged, expired or logged-out token spends its sender's budget."""
    if "limit_identity" not in g:
        subject = verified_subject()
        g.limit_identity = f"user:{subject}" if subject else f"ip:{client_ip()}"
    return g.limit_identity


def ip_and_email() -> str:
    """Login attempts per account from one IP (the email comes from the gated JSON body)."""
    body = g.get("json_body") or {}
    email = body.get("email") if isinstance(body.get("email"), str) else ""
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:24]
    return f"ip:{client_ip()}:email:{digest}"


def ip_and_identity() -> str:
    return f"ip:{client_ip()}:{identity()}"


def login_rate() -> str:
    return current_app.config["RATELIMIT_LOGIN"]


def login_account_rate() -> str:
    return current_app.config["RATELIMIT_LOGIN_ACCOUNT"]


def register_rate() -> str:
    return current_app.config["RATELIMIT_REGISTER"]


# endpoint -> (rate, key) pairs, on top of the per-identity budget every route has.
ROUTE_LIMITS = {
    "auth.login": [(login_rate, client_ip), (login_account_rate, ip_and_email)],
    "auth.register": [(register_rate, client_ip)],
    "auth.change_password": [(login_rate, client_ip), (login_account_rate, ip_and_identity)],
}
# Probes, metrics and the docs are never limited (load balancers poll them).
EXEMPT_BLUEPRINTS = ("ops", "docs_assets", "api-docs")
EXEMPT_ENDPOINTS = ("metrics",)


def init_limiter(app: Flask) -> Limiter:
    """A limiter per app (its storage is per instance), with the route table applied."""
    timeout = app.config["REDIS_TIMEOUT_SECONDS"]
    app.config["RATELIMIT_APPLICATION"] = app.config["RATELIMIT_PER_IDENTITY"]
    app.config["RATELIMIT_STORAGE_URI"] = app.config["REDIS_URL"]
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    limiter = Limiter(key_func=identity, headers_enabled=True, in_memory_fallback_enabled=True,
                      strategy="fixed-window", key_prefix=f"{PREFIX}rl")
    limiter.init_app(app)
    for endpoint, rules in ROUTE_LIMITS.items():
        view = app.view_functions[endpoint]
        for rate, key in rules:
            view = limiter.limit(rate, key_func=key)(view)  # decorated limits are checked by the wrapper
        app.view_functions[endpoint] = view
    for name in EXEMPT_BLUEPRINTS:
        if name in app.blueprints:
            limiter.exempt(app.blueprints[name])
    for endpoint in EXEMPT_ENDPOINTS:
        limiter.exempt(app.view_functions[endpoint])
    app.extensions["taskapi_limiter"] = limiter
    return limiter
