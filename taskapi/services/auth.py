"""Accounts: registration, authentication, profile and password changes.

Users travel as plain documents (the dicts pymongo reads through models.user.users()).
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from flask import current_app
from pymongo import ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.errors import DuplicateKeyError

from taskapi.clock import aware, utcnow
from taskapi.errors import Conflict, Unauthorized, ValidationFailed
from taskapi.extensions import in_transaction
from taskapi.ids import parse_token_subject
from taskapi.models.mail import PASSWORD_RESET, mails, new_mail
from taskapi.models.user import UserDoc, account_events, new_user, users
from taskapi.services import tokens

BAD_CREDENTIALS = "The email or password is incorrect."


def register(*, email: str, password: str, name: str = "") -> UserDoc:
    user = new_user(email=email, name=name, password_hash=tokens.hash_password(password))
    insert_user(user)
    return user


def insert_user(user: UserDoc) -> None:
    """A new account and its announcement, in one transaction; 409 if the email is taken."""

    def write(session: ClientSession) -> None:
        users().insert_one(user, session=session)
        record_account(user["_id"], session)

    try:
        in_transaction(write)
    except DuplicateKeyError as exc:
        if not email_taken(exc):  # another unique key: a bug, not the user's conflict
            raise
        raise Conflict("An account with this email already exists.") from None


def email_taken(exc: DuplicateKeyError) -> bool:
    """The duplicate is the address (users' `email_unique`), by the key MongoDB names, or by
    the index name in the message where the server names no key (SecantusDB)."""
    details = exc.details or {}
    return "email" in (details.get("keyPattern") or {}) or "email_unique" in str(details.get("errmsg") or exc)


# --- account facts for the tasks service ----------------------------------------------------------
#
# The tasks service keeps its own copy of what it needs of each account (services/members.py:
# reminder address, active, token generation, deletion). Each change of those is announced in
# the transaction that makes it: in the monolith straight into that copy (the factory puts the
# members module in app.extensions["members"]), in the auth service as a row of its outbox,
# which its worker relays over the broker (worker: `accounts` loop, `taskapi.account`).

def account_facts(user_id: ObjectId, user: UserDoc | None) -> dict[str, Any]:
    """What the tasks service is told of an account; `user` None: it was deleted. `version`
    orders the announcements of one account (every announcing transaction raises it)."""
    if user is None:
        return {"id": str(user_id), "email": "", "active": False, "token_gen": 0, "gone": True, "version": 0}
    return {"id": str(user_id), "email": user["email"], "active": user["active"],
            "token_gen": user.get("token_gen", 0), "gone": False, "version": user.get("facts_version", 0)}


def record_account(user_id: ObjectId, session: ClientSession | None) -> None:
    """Announce the account's state as this transaction leaves it, with the next version (the
    increment also makes two concurrent changes of one account conflict, so one retries)."""
    user = users().find_one_and_update({"_id": user_id}, {"$inc": {"facts_version": 1}},
                                       projection={"email": 1, "active": 1, "token_gen": 1, "facts_version": 1},
                                       return_document=ReturnDocument.AFTER, session=session)
    facts = account_facts(user_id, user)
    local = current_app.extensions.get("members")
    if local is not None:
        local.apply(facts, session=session)
    else:
        account_events().insert_one({"_id": ObjectId(), "facts": facts, "created_at": utcnow(), "due_at": utcnow()},
                                    session=session)


def announce_all(batch: int = 500) -> int:
    """Announce every account again (`flask --app wsgi users announce`): a tasks service given a
    database of its own, or a monolith upgraded while older replicas still ran, gets a complete
    copy. Safe at any time: each account is announced at its current version."""
    done = 0
    last: ObjectId | None = None
    while True:
        query = {"_id": {"$gt": last}} if last else {}
        page = [user["_id"] for user in users().find(query, {"_id": 1}).sort("_id", 1).limit(batch)]
        if not page:
            return done
        for user_id in page:
            in_transaction(functools.partial(record_account, user_id))
        done += len(page)
        last = page[-1]


def account_events_to_relay(limit: int) -> list[dict[str, Any]]:
    """Announcements waiting for the worker, oldest first."""
    waiting = account_events().find({"due_at": {"$lte": utcnow()}}, {"facts": 1})
    return list(waiting.sort([("due_at", 1), ("_id", 1)]).limit(limit))


def account_events_relayed(ids: list[ObjectId]) -> None:
    """Relayed: kept 30 days from now (the TTL counts from `relayed_at`, so a row the broker never
    took is never removed)."""
    if ids:
        account_events().update_many({"_id": {"$in": ids}}, {"$unset": {"due_at": ""}, "$set": {"relayed_at": utcnow()}})


def durable_generation(user_id: str) -> int | None:
    """The token generation stored with the account (None: no such account), for a lost Redis mirror."""
    if not ObjectId.is_valid(user_id):
        return None
    user = users().find_one({"_id": ObjectId(user_id)}, {"token_gen": 1})
    return None if user is None else int(user.get("token_gen", 0))


def authenticate(*, email: str, password: str) -> tuple[UserDoc, int]:
    """The user for these credentials and the token generation to issue with.

    Unknown email, wrong password and a deactivated account all raise the same 401, after the
    same argon2 work. The generation is read before the (slow) verification and the account
    is read again after it: a password change, logout-all or deactivation that lands while the
    hash is being checked either bumps a generation this login's tokens already carry, or is
    seen by the second read. Either way no token outlives it.
    """
    user = users().find_one({"email": email})
    if user is None:
        tokens.burn_verify_time(password)
        raise Unauthorized(BAD_CREDENTIALS, error=None)
    generation = tokens.token_generation(str(user["_id"]), user.get("token_gen", 0))
    if not tokens.verify_password(user["password_hash"], password) or not user["active"]:
        raise Unauthorized(BAD_CREDENTIALS, error=None)
    now = users().find_one({"_id": user["_id"]}, {"password_hash": 1, "active": 1, "token_gen": 1})
    if (now is None or now["password_hash"] != user["password_hash"] or not now["active"]
            or now.get("token_gen", 0) > generation):
        raise Unauthorized(BAD_CREDENTIALS, error=None)
    if tokens.needs_rehash(user["password_hash"]):
        # Parameters changed since this hash was made: upgrade it while we hold the password.
        users().update_one({"_id": user["_id"], "password_hash": user["password_hash"]},
                           {"$set": {"password_hash": tokens.hash_password(password)}})
    return user, generation


def refresh(claims: dict[str, Any]) -> dict[str, Any]:
    """Rotate the session, after reading the account again: a deleted, deactivated or revoked
    account cannot refresh, even if its Redis state was lost."""
    user = users().find_one({"_id": parse_token_subject(claims["sub"])}, {"active": 1, "token_gen": 1, "role": 1})
    if user is None or not user["active"] or user.get("token_gen", 0) > claims["gen"]:
        tokens.end_session(claims["sid"])
        raise Unauthorized("The token's account is not available.")
    tokens.token_generation(claims["sub"], user.get("token_gen", 0))  # restore a lost mirror before rotating
    return tokens.rotate_session(claims, role=user["role"])


def revoke_and_update(user_id: ObjectId, durable_generation: int, **changes: Any) -> int:
    """Revoke every token of the user, then store `changes` with the new generation.

    Revocation first: if Redis refuses, the RedisError (503) leaves everything as it was; if
    MongoDB then fails, the tokens are revoked and the change is not stored (stronger than
    the write, never weaker). Returns the new generation.
    """
    generation = tokens.revoke_all_tokens(str(user_id), durable_generation)

    def write(session: ClientSession) -> None:
        users().update_one({"_id": user_id}, {"$set": {**changes, "updated_at": utcnow()},
                                              "$max": {"token_gen": generation}}, session=session)
        record_account(user_id, session)

    in_transaction(write)
    return generation


def logout_all(*, user_id: str) -> None:
    """Every token of the user, on every device, stops working now."""
    user = users().find_one({"_id": parse_token_subject(user_id)}, {"token_gen": 1})
    if user is None:
        raise Unauthorized("The token's account is not available.")
    revoke_and_update(user["_id"], user.get("token_gen", 0))


def current_user(user_id: str) -> UserDoc:
    """The caller's account, loaded only by routes that need more than the token says."""
    user = users().find_one({"_id": parse_token_subject(user_id)})
    if user is None or not user["active"]:
        raise Unauthorized("The token's account is not available.")
    return user


