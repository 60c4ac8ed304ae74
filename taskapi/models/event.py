"""Domain events: the transactional outbox. A task write and its events are stored in one
MongoDB transaction (services/events.py), so an acknowledged write never loses its event; the
notification worker relays each event to the broker and then clears its `due_at`.

An event:  {_id, type, owner, created_at, data: {"task": <the task document as stored>},
            webhook: <id> (only for an event meant for one endpoint: webhook.ping), due_at}
`due_at` is present only while the event waits to be relayed; the worker finds those by it.
"""

from __future__ import annotations

from typing import Any, cast

from mongoengine import DateTimeField, DictField, Document, ObjectIdField, StringField
from pymongo.collection import Collection

TASK_EVENTS = ("task.created", "task.updated", "task.completed", "task.deleted", "task.reminder")
PING = "webhook.ping"
ALL_EVENTS = "*"


class Event(Document):
    type = StringField(required=True, choices=(*TASK_EVENTS, PING))
    owner = ObjectIdField(required=True)
    created_at = DateTimeField(required=True)
    data = DictField(required=True)
    webhook = ObjectIdField(null=True)
    due_at = DateTimeField(null=True)

    meta = {
        "collection": "events",
        # Created by migrations/0004_notifications.py; a test checks the two agree.
        "indexes": [
            {"fields": ["due_at"], "name": "events_due_at", "sparse": True},  # waiting to be relayed
            {"fields": ["created_at"], "name": "events_retention", "expireAfterSeconds": 30 * 86400},
        ],
        "auto_create_index": False,
        "auto_create_index_on_save": False,
    }


def events() -> Collection[dict[str, Any]]:
    """The events collection (pymongo, plain documents)."""
    return cast("Collection[dict[str, Any]]", Event._get_collection())
