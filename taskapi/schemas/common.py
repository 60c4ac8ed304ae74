"""Schemas shared by every blueprint: the problem envelope and the probes."""

from marshmallow import Schema, fields, validate


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
    """RFC 3339 in UTC with a Z suffix on the way out (API.md); offsets converted to UTC on the way in."""

    def _serialize(self, value, attr, obj, **kwargs):
        from taskapi.web import format_timestamp

        return None if value is None else format_timestamp(value)


class TrimmedString(fields.String):
    """A string with surrounding white space removed before validation."""

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip()


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
