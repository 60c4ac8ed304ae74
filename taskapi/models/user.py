"""The User document: unique lower-cased email, argon2id hash, role, active flag. Queries go
through `users()`, the document's collection; `new_user` builds a document with its defaults."""

from __future__ import annotations

from typing import Any, cast

from mongoengine import BooleanField, DateTimeField, DictField, Document, IntField, StringField
from pymongo.collection import Collection

from taskapi.clock import utcnow

ROLES = ("user", "admin")


class User(Document):
    email = StringField(required=True, max_length=254)
    name = StringField(default="", max_length=100)
    password_hash = StringField(required=True)
    role = StringField(required=True, choices=ROLES, default="user")
    active = BooleanField(required=True, default=True)
    # The durable token generation: tokens carry the generation they were issued in, and
    # logout-all, a password change, a role change and deactivation raise it. Redis keeps
    # a mirror (read on every request); this copy survives the loss of that mirror.
    token_gen = IntField(required=True, default=0, min_value=0)
    # Raised by every transaction that announces the account to the tasks service
    # (services/auth.record_account): it orders those announcements.
    facts_version = IntField(default=0, min_value=0)
    created_at = DateTimeField(required=True, default=utcnow)
    updated_at = DateTimeField(required=True, default=utcnow)
    # The one password-reset token that works: {hash: sha256 hex of the token, expires_at};
    # set by the worker when it sends the email, removed when the token is used.
    password_reset = DictField(null=True)

    meta = {
        "collection": "users",
        # Created by migrations/0001_users.py and 0005_password_reset.py; tests check they agree.
        "indexes": [{"fields": ["email"], "unique": True, "name": "email_unique"},
                    {"fields": ["password_reset.hash"], "sparse": True, "name": "password_reset_hash"}],
        "auto_create_index": False,
        "auto_create_index_on_save": False,
    }


UserDoc = dict[str, Any]  # a users document as pymongo returns it


def users() -> Collection[dict[str, Any]]:
    """The users collection (pymongo): every user query goes through it, as plain documents."""
    return cast("Collection[dict[str, Any]]", User._get_collection())


def new_user(**fields: Any) -> dict[str, Any]:
    """A users document for insert_one: the given fields, validated by the User document, with
    its defaults (role user, active, generation 0, timestamps now)."""
    user = User(**fields)
    user.validate()
    return cast(dict[str, Any], user.to_mongo().to_dict())


class AccountEvent(Document):
    """The auth service's outbox of account facts (services/auth.record_account): written in the
    transaction of the change it describes, relayed by the auth service's worker to the tasks
    service's (`taskapi.account` messages), then kept 30 days without `due_at`.

      {_id, facts: {id, email, active, token_gen, gone, version}, created_at,
       due_at (only while waiting), relayed_at (once relayed; kept 30 days from then)}
    """

    facts = DictField(required=True)
    created_at = DateTimeField(required=True)
    due_at = DateTimeField(null=True)
    relayed_at = DateTimeField(null=True)

    meta = {
        "collection": "account_events",
        # Created by migrations/0006_members.py; a test checks the two agree.
        "indexes": [{"fields": ["due_at"], "sparse": True, "name": "account_events_due_at"},
                    {"fields": ["relayed_at"], "name": "account_events_retention", "expireAfterSeconds": 30 * 86400}],
        "auto_create_index": False,
        "auto_create_index_on_save": False,
    }


def account_events() -> Collection[dict[str, Any]]:
    """The account_events collection (pymongo, plain documents)."""
    return cast("Collection[dict[str, Any]]", AccountEvent._get_collection())
