"""The notification service's work, without the broker: relaying events, fanning them out to
webhooks, one delivery attempt, reminders, mail. The worker (taskapi/worker) calls these and
publishes what they return; MongoDB holds every state and every retry time, so a message the
broker loses, or a worker killed mid-attempt, only delays work: the sweeps find it again.

Rows waiting for the worker (events, pending deliveries, mail) carry `due_at`. A pending
delivery also carries `sweep_at` (when the sweep looks at it again) and an email `queued_until`
(not published again before then); one that runs holds a lease (a delivery's in Redis, an
email's in `lease_until`). A lease outlives
WEBHOOK_TIMEOUT_SECONDS by LEASE_MARGIN (15 s), so an attempt whose worker died is queued again
by the sweep, and made by another worker, within the timeout + 60 s.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
import redis
from bson import ObjectId
from flask import current_app
from pymongo import ASCENDING, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from taskapi.clock import aware, utcnow
from taskapi.extensions import PREFIX, get_redis, redis_script
from taskapi.models.event import ALL_EVENTS, PING, events
from taskapi.models.mail import REMINDER, mails, new_mail
from taskapi.models.member import members
from taskapi.models.task import tasks
from taskapi.models.webhook import FAILED, PENDING, SUCCEEDED, deliveries, webhooks
from taskapi.services import cache, outbound
from taskapi.services import events as domain_events

log = logging.getLogger("taskapi.worker")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LEASE_MARGIN = timedelta(seconds=15)
QUEUE_GRACE = timedelta(seconds=30)  # an event published but not fanned out by then is published again
REQUEUE_AFTER = timedelta(seconds=10)  # an attempt or mail queued but not started by then is queued again
BATCH = 200

Render = Callable[[dict[str, Any]], bytes]  # an event -> the JSON body receivers get


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def _lease() -> timedelta:
    return _seconds(current_app.config["WEBHOOK_TIMEOUT_SECONDS"]) + LEASE_MARGIN


def _grace() -> timedelta:
    """How long a queued attempt or mail may wait before the sweep queues it again. A running
    one is never queued again (its lease is checked), so this only bounds how long a lost
    message or queue entry delays its row."""
    return REQUEUE_AFTER


# --- relay: events -> broker --------------------------------------------------------------------

def events_to_relay(limit: int = BATCH) -> list[ObjectId]:
    """Events waiting to be relayed, oldest first; each is held for QUEUE_GRACE so that another
    worker's relay does not publish it too. Fan-out clears an event's `due_at`; until then (the
    message lost, the broker down, the fan-out failed) it comes back after QUEUE_GRACE."""
    now = utcnow()
    found = [doc["_id"] for doc in events().find({"due_at": {"$lte": now}}, {"_id": 1})
             .sort("due_at", ASCENDING).limit(limit)]
    if found:
        events().update_many({"_id": {"$in": found}, "due_at": {"$lte": now}}, {"$set": {"due_at": now + QUEUE_GRACE}})
    return found




def release_events(event_ids: list[ObjectId]) -> None:
    """Publishing failed (the broker is down): relay these again on the next pass."""
    if event_ids:
        events().update_many({"_id": {"$in": event_ids}}, {"$set": {"due_at": EPOCH}})


# --- fan-out: one event -> one pending delivery per subscribed webhook --------------------------

def subscribers(event: dict[str, Any], owners_hooks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The webhooks an event goes to: the one it names (a ping, active or not), or those of the
    owner's active webhooks that subscribe to its type or to everything."""
    if event.get("webhook") is not None:
        hook = webhooks().find_one({"_id": event["webhook"], "owner": event["owner"]})
        return [hook] if hook else []
    return [hook for hook in owners_hooks if event["type"] in hook["events"] or ALL_EVENTS in hook["events"]]


def new_delivery(*, event: dict[str, Any], webhook_id: ObjectId, attempt: int, due: datetime, now: datetime,
                 manual: bool = False, sweep_at: datetime = EPOCH) -> dict[str, Any]:
    return {"_id": ObjectId(), "owner": event["owner"], "webhook": webhook_id, "event": event["_id"],
            "event_type": event["type"], "event_created_at": event["created_at"], "attempt": attempt,
            "manual": manual, "status": PENDING, "response_status": None, "duration_ms": None, "error": None,
            "created_at": now, "next_attempt_at": due, "due_at": due, "sweep_at": sweep_at}


