"""Webhooks through the API: endpoints, secrets, the SSRF guard, pings and the delivery log; and
the task side of notifications: the events task writes leave in the outbox, the reminder fields."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from bson import ObjectId

from taskapi.models.event import events
from taskapi.models.task import tasks
from taskapi.models.webhook import deliveries, webhooks
from taskapi.services import notifications
from taskapi.worker import render_event
from tests.helpers import assert_problem, bearer, claims_of, login, register
from tests.receivers import receiver, verify

WEBHOOKS = "/api/v1/webhooks"
TASKS = "/api/v1/tasks"
HOOK_URL = "http://127.0.0.1:9/hook"  # allowed in the test env (WEBHOOK_ALLOW_HTTP, 127.0.0.0/8)
WEBHOOK_FIELDS = {"id", "url", "events", "description", "active", "disabled_reason", "created_at", "updated_at"}
DELIVERY_FIELDS = {"id", "event_id", "event_type", "attempt", "status", "response_status", "duration_ms", "error",
                   "created_at", "next_attempt_at"}


@pytest.fixture
def headers(user_tokens):
    return bearer(user_tokens["access_token"])


@pytest.fixture
def other_headers(client):
    register(client, "bob@example.com")
    return bearer(login(client, "bob@example.com")["access_token"])


@pytest.fixture
def strict(make_app):
    """A client and headers of an app with the production URL rules: https only, no exempt network."""
    strict_app = make_app(WEBHOOK_ALLOW_NETWORKS="", WEBHOOK_ALLOW_HTTP="false")
    strict_client = strict_app.test_client()
    register(strict_client, "eve@example.com")
    return strict_app, strict_client, bearer(login(strict_client, "eve@example.com")["access_token"])


def create_hook(client, headers, url=HOOK_URL, events_=("task.created",), **fields):
    response = client.post(WEBHOOKS, json={"url": url, "events": list(events_), **fields}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def create_task(client, headers, **fields):
    response = client.post(TASKS, json={"title": "A task", **fields}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def assert_secret(secret: str) -> None:
    assert secret.startswith("whsec_"), secret
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert 24 <= len(key) <= 64


def assert_error_on(response, field: str) -> dict:
    body = assert_problem(response, 422)
    assert any(key == field or key.startswith(field + ".") for key in body["errors"]), body
    return body


def tamper(cursor: str) -> str:
    """The cursor with one character of its signed payload changed."""
    index = len(cursor) // 3
    return cursor[:index] + ("A" if cursor[index] != "A" else "B") + cursor[index + 1:]


def event_docs(app, **query):
    with app.app_context():
        return list(events().find(query).sort("_id", 1))


def fan_out_task_created(app) -> tuple[dict, list[ObjectId]]:
    """Fan the task.created event out as the worker does; returns it and the attempts it created."""
    with app.app_context():
        event = events().find_one({"type": "task.created"})
        assert event is not None
        woken = notifications.fanout([event["_id"]], render=render_event)
        created = [row["_id"] for row in deliveries().find({"event": event["_id"]})]
        assert len(woken) == len(created)  # one endpoint woken per attempt
        return event, created


# --- create, read, list ---------------------------------------------------------------------

def test_create_returns_the_webhook_its_secret_and_location(client, headers):
    response = client.post(WEBHOOKS, json={"url": HOOK_URL, "events": ["task.created", "task.completed"],
                                           "description": "  Sync to CRM  "}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    hook = response.get_json()
    assert set(hook) == WEBHOOK_FIELDS | {"secret"}
    assert response.headers["Location"] == f"{WEBHOOKS}/{hook['id']}"
    assert ObjectId.is_valid(hook["id"])
    assert (hook["url"], hook["events"], hook["description"]) == (HOOK_URL, ["task.created", "task.completed"],
                                                                   "Sync to CRM")
    assert hook["active"] is True and hook["disabled_reason"] is None
    assert hook["created_at"] == hook["updated_at"] and hook["created_at"].endswith("Z")
    assert_secret(hook["secret"])

    shown = client.get(response.headers["Location"], headers=headers)
    assert shown.status_code == 200
    assert shown.get_json() == {k: v for k, v in hook.items() if k != "secret"}
    listed = client.get(WEBHOOKS, headers=headers)
    assert listed.get_json()["items"] == [shown.get_json()]
    for text in (shown.get_data(as_text=True), listed.get_data(as_text=True)):
        assert "whsec_" not in text and hook["secret"] not in text


def test_description_is_optional_and_star_means_everything(client, headers):
    hook = create_hook(client, headers, events_=["*"])
    assert hook["description"] == "" and hook["events"] == ["*"]


def test_secrets_differ_between_webhooks(client, headers):
    secrets = {create_hook(client, headers)["secret"] for _ in range(3)}
    assert len(secrets) == 3


def test_webhooks_need_a_token(client):
    hook_url = f"{WEBHOOKS}/{ObjectId()}"
    for method, url in (("get", WEBHOOKS), ("post", WEBHOOKS), ("get", hook_url), ("patch", hook_url),
                        ("delete", hook_url), ("post", f"{hook_url}/ping"), ("post", f"{hook_url}/rotate-secret"),
                        ("get", f"{hook_url}/deliveries")):
        takes_body = (method, url) in (("post", WEBHOOKS), ("patch", hook_url))
        kwargs = {"json": {"url": HOOK_URL, "events": ["*"]}} if takes_body else {}
        assert_problem(getattr(client, method)(url, **kwargs), 401)


def test_list_is_newest_first_and_keyset_paged(client, headers):
    created = [create_hook(client, headers, description=f"hook {i}")["id"] for i in range(5)]
    first = client.get(f"{WEBHOOKS}?limit=2", headers=headers)
    assert first.status_code == 200
    page = first.get_json()
    assert set(page) == {"items", "next_cursor"}
    assert [item["id"] for item in page["items"]] == created[::-1][:2]
    assert all(set(item) == WEBHOOK_FIELDS for item in page["items"])
    assert page["next_cursor"]
    link = first.headers["Link"]
    assert link == f'<{WEBHOOKS}?{urlencode({"limit": 2, "cursor": page["next_cursor"]})}>; rel="next"'

    second = client.get(link[1:link.index(">")], headers=headers)  # follow the Link as a client would
    assert [item["id"] for item in second.get_json()["items"]] == created[::-1][2:4]
    cursor = second.get_json()["next_cursor"]
    last = client.get(f"{WEBHOOKS}?limit=2&cursor={cursor}", headers=headers)
    assert [item["id"] for item in last.get_json()["items"]] == created[:1]
    assert last.get_json()["next_cursor"] is None and "Link" not in last.headers

    whole = client.get(WEBHOOKS, headers=headers)
    assert [item["id"] for item in whole.get_json()["items"]] == created[::-1]
    assert whole.get_json()["next_cursor"] is None and "Link" not in whole.headers


def test_bad_paging_arguments_are_422(client, headers, other_headers):
    for _ in range(3):
        create_hook(client, headers)
    cursor = client.get(f"{WEBHOOKS}?limit=1", headers=headers).get_json()["next_cursor"]
    assert cursor
    assert_error_on(client.get(f"{WEBHOOKS}?limit=1&cursor={tamper(cursor)}", headers=headers), "cursor")
    assert_error_on(client.get(f"{WEBHOOKS}?limit=1&cursor=garbage", headers=headers), "cursor")
    # Another user's cursor is refused: it is bound to its owner's list.
    create_hook(client, other_headers)
    assert_error_on(client.get(f"{WEBHOOKS}?limit=1&cursor={cursor}", headers=other_headers), "cursor")
    for limit in ("0", "101", "ten"):
        assert_error_on(client.get(f"{WEBHOOKS}?limit={limit}", headers=headers), "limit")


# --- update, delete -------------------------------------------------------------------------

def instant(text):
    """An API timestamp as a datetime (as strings, `...:34Z` sorts after `...:34.065Z`)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_patch_changes_each_field(client, headers):
    hook = create_hook(client, headers, description="first")
    url = f"{WEBHOOKS}/{hook['id']}"
    steps = [({"url": "http://127.0.0.2:8080/other?x=1"}, "url", "http://127.0.0.2:8080/other?x=1"),
             ({"events": ["task.deleted", "task.reminder"]}, "events", ["task.deleted", "task.reminder"]),
             ({"events": ["*"]}, "events", ["*"]),
             ({"description": "second"}, "description", "second"),
             ({"description": ""}, "description", ""),
             ({"active": False}, "active", False),
             ({"active": True}, "active", True)]
    current = {k: v for k, v in hook.items() if k != "secret"}
    for payload, field, expected in steps:
        response = client.patch(url, json=payload, headers=headers)
        assert response.status_code == 200, (payload, response.get_data(as_text=True))
        patched = response.get_json()
        assert set(patched) == WEBHOOK_FIELDS and patched[field] == expected
        assert {k: v for k, v in patched.items() if k not in (field, "updated_at")} == \
               {k: v for k, v in current.items() if k not in (field, "updated_at")}
        assert instant(patched["updated_at"]) >= instant(current["updated_at"])
        assert patched["created_at"] == hook["created_at"]
        assert client.get(url, headers=headers).get_json() == patched
        current = patched
    both = client.patch(url, json={"url": HOOK_URL, "description": "both", "events": ["task.updated"]},
                        headers=headers).get_json()
    assert (both["url"], both["description"], both["events"]) == (HOOK_URL, "both", ["task.updated"])
    assert "whsec_" not in client.patch(url, json={}, headers=headers).get_data(as_text=True)


