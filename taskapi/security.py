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

import base64
import hashlib
import hmac
import time
import uuid
from datetime import timedelta
from typing import Any

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app, g, request
from flask_jwt_extended import JWTManager, create_access_token, create_refresh_token

from taskapi.errors import Unauthorized
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

def token_generation(user_id: str) -> int:
    """The user's current token generation (read before a login's password check)."""
    return int(get_redis().get(key_generation(user_id)) or 0)


def issue_session(user_id: str, generation: int) -> dict[str, Any]:
    """A new login session in the given generation: a token pair and the session record."""
    client = get_redis()
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
    claims = current_claims()
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
    claims = current_claims()
    remaining = max(int(claims["exp"] - time.time()), 1)
    pipe = get_redis().pipeline(transaction=True)
    pipe.set(key_blocklist(claims["jti"]), "1", ex=remaining)
    pipe.delete(key_session(claims["sid"]))
    pipe.execute()


def revoke_all_tokens(user_id: str) -> None:
    """Logout-all, password change, deactivation: every token issued before now stops working."""
    get_redis().incr(key_generation(user_id))


def token_is_revoked(claims: dict) -> bool:
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


DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _signature_matches(signing_input: str, signature_b64: str) -> bool:
    """HMAC of header.payload with our key and pinned algorithm, compared in constant time."""
    config = current_app.config
    expected = hmac.new(config["JWT_SECRET_KEY"].encode(), signing_input.encode(),
                        DIGESTS[config["JWT_ALGORITHM"]]).digest()
    return hmac.compare_digest(_b64decode(signature_b64), expected)


def signed_subject(token: str) -> str | None:
    """The `sub` of a token signed with our key and pinned algorithm, else None.

    One HMAC instead of flask-jwt-extended's full decode: for choosing a rate-limit budget,
    where what matters is that nobody can spend another user's budget. Expiry and revocation
    are not checked here; the route's own token check does that.
    """
    try:
        signing_input, _, signature = token.rpartition(".")
        if not signing_input or not _signature_matches(signing_input, signature):
            return None
        subject = orjson.loads(_b64decode(signing_input.partition(".")[2])).get("sub")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return subject if isinstance(subject, str) else None


# --- verification --------------------------------------------------------------------------
#
# flask-jwt-extended issues the tokens; checking them is done here, in one pass: it parsed
# each token three times (unverified header, unverified claims, verified decode), which was a
# third of the CPU of a cached read. The rules are RFC 8725's: the algorithm is ours, never
# the token's; the signature is checked in constant time; exp, nbf, iat, iss and the token
# type are required and checked; then revocation (one Redis round trip, failing closed).

ISSUER = "taskapi"
INVALID = "The token is invalid."


def verify_request_token(*, refresh: bool = False) -> dict[str, Any]:
    """The verified claims of the request's bearer token, or a 401 saying what is wrong."""
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("An access token is required: send 'Authorization: Bearer <token>'.", error=None)
    scheme, _, token = header.partition(" ")
    if scheme != "Bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.", error="invalid_request")
    claims = _verified_claims(token.strip())
    if claims.get("type") != ("refresh" if refresh else "access"):
        raise Unauthorized("An access token cannot be used here; send a refresh token." if refresh
                           else "A refresh token cannot be used here; send an access token.")
    if token_is_revoked(claims):
        raise Unauthorized("The token has been revoked.")
    g.token_claims = claims
    return claims


def _verified_claims(token: str) -> dict[str, Any]:
    try:
        head_b64, payload_b64, signature_b64 = token.split(".")
        head = orjson.loads(_b64decode(head_b64))
        if not isinstance(head, dict) or head.get("alg") != current_app.config["JWT_ALGORITHM"]:
            raise ValueError("algorithm")
        if not _signature_matches(f"{head_b64}.{payload_b64}", signature_b64):
            raise ValueError("signature")
        claims = orjson.loads(_b64decode(payload_b64))
        if not isinstance(claims, dict):
            raise ValueError("claims")
    except (ValueError, TypeError, UnicodeError, orjson.JSONDecodeError):
        raise Unauthorized(INVALID) from None
    now = time.time()
    numbers = [claims.get(name) for name in ("exp", "nbf", "iat")]
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers):
        raise Unauthorized(INVALID)
    if claims.get("iss") != ISSUER or not isinstance(claims.get("sub"), str) or not isinstance(claims.get("jti"), str):
        raise Unauthorized(INVALID)
    if now >= claims["exp"]:
        raise Unauthorized("The token has expired.")
    if now < claims["nbf"]:
        raise Unauthorized("The token is not valid yet.")
    return claims


def current_claims() -> dict[str, Any]:
    """The claims `verify_request_token` accepted for this request."""
    return g.token_claims


def current_user_id() -> str:
    return g.token_claims["sub"]


def init_jwt(app: Flask) -> None:
    """flask-jwt-extended issues the tokens: our algorithm, lifetimes, issuer and nbf."""
    config = app.config
    config["JWT_TOKEN_LOCATION"] = ["headers"]
    config["JWT_DECODE_ALGORITHMS"] = [config["JWT_ALGORITHM"]]
    config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(seconds=config["ACCESS_TOKEN_TTL_SECONDS"])
    config["JWT_REFRESH_TOKEN_EXPIRES"] = timedelta(seconds=config["REFRESH_TOKEN_TTL_SECONDS"])
    config["JWT_ENCODE_ISSUER"] = config["JWT_DECODE_ISSUER"] = ISSUER
    config["JWT_ENCODE_NBF"] = True
    jwt.init_app(app)
