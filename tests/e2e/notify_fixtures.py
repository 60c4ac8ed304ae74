"""The notification service's deployed shape for tests/e2e/test_notifications_e2e.py.

One module-scoped stack: SecantusDB on disk (kill -9 means something), Redis (append-only) and a
cache Redis, RabbitMQ (`rabbitmq()`: AMQP_URL's broker with a vhost of our own, else a private
node) as BROKER_URL, an SMTP sink, gunicorn (3 workers) behind the repo's Nginx, and two
notification workers (`flask --app wsgi worker`). Short settings: 1 s retries, 2 s webhook
timeout, 100 ms polls, cheap argon2, no rate limits. Every process is stopped on the way out.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
import pytest
import requests
from bson import ObjectId

from taskapi.runtime import devserver
from taskapi.runtime.mailsink import MailSink
from tests.brokers import RabbitBroker, private_rabbitmq, rabbitmq
from tests.e2e.conftest import account
from tests.helpers import bearer
from tests.receivers import Received, Receiver
from tests.servers import GunicornServer, MongoServer, NginxServer, RedisServer, WorkerProcess

TASKS, WEBHOOKS = "/api/v1/tasks", "/api/v1/webhooks"
NOTIFY_SETTINGS = {
    "WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
    "WEBHOOK_RETRY_SCHEDULE": "1s,1s,1s", "WEBHOOK_TIMEOUT_SECONDS": "2",
    "REMINDER_MAX_DELAY_SECONDS": "2", "WORKER_POLL_MS": "100",
    "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "8192", "ARGON2_PARALLELISM": "1",
    "RATELIMIT_ENABLED": "false",
}


@dataclass
class NotifyStack:
    base: str
    env: dict[str, str]  # what gunicorn and the workers run with
    work: Path
    mongo: MongoServer
    app: GunicornServer
    nginx: NginxServer
    broker: RabbitBroker
    mail: MailSink
    db: Any  # pymongo Database, for checks the API does not expose (events, delivery rows)
    workers: list[WorkerProcess] = field(default_factory=list)
    _serial: list[int] = field(default_factory=lambda: [0])

    def start_worker(self, broker_url: str | None = None) -> WorkerProcess:
        self._serial[0] += 1
        env = {**self.env, **({"BROKER_URL": broker_url} if broker_url else {})}
        process = WorkerProcess(env, self.work / f"worker-{self._serial[0]}.log").start()
        self.workers.append(process)
        return process

    def live_workers(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.process is not None and w.process.poll() is None]

    def stop_workers(self) -> None:
        for process in self.live_workers():
            process.stop()

    def worker_logs(self, chars: int = 1500) -> str:
        """Each worker's warnings and errors, and the tail of its log; SecantusDB's warnings."""
        parts = []
        for w in self.workers:
            text = w.log()
            alarms = [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line or "/ERROR" in line]
            parts.append(f"\n--- {w.log_path.name}: warnings ---\n" + "\n".join(alarms[-15:])
                         + f"\n--- {w.log_path.name} (tail) ---\n{text[-chars:]}")
        db_log = self.mongo.log_path.read_text(errors="replace") if self.mongo.log_path.exists() else ""
        alarms = [line for line in db_log.splitlines() if " WARNING " in line]
        parts.append("\n--- SecantusDB warnings ---\n" + "\n".join(alarms[-10:]))
        return "".join(parts)

    def user(self, email: str) -> dict[str, str]:
        return bearer(account(self.base, email)["access_token"])

    def subscribe(self, headers: dict[str, str], url: str, events: list[str]) -> dict[str, Any]:
        response = requests.post(self.base + WEBHOOKS, json={"url": url, "events": events}, headers=headers,
                                 timeout=10)
        assert response.status_code == 201, response.text
        return response.json()

    def events_of(self, task_ids: list[str], kind: str) -> dict[str, str]:
        """event id -> task id, for the stored events of this type about these tasks."""
        found = self.db.events.find({"type": kind, "data.task._id": {"$in": [ObjectId(t) for t in task_ids]}},
                                    {"_id": 1, "data.task._id": 1})
        return {str(doc["_id"]): str(doc["data"]["task"]["_id"]) for doc in found}

    def stuck_rows(self, event_ids: list[str]) -> str:
        """What the database says about events not delivered yet (for failure messages)."""
        oids = [ObjectId(e) for e in event_ids[:20]]
        lines = [f"event {doc['_id']} due_at={doc.get('due_at')}" for doc in self.db.events.find({"_id": {"$in": oids}})]
        lines += [f"delivery {d['_id']} event {d['event']} attempt {d['attempt']} {d['status']} due={d.get('due_at')} "
                  f"lease={d.get('lease_until')} queued={d.get('queued_until')} error={d.get('error')}"
                  for d in self.db.deliveries.find({"event": {"$in": oids}})]
        return "\n".join(lines)


@contextmanager
def notify_stack_running(work: Path, broker: RabbitBroker) -> Iterator[NotifyStack]:
    with ExitStack() as stack:
        mongo = MongoServer(work, storage=str(work / "db")).start()
        stack.callback(mongo.stop)
        state = RedisServer(work, directory=work / "redis").start()
        stack.callback(state.stop)
        cache = RedisServer(work, maxmemory="64mb", policy="allkeys-lru").start()
        stack.callback(cache.stop)
        mail = MailSink(work / "mail").start()
        stack.callback(mail.stop)
        devserver.apply_migrations(mongo.uri)
        env = {"TASKAPI_ENV": "testing", "MONGODB_URI": mongo.uri, "REDIS_URL": state.url, "CACHE_REDIS_URL": cache.url,
               "JWT_SECRET_KEY": "e2e-notify-secret-" + "n" * 40, "TRUSTED_PROXY_COUNT": "1", "THREADS": "4",
               "BROKER_URL": broker.url, "BROKER_QUEUE_PREFIX": broker.queue_prefix + "taskapi.v1",
               "SMTP_URL": f"smtp://127.0.0.1:{mail.port}", "MAIL_FROM": "taskapi <no-reply@example.com>",
               **NOTIFY_SETTINGS}
        app = GunicornServer(env, workers=3, log_path=work / "gunicorn.log").start()
        stack.callback(app.stop)
        nginx = NginxServer(f"127.0.0.1:{app.port}", work / "nginx")
        check = nginx.check()
        assert check.returncode == 0, check.stderr
        nginx.start()
        stack.callback(nginx.stop)
        client = pymongo.MongoClient(mongo.uri, serverSelectionTimeoutMS=5000)
        stack.callback(client.close)
        notify = NotifyStack(base=nginx.base, env=env, work=work, mongo=mongo, app=app, nginx=nginx, broker=broker,
                             mail=mail, db=client.get_default_database())
        stack.callback(notify.stop_workers)  # runs first: workers stop before what they use
        notify.start_worker()
        notify.start_worker()
        yield notify


@pytest.fixture(scope="module")
def notify(tmp_path_factory) -> Iterator[NotifyStack]:
    if shutil.which("nginx") is None:
        pytest.fail("nginx is not installed (make e2e installs Debian's package)")
    work = tmp_path_factory.mktemp("e2e-notify")
    with rabbitmq(work / "broker") as broker, notify_stack_running(work, broker) as stack:
        yield stack


@contextmanager
def stoppable_broker(stack: NotifyStack) -> Iterator[RabbitBroker]:
    """A broker this test may stop, with the stack's two workers on it: the stack's own when it is
    a private node; else a private node, with two workers of its own in place of the stack's
    (restored afterwards), so that no event can travel through a broker that stays up."""
    if stack.broker.node is not None:
        yield stack.broker
        return
    stack.stop_workers()
    try:
        with private_rabbitmq(stack.work / "private-broker") as broker:
            prefix = {"BROKER_QUEUE_PREFIX": broker.queue_prefix + "taskapi.v1"}
            own = [WorkerProcess({**stack.env, **prefix, "BROKER_URL": broker.url},
                                 stack.work / f"private-worker-{n}.log").start() for n in (1, 2)]
            stack.workers.extend(own)
            try:
                yield broker
            finally:
                for process in own:
                    process.stop()
    finally:
        stack.start_worker()
        stack.start_worker()


# --- traffic and waiting ----------------------------------------------------------------------------------

@dataclass
class Created:
    task_id: str
    title: str
    acked_at: float  # time.monotonic() when the 201 arrived
    owner: int  # index into the list of users' headers


def write_tasks(base: str, users: list[dict[str, str]], *, count: int | None = None, seconds: float | None = None,
                threads: int = 8, title: str = "task", body: dict[str, Any] | None = None, pause: float = 0.0,
                on_ack: Callable[[int], None] | None = None,
                stop: threading.Event | None = None) -> tuple[list[Created], list[str]]:
    """Creates through Nginx, round-robin over `users`, from `threads` threads: `count` of them, or
    for `seconds` (each thread pausing `pause` between two), or until `stop` is set. on_ack(n) runs
    in the acknowledging thread right after the n-th 201. Returns the acknowledged creates and the
    failures (anything but a 201)."""
    lock = threading.Lock()
    made: list[Created] = []
    failures: list[str] = []
    numbers = iter(range(count if count is not None else 100_000))
    stop = stop or threading.Event()
    deadline = time.monotonic() + seconds if seconds is not None else None

    def work() -> None:
        with requests.Session() as session:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                with lock:
                    n = next(numbers, None)
                if n is None:
                    return
                name = f"{title}-{n:04d}"
                try:
                    response = session.post(base + TASKS, json={"title": name, **(body or {})},
                                            headers=users[n % len(users)], timeout=10)
                except requests.RequestException as exc:
                    failures.append(f"{name}: {exc.__class__.__name__}")
                    continue
                if response.status_code != 201:
                    failures.append(f"{name}: {response.status_code} {response.text[:200]}")
                    continue
                with lock:
                    made.append(Created(response.json()["id"], name, time.monotonic(), n % len(users)))
                    acked = len(made)
                if on_ack:
                    on_ack(acked)
                if pause:
                    time.sleep(pause)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    return made, failures


def create_tasks(base: str, users: list[dict[str, str]], count: int, **options: Any) -> list[Created]:
    """`count` creates that must all be 201."""
    made, failures = write_tasks(base, users, count=count, **options)
    assert not failures and len(made) == count, failures[:10]
    return made


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.1) -> float:
    """Poll check() until true or timeout; returns the seconds waited."""
    started = time.monotonic()
    while not check() and time.monotonic() - started < timeout:
        time.sleep(step)
    return time.monotonic() - started


def by_webhook_id(receiver: Receiver, kind: str | None = None) -> dict[str, list[Received]]:
    with receiver.lock:
        got = list(receiver.received)
    out: dict[str, list[Received]] = {}
    for request in got:
        if kind is None or request.json["type"] == kind:
            out.setdefault(request.headers["webhook-id"], []).append(request)
    return out


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3) if ordered else 0.0