Endpoint = tuple[ObjectId, ObjectId]  # (webhook, owner): what a `deliver` message wakes


def fanout(event_ids: list[ObjectId], *, render: Render) -> list[Endpoint]:
    """Create the first attempt of each event for each subscriber, with the body receivers get
    (rendered once, so every attempt sends the same bytes), and queue it at its endpoint;
    returns the endpoints to wake. A batch costs a few MongoDB operations, not a few per event.
    Idempotent: a second fan-out of an event (the relay is at least once) finds its attempts
    there (unique event, webhook, attempt) and adds none.

    First attempts at an endpoint that answered quickly of late are made here, before the rows
    are stored (first_attempts_inline), so such a row is written once, with its outcome."""
    batch = list(events().find({"_id": {"$in": event_ids}}))
    if not batch:
        return []
    now = utcnow()
    owners = list({event["owner"] for event in batch if event.get("webhook") is None})
    hooks: dict[ObjectId, list[dict[str, Any]]] = {}
    for hook in webhooks().find({"owner": {"$in": owners}, "active": True}) if owners else []:
        hooks.setdefault(hook["owner"], []).append(hook)
    rows, hook_of = [], {}
    for event in batch:
        for hook in subscribers(event, hooks.get(event["owner"], [])):
            row = new_delivery(event=event, webhook_id=hook["_id"], attempt=1, due=now, now=now,
                               sweep_at=now + _grace())
            row["payload"] = render(event)
            rows.append(row)
            hook_of[row["_id"]] = hook
    relaying = {event["_id"] for event in batch if event.get("due_at") is not None}
    made = first_attempts_inline([row for row in rows if row["event"] in relaying], hook_of, render)
    stored = _insert_new(deliveries(), rows)
    made.write()  # counted once their rows are stored
    pending = [row for row in stored if row.get("due_at") is not None]
    enqueue(pending, now)
    # Only now have the events been relayed: until here, a lost or failed `fanout` message leaves
    # them waiting, and the relay publishes them again after QUEUE_GRACE.
    events().update_many({"_id": {"$in": [event["_id"] for event in batch]}}, {"$unset": {"due_at": ""}})
    for event in batch:
        log.info("event %s (%s) fanned out", event["_id"], event["type"])
    return list(dict.fromkeys((row["webhook"], row["owner"]) for row in pending))


# --- first attempts made at fan-out ----------------------------------------------------------------
#
# A first attempt at an endpoint marked fast (taskapi:fast:{webhook}: its last attempt was a 2xx
# within FAST_SECONDS) is made by the fan-out itself, before the rows are stored: its row is then
# inserted once, with the outcome, instead of inserted pending, read back and updated (on the
# embedded server an update costs about twice an insert). The endpoint's in-flight places are
# taken as for any run. A fan-out starts no attempt after INLINE_BUDGET, and an attempt that has
# no answer after INLINE_TIMEOUT is left to the normal path with the full WEBHOOK_TIMEOUT_SECONDS
# (the receiver may see it twice, with the same webhook-id): the other events of a batch wait
# 1.5 s at most for this, and an endpoint turning slow loses its mark at once. A worker that
# dies here stored nothing: the events are relayed again after QUEUE_GRACE and their attempts
# made again (at least once).

INLINE_BUDGET = 0.5
INLINE_TIMEOUT = 1.0
FAST_TTL_SECONDS = 300


def _fast_key(webhook: ObjectId) -> str:
    return f"{PREFIX}fast:{webhook}"


def _note_speed(webhook: ObjectId, result: outbound.Result) -> None:
    if result.ok and result.duration_ms < FAST_SECONDS * 1000:
        get_redis().set(_fast_key(webhook), 1, ex=FAST_TTL_SECONDS)
    else:
        get_redis().delete(_fast_key(webhook))


class InlineOutcomes:
    """Outcomes of attempts made at fan-out: written into the rows about to be inserted."""

    def __init__(self) -> None:
        self.counts: list[tuple[str, dict[str, Any], outbound.Result, datetime]] = []

    def add(self, row: dict[str, Any], outcome: dict[str, Any], status: str, result: outbound.Result,
            now: datetime) -> None:
        row.update(outcome)
        row.pop("due_at", None)
        row.pop("sweep_at", None)
        self.counts.append((status, row, result, now))

    def release(self, ident: ObjectId) -> None:  # pragma: no cover - nothing is leased at fan-out
        pass

    def write(self) -> None:
        if self.counts:
            _count(self.counts)


