"""The split deployment behind the repo's Nginx: an auth service and a tasks service as separate
gunicorn instances (TASKAPI_SERVICE=auth|tasks, RS256, the tasks service verifying with the auth
service's JWKS_URL), sharing the Redis revocation state, each with a database of its own and a
notification worker of its own; nginx.conf routes /api/v1/auth, /api/v1/users and /.well-known/ to
auth and the rest to tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import jwt
import pymongo
import pytest
import redis
import requests
from bson import ObjectId

from config import ROOT
from taskapi.runtime import devserver
from taskapi.runtime.mailsink import MailSink
from tests.brokers import rabbitmq
from tests.servers import GunicornServer, NginxServer, WorkerProcess, deployed_datastores

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Two databases on one SecantusDB (taskapi_auth for the auth service, taskapi_tasks for the
    tasks service), the shared Redis, RabbitMQ, an SMTP sink, and a notification worker of each
    role: the auth one relays account announcements and sends reset mail, the tasks one applies
    the announcements, fires reminders and delivers."""
    work = tmp_path_factory.mktemp("split")
    with ExitStack() as stack:
        mongo, state, cache = deployed_datastores(work)
        for server in (mongo, state, cache):
            stack.callback(server.stop)
        broker = stack.enter_context(rabbitmq(work / "broker"))
        mail = MailSink(work / "mail").start()
        stack.callback(mail.stop)
        auth_uri, tasks_uri = devserver.mongo_uri(mongo.port, "taskapi_auth"), devserver.mongo_uri(mongo.port, "taskapi_tasks")
        for uri in (auth_uri, tasks_uri):
            devserver.apply_migrations(uri)
        base_env = {"TASKAPI_ENV": "testing", "REDIS_URL": state.url,
                    "CACHE_REDIS_URL": cache.url, "JWT_SECRET_KEY": "split-secret-" + "s" * 40,
                    "TRUSTED_PROXY_COUNT": "1", "JWT_ALGORITHM": "RS256", "RATELIMIT_DEFAULT": "100000/minute",
                    "RATELIMIT_LOGIN": "1000/minute", "RATELIMIT_LOGIN_ACCOUNT": "1000/minute",
                    "RATELIMIT_REGISTER": "1000/minute", "JWKS_REFETCH_SECONDS": "3", "JWT_KEY_ACTIVATION_SECONDS": "5",
                    "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "8192", "ARGON2_PARALLELISM": "1",
                    "BROKER_URL": broker.url, "BROKER_QUEUE_PREFIX": broker.queue_prefix + "taskapi.v1",
                    "SMTP_URL": f"smtp://127.0.0.1:{mail.port}", "MAIL_FROM": "taskapi <no-reply@example.com>",
                    "WORKER_POLL_MS": "100", "REMINDER_MAX_DELAY_SECONDS": "2"}
        keys = work / "keys"
        auth_env = {**base_env, "TASKAPI_SERVICE": "auth", "MONGODB_URI": auth_uri, "JWT_PRIVATE_KEYS": str(keys)}
        subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "keys", "rotate"], cwd=ROOT,
                       env={**os.environ, **auth_env}, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "users", "create-admin", "--email",
                        "root@example.com", "--password", PASSWORD], cwd=ROOT, env={**os.environ, **auth_env},
                       check=True, capture_output=True)
        auth = GunicornServer(auth_env, workers=2, log_path=work / "auth.log").start()
        stack.callback(auth.stop)
        tasks_env = {**base_env, "TASKAPI_SERVICE": "tasks", "MONGODB_URI": tasks_uri, "JWT_PRIVATE_KEYS": "",
                     "JWKS_URL": f"{auth.base}/.well-known/jwks.json"}
        tasks = GunicornServer(tasks_env, workers=3, log_path=work / "tasks.log").start()
        stack.callback(tasks.stop)
        workers = [WorkerProcess(auth_env, work / "auth-worker.log", concurrency=2).start(),
                   WorkerProcess(tasks_env, work / "tasks-worker.log", concurrency=2).start()]
        for worker in workers:
            stack.callback(worker.stop)
        nginx = NginxServer(f"127.0.0.1:{tasks.port}", work / "nginx", auth_upstream=f"127.0.0.1:{auth.port}")
        check = nginx.check()
        assert check.returncode == 0, check.stderr
        nginx.start()
        stack.callback(nginx.stop)
        client = pymongo.MongoClient(mongo.uri, serverSelectionTimeoutMS=5000, tz_aware=True)
        stack.callback(client.close)
        yield {"base": nginx.base, "auth": auth, "tasks": tasks, "auth_env": auth_env, "tasks_env": tasks_env,
               "auth_db": client["taskapi_auth"], "tasks_db": client["taskapi_tasks"], "mail": mail,
               "state": state, "workers": workers}


