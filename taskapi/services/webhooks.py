"""Webhooks, always scoped to their owner: endpoints, signing secrets, pings, the delivery log.

The API only writes rows; the notification worker sends (services/notifications.py). A URL is
checked here at create and update (SSRF guard: services/outbound.py) and again before every
delivery, after DNS resolution.
"""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta
from typing import Any

from bson import ObjectId
from flask import current_app
from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from taskapi.clock import utcnow
from taskapi.errors import Conflict, NotFound, ValidationFailed
from taskapi.ids import parse_object_id
from taskapi.models.event import PING, events
from taskapi.models.webhook import deliveries, webhooks
from taskapi.services import events as domain_events
from taskapi.services import notifications, outbound
from taskapi.services.paging import decode_cursor, encode_cursor

NO_WEBHOOK = "No webhook with this id."
NO_DELIVERY = "No delivery with this id for this webhook."
SECRET_BYTES = 32
ROTATION_OVERLAP = timedelta(hours=24)


def new_secret() -> str:
    """`whsec_` and the base64 of 32 random bytes (Standard Webhooks)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_url(url: str) -> None:
    """422 on `url` if deliveries to it would be refused (scheme, userinfo, non-public address...)."""
    try:
        outbound.check_url(url, notifications.policy())
    except outbound.BlockedURL as exc:
        raise ValidationFailed(errors={"url": [f"This URL is not allowed: {exc.reason}."]}) from None


def create_webhook(*, owner: str, url: str, events: list[str], description: str) -> dict[str, Any]:
    """A new endpoint with its first secret (returned once, in `secret`); 409 past WEBHOOK_MAX_PER_USER."""
    check_url(url)
    limit = current_app.config["WEBHOOK_MAX_PER_USER"]
    if webhooks().count_documents({"owner": ObjectId(owner)}) >= limit:
        raise Conflict(f"You have reached the limit of {limit} webhooks; delete one to add another.")
    now = utcnow()
    secret = new_secret()
    hook = {"_id": ObjectId(), "owner": ObjectId(owner), "url": url, "events": events, "description": description,
            "active": True, "disabled_reason": None, "secrets": [{"value": secret, "expires_at": None}],
            "failing_since": None, "created_at": now, "updated_at": now}
    webhooks().insert_one(hook)
    return {**hook, "secret": secret}


def get_webhook(*, owner: str, webhook_id: str) -> dict[str, Any]:
    hook = webhooks().find_one({"_id": parse_object_id(webhook_id, NO_WEBHOOK), "owner": ObjectId(owner)})
    if hook is None:
        raise NotFound(NO_WEBHOOK)
    return hook


def list_webhooks(*, owner: str, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The caller's webhooks, newest first."""
    return _page(webhooks(), {"owner": ObjectId(owner)}, scope="webhooks", binding={"owner": owner},
                 limit=limit, cursor=cursor)


