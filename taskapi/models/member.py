"""Members: what the tasks service knows of each account, the tasks side's own copy of the
account facts the auth service announces (services/members.py): the address reminders go to,
whether the account is active, its token generation (to rebuild a lost Redis mirror without
reading `users`), and a tombstone once the account is deleted.

  {_id: the user's id, email, active, token_gen, version, gone: true (only once deleted), updated_at}

`version` is the auth side's `users.facts_version`, raised by every announcing transaction: an
announcement with a version not above the stored one is older (or the same) and changes nothing.
"""

from __future__ import annotations

from typing import Any, cast

from mongoengine import BooleanField, DateTimeField, Document, IntField, ObjectIdField, StringField
from pymongo.collection import Collection


class Member(Document):
    id = ObjectIdField(primary_key=True)  # the user's id at the auth service
    email = StringField(required=True)
    active = BooleanField(required=True)
    token_gen = IntField(required=True, min_value=0)
    version = IntField(required=True, min_value=0)
    gone = BooleanField(null=True)  # present (true) only on a deleted account's tombstone
    updated_at = DateTimeField(required=True)

    meta = {
        "collection": "members",
        # Created by migrations/0006_members.py; a test checks the two agree.
        "indexes": [{"fields": ["gone"], "sparse": True, "name": "members_gone"}],
        "auto_create_index": False,
        "auto_create_index_on_save": False,
    }


def members() -> Collection[dict[str, Any]]:
    """The members collection (pymongo, plain documents)."""
    return cast("Collection[dict[str, Any]]", Member._get_collection())