def test_the_whole_flow_through_nginx_across_the_two_services(split):
    api = split["base"] + "/api/v1"
    session = requests.Session()
    created = session.post(f"{api}/auth/register", json={"email": "ada@example.com", "password": PASSWORD}, timeout=10)
    assert created.status_code == 201, created.text
    pair = session.post(f"{api}/auth/login", json={"email": "ada@example.com", "password": PASSWORD}, timeout=10).json()
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    keys = session.get(split["base"] + "/.well-known/jwks.json", timeout=10)
    assert keys.status_code == 200 and keys.json()["keys"][0]["alg"] == "RS256"
    task = session.post(f"{api}/tasks", json={"title": "Across services"}, headers=auth, timeout=10)
    assert task.status_code == 201, task.text
    assert session.get(f"{api}/tasks/{task.json()['id']}", headers=auth, timeout=10).status_code == 200
    assert session.get(f"{api}/stats/dashboard", headers=auth, timeout=10).json()["total"] == 1
    assert session.get(f"{api}/auth/me", headers=auth, timeout=10).json()["email"] == "ada@example.com"
    # Logout at the auth service: every tasks worker refuses the token on its next request.
    assert session.post(f"{api}/auth/logout", headers=auth, timeout=10).status_code == 204
    refused = [session.get(f"{api}/tasks", headers=auth, timeout=10).status_code for _ in range(9)]
    assert refused == [401] * 9


def test_each_service_answers_only_for_its_own_routes(split):
    tasks_base, auth_base = split["tasks"].base, split["auth"].base
    assert requests.post(f"{tasks_base}/api/v1/auth/login", json={}, timeout=10).status_code == 404
    assert requests.get(f"{auth_base}/api/v1/tasks", timeout=10).status_code == 404
    tasks_spec = requests.get(f"{tasks_base}/openapi.json", timeout=10).json()["paths"]
    auth_spec = requests.get(f"{auth_base}/openapi.json", timeout=10).json()["paths"]
    assert all(not path.startswith(("/api/v1/auth", "/api/v1/users", "/.well-known")) for path in tasks_spec)
    assert all(not path.startswith(("/api/v1/tasks", "/api/v1/stats", "/api/v1/webhooks")) for path in auth_spec)


def test_with_the_auth_service_stopped_the_tasks_service_keeps_serving_issued_tokens(split):
    api = split["base"] + "/api/v1"
    requests.post(f"{api}/auth/register", json={"email": "bo@example.com", "password": PASSWORD}, timeout=10)
    token = requests.post(f"{api}/auth/login", json={"email": "bo@example.com", "password": PASSWORD},
                          timeout=10).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    split["auth"].stop()
    try:
        assert [requests.get(f"{api}/tasks", headers=auth, timeout=10).status_code for _ in range(6)] == [200] * 6
        down = requests.post(f"{api}/auth/login", json={"email": "bo@example.com", "password": PASSWORD}, timeout=10)
        assert down.status_code in (502, 503) and down.headers["Content-Type"] == "application/problem+json"
    finally:
        split["auth"].start()
    again = requests.post(f"{api}/auth/login", json={"email": "bo@example.com", "password": PASSWORD}, timeout=10)
    assert again.status_code == 200  # no restart of the tasks service needed
    fresh = {"Authorization": f"Bearer {again.json()['access_token']}"}
    assert requests.get(f"{api}/tasks", headers=fresh, timeout=10).status_code == 200


