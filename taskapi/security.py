"""Password hashing, token issue and verification, and the revocation state in Redis.

Redis keys (in REDIS_URL's Redis, which must never evict: see README "Redis"):
  taskapi:bl:{jti}     a revoked access token; TTL = the token's remaining life
  taskapi:sess:{sid}   a login session (refresh family): hash {uid, rt = the one refresh jti
                       that may still be used}; TTL = refresh lifetime, renewed on rotation.
                       Deleting it revokes the family and every access token issued from it.
  taskapi:ugen:{uid}   the user's token generation. Tokens carry the generation they were
                       issued in; logout-all, a password change, a role change and deactivation
                       raise it, which kills every earlier token exactly (no clock involved), and
                       the next login carries the new value, so it works at once.
The generation is durable in MongoDB (`users.token_gen`) and mirrored here. A revoking change
raises the mirror *first* and commits second: if Redis refuses (down, out of memory, a
read-only replica), the change is refused as a whole with 503 and nothing is stored, so no
change is ever saved while the tokens it should have killed keep working. A missing mirror is
restored from MongoDB, never read as "not revoked".

A request is verified once: signature, claims, then all three keys in one pipelined round
trip; if Redis cannot answer, the request fails closed with 503.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
import uuid
from datetime import timedelta
from typing import Any

import orjson
import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from bson import ObjectId
from bson.errors import InvalidId
from flask import Flask, current_app, g, request
from flask_jwt_extended import JWTManager, create_access_token, create_refresh_token

from taskapi.errors import Unauthorized
from taskapi.extensions import get_redis
from taskapi.models.user import User

log = logging.getLogger("taskapi.security")
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
# Revocation: the generation goes above both its Redis value and the durable floor.
REVOKE_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if floor > current then current = floor end
current = current + 1
redis.call('SET', KEYS[1], current)
return current
"""
# Restore the mirror from the durable copy: never lower it, raise it if Redis lost a revocation.
SYNC_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
local durable = tonumber(ARGV[1])
if current < durable then redis.call('SET', KEYS[1], durable) return durable end
return current
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


def redis_script(source: str):
    """A registered Lua script on this app's Redis (EVALSHA, loaded on first use)."""
    scripts = current_app.extensions.setdefault("redis_scripts", {})
    if source not in scripts:
        scripts[source] = get_redis().register_script(source)
    return scripts[source]


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


# --- generations (revocation of every token of a user) -------------------------------------

def token_generation(user_id: str, durable: int) -> int:
    """The generation a login or refresh issues in: the Redis mirror, restored from (and never
    below) the durable copy. A RedisError propagates: 503."""
    return int(redis_script(SYNC_SCRIPT)(keys=[key_generation(user_id)], args=[durable]))


def revoke_all_tokens(user_id: str, durable: int) -> int:
    """Every token of the user issued before now stops working, on every worker; returns the
    new generation, which the caller then stores durably with its change. Called *before* that
    change is committed: a RedisError here (503) means nothing happened."""
    return int(redis_script(REVOKE_SCRIPT)(keys=[key_generation(user_id)], args=[durable]))


# --- sessions ------------------------------------------------------------------------------

def issue_session(user_id: str, generation: int, role: str) -> dict[str, Any]:
    """A new login session in the given generation: a token pair and the session record."""
    client = get_redis()
    sid = uuid.uuid4().hex
    pair, refresh_jti = _token_pair(user_id, sid, generation, role)
    ttl = current_app.config["REFRESH_TOKEN_TTL_SECONDS"]
    pipe = client.pipeline(transaction=True)
    pipe.hset(key_session(sid), mapping={"uid": user_id, "rt": refresh_jti})
    pipe.expire(key_session(sid), ttl)
    pipe.execute()
    return pair


def rotate_session(role: str) -> dict[str, Any]:
    """Exchange the presented refresh token for a new pair; reuse of an old one revokes the family."""
    claims = current_claims()
    user_id, sid = claims["sub"], claims["sid"]
    pair, refresh_jti = _token_pair(user_id, sid, claims["gen"], role)
    outcome = redis_script(ROTATE_SCRIPT)(
        keys=[key_session(sid), key_generation(user_id)],
        args=[claims["jti"], refresh_jti, current_app.config["REFRESH_TOKEN_TTL_SECONDS"], str(claims["gen"])],
    )
    if outcome == -1:
        raise Unauthorized("This refresh token was already used; the session has been revoked.")
    if outcome != 1:
        raise Unauthorized("The session has ended; log in again.")
    return pair


def end_session(sid: str) -> None:
    """Delete a session (its refresh family and every access token issued from it)."""
    get_redis().delete(key_session(sid))


def _token_pair(user_id: str, sid: str, generation: int, role: str) -> tuple[dict[str, Any], str]:
    refresh_jti = uuid.uuid4().hex
    claims = {"sid": sid, "gen": generation, "role": role}
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
    """Logout: the presented access token and its whole session, at once, everywhere.

    The session goes first, with DEL, which Redis accepts even at its memory limit; that alone
    revokes every token of the session. The blocklist entry is a second lock, best effort.
    """
    claims = current_claims()
    end_session(claims["sid"])
    try:
        get_redis().set(key_blocklist(claims["jti"]), "1", ex=max(int(claims["exp"] - time.time()), 1))
    except redis.RedisError as exc:
        log.warning("logout: blocklist entry not written (%s); the session is gone", exc.__class__.__name__)