def update_profile(*, user: UserDoc, name: str) -> UserDoc:
    now = utcnow()
    users().update_one({"_id": user["_id"]}, {"$set": {"name": name, "updated_at": now}})
    return {**user, "name": name, "updated_at": now}


def change_password(*, user: UserDoc, current_password: str, new_password: str) -> None:
    """Verify, revoke every token of the user (this one included), then store the new hash."""
    if not tokens.verify_password(user["password_hash"], current_password):
        raise ValidationFailed(errors={"current_password": ["The current password is incorrect."]})
    if current_password == new_password:
        raise ValidationFailed(errors={"new_password": ["The new password must differ from the current one."]})
    revoke_and_update(user["_id"], user.get("token_gen", 0), password_hash=tokens.hash_password(new_password))
    users().update_one({"_id": user["_id"]}, {"$unset": {"password_reset": ""}})  # a pending reset link dies too


# --- password reset ---------------------------------------------------------------------------
#
# A request only queues an email (the same one write for every address, so the answer tells
# nothing and takes the same time); the notification worker, when it sends it, looks the
# address up, makes the token and stores its hash (issue_reset_token): an address without an
# active account gets nothing. The token itself is only ever in the email. The account keeps
# one hash: a newer email's token replaces an older one, and using it removes it.

RESET_SUBJECT = "Reset your taskapi password"
BAD_RESET_TOKEN = "This reset token is invalid, used, replaced by a newer one or expired; request a new one."


