"""Schemas shared by every blueprint: the problem envelope and the probes."""

import re
import unicodedata
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from taskapi.clock import format_timestamp


class ProblemSchema(Schema):
    """RFC 9457 problem details, the body of every error response."""

    type = fields.String(metadata={"example": "about:blank"})
    title = fields.String(metadata={"example": "Unprocessable Content"})
    status = fields.Integer(metadata={"example": 422})
    detail = fields.String(metadata={"example": "The request failed validation; see errors for each field."})
    request_id = fields.String(metadata={"example": "4f9c0a6e2b1d4c8e9a7f3b2d1c0e9f8a"})
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Field name to messages; present on validation failures."},
    )


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})


class ReadinessSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        required=True,
        metadata={"example": {"mongodb": "ok", "redis": "ok"}},
    )


class Timestamp(fields.DateTime):
    """RFC 3339 in UTC with a Z suffix on the way out (docs/api.md); offsets converted to UTC on the way in."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else format_timestamp(value)


# White space that `Text(trim=True)` removes, spelled out so that the code and the OpenAPI
# pattern agree exactly (Python's str.strip and a regex's \s differ at the edges).
SPACES = " \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
STRIP_CHARS = "".join(chr(c) for c in [0x20, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F,
                                      0x3000, 0xFEFF])
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


def _invisible_class() -> str:
    """The characters of the Basic Multilingual Plane that show nothing on their own: controls,
    white space, format characters (U+200B, U+2060, U+00AD, U+202E, ...), the Hangul and braille
    fillers, variation selectors and the combining grapheme joiner; as a regex class body."""
    fillers = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x2800, 0x3164, 0xFFA0, *range(0xFE00, 0xFE10)}
    invisible = [c for c in range(0x10000) if c < 0xD800 or c > 0xDFFF
                 if unicodedata.category(chr(c)) in {"Cc", "Cf", "Zs", "Zl", "Zp"} or c in fillers]
    ranges: list[str] = []
    start: Any = invisible[0]
    for previous, current in zip(invisible, invisible[1:] + [None], strict=False):
        if current != previous + 1:
            ranges.append(f"\\u{start:04x}" + (f"-\\u{previous:04x}" if previous != start else ""))
            start = current
    return "".join(ranges)


INVISIBLE = _invisible_class()
# At least one visible character, and no control characters anywhere.
VISIBLE_NO_CONTROL = rf"^[^\x00-\x1f\x7f]*[^{INVISIBLE}][^\x00-\x1f\x7f]*$"


class Text(fields.String):
    """A string checked as sent (length, allowed characters, both documented), then trimmed if asked."""

    def __init__(self, *, max_length: int, pattern: str, pattern_error: str, trim: bool = False, **kwargs):
        self.max_length, self.pattern, self.pattern_error, self.trim = max_length, re.compile(pattern), pattern_error, trim
        kwargs["metadata"] = {"maxLength": max_length, "pattern": pattern, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if len(value) > self.max_length:
            raise ValidationError(f"At most {self.max_length} characters.")
        if not self.pattern.match(value):
            raise ValidationError(self.pattern_error)
        return value.strip(STRIP_CHARS) if self.trim else value


class PageQuerySchema(Schema):
    """Keyset paging arguments shared by list endpoints."""

    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100),
                           metadata={"description": "Page size, 1..100 (default 20)."})
    cursor = fields.String(metadata={"description": "Opaque `next_cursor` from the previous page."})


class StrictBoolean(fields.Boolean):
    """Only JSON true/false: "yes", 1 or "false" are type errors, not guesses."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class JwkSchema(Schema):
    """A public key as RFC 7517 has it: RSA keys carry n and e, EC (P-256) keys crv, x and y."""

    kty = fields.String(required=True, metadata={"example": "RSA", "description": "RSA or EC"})
    kid = fields.String(required=True, metadata={"description": "The key's RFC 7638 thumbprint: the `kid` "
                                                                "header of the tokens it signed."})
    use = fields.String(required=True, metadata={"example": "sig"})
    alg = fields.String(required=True, metadata={"example": "RS256"})
    n = fields.String(metadata={"description": "RSA modulus (base64url)"})
    e = fields.String(metadata={"description": "RSA exponent (base64url)", "example": "AQAB"})
    crv = fields.String(metadata={"example": "P-256"})
    x = fields.String(metadata={"description": "EC x coordinate (base64url)"})
    y = fields.String(metadata={"description": "EC y coordinate (base64url)"})


class JwkSetSchema(Schema):
    keys = fields.List(fields.Nested(JwkSchema), required=True,
                       metadata={"description": "Every key that verifies tokens now, the newest first; "
                                                "empty when tokens are HMAC-signed (HS256)."})
