"""Idempotency-Key for POST /tasks: per user, kept 24 h in Redis.

  taskapi:idem:{uid}:{sha256(key)} = {"state": "pending"|"done", "fp": body digest, ...}
A first request claims the key (pending, 60 s, so a crashed worker does not block the key for
a day); on success it stores the status, body and headers for 24 h. A repeat with the same
body replays them; with another body it is a 422; while the first is still running it is a
409. A user's keys are indexed in taskapi:idem-keys:{uid}; the most recent
IDEMPOTENCY_MAX_KEYS_PER_USER are kept (an older one is forgotten first), so one user's
records stay bounded.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, cast

import orjson
import redis
from flask import current_app

from taskapi.errors import BadRequest, Conflict, ValidationFailed
from taskapi.extensions import PREFIX, get_redis, redis_script

log = logging.getLogger("taskapi.idempotency")
KEEP_SECONDS = 24 * 3600
PENDING_SECONDS = 60
MAX_KEY_LENGTH = 255


def validate_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not all(33 <= ord(c) <= 126 for c in key):
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters.")
    return key


def body_digest(body: Any) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _redis_key(user_id: str, key: str) -> str:
    return f"{PREFIX}idem:{user_id}:{_member(key)}"


def _member(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _index_key(user_id: str) -> str:
    return f"{PREFIX}idem-keys:{user_id}"


# Claim a key, or return what is stored for it. The user's keys are indexed in a sorted set
# (score: when the record expires, to the microsecond, so the oldest is well defined); past
# IDEMPOTENCY_MAX_KEYS_PER_USER the oldest record goes.
# KEYS: record, index. ARGV: pending value, pending ttl, now, keep seconds, max keys, member,
# record key prefix. Returns the stored value, or 1 when claimed.
CLAIM_SCRIPT = """
local stored = redis.call('GET', KEYS[1])
if stored then return stored end
local now = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if not redis.call('ZSCORE', KEYS[2], ARGV[6]) then
  local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5]) + 1
  if excess > 0 then
    for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do
      redis.call('DEL', ARGV[7] .. member)
    end
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""


def begin(*, user_id: str, key: str, digest: str) -> dict[str, Any] | None:
    """Claim the key (returns None: go ahead) or return the stored response to replay."""
    script = redis_script(CLAIM_SCRIPT)
    pending = orjson.dumps({"state": "pending", "fp": digest})
    outcome = script(keys=[_redis_key(user_id, key), _index_key(user_id)],
                     args=[pending, PENDING_SECONDS, repr(time.time()), KEEP_SECONDS,
                           current_app.config["IDEMPOTENCY_MAX_KEYS_PER_USER"], _member(key),
                           f"{PREFIX}idem:{user_id}:"])
    if outcome == 1:
        return None
    stored = orjson.loads(outcome)
    if stored["fp"] != digest:
        raise ValidationFailed("This Idempotency-Key was used with a different request body.",
                               errors={"Idempotency-Key": ["Already used with a different body."]})
    if stored["state"] == "pending":
        raise Conflict("A request with this Idempotency-Key is still being processed; retry shortly.")
    return cast(dict[str, Any], stored)


def complete(*, user_id: str, key: str, digest: str, status: int, body: Any, headers: dict[str, str]) -> None:
    """Store the response to replay. Best effort: the task exists, so the client hears 201
    even if Redis fails here; the pending claim then expires after PENDING_SECONDS. Only a
    claim that still exists is completed (one evicted meanwhile stays gone)."""
    record = {"state": "done", "fp": digest, "status": status, "body": body, "headers": headers}
    try:
        get_redis().set(_redis_key(user_id, key), orjson.dumps(record), ex=KEEP_SECONDS, xx=True)
    except redis.RedisError as exc:
        log.error("idempotency record not stored (%s); the key stays pending", exc.__class__.__name__)


def abandon(*, user_id: str, key: str) -> None:
    """The request failed before it created anything: free the key for a retry."""
    pipe = get_redis().pipeline(transaction=True)
    pipe.delete(_redis_key(user_id, key))
    pipe.zrem(_index_key(user_id), _member(key))
    pipe.execute()


def forget(*, user_id: str) -> None:
    """Drop every record of the user (account erasure)."""
    client = get_redis()
    members: list[bytes] = client.zrange(_index_key(user_id), 0, -1)  # type: ignore[assignment]  # bytes: no decode_responses
    keys = [f"{PREFIX}idem:{user_id}:{m.decode()}" for m in members] + [_index_key(user_id)]
    client.delete(*keys)
