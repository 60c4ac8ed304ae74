"""The Task document, the task rules (defaults, derived fields, open statuses) and the indexes
that serve every list query shape. Queries go through `tasks()`, the document's collection.

Sort keys stored beside the fields they order:
  priority_rank  0..3 for low..urgent, so `sort=priority` orders by rank, not by name;
  due_key_asc    due_at, or the maximum date when there is none (ascending: no due date last);
  due_key_desc   due_at, or the minimum date when there is none (descending: no due date last).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from mongoengine import DateTimeField, Document, IntField, ListField, ObjectIdField, StringField
from pymongo.collection import Collection

STATUSES = ("todo", "in_progress", "done")
DONE = "done"
OPEN_STATUSES = ("todo", "in_progress")  # what "overdue" and the open counts look at
PRIORITIES = ("low", "medium", "high", "urgent")
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}
NO_DUE_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
NO_DUE_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)

# The fields a client writes, and what a new task (or a PUT) has where the client says nothing.
WRITABLE = ("title", "description", "status", "priority", "due_at", "tags", "remind_at")
DEFAULTS: dict[str, Any] = {"description": "", "status": "todo", "priority": "medium", "due_at": None, "tags": [],
                            "remind_at": None}


def derived_fields(values: dict[str, Any], *, previous_status: str | None, previous_completed: datetime | None,
                   now: datetime, previous_remind_at: datetime | None = None,
                   previous_reminded_at: datetime | None = None) -> dict[str, Any]:
    """`values` (every writable field) with what follows from them: the sort keys, completed_at
    (set when a task becomes done, kept while it stays done, cleared otherwise) and the reminder
    state (reminded_at cleared when remind_at changes; remind_due set while a reminder is armed)."""
    derived = dict(values)
    derived["priority_rank"] = PRIORITY_RANK[values["priority"]]
    due = values["due_at"]
    derived["due_key_asc"] = due or NO_DUE_LATEST
    derived["due_key_desc"] = due or NO_DUE_EARLIEST
    if values["status"] == DONE:
        derived["completed_at"] = previous_completed if previous_status == DONE else now
    else:
        derived["completed_at"] = None
    remind_at = values["remind_at"]
    derived["reminded_at"] = None if remind_at != previous_remind_at else previous_reminded_at
    derived["remind_due"] = remind_due(remind_at, values["status"], derived["reminded_at"])
    return derived


def remind_due(remind_at: datetime | None, status: str, reminded_at: datetime | None) -> datetime | None:
    """When the armed reminder of a task is due: its remind_at while it has not fired and the task
    is not done, else None. The notification worker looks for due reminders by this field alone."""
    return remind_at if remind_at is not None and status != DONE and reminded_at is None else None

# Sort name (API) -> stored key; each has an index family below.
SORT_KEYS = {
    "created_at": "created_at",
    "updated_at": "updated_at",
    "priority": "priority_rank",
    "due_at": "due_key_asc",  # ascending use
    "-due_at": "due_key_desc",  # descending use
}


def index_name(prefix: tuple[str, ...], sort_key: str) -> str:
    return "_".join(("tasks",) + tuple(p for p in prefix if p != "owner") + (sort_key,))


def _family(prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    """One index per sort key: equality prefix, then the sort key, then _id (the tie-breaker)."""
    keys = sorted(set(SORT_KEYS.values()), key=list(SORT_KEYS.values()).index)
    return [{"fields": [*prefix, key, "_id"], "name": index_name(prefix, key)} for key in keys]


TASK_INDEXES = (
    _family(("owner",))  # owner + sort: every query without a status or tag filter
    + _family(("owner", "status"))  # owner + status (equality or $in) + sort
    + [{"fields": ["owner", "tags", "created_at", "_id"], "name": "tasks_tags_created_at"}]  # tag + default sort
)
# The notification worker's query for reminders that are due (every engine keeps it).
REMINDER_INDEX = {"fields": ["remind_due"], "name": "tasks_remind_due"}


# The embedded SecantusDB keeps only the five (owner, sort key, _id) indexes: it rewrites every
# index entry of a task on each update (about 0.3 ms per index, measured), and its planner
# narrows a query by owner and one range on an index's next field, nothing more, so the status
# and tag indexes help no read there (services/tasks.py, plan_flat). Migration 0003 drops them
# there; `db upgrade` creates the declared set that fits the server.
EMBEDDED_TASK_INDEXES = (*(index_name(("owner",), key) for key in dict.fromkeys(SORT_KEYS.values())),
                         REMINDER_INDEX["name"])
EMBEDDED_RANGE_KEYS = frozenset(SORT_KEYS.values())  # each has an (owner, key, _id) index there


def indexes_for(engine: str) -> list[dict[str, Any]]:
    """The task indexes a server of this engine should have."""
    if engine == "secantus":
        return [spec for spec in (*TASK_INDEXES, REMINDER_INDEX) if spec["name"] in EMBEDDED_TASK_INDEXES]
    return [*TASK_INDEXES, REMINDER_INDEX]


class Task(Document):
    owner = ObjectIdField(required=True)
    title = StringField(required=True, max_length=200)
    description = StringField(default="", max_length=5000)
    status = StringField(required=True, choices=STATUSES, default="todo")
    priority = StringField(required=True, choices=PRIORITIES, default="medium")
    priority_rank = IntField(required=True, min_value=0, max_value=3)
    due_at = DateTimeField(null=True)
    due_key_asc = DateTimeField(required=True)
    due_key_desc = DateTimeField(required=True)
    tags = ListField(StringField(max_length=32), max_length=20)
    completed_at = DateTimeField(null=True)
    remind_at = DateTimeField(null=True)
    reminded_at = DateTimeField(null=True)  # when the reminder for this remind_at fired
    remind_due = DateTimeField(null=True)  # remind_at while armed (see remind_due()), else null
    created_at = DateTimeField(required=True)
    updated_at = DateTimeField(required=True)
    version = IntField(required=True, min_value=1, default=1)

    meta = {
        "collection": "tasks",
        # Created by migrations/0002_tasks.py; a test checks the two agree.
        "indexes": [*TASK_INDEXES, REMINDER_INDEX],
        "auto_create_index": False,
        "auto_create_index_on_save": False,
    }


def tasks() -> Collection[dict[str, Any]]:
    """The tasks collection (pymongo): every task query goes through it, as plain documents.
    The Task document above declares the fields and the indexes (created by migrations)."""
    return cast("Collection[dict[str, Any]]", Task._get_collection())
