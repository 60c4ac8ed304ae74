"""Bounded state everywhere: metrics series, the response cache per user, idempotency records
per user, tasks per user; and cached values that are data, never code."""

from __future__ import annotations

import pickle
import random
import string

import pytest
from prometheus_client import REGISTRY

from taskapi.extensions import get_db, get_redis
from tests.helpers import assert_problem, bearer, login, register


def series(name: str) -> int:
    return sum(len(metric.samples) for metric in REGISTRY.collect() if metric.name == name)


def test_made_up_methods_and_paths_add_no_metric_series(client):
    rng = random.Random(7)
    for path in ("/healthz", "/api/v1/tasks", "/nope"):  # every (method, route, status) the loop can reach
        client.open(path, method="BREW")
    before = series("taskapi_http_requests")
    for _ in range(1000):
        method = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 12)))
        path = "/" + "".join(rng.choices(string.ascii_lowercase, k=8))
        response = client.open(rng.choice(["/healthz", "/api/v1/tasks", path]), method=method)
        assert response.status_code in (401, 404, 405)
    assert series("taskapi_http_requests") == before
    text = client.get("/metrics").get_data(as_text=True)
    assert 'method="other"' in text and 'route="unmatched"' in text


@pytest.fixture
def headers(client):
    register(client, "cache@example.com")
    return bearer(login(client, "cache@example.com")["access_token"])


def bucket(app, email: str) -> dict:
    user_id = get_db().users.find_one({"email": email})["_id"]
    return app.extensions["cache_redis"].hgetall(f"taskapi:cache:{user_id}")


def test_equivalent_queries_share_one_cache_entry(app, client, headers):
    client.post("/api/v1/tasks", json={"title": "one"}, headers=headers)
    first = client.get("/api/v1/tasks?limit=100", headers=headers)
    assert first.headers["X-Cache"] == "MISS"
    cache_redis = app.extensions["cache_redis"]
    used = cache_redis.info("memory")["used_memory"]
    for i in range(300):
        response = client.get(f"/api/v1/tasks?limit=100&limit={i + 1}", headers=headers)
        assert response.status_code == 200 and response.headers["X-Cache"] == "HIT"
        assert response.get_json() == first.get_json()
    for query in ("?sort=-created_at&limit=100", "?limit=100&sort=-created_at"):
        assert client.get("/api/v1/tasks" + query, headers=headers).headers["X-Cache"] == "HIT"
    entries = {name for name in bucket(app, "cache@example.com") if not name.startswith(b"#")}
    assert len(entries) == 1
    assert cache_redis.info("memory")["used_memory"] - used < 64 * 1024


def test_one_user_holds_a_bounded_part_of_the_cache(make_app):
    app = make_app(CACHE_MAX_ENTRIES_PER_USER="10", CACHE_MAX_BYTES_PER_USER="20000")
    client = app.test_client()
    register(client, "greedy@example.com")
    register(client, "other@example.com")
    greedy = bearer(login(client, "greedy@example.com")["access_token"])
    other = bearer(login(client, "other@example.com")["access_token"])
    client.post("/api/v1/tasks", json={"title": "x" * 200, "description": "d" * 900}, headers=greedy)
    client.get("/api/v1/tasks", headers=other)
    for i in range(1, 101):
        assert client.get(f"/api/v1/tasks?limit={i}", headers=greedy).status_code == 200
        stored = bucket(app, "greedy@example.com")
        entries = [name for name in stored if not name.startswith(b"#")]
        assert len(entries) <= 10 and int(stored[b"#bytes"]) <= 20000
        assert sum(len(stored[name]) for name in entries) == int(stored[b"#bytes"])
    assert client.get("/api/v1/tasks", headers=other).headers["X-Cache"] == "HIT"  # untouched


def test_cached_values_are_data_never_code(app, client, headers, tmp_path):
    """A value planted in the cache's Redis is at most a wrong page: nothing is unpickled."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    client.get("/api/v1/tasks", headers=headers)
    stored = bucket(app, "cache@example.com")
    user_id = get_db().users.find_one({"email": "cache@example.com"})["_id"]
    (name,) = [n for n in stored if not n.startswith(b"#")]
    app.extensions["cache_redis"].hset(f"taskapi:cache:{user_id}", name, pickle.dumps(Exploit()))
    response = client.get("/api/v1/tasks", headers=headers)
    assert response.status_code == 200 and response.get_json() == {"items": [], "next_cursor": None}
    assert response.headers["X-Cache"] == "MISS"
    assert not marker.exists()


def test_idempotency_records_are_capped_per_user(make_app):
    app = make_app(IDEMPOTENCY_MAX_KEYS_PER_USER="5")
    client = app.test_client()
    register(client, "keys@example.com")
    headers = bearer(login(client, "keys@example.com")["access_token"])
    ids = [client.post("/api/v1/tasks", json={"title": f"k{i}"}, headers={**headers, "Idempotency-Key": f"key-{i}"})
           .get_json()["id"] for i in range(8)]
    user_id = get_db().users.find_one({"email": "keys@example.com"})["_id"]
    with app.app_context():
        records = list(get_redis().scan_iter(f"taskapi:idem:{user_id}:*"))
        assert len(records) == 5 and get_redis().zcard(f"taskapi:idem-keys:{user_id}") == 5
    latest = client.post("/api/v1/tasks", json={"title": "k7"}, headers={**headers, "Idempotency-Key": "key-7"})
    assert latest.headers["Idempotent-Replayed"] == "true" and latest.get_json()["id"] == ids[7]
    oldest = client.post("/api/v1/tasks", json={"title": "k0"}, headers={**headers, "Idempotency-Key": "key-0"})
    assert oldest.status_code == 201, oldest.headers
    assert "Idempotent-Replayed" not in oldest.headers, oldest.headers  # forgotten first


def test_tasks_per_user_have_a_quota(make_app):
    client = make_app(TASKS_MAX_PER_USER="3").test_client()
    register(client, "quota@example.com")
    register(client, "roomy@example.com")
    headers = bearer(login(client, "quota@example.com")["access_token"])
    created = [client.post("/api/v1/tasks", json={"title": f"t{i}"}, headers=headers) for i in range(3)]
    assert [r.status_code for r in created] == [201] * 3
    body = assert_problem(client.post("/api/v1/tasks", json={"title": "one too many"}, headers=headers), 409)
    assert "limit of 3 tasks" in body["detail"]
    assert get_db().tasks.count_documents({}) == 3
    other = bearer(login(client, "roomy@example.com")["access_token"])
    assert client.post("/api/v1/tasks", json={"title": "mine"}, headers=other).status_code == 201
    assert client.delete(f"/api/v1/tasks/{created[0].get_json()['id']}", headers=headers).status_code == 204
    assert client.post("/api/v1/tasks", json={"title": "room again"}, headers=headers).status_code == 201
    assert_problem(client.post("/api/v1/tasks", json={"title": "full"}, headers=headers), 409)