def test_reenabling_clears_disabled_reason(app, client, headers):
    hook = create_hook(client, headers)
    url = f"{WEBHOOKS}/{hook['id']}"
    with app.app_context():  # what the worker does after WEBHOOK_DISABLE_AFTER of failures
        webhooks().update_one({"_id": ObjectId(hook["id"])},
                              {"$set": {"active": False, "disabled_reason": "every delivery failed for 5 days"}})
    disabled = client.get(url, headers=headers).get_json()
    assert disabled["active"] is False and disabled["disabled_reason"] == "every delivery failed for 5 days"
    enabled = client.patch(url, json={"active": True}, headers=headers)
    assert enabled.status_code == 200
    assert enabled.get_json()["active"] is True and enabled.get_json()["disabled_reason"] is None
    assert client.get(url, headers=headers).get_json()["disabled_reason"] is None
    paused = client.patch(url, json={"active": False}, headers=headers).get_json()
    assert paused["active"] is False and paused["disabled_reason"] is None  # paused by its owner, not failures


@pytest.mark.parametrize("payload, field", [
    ({"active": "false"}, "active"),
    ({"active": 0}, "active"),
    ({"active": None}, "active"),
    ({"events": []}, "events"),
    ({"events": ["task.exploded"]}, "events"),
    ({"url": None}, "url"),
    ({"url": "ftp://127.0.0.1/hook"}, "url"),
    ({"secret": "whsec_AAAA"}, "secret"),
    ({"id": str(ObjectId())}, "id"),
    ({"disabled_reason": None}, "disabled_reason"),
])
def test_patch_validation_leaves_the_webhook_unchanged(client, headers, payload, field):
    hook = create_hook(client, headers)
    url = f"{WEBHOOKS}/{hook['id']}"
    before = client.get(url, headers=headers).get_json()
    assert_error_on(client.patch(url, json=payload, headers=headers), field)
    assert client.get(url, headers=headers).get_json() == before