def first_attempts_inline(rows: list[dict[str, Any]], hook_of: dict[ObjectId, dict[str, Any]],
                          render: Render) -> InlineOutcomes:
    """Make the first attempts of these (not yet stored) rows whose endpoint is fast, within
    INLINE_BUDGET; each one made gets its outcome (and a failure its retry, stored first)."""
    made = InlineOutcomes()
    if not rows or STOPPING.is_set():
        return made
    by_endpoint: dict[ObjectId, list[dict[str, Any]]] = {}
    for row in rows:
        by_endpoint.setdefault(row["webhook"], []).append(row)
    pipe = get_redis().pipeline(transaction=False)
    for webhook in by_endpoint:
        pipe.exists(_fast_key(webhook))
    fast = [webhook for webhook, known in zip(by_endpoint, pipe.execute(), strict=True) if known]
    if not fast:
        return made
    # An event fanned out before (its worker died before marking it relayed) may have its first
    # attempts stored already: those are made by the normal path, never twice here.
    # One read per owner, owner equal and events $in: the unique index's range. (SecantusDB walks
    # a whole index for `$in` on both fields: 1.5 s against 0.4 ms on 20 000 rows, measured.)
    events_of: dict[ObjectId, set[ObjectId]] = {}
    for row in rows:
        events_of.setdefault(row["owner"], set()).add(row["event"])
    stored = {(found["event"], found["webhook"]) for owner, ids in events_of.items()
              for found in deliveries().find({"owner": owner, "event": {"$in": list(ids)}},
                                             {"event": 1, "webhook": 1, "attempt": 1})
              if found["attempt"] == 1}
    deadline = time.monotonic() + INLINE_BUDGET
    for webhook in fast:
        waiting = [row for row in by_endpoint[webhook] if (row["event"], webhook) not in stored]
        if not waiting or time.monotonic() >= deadline:
            continue
        slot = Slot(webhook, waiting[0]["owner"])
        if not slot.take(utcnow() + _lease()):
            continue
        try:
            for row in waiting:
                if time.monotonic() >= deadline or STOPPING.is_set():
                    break
                if _attempt(row, hook_of[row["_id"]], render, made, inline=True) is None:
                    break  # cut short: this endpoint's rows go the normal way
        finally:
            slot.give_back()
    return made


# --- queues per endpoint, in Redis -----------------------------------------------------------------
#
# taskapi:wq:{webhook}   the endpoint's attempts ready to run (a sorted set of delivery ids by
#                        due time); a worker pops the oldest and holds
# taskapi:dl:{delivery}  the attempt's lease while it runs (WEBHOOK_TIMEOUT_SECONDS + LEASE_MARGIN).
# MongoDB stays the truth: the sweep finds every due attempt that is neither queued recently
# nor leased (a lost queue entry, a worker killed mid-attempt, a retry whose time came) and
# queues it again, so Redis only ever holds a faster path.

POP_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('SET', ARGV[3] .. id, '1', 'PX', ARGV[2])
end
return ids
"""


def _queue_key(webhook: ObjectId) -> str:
    return f"{PREFIX}wq:{webhook}"


def _lease_key(delivery: ObjectId | str) -> str:
    return f"{PREFIX}dl:{delivery}"


def forget_queue(webhook: ObjectId) -> None:
    """A deleted endpoint's queue."""
    get_redis().delete(_queue_key(webhook))


def enqueue(rows: list[dict[str, Any]], now: datetime) -> None:
    """Queue these attempts at their endpoints, ready from their due time (or now)."""
    pipe = get_redis().pipeline(transaction=False)
    for row in rows:
        due = max(aware(row["due_at"]), now)
        pipe.zadd(_queue_key(row["webhook"]), {str(row["_id"]): int(due.timestamp() * 1000)}, nx=True)
    pipe.execute()


