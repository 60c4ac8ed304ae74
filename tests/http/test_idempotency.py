"""Idempotency-Key on POST /tasks: replay, mismatch, in flight, per user, failures do not burn keys."""

from __future__ import annotations

import orjson
import pytest

from taskapi.extensions import get_db
from taskapi.services import idempotency
from tests.helpers import assert_problem, bearer, login, register

TASKS = "/api/v1/tasks"


@pytest.fixture
def headers(user_tokens):
    return bearer(user_tokens["access_token"])


def post(client, headers, key, body):
    return client.post(TASKS, json=body, headers={**headers, "Idempotency-Key": key})


@pytest.fixture
def redis_client(app):
    return app.extensions["redis"]


def test_same_key_same_body_replays_without_creating(client, headers, redis_client):
    first = post(client, headers, "order-1", {"title": "Pay rent", "priority": "high"})
    second = post(client, headers, "order-1", {"priority": "high", "title": "Pay rent"})  # same JSON, other key order
    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in first.headers and second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json() == first.get_json()
    assert second.headers["Location"] == first.headers["Location"] and second.headers["ETag"] == first.headers["ETag"]
    assert get_db().tasks.count_documents({}) == 1
    ttl = redis_client.ttl(next(redis_client.scan_iter("taskapi:idem:*")))
    assert 23 * 3600 < ttl <= 24 * 3600


def test_same_key_other_body_is_422(client, headers):
    post(client, headers, "k", {"title": "A"})
    body = assert_problem(post(client, headers, "k", {"title": "B"}), 422)
    assert "Idempotency-Key" in body["errors"]
    assert get_db().tasks.count_documents({}) == 1


def test_key_in_flight_is_409(client, headers, redis_client):
    user_id = client.get("/api/v1/auth/me", headers=headers).get_json()["id"]
    body = {"title": "Slow one"}
    # Another worker has claimed the key and is still creating the task.
    redis_client.set(idempotency._redis_key(user_id, "busy"),
                    orjson.dumps({"state": "pending", "fp": idempotency.body_digest(body)}), ex=60)
    assert_problem(post(client, headers, "busy", body), 409)
    assert get_db().tasks.count_documents({}) == 0


@pytest.mark.parametrize("key, status", [("x" * 255, 201), ("x" * 256, 400), ("", 400), ("has space", 400),
                                         ("tab\tkey", 400)])
def test_key_format(client, headers, key, status):
    response = post(client, headers, key, {"title": "A"})
    assert response.status_code == status
    if status == 400:
        assert_problem(response, 400)
        assert get_db().tasks.count_documents({}) == 0


def test_keys_are_per_user(client, headers):
    register(client, "bob@example.com")
    bob = bearer(login(client, "bob@example.com")["access_token"])
    a, b = post(client, headers, "shared", {"title": "A"}), post(client, bob, "shared", {"title": "A"})
    assert a.status_code == b.status_code == 201 and "Idempotent-Replayed" not in b.headers
    assert a.get_json()["id"] != b.get_json()["id"]


def test_a_rejected_request_does_not_burn_the_key(client, headers):
    assert_problem(post(client, headers, "retry-me", {"title": ""}), 422)
    ok = post(client, headers, "retry-me", {"title": "Fixed"})
    assert ok.status_code == 201 and "Idempotent-Replayed" not in ok.headers
