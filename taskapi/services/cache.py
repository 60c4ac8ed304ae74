"""Read-your-writes response cache for task lists and stats, in a Redis of its own.

Values are JSON bytes, never pickles: whoever can write to the cache's Redis can at most
make a client see a wrong page, never run code here.

One Redis hash per user, `taskapi:cache:{uid}`, holds all of that user's entries:
  #gen                   the cache generation the entries were computed in
  #bytes                 the size of the entries
  {kind}:{digest}        one response: the digest is of the *validated* query, so equivalent
                         query strings (`limit=100&limit=5`, `tag=Home`, `tag=home`) share it
The generation is `taskapi:cgen:{uid}` in the main Redis; every successful task write
increments it, and it is read in the same round trip as the token check. A read hits only
when the hash's #gen is the caller's. A store into a hash of an older generation starts it
afresh; a store computed in an older generation (a read that raced a write) is dropped, so a
client always reads its own writes. A hash holds at most CACHE_MAX_ENTRIES_PER_USER entries
and CACHE_MAX_BYTES_PER_USER bytes (a store past either starts it afresh) and lives
CACHE_TTL_SECONDS from its start: one user can neither grow the cache without bound nor evict
other users' entries. Global (admin) stats live in `taskapi:cache:global`, stale by at most
the TTL.

The cache is an optimisation: if its Redis fails, reads go to MongoDB, and for a few seconds
this process does not try the cache again (no timeout paid on every request).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import orjson
import redis
from flask import Flask, current_app, g

from taskapi.extensions import PREFIX, get_redis, redis_from_url

log = logging.getLogger("taskapi.cache")
GLOBAL = "global"

# KEYS[1] the bucket; ARGV: generation, field, value, max entries, max bytes, ttl seconds.
STORE_SCRIPT = """
local gen = tonumber(ARGV[1])
local size = string.len(ARGV[3])
if size > tonumber(ARGV[5]) then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], '#gen') or '-1')
if current > gen then return 0 end
local fresh = current < gen
if not fresh and redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then
  local entries = redis.call('HLEN', KEYS[1]) - 2
  local bytes = tonumber(redis.call('HGET', KEYS[1], '#bytes') or '0')
  if entries + 1 > tonumber(ARGV[4]) or bytes + size > tonumber(ARGV[5]) then fresh = true end
end
if fresh then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], '#gen', gen, '#bytes', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[6])
end
local old = redis.call('HSTRLEN', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HINCRBY', KEYS[1], '#bytes', size - old)
return 1
"""


def init_cache(app: Flask) -> None:
    """The cache's own Redis client (CACHE_REDIS_URL), with the store script registered on it."""
    timeout = app.config["REDIS_TIMEOUT_SECONDS"]
    client = redis_from_url(app.config["CACHE_REDIS_URL"], socket_timeout=timeout,
                            socket_connect_timeout=timeout, health_check_interval=30)
    app.extensions["cache_redis"] = client
    app.extensions["cache_store"] = client.register_script(STORE_SCRIPT)


def key_cache_generation(user_id: str) -> str:
    """The user's cache generation, in the main Redis: read with the token check."""
    return f"{PREFIX}cgen:{user_id}"


def bucket_key(owner: str | None) -> str:
    return f"{PREFIX}cache:{owner or GLOBAL}"


def generation(user_id: str) -> int:
    """The user's cache generation: from the token check's pipeline when it ran, else one GET."""
    if "cache_generation" not in g:
        g.cache_generation = int(get_redis().get(key_cache_generation(user_id)) or 0)
    return int(g.cache_generation)


def bump(user_id: str) -> None:
    """After a successful write: the user's cached reads are stale from now on.

    Best effort: the write has happened and must be reported as such. If the main Redis
    refuses the increment (at its memory limit, say), the user's entries are deleted from the
    cache's own Redis instead, so the next read is fresh all the same.
    """
    try:
        get_redis().incr(key_cache_generation(user_id))
    except redis.RedisError as exc:
        log.error("cache generation not bumped for user %s (%s); dropping their entries", user_id,
                  exc.__class__.__name__)
        try:
            forget(user_id)
        except redis.RedisError:
            _trip(exc)
    g.pop("cache_generation", None)


def forget(owner: str) -> None:
    """Drop a user's cached entries and page edges (a write the cache could not count, or erasure)."""
    current_app.extensions["cache_redis"].delete(bucket_key(owner), f"{PREFIX}edges:{owner}")


def field(kind: str, query: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(query, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:32]
    return f"{kind}:{digest}"


def enabled() -> bool:
    skip_until = current_app.extensions.get("cache_skip_until", 0.0)
    return bool(current_app.config["CACHE_TTL_SECONDS"] > 0 and time.monotonic() >= skip_until)


def lookup(owner: str | None, name: str) -> tuple[bytes, dict[str, str]] | None:
    """A stored response (body, headers) of the caller's generation, or None."""
    if not enabled():
        return None
    try:
        stored_gen, value = current_app.extensions["cache_redis"].hmget(bucket_key(owner), ["#gen", name])
    except redis.RedisError as exc:
        _trip(exc)
        return None
    if value is None or int(stored_gen or -1) != (generation(owner) if owner else 0):
        return None
    head, _, body = value.partition(b"\n")
    try:
        headers = orjson.loads(head)
        if not isinstance(headers, dict) or not body:
            raise ValueError("not an entry")
    except ValueError:  # orjson.JSONDecodeError too: not something this module stored
        log.warning("cache entry %s of %s is not ours; ignored", name, owner or GLOBAL)
        return None
    return body, headers


def store(owner: str | None, name: str, body: bytes, headers: dict[str, str]) -> None:
    if not enabled():
        return
    config = current_app.config
    value = orjson.dumps(headers) + b"\n" + body
    try:
        current_app.extensions["cache_store"](
            keys=[bucket_key(owner)],
            args=[generation(owner) if owner else 0, name, value, config["CACHE_MAX_ENTRIES_PER_USER"],
                  config["CACHE_MAX_BYTES_PER_USER"], config["CACHE_TTL_SECONDS"]])
    except redis.RedisError as exc:
        _trip(exc)


# Page edges (services/tasks.py, the embedded server's plan): per caller, one hash of query
# shape -> sort-key token. Hints for speed only, never for correctness: a lost or stale edge
# costs one unbounded read. Bounded like the cache (one user's shapes at most), kept a day.
EDGES_PER_USER = 64
EDGE_SECONDS = 86_400


def page_edge(owner: str, shape: str) -> int | None:
    try:
        value = current_app.extensions["cache_redis"].hget(f"{PREFIX}edges:{owner}", shape)
    except redis.RedisError as exc:
        _trip(exc)
        return None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def remember_page_edge(owner: str, shape: str, token: int | None) -> None:
    key, client = f"{PREFIX}edges:{owner}", current_app.extensions["cache_redis"]
    try:
        if token is None:
            client.hdel(key, shape)
            return
        pipe = client.pipeline(transaction=False)
        pipe.hlen(key)
        pipe.hset(key, shape, token)
        pipe.expire(key, EDGE_SECONDS)
        if pipe.execute()[0] >= EDGES_PER_USER:
            client.delete(key)  # start afresh rather than grow
    except redis.RedisError as exc:
        _trip(exc)


def _trip(exc: Exception) -> None:
    pause = current_app.config["CACHE_RETRY_SECONDS"]
    current_app.extensions["cache_skip_until"] = time.monotonic() + pause
    log.warning("cache unavailable (%s); reading from MongoDB for %s s", exc.__class__.__name__, pause)
