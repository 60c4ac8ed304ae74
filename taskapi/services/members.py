"""The tasks service's side of the account facts: its own copy of what it needs to know about
each account (models/member.py), kept up to date from what the auth service announces.

In the monolith (TASKAPI_SERVICE=all) the auth code applies each change here itself, in the
transaction of the account change (the factory hands it this module); in a split deployment the
auth service's worker relays its outbox (`account_events`) over the broker, and the tasks
service's worker applies each message (worker: `taskapi.account`). Either way the tasks side
never reads `users`, and the auth side never reads or writes a task.

Facts: {"id", "email", "active", "token_gen", "gone"}. Every change of `active` raises the
token generation, so a state with a lower generation than the stored one is older and is
ignored; a tombstone (`gone`) is final: the account's ids are never reused.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo.client_session import ClientSession

from taskapi.clock import utcnow
from taskapi.models.member import members
from taskapi.services import tasks, webhooks

Facts = dict[str, Any]


def apply(facts: Facts, session: ClientSession | None = None) -> None:
    """Store an account's state unless a newer one (or its tombstone) is stored already; a
    tombstone also erases the account's tasks, webhooks, deliveries and events (`forget`)."""
    oid = ObjectId(facts["id"])
    now = utcnow()
    if facts.get("gone"):
        members().update_one({"_id": oid}, {"$set": {"gone": True, "active": False, "updated_at": now},
                                            "$setOnInsert": {"email": facts["email"], "token_gen": facts["token_gen"]}},
                             upsert=True, session=session)
        return
    state = {"email": facts["email"], "active": facts["active"], "token_gen": facts["token_gen"], "updated_at": now}
    newer_or_equal = {"_id": oid, "gone": {"$exists": False}, "token_gen": {"$lte": facts["token_gen"]}}
    if members().update_one(newer_or_equal, {"$set": state}, session=session).matched_count:
        return
    if members().find_one({"_id": oid}, {"_id": 1}, session=session) is None:  # a new account
        members().insert_one({"_id": oid, **state}, session=session)


def forget(owner: str) -> dict[str, int]:
    """Erase everything the tasks service holds for an account (safe to run again)."""
    removed = tasks.erase_owner_data(owner=owner)
    removed.update(webhooks.erase_owner_data(owner=owner))  # and nothing more is sent for them
    return removed


def receive(facts: Facts) -> dict[str, int]:
    """One announcement from the auth service (the worker's `taskapi.account`): a deletion
    erases the account's data first, then leaves the tombstone."""
    removed = forget(facts["id"]) if facts.get("gone") else {}
    apply(facts)
    return removed


def count() -> int:
    """Accounts that exist (tombstones are few and indexed: the estimate minus them)."""
    return max(0, members().estimated_document_count() - members().count_documents({"gone": True}))


def durable_generation(user_id: str) -> int | None:
    """The token generation the tasks side knows for this account; None for an unknown or deleted
    one (http/auth then refuses its tokens)."""
    if not ObjectId.is_valid(user_id):
        return None
    member = members().find_one({"_id": ObjectId(user_id)}, {"token_gen": 1, "gone": 1})
    if member is None or member.get("gone"):
        return None
    return int(member["token_gen"])
