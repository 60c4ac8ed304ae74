"""The notification worker (`flask --app wsgi worker`): Celery on BROKER_URL, plus the loops
that feed it from MongoDB.

What travels through the broker is only "work is waiting": `fanout(*event_ids)`,
`deliver(webhook_id, owner_id)` (wake an endpoint), `send_mail(mail_id)`. Every state and every retry time lives in MongoDB
(services/notifications.py), so the broker holds no ETAs and a lost message only delays work.
The one message that carries data crosses services: `account(facts)`, the auth service's
announcement of an account change to the tasks service (services/members.py).
Safety settings: acks after the work (a worker killed mid-task leaves its message to be
redelivered), prefetch 1, JSON only, durable queues with versioned names (BROKER_QUEUE_PREFIX).

The loops (two threads per worker process, each pass every WORKER_POLL_MS: the relay on its
own, so that its pace is not the other steps'):
  relay      events waiting in the outbox -> `fanout` messages (an event is marked relayed once
             the broker has it; with the broker down it stays waiting and is retried)
  sweep      due delivery attempts neither queued lately nor running (a retry whose time has
             come, an attempt of a dead worker once its lease ends, a lost message) -> queued
             at their endpoint again, and `deliver` messages to wake the endpoints
  reminders  due reminders fired (one transaction each: exactly once across workers)
  mail       mail waiting -> `send_mail` messages
Any number of workers may run: each row is claimed atomically before it is worked on.

Roles (TASKAPI_SERVICE), each on its own database and queues:
  all, tasks  the loops above; consumes events, deliveries, mail and accounts (the auth
              service's announcements, applied to the tasks side's copy: `taskapi.account`)
  auth        the auth service's outbox: `accounts` (account changes -> `account` messages for
              the tasks service) and `mail` (password-reset emails) on a queue of its own
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson
import pymongo
from bson import ObjectId
from celery import Celery, Task, signals
from celery.exceptions import Reject
from flask import Flask
from kombu import Exchange, Queue

from config import SENTINEL_SCHEMES, ConfigError, parse_sentinel_url
from taskapi.clock import format_timestamp
from taskapi.models.mail import PASSWORD_RESET, REMINDER
from taskapi.schemas.tasks import TaskSchema
from taskapi.services import auth as accounts
from taskapi.services import mailbox, members, notifications

log = logging.getLogger("taskapi.worker")
STEP_TIMEOUT_SECONDS = 30  # no MongoDB operation of a step or a task waits longer than this
# One quick second try: a pooled connection to a broker that restarted fails once, then reconnects.
FANOUT_BATCH = 50  # events per `fanout` message
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
TASK_SCHEMA = TaskSchema()


def render_event(event: dict[str, Any]) -> bytes:
    """The body a receiver gets: `{"id", "type", "created_at", "data"}`, `data.task` in the API's
    task shape (for task.deleted, `{"id"}`; for webhook.ping, `{}`)."""
    data: dict[str, Any] = {}
    task = event.get("data", {}).get("task")
    if task is not None:
        data["task"] = {"id": str(task["_id"])} if event["type"] == "task.deleted" else TASK_SCHEMA.dump(task)
    return orjson.dumps({"id": str(event["_id"]), "type": event["type"],
                         "created_at": format_timestamp(event["created_at"]), "data": data})


def queue_names(app: Flask) -> dict[str, str]:
    """The queue of each task, as this role publishes it: the auth service's mail has a queue of its
    own (its rows are in its own database), the rest are the tasks side's."""
    prefix = app.config["BROKER_QUEUE_PREFIX"]
    mail = f"{prefix}.auth-mail" if app.config["TASKAPI_SERVICE"] == "auth" else f"{prefix}.mail"
    return {"fanout": f"{prefix}.events", "deliver": f"{prefix}.deliveries", "send_mail": mail,
            "account": f"{prefix}.accounts"}


def broker_url(url: str) -> tuple[str, dict[str, Any]]:
    """kombu's spelling of BROKER_URL: a Redis Sentinel set (REDIS_URL's form, used when BROKER_URL
    is unset) becomes `sentinel://host:port/db;sentinel://...` with its service as `master_name`.
    ConfigError for a Sentinel set over TLS: kombu's Sentinel transport would drop the TLS."""
    if not url.startswith(SENTINEL_SCHEMES):
        return url, {}
    sentinels, service, db, auth, sentinel_auth, tls = parse_sentinel_url(url)
    if tls:
        raise ConfigError("the broker cannot be a Sentinel set over TLS (rediss+sentinel://): set BROKER_URL to "
                          "amqps://... (RabbitMQ) or a rediss:// master")
    user = quote(auth.get("username", ""), safe="")
    credentials = f"{user}:{quote(auth['password'], safe='')}@" if "password" in auth else ""
    options: dict[str, Any] = {"master_name": service}
    if sentinel_auth:
        options["sentinel_kwargs"] = sentinel_auth
    return ";".join(f"sentinel://{credentials}{host}:{port}/{db}" for host, port in sentinels), options


