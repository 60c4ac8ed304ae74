"""Task schemas: create / replace / patch bodies, list query arguments, the task and its page."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from marshmallow import Schema, ValidationError, fields, pre_load, validate

from taskapi.models.task import PRIORITIES, STATUSES
from taskapi.schemas.common import VISIBLE_NO_CONTROL, PageQuerySchema, Text, Timestamp

TAG_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
TAG_INPUT = r"^[A-Za-z0-9_-]{1,32}$"  # as clients may send it; stored lower-cased
TAG_LIST_INPUT = r"^[A-Za-z0-9_-]{1,32}(,[A-Za-z0-9_-]{1,32})*$"
DESCRIPTION_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # tabs and newlines allowed
SEARCH_PATTERN = r"^[^\x00-\x1f\x7f]+$"
# Due dates and filters live in the years 1970..2999: a product limit, and far from the
# sentinel dates the due sort keys use for "no due date" (years 1 and 9999).
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC)
INSTANT_PATTERN = r"^(19[7-9][0-9]|2[0-9]{3})-"
READ_ONLY = ("id", "owner", "version", "created_at", "updated_at", "completed_at", "reminded_at")
SORTS = ("created_at", "-created_at", "updated_at", "-updated_at", "due_at", "-due_at", "priority", "-priority")


class InstantField(Timestamp):
    """An RFC 3339 timestamp that names its offset; stored in UTC at millisecond precision."""

    default_error_messages = {
        **Timestamp.default_error_messages,
        "naive": "Include a UTC offset (Z or ±hh:mm), e.g. 2026-12-01T09:00:00Z.",
        "range": "Must be in the years 1970 to 2999.",
    }

    def __init__(self, **kwargs):
        kwargs["metadata"] = {"pattern": INSTANT_PATTERN, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE)
        parsed = super()._deserialize(value.strip().replace("z", "Z"), attr, data, **kwargs)
        if parsed.tzinfo is None:
            raise self.make_error("naive")
        parsed = parsed.astimezone(UTC)
        if not EARLIEST <= parsed < LATEST:
            raise self.make_error("range")
        return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


MAX_TAGS = 20


class TagList(fields.List):
    """At most 20 tags of [A-Za-z0-9_-]{1,32}, stored lower-cased; duplicates merged, first kept."""

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {})
        kwargs["metadata"] = {"maxItems": MAX_TAGS, **kwargs["metadata"],
                              "description": "At most 20 tags of [A-Za-z0-9_-]{1,32}; lower-cased, duplicates merged."}
        super().__init__(fields.String(validate=validate.Regexp(TAG_INPUT)), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, list) and len(value) > MAX_TAGS:
            raise ValidationError(f"At most {MAX_TAGS} tags.")
        try:
            items = super()._deserialize(value, attr, data, **kwargs)
        except ValidationError as exc:
            if isinstance(exc.messages, dict):  # per-item pattern failures: say what a tag is
                raise ValidationError({i: ["Tags are 1 to 32 characters of a-z, 0-9, _ and -."] for i in exc.messages})
            raise
        tags: list[str] = []
        for item in items:
            if item.lower() not in tags:
                tags.append(item.lower())
        return tags


class TaskInputSchema(Schema):
    """The writable fields; server-owned ones are refused by name, anything else as unknown."""

    title = Text(required=True, max_length=200, pattern=VISIBLE_NO_CONTROL, trim=True,
                 pattern_error="Titles need a visible character and no control characters.",
                 metadata={"example": "Buy milk"})
    description = Text(load_default="", max_length=5000, pattern=DESCRIPTION_PATTERN,
                       pattern_error="No control characters other than tabs and newlines.",
                       metadata={"example": "Semi-skimmed, two litres"})
    status = fields.String(load_default="todo", validate=validate.OneOf(STATUSES))
    priority = fields.String(load_default="medium", validate=validate.OneOf(PRIORITIES))
    due_at = InstantField(load_default=None, allow_none=True, metadata={"example": "2026-12-01T17:00:00Z"})
    tags = TagList(load_default=list, metadata={"example": ["home", "errands"]})
    remind_at = InstantField(
        load_default=None, allow_none=True,
        metadata={"example": "2026-12-01T16:30:00Z",
                  "description": "When to remind the owner (a `task.reminder` webhook event and an email), or null. "
                                 "Fires once, within REMINDER_MAX_DELAY_SECONDS (default 60) of this time, unless "
                                 "the task is done; a time already past fires promptly. Changing it arms the "
                                 "reminder again; PUT without it clears it."})

    @pre_load
    def refuse_server_fields(self, data, **kwargs):
        if isinstance(data, dict):
            owned = sorted(field for field in READ_ONLY if field in data)
            if owned:
                raise ValidationError({field: ["This field is set by the server."] for field in owned})
        return data


class TaskPatchSchema(TaskInputSchema):
    """PATCH: any subset of the writable fields; a partial load applies no defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("partial", True)
        super().__init__(*args, **kwargs)


