"""Outgoing mail, an outbox like events: a row is written with the change that causes it (a
reminder firing, a password reset) and sent by the notification worker, never in a request.

  {_id, to, subject, text, kind, created_at, attempts, status: pending | sent | failed | dropped, error,
   due_at (present only while pending), lease_until, queued_until, sent_at}
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from bson import ObjectId
from mongoengine import DateTimeField, Document, IntField, StringField
from pymongo.collection import Collection

MAIL_PENDING, MAIL_SENT, MAIL_FAILED = "pending", "sent", "failed"
MAIL_DROPPED = "dropped"  # nothing to send: a password reset for an address without an active account
PASSWORD_RESET = "password_reset"
REMINDER = "reminder"


class Mail(Document):
    to = StringField(required=True)
    subject = StringField(required=True)
    text = StringField(required=True)
    kind = StringField(required=True)  # "reminder", "password_reset"
    created_at = DateTimeField(required=True)
    attempts = IntField(default=0)
    status = StringField(required=True, choices=(MAIL_PENDING, MAIL_SENT, MAIL_FAILED, MAIL_DROPPED))
    error = StringField(null=True)
    due_at = DateTimeField(null=True)
    lease_until = DateTimeField(null=True)
    queued_until = DateTimeField(null=True)
    sent_at = DateTimeField(null=True)

    meta = {
        "collection": "mails",
        # Created by migrations/0004_notifications.py; a test checks the two agree.
        "indexes": [
            {"fields": ["due_at"], "name": "mails_due_at", "sparse": True},
            {"fields": ["created_at"], "name": "mails_retention", "expireAfterSeconds": 30 * 86400},
        ],
        "auto_create_index": False,
        "auto_create_index_on_save": False,
    }


def mails() -> Collection[dict[str, Any]]:
    """The mails collection (pymongo, plain documents)."""
    return cast("Collection[dict[str, Any]]", Mail._get_collection())


NOT_YET = datetime(1970, 1, 1, tzinfo=UTC)  # lease_until / queued_until of a row nobody holds


def new_mail(*, to: str, subject: str, text: str, kind: str, now: datetime) -> dict[str, Any]:
    """A mails row waiting to be sent (due now)."""
    return {"_id": ObjectId(), "to": to, "subject": subject, "text": text, "kind": kind, "created_at": now,
            "attempts": 0, "status": MAIL_PENDING, "error": None, "due_at": now, "lease_until": NOT_YET,
            "queued_until": NOT_YET, "sent_at": None}
