"""User administration: listing with keyset paging, role and activation changes, erasure.

Users travel as plain documents (the dicts pymongo reads through models.user.users())."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import Any

from bson import ObjectId
from flask import current_app
from pymongo.client_session import ClientSession

from taskapi.errors import Conflict, NotFound
from taskapi.extensions import get_db, in_transaction
from taskapi.ids import parse_object_id
from taskapi.models.user import UserDoc, new_user, users
from taskapi.services import tokens
from taskapi.services.auth import insert_user, record_account, revoke_and_update
from taskapi.services.locks import LEASES, lease
from taskapi.services.paging import decode_cursor, encode_cursor

CURSOR_SCOPE = "users"


def list_users(*, limit: int, cursor: str | None = None, email: str | None = None) -> tuple[list[UserDoc], str | None]:
    """A page of users by ascending id, optionally one exact email; returns (users, next_cursor)."""
    query_key = {"email": email.strip().lower() if email else None}
    query: dict[str, Any] = {}
    if query_key["email"]:
        query["email"] = query_key["email"]
    if cursor:
        (after,) = decode_cursor(CURSOR_SCOPE, query_key, cursor)
        query["_id"] = {"$gt": ObjectId(after)}
    found = list(users().find(query).sort("_id", 1).limit(limit + 1))
    next_cursor = encode_cursor(CURSOR_SCOPE, query_key, [str(found[limit - 1]["_id"])]) if len(found) > limit else None
    return found[:limit], next_cursor


NO_USER = "No user with this id."


def get_user(*, user_id: str) -> UserDoc:
    user = users().find_one({"_id": parse_object_id(user_id, NO_USER)})
    if user is None:
        raise NotFound(NO_USER)
    return user


def update_user(*, actor_id: str, user_id: str, role: str | None = None, active: bool | None = None) -> UserDoc:
    """Change role and/or active.

    A role change and a deactivation revoke every token of that user before they are stored
    (tokens carry the role; see services/auth.revoke_and_update). The last active admin can be
    neither demoted nor deactivated: admin changes that could remove one run under one lease,
    so two admins demoting each other at once cannot both succeed.
    """
    user = get_user(user_id=user_id)
    if str(user["_id"]) == actor_id and (role not in (None, "admin") or active is False):
        raise Conflict("Admins cannot demote or deactivate themselves; ask another admin.")
    changes = {name: value for name, value in (("role", role), ("active", active))
               if value is not None and value != user[name]}
    if not changes:
        return user
    removes_admin = user["role"] == "admin" and user["active"] and (changes.get("role") == "user"
                                                              or changes.get("active") is False)
    with admin_guard() if removes_admin else nullcontext():
        if removes_admin:
            require_another_admin(user["_id"])
        # Re-activation revokes too (the old tokens are dead already; new logins work): every
        # change of `active` raises the generation, which orders the tasks service's copies.
        revoke_and_update(user["_id"], user.get("token_gen", 0), **changes)
    return get_user(user_id=user_id)


def admin_guard() -> AbstractContextManager[object]:
    """The lease under which a change that removes an admin checks that another one remains."""
    return lease(get_db()[LEASES], "admins", hold=timedelta(seconds=10), wait_seconds=5,
                 busy="Another change of admins is in progress; retry shortly.")


def require_another_admin(user_id: ObjectId) -> None:
    if users().find_one({"_id": {"$ne": user_id}, "role": "admin", "active": True}, {"_id": 1}) is None:
        raise Conflict("This is the last active admin; promote another admin first.")


def delete_user(*, user_id: str) -> dict[str, int] | None:
    """Erasure: revoke every token first, then the account's data, then the account.

    In the monolith the tasks side's data is erased here, before the account (`members.forget`
    through app.extensions["members"]), and its counts returned. The auth service owns no task:
    the deletion is announced in its transaction, and the tasks service's worker erases the
    data when the announcement arrives (None is returned). Safe to run again if interrupted.
    """
    user = get_user(user_id=user_id)
    admin = user["role"] == "admin" and user["active"]
    with admin_guard() if admin else nullcontext():
        if admin:
            require_another_admin(user["_id"])
        revoke_and_update(user["_id"], user.get("token_gen", 0), active=False)
        local = current_app.extensions.get("members")
        removed = local.forget(str(user["_id"])) if local is not None else None

        def write(session: ClientSession) -> None:
            users().delete_one({"_id": user["_id"]}, session=session)
            record_account(user["_id"], session)

        in_transaction(write)
    return removed


def create_admin(*, email: str, password: str) -> tuple[UserDoc, bool]:
    """Create an admin, or promote (and re-activate) an existing account; returns (user, created).

    A promotion revokes the account's tokens (they carry the old role); its next login is an admin's.
    """
    user = users().find_one({"email": email})
    if user is None:
        user = new_user(email=email, role="admin", password_hash=tokens.hash_password(password))
        insert_user(user)
        return user, True
    if user["role"] != "admin" or not user["active"]:
        revoke_and_update(user["_id"], user.get("token_gen", 0), role="admin", active=True)
    return get_user(user_id=str(user["_id"])), False
