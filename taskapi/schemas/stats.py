"""Stats schemas: query arguments and the dashboard / completions shapes."""

from marshmallow import Schema, fields, validate

from taskapi.models.task import PRIORITIES, STATUSES
from taskapi.schemas.common import Timestamp


class DashboardQuerySchema(Schema):
    scope = fields.String(load_default="user", validate=validate.OneOf(("user", "global")),
                          metadata={"description": "`global` (admins only) counts every user's tasks."})


class CompletionsQuerySchema(Schema):
    days = fields.Integer(load_default=30, validate=validate.Range(min=1, max=365),
                          metadata={"description": "Number of UTC days ending today, 1..365 (default 30)."})


# Counts per status and per priority: every status (priority) is a property, 0 when none, so
# clients (and generated ones) read `by_status.done`, not a map that may lack the key.
StatusCountsSchema = Schema.from_dict({name: fields.Integer(required=True) for name in STATUSES}, name="StatusCounts")
PriorityCountsSchema = Schema.from_dict({name: fields.Integer(required=True) for name in PRIORITIES},
                                        name="PriorityCounts")


class DashboardSchema(Schema):
    total = fields.Integer(required=True)
    by_status = fields.Nested(StatusCountsSchema, required=True)
    by_priority = fields.Nested(PriorityCountsSchema, required=True)
    overdue = fields.Integer(required=True, metadata={"description": "Open, due_at < now."})
    due_today = fields.Integer(required=True, metadata={"description": "Open, now <= due_at < next UTC midnight."})
    due_next_7_days = fields.Integer(required=True, metadata={"description": "Open, now <= due_at < now + 7 days."})
    completed_last_7_days = fields.Integer(required=True, metadata={"description": "completed_at >= now - 7 days."})
    completion_rate = fields.Float(required=True, metadata={"description": "done / total, 0..1 (0 with no tasks)."})
    generated_at = Timestamp(required=True)
    users = fields.Integer(metadata={"description": "Number of users; only with scope=global."})


class DaySchema(Schema):
    date = fields.String(required=True, metadata={"example": "2026-11-30"})
    created = fields.Integer(required=True)
    completed = fields.Integer(required=True)


class CompletionsSchema(Schema):
    days = fields.List(fields.Nested(DaySchema), required=True)