def test_delete_then_404(app, client, headers):
    hook = create_hook(client, headers)
    keep = create_hook(client, headers)
    url = f"{WEBHOOKS}/{hook['id']}"
    client.post(f"{url}/ping", headers=headers)
    with app.app_context():
        ping = events().find_one({"type": "webhook.ping"})
        assert notifications.fanout([ping["_id"]], render=render_event)
    response = client.delete(url, headers=headers)
    assert response.status_code == 204 and response.get_data() == b""
    for again in (client.get(url, headers=headers), client.delete(url, headers=headers),
                  client.patch(url, json={"description": "x"}, headers=headers),
                  client.get(f"{url}/deliveries", headers=headers)):
        assert_problem(again, 404)
    assert [item["id"] for item in client.get(WEBHOOKS, headers=headers).get_json()["items"]] == [keep["id"]]
    with app.app_context():
        assert deliveries().count_documents({"webhook": ObjectId(hook["id"])}) == 0  # its log goes with it


def test_twenty_first_webhook_is_409(app, client, headers, other_headers):
    for _ in range(20):
        create_hook(client, headers)
    body = assert_problem(client.post(WEBHOOKS, json={"url": HOOK_URL, "events": ["*"]}, headers=headers), 409)
    assert "20" in body["detail"]
    with app.app_context():
        assert webhooks().count_documents({}) == 20
    create_hook(client, other_headers)  # the limit is per user
    hooks = client.get(f"{WEBHOOKS}?limit=100", headers=headers).get_json()["items"]
    assert client.delete(f"{WEBHOOKS}/{hooks[0]['id']}", headers=headers).status_code == 204
    create_hook(client, headers)  # room again


def test_another_users_webhook_is_indistinguishable_from_a_missing_one(app, client, headers, other_headers):
    hook = create_hook(client, headers)
    url = f"{WEBHOOKS}/{hook['id']}"
    create_task(client, headers)
    _, created = fan_out_task_created(app)
    delivery_id = str(created[0])
    before = client.get(url, headers=headers).get_json()
    bob_hook = create_hook(client, other_headers)

    def every_route(base):
        return [client.get(base, headers=other_headers),
                client.patch(base, json={"description": "mine now"}, headers=other_headers),
                client.post(f"{base}/ping", headers=other_headers),
                client.post(f"{base}/rotate-secret", headers=other_headers),
                client.get(f"{base}/deliveries", headers=other_headers),
                client.post(f"{base}/deliveries/{delivery_id}/redeliver", headers=other_headers),
                client.delete(base, headers=other_headers)]

    answers = set()
    for base in (url, f"{WEBHOOKS}/{ObjectId()}", f"{WEBHOOKS}/not-an-id", f"{WEBHOOKS}/{'0' * 25}"):
        for response in every_route(base):
            answers.add(assert_problem(response, 404)["detail"])
    assert len(answers) == 1, answers
    # Ada's delivery through Bob's own webhook is no more visible.
    assert_problem(client.post(f"{WEBHOOKS}/{bob_hook['id']}/deliveries/{delivery_id}/redeliver",
                               headers=other_headers), 404)
    assert client.get(url, headers=headers).get_json() == before  # untouched
    assert [item["id"] for item in client.get(WEBHOOKS, headers=other_headers).get_json()["items"]] == [bob_hook["id"]]
    with app.app_context():
        stored = webhooks().find_one({"_id": ObjectId(hook["id"])})
        assert [s["value"] for s in stored["secrets"]] == [hook["secret"]]  # not rotated
        assert events().count_documents({"type": "webhook.ping"}) == 0
        assert deliveries().count_documents({}) == 1  # not redelivered


