"""Schemas shared by every blueprint: the problem envelope and the probes."""

from marshmallow import Schema, fields


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
