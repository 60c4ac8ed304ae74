"""Idempotency-Key for POST /tasks: per user, kept 24 h in Redis.

  taskapi:idem:{uid}:{sha256(key)} = {"state": "pending"|"done", "fp": body digest, ...}
A first request claims the key with SET NX (pending, 60 s, so a crashed worker does not block
the key for a day); on success it stores the status, body and headers for 24 h. A repeat
with the same body replays them; with another body it is a 422; while the first is still
running it is a 409.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson
import redis

from taskapi.errors import BadRequest, Conflict, ValidationFailed
from taskapi.extensions import get_redis
from taskapi.security import PREFIX

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
    return f"{PREFIX}idem:{user_id}:{hashlib.sha256(key.encode()).hexdigest()}"


def begin(*, user_id: str, key: str, digest: str) -> dict[str, Any] | None:
    """Claim the key (returns None: go ahead) or return the stored response to replay."""
    client, name = get_redis(), _redis_key(user_id, key)
    pending = orjson.dumps({"state": "pending", "fp": digest})
    for _ in range(3):
        if client.set(name, pending, nx=True, ex=PENDING_SECONDS):
            return None
        raw = client.get(name)
        if raw is None:
            continue  # expired between the two calls: claim it again
        stored = orjson.loads(raw)
        if stored["fp"] != digest:
            raise ValidationFailed("This Idempotency-Key was used with a different request body.",
                                   errors={"Idempotency-Key": ["Already used with a different body."]})
        if stored["state"] == "pending":
            raise Conflict("A request with this Idempotency-Key is still being processed; retry shortly.")
        return stored
    raise Conflict("A request with this Idempotency-Key is still being processed; retry shortly.")


def complete(*, user_id: str, key: str, digest: str, status: int, body: Any, headers: dict[str, str]) -> None:
    """Store the response to replay. Best effort: the task exists, so the client hears 201
    even if Redis fails here; the pending claim then expires after PENDING_SECONDS."""
    record = {"state": "done", "fp": digest, "status": status, "body": body, "headers": headers}
    try:
        get_redis().set(_redis_key(user_id, key), orjson.dumps(record), ex=KEEP_SECONDS)
    except redis.RedisError as exc:
        log.error("idempotency record not stored (%s); the key stays pending", exc.__class__.__name__)


def abandon(*, user_id: str, key: str) -> None:
    """The request failed before it created anything: free the key for a retry."""
    get_redis().delete(_redis_key(user_id, key))