def _pop(webhook: ObjectId, count: int, lease: timedelta) -> list[ObjectId]:
    """Up to `count` ready attempts of the endpoint, each leased for `lease`."""
    idents = redis_script(POP_SCRIPT)(keys=[_queue_key(webhook)],
                                      args=[int(time.time() * 1000), int(lease.total_seconds() * 1000),
                                            f"{PREFIX}dl:", count])
    return [ObjectId(ident.decode()) for ident in idents]


def endpoints_to_wake(limit: int = 1000) -> list[Endpoint]:
    """The sweep: pending attempts whose `sweep_at` has come (a retry now due, a redelivery, one
    queued REQUEUE_AFTER ago and not yet made) are queued at their endpoint again unless one is
    running, and looked at again REQUEUE_AFTER later; returns the endpoints to wake. The query
    is on `sweep_at` alone, so attempts waiting behind a slow endpoint never crowd out others'."""
    now = utcnow()
    rows = list(deliveries().find({"sweep_at": {"$lte": now}}, {"_id": 1, "webhook": 1, "owner": 1, "due_at": 1})
                .sort("sweep_at", ASCENDING).limit(limit))
    if not rows:
        return []
    deliveries().update_many({"_id": {"$in": [row["_id"] for row in rows]}}, {"$set": {"sweep_at": now + _grace()}})
    pipe = get_redis().pipeline(transaction=False)
    for row in rows:
        pipe.exists(_lease_key(row["_id"]))
    rows = [row for row, running in zip(rows, pipe.execute(), strict=True) if not running]  # running: look later
    if not rows:
        return []
    enqueue(rows, now)
    return list(dict.fromkeys((row["webhook"], row["owner"]) for row in rows))


def _in_flight_key(kind: str, ident: ObjectId) -> str:
    return f"{PREFIX}inflight:{'webhook' if kind == 'w' else 'user'}:{ident}"


# KEYS: the endpoint's and the user's in-flight sets; ARGV: member, now, lease end (seconds), limits.
ACQUIRE_SCRIPT = """
for i = 1, 2 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[2]) end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) or redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return 0
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], ARGV[3], ARGV[1])
  redis.call('EXPIREAT', KEYS[i], math.ceil(tonumber(ARGV[3])) + 1)
end
return 1
"""


class Slot:
    """One of an endpoint's (and its user's) WEBHOOK_MAX_IN_FLIGHT_* places, held in Redis with a
    lease, so a worker that dies frees its place when the lease ends."""

    def __init__(self, webhook: ObjectId, owner: ObjectId) -> None:
        self.keys = [_in_flight_key("w", webhook), _in_flight_key("u", owner)]
        self.member = ObjectId().binary.hex()

    def take(self, until: datetime) -> bool:
        config = current_app.config
        args = [self.member, time.time(), until.timestamp(), config["WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT"],
                config["WEBHOOK_MAX_IN_FLIGHT_PER_USER"]]
        return bool(redis_script(ACQUIRE_SCRIPT)(keys=self.keys, args=args))

    def extend(self, until: datetime) -> None:
        pipe = get_redis().pipeline(transaction=False)
        for key in self.keys:
            pipe.zadd(key, {self.member: until.timestamp()}, xx=True)
            pipe.expireat(key, int(until.timestamp()) + 1)
        pipe.execute()

    def give_back(self) -> None:
        pipe = get_redis().pipeline(transaction=False)
        for key in self.keys:
            pipe.zrem(key, self.member)
        pipe.execute()


# --- attempts -------------------------------------------------------------------------------------
#
# A `deliver` message wakes one endpoint. Its worker takes a place of the endpoint (at most
# WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT at once, WEBHOOK_MAX_IN_FLIGHT_PER_USER per user) and makes
# the endpoint's ready attempts one after the other, for at most RUN_SECONDS: a busy endpoint
# drains at the speed it answers, and a slow or dead one holds only its own places, never other
# users' deliveries. A message that finds no free place does nothing: the endpoint's running
# workers take its attempts.

RUN_SECONDS = 20
HOOK_FRESH_SECONDS = 1.0
STOPPING = threading.Event()  # set when the worker shuts down: runs stop taking attempts


