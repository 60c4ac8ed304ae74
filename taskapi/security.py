"""Password hashing, token issue and revocation; the revocation state lives in Redis.

Redis keys (shared by every worker and instance):
  taskapi:bl:{jti}     a revoked token id; TTL = the token's remaining life
  taskapi:sess:{sid}   a login session (refresh family): hash {uid, rt = the one refresh jti
                       that may still be used}; TTL = refresh lifetime, renewed on rotation.
                       Deleting it revokes the family and every access token issued from it.
  taskapi:ugen:{uid}   the user's token generation; tokens carry the generation they were
                       issued in. INCR on logout-all, password change and deactivation kills
                       every earlier token exactly (no clock involved), and the next login
                       carries the new value, so it works at once.
A request checks all three in one pipelined round trip; if Redis cannot answer, the request
fails closed with 503.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app, g, request
from flask_jwt_extended import JWTManager, create_access_token, create_refresh_token, get_jwt

from taskapi.errors import Unauthorized, problem
from taskapi.extensions import get_redis

PREFIX = "taskapi:"
jwt = JWTManager()

# Rotation in one atomic step: the presented refresh token must be the session's current one.
# Returns 1 (rotated), 0 (no such session / stale generation), -1 (reuse: family revoked).
ROTATE_SCRIPT = """
local uid = redis.call('HGET', KEYS[1], 'uid')
if not uid then return 0 end
local gen = redis.call('GET', KEYS[2]) or '0'
if gen ~= ARGV[4] then redis.call('DEL', KEYS[1]) return 0 end
if redis.call('HGET', KEYS[1], 'rt') ~= ARGV[1] then redis.call('DEL', KEYS[1]) return -1 end
redis.call('HSET', KEYS[1], 'rt', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def key_blocklist(jti: str) -> str:
    return f"{PREFIX}bl:{jti}"


def key_session(sid: str) -> str:
    return f"{PREFIX}sess:{sid}"


def key_generation(user_id: str) -> str:
    return f"{PREFIX}ugen:{user_id}"


def key_cache_generation(user_id: str) -> str:
    """The user's response-cache generation (see services/cache.py), read with the token check."""
    return f"{PREFIX}cgen:{user_id}"


# --- passwords -------------------------------------------------------------------------

def password_hasher() -> PasswordHasher:
    """One hasher per app, with the configured cost."""
    hasher = current_app.extensions.get("password_hasher")
    if hasher is None:
        config = current_app.config
        hasher = PasswordHasher(time_cost=config["ARGON2_TIME_COST"], memory_cost=config["ARGON2_MEMORY_KIB"],
                                parallelism=config["ARGON2_PARALLELISM"])
        current_app.extensions["password_hasher"] = hasher
    return hasher


def hash_password(password: str) -> str:
    return password_hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return password_hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return password_hasher().check_needs_rehash(password_hash)


def burn_verify_time(password: str) -> None:
    """Spend what a real verification costs, so an unknown email is not told apart by timing."""
    dummy = current_app.extensions.get("dummy_password_hash")
    if dummy is None:
        dummy = current_app.extensions["dummy_password_hash"] = hash_password(uuid.uuid4().hex)
    verify_password(dummy, password)


# --- tokens ------------------------------------------------------------------------------

def issue_session(user_id: str) -> dict[str, Any]:
    """A new login session: a token pair and the session record (2 Redis round trips)."""
    client = get_redis()
    generation = int(client.get(key_generation(user_id)) or 0)
    sid = uuid.uuid4().hex
    pair, refresh_jti = _token_pair(user_id, sid, generation)
    ttl = current_app.config["REFRESH_TOKEN_TTL_SECONDS"]
    pipe = client.pipeline(transaction=True)
    pipe.hset(key_session(sid), mapping={"uid": user_id, "rt": refresh_jti})
    pipe.expire(key_session(sid), ttl)
    pipe.execute()
    return pair


def rotate_session() -> dict[str, Any]:
    """Exchange the presented refresh token for a new pair; reuse of an old one revokes the family."""
    claims = get_jwt()
    user_id, sid = claims["sub"], claims["sid"]
    pair, refresh_jti = _token_pair(user_id, sid, claims["gen"])
    outcome = get_redis().eval(
        ROTATE_SCRIPT, 2, key_session(sid), key_generation(user_id),
        claims["jti"], refresh_jti, current_app.config["REFRESH_TOKEN_TTL_SECONDS"], str(claims["gen"]),
    )
    if outcome == -1:
        raise Unauthorized("This refresh token was already used; the session has been revoked.")
    if outcome != 1:
        raise Unauthorized("The session has ended; log in again.")
    return pair


def _token_pair(user_id: str, sid: str, generation: int) -> tuple[dict[str, Any], str]:
    refresh_jti = uuid.uuid4().hex
    claims = {"sid": sid, "gen": generation}
    access = create_access_token(identity=user_id, additional_claims=claims)
    refresh = create_refresh_token(identity=user_id, additional_claims={**claims, "jti": refresh_jti})
    pair = {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": current_app.config["ACCESS_TOKEN_TTL_SECONDS"],
    }
    return pair, refresh_jti


def revoke_current_session() -> None:
    """Logout: the presented access token and its whole session, at once, everywhere."""
    claims = get_jwt()
    remaining = max(int(claims["exp"] - time.time()), 1)
    pipe = get_redis().pipeline(transaction=True)
    pipe.set(key_blocklist(claims["jti"]), "1", ex=remaining)
    pipe.delete(key_session(claims["sid"]))
    pipe.execute()


def revoke_all_tokens(user_id: str) -> None:
    """Logout-all, password change, deactivation: every token issued before now stops working."""
    get_redis().incr(key_generation(user_id))


def token_is_revoked(jwt_header: dict, claims: dict) -> bool:
    """Blocklisted jti, ended session or stale generation; one round trip, fails closed.

    The same round trip fetches the caller's cache generation for the read-your-writes cache.
    """
    sid, generation = claims.get("sid"), claims.get("gen")
    if not isinstance(sid, str) or not isinstance(generation, int):
        return True  # not one of ours, whatever the signature says
    pipe = get_redis().pipeline(transaction=False)
    pipe.exists(key_blocklist(claims["jti"]))
    pipe.exists(key_session(sid))
    pipe.get(key_generation(claims["sub"]))
    pipe.get(key_cache_generation(claims["sub"]))
    blocked, session_alive, current, cache_generation = pipe.execute()  # a Redis error propagates: 503
    g.cache_generation = int(cache_generation or 0)
    return bool(blocked) or not session_alive or int(current or 0) != generation


# --- flask-jwt-extended wiring -------------------------------------------------------------

def _challenge(detail: str, error: str | None = "invalid_token"):
    headers = {"WWW-Authenticate": Unauthorized(detail, error=error).headers["WWW-Authenticate"]}
    if error is None:
        headers["WWW-Authenticate"] = 'Bearer realm="taskapi"'
    return problem(401, detail, headers=headers)


def _missing(reason: str):
    if request.headers.get("Authorization"):
        return _challenge("The Authorization header must be 'Bearer <token>'.", "invalid_request")
    return _challenge("An access token is required: send 'Authorization: Bearer <token>'.", None)


def _invalid(reason: str):
    if "refresh" in reason.lower() and "only" in reason.lower():
        return _challenge("A refresh token cannot be used here; send an access token.")
    if "access" in reason.lower() and "only" in reason.lower():
        return _challenge("An access token cannot be used here; send a refresh token.")
    return _challenge("The token is invalid.")


def init_jwt(app: Flask) -> None:
    """Tokens from the Authorization header only, one pinned algorithm, our issuer, our errors."""
    config = app.config
    config["JWT_TOKEN_LOCATION"] = ["headers"]
    config["JWT_DECODE_ALGORITHMS"] = [config["JWT_ALGORITHM"]]
    config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(seconds=config["ACCESS_TOKEN_TTL_SECONDS"])
    config["JWT_REFRESH_TOKEN_EXPIRES"] = timedelta(seconds=config["REFRESH_TOKEN_TTL_SECONDS"])
    config["JWT_ENCODE_ISSUER"] = config["JWT_DECODE_ISSUER"] = "taskapi"
    config["JWT_ENCODE_NBF"] = True
    jwt.init_app(app)
    jwt.token_in_blocklist_loader(token_is_revoked)
    jwt.unauthorized_loader(_missing)
    jwt.invalid_token_loader(_invalid)
    jwt.expired_token_loader(lambda header, claims: _challenge("The token has expired."))
    jwt.revoked_token_loader(lambda header, claims: _challenge("The token has been revoked."))
    jwt.token_verification_failed_loader(lambda header, claims: _challenge("The token is invalid."))
    jwt.user_lookup_error_loader(lambda header, claims: _challenge("The token's account is not available."))
