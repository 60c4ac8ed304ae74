"""Webhook schemas: endpoint bodies, the endpoint as clients see it, its secret, the delivery log."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from taskapi.models.event import ALL_EVENTS, PING, TASK_EVENTS
from taskapi.models.webhook import FAILED, PENDING, SUCCEEDED
from taskapi.schemas.common import NO_CONTROL, PageQuerySchema, StrictBoolean, Text, Timestamp

URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[!-~]+$"  # printable ASCII; the SSRF guard checks the rest
SUBSCRIBABLE = (*TASK_EVENTS, ALL_EVENTS)


class EventList(fields.List):
    """A non-empty list of event types, or `["*"]` for all; duplicates merged."""

    def __init__(self, **kwargs):
        kwargs["metadata"] = {"minItems": 1, "maxItems": 2 * len(SUBSCRIBABLE),
                              "example": ["task.created", "task.completed"],
                              "description": "Any of " + ", ".join(TASK_EVENTS) + ', or ["*"] for every event '
                                             '(a list holding "*" means every event); duplicates are merged.',
                              **kwargs.get("metadata", {})}
        super().__init__(fields.String(validate=validate.OneOf(SUBSCRIBABLE)), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, list) and len(value) > 2 * len(SUBSCRIBABLE):
            raise ValidationError("Too many event types.")
        items = super()._deserialize(value, attr, data, **kwargs)
        if not items:
            raise ValidationError("Subscribe to at least one event type.")
        merged = list(dict.fromkeys(items))
        return [ALL_EVENTS] if ALL_EVENTS in merged else merged  # "*" with others still means everything


class WebhookInputSchema(Schema):
    url = Text(required=True, max_length=2048, pattern=URL_PATTERN,
               pattern_error="An http(s):// URL of printable ASCII characters (no spaces).",
               metadata={"example": "https://example.com/hooks/taskapi",
                         "description": "https only (http when the server allows it), no user:password@, no "
                                        "#fragment, at most 2048 characters; every address the host resolves "
                                        "to must be public."})
    events = EventList(required=True)
    description = Text(load_default="", max_length=500, pattern=NO_CONTROL, pattern_error="No control characters.",
                       trim=True, metadata={"example": "Sync to our CRM"})


class WebhookPatchSchema(WebhookInputSchema):
    """PATCH: any subset; `active: true` re-enables an endpoint that was disabled after failures."""

    active = StrictBoolean()

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("partial", True)
        super().__init__(*args, **kwargs)


class WebhookSchema(Schema):
    id = fields.String(attribute="_id", dump_only=True, metadata={"example": "6b0cf4e5d9870db21da3bdfb"})
    url = fields.String(dump_only=True)
    events = fields.List(fields.String(), dump_only=True)
    description = fields.String(dump_only=True)
    active = fields.Boolean(dump_only=True)
    disabled_reason = fields.String(dump_only=True, allow_none=True,
                                    metadata={"description": "Why the server disabled it (every delivery failing "
                                                             "for WEBHOOK_DISABLE_AFTER), else null."})
    created_at = Timestamp(dump_only=True)
    updated_at = Timestamp(dump_only=True)


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(dump_only=True, metadata={
        "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "description": "The signing secret, shown only here and on rotation: keep it."})


class SecretSchema(Schema):
    secret = fields.String(required=True, metadata={"example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})


class PingSchema(Schema):
    event_id = fields.String(required=True, metadata={"description": "The `webhook-id` the receiver will see."})


class WebhookPageSchema(Schema):
    items = fields.List(fields.Nested(WebhookSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class DeliverySchema(Schema):
    """One attempt to send one event to the endpoint."""

    id = fields.String(attribute="_id", dump_only=True)
    event_id = fields.String(attribute="event", dump_only=True,
                             metadata={"description": "The `webhook-id` header: the same on every attempt."})
    event_type = fields.String(dump_only=True, metadata={"enum": [*TASK_EVENTS, PING]})
    attempt = fields.Integer(dump_only=True, metadata={"description": "1 for the first attempt of this event."})
    status = fields.String(dump_only=True, metadata={"enum": [PENDING, SUCCEEDED, FAILED]})
    response_status = fields.Integer(dump_only=True, allow_none=True)
    duration_ms = fields.Integer(dump_only=True, allow_none=True)
    error = fields.String(dump_only=True, allow_none=True,
                          metadata={"description": "A short reason (timeout, refused, non-2xx: 500, blocked: ...); "
                                                   "never the receiver's body."})
    created_at = Timestamp(dump_only=True)
    next_attempt_at = Timestamp(dump_only=True, allow_none=True, metadata={
        "description": "Pending: when this attempt runs. Failed: when the next one runs, or null when none will."})


class DeliveryPageSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class WebhookQuerySchema(PageQuerySchema):
    """Paging only."""
