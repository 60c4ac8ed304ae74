"""Three app instances behind the repo's Nginx under load, and a kill -9 of one: GETs never fail
(Nginx passes them to the next instance and leaves the dead one out), a POST without an
Idempotency-Key may fail but is never applied twice, and a POST with one that a client retries
is applied exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid

import pymongo
import requests

from tests.e2e.conftest import RESULTS
from tests.servers import GunicornServer, NginxServer, deployed_datastores

PASSWORD = "correct horse battery"


def keyed_post(session: requests.Session, api: str, title: str, headers: dict[str, str]) -> tuple[int, float]:
    """One try of a create and how long a client waits before the next: a 502 (Nginx had sent it
    to the dead instance) 0.2 s; a 409 (the dead instance still holds the key's claim, for at
    most 60 s) 1 s."""
    try:
        answer = session.post(f"{api}/tasks", json={"title": title}, headers=headers, timeout=10)
    except requests.RequestException:
        return 0, 0.2
    return answer.status_code, 1.0 if answer.status_code == 409 else 0.2


def test_killing_one_of_three_instances_fails_no_get_and_applies_no_post_twice(tmp_path):
    mongo, state, cache = deployed_datastores(tmp_path)
    env = {"TASKAPI_ENV": "testing", "MONGODB_URI": mongo.uri, "REDIS_URL": state.url, "CACHE_REDIS_URL": cache.url,
           "JWT_SECRET_KEY": "instances-secret-" + "i" * 40, "TRUSTED_PROXY_COUNT": "1", "RATELIMIT_ENABLED": "false",
           "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "8192", "ARGON2_PARALLELISM": "1", "THREADS": "4"}
    apps = [GunicornServer(env, workers=1, log_path=tmp_path / f"app-{n}.log").start() for n in range(3)]
    nginx = NginxServer([f"127.0.0.1:{app.port}" for app in apps], tmp_path / "nginx")
    check = nginx.check()
    assert check.returncode == 0, check.stderr
    nginx.start()
    api = nginx.base + "/api/v1"
    try:
        requests.post(f"{api}/auth/register", json={"email": "many@example.com", "password": PASSWORD}, timeout=10)
        token = requests.post(f"{api}/auth/login", json={"email": "many@example.com", "password": PASSWORD},
                              timeout=10).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        first = requests.post(f"{api}/tasks", json={"title": "seed"}, headers=auth, timeout=10).json()["id"]
        gets: list[int] = []
        plain: list[tuple[str, int]] = []  # (title, status) of POSTs without a key, never retried
        keyed: list[tuple[str, int, int]] = []  # (title, final status, attempts) of POSTs with a key, retried
        stop = threading.Event()
        lock = threading.Lock()

        def reader() -> None:
            session = requests.Session()
            while not stop.is_set():
                for path in ("/tasks", f"/tasks/{first}"):
                    try:
                        status = session.get(api + path, headers=auth, timeout=10).status_code
                    except requests.RequestException:
                        status = 0
                    with lock:
                        gets.append(status)

        def writer(with_key: bool) -> None:
            session = requests.Session()
            while not stop.is_set():
                title = f"{'keyed' if with_key else 'plain'}-{uuid.uuid4().hex[:12]}"
                headers = {**auth, "Idempotency-Key": uuid.uuid4().hex} if with_key else auth
                attempt, status = 0, 0
                give_up = time.monotonic() + 75
                while time.monotonic() < give_up:
                    attempt += 1
                    status, wait = keyed_post(session, api, title, headers)
                    if not with_key or status in (200, 201):
                        break
                    time.sleep(wait)  # the client's retry, with the same key
                with lock:
                    (keyed.append((title, status, attempt)) if with_key else plain.append((title, status)))

        threads = ([threading.Thread(target=reader) for _ in range(3)]
                   + [threading.Thread(target=writer, args=(True,)), threading.Thread(target=writer, args=(False,))])
        for thread in threads:
            thread.start()
        time.sleep(2)
        os.killpg(apps[1].process.pid, signal.SIGKILL)  # the instance's master and its worker
        killed_at = len(gets)
        time.sleep(4)
        stop.set()
        for thread in threads:
            thread.join(30)

        assert gets and set(gets) == {200}, {status: gets.count(status) for status in set(gets)}
        # A keyed POST whose instance dies under it (the client never sees an answer), retried by
        # the client through Nginx with the same key: applied once, whether or not the dead
        # instance got to apply it.
        key, title = uuid.uuid4().hex, "retried-after-a-kill"
        body = json.dumps({"title": title}).encode()
        with socket.create_connection(("127.0.0.1", apps[2].port), timeout=5) as raw:
            raw.sendall(b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        + f"Authorization: Bearer {token}\r\nIdempotency-Key: {key}\r\n".encode()
                        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            time.sleep(0.01)
            os.killpg(apps[2].process.pid, signal.SIGKILL)
        tries, status, give_up = 0, 0, time.monotonic() + 75
        while time.monotonic() < give_up:
            tries += 1
            status, wait = keyed_post(requests.Session(), api, title, {**auth, "Idempotency-Key": key})
            if status in (200, 201):
                break
            time.sleep(wait)
        assert status in (200, 201), status
        keyed.append((title, status, 1 + tries))
        client = pymongo.MongoClient(mongo.uri, serverSelectionTimeoutMS=5000)
        stored = {}
        for doc in client.get_default_database().tasks.find({}, {"title": 1}):
            stored[doc["title"]] = stored.get(doc["title"], 0) + 1
        client.close()
        assert all(count == 1 for count in stored.values()), "a POST was applied twice"
        assert all(stored.get(title) == 1 for title, status in plain if status == 201)
        assert keyed and all(status in (200, 201) for _, status, _ in keyed)  # every keyed create got through
        assert all(stored.get(title) == 1 for title, _, _ in keyed), "a retried POST was lost or applied twice"
        RESULTS["instances"] = {
            "gets": len(gets), "gets_after_kill": len(gets) - killed_at, "gets_failed": sum(s != 200 for s in gets),
            "plain_posts": len(plain), "plain_posts_failed": sum(s != 201 for _, s in plain),
            "keyed_posts": len(keyed), "keyed_posts_retried": sum(a > 1 for *_, a in keyed),
            "killed_mid_post_retry_status": status, "killed_mid_post_client_tries": tries,
            "applied_twice": sum(c > 1 for c in stored.values()),
        }
        print(f"\nthree instances, one killed: {RESULTS['instances']}")
    finally:
        nginx.stop()
        for app in apps:
            app.stop()
        for server in (cache, state, mongo):
            server.stop()
