"""Read-your-writes response cache for task lists and stats (flask-caching, Redis backend).

Keys: taskapi:cache:{kind}:{uid}:{generation}:{digest of the normalised query}. The
generation is `taskapi:cgen:{uid}` in the main Redis; every successful task write bumps it,
so a user's next read, on any worker, misses the old entries (which expire by TTL). The
generation is fetched in the same pipelined round trip as the token's revocation check.
Global (admin) stats are keyed without a user and are stale by at most the TTL.

The cache is an optimisation: if its Redis fails, reads go to MongoDB, and for a few seconds
this process does not try the cache again (no timeout paid on every request).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from typing import Any

import orjson
import redis
from flask import Flask, current_app, g, request
from flask_caching import Cache

from taskapi.extensions import get_redis
from taskapi.security import PREFIX, current_user_id, key_cache_generation

log = logging.getLogger("taskapi.cache")
cache = Cache()


def init_cache(app: Flask) -> None:
    timeout = app.config["REDIS_TIMEOUT_SECONDS"]
    cache.init_app(app, config={
        "CACHE_TYPE": "RedisCache",
        "CACHE_REDIS_URL": app.config["CACHE_REDIS_URL"],
        "CACHE_DEFAULT_TIMEOUT": app.config["CACHE_TTL_SECONDS"],
        "CACHE_KEY_PREFIX": f"{PREFIX}cache:",
        "CACHE_OPTIONS": {"socket_timeout": timeout, "socket_connect_timeout": timeout},
    })


def generation(user_id: str) -> int:
    """The user's cache generation: from the token check's pipeline when it ran, else one GET."""
    if "cache_generation" not in g:
        g.cache_generation = int(get_redis().get(key_cache_generation(user_id)) or 0)
    return g.cache_generation


def bump(user_id: str) -> None:
    """After a successful write: the user's cached reads are stale from now on.

    Best effort: the write has happened and must be reported as such. If Redis fails right
    here, every authenticated request fails closed until it is back.
    """
    try:
        get_redis().incr(key_cache_generation(user_id))
    except redis.RedisError as exc:
        log.error("cache generation not bumped for user %s (%s)", user_id, exc.__class__.__name__)
    g.pop("cache_generation", None)


def make_key(kind: str, owner: str | None, query: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(query, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:32]
    if owner is None:
        return f"{kind}:global:{digest}"
    return f"{kind}:{owner}:{generation(owner)}:{digest}"


def enabled() -> bool:
    skip_until = current_app.extensions.get("cache_skip_until", 0.0)
    return current_app.config["CACHE_TTL_SECONDS"] > 0 and time.monotonic() >= skip_until


def get(key: str) -> Any:
    if not enabled():
        return None
    try:
        return cache.get(key)
    except redis.RedisError as exc:
        _trip(exc)
        return None


def put(key: str, value: Any) -> None:
    if not enabled():
        return
    try:
        cache.set(key, value)
    except redis.RedisError as exc:
        _trip(exc)


def _trip(exc: Exception) -> None:
    pause = current_app.config["CACHE_RETRY_SECONDS"]
    current_app.extensions["cache_skip_until"] = time.monotonic() + pause
    log.warning("cache unavailable (%s); reading from MongoDB for %s s", exc.__class__.__name__, pause)


def cached_json(kind: str, owner: str | None, query: dict[str, Any], compute):
    """A JSON response from the cache, or computed (a dumped dict) and cached; `X-Cache` says which."""
    key = make_key(kind, owner, query)
    body = get(key)
    if body is not None:
        return json_response(body, "HIT")
    body = orjson.dumps(compute())
    put(key, body)
    return json_response(body, "MISS")


def json_response(body: bytes, state: str, headers: dict[str, str] | None = None):
    """A JSON response from (cached) bytes, with `X-Cache: HIT|MISS`."""
    response = current_app.response_class(body, mimetype="application/json")
    response.headers.update(headers or {})
    response.headers["X-Cache"] = state
    return response


def cache_first(kind: str):
    """A view decorator (below the token check, above argument parsing): answer from the cache
    before anything is parsed; on a miss, run the view and cache its 200 answer.

    The key is the user, their generation and the sorted raw query arguments: the same raw
    arguments always parse to the same query, and only successful answers are stored, so a
    hit never skips a validation that would have failed.
    """
    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            # Sorted by name only: a repeated parameter keeps its order (webargs reads the first).
            raw = sorted(request.args.items(multi=True), key=lambda item: item[0])
            key = make_key(kind, current_user_id(), {"args": raw})
            hit = get(key)
            if hit is not None:
                body, extra = hit
                return json_response(body, "HIT", extra)
            response = current_app.make_response(view(*args, **kwargs))
            if response.status_code == 200:
                extra = {name: response.headers[name] for name in ("Link",) if name in response.headers}
                put(key, (response.get_data(), extra))
            response.headers["X-Cache"] = "MISS"
            return response

        return wrapper

    return decorator