def stop_runs() -> None:
    """SIGTERM: endpoint runs finish the attempt in hand and take no more."""
    STOPPING.set()


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """A Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, keyed
    with the base64-decoded part of the secret after `whsec_`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signing_secrets(webhook: dict[str, Any], now: datetime) -> list[str]:
    """The secrets that sign now: the current one, and a rotated-out one for 24 h after rotation."""
    return [s["value"] for s in webhook["secrets"] if s.get("expires_at") is None or aware(s["expires_at"]) > now]


def policy() -> outbound.Policy:
    config = current_app.config
    return outbound.Policy(allow_http=config["WEBHOOK_ALLOW_HTTP"],
                           allow_networks=outbound.parse_networks(",".join(config["WEBHOOK_ALLOW_NETWORKS"])),
                           connect_timeout=min(3.0, float(config["WEBHOOK_TIMEOUT_SECONDS"])),
                           total_timeout=float(config["WEBHOOK_TIMEOUT_SECONDS"]),
                           ca_file=config["WEBHOOK_CA_FILE"])


POP_MAX = 10  # attempts taken at once from an endpoint that answers quickly
FAST_SECONDS = 0.5
BATCH_LEASE_CAP = timedelta(seconds=45)  # a batch's lease stays under the timeout + 60 s takeover


def deliver(webhook_id: ObjectId, owner: ObjectId, *, render: Render) -> bool:
    """Make the endpoint's ready attempts, one after the other, if one of its places is free.
    True when the run ended (RUN_SECONDS) with attempts still ready: wake the endpoint again.

    An endpoint that answers within FAST_SECONDS has its attempts taken up to POP_MAX at a time
    (one read for the batch, one write for their outcomes); a slower one, one at a time. A batch
    whose lease would end before its next attempt could finish is left to the sweep."""
    slot = Slot(webhook_id, owner)
    if not slot.take(utcnow() + _lease()):
        return False
    stop_at = time.monotonic() + RUN_SECONDS
    timeout = float(current_app.config["WEBHOOK_TIMEOUT_SECONDS"])
    hook, read_at, count = None, 0.0, 1
    try:
        while time.monotonic() < stop_at and not STOPPING.is_set():
            lease = min(_seconds(count * timeout), BATCH_LEASE_CAP) + LEASE_MARGIN
            lease_ends = time.monotonic() + lease.total_seconds()
            with pymongo.timeout(lease.total_seconds()):  # each batch's MongoDB work has its own budget
                slot.extend(utcnow() + lease)
                idents = _pop(webhook_id, count, lease)
                if not idents:
                    break
                rows = {row["_id"]: row for row in deliveries().find({"_id": {"$in": idents}})}
                if time.monotonic() - read_at > HOOK_FRESH_SECONDS:  # a PATCH or rotation applies within 1 s
                    hook, read_at = webhooks().find_one({"_id": webhook_id, "owner": owner}), time.monotonic()
                log_book = Outcomes()
                fast = True
                for ident in idents:
                    row = rows.get(ident)
                    if row is None or row.get("due_at") is None:  # done meanwhile (a duplicate queue entry)
                        log_book.release(ident)
                        continue
                    if time.monotonic() + timeout > lease_ends:  # could outlive its lease: the sweep takes it
                        continue
                    began = time.monotonic()
                    _attempt(row, hook, render, log_book)
                    fast = fast and time.monotonic() - began < FAST_SECONDS
                log_book.write()
                count = POP_MAX if fast else 1
    finally:
        slot.give_back()
    # Attempts left, or queued while this run was ending (their wake found no free place): wake again.
    return not STOPPING.is_set() and bool(get_redis().zcount(_queue_key(webhook_id), "-inf", int(time.time() * 1000)))


class Outcomes:
    """Attempt outcomes of one batch, written together: one bulk write to MongoDB, then one Redis
    round trip that ends their leases and counts them. A worker that dies before writing leaves
    the attempts pending: made again (at least once), never lost."""

    def __init__(self) -> None:
        self.updates: list[UpdateOne] = []
        self.leases: list[str] = []
        self.counts: list[tuple[str, dict[str, Any], outbound.Result, datetime]] = []

    def add(self, row: dict[str, Any], outcome: dict[str, Any], status: str, result: outbound.Result,
            now: datetime) -> None:
        self.updates.append(UpdateOne({"_id": row["_id"]}, {"$set": outcome, "$unset": {"due_at": "", "sweep_at": ""}}))
        self.leases.append(_lease_key(row["_id"]))
        self.counts.append((status, row, result, now))

    def release(self, ident: ObjectId) -> None:
        self.leases.append(_lease_key(ident))

    def write(self) -> None:
        if self.updates:
            deliveries().bulk_write(self.updates, ordered=False)
        if self.leases:
            get_redis().delete(*self.leases)
        if self.counts:
            _count(self.counts)


def _attempt(row: dict[str, Any], hook: dict[str, Any] | None, render: Render, log_book: Outcomes | InlineOutcomes,
             *, inline: bool = False) -> str | None:
    """One HTTP attempt of a leased row; its outcome goes to `log_book`. The body is the one
    rendered at fan-out (rendered from the event for an attempt stored without it). Inline (at
    fan-out), an attempt without an answer after INLINE_TIMEOUT is not recorded: None."""
    now = utcnow()
    body = row.get("payload")
    if body is None and hook is not None:
        event = events().find_one({"_id": row["event"]})
        body = render(event) if event is not None else None
    if hook is None or body is None:
        return _finish(row, outbound.Result(None, 0, "webhook deleted" if hook is None else "event expired"),
                       log_book, retry=False)
    if not hook["active"] and not row["manual"] and row["event_type"] != PING:
        return _finish(row, outbound.Result(None, 0, "webhook disabled"), log_book, retry=False)
    timestamp = int(time.time())
    event_id = str(row["event"])
    signatures = " ".join(sign(secret, event_id, timestamp, body) for secret in signing_secrets(hook, now))
    headers = {"webhook-id": event_id, "webhook-timestamp": str(timestamp), "webhook-signature": signatures,
               "Content-Type": "application/json"}
    limits = policy()
    cut_at = INLINE_TIMEOUT if inline and limits.total_timeout > INLINE_TIMEOUT else None
    if cut_at is not None:
        limits = dataclasses.replace(limits, total_timeout=cut_at, connect_timeout=min(limits.connect_timeout, cut_at))
    result = outbound.post(hook["url"], body, headers, limits)
    _note_speed(hook["_id"], result)
    if cut_at is not None and result.status is None and result.duration_ms >= cut_at * 1000 - 1:
        log.info("delivery %s event %s webhook %s: no answer within %.1f s at fan-out; queued", row["_id"],
                 row["event"], row["webhook"], cut_at)
        return None
    outcome = _finish(row, result, log_book, retry=not row["manual"], hook=hook)
    if result.ok and hook.get("failing_since") is not None:
        hook["failing_since"] = None
    elif not result.ok and hook.get("failing_since") is None:
        hook["failing_since"] = now
    return outcome


def _finish(row: dict[str, Any], result: outbound.Result, log_book: Outcomes | InlineOutcomes, *, retry: bool,
            hook: dict[str, Any] | None = None) -> str:
    """Record an attempt's outcome. On failure the next attempt of the schedule is stored first,
    then this one is closed: a worker that dies in between leaves this attempt pending, to be
    made again (at least once), and never loses the retry. No multi-document transaction here: on
    the embedded server a worker killed inside one would hold the collection's writes for a minute."""
    now = utcnow()
    schedule = current_app.config["WEBHOOK_RETRY_SCHEDULE"]
    status = SUCCEEDED if result.ok else FAILED
    upcoming = None
    if status == FAILED and retry and row["attempt"] <= len(schedule):
        upcoming = now + _seconds(schedule[row["attempt"] - 1])
    outcome = {"status": status, "response_status": result.status, "duration_ms": result.duration_ms,
               "error": None if result.ok else (result.error or "failed")[:200], "next_attempt_at": upcoming}
    if upcoming is not None:
        event = {"_id": row["event"], "owner": row["owner"], "type": row["event_type"],
                 "created_at": row["event_created_at"]}
        following = new_delivery(event=event, webhook_id=row["webhook"], attempt=row["attempt"] + 1,
                                 due=upcoming, now=now, sweep_at=upcoming)  # the sweep queues it when due
        if row.get("payload") is not None:
            following["payload"] = row["payload"]
        try:
            deliveries().insert_one(following)
        except DuplicateKeyError:  # stored by an earlier run of this attempt, or taken by a redelivery
            if deliveries().find_one({"owner": row["owner"], "event": row["event"], "webhook": row["webhook"],
                                      "attempt": row["attempt"] + 1, "manual": False}, {"_id": 1}) is None:
                following["attempt"] = next_attempt(row["owner"], row["event"], row["webhook"])
                deliveries().insert_one(following)
    log_book.add(row, outcome, status, result, now)
    if hook is not None:
        _track_health(hook, ok=result.ok, now=now)
    log.info("delivery %s event %s webhook %s attempt %d: %s%s", row["_id"], row["event"], row["webhook"],
             row["attempt"], status, "" if result.ok else f" ({outcome['error']})")
    return status