def consumed_queues(app: Flask) -> list[str]:
    """What this role's workers take messages from."""
    names = queue_names(app)
    return [names["send_mail"]] if app.config["TASKAPI_SERVICE"] == "auth" else list(names.values())


def letters(app: Flask) -> dict[str, mailbox.Compose]:
    """Mail written at sending time: the password reset's, where users live (auth, all)."""
    return {} if app.config["TASKAPI_SERVICE"] == "tasks" else {PASSWORD_RESET: accounts.reset_letter}


def mail_kinds(app: Flask) -> mailbox.Kinds:
    """The mail this role sends: its own kinds only, so two services that share a database (on
    the way to the split) never send each other's (a reset email needs the auth side's letter)."""
    return {"all": None, "auth": frozenset({PASSWORD_RESET}),
            "tasks": frozenset({REMINDER})}[app.config["TASKAPI_SERVICE"]]


def make_celery(app: Flask) -> Celery:
    """The Celery app for this Flask app: its tasks run inside the Flask app's context."""

    class AppTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                if self.name == "taskapi.deliver":  # a run of attempts: each has a budget of its own
                    return self.run(*args, **kwargs)
                with pymongo.timeout(STEP_TIMEOUT_SECONDS):
                    return self.run(*args, **kwargs)

    broker, sentinel_options = broker_url(app.config["BROKER_URL"])
    celery = Celery("taskapi", broker=broker, task_cls=AppTask, set_as_current=False)
    queues = queue_names(app)
    celery.conf.update(
        task_acks_late=True,  # acknowledged after the work: a killed worker's message is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True, result_backend=None,
        # Each queue on a direct exchange of its own name: a message goes to exactly one queue.
        task_queues=[Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)
                     for name in queues.values()],
        task_default_exchange=queues["deliver"], task_default_routing_key=queues["deliver"],
        task_default_queue=queues["deliver"],
        task_routes={f"taskapi.{name}": {"queue": queue} for name, queue in queues.items()},
        task_publish_retry=False,  # a publish that fails is the loop's to retry (the row stays waiting)
        broker_connection_timeout=2,
        broker_connection_retry_on_startup=True,
        # confirm_publish (RabbitMQ): a publish returns once the broker has the message.
        broker_transport_options={"visibility_timeout": 3600, "socket_timeout": 5, "socket_connect_timeout": 2,
                                  "confirm_publish": True, **sentinel_options},
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )

    @celery.task(name="taskapi.fanout")
    def fanout(*event_ids: str) -> None:
        for webhook, owner in notifications.fanout([ObjectId(ident) for ident in event_ids], render=render_event):
            deliver.apply_async(args=[str(webhook), str(owner)], retry=True, retry_policy=PUBLISH_RETRY)

    @celery.task(name="taskapi.deliver")
    def deliver(webhook_id: str, owner_id: str) -> None:
        if notifications.deliver(ObjectId(webhook_id), ObjectId(owner_id), render=render_event):
            deliver.apply_async(args=[webhook_id, owner_id], retry=True,  # a run ended with work left
                                retry_policy=PUBLISH_RETRY)

    compose, kinds = letters(app), mail_kinds(app)

    @celery.task(name="taskapi.send_mail")
    def send_mail(mail_id: str) -> None:
        mailbox.send_mail(ObjectId(mail_id), compose, kinds)

    @celery.task(name="taskapi.account")
    def account(facts: dict[str, Any]) -> None:
        """An announcement is the only copy of its fact on this side: never acknowledged unapplied.
        A failure is tried again here (1, 2, 4 s), then the message goes back to the queue."""
        for wait in (1, 2, 4, None):
            try:
                members.receive(facts)
                return
            except Exception as exc:  # MongoDB or Redis away: wait, then requeue
                if wait is None:
                    log.warning("account %s not applied (%s: %s): back to the queue", facts.get("id"),
                                exc.__class__.__name__, exc)
                    raise Reject(str(exc), requeue=True) from exc
                time.sleep(wait)

    return celery


