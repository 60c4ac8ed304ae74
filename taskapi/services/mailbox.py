"""Mail rows (models/mail.py) on their way out, for either service: which are due, and sending
one over SMTP (services/mail.py) with its lease, retries and final state.

A row's text is stored when it is written, except where a `compose` function makes it at
sending time: the worker passes the auth side's password-reset letter (services/auth.reset_letter),
which makes the token only now, so that only the email ever holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from flask import current_app
from pymongo import ASCENDING

from taskapi.clock import utcnow
from taskapi.models.mail import MAIL_DROPPED, MAIL_FAILED, MAIL_SENT, mails
from taskapi.services import mail as smtp

log = logging.getLogger("taskapi.worker")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LEASE_MARGIN = timedelta(seconds=15)  # a lease outlives SMTP_TIMEOUT_SECONDS by this much
REQUEUE_AFTER = timedelta(seconds=10)  # a mail queued but not started by then is queued again
MAIL_MAX_ATTEMPTS = 6
BATCH = 200

Compose = Callable[[dict[str, Any], datetime], str | None]  # (row, now) -> its text, or None: drop it
Kinds = frozenset[str] | None  # the kinds of mail a worker sends (None: all)


def kinds_query(kinds: Kinds) -> dict[str, Any]:
    """The rows of these kinds (None: every kind). Two services sharing a database (on the way
    from the monolith to the split) each send only their own kinds of mail."""
    return {} if kinds is None else {"kind": {"$in": sorted(kinds)}}


def mails_to_publish(limit: int = BATCH, kinds: Kinds = None) -> list[ObjectId]:
    """Due rows of these kinds nobody holds or queued lately, marked queued (for REQUEUE_AFTER)."""
    now = utcnow()
    rows = mails().find({"due_at": {"$lte": now}, "queued_until": {"$lte": now}, "lease_until": {"$lte": now},
                         **kinds_query(kinds)}, {"_id": 1}).sort("due_at", ASCENDING).limit(limit)
    chosen = [row["_id"] for row in rows]
    if chosen:
        mails().update_many({"_id": {"$in": chosen}}, {"$set": {"queued_until": now + REQUEUE_AFTER}})
    return chosen


def unqueue_mails(ids: list[ObjectId]) -> None:
    """The broker refused these emails' messages: publish them again on the next pass."""
    if ids:
        mails().update_many({"_id": {"$in": ids}}, {"$set": {"queued_until": EPOCH}})


def send_mail(mail_id: ObjectId, compose: Mapping[str, Compose] | None = None, kinds: Kinds = None) -> str | None:
    """Send one pending email of these kinds, if due and not held; temporary failures back off
    (30 s, 1 min, ...). `compose[kind]`, if given, writes the text now (None: nothing to send,
    the row is dropped)."""
    now = utcnow()
    timeout = current_app.config["SMTP_TIMEOUT_SECONDS"]
    claimed = mails().update_one({"_id": mail_id, "due_at": {"$lte": now}, "lease_until": {"$lte": now},
                                  **kinds_query(kinds)},
                                 {"$set": {"lease_until": now + timedelta(seconds=timeout) + LEASE_MARGIN},
                                  "$inc": {"attempts": 1}})
    if not claimed.modified_count:
        return None
    letter = mails().find_one({"_id": mail_id})
    assert letter is not None
    config = current_app.config
    text = letter["text"]
    writer = (compose or {}).get(letter["kind"])
    if writer is not None:
        written = writer(letter, now)
        if written is None:
            mails().update_one({"_id": mail_id}, {"$set": {"status": MAIL_DROPPED, "lease_until": EPOCH},
                                                  "$unset": {"due_at": ""}})
            log.info("mail %s (%s) dropped: no active account has this address", mail_id, letter["kind"])
            return MAIL_DROPPED
        text = written
    try:
        if not config["SMTP_URL"]:
            raise smtp.PermanentMailError("SMTP_URL is not set")
        try:
            settings = smtp.parse_smtp_url(config["SMTP_URL"])
        except ValueError as exc:
            raise smtp.PermanentMailError(str(exc)) from None
        smtp.send_mail(settings, sender=config["MAIL_FROM"], to=letter["to"], subject=letter["subject"],
                       text=text, message_id=f"<{mail_id}@taskapi>", timeout=timeout)
    except smtp.MailError as exc:
        final = isinstance(exc, smtp.PermanentMailError) or letter["attempts"] >= MAIL_MAX_ATTEMPTS
        update: dict[str, Any] = {"error": str(exc)[:200], "lease_until": EPOCH}
        if final:
            mails().update_one({"_id": mail_id}, {"$set": {**update, "status": MAIL_FAILED}, "$unset": {"due_at": ""}})
        else:
            retry = now + timedelta(seconds=30 * 2 ** (letter["attempts"] - 1))
            mails().update_one({"_id": mail_id}, {"$set": {**update, "due_at": retry, "queued_until": EPOCH}})
        log.warning("mail %s (%s) not sent, attempt %d: %s", mail_id, letter["kind"], letter["attempts"], exc)
        return MAIL_FAILED if final else "retry"
    mails().update_one({"_id": mail_id}, {"$set": {"status": MAIL_SENT, "sent_at": utcnow(), "error": None},
                                          "$unset": {"due_at": ""}})
    log.info("mail %s (%s) sent", mail_id, letter["kind"])
    return MAIL_SENT