def next_attempt(owner: ObjectId, event_id: ObjectId, webhook_id: ObjectId) -> int:
    last = deliveries().find_one({"owner": owner, "event": event_id, "webhook": webhook_id}, {"attempt": 1},
                                 sort=[("attempt", -1)])
    return (last["attempt"] if last else 0) + 1


def _track_health(hook: dict[str, Any], *, ok: bool, now: datetime) -> None:
    """An endpoint whose deliveries have all failed for WEBHOOK_DISABLE_AFTER is disabled."""
    if ok:
        if hook.get("failing_since") is not None:
            webhooks().update_one({"_id": hook["_id"]}, {"$set": {"failing_since": None}})
        return
    since = hook.get("failing_since")
    if since is None:
        webhooks().update_one({"_id": hook["_id"], "failing_since": None}, {"$set": {"failing_since": now}})
        since = now
    limit = _seconds(current_app.config["WEBHOOK_DISABLE_AFTER_SECONDS"])
    if hook["active"] and now - aware(since) >= limit:
        reason = f"Every delivery failed from {since:%Y-%m-%d %H:%M:%S} UTC for {limit}; re-enable with active=true."
        webhooks().update_one({"_id": hook["_id"], "active": True},
                              {"$set": {"active": False, "disabled_reason": reason, "updated_at": now}})
        hook["active"] = False  # the rest of this run skips it too
        log.warning("webhook %s disabled: %s", hook["_id"], reason)


