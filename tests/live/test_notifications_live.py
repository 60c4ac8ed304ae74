"""The notification service end to end on real processes: the API in this process, workers
(`flask --app wsgi worker`) on the test Redis as their broker, webhook receivers and an SMTP
server on loopback. Settings (tests/conftest.py): retries 1s,1s,1s, timeout 2 s, reminders
within 2 s, polling every 100 ms."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from taskapi.runtime.mailsink import MailSink
from tests.helpers import bearer, login, register
from tests.receivers import receiver, verify
from tests.servers import worker

TASKS, WEBHOOKS = "/api/v1/tasks", "/api/v1/webhooks"


@pytest.fixture(scope="module")
def mailbox(tmp_path_factory):
    with MailSink(tmp_path_factory.mktemp("mail")) as sink:
        yield sink


@pytest.fixture(scope="module")
def notifier(app, app_env, log_dir, mailbox):
    env = {**app_env, "SMTP_URL": f"smtp://127.0.0.1:{mailbox.port}", "MAIL_FROM": "taskapi <tasks@example.com>"}
    with worker(env, log_dir / "worker.log") as process:
        yield process


@pytest.fixture
def headers(user_tokens):
    return bearer(user_tokens["access_token"])


def subscribe(client, headers, url, events=("*",)):
    response = client.post(WEBHOOKS, json={"url": url, "events": list(events)}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def create(client, headers, **fields):
    response = client.post(TASKS, json={"title": "A task", **fields}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def deliveries(client, headers, webhook_id):
    response = client.get(f"{WEBHOOKS}/{webhook_id}/deliveries?limit=100", headers=headers)
    assert response.status_code == 200
    return response.get_json()["items"]


def wait_until(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            return result
        time.sleep(0.1)
    return result


def test_every_task_write_reaches_the_webhook_signed(client, headers, notifier):
    with receiver() as hook:
        created = subscribe(client, headers, hook.url)
        task = create(client, headers, title="Ship it")
        client.patch(f"{TASKS}/{task['id']}", json={"status": "done"}, headers=headers)
        client.delete(f"{TASKS}/{task['id']}", headers=headers)
        got = hook.wait_for(4)
        payloads = [verify(created["secret"], request) for request in got]
        assert sorted(p["type"] for p in payloads) == ["task.completed", "task.created", "task.deleted",
                                                       "task.updated"], notifier.log()[-3000:]
        by_type = {p["type"]: p for p in payloads}
        assert by_type["task.created"]["data"]["task"]["title"] == "Ship it"
        assert by_type["task.completed"]["data"]["task"]["status"] == "done"
        assert by_type["task.deleted"]["data"]["task"] == {"id": task["id"]}
        assert {r.headers["webhook-id"] for r in got} == {p["id"] for p in payloads}  # one id per event
        assert all(r.headers["content-type"] == "application/json" for r in got)


def test_subscribers_get_only_the_events_they_chose(client, headers, notifier):
    with receiver() as completed_only, receiver() as updated_only:
        subscribe(client, headers, completed_only.url, ["task.completed"])
        subscribe(client, headers, updated_only.url, ["task.updated"])
        task = create(client, headers)
        client.patch(f"{TASKS}/{task['id']}", json={"status": "done"}, headers=headers)
        assert [r.json["type"] for r in completed_only.wait_for(1)] == ["task.completed"]
        assert [r.json["type"] for r in updated_only.wait_for(1)] == ["task.updated"]
        time.sleep(0.5)
        assert len(completed_only.received) == 1 and len(updated_only.received) == 1


def test_failures_are_retried_with_the_same_webhook_id_and_logged(client, headers, notifier):
    with receiver(script=[500, 500]) as hook:
        created = subscribe(client, headers, hook.url, ["task.created"])
        create(client, headers)
        got = hook.wait_for(3)
        assert len(got) == 3 and len({r.headers["webhook-id"] for r in got}) == 1
        log = wait_until(lambda: (rows := deliveries(client, headers, created["id"]))
                         and rows[0]["status"] == "succeeded" and rows)
        assert [(row["attempt"], row["status"], row["response_status"]) for row in reversed(log)] == [
            (1, "failed", 500), (2, "failed", 500), (3, "succeeded", 200)]
        assert log[-1]["error"] == "non-2xx: 500" and log[-1]["next_attempt_at"] is not None
        assert log[0]["next_attempt_at"] is None and log[0]["duration_ms"] >= 0
        assert len({row["event_id"] for row in log}) == 1


def test_after_the_schedule_a_delivery_is_failed(client, headers, notifier):
    with receiver(status=503) as hook:
        created = subscribe(client, headers, hook.url, ["task.created"])
        create(client, headers)
        hook.wait_for(4)
        log = wait_until(lambda: len(rows := deliveries(client, headers, created["id"])) == 4
                         and rows[0]["status"] == "failed" and rows)
        assert [row["status"] for row in log] == ["failed"] * 4  # 1 + the three retries of the schedule
        assert log[0]["next_attempt_at"] is None
        time.sleep(1.5)
        assert len(hook.received) == 4


def test_rotation_signs_with_both_secrets_for_a_day(client, headers, notifier):
    with receiver() as hook:
        created = subscribe(client, headers, hook.url, ["task.created"])
        rotated = client.post(f"{WEBHOOKS}/{created['id']}/rotate-secret", headers=headers).get_json()["secret"]
        create(client, headers)
        (request,) = hook.wait_for(1)
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        assert verify(created["secret"], request)["type"] == "task.created"  # the old secret still verifies
        assert verify(rotated, request)["type"] == "task.created"


def test_ping_and_redeliver_reach_the_receiver(client, headers, notifier):
    with receiver() as hook:
        created = subscribe(client, headers, hook.url, ["task.deleted"])
        ping = client.post(f"{WEBHOOKS}/{created['id']}/ping", headers=headers)
        assert ping.status_code == 202
        (request,) = hook.wait_for(1)
        assert request.json["type"] == "webhook.ping" and request.json["data"] == {}
        assert request.headers["webhook-id"] == ping.get_json()["event_id"]
        (row,) = wait_until(lambda: [r for r in deliveries(client, headers, created["id"])
                                     if r["status"] == "succeeded"])
        again = client.post(f"{WEBHOOKS}/{created['id']}/deliveries/{row['id']}/redeliver", headers=headers)
        assert again.status_code == 202 and again.get_json()["attempt"] == 2
        got = hook.wait_for(2)
        assert [r.headers["webhook-id"] for r in got] == [ping.get_json()["event_id"]] * 2


def test_a_reminder_fires_once_with_an_email_to_the_owner(client, headers, notifier, mailbox):
    with receiver() as hook:
        subscribe(client, headers, hook.url, ["task.reminder"])
        soon = datetime.now(UTC) + timedelta(seconds=1)
        task = create(client, headers, title="Call the plumber", remind_at=iso(soon))
        (request,) = hook.wait_for(1, timeout=10)
        arrived = datetime.now(UTC)
        assert request.json["type"] == "task.reminder" and request.json["data"]["task"]["id"] == task["id"]
        assert arrived - soon < timedelta(seconds=4)  # REMINDER_MAX_DELAY_SECONDS is 2, plus delivery
        fired = client.get(f"{TASKS}/{task['id']}", headers=headers).get_json()
        assert fired["reminded_at"] is not None and fired["version"] == task["version"] + 1
        letters = wait_until(lambda: [m for m in mailbox.messages() if "Call the plumber" in m["Subject"]])
        assert len(letters) == 1 and letters[0]["To"] == "ada@example.com"
        assert letters[0]["From"] == "taskapi <tasks@example.com>"
        time.sleep(1.5)
        assert len(hook.received) == 1  # never twice for the same remind_at


def test_a_past_reminder_fires_promptly_and_done_disarms(client, headers, notifier):
    with receiver() as hook:
        subscribe(client, headers, hook.url, ["task.reminder"])
        past = create(client, headers, title="Overdue", remind_at=iso(datetime.now(UTC) - timedelta(hours=1)))
        done = create(client, headers, title="Finished", remind_at=iso(datetime.now(UTC) + timedelta(seconds=1)))
        client.patch(f"{TASKS}/{done['id']}", json={"status": "done"}, headers=headers)
        (request,) = hook.wait_for(1, timeout=5)
        assert request.json["data"]["task"]["id"] == past["id"]
        time.sleep(2.5)
        assert len(hook.received) == 1
        assert client.get(f"{TASKS}/{done['id']}", headers=headers).get_json()["reminded_at"] is None


def test_changing_remind_at_arms_the_reminder_again(client, headers, notifier):
    with receiver() as hook:
        subscribe(client, headers, hook.url, ["task.reminder"])
        task = create(client, headers, remind_at=iso(datetime.now(UTC)))
        hook.wait_for(1, timeout=5)
        later = client.patch(f"{TASKS}/{task['id']}", json={"remind_at": iso(datetime.now(UTC))}, headers=headers)
        assert later.get_json()["reminded_at"] is None
        assert len(hook.wait_for(2, timeout=5)) == 2


def test_one_users_hanging_receiver_does_not_delay_another_user(client, headers, notifier):
    register(client, "bob@example.com")
    bob = bearer(login(client, "bob@example.com")["access_token"])
    with receiver(hang=3) as slow, receiver() as fast:
        subscribe(client, headers, slow.url)
        subscribe(client, bob, fast.url)
        for _ in range(8):
            create(client, headers)
        started = time.monotonic()
        for _ in range(5):
            create(client, bob)
        got = fast.wait_for(5, timeout=10)
        assert len(got) == 5 and got[-1].at - started < 2.0, notifier.log()[-2000:]


def test_metrics_report_deliveries_and_the_backlog(client, headers, notifier, app):
    with receiver() as hook:
        subscribe(client, headers, hook.url, ["task.created"])
        create(client, headers)
        hook.wait_for(1)
    text = wait_until(lambda: 'taskapi_webhook_deliveries_total{status="succeeded"}' in (
        body := client.get("/metrics").get_data(as_text=True)) and body)
    assert 'taskapi_webhook_deliveries_total{status="succeeded"}' in text
    assert "taskapi_webhook_delivery_latency_seconds_count" in text
    assert "taskapi_events_waiting" in text and "taskapi_reminders_late" in text
