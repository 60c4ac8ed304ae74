"""Webhooks: the caller's endpoints, signed deliveries of task events, and their delivery log."""

from __future__ import annotations

from flask import url_for

from taskapi.http.auth import current_user_id
from taskapi.http.blueprint import Blueprint
from taskapi.http.headers import next_link
from taskapi.schemas.webhooks import (
    DeliveryPageSchema,
    DeliverySchema,
    PingSchema,
    SecretSchema,
    WebhookCreatedSchema,
    WebhookInputSchema,
    WebhookPageSchema,
    WebhookPatchSchema,
    WebhookQuerySchema,
    WebhookSchema,
)
from taskapi.services import webhooks as service

blp = Blueprint(
    "webhooks", __name__,
    description="Signed HTTP callbacks for task events (Standard Webhooks). Each delivery is a POST of "
                '`{"id", "type", "created_at", "data": {"task": {...}}}` with the headers `webhook-id` (the '
                "event id: the same on every retry), `webhook-timestamp` (unix seconds) and `webhook-signature` "
                "(`v1,<base64 HMAC-SHA256 of id.timestamp.body>`, keyed with the base64-decoded part of the "
                "secret after `whsec_`; two signatures for 24 h after a rotation). A 2xx within "
                "WEBHOOK_TIMEOUT_SECONDS (default 10) is success; redirects are not followed. Failures are "
                "retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h (WEBHOOK_RETRY_SCHEDULE); an endpoint "
                "whose deliveries all fail for 5 days (WEBHOOK_DISABLE_AFTER) is disabled. Delivery is at least "
                "once, in no guaranteed order: deduplicate on `webhook-id`.")

LINK = {"Link": {"description": 'rel="next" page', "schema": {"type": "string"}}}


@blp.route("", methods=["POST"])
@blp.auth_required()
@blp.arguments(WebhookInputSchema())
@blp.response(201, WebhookCreatedSchema(), headers={"Location": {"schema": {"type": "string"}}})
@blp.problem(409, "The caller already has WEBHOOK_MAX_PER_USER (default 20) webhooks.")
def create_webhook(body):
    """Subscribe a URL to task events; the answer holds the signing `secret`, shown only this once.

    The URL must be https (http only where the server allows it), without user:password@ or a
    #fragment, and every address its host resolves to must be public: loopback, private,
    link-local and other special addresses are refused in any spelling (422 on `url`). The same
    check runs again before every delivery."""
    hook = service.create_webhook(owner=current_user_id(), **body)
    return hook, 201, {"Location": url_for("webhooks.get_webhook", webhook_id=str(hook["_id"]))}


@blp.route("", methods=["GET"])
@blp.auth_required()
@blp.arguments(WebhookQuerySchema(), location="query")
@blp.response(200, WebhookPageSchema(), headers=LINK)
def list_webhooks(query):
    """The caller's webhooks, newest first.

    Keyset-paged: follow `next_cursor` (or `Link: rel="next"`); `null` on the last page. Secrets
    are never listed."""
    items, cursor = service.list_webhooks(owner=current_user_id(), limit=query["limit"], cursor=query.get("cursor"))
    return {"items": items, "next_cursor": cursor}, 200, next_link(cursor)


@blp.route("/<id:webhook_id>", methods=["GET"])
@blp.auth_required()
@blp.response(200, WebhookSchema())
@blp.problem(404, "No such webhook for the caller.")
def get_webhook(webhook_id):
    """One webhook.

    Its URL, events, description and state (`active`, `disabled_reason`); the secret is shown
    only at creation and rotation."""
    return service.get_webhook(owner=current_user_id(), webhook_id=webhook_id)


@blp.route("/<id:webhook_id>", methods=["PATCH"])
@blp.auth_required()
@blp.arguments(WebhookPatchSchema())
@blp.response(200, WebhookSchema())
@blp.problem(404, "No such webhook for the caller.")
def update_webhook(body, webhook_id):
    """Change the URL, events, description or `active`.

    `active: false` pauses deliveries; `active: true` re-enables an endpoint, including one the
    server disabled after failures (its `disabled_reason` is cleared)."""
    return service.update_webhook(owner=current_user_id(), webhook_id=webhook_id, changes=body)


@blp.route("/<id:webhook_id>", methods=["DELETE"])
@blp.auth_required()
@blp.response(204)
@blp.problem(404, "No such webhook for the caller.")
def delete_webhook(webhook_id):
    """Delete a webhook.

    Its delivery log goes with it, and attempts not yet made are dropped."""
    service.delete_webhook(owner=current_user_id(), webhook_id=webhook_id)


@blp.route("/<id:webhook_id>/rotate-secret", methods=["POST"])
@blp.auth_required()
@blp.response(200, SecretSchema())
@blp.problem(404, "No such webhook for the caller.")
def rotate_webhook_secret(webhook_id):
    """Rotate the signing secret.

    The previous secret keeps signing for 24 h, so every delivery carries two signatures until
    then: switch the receiver over within that time."""
    return {"secret": service.rotate_secret(owner=current_user_id(), webhook_id=webhook_id)}


@blp.route("/<id:webhook_id>/ping", methods=["POST"])
@blp.auth_required()
@blp.response(202, PingSchema())
@blp.problem(404, "No such webhook for the caller.")
def ping_webhook(webhook_id):
    """Send a `webhook.ping` event to this endpoint.

    One event with `data: {}`, signed like any other, sent even while the endpoint is disabled;
    the attempt shows in the delivery log. The answer names its `event_id`."""
    return service.ping(owner=current_user_id(), webhook_id=webhook_id)


@blp.route("/<id:webhook_id>/deliveries", methods=["GET"])
@blp.auth_required()
@blp.arguments(WebhookQuerySchema(), location="query")
@blp.response(200, DeliveryPageSchema(), headers=LINK)
@blp.problem(404, "No such webhook for the caller.")
def list_deliveries(query, webhook_id):
    """The delivery log: every attempt to this endpoint, newest first.

    One row per attempt, so an event retried twice shows three rows with the same `event_id`.
    Kept 30 days."""
    items, cursor = service.list_deliveries(owner=current_user_id(), webhook_id=webhook_id, limit=query["limit"],
                                            cursor=query.get("cursor"))
    return {"items": items, "next_cursor": cursor}, 200, next_link(cursor)


@blp.route("/<id:webhook_id>/deliveries/<id:delivery_id>/redeliver", methods=["POST"])
@blp.auth_required()
@blp.response(202, DeliverySchema())
@blp.problem(404, "No such webhook, or no such delivery of it.")
@blp.problem(409, "The event is past the 30-day retention.")
def redeliver(webhook_id, delivery_id):
    """Send a delivery's event again.

    One new attempt, now, with the same `webhook-id` (no retry schedule follows it), returned
    as `pending`."""
    return service.redeliver(owner=current_user_id(), webhook_id=webhook_id, delivery_id=delivery_id)
