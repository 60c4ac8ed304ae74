"""End to end through Nginx: every claim of the deployment, including when things break.

All traffic stays on loopback; every load is bounded in count and time."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from urllib.parse import urlparse

import requests

from tests.e2e.conftest import RESULTS, account
from tests.helpers import bearer


def get_from(source: str, base: str, path: str, headers: dict | None = None, body: dict | None = None,
             method: str = "GET") -> tuple[int, dict]:
    """A request from a chosen loopback source address (127.0.0.2 is another client to Nginx)."""
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10, source_address=(source, 0))
    payload = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=payload, headers={**(headers or {}),
                                                       **({"Content-Type": "application/json"} if body else {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()) | {"_body": data}


def test_nginx_headers_and_problem_pages(stack):
    base = stack["base"]
    response = requests.get(base + "/healthz", headers={"X-Request-ID": "e2e-probe-1"}, timeout=10)
    assert response.status_code == 200 and response.headers["X-Request-ID"] == "e2e-probe-1"
    assert response.headers["Server"] == "nginx"  # no version
    big = requests.post(base + "/api/v1/tasks", data=b"x" * 70_000, headers={"Content-Type": "application/json"},
                        timeout=10)
    assert big.status_code == 413 and big.headers["Content-Type"] == "application/problem+json"
    assert big.json()["status"] == 413 and big.json()["request_id"] == big.headers["X-Request-ID"]
    tasks = requests.get(base + "/api/v1/tasks", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert tasks.status_code == 401 and tasks.headers["Content-Type"] == "application/problem+json"
    RESULTS["nginx"] = {"413_problem_json": True, "server_header": response.headers["Server"]}


def test_conditional_updates_work_through_gzip(stack):
    """Nginx weakens the ETag of a response it compresses; that weak tag still works in If-Match."""
    base = stack["base"]
    headers = bearer(account(base, "gzip@example.com")["access_token"])
    task = requests.post(base + "/api/v1/tasks", json={"title": "long", "description": "d" * 3000}, headers=headers,
                         timeout=10).json()
    read = requests.get(f"{base}/api/v1/tasks/{task['id']}", headers={**headers, "Accept-Encoding": "gzip"}, timeout=10)
    assert read.headers["Content-Encoding"] == "gzip" and read.headers["ETag"] == 'W/"v1"'
    updated = requests.patch(f"{base}/api/v1/tasks/{task['id']}", json={"status": "done"},
                             headers={**headers, "If-Match": read.headers["ETag"]}, timeout=10)
    assert updated.status_code == 200 and updated.json()["version"] == 2
    stale = requests.patch(f"{base}/api/v1/tasks/{task['id']}", json={"status": "todo"},
                           headers={**headers, "If-Match": read.headers["ETag"]}, timeout=10)
    assert stale.status_code == 412 and stale.headers["Content-Type"] == "application/problem+json"
    RESULTS["gzip_if_match"] = {"etag_through_nginx": read.headers["ETag"], "patch_with_it": updated.status_code,
                                "patch_with_it_again": stale.status_code}


def test_revocation_is_seen_by_every_worker(stack):
    base = stack["base"]
    tokens = account(base, "revoke@example.com")
    headers = {**bearer(tokens["access_token"]), "Connection": "close"}
    before = [requests.get(base + "/api/v1/auth/me", headers=headers, timeout=10).status_code for _ in range(30)]
    assert requests.post(base + "/api/v1/auth/logout", headers=headers, timeout=10).status_code == 204
    after = [requests.get(base + "/api/v1/auth/me", headers=headers, timeout=10).status_code for _ in range(60)]
    assert before == [200] * 30 and after == [401] * 60
    RESULTS["revocation"] = {"requests_before_logout": 30, "ok_before": before.count(200),
                             "requests_after_logout": 60, "refused_after": after.count(401)}


def test_rate_limit_follows_the_real_client_ip(stack):
    base = stack["base"]
    attempt = {"email": "nobody@example.com", "password": "wrong password"}
    first = [get_from("127.0.0.1", base, "/api/v1/auth/login", {"X-Forwarded-For": f"203.0.113.{i}"}, attempt,
                      "POST")[0] for i in range(7)]
    other_client = get_from("127.0.0.2", base, "/api/v1/auth/login", None, attempt, "POST")[0]
    assert first == [401] * 5 + [429] * 2, first  # spoofed X-Forwarded-For did not reset the count
    assert other_client == 401  # a different real client has its own budget
    RESULTS["rate_limit"] = {"limit": 5, "client_a_statuses": first, "client_b_first_status": other_client}


def test_read_your_writes_through_nginx(stack):
    base = stack["base"]
    headers = bearer(account(base, "ryw@example.com")["access_token"])
    for round_ in range(10):
        created = requests.post(base + "/api/v1/tasks", json={"title": f"ryw {round_}"}, headers=headers,
                                timeout=10).json()
        ids = [t["id"] for t in requests.get(base + "/api/v1/tasks?limit=100", headers=headers, timeout=10).json()["items"]]
        assert created["id"] in ids
        requests.patch(f"{base}/api/v1/tasks/{created['id']}", json={"status": "done"}, headers=headers, timeout=10)
        dashboard = requests.get(base + "/api/v1/stats/dashboard", headers=headers, timeout=10).json()
        assert dashboard["by_status"]["done"] == round_ + 1
    RESULTS["read_your_writes"] = {"rounds": 10, "stale_reads": 0}


def run_load(base: str, headers: dict, seconds: float, threads: int, write: bool, event_at=None) -> dict:
    """Bounded load (time and count); returns counts and acknowledged task ids."""
    stop_at = time.monotonic() + seconds
    lock = threading.Lock()
    counts = {"sent": 0, "failed": 0, "acknowledged": 0}
    acked: list[str] = []
    failures: list[str] = []

    def worker(n: int) -> None:
        with requests.Session() as session:
            for i in range(2000):  # count bound
                if time.monotonic() > stop_at:
                    return
                try:
                    if write:
                        response = session.post(base + "/api/v1/tasks", json={"title": f"load {n}-{i}"},
                                                headers=headers, timeout=10)
                        ok = response.status_code == 201
                    else:
                        response = session.get(base + "/api/v1/tasks?limit=5", headers=headers, timeout=10)
                        ok = response.status_code == 200
                except requests.RequestException as exc:
                    response, ok = None, False
                    failures.append(type(exc).__name__)
                with lock:
                    counts["sent"] += 1
                    if ok:
                        counts["acknowledged"] += 1
                        if write:
                            acked.append(response.json()["id"])
                    else:
                        counts["failed"] += 1
                        if response is not None:
                            failures.append(str(response.status_code))

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    if event_at:
        for delay, action in event_at:
            time.sleep(delay)
            action()
    for thread in pool:
        thread.join(timeout=seconds + 30)
    return {**counts, "acked_ids": acked, "failure_kinds": sorted(set(failures))}


def test_hup_under_load_drops_nothing(stack):
    base, app = stack["base"], stack["app"]
    headers = bearer(account(base, "hup@example.com")["access_token"])
    requests.post(base + "/api/v1/tasks", json={"title": "seed"}, headers=headers, timeout=10)
    old_workers = app.workers()
    hup = lambda: os.kill(app.process.pid, signal.SIGHUP)  # noqa: E731
    result = run_load(base, headers, seconds=8, threads=6, write=False, event_at=[(2, hup), (3, hup)])
    new_workers = app.workers()
    assert result["sent"] > 100 and result["failed"] == 0, result
    assert new_workers and not (old_workers & new_workers), "HUP replaced the workers"
    RESULTS["hup_reload"] = {k: result[k] for k in ("sent", "failed", "failure_kinds")} | {"reloads": 2}


def test_worker_killed_during_writes_loses_no_acknowledged_task(stack):
    base, app = stack["base"], stack["app"]
    headers = bearer(account(base, "kill9@example.com")["access_token"])

    def kill_one_worker() -> None:
        victim = min(app.workers())
        os.kill(victim, signal.SIGKILL)
        RESULTS.setdefault("kill9_worker", {})["killed_pid"] = victim

    result = run_load(base, headers, seconds=6, threads=6, write=True, event_at=[(2, kill_one_worker)])
    found = sum(requests.get(f"{base}/api/v1/tasks/{task_id}", headers=headers, timeout=10).status_code == 200
                for task_id in result["acked_ids"])
    assert result["acknowledged"] > 50 and found == result["acknowledged"], result
    RESULTS["kill9_worker"] |= {"sent": result["sent"], "failed": result["failed"],
                                "writes_acknowledged": result["acknowledged"], "writes_found": found,
                                "failure_kinds": result["failure_kinds"]}


def test_redis_down_fails_closed_then_resumes(stack):
    base, cache = stack["base"], stack["redis"]
    headers = bearer(account(base, "redisdown@example.com")["access_token"])
    assert requests.get(base + "/api/v1/auth/me", headers=headers, timeout=10).status_code == 200
    cache.stop()
    try:
        down = [requests.get(base + "/api/v1/auth/me", headers=headers, timeout=10) for _ in range(10)]
        assert all(r.status_code == 503 and r.headers["Retry-After"] for r in down), [r.status_code for r in down]
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
        ready = requests.get(base + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "unavailable"
    finally:
        cache.start()  # same port, same append-only file
    resumed = [requests.get(base + "/api/v1/auth/me", headers=headers, timeout=10).status_code for _ in range(10)]
    assert resumed == [200] * 10  # no restart; the session survived in the append-only file
    RESULTS["redis_down"] = {"requests_while_down": 10, "answered_503": 10,
                             "requests_after_restart": 10, "ok_after_restart": resumed.count(200)}


def test_mongodb_down_answers_503_quickly_then_resumes(stack):
    base, mongo = stack["base"], stack["mongo"]
    headers = bearer(account(base, "mongodown@example.com")["access_token"])
    task = requests.post(base + "/api/v1/tasks", json={"title": "kept"}, headers=headers, timeout=10).json()
    mongo.stop()
    timings = []
    try:
        for _ in range(3):
            started = time.monotonic()
            response = requests.get(f"{base}/api/v1/tasks/{task['id']}", headers=headers, timeout=30)
            timings.append(round(time.monotonic() - started, 2))
            assert response.status_code == 503 and response.headers["Retry-After"], response.text
        ready = requests.get(base + "/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["checks"]["mongodb"] == "unavailable"
    finally:
        mongo.start()  # same port, same data directory
    assert max(timings) < 3.5, timings
    assert requests.get(f"{base}/api/v1/tasks/{task['id']}", headers=headers, timeout=10).json()["title"] == "kept"
    RESULTS["mongodb_down"] = {"requests_while_down": 3, "answered_503": 3, "seconds_to_503": timings,
                               "data_after_restart": True}
