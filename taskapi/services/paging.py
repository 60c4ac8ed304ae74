"""Keyset cursors: opaque, signed (tamper-evident), bound to the filters and sort they came from."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

from taskapi.errors import ValidationFailed


def _serializer(scope: str) -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["JWT_SECRET_KEY"], salt=f"taskapi-cursor:{scope}")


def fingerprint(query: dict[str, Any]) -> str:
    """A short digest of the normalised filters and sort a cursor belongs to."""
    return hashlib.sha256(orjson.dumps(query, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[:16]


def encode_cursor(scope: str, query: dict[str, Any], position: list[Any]) -> str:
    return _serializer(scope).dumps({"q": fingerprint(query), "p": position})


def decode_cursor(scope: str, query: dict[str, Any], token: str) -> list[Any]:
    """The position after which the next page starts; 422 for a forged or foreign cursor."""
    try:
        data = _serializer(scope).loads(token)
    except BadSignature:
        raise ValidationFailed(errors={"cursor": ["The cursor is invalid."]}) from None
    if not isinstance(data, dict) or data.get("q") != fingerprint(query) or not isinstance(data.get("p"), list):
        raise ValidationFailed(errors={"cursor": ["The cursor belongs to other filters or another sort."]})
    return list(data["p"])
