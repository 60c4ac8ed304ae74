"""The notification service end to end on real processes: the API in this process, a worker
(`flask --app wsgi worker`) on the test Redis as its broker, receivers and an SMTP server on loopback."""

from __future__ import annotations

import pytest

from tests.helpers import bearer
from tests.receivers import receiver, verify
from tests.servers import worker

TASKS, WEBHOOKS = "/api/v1/tasks", "/api/v1/webhooks"


@pytest.fixture(scope="module")
def notifier(app, app_env, log_dir):
    with worker(app_env, log_dir / "worker.log") as process:
        yield process


@pytest.fixture
def headers(user_tokens):
    return bearer(user_tokens["access_token"])


def subscribe(client, headers, url, events=("*",)):
    response = client.post(WEBHOOKS, json={"url": url, "events": list(events)}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def test_a_created_task_reaches_the_webhook_signed(client, headers, notifier):
    with receiver() as hook:
        created = subscribe(client, headers, hook.url)
        task = client.post(TASKS, json={"title": "Ship it"}, headers=headers).get_json()
        got = hook.wait_for(1)
        assert len(got) == 1, notifier.log()[-3000:]
        payload = verify(created["secret"], got[0])
        assert payload["type"] == "task.created" and payload["data"]["task"]["id"] == task["id"]
        assert payload["data"]["task"]["title"] == "Ship it"
        assert got[0].headers["webhook-id"] == payload["id"]