# --- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("payload, field", [
    ({"events": ["task.created"]}, "url"),
    ({"url": HOOK_URL}, "events"),
    ({"url": HOOK_URL, "events": []}, "events"),
    ({"url": HOOK_URL, "events": ["task.exploded"]}, "events"),
    ({"url": HOOK_URL, "events": ["webhook.ping"]}, "events"),
    ({"url": HOOK_URL, "events": "task.created"}, "events"),
    ({"url": HOOK_URL, "events": {"task.created": True}}, "events"),
    ({"url": HOOK_URL, "events": None}, "events"),
    ({"url": HOOK_URL, "events": [5]}, "events"),
    ({"url": 5, "events": ["*"]}, "url"),
    ({"url": None, "events": ["*"]}, "url"),
    ({"url": ["https://example.com/"], "events": ["*"]}, "url"),
    ({"url": HOOK_URL, "events": ["*"], "colour": "red"}, "colour"),
    ({"url": HOOK_URL, "events": ["*"], "secret": "whsec_" + "A" * 32}, "secret"),
    ({"url": HOOK_URL, "events": ["*"], "active": False}, "active"),
    ({"url": HOOK_URL, "events": ["*"], "description": "d" * 501}, "description"),
    ({"url": HOOK_URL, "events": ["*"], "description": None}, "description"),
    ({"url": "https://example.com/" + "a" * 2029, "events": ["*"]}, "url"),  # 2049 characters
    ({"url": "ftp://example.com/hook", "events": ["*"]}, "url"),
    ({"url": "example.com/hook", "events": ["*"]}, "url"),
    ({"url": "", "events": ["*"]}, "url"),
    ({"url": "https://user:pass@example.com/hook", "events": ["*"]}, "url"),
    ({"url": "https://user@example.com/hook", "events": ["*"]}, "url"),
    ({"url": "https://example.com/hook#fragment", "events": ["*"]}, "url"),
    ({"url": "https://exa mple.com/hook", "events": ["*"]}, "url"),
    ({"url": "https://example.com:0/hook", "events": ["*"]}, "url"),
    ({"url": "https://example.com:99999/hook", "events": ["*"]}, "url"),
    ({"url": "https://exa\u00e4mple.com/hook", "events": ["*"]}, "url"),
    ({"url": "https:///hook", "events": ["*"]}, "url"),
])
def test_create_validation(app, client, headers, payload, field):
    assert_error_on(client.post(WEBHOOKS, json=payload, headers=headers), field)
    with app.app_context():
        assert webhooks().count_documents({}) == 0


def test_a_url_of_2048_characters_is_accepted(client, headers):
    url = "https://example.com/" + "a" * 2028
    assert len(url) == 2048
    assert create_hook(client, headers, url=url)["url"] == url


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/",
    "https://0x7f.1/",
    "https://2130706433/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::1]/",
    "https://169.254.169.254/",
    "https://10.0.0.1/",
    "https://192.168.1.1/",
    "https://100.64.0.1/",
    "https://0.0.0.0/",
    "https://127.1/",
    "https://0177.0.0.1/",
    "https://017700000001/",
    "https://127.0.0.1./",
    "https://[0:0:0:0:0:ffff:7f00:1]/",
    "https://[::127.0.0.1]/",
    "https://[64:ff9b::a9fe:a9fe]/",
    "https://[2002:a9fe:a9fe::]/",
    "https://[fe80::1%25eth0]/",
    "https://[fd00::1]/",
    "https://[::]/",
    "https://172.16.0.1/",
    "https://192.0.2.1/",
    "https://224.0.0.1/",
    "https://240.0.0.1/",
    "https://255.255.255.255/",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "HTTPS://169.254.169.254/",
    "http://example.com/hook",
    "http://93.184.216.34/",
])
def test_ssrf_guard_refuses_non_public_and_plain_http_urls(strict, url):
    strict_app, strict_client, strict_headers = strict
    assert_error_on(strict_client.post(WEBHOOKS, json={"url": url, "events": ["*"]}, headers=strict_headers), "url")
    with strict_app.app_context():
        assert webhooks().count_documents({}) == 0


def test_ssrf_guard_accepts_a_public_https_name_and_guards_patch(strict):
    strict_app, strict_client, strict_headers = strict
    response = strict_client.post(WEBHOOKS, json={"url": "https://example.com/hook", "events": ["*"]},
                                  headers=strict_headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    url = response.headers["Location"]
    before = strict_client.get(url, headers=strict_headers).get_json()
    for blocked in ("https://127.0.0.1/", "https://169.254.169.254/latest/meta-data/", "http://example.com/hook"):
        assert_error_on(strict_client.patch(url, json={"url": blocked, "description": "moved"},
                                            headers=strict_headers), "url")
    assert strict_client.get(url, headers=strict_headers).get_json() == before
    with strict_app.app_context():
        assert webhooks().find_one({})["url"] == "https://example.com/hook"


# --- secrets, pings ---------------------------------------------------------------------------

def test_rotate_secret(app, client, headers):
    hook = create_hook(client, headers)
    url = f"{WEBHOOKS}/{hook['id']}"
    response = client.post(f"{url}/rotate-secret", headers=headers)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"secret"}
    assert_secret(body["secret"])
    assert body["secret"] != hook["secret"]
    shown = client.get(url, headers=headers)
    assert set(shown.get_json()) == WEBHOOK_FIELDS and "whsec_" not in shown.get_data(as_text=True)
    with app.app_context():
        stored = webhooks().find_one({"_id": ObjectId(hook["id"])})
        # The new secret signs, and the old one still does (for 24 h).
        assert notifications.signing_secrets(stored, datetime.now(UTC)) == [body["secret"], hook["secret"]]
    third = client.post(f"{url}/rotate-secret", headers=headers).get_json()["secret"]
    assert third not in (hook["secret"], body["secret"])