class TaskSchema(Schema):
    """A task as clients see it, dumped from the stored document (`_id` is its id)."""

    id = fields.String(attribute="_id", dump_only=True, metadata={"example": "6b0cf4e5d9870db21da3bdfa"})
    title = fields.String(dump_only=True)
    description = fields.String(dump_only=True)
    status = fields.String(dump_only=True, metadata={"enum": list(STATUSES)})
    priority = fields.String(dump_only=True, metadata={"enum": list(PRIORITIES)})
    due_at = Timestamp(dump_only=True, allow_none=True)
    tags = fields.List(fields.String(), dump_only=True)
    completed_at = Timestamp(dump_only=True, allow_none=True)
    remind_at = Timestamp(dump_only=True, allow_none=True)
    reminded_at = Timestamp(dump_only=True, allow_none=True, metadata={
        "description": "When the reminder for the current remind_at fired, else null."})
    created_at = Timestamp(dump_only=True)
    updated_at = Timestamp(dump_only=True)
    version = fields.Integer(dump_only=True, metadata={"example": 1})


class TaskPageSchema(Schema):
    items = fields.List(fields.Nested(TaskSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class CommaList(fields.String):
    """`a,b` in a query string: each item checked by `choices` or `pattern`, duplicates dropped."""

    def __init__(self, *, choices=None, pattern=None, **kwargs):
        self.choices, self.pattern = choices, pattern
        spec_pattern = (rf"^({'|'.join(choices)})(,({'|'.join(choices)}))*$" if choices else TAG_LIST_INPUT)
        kwargs["metadata"] = {"pattern": spec_pattern, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise ValidationError("Must be a comma-separated list.")
        items = []
        for item in value.split(","):
            if self.pattern is not None:
                item = item.lower()  # tags are case-insensitive; statuses and priorities are exact
            if self.choices is not None and item not in self.choices:
                raise ValidationError(f"Each value must be one of: {', '.join(self.choices)}.")
            if self.pattern is not None and not self.pattern.match(item):
                raise ValidationError("Tags are 1 to 32 characters of a-z, 0-9, _ and -.")
            if item not in items:
                items.append(item)
        return items


class TaskQuerySchema(PageQuerySchema):
    status = CommaList(choices=STATUSES, metadata={"description": "Comma list, any of: " + ", ".join(STATUSES)})
    priority = CommaList(choices=PRIORITIES, metadata={"description": "Comma list, any of: " + ", ".join(PRIORITIES)})
    tag = CommaList(pattern=TAG_RE, metadata={"description": "Comma list of tags; a task matches if it has any."})
    due_before = InstantField(metadata={"description": "due_at < this (exclusive); drops tasks without due_at."})
    due_after = InstantField(metadata={"description": "due_at >= this (inclusive); drops tasks without due_at."})
    overdue = fields.Boolean(
        truthy={"true"}, falsy={"false"},
        metadata={"description": "true: open (not done) with due_at < now; false: every other task."})
    q = fields.String(validate=[validate.Length(min=1, max=100),
                                validate.Regexp(SEARCH_PATTERN, error="No control characters.")],
                      metadata={"description": "Case-insensitive literal substring of title or description."})
    sort = fields.String(load_default="-created_at", validate=validate.OneOf(SORTS),
                         metadata={"description": "Sort field, `-` for descending; ties broken by id.",
                                   # member names for generated clients (CREATED_AT_DESC, not VALUE_1)
                                   "x-enum-varnames": [name.lstrip("-").upper() + ("_DESC" if name.startswith("-") else "")
                                                       for name in SORTS]})
