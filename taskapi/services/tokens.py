"""Password hashing, token issue, and the revocation state in Redis (taskapi/http/auth.py
verifies a request's token against it).

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

A request is checked against all three keys in one pipelined round trip (revocation_state);
if Redis cannot answer, the request fails closed with 503.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app
from flask_jwt_extended import create_access_token, create_refresh_token
from redis.client import Pipeline

from config import ConfigError
from taskapi.errors import ServiceUnavailable, Unauthorized
from taskapi.extensions import PREFIX, get_redis, jwt, redis_script
from taskapi.services import keys
from taskapi.services.cache import key_cache_generation

log = logging.getLogger("taskapi.security")

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
    verify_password(current_app.extensions["dummy_password_hash"], password)


def init_passwords(app: Flask) -> None:
    """The hasher with the configured cost, and the decoy hash that an unknown email is checked
    against, made when the app is built: made on a worker's first unknown-email login, it
    made that login twice as slow as a wrong password, which told the two apart."""
    with app.app_context():
        app.extensions["dummy_password_hash"] = hash_password(uuid.uuid4().hex)


# --- generations (revocation of every token of a user) -------------------------------------

def token_generation(user_id: str, durable: int) -> int:
    """The generation a login or refresh issues in: the Redis mirror, restored from (and never
    below) the durable copy. A RedisError propagates: 503."""
    return int(redis_script(SYNC_SCRIPT)(keys=[key_generation(user_id)], args=[durable]))


def revoke_all_tokens(user_id: str, durable: int) -> int:
    """Every token of the user issued before now stops working, on every worker; returns the
    new generation, which the caller then stores durably with its change. Called *before* that
    change is committed: a RedisError here (503) means nothing happened."""
    (generation,) = replicated(lambda pipe: redis_script(REVOKE_SCRIPT)(keys=[key_generation(user_id)], args=[durable],
                                                                      client=pipe))
    return int(generation)


def replicated(write: Callable[[Pipeline], Any]) -> list[Any]:
    """Run the commands `write` puts on a pipeline (one connection), then, when
    REDIS_REVOCATION_REPLICAS > 0, WAIT on that connection until that many replicas have them.
    Fewer within REDIS_WAIT_TIMEOUT_MS is a 503: the change is on the master but a failover now
    could lose it, so it is not confirmed (a retry is safe). Returns the commands' replies."""
    config = current_app.config
    replicas = config["REDIS_REVOCATION_REPLICAS"]
    pipe = get_redis().pipeline(transaction=False)
    write(pipe)
    if not replicas:
        return list(pipe.execute())
    pipe.wait(replicas, config["REDIS_WAIT_TIMEOUT_MS"])
    *replies, acknowledged = pipe.execute()
    if int(acknowledged) < replicas:
        log.warning("revocation acknowledged by %s of %d Redis replicas within %d ms: 503", acknowledged, replicas,
                    config["REDIS_WAIT_TIMEOUT_MS"])
        raise ServiceUnavailable("The change could not be confirmed by a Redis replica in time; retry.")
    return replies


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


def rotate_session(claims: dict[str, Any], role: str) -> dict[str, Any]:
    """Exchange the presented refresh token (its verified claims) for a new pair; reuse of an
    old one revokes the family."""
    user_id, sid = claims["sub"], claims["sid"]
    pair, refresh_jti = _token_pair(user_id, sid, claims["gen"], role)
    # Through `replicated`: a rotation a failover could undo would let the old (maybe stolen)
    # refresh token work again.
    (outcome,) = replicated(lambda pipe: redis_script(ROTATE_SCRIPT)(
        keys=[key_session(sid), key_generation(user_id)],
        args=[claims["jti"], refresh_jti, current_app.config["REFRESH_TOKEN_TTL_SECONDS"], str(claims["gen"])],
        client=pipe))
    if outcome == -1:
        raise Unauthorized("This refresh token was already used; the session has been revoked.")
    if outcome != 1:
        raise Unauthorized("The session has ended; log in again.")
    return pair


def end_session(sid: str) -> None:
    """Delete a session (its refresh family and every access token issued from it), on as many
    replicas as REDIS_REVOCATION_REPLICAS asks."""
    replicated(lambda pipe: pipe.delete(key_session(sid)))


def _token_pair(user_id: str, sid: str, generation: int, role: str) -> tuple[dict[str, Any], str]:
    if (current_app.config["JWT_ALGORITHM"] in keys.ASYMMETRIC
            and not isinstance(current_app.extensions.get("keyring"), keys.Keyring)):
        raise ServiceUnavailable("No signing key is installed; an operator must add one.")
    refresh_jti = uuid.uuid4().hex
    claims = {"sid": sid, "gen": generation, "role": role}
    ring = current_app.extensions.get("keyring")
    chosen = SIGNING.set(ring.signer if isinstance(ring, keys.Keyring) else None)
    try:
        access = create_access_token(identity=user_id, additional_claims=claims)
        refresh = create_refresh_token(identity=user_id, additional_claims={**claims, "jti": refresh_jti})
    finally:
        SIGNING.reset(chosen)
    pair = {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": current_app.config["ACCESS_TOKEN_TTL_SECONDS"],
    }
    return pair, refresh_jti


def revoke_session(claims: dict[str, Any]) -> None:
    """Logout: the presented access token (its verified claims) and its whole session, at
    once, everywhere.

    The session goes first, with DEL, which Redis accepts even at its memory limit; that alone
    revokes every token of the session. The blocklist entry is a second lock, best effort.
    """
    end_session(claims["sid"])
    try:
        get_redis().set(key_blocklist(claims["jti"]), "1", ex=max(int(claims["exp"] - time.time()), 1))
    except redis.RedisError as exc:
        log.warning("logout: blocklist entry not written (%s); the session is gone", exc.__class__.__name__)