def test_ping_queues_one_ping_event_for_that_webhook(app, client, headers, user_tokens):
    hook = create_hook(client, headers)
    other = create_hook(client, headers)
    response = client.post(f"{WEBHOOKS}/{hook['id']}/ping", headers=headers)
    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"event_id"} and ObjectId.is_valid(body["event_id"])
    pings = event_docs(app, type="webhook.ping")
    assert len(pings) == 1
    ping = pings[0]
    assert str(ping["_id"]) == body["event_id"]
    assert ping["webhook"] == ObjectId(hook["id"])
    assert ping["owner"] == ObjectId(claims_of(user_tokens["access_token"])["sub"])
    assert ping["data"] == {}
    with app.app_context():
        created = notifications.fanout([ping["_id"]], render=render_event)
    assert len(created) == 1  # to that webhook alone
    log = client.get(f"{WEBHOOKS}/{hook['id']}/deliveries", headers=headers).get_json()["items"]
    assert [(d["event_id"], d["event_type"]) for d in log] == [(body["event_id"], "webhook.ping")]
    assert client.get(f"{WEBHOOKS}/{other['id']}/deliveries", headers=headers).get_json()["items"] == []


# --- the delivery log -------------------------------------------------------------------------

def test_deliveries_of_a_new_webhook_are_empty(client, headers):
    hook = create_hook(client, headers)
    response = client.get(f"{WEBHOOKS}/{hook['id']}/deliveries", headers=headers)
    assert response.status_code == 200
    assert response.get_json() == {"items": [], "next_cursor": None}
    assert "Link" not in response.headers


def test_delivery_log_and_redelivery(app, client, headers):
    hook = create_hook(client, headers, events_=["task.created"])
    ignored = create_hook(client, headers, events_=["task.deleted"])
    paused = create_hook(client, headers, events_=["*"])
    assert client.patch(f"{WEBHOOKS}/{paused['id']}", json={"active": False}, headers=headers).status_code == 200
    task = create_task(client, headers)
    event, created = fan_out_task_created(app)
    assert str(event["data"]["task"]["_id"]) == task["id"]
    assert len(created) == 1  # the subscribed, active webhook only
    with app.app_context():
        assert notifications.fanout([event["_id"]], render=render_event) == []  # a second fan-out adds nothing

    base = f"{WEBHOOKS}/{hook['id']}/deliveries"
    response = client.get(base, headers=headers)
    assert response.status_code == 200
    page = response.get_json()
    assert page["next_cursor"] is None and len(page["items"]) == 1
    first = page["items"][0]
    assert set(first) == DELIVERY_FIELDS
    assert first["id"] == str(created[0]) and first["event_id"] == str(event["_id"])
    assert (first["event_type"], first["attempt"], first["status"]) == ("task.created", 1, "pending")
    assert (first["response_status"], first["duration_ms"], first["error"]) == (None, None, None)
    assert first["created_at"].endswith("Z") and first["next_attempt_at"].endswith("Z")
    for other in (ignored, paused):
        assert client.get(f"{WEBHOOKS}/{other['id']}/deliveries", headers=headers).get_json()["items"] == []

    again = client.post(f"{base}/{first['id']}/redeliver", headers=headers)
    assert again.status_code == 202, again.get_data(as_text=True)
    second = again.get_json()
    assert set(second) == DELIVERY_FIELDS
    assert (second["event_id"], second["event_type"], second["attempt"], second["status"]) == \
           (first["event_id"], "task.created", 2, "pending")
    assert second["id"] != first["id"] and second["error"] is None
    third = client.post(f"{base}/{first['id']}/redeliver", headers=headers).get_json()
    assert third["attempt"] == 3

    log = client.get(base, headers=headers).get_json()
    assert [d["id"] for d in log["items"]] == [third["id"], second["id"], first["id"]]  # newest first
    assert log["items"][1] == second

    for unknown in (str(ObjectId()), "not-an-id"):
        assert_problem(client.post(f"{base}/{unknown}/redeliver", headers=headers), 404)
    # A delivery of one webhook is not found through another.
    assert_problem(client.post(f"{WEBHOOKS}/{ignored['id']}/deliveries/{first['id']}/redeliver", headers=headers),
                   404)