class Loops:
    """The loops of one worker process, on two threads: the outbox relay alone on one (what a
    delivery's or an announcement's latency waits for), the upkeep steps on the other (a slow
    sweep or reminder pass under load never holds up the next relay)."""

    def __init__(self, app: Flask, celery: Celery) -> None:
        self.app, self.celery = app, celery
        self.stopping = threading.Event()
        self.poll = app.config["WORKER_POLL_MS"] / 1000
        relay, upkeep = self.steps()
        self.threads = [threading.Thread(target=self.run, args=(steps,), name=f"taskapi-{name}", daemon=True)
                        for name, steps in (("relay", relay), ("upkeep", upkeep))]

    def steps(self) -> tuple[list[tuple[str, Callable[[], int]]], list[tuple[str, Callable[[], int]]]]:
        """(the relay thread's steps, the upkeep thread's), by role."""
        if self.app.config["TASKAPI_SERVICE"] == "auth":
            return [("accounts", self.accounts)], [("mail", self.mail)]
        return [("relay", self.relay)], [("sweep", self.sweep), ("reminders", notifications.fire_due_reminders),
                                         ("mail", self.mail)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS  # one wait for both, within compose's grace period
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def run(self, steps: list[tuple[str, Callable[[], int]]]) -> None:
        failing: set[str] = set()
        while not self.stopping.is_set():
            busy = False
            for name, step in steps:
                try:
                    with self.app.app_context(), pymongo.timeout(STEP_TIMEOUT_SECONDS):
                        busy = step() >= notifications.BATCH or busy
                    if name in failing:
                        failing.discard(name)
                        log.info("%s: working again", name)
                except Exception as exc:  # noqa: BLE001 - a server down: say so once, keep the other steps going
                    if name not in failing:
                        failing.add(name)
                        log.warning("%s: %s: %s (retrying)", name, exc.__class__.__name__, exc)
            self.stopping.wait(0 if busy else self.poll if not failing else max(self.poll, 1.0))

    def publish(self, task: str, ids: list[Any]) -> list[Any]:
        """Publish one message per id (or tuple of ids, or dict: the message's one argument);
        returns those the broker took (stops at the first refusal)."""
        sent: list[Any] = []
        for ident in ids:
            args = ([ident] if isinstance(ident, dict)
                    else [str(part) for part in ident] if isinstance(ident, tuple) else [str(ident)])
            try:
                self.celery.send_task(f"taskapi.{task}", args=args, queue=queue_names(self.app)[task], retry=True,
                                      retry_policy=PUBLISH_RETRY)
            except Exception:
                if not sent:
                    raise
                break
            sent.append(ident)
        return sent

    def relay(self) -> int:
        waiting = notifications.events_to_relay()
        batches = [tuple(waiting[i:i + FANOUT_BATCH]) for i in range(0, len(waiting), FANOUT_BATCH)]
        sent: list[tuple[ObjectId, ...]] = []
        try:
            sent = self.publish("fanout", batches)
        finally:  # what the broker refused waits for the next pass (fan-out marks the rest relayed)
            taken = {ident for batch in sent for ident in batch}
            notifications.release_events([ident for ident in waiting if ident not in taken])
        return len(waiting)

    def sweep(self) -> int:
        endpoints = notifications.endpoints_to_wake()
        self.publish("deliver", endpoints)  # what the broker refused is woken by the next sweep after QUEUE_GRACE
        return len(endpoints)

    def mail(self) -> int:
        due = mailbox.mails_to_publish(kinds=mail_kinds(self.app))
        sent: list[ObjectId] = []
        try:
            sent = self.publish("send_mail", due)
        finally:
            mailbox.unqueue_mails([ident for ident in due if ident not in set(sent)])
        return len(due)

    def accounts(self) -> int:
        """The auth service's announcements, oldest first, to the tasks service's queue; each is
        marked relayed once the broker has it (a second copy after a crash changes nothing there)."""
        waiting = accounts.account_events_to_relay(notifications.BATCH)
        sent = self.publish("account", [row["facts"] for row in waiting])
        accounts.account_events_relayed([row["_id"] for row in waiting[:len(sent)]])
        return len(waiting)


def run_worker(app: Flask, *, concurrency: int, loglevel: str) -> None:
    """Consume the three queues with a pool of threads (deliveries wait on the network) and run
    the loops beside them until SIGTERM or SIGINT: then Celery stops taking messages, finishes
    the ones in flight, and the loops stop."""
    celery = make_celery(app)
    loops = Loops(app, celery)

    @signals.worker_ready.connect(weak=False)
    def started(**_: Any) -> None:
        log.info("worker ready (%s): queues %s", app.config["TASKAPI_SERVICE"], ", ".join(consumed_queues(app)))

    @signals.worker_shutting_down.connect(weak=False)
    def stopping(**_: Any) -> None:
        loops.stopping.set()
        notifications.stop_runs()

    loops.start()
    try:
        celery.worker_main(["worker", "--pool=threads", f"--concurrency={concurrency}", f"--loglevel={loglevel}",
                            "--queues=" + ",".join(consumed_queues(app)), "--without-gossip",
                            "--without-mingle", f"--hostname=taskapi-{os.getpid()}@%h"])
    finally:
        loops.stop()
