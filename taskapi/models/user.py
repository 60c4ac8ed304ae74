"""The User document: unique lower-cased email, argon2id hash, role, active flag."""

from __future__ import annotations

from mongoengine import BooleanField, DateTimeField, Document, IntField, StringField

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
    created_at = DateTimeField(required=True, default=utcnow)
    updated_at = DateTimeField(required=True, default=utcnow)

    meta = {
        "collection": "users",
        # Created by migrations/0001_users.py; tests check the two agree.
        "indexes": [{"fields": ["email"], "unique": True, "name": "email_unique"}],
        "auto_create_index": False,
        "auto_create_index_on_save": False,
    }