# --- metrics, kept in Redis so that /metrics of any API process reads the workers' figures ----

METRICS_KEY = f"{PREFIX}metrics:deliveries"
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


def _count(outcomes: list[tuple[str, dict[str, Any], outbound.Result, datetime]]) -> None:
    try:
        pipe = get_redis().pipeline(transaction=False)
        for status, row, result, now in outcomes:
            pipe.hincrby(METRICS_KEY, f"status:{status}", 1)
            if result.ok:
                latency = max((now - aware(row["event_created_at"])).total_seconds(), 0.0)
                for bound in LATENCY_BUCKETS:
                    if latency <= bound:
                        pipe.hincrby(METRICS_KEY, f"le:{bound}", 1)
                pipe.hincrby(METRICS_KEY, "le:+Inf", 1)
                pipe.hincrbyfloat(METRICS_KEY, "latency_sum", latency)
        pipe.execute()
    except redis.RedisError as exc:  # metrics never fail a delivery
        log.warning("delivery metrics not recorded (%s)", exc.__class__.__name__)


def delivery_metrics() -> dict[str, float]:
    """The counters the workers keep: status:<s>, le:<bound>, latency_sum."""
    raw: dict[bytes, bytes] = get_redis().hgetall(METRICS_KEY)  # type: ignore[assignment]
    return {key.decode(): float(value) for key, value in raw.items()}


def backlog(now: datetime | None = None) -> dict[str, int]:
    """Work waiting: events not yet relayed, reminders due and reminders late."""
    now = now or utcnow()
    late = now - _seconds(current_app.config["REMINDER_MAX_DELAY_SECONDS"])
    return {"events_waiting": events().count_documents({"due_at": {"$lte": datetime(9999, 1, 1, tzinfo=UTC)}}),
            "reminders_due": tasks().count_documents({"remind_due": armed_until(now)}),
            "reminders_late": tasks().count_documents({"remind_due": armed_until(late)})}


# --- reminders ------------------------------------------------------------------------------------

REMINDER_LOCK = f"{PREFIX}lock:reminders"


