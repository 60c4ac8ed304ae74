"""Workers with settings of their own, one per test (no other worker runs in this module, so
each test knows which worker did the work): the address check at delivery, auto-disable,
SIGTERM, and the command's start-up errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from config import ROOT
from tests.helpers import bearer
from tests.live.test_notifications_live import create, deliveries, subscribe, wait_until
from tests.receivers import receiver
from tests.servers import WorkerProcess, worker

WEBHOOKS = "/api/v1/webhooks"


@pytest.fixture
def headers(user_tokens):
    return bearer(user_tokens["access_token"])


def test_the_address_is_checked_again_at_delivery(client, headers, app_env, log_dir):
    """A worker whose allow-list no longer covers the receiver refuses to connect to it."""
    with receiver() as hook, worker({**app_env, "WEBHOOK_ALLOW_NETWORKS": ""}, log_dir / "strict.log") as strict:
        created = subscribe(client, headers, hook.url, ["task.created"])
        create(client, headers)
        rows = wait_until(lambda: [r for r in deliveries(client, headers, created["id"]) if r["status"] == "failed"])
        assert rows and rows[-1]["error"].startswith("blocked:"), strict.log()[-2000:]
        assert "loopback" in rows[-1]["error"] and hook.received == []


def test_an_endpoint_failing_for_too_long_is_disabled(client, headers, app_env, log_dir):
    env = {**app_env, "WEBHOOK_DISABLE_AFTER": "2s", "WEBHOOK_RETRY_SCHEDULE": "1s,1s,1s,1s,1s"}
    with receiver(status=500) as hook, worker(env, log_dir / "disable.log"):
        created = subscribe(client, headers, hook.url, ["task.created"])
        create(client, headers)
        hook_state = wait_until(lambda: not (state := client.get(f"{WEBHOOK_URL(created)}", headers=headers)
                                             .get_json())["active"] and state, timeout=15)
        assert hook_state and "failed" in hook_state["disabled_reason"]
        create(client, headers)  # a disabled endpoint gets nothing new
        count = len(hook.received)
        time.sleep(1.5)
        assert len(hook.received) == count
        enabled = client.patch(WEBHOOK_URL(created), json={"active": True}, headers=headers).get_json()
        assert enabled["active"] is True and enabled["disabled_reason"] is None


def WEBHOOK_URL(created):
    return f"{WEBHOOKS}/{created['id']}"


def test_sigterm_finishes_the_delivery_in_flight(client, headers, app_env, log_dir):
    with receiver(hang=1.5) as hook:
        process = WorkerProcess(app_env, log_dir / "sigterm.log").start()
        try:
            created = subscribe(client, headers, hook.url, ["task.created"])
            create(client, headers)
            assert hook.wait_for(1, timeout=10)
            code = process.stop()  # SIGTERM while the receiver is still answering
        finally:
            process.stop()
        assert code == 0, process.log()[-2000:]
        rows = deliveries(client, headers, created["id"])
        assert [row["status"] for row in rows] == ["succeeded"]


def test_the_worker_refuses_a_broker_it_would_reach_without_tls(app_env):
    """kombu's Sentinel transport has no TLS: a rediss+sentinel:// broker is refused in one line
    rather than spoken to in clear."""
    env = {**app_env, "BROKER_URL": "rediss+sentinel://127.0.0.1:26379/taskapi"}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "cannot be a Sentinel set over TLS" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_the_worker_command_says_in_one_line_when_a_server_is_missing(app_env, log_dir):
    env = {**app_env, "MONGODB_URI": "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=300"}
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "worker"], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "cannot reach MongoDB" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_slow_upkeep_step_never_holds_up_the_relay(app, monkeypatch):
    """The relay (what every delivery waits for) has a thread of its own: while the upkeep
    thread is stuck in a reminder pass, the relay keeps its pace."""
    import threading

    from taskapi.services import notifications
    from taskapi.worker import Loops

    stuck, relays = threading.Event(), []
    monkeypatch.setitem(app.config, "WORKER_POLL_MS", 20)
    monkeypatch.setattr(notifications, "fire_due_reminders", lambda: stuck.wait(30) and 0)

    class Probe(Loops):  # the session's servers stay untouched: only the steps' pacing is looked at
        def relay(self) -> int:
            relays.append(time.monotonic())
            return 0

        def sweep(self) -> int:
            return 0

        def mail(self) -> int:
            return 0

    loops = Probe(app, celery=None)  # type: ignore[arg-type]  # nothing is published
    loops.start()
    try:
        time.sleep(1.0)
        assert [thread.is_alive() for thread in loops.threads] == [True, True]
        assert len(relays) >= 10, f"{len(relays)} relay passes in 1 s while a reminder pass hung"
    finally:
        stuck.set()
        loops.stop()
    assert not any(thread.is_alive() for thread in loops.threads)
