"""Rate limits (flask-limiter on Redis, shared by every worker and instance).

Declared on the view: `@blp.limit(login_rate, key=client_ip)` (http/blueprint.py) adds a
limit of that route on top of every identity's overall budget (RATELIMIT_PER_IDENTITY);
`exempt_from_rate_limits = True` on a view or a Blueprint object exempts it (probes, docs,
metrics: load balancers poll them).

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

import functools
import hashlib
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g, has_request_context, request
from flask_limiter import Limiter
from limits.storage import RedisStorage

from taskapi.extensions import PREFIX
from taskapi.http.auth import verified_subject

Rate = Callable[[], str]
Key = Callable[[], str]


class OneTripRedisStorage(RedisStorage):
    """limits' Redis storage, with one round trip per limit instead of three.

    flask-limiter increments a fixed-window counter, then reads the counter and its TTL again
    for the X-RateLimit headers. Here the increment also returns the TTL, and the request's
    later reads of that key are answered from that one reply (kept in `g`, so per request).
    Scheme: `taskapi+redis://…`, with the main Redis client's connection pool (init_limiter).
    """

    STORAGE_SCHEME = ["taskapi+redis", "taskapi+rediss"]
    INCR_TTL = """
local current = redis.call('incrby', KEYS[1], ARGV[2])
if tonumber(current) == tonumber(ARGV[2]) then redis.call('expire', KEYS[1], ARGV[1]) end
return {current, redis.call('ttl', KEYS[1])}
"""

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri.removeprefix("taskapi+"), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_ttl = self.get_connection().register_script(self.INCR_TTL)  # type: ignore[arg-type]

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


def _replies() -> dict[str, Any]:
    return g.setdefault("_limit_replies", {}) if has_request_context() else {}


def client_ip() -> str:
    return request.remote_addr or "unknown"


def identity() -> str:
    """`user:<id>` for a token that verified completely (signature, expiry, revocation), else
    `ip:<client ip>`: a forged, expired or logged-out token spends its sender's budget."""
    if "limit_identity" not in g:
        subject = verified_subject()
        g.limit_identity = f"user:{subject}" if subject else f"ip:{client_ip()}"
    return str(g.limit_identity)


def ip_and_email() -> str:
    """Login attempts per account from one IP (the email comes from the gated JSON body)."""
    body = g.get("json_body") or {}
    email = body.get("email")
    email = email if isinstance(email, str) else ""
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:24]
    return f"ip:{client_ip()}:email:{digest}"


def ip_and_identity() -> str:
    return f"ip:{client_ip()}:{identity()}"


def email_alone() -> str:
    """Password-reset requests per address, whatever the IP (every address alike: it tells nothing)."""
    body = g.get("json_body") or {}
    email = body.get("email")
    email = email if isinstance(email, str) else ""
    return "reset-email:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:24]


def reset_address_rate() -> str:
    return str(current_app.config["RATELIMIT_PASSWORD_RESET_ADDRESS"])


def login_rate() -> str:
    return str(current_app.config["RATELIMIT_LOGIN"])


def login_account_rate() -> str:
    return str(current_app.config["RATELIMIT_LOGIN_ACCOUNT"])


def register_rate() -> str:
    return str(current_app.config["RATELIMIT_REGISTER"])


def declare_limit(view: Callable[..., Any], rate: Rate, key: Key) -> Callable[..., Any]:
    """Give `view` a rate limit of its own (http/blueprint.py's `limit`): a guard that, before
    the view runs, spends one request of `key()`'s budget under `rate()` in this app's limiter."""
    declared = getattr(view, "rate_limits", None)
    if declared is not None:  # one guard checks every limit of the view
        declared.insert(0, (rate, key))  # decorators apply bottom-up: keep the order they read in
        return view
    name = f"{view.__module__}.{view.__qualname__}.rate_limits"

    @functools.wraps(view)
    def limited(*args: Any, **kwargs: Any) -> Any:
        current_app.extensions["taskapi_route_limits"][name]()  # 429 when spent
        return view(*args, **kwargs)

    limited.rate_limits = [(rate, key)]  # type: ignore[attr-defined]
    limited.rate_limit_name = name  # type: ignore[attr-defined]
    return limited


def init_limiter(app: Flask) -> Limiter:
    """A limiter per app (its storage is per instance): every identity's overall budget, the
    limits the views declare, and the exemptions the views and blueprints declare."""
    app.config["RATELIMIT_APPLICATION"] = app.config["RATELIMIT_PER_IDENTITY"]
    # The counters live in the main Redis, through its own connection pool (and so, with a
    # Sentinel URL, on whichever server is the master now).
    app.config["RATELIMIT_STORAGE_URI"] = "taskapi+redis://main"
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"connection_pool": app.extensions["redis"].connection_pool}
    limiter = Limiter(key_func=identity, headers_enabled=True, in_memory_fallback_enabled=True,
                      strategy="fixed-window", key_prefix=f"{PREFIX}rl")
    limiter.init_app(app)
    checks = app.extensions["taskapi_route_limits"] = {}
    view: Any
    for view in app.view_functions.values():
        if getattr(view, "exempt_from_rate_limits", False):
            limiter.exempt(view)
        if hasattr(view, "rate_limits") and view.rate_limit_name not in checks:
            checks[view.rate_limit_name] = _route_check(limiter, view.rate_limit_name, view.rate_limits)
    for blueprint in app.blueprints.values():
        if getattr(blueprint, "exempt_from_rate_limits", False):
            limiter.exempt(blueprint)  # type: ignore[call-overload]
    app.extensions["taskapi_limiter"] = limiter
    return limiter


def _route_check(limiter: Limiter, name: str, rules: list[tuple[Rate, Key]]) -> Callable[[], None]:
    """flask-limiter's way to limit a callable that is not the view itself: decorate it. The
    callable does nothing; calling it spends the request's share of each of its limits."""
    def check() -> None:
        return None

    check.__module__, _, check.__name__ = name.rpartition(".")
    check.__qualname__ = check.__name__
    for rate, key in rules:
        check = limiter.limit(rate, key_func=key)(check)
    return check