def test_delivery_log_is_keyset_paged(app, client, headers):
    hook = create_hook(client, headers, events_=["*"])
    other = create_hook(client, headers, events_=["task.deleted"])
    create_task(client, headers)
    _, created = fan_out_task_created(app)
    base = f"{WEBHOOKS}/{hook['id']}/deliveries"
    redelivered = client.post(f"{base}/{created[0]}/redeliver", headers=headers).get_json()
    first = client.get(f"{base}?limit=1", headers=headers)
    page = first.get_json()
    assert [d["id"] for d in page["items"]] == [redelivered["id"]] and page["next_cursor"]
    assert first.headers["Link"].endswith('; rel="next"') and page["next_cursor"] in first.headers["Link"]
    second = client.get(f"{base}?limit=1&cursor={page['next_cursor']}", headers=headers).get_json()
    assert [d["id"] for d in second["items"]] == [str(created[0])] and second["next_cursor"] is None
    assert_error_on(client.get(f"{base}?limit=1&cursor={tamper(page['next_cursor'])}", headers=headers), "cursor")
    # The cursor belongs to that webhook's log.
    assert_error_on(client.get(f"{WEBHOOKS}/{other['id']}/deliveries?cursor={page['next_cursor']}",
                               headers=headers), "cursor")


# --- first attempts at fan-out (an endpoint that answered quickly of late) ---------------------

def fan_out_latest(app) -> tuple[dict, list[tuple[ObjectId, ObjectId]]]:
    with app.app_context():
        event = events().find_one({"due_at": {"$exists": True}}, sort=[("_id", -1)])
        return event, notifications.fanout([event["_id"]], render=render_event)


def attempts_of(app, event) -> list[dict]:
    with app.app_context():
        return list(deliveries().find({"event": event["_id"]}).sort("attempt", 1))


def make_fast(app, client, headers, hook) -> None:
    """A first delivery the normal way (pending row, then a run of its endpoint): a quick 2xx."""
    create_task(client, headers, title="Warm-up")
    event, woken = fan_out_latest(app)
    assert woken == [(ObjectId(hook["id"]), event["owner"])]
    with app.app_context():
        notifications.deliver(*woken[0], render=render_event)
    assert [row["status"] for row in attempts_of(app, event)] == ["succeeded"]


def test_a_fast_endpoint_gets_its_first_attempt_during_fan_out_and_one_row_with_its_outcome(app, client, headers):
    with receiver() as hook_server:
        hook = create_hook(client, headers, url=hook_server.url, events_=["*"])
        make_fast(app, client, headers, hook)
        task = create_task(client, headers, title="Straight through")
        event, woken = fan_out_latest(app)
        assert woken == []  # nothing left for a run of the endpoint
        assert len(hook_server.received) == 2  # made before fanout() returned
        request = hook_server.received[-1]
        assert verify(hook["secret"], request)["data"]["task"]["id"] == task["id"]
        assert request.headers["webhook-id"] == str(event["_id"])
    [row] = attempts_of(app, event)
    assert (row["attempt"], row["status"], row["response_status"], row["error"]) == (1, "succeeded", 200, None)
    assert "due_at" not in row and "sweep_at" not in row  # not waiting for anything
    log = client.get(f"{WEBHOOKS}/{hook['id']}/deliveries", headers=headers).get_json()["items"]
    assert (log[0]["id"], log[0]["status"], log[0]["next_attempt_at"]) == (str(row["_id"]), "succeeded", None)
    with app.app_context():
        assert notifications.fanout([event["_id"]], render=render_event) == []  # relayed again: nothing new
        # Relayed again while still waiting (a worker died before marking it relayed): its stored
        # first attempt is not made again at fan-out.
        events().update_one({"_id": event["_id"]}, {"$set": {"due_at": event["created_at"]}})
        with receiver() as again:
            webhooks().update_one({"_id": ObjectId(hook["id"])}, {"$set": {"url": again.url}})
            assert notifications.fanout([event["_id"]], render=render_event) == []
            assert again.received == []
    assert len(attempts_of(app, event)) == 1


def test_a_failed_first_attempt_during_fan_out_has_its_retry_stored(app, client, headers):
    with receiver(script=[200, 503]) as hook_server:
        hook = create_hook(client, headers, url=hook_server.url, events_=["*"])
        make_fast(app, client, headers, hook)
        create_task(client, headers)
        event, woken = fan_out_latest(app)
        assert woken == [] and len(hook_server.received) == 2
    first, retry = attempts_of(app, event)
    assert (first["status"], first["response_status"], first["error"]) == ("failed", 503, "non-2xx: 503")
    assert first["next_attempt_at"] is not None and first["next_attempt_at"] == retry["next_attempt_at"]
    assert (retry["attempt"], retry["status"], retry["payload"]) == (2, "pending", first["payload"])