def _reset_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def request_password_reset(*, email: str) -> None:
    mails().insert_one(new_mail(to=email, subject=RESET_SUBJECT, text="(written when sent)", kind=PASSWORD_RESET,
                                now=utcnow()))


def issue_reset_token(email: str, now: datetime) -> str | None:
    """For the worker, at sending time: a new token for the active account with this email (its
    hash replaces any earlier one), or None when there is none."""
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(seconds=current_app.config["PASSWORD_RESET_TTL_SECONDS"])
    updated = users().update_one({"email": email, "active": True},
                                 {"$set": {"password_reset": {"hash": _reset_digest(token), "expires_at": expires}}})
    return token if updated.matched_count else None


def reset_letter(letter: dict[str, Any], now: datetime) -> str | None:
    """The text of a password-reset email as it is sent, with a new token in it; None when no
    active account has the address (the row is then dropped). services/mailbox.send_mail calls it."""
    token = issue_reset_token(letter["to"], now)
    return None if token is None else reset_mail_text(token)


def reset_mail_text(token: str) -> str:
    link = current_app.config["PASSWORD_RESET_URL"].replace("{token}", token)  # url-safe already; no other braces read
    minutes = current_app.config["PASSWORD_RESET_TTL_SECONDS"] // 60
    return (f"Someone asked to reset the password of your taskapi account.\n\n"
            f"To choose a new password, open this link within {minutes} minutes:\n{link}\n\n"
            f"It works once, and only until you ask for another one. If you did not ask, ignore this "
            f"email: your password stays as it is.\n")


def confirm_password_reset(*, token: str, new_password: str) -> None:
    """Set the password of the token's account and revoke every token of it (as a password
    change); a used, expired, replaced or unknown token is 422 on `token`."""
    digest = _reset_digest(token)
    user = users().find_one({"password_reset.hash": digest}, {"active": 1, "token_gen": 1, "password_reset": 1})
    expires = user["password_reset"].get("expires_at") if user else None
    if user is None or not user["active"] or expires is None or aware(expires) <= utcnow():
        raise ValidationFailed(errors={"token": [BAD_RESET_TOKEN]})
    new_hash = tokens.hash_password(new_password)  # before revoking: a login in between must see both changes
    generation = tokens.revoke_all_tokens(str(user["_id"]), user.get("token_gen", 0))

    def write(session: ClientSession) -> bool:
        used = users().update_one({"_id": user["_id"], "password_reset.hash": digest},
                                  {"$set": {"password_hash": new_hash, "updated_at": utcnow()},
                                   "$unset": {"password_reset": ""}, "$max": {"token_gen": generation}},
                                  session=session)
        if used.modified_count:
            record_account(user["_id"], session)
        return bool(used.modified_count)

    if not in_transaction(write):  # used by a concurrent confirm meanwhile
        raise ValidationFailed(errors={"token": [BAD_RESET_TOKEN]})
