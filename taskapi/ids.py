"""Ids in paths and tokens: a malformed id is the very answer an unknown one gets."""

from __future__ import annotations

from bson import ObjectId
from bson.errors import InvalidId

from taskapi.errors import NotFound, Unauthorized


def parse_object_id(value: str, not_found: str) -> ObjectId:
    """A 24-hex id, else the very 404 (same detail) that an unknown id gets."""
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise NotFound(not_found) from None


def parse_token_subject(value: str) -> ObjectId:
    """A token's `sub` as an id; a verified token never fails this, a forged one gets 401."""
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        raise Unauthorized("The token is invalid.") from None