def token_is_revoked(claims: dict) -> bool:
    """Blocklisted jti, ended session or stale generation; one round trip, fails closed.

    The same round trip fetches the caller's cache generation for the read-your-writes cache.
    A missing generation mirror is restored from MongoDB (one more read, once).
    """
    sid, generation = claims.get("sid"), claims.get("gen")
    if not isinstance(sid, str) or not isinstance(generation, int) or isinstance(generation, bool):
        return True  # not one of ours, whatever the signature says
    pipe = get_redis().pipeline(transaction=False)
    pipe.exists(key_blocklist(claims["jti"]))
    pipe.exists(key_session(sid))
    pipe.get(key_generation(claims["sub"]))
    pipe.get(key_cache_generation(claims["sub"]))
    blocked, session_alive, current, cache_generation = pipe.execute()  # a Redis error propagates: 503
    g.cache_generation = int(cache_generation or 0)
    if blocked or not session_alive:
        return True
    if current is None:
        current = restore_generation(claims["sub"])
    return int(current) != generation


def restore_generation(user_id: str) -> int:
    """The mirror was lost (a Redis restored from an older file, an operator's FLUSHALL):
    rebuild it from the durable copy. A user that no longer exists has no valid generation."""
    try:
        user = User.objects(id=ObjectId(user_id)).only("token_gen").as_pymongo().first()
    except InvalidId:
        user = None
    if user is None:
        return -1
    return token_generation(user_id, user.get("token_gen", 0))


# --- verification --------------------------------------------------------------------------
#
# flask-jwt-extended issues the tokens; checking them is done here, in one pass: it parsed
# each token three times (unverified header, unverified claims, verified decode), which was a
# third of the CPU of a cached read. The rules are RFC 8725's: the algorithm is ours, never
# the token's; every segment is canonical base64url; the signature is checked in constant
# time; exp, nbf, iat, iss, aud and the token type are required and checked; then revocation
# (one Redis round trip, failing closed). A request's token is verified once, whoever asks
# first (the rate limiter choosing a budget, or the route's guard).

DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
INVALID = "The token is invalid."
B64URL = re.compile(r"[A-Za-z0-9_-]*")
_UNSET = object()


def _b64decode(segment: str) -> bytes:
    """Canonical unpadded base64url only (RFC 7515 section 2): no padding, no other alphabet,
    and no unused bits set, so one token has exactly one spelling."""
    if not B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise ValueError("non-canonical base64url")
    return raw


def _signature_matches(signing_input: str, signature_b64: str) -> bool:
    """HMAC of header.payload with our key and pinned algorithm, compared in constant time."""
    config = current_app.config
    expected = hmac.new(config["JWT_SECRET_KEY"].encode(), signing_input.encode(),
                        DIGESTS[config["JWT_ALGORITHM"]]).digest()
    return hmac.compare_digest(_b64decode(signature_b64), expected)


def authenticate() -> dict[str, Any]:
    """The verified claims of the request's bearer token (signature, claims and revocation),
    or the 401 (or 503) that says why not. Verified once per request."""
    outcome = g.get("_token_outcome", _UNSET)
    if outcome is _UNSET:
        try:
            outcome = _authenticate()
        except Exception as exc:  # noqa: BLE001 - kept and raised to whoever asks
            outcome = exc
        g._token_outcome = outcome
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _authenticate() -> dict[str, Any]:
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("An access token is required: send 'Authorization: Bearer <token>'.", error=None)
    scheme, _, token = header.partition(" ")
    if scheme != "Bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.", error="invalid_request")
    claims = _verified_claims(token.strip())
    if token_is_revoked(claims):
        raise Unauthorized("The token has been revoked.")
    return claims


def verify_request_token(*, refresh: bool = False) -> dict[str, Any]:
    """The verified claims of the request's bearer token of this type, or a 401 saying what is wrong."""
    claims = authenticate()
    if claims.get("type") != ("refresh" if refresh else "access"):
        raise Unauthorized("An access token cannot be used here; send a refresh token." if refresh
                           else "A refresh token cannot be used here; send an access token.")
    g.token_claims = claims
    return claims


def verified_subject() -> str | None:
    """The user id of a token that verified completely (expiry and revocation included), else None:
    what the rate limiter keys a budget on, so an old or forged token spends nobody's budget."""
    if not request.headers.get("Authorization"):
        return None
    try:
        return authenticate()["sub"]
    except Exception:  # noqa: BLE001 - any failure: the client IP's budget
        return None


def _verified_claims(token: str) -> dict[str, Any]:
    config = current_app.config
    try:
        head_b64, payload_b64, signature_b64 = token.split(".")
        head = orjson.loads(_b64decode(head_b64))
        if not isinstance(head, dict) or head.get("alg") != config["JWT_ALGORITHM"]:
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
    audience = claims.get("aud")
    if isinstance(audience, list):
        audience = config["JWT_AUDIENCE"] if config["JWT_AUDIENCE"] in audience else None
    if (claims.get("iss") != config["JWT_ISSUER"] or audience != config["JWT_AUDIENCE"]
            or not isinstance(claims.get("sub"), str) or not isinstance(claims.get("jti"), str)):
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
    """flask-jwt-extended issues the tokens: our algorithm, lifetimes, issuer, audience and nbf."""
    config = app.config
    config["JWT_TOKEN_LOCATION"] = ["headers"]
    config["JWT_DECODE_ALGORITHMS"] = [config["JWT_ALGORITHM"]]
    config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(seconds=config["ACCESS_TOKEN_TTL_SECONDS"])
    config["JWT_REFRESH_TOKEN_EXPIRES"] = timedelta(seconds=config["REFRESH_TOKEN_TTL_SECONDS"])
    config["JWT_ENCODE_ISSUER"] = config["JWT_DECODE_ISSUER"] = config["JWT_ISSUER"]
    config["JWT_ENCODE_AUDIENCE"] = config["JWT_DECODE_AUDIENCE"] = config["JWT_AUDIENCE"]
    config["JWT_ENCODE_NBF"] = True
    jwt.init_app(app)