def test_a_fast_endpoint_that_stops_answering_is_left_to_the_normal_path(app, client, headers):
    with receiver() as hook_server:
        hook = create_hook(client, headers, url=hook_server.url, events_=["*"])
        make_fast(app, client, headers, hook)
        hook_server.hang = 1.5  # beyond the 1 s a fan-out waits, within the 2 s timeout of the tests
        create_task(client, headers)
        event, woken = fan_out_latest(app)
        [row] = attempts_of(app, event)
        assert row["status"] == "pending" and woken == [(ObjectId(hook["id"]), event["owner"])]
        with app.app_context():  # the normal path makes it with the whole timeout
            notifications.deliver(*woken[0], render=render_event)
        [row] = attempts_of(app, event)
        assert (row["status"], row["response_status"]) == ("succeeded", 200)
        sent = [r.headers["webhook-id"] for r in hook_server.received]
        assert sent[1:] == [str(event["_id"])] * 2  # at least once: the receiver saw it twice, same webhook-id
        # Slow now: the next event is not attempted at fan-out.
        create_task(client, headers)
        _, woken = fan_out_latest(app)
        assert woken == [(ObjectId(hook["id"]), event["owner"])] and len(hook_server.received) == 3


# --- task writes leave events in the outbox ---------------------------------------------------

def test_task_writes_store_their_events(app, client, headers, other_headers, user_tokens):
    owner = ObjectId(claims_of(user_tokens["access_token"])["sub"])
    task = create_task(client, headers, title="Write report")
    url = f"{TASKS}/{task['id']}"
    created = event_docs(app)
    assert [e["type"] for e in created] == ["task.created"]
    assert created[0]["owner"] == owner and created[0]["data"]["task"]["_id"] == ObjectId(task["id"])
    assert created[0]["data"]["task"]["title"] == "Write report"
    assert created[0].get("due_at") is not None  # waiting for the relay

    assert client.patch(url, json={"title": "Write the report"}, headers=headers).status_code == 200
    assert [e["type"] for e in event_docs(app)[1:]] == ["task.updated"]
    assert event_docs(app)[1]["data"]["task"]["title"] == "Write the report"

    done = client.patch(url, json={"status": "done"}, headers=headers)
    assert done.status_code == 200
    latest = event_docs(app)[2:]
    assert sorted(e["type"] for e in latest) == ["task.completed", "task.updated"]
    assert all(e["data"]["task"]["status"] == "done" for e in latest)

    count = len(event_docs(app))
    unchanged = client.patch(url, json={"status": "done", "title": " Write the report "}, headers=headers)
    assert unchanged.status_code == 200 and unchanged.get_json()["version"] == done.get_json()["version"]
    assert client.patch(url, json={}, headers=headers).status_code == 200
    assert_problem(client.patch(url, json={"title": "Bob's now"}, headers=other_headers), 404)
    assert_problem(client.delete(url, headers=other_headers), 404)
    assert len(event_docs(app)) == count  # nothing changed, nothing sent

    assert client.delete(url, headers=headers).status_code == 204
    deleted = event_docs(app, type="task.deleted")
    assert len(deleted) == 1 and deleted[0]["owner"] == owner
    assert deleted[0]["data"]["task"] == {"_id": ObjectId(task["id"]), "owner": owner}
    assert len(event_docs(app)) == count + 1


def test_reopening_sends_updated_only(app, client, headers):
    task = create_task(client, headers, status="done")
    assert [e["type"] for e in event_docs(app)] == ["task.created"]
    client.patch(f"{TASKS}/{task['id']}", json={"status": "todo"}, headers=headers)
    assert [e["type"] for e in event_docs(app)] == ["task.created", "task.updated"]


def test_put_without_remind_at_clears_it(app, client, headers):
    task = create_task(client, headers, remind_at="2030-01-01T09:00:00Z")
    url = f"{TASKS}/{task['id']}"
    replaced = client.put(url, json={"title": "Replaced"}, headers=headers)
    assert replaced.status_code == 200, replaced.get_data(as_text=True)
    assert replaced.get_json()["remind_at"] is None
    assert client.get(url, headers=headers).get_json()["remind_at"] is None
    updated = event_docs(app, type="task.updated")
    assert len(updated) == 1 and updated[0]["data"]["task"]["remind_at"] is None
    with app.app_context():
        assert tasks().find_one({"_id": ObjectId(task["id"])})["remind_due"] is None


# --- reminder fields --------------------------------------------------------------------------

def stored_task(app, task_id):
    with app.app_context():
        return tasks().find_one({"_id": ObjectId(task_id)})


def test_remind_at_is_written_in_utc_and_arms_the_reminder(app, client, headers):
    task = create_task(client, headers, remind_at="2030-01-01T10:00:00+02:00")
    assert task["remind_at"] == "2030-01-01T08:00:00Z" and task["reminded_at"] is None
    assert stored_task(app, task["id"])["remind_due"] == datetime(2030, 1, 1, 8, tzinfo=UTC)
    assert client.get(f"{TASKS}/{task['id']}", headers=headers).get_json()["remind_at"] == "2030-01-01T08:00:00Z"

    plain = create_task(client, headers, remind_at=None)
    assert plain["remind_at"] is None and plain["reminded_at"] is None
    assert stored_task(app, plain["id"])["remind_due"] is None
    default = create_task(client, headers)
    assert default["remind_at"] is None and default["reminded_at"] is None