def update_webhook(*, owner: str, webhook_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change url, events, description or active; `active: true` re-enables a disabled endpoint
    (its failure history starts afresh)."""
    hook = get_webhook(owner=owner, webhook_id=webhook_id)
    if "url" in changes:
        check_url(changes["url"])
    update = {name: value for name, value in changes.items() if hook.get(name) != value}
    if not update:
        return hook
    if update.get("active") is True:
        update.update(disabled_reason=None, failing_since=None)
    elif update.get("active") is False:
        update["disabled_reason"] = None  # turned off by its owner, not by failures
    update["updated_at"] = utcnow()
    webhooks().update_one({"_id": hook["_id"], "owner": hook["owner"]}, {"$set": update})
    return {**hook, **update}


def delete_webhook(*, owner: str, webhook_id: str) -> None:
    """The endpoint and its delivery log; attempts still pending are dropped with it."""
    hook = get_webhook(owner=owner, webhook_id=webhook_id)
    webhooks().delete_one({"_id": hook["_id"], "owner": hook["owner"]})
    deliveries().delete_many({"owner": hook["owner"], "webhook": hook["_id"]})
    notifications.forget_queue(hook["_id"])


def rotate_secret(*, owner: str, webhook_id: str) -> str:
    """A new signing secret; the previous one keeps signing (a second signature) for 24 h."""
    hook = get_webhook(owner=owner, webhook_id=webhook_id)
    now = utcnow()
    secret = new_secret()
    # The secret in use until now signs for 24 h more; one rotated out earlier stops now (two
    # signatures at most).
    kept = [{**s, "expires_at": now + ROTATION_OVERLAP} for s in hook["secrets"] if s.get("expires_at") is None]
    webhooks().update_one({"_id": hook["_id"], "owner": hook["owner"]},
                          {"$set": {"secrets": [{"value": secret, "expires_at": None}, *kept], "updated_at": now}})
    return secret


def ping(*, owner: str, webhook_id: str) -> dict[str, Any]:
    """Queue one `webhook.ping` event for this endpoint alone (sent even if it is disabled)."""
    hook = get_webhook(owner=owner, webhook_id=webhook_id)
    event = domain_events.event(type=PING, owner=hook["owner"], task=None, now=utcnow(), webhook=hook["_id"])
    events().insert_one(event)
    return {"event_id": event["_id"]}


def list_deliveries(*, owner: str, webhook_id: str, limit: int,
                    cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Every attempt to this endpoint, newest first."""
    hook = get_webhook(owner=owner, webhook_id=webhook_id)
    return _page(deliveries(), {"owner": hook["owner"], "webhook": hook["_id"]}, scope="deliveries",
                 binding={"owner": owner, "webhook": webhook_id}, limit=limit, cursor=cursor)


def redeliver(*, owner: str, webhook_id: str, delivery_id: str) -> dict[str, Any]:
    """A new attempt of that delivery's event, now, with the same `webhook-id`; one attempt, no
    retry schedule (it is a manual action, as with GitHub and Svix)."""
    hook = get_webhook(owner=owner, webhook_id=webhook_id)
    row = deliveries().find_one({"_id": parse_object_id(delivery_id, NO_DELIVERY), "owner": hook["owner"],
                                 "webhook": hook["_id"]})
    if row is None:
        raise NotFound(NO_DELIVERY)
    if events().find_one({"_id": row["event"], "owner": row["owner"]}, {"_id": 1}) is None:
        raise Conflict("This event is older than the retention period and can no longer be sent.")
    now = utcnow()
    event = {"_id": row["event"], "owner": row["owner"], "type": row["event_type"],
             "created_at": row["event_created_at"]}
    for _ in range(20):
        attempt = notifications.next_attempt(row["owner"], row["event"], hook["_id"])
        fresh = notifications.new_delivery(event=event, webhook_id=hook["_id"], attempt=attempt, due=now, now=now,
                                           manual=True)  # sweep_at now: the next sweep queues it
        if row.get("payload") is not None:
            fresh["payload"] = row["payload"]
        try:
            deliveries().insert_one(fresh)
            return fresh
        except DuplicateKeyError:
            continue
    raise Conflict("Too many redeliveries of this event at once; retry shortly.")


def erase_owner_data(*, owner: str) -> dict[str, int]:
    """Every webhook, delivery and event of the owner (account erasure)."""
    oid = ObjectId(owner)
    return {"webhooks": webhooks().delete_many({"owner": oid}).deleted_count,
            "deliveries": deliveries().delete_many({"owner": oid}).deleted_count,
            "events": events().delete_many({"owner": oid}).deleted_count}


def _page(collection: Any, query: dict[str, Any], *, scope: str, binding: dict[str, Any], limit: int,
          cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first by id, keyset-paged with a signed cursor bound to the caller and the list."""
    if cursor:
        (last,) = decode_cursor(scope, binding, cursor)[:1]
        if not isinstance(last, str) or not ObjectId.is_valid(last):
            raise ValidationFailed(errors={"cursor": ["The cursor is invalid."]})
        query = {**query, "_id": {"$lt": ObjectId(last)}}
    docs = list(collection.find(query).sort("_id", DESCENDING).limit(limit + 1))
    if len(docs) <= limit:
        return docs, None
    return docs[:limit], encode_cursor(scope, binding, [str(docs[limit - 1]["_id"])])
