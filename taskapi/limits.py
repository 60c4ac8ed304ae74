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
import time

from flask import Flask, current_app, g, has_request_context, request
from flask_limiter import Limiter
from limits.storage import RedisStorage

from taskapi.security import PREFIX, verified_subject


class OneTripRedisStorage(RedisStorage):
    """limits' Redis storage, with one round trip per limit instead of three.

    flask-limiter increments a fixed-window counter, then reads the counter and its TTL again
    for the X-RateLimit headers. Here the increment also returns the TTL, and the request's
    later reads of that key are answered from that one reply (kept in `g`, so per request).
    Scheme: `taskapi+redis://…` / `taskapi+rediss://…` (init_limiter adds the prefix).
    """

    STORAGE_SCHEME = ["taskapi+redis", "taskapi+rediss"]
    INCR_TTL = """
local current = redis.call('incrby', KEYS[1], ARGV[2])
if tonumber(current) == tonumber(ARGV[2]) then redis.call('expire', KEYS[1], ARGV[1]) end
return {current, redis.call('ttl', KEYS[1])}
"""

    def __init__(self, uri: str, **options) -> None:  # noqa: ANN003 - limits' signature
        super().__init__(uri.removeprefix("taskapi+"), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_ttl = self.get_connection().register_script(self.INCR_TTL)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        value, ttl = self.lua_incr_ttl([self.prefixed_key(key)], [expiry, amount])
        _replies()[key] = (int(value), time.time() + max(int(ttl), 0))
        return int(value)

    def get(self, key: str) -> int:
        reply = _replies().get(key)
        return reply[0] if reply else super().get(key)

    def get_expiry(self, key: str) -> float:
        reply = _replies().get(key)
        return reply[1] if reply else super().get_expiry(key)


def _replies() -> dict:
    return g.setdefault("_limit_replies", {}) if has_request_context() else {}


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
    app.config["RATELIMIT_STORAGE_URI"] = "taskapi+" + app.config["REDIS_URL"]
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