@pytest.mark.parametrize("payload, field", [
    ({"remind_at": "2030-01-01T10:00:00"}, "remind_at"),
    ({"remind_at": "tomorrow"}, "remind_at"),
    ({"remind_at": 1893456000}, "remind_at"),
    ({"reminded_at": "2030-01-01T10:00:00Z"}, "reminded_at"),
    ({"reminded_at": None}, "reminded_at"),
    ({"remind_due": "2030-01-01T10:00:00Z"}, "remind_due"),
])
def test_reminder_field_validation(app, client, headers, payload, field):
    assert_error_on(client.post(TASKS, json={"title": "ok", **payload}, headers=headers), field)
    task = create_task(client, headers, remind_at="2030-01-01T10:00:00Z")
    url = f"{TASKS}/{task['id']}"
    assert_error_on(client.patch(url, json=payload, headers=headers), field)
    assert_error_on(client.put(url, json={"title": "ok", **payload}, headers=headers), field)
    assert client.get(url, headers=headers).get_json() == task


def test_changing_remind_at_rearms_a_fired_reminder(app, client, headers):
    task = create_task(client, headers, remind_at="2030-01-01T10:00:00Z")
    url = f"{TASKS}/{task['id']}"
    fired = datetime(2030, 1, 1, 10, 0, 1, tzinfo=UTC)
    with app.app_context():  # what the worker does when the reminder fires
        tasks().update_one({"_id": ObjectId(task["id"])}, {"$set": {"reminded_at": fired, "remind_due": None}})

    # Another change, or the same instant spelled with an offset, does not arm it again.
    renamed = client.patch(url, json={"title": "Renamed", "remind_at": "2030-01-01T11:00:00+01:00"}, headers=headers)
    assert renamed.status_code == 200
    assert renamed.get_json()["reminded_at"] == "2030-01-01T10:00:01Z"
    assert stored_task(app, task["id"])["remind_due"] is None

    moved = client.patch(url, json={"remind_at": "2030-01-02T10:00:00Z"}, headers=headers)
    assert moved.status_code == 200
    body = moved.get_json()
    assert body["remind_at"] == "2030-01-02T10:00:00Z" and body["reminded_at"] is None
    stored = stored_task(app, task["id"])
    assert stored["reminded_at"] is None and stored["remind_due"] == datetime(2030, 1, 2, 10, tzinfo=UTC)


def test_marking_done_disarms_the_reminder(app, client, headers):
    task = create_task(client, headers, remind_at="2030-01-01T10:00:00Z")
    assert stored_task(app, task["id"])["remind_due"] is not None
    done = client.patch(f"{TASKS}/{task['id']}", json={"status": "done"}, headers=headers)
    assert done.status_code == 200 and done.get_json()["remind_at"] == "2030-01-01T10:00:00Z"
    assert stored_task(app, task["id"])["remind_due"] is None
    created_done = create_task(client, headers, status="done", remind_at="2030-01-01T10:00:00Z")
    assert stored_task(app, created_done["id"])["remind_due"] is None


def test_a_due_reminder_fires_once_and_shows_in_the_task(app, client, headers):
    task = create_task(client, headers, title="Call the plumber", remind_at="2020-01-01T09:00:00Z")  # already past
    url = f"{TASKS}/{task['id']}"
    assert client.get(url, headers=headers).get_json()["reminded_at"] is None  # cached before it fires
    with app.app_context():
        assert notifications.fire_due_reminders() == 1
        assert notifications.fire_due_reminders() == 0  # never twice for the same remind_at
    shown = client.get(url, headers=headers).get_json()
    assert shown["reminded_at"] is not None and shown["remind_at"] == "2020-01-01T09:00:00Z"
    reminders = event_docs(app, type="task.reminder")
    assert len(reminders) == 1 and reminders[0]["data"]["task"]["_id"] == ObjectId(task["id"])
    assert reminders[0]["data"]["task"]["title"] == "Call the plumber"
    # Writing the same remind_at again (PUT with every field) does not arm it again.
    same = client.put(url, json={"title": "Call the plumber", "remind_at": "2020-01-01T10:00:00+01:00"},
                      headers=headers)
    assert same.status_code == 200 and same.get_json()["reminded_at"] == shown["reminded_at"]
    assert same.get_json()["version"] == shown["version"]  # nothing changed: no write, no event
    assert len(event_docs(app, type="task.updated")) == 0
    with app.app_context():
        assert notifications.fire_due_reminders() == 0


def test_the_earliest_remind_at_the_api_accepts_fires_like_any_other(app, client, headers):
    task = create_task(client, headers, remind_at="1970-01-01T00:00:00Z")
    with app.app_context():
        assert notifications.fire_due_reminders() == 1
        assert notifications.fire_due_reminders() == 0
    shown = client.get(f"{TASKS}/{task['id']}", headers=headers).get_json()
    assert shown["reminded_at"] is not None and shown["version"] == task["version"] + 1
    assert len(event_docs(app, type="task.reminder")) == 1


def test_a_list_holding_the_wildcard_means_every_event(client, headers):
    response = client.post(WEBHOOKS, json={"url": HOOK_URL, "events": ["task.created", "*", "task.created"]},
                           headers=headers)
    assert response.status_code == 201 and response.get_json()["events"] == ["*"]