def fire_due_reminders(limit: int = BATCH) -> int:
    """Fire every reminder that is due: once per remind_at, whichever worker gets there first.

    One worker at a time does this (a short Redis lock, so several workers do not race through
    the same list). A batch of due tasks is claimed first, in one conditional update: only tasks
    still armed and due (not done, not re-armed for later meanwhile) get reminded_at, a version
    one higher and remind_due = FIRING. Then the claimed tasks' `task.reminder` events and emails
    are stored, under ids derived from each task and its new version, and remind_due is cleared.
    A worker that dies in between leaves tasks at FIRING, which the next pass (they sort first)
    finishes, storing nothing twice.
    """
    lock = get_redis().lock(REMINDER_LOCK, timeout=30, blocking=False)
    if not lock.acquire():
        return 0
    try:
        now = utcnow()
        due = [task["_id"] for task in tasks().find({"remind_due": armed_until(now)}, {"_id": 1})
               .sort("remind_due", ASCENDING).limit(limit)]
        if not due:
            return 0
        tasks().update_many({"_id": {"$in": due}, "remind_due": {"$lte": now, "$gt": FIRING}},
                            {"$set": {"reminded_at": now, "remind_due": FIRING}, "$inc": {"version": 1}})
        claimed = list(tasks().find({"_id": {"$in": due}, "remind_due": FIRING}))
        for owner in {task["owner"] for task in claimed}:
            cache.bump(str(owner))  # reminded_at shows at once, before the announcements are stored
        if claimed:
            # The tasks side's own copy of the accounts (services/members.py), tombstones left out.
            owners = {member["_id"]: member for member in
                      members().find({"_id": {"$in": list({t["owner"] for t in claimed})}, "gone": {"$exists": False}},
                                     {"email": 1, "active": 1})}
            _announce(claimed, owners, now)
            tasks().update_many({"_id": {"$in": [t["_id"] for t in claimed]}, "remind_due": FIRING},
                                {"$set": {"remind_due": None}})
            log.info("%d reminder(s) fired", len(claimed))
        return len(claimed)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:  # held past its timeout; someone else may have it now
            pass


# remind_due of a task whose reminder is claimed and being announced: before every remind_at the
# API accepts (those start in 1970), so claimed tasks sort first and no real reminder looks claimed.
FIRING = datetime(1969, 12, 31, tzinfo=UTC)


def armed_until(moment: datetime) -> dict[str, datetime]:
    """remind_due from FIRING to `moment`: the reminders due by then, claimed ones first. The
    lower bound matters: most tasks have remind_due null, which sorts before every date, and
    SecantusDB walks a range open at the bottom from the index's start (measured: 65 ms on 2 000
    tasks, growing with the collection, against 1 ms bounded); MongoDB reads the same entries."""
    return {"$gte": FIRING, "$lte": moment}


def reminder_id(task: dict[str, Any], kind: str) -> ObjectId:
    """The id of a reminder's event or email: the same for every try of one firing (the claim
    raised the version, so a later firing of the same remind_at gets new ids)."""
    return ObjectId(hashlib.sha256(f"{task['_id']}:{task['version']}:{kind}".encode()).digest()[:12])


def _announce(claimed: list[dict[str, Any]], owners: dict[ObjectId, dict[str, Any]], now: datetime) -> None:
    """The claimed reminders' events and emails, each stored once."""
    found, letters = [], []
    for task in claimed:
        after = {**task, "remind_due": None}
        found.append({**domain_events.event(type="task.reminder", owner=task["owner"], task=after, now=now),
                      "_id": reminder_id(task, "event")})
        owner = owners.get(task["owner"])
        if owner and owner.get("active", True) and current_app.config["SMTP_URL"]:
            letters.append({**reminder_mail(owner["email"], task, now), "_id": reminder_id(task, "mail")})
    _insert_new(events(), found)
    _insert_new(mails(), letters)


def _insert_new(collection: Any, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert what is not there yet (a retry finds some already stored); returns what was new."""
    if not documents:
        return []
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != 11000 for error in errors):
            raise
        taken = {error["index"] for error in errors}
        return [doc for index, doc in enumerate(documents) if index not in taken]
    return documents


def reminder_mail(to: str, task: dict[str, Any], now: datetime) -> dict[str, Any]:
    due = f"\nDue: {task['due_at']:%Y-%m-%d %H:%M} UTC" if task.get("due_at") else ""
    text = (f"This is your reminder for the task \"{task['title']}\".{due}\n"
            f"Status: {task['status']}, priority: {task['priority']}.\n\n"
            f"Task id: {task['_id']}\n")
    return new_mail(to=to, subject=f"Reminder: {task['title']}", text=text, kind=REMINDER, now=now)
