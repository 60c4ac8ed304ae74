"""The public keys that verify tokens: GET /.well-known/jwks.json (RS256/ES256)."""

from __future__ import annotations

from flask import current_app

from taskapi.api.ops import PARSE_ERROR
from taskapi.http.blueprint import Blueprint
from taskapi.schemas.common import JwkSetSchema
from taskapi.services.keys import Keyring

blp = Blueprint("keys", __name__, description="Public keys for verifying tokens (JWKS).")
blp.exempt_from_rate_limits = True  # public, cacheable, fetched by other services
MAX_AGE_SECONDS = 300


@blp.route("/.well-known/jwks.json", methods=["GET"])
@blp.response(200, JwkSetSchema(), headers={"Cache-Control": {"description": "public, max-age=300",
                                                              "schema": {"type": "string"}}})
@blp.problem(400, PARSE_ERROR)
def jwks():
    """The JWK set of every public key that verifies tokens now.

    No authentication; cacheable for 5 minutes. With `JWT_ALGORITHM=RS256` or `ES256` it lists
    the public half of every key in `JWT_PRIVATE_KEYS`, the newest first; a token's `kid`
    header names its key. A rotated-out key stays listed while its file stays, so tokens it
    signed keep verifying. With HS256 the set is empty: an HMAC secret is never published.
    No private parameter ever appears.
    """
    ring = current_app.extensions.get("keyring")
    body = ring.jwks() if isinstance(ring, Keyring) else {"keys": []}
    return body, 200, {"Cache-Control": f"public, max-age={MAX_AGE_SECONDS}"}
