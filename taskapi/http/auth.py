"""Who is calling: the request's bearer token, verified once per request.

flask-jwt-extended issues the tokens (services/tokens.py); checking them is done here, in one
pass: it parsed each token three times (unverified header, unverified claims, verified
decode), which was a third of the CPU of a cached read. The rules are RFC 8725's: the
algorithm is ours, never the token's; every segment is canonical base64url; the signature is
checked in constant time; exp, nbf, iat, iss, aud and the token type are required and
checked; then revocation (one Redis round trip, failing closed). A request's token is verified
once, whoever asks first (the rate limiter choosing a budget, or the route's guard).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import Any, cast

import orjson
from flask import current_app, g, request
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from taskapi.errors import Forbidden, Unauthorized
from taskapi.services.tokens import revocation_state

DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
VERIFIERS = {"RS256": RSAAlgorithm(RSAAlgorithm.SHA256), "ES256": ECAlgorithm(ECAlgorithm.SHA256)}
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


def _signature_matches(head: dict[str, Any], signing_input: str, signature_b64: str) -> bool:
    """The signature of header.payload under the pinned algorithm: an HMAC with our key,
    compared in constant time, or (RS256/ES256) the public key the header's `kid` names in
    our key ring; an unknown or missing kid matches nothing."""
    config = current_app.config
    algorithm = config["JWT_ALGORITHM"]
    signature = _b64decode(signature_b64)
    if algorithm in DIGESTS:
        expected = hmac.new(config["JWT_SECRET_KEY"].encode(), signing_input.encode(), DIGESTS[algorithm]).digest()
        return hmac.compare_digest(signature, expected)
    kid = head.get("kid")
    ring = current_app.extensions.get("keyring")  # keys.Keyring, or keys.RemoteKeyring (JWKS_URL)
    public = ring.verifier(kid) if ring is not None and isinstance(kid, str) else None
    return public is not None and bool(VERIFIERS[algorithm].verify(signing_input.encode(), public, signature))


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
    return cast(dict[str, Any], outcome)


def _authenticate() -> dict[str, Any]:
    header = request.headers.get("Authorization")
    if not header:
        raise Unauthorized("An access token is required: send 'Authorization: Bearer <token>'.", error=None)
    scheme, _, token = header.partition(" ")
    if scheme != "Bearer" or not token.strip():
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.", error="invalid_request")
    claims = _verified_claims(token.strip())
    revoked, g.cache_generation = revocation_state(claims)
    if revoked:
        raise Unauthorized("The token has been revoked.")
    return claims


def verify_request_token(*, refresh: bool = False, role: str | None = None) -> dict[str, Any]:
    """The verified claims of the request's bearer token of this type (and role), or the 401
    (403 for a valid token without the role) that says what is wrong. The role is the token's:
    a role change revokes every token of the user, so a demoted admin's tokens are dead."""
    claims = authenticate()
    if claims.get("type") != ("refresh" if refresh else "access"):
        raise Unauthorized("An access token cannot be used here; send a refresh token." if refresh
                           else "A refresh token cannot be used here; send an access token.")
    g.token_claims = claims
    if role is not None:
        require_role(role)
    return claims


def require_role(role: str) -> None:
    """403 unless the verified token of this request carries `role`."""
    if g.token_claims.get("role") != role:
        raise Forbidden(f"This requires the {role} role.")


def verified_subject() -> str | None:
    """The user id of a token that verified completely (expiry and revocation included), else None:
    what the rate limiter keys a budget on, so an old or forged token spends nobody's budget."""
    if not request.headers.get("Authorization"):
        return None
    try:
        return str(authenticate()["sub"])
    except Exception:  # noqa: BLE001 - any failure: the client IP's budget
        return None


# RS256/ES256: tokens whose signature verified, per app, for a minute (token -> (until, claims)).
# A public-key check costs 50-90 us of CPU, an HMAC 1 us; clients send the same access token
# many times. Everything after the signature (expiry, issuer, audience, revocation) is checked
# on every request all the same. Keys only leave a local ring with a reload (a new, empty cache);
# a key withdrawn from a remote JWK set stops verifying within keys.MAX_AGE_SECONDS + VERIFIED_SECONDS.
VERIFIED_SECONDS = 60.0
VERIFIED_MAX = 10_000


def _signed_claims(token: str) -> tuple[dict[str, Any], bool]:
    """The claims of a token whose header names our algorithm and whose signature matches, and
    whether it did so under the pinned algorithm (False: an HS256 refresh token of the move)."""
    head_b64, payload_b64, signature_b64 = token.split(".")
    head = orjson.loads(_b64decode(head_b64))
    config = current_app.config
    if not isinstance(head, dict):
        raise ValueError("header")
    pinned = head.get("alg") == config["JWT_ALGORITHM"]
    if pinned:
        if not _signature_matches(head, f"{head_b64}.{payload_b64}", signature_b64):
            raise ValueError("signature")
    elif head.get("alg") == "HS256" and time.time() < config["HS256_ACCEPTED_UNTIL"]:
        # The move from HS256 (JWT_ACCEPT_HS256_UNTIL): a refresh token issued before it, HMAC-checked
        # with JWT_SECRET_KEY (never with a public key), at a service that signs. Only a refresh
        # token: it is exchanged for a pair of the new algorithm only if it is its session's current
        # one, and the new pair's role comes from the account, not from the token.
        expected = hmac.new(config["JWT_SECRET_KEY"].encode(), f"{head_b64}.{payload_b64}".encode(),
                            DIGESTS["HS256"]).digest()
        if not hmac.compare_digest(_b64decode(signature_b64), expected):
            raise ValueError("signature")
    else:
        raise ValueError("algorithm")
    claims = orjson.loads(_b64decode(payload_b64))
    if not isinstance(claims, dict) or (not pinned and claims.get("type") != "refresh"):
        raise ValueError("claims")
    return cast(dict[str, Any], claims), pinned


def _verified_claims(token: str) -> dict[str, Any]:
    config = current_app.config
    verified = current_app.extensions.get("verified_tokens") if config["JWT_ALGORITHM"] not in DIGESTS else None
    hit = verified.get(token) if verified is not None else None
    claims: dict[str, Any]
    try:
        if hit is not None and hit[0] > time.monotonic():
            claims = dict(hit[1])  # a request's own copy
        else:
            claims, pinned = _signed_claims(token)
            if verified is not None and pinned:
                if len(verified) >= VERIFIED_MAX:
                    verified.clear()
                verified[token] = (time.monotonic() + VERIFIED_SECONDS, claims)
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
    return cast(dict[str, Any], g.token_claims)


def current_user_id() -> str:
    return str(g.token_claims["sub"])
