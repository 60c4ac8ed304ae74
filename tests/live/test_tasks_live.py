"""Tasks under real concurrency: gunicorn with 3 workers, parallel requests on separate connections."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import PASSWORD, bearer
from tests.servers import gunicorn


@pytest.fixture
def live(app_env, log_dir, app):
    with gunicorn(app_env, workers=3, log_path=log_dir / "gunicorn-tasks.log") as base:
        requests.post(base + "/api/v1/auth/register", json={"email": "c@example.com", "password": PASSWORD}, timeout=10)
        token = requests.post(base + "/api/v1/auth/login", json={"email": "c@example.com", "password": PASSWORD},
                              timeout=10).json()["access_token"]
        yield base, bearer(token)


def parallel(calls, workers=12):
    def run(call):
        method, url, kwargs = call
        with requests.Session() as session:  # one connection each
            return session.request(method, url, timeout=30, **kwargs)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, calls))


def test_parallel_patches_with_the_same_if_match_one_wins(live):
    base, headers = live
    task = requests.post(base + "/api/v1/tasks", json={"title": "race"}, headers=headers, timeout=10).json()
    url = f"{base}/api/v1/tasks/{task['id']}"
    responses = parallel([("PATCH", url, {"json": {"title": f"writer {i}"}, "headers": {**headers, "If-Match": '"v1"'}})
                          for i in range(24)])
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1 and codes.count(412) == 23, codes
    winner = next(r for r in responses if r.status_code == 200).json()
    final = requests.get(url, headers=headers, timeout=10).json()
    assert final["version"] == 2 and final["title"] == winner["title"]


def test_parallel_unconditional_patches_lose_nothing(live):
    base, headers = live
    task = requests.post(base + "/api/v1/tasks", json={"title": "counter", "tags": []}, headers=headers,
                         timeout=10).json()
    url = f"{base}/api/v1/tasks/{task['id']}"
    responses = parallel([("PATCH", url, {"json": {"title": f"writer {i}"}, "headers": headers}) for i in range(30)])
    assert all(r.status_code == 200 for r in responses), [r.status_code for r in responses]
    versions = sorted(r.json()["version"] for r in responses)
    assert versions == list(range(2, 32))  # each write saw the one before it
    assert requests.get(url, headers=headers, timeout=10).json()["version"] == 1 + 30


def test_parallel_posts_with_one_idempotency_key_create_one_task(live):
    base, headers = live
    body = {"title": "once only"}
    responses = parallel([("POST", base + "/api/v1/tasks",
                           {"json": body, "headers": {**headers, "Idempotency-Key": "same-key"}}) for _ in range(16)])
    codes = [r.status_code for r in responses]
    assert set(codes) <= {201, 409} and codes.count(201) >= 1, codes
    originals = [r for r in responses if r.status_code == 201 and "Idempotent-Replayed" not in r.headers]
    assert len(originals) == 1
    ids = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(ids) == 1
    listed = requests.get(base + "/api/v1/tasks?q=once%20only", headers=headers, timeout=10).json()["items"]
    assert [t["id"] for t in listed] == list(ids)
