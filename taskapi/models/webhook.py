"""Webhook endpoints and their delivery log.

A webhook:  {_id, owner, url, events, description, active, disabled_reason,
             secrets: [{"value": "whsec_...", "expires_at": None | when a rotated-out secret stops signing}],
             failing_since (first failure of the current run of failures, else None), created_at, updated_at}

A delivery is one attempt to send one event to one webhook: the log shows every attempt.
  {_id, owner, webhook, event, event_type, event_created_at, attempt (1, 2, ...), manual (a redelivery),
   status: pending | succeeded | failed, response_status, duration_ms, error,
   created_at, next_attempt_at (pending: when it runs; failed: when the retry runs, None when final),
   due_at (present only while pending: when it may run),
   sweep_at (present only while pending: when the worker's sweep looks at it again),
   payload (the JSON body, rendered once at fan-out: every attempt of the event sends the same bytes)}
While an attempt runs, its lease is a Redis key (services/notifications.py), not a field here.
"""

from __future__ import annotations

from typing import Any, cast

from mongoengine import (
    BinaryField,
    BooleanField,
    DateTimeField,
    Document,
    IntField,
    ListField,
    ObjectIdField,
    StringField,
)
from pymongo.collection import Collection

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


class Webhook(Document):
    owner = ObjectIdField(required=True)
    url = StringField(required=True, max_length=2048)
    events = ListField(StringField(), required=True)
    description = StringField(default="", max_length=500)
    active = BooleanField(required=True, default=True)
    disabled_reason = StringField(null=True)
    secrets = ListField(required=True)
    failing_since = DateTimeField(null=True)
    created_at = DateTimeField(required=True)
    updated_at = DateTimeField(required=True)

    meta = {
        "collection": "webhooks",
        # Created by migrations/0004_notifications.py; a test checks the two agree.
        "indexes": [{"fields": ["owner", "_id"], "name": "webhooks_owner"}],
        "auto_create_index": False,
        "auto_create_index_on_save": False,
    }


class Delivery(Document):
    owner = ObjectIdField(required=True)
    webhook = ObjectIdField(required=True)
    event = ObjectIdField(required=True)
    event_type = StringField(required=True)
    event_created_at = DateTimeField(required=True)
    attempt = IntField(required=True, min_value=1)
    manual = BooleanField(default=False)
    status = StringField(required=True, choices=(PENDING, SUCCEEDED, FAILED))
    response_status = IntField(null=True)
    duration_ms = IntField(null=True)
    error = StringField(null=True)
    created_at = DateTimeField(required=True)
    next_attempt_at = DateTimeField(null=True)
    due_at = DateTimeField(null=True)
    sweep_at = DateTimeField(null=True)
    payload = BinaryField()  # the body receivers get, rendered once at fan-out

    meta = {
        "collection": "deliveries",
        # Created by migrations/0004_notifications.py and 0007_deliveries_by_owner.py; a test checks
        # they agree. One row per attempt: unique with the owner first, so that on a sharded
        # cluster (shard key {owner, event}: models.SHARD_KEYS) MongoDB can still enforce it.
        "indexes": [
            {"fields": ["owner", "webhook", "_id"], "name": "deliveries_log"},  # a webhook's log, newest first
            {"fields": ["owner", "event", "webhook", "attempt"], "name": "deliveries_owner_attempt", "unique": True},
            {"fields": ["sweep_at"], "name": "deliveries_sweep_at", "sparse": True},  # pending attempts
            {"fields": ["created_at"], "name": "deliveries_retention", "expireAfterSeconds": 30 * 86400},
        ],
        "auto_create_index": False,
        "auto_create_index_on_save": False,
    }


def webhooks() -> Collection[dict[str, Any]]:
    """The webhooks collection (pymongo, plain documents)."""
    return cast("Collection[dict[str, Any]]", Webhook._get_collection())


def deliveries() -> Collection[dict[str, Any]]:
    """The deliveries collection (pymongo, plain documents)."""
    return cast("Collection[dict[str, Any]]", Delivery._get_collection())