def sign_in(api: str, email: str) -> dict[str, str]:
    requests.post(f"{api}/auth/register", json={"email": email, "password": PASSWORD}, timeout=10)
    token = requests.post(f"{api}/auth/login", json={"email": email, "password": PASSWORD},
                          timeout=10).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_an_admin_deactivating_or_demoting_at_auth_takes_effect_at_tasks_on_the_next_request(split):
    api = split["base"] + "/api/v1"
    admin = sign_in(api, "root@example.com")
    for change in ({"active": False}, {"role": "user"}):
        email = f"target-{len(change)}-{next(iter(change))}@example.com"
        user = sign_in(api, email)
        me = requests.get(f"{api}/auth/me", headers=user, timeout=10).json()["id"]
        if change == {"role": "user"}:  # make them an admin first, then log in again as one
            promoted = requests.patch(f"{api}/users/{me}", json={"role": "admin"}, headers=admin, timeout=10)
            assert promoted.status_code == 200, promoted.text
            user = {"Authorization": "Bearer " + requests.post(
                f"{api}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10).json()["access_token"]}
        assert requests.get(f"{api}/tasks", headers=user, timeout=10).status_code == 200
        changed = requests.patch(f"{api}/users/{me}", json=change, headers=admin, timeout=10)
        assert changed.status_code == 200, changed.text
        statuses = [requests.get(f"{api}/tasks", headers=user, timeout=10).status_code for _ in range(6)]
        assert statuses == [401] * 6, (change, statuses)


def test_key_rotation_and_reload_of_auth_under_load_fail_no_request_at_tasks(split):
    api = split["base"] + "/api/v1"
    holders = [sign_in(api, f"load{n}@example.com") for n in range(4)]
    failures, done, stop = [], [0], threading.Event()

    def load(headers: dict[str, str]) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                status = session.get(f"{api}/tasks?limit=5", headers=headers, timeout=10).status_code
                done[0] += 1
                if status != 200:
                    failures.append(status)

    threads = [threading.Thread(target=load, args=(h,)) for h in holders]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        rotated = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "keys", "rotate"], cwd=ROOT,
                                 env={**os.environ, **split["auth_env"]}, capture_output=True, text=True)
        assert rotated.returncode == 0, rotated.stderr
        new_kid = rotated.stdout.split("kid ")[1].split(")")[0]
        os.kill(split["auth"].process.pid, signal.SIGHUP)  # the auth service reloads: new workers sign with it
        deadline = time.monotonic() + 30
        while True:  # new logins carry the new kid once the reload is through (Nginx allows 1 login/s)
            time.sleep(1)
            token = requests.post(f"{api}/auth/login", json={"email": "load0@example.com", "password": PASSWORD},
                                  timeout=10).json()["access_token"]
            fresh = {"Authorization": f"Bearer {token}"}
            if jwt.get_unverified_header(token)["kid"] == new_kid:
                break
            assert time.monotonic() < deadline, "the auth service never signed with the new key"
        # A token of the new key works at tasks at once (an unknown kid is fetched), old ones too.
        assert requests.get(f"{api}/tasks", headers=fresh, timeout=10).status_code == 200
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    assert done[0] > 50 and failures == [], (done[0], failures[:10])