def revocation_state(claims: dict[str, Any]) -> tuple[bool, int]:
    """(revoked, cache generation) of a token whose signature verified: revoked is a
    blocklisted jti, an ended session or a stale generation. One round trip, failing closed
    (a RedisError propagates: 503); the same trip fetches the caller's cache generation for
    the read-your-writes cache. A missing generation mirror is restored from MongoDB (one
    more read, once)."""
    sid, generation = claims.get("sid"), claims.get("gen")
    if not isinstance(sid, str) or not isinstance(generation, int) or isinstance(generation, bool):
        return True, 0  # not one of ours, whatever the signature says
    pipe = get_redis().pipeline(transaction=False)
    pipe.exists(key_blocklist(claims["jti"]))
    pipe.hget(key_session(sid), "uid")
    pipe.get(key_generation(claims["sub"]))
    pipe.get(key_cache_generation(claims["sub"]))
    blocked, session_user, current, cache_generation = pipe.execute()  # a Redis error propagates: 503
    if blocked or session_user is None or session_user.decode() != claims["sub"]:  # ended, or not this user's
        return True, 0
    if current is None:
        current = restore_generation(claims["sub"])
    return int(current) != generation, int(cache_generation or 0)


def restore_generation(user_id: str) -> int:
    """The mirror was lost (a Redis restored from an older file, an operator's FLUSHALL):
    rebuild it from the durable copy this service owns (`durable_generation` in the factory:
    `users` at the auth service and in the monolith, the tasks service's `members` copy). A user
    that no longer exists has no valid generation."""
    durable = current_app.extensions["durable_generation"](user_id)
    if durable is None:
        return -1
    return token_generation(user_id, durable)


def init_jwt(app: Flask) -> None:
    """flask-jwt-extended issues the tokens: our algorithm, lifetimes, issuer, audience and nbf;
    with RS256/ES256, signed by the newest key of JWT_PRIVATE_KEYS, its kid in the header."""
    config = app.config
    app.extensions["verified_tokens"] = {}  # RS256/ES256 signatures already checked (http/auth.py)
    if config["JWT_ALGORITHM"] in keys.ASYMMETRIC and config["JWKS_URL"]:  # verifies only (the tasks service)
        app.extensions["keyring"] = keys.RemoteKeyring(
            config["JWKS_URL"], config["JWT_ALGORITHM"], config["JWKS_REFETCH_SECONDS"], app.extensions["redis"],
            keys.store_key(config["JWT_ISSUER"], config["JWT_AUDIENCE"]))
    elif config["JWT_ALGORITHM"] in keys.ASYMMETRIC:
        ring = load_keyring(config)
        app.extensions["keyring"] = ring
        if ring is None:  # `keys rotate` still runs; gunicorn refuses to start (gunicorn.conf.py)
            log.error("JWT_PRIVATE_KEYS (%s) holds no key: logins answer 503 until one is added "
                      "(flask --app wsgi keys rotate) and the app reloaded", config["JWT_PRIVATE_KEYS"])
    config["JWT_TOKEN_LOCATION"] = ["headers"]
    config["JWT_DECODE_ALGORITHMS"] = [config["JWT_ALGORITHM"]]
    config["JWT_ACCESS_TOKEN_EXPIRES"] = timedelta(seconds=config["ACCESS_TOKEN_TTL_SECONDS"])
    config["JWT_REFRESH_TOKEN_EXPIRES"] = timedelta(seconds=config["REFRESH_TOKEN_TTL_SECONDS"])
    config["JWT_ENCODE_ISSUER"] = config["JWT_DECODE_ISSUER"] = config["JWT_ISSUER"]
    config["JWT_ENCODE_AUDIENCE"] = config["JWT_DECODE_AUDIENCE"] = config["JWT_AUDIENCE"]
    config["JWT_ENCODE_NBF"] = True
    jwt.init_app(app)


# The key a token pair is signed with, chosen once per pair (_token_pair): the signer can change
# while the app runs (a new key starts signing once it has been published long enough).
SIGNING: ContextVar[keys.SigningKey | None] = ContextVar("taskapi_signing_key", default=None)


def _signing_key() -> keys.SigningKey:
    chosen = SIGNING.get()
    return chosen if chosen is not None else current_app.extensions["keyring"].signer


@jwt.additional_headers_loader
def _key_id_header(identity: Any) -> dict[str, str]:
    """The signing key's id, so a verifier picks the right public key (RS256/ES256 only)."""
    return {"kid": _signing_key().kid} if isinstance(current_app.extensions.get("keyring"), keys.Keyring) else {}


@jwt.encode_key_loader
def _encode_key(identity: Any) -> Any:
    """HS*: JWT_SECRET_KEY; RS256/ES256: the private key the pair is signed with."""
    if isinstance(current_app.extensions.get("keyring"), keys.Keyring):
        return _signing_key().private
    return current_app.config["JWT_SECRET_KEY"]


def load_keyring(config: Any) -> keys.Keyring | None:
    """JWT_PRIVATE_KEYS' key ring; None when it holds no key. In development an empty directory
    gets a first key (one process makes it, under a lock, while the others wait and read it).
    A file that is not a usable key is a ConfigError naming it."""
    directory = Path(config["JWT_PRIVATE_KEYS"])
    if config["ENV_NAME"] == "development":
        keys.ensure_key(directory, config["JWT_ALGORITHM"])
    if not directory.is_dir() or not any(directory.glob("*.pem")):
        return None
    try:
        return keys.load_keyring(directory, config["JWT_ALGORITHM"], config["JWT_KEY_ACTIVATION_SECONDS"])
    except keys.UnusableKey as exc:
        raise ConfigError(str(exc)) from None
