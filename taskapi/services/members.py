"""The tasks service's side of the account facts: its own copy of what it needs to know about
each account (models/member.py), kept up to date from what the auth service announces.

In the monolith (TASKAPI_SERVICE=all) the auth code applies each change here itself, in the
transaction of the account change (the factory hands it this module); in a split deployment the
auth service's worker relays its outbox (`account_events`) over the broker, and the tasks
service's worker applies each message (worker: `taskapi.account`). Either way the tasks side
never reads `users`, and the auth side never reads or writes a task.

Facts: {"id", "email", "active", "token_gen", "gone", "version"}. Every announcing transaction
raises the account's version (and two concurrent ones conflict, so one retries), so a state whose
version is not above the stored one is older or a copy, and is ignored; a tombstone (`gone`) is
final: the account's ids are never reused.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo.client_session import ClientSession
from pymongo.errors import DuplicateKeyError

from taskapi.clock import utcnow
from taskapi.models.member import members
from taskapi.services import tasks, tokens, webhooks

Facts = dict[str, Any]


def apply(facts: Facts, session: ClientSession | None = None) -> bool:
    """Store an account's state unless a state of the same or a later version (or its tombstone)
    is stored already; returns whether it was stored. A tombstone is stored whatever came before."""
    oid = ObjectId(facts["id"])
    now = utcnow()
    if facts.get("gone"):
        members().update_one({"_id": oid}, {"$set": {"gone": True, "active": False, "updated_at": now},
                                            "$setOnInsert": {"email": facts["email"], "token_gen": facts["token_gen"],
                                                             "version": facts["version"]}},
                             upsert=True, session=session)
        return True
    state = {"email": facts["email"], "active": facts["active"], "token_gen": facts["token_gen"],
             "version": facts["version"], "updated_at": now}
    older = {"_id": oid, "gone": {"$exists": False}, "version": {"$lt": facts["version"]}}
    try:
        members().update_one(older, {"$set": state}, upsert=True, session=session)
    except DuplicateKeyError:  # the member exists with this version or a later one, or is gone
        if session is not None:  # inside a transaction the error has aborted it: let it retry or fail
            raise
        return False
    return True


def forget(owner: str) -> dict[str, int]:
    """Erase everything the tasks service holds for an account (safe to run again)."""
    removed = tasks.erase_owner_data(owner=owner)
    removed.update(webhooks.erase_owner_data(owner=owner))  # and nothing more is sent for them
    return removed


def receive(facts: Facts) -> dict[str, int]:
    """One announcement from the auth service (the worker's `taskapi.account`): a deletion
    erases the account's data first, then leaves the tombstone. The Redis mirror of the token
    generation is raised to the announced one (never lowered), so a mirror rebuilt from a copy
    that lagged is corrected as soon as the announcement arrives."""
    removed = forget(facts["id"]) if facts.get("gone") else {}
    apply(facts)
    if not facts.get("gone"):
        tokens.token_generation(facts["id"], facts["token_gen"])
    return removed


def count(read_preference: Any = None) -> int:
    """Accounts that exist (tombstones are few and indexed: the estimate minus them); the global
    stats pass their read preference (a secondary may answer)."""
    collection = members() if read_preference is None else members().with_options(read_preference=read_preference)
    return max(0, collection.estimated_document_count() - collection.count_documents({"gone": True}))


def durable_generation(user_id: str) -> int | None:
    """The token generation the tasks side knows for this account; None for an unknown or deleted
    one (http/auth then refuses its tokens)."""
    if not ObjectId.is_valid(user_id):
        return None
    member = members().find_one({"_id": ObjectId(user_id)}, {"token_gen": 1, "gone": 1})
    if member is None or member.get("gone"):
        return None
    return int(member["token_gen"])