def wait_for(check, timeout: float = 20.0):
    """check() until it is truthy or `timeout` passes; its last value."""
    deadline = time.monotonic() + timeout
    while (value := check()) in (None, False, 0, []) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def signed_up(api: str, email: str) -> dict:
    created = requests.post(f"{api}/auth/register", json={"email": email, "password": PASSWORD}, timeout=10)
    assert created.status_code == 201, created.text
    pair = requests.post(f"{api}/auth/login", json={"email": email, "password": PASSWORD}, timeout=10).json()
    return {"id": created.json()["id"], "headers": {"Authorization": f"Bearer {pair['access_token']}"}}


def test_each_service_keeps_to_its_own_database_and_learns_the_other_s_facts_over_the_broker(split):
    """Auth writes only taskapi_auth, tasks only taskapi_tasks; what the tasks side needs of an
    account (reminder address, active, token generation, deletion) arrives as the auth worker's
    announcements, applied by the tasks worker."""
    api = split["base"] + "/api/v1"
    auth_db, tasks_db = split["auth_db"], split["tasks_db"]
    bob = signed_up(api, "bob@example.com")
    member = wait_for(lambda: tasks_db.members.find_one({"_id": ObjectId(bob["id"])}))
    assert member and (member["email"], member["active"], member["token_gen"]) == ("bob@example.com", True, 0), \
        split["workers"][0].log()[-2000:]

    # A reminder goes to the address the tasks side learnt.
    remind_at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    task = requests.post(f"{api}/tasks", json={"title": "Water the plants", "remind_at": remind_at},
                         headers=bob["headers"], timeout=10)
    assert task.status_code == 201, task.text
    reminder = wait_for(lambda: [m for m in split["mail"].messages() if m["To"] == "bob@example.com"
                                 and m["Subject"] == "Reminder: Water the plants"])
    assert reminder, split["workers"][1].log()[-2000:]

    # Neither database holds a document of the other's collections.
    assert {name: auth_db[name].count_documents({}) for name in ("tasks", "webhooks", "deliveries", "events", "members")} \
        == dict.fromkeys(("tasks", "webhooks", "deliveries", "events", "members"), 0)
    assert {name: tasks_db[name].count_documents({}) for name in ("users", "account_events")} == \
        {"users": 0, "account_events": 0}
    assert tasks_db.tasks.count_documents({"owner": ObjectId(bob["id"])}) == 1
    assert wait_for(lambda: tasks_db.members.count_documents({"gone": {"$exists": False}})
                    == auth_db.users.count_documents({}))

    # A lost Redis mirror of the token generation is rebuilt at tasks from its own copy.
    carol = signed_up(api, "carol@example.com")
    assert requests.post(f"{api}/auth/logout-all", headers=carol["headers"], timeout=10).status_code == 204
    assert wait_for(lambda: (tasks_db.members.find_one({"_id": ObjectId(carol["id"])}) or {}).get("token_gen") == 1)
    fresh = requests.post(f"{api}/auth/login", json={"email": "carol@example.com", "password": PASSWORD},
                          timeout=10).json()
    redis.Redis.from_url(split["state"].url).delete(f"taskapi:ugen:{carol['id']}")
    assert requests.get(f"{api}/tasks", headers=carol["headers"], timeout=10).status_code == 401
    assert requests.get(f"{api}/tasks", headers={"Authorization": f"Bearer {fresh['access_token']}"},
                        timeout=10).status_code == 200

    # Erasure at the auth service: the tasks service erases bob's data when the announcement arrives.
    erased = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "users", "delete", "--email",
                             "bob@example.com", "--yes"], cwd=ROOT, env={**os.environ, **split["auth_env"]},
                            capture_output=True, text=True)
    assert erased.returncode == 0 and "tasks service erases" in erased.stdout, erased.stdout + erased.stderr
    assert wait_for(lambda: tasks_db.tasks.count_documents({"owner": ObjectId(bob["id"])}) == 0)
    assert tasks_db.members.find_one({"_id": ObjectId(bob["id"])})["gone"] is True
    assert requests.get(f"{api}/tasks", headers=bob["headers"], timeout=10).status_code == 401
