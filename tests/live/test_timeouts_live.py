"""A hung MongoDB costs a request its time budget (about 2 s), not a socket timeout; the
liveness probe answers while every request thread waits; a 503's Retry-After is short."""

from __future__ import annotations

import threading
import time

import pymongo
import pytest
import requests

from taskapi.runtime import devserver
from tests.helpers import PASSWORD, bearer
from tests.servers import MongoServer, gunicorn


@pytest.fixture
def hangable_mongo(log_dir):
    """A SecantusDB whose commands can be made to hang (failpoints need test commands on)."""
    server = MongoServer(log_dir, extra=["--enable-test-commands"]).start()
    devserver.apply_migrations(server.uri)
    yield server
    server.stop()


def hang(uri: str, commands: list[str], milliseconds: int) -> None:
    with pymongo.MongoClient(uri) as client:
        client.admin.command({"configureFailPoint": "failCommand", "mode": "alwaysOn" if milliseconds else "off",
                              "data": {"failCommands": commands, "blockConnection": True,
                                       "blockTimeMS": milliseconds}})


def test_hung_mongodb_is_503_within_the_budget_and_healthz_stays_live(app_env, log_dir, hangable_mongo):
    env = {**app_env, "MONGODB_URI": hangable_mongo.uri, "THREADS": "2"}
    with gunicorn(env, workers=1, log_path=log_dir / "gunicorn-hang.log") as base:
        requests.post(base + "/api/v1/auth/register", json={"email": "hang@example.com", "password": PASSWORD},
                      timeout=10)
        token = requests.post(base + "/api/v1/auth/login", json={"email": "hang@example.com", "password": PASSWORD},
                              timeout=10).json()["access_token"]
        task = requests.post(base + "/api/v1/tasks", json={"title": "slow"}, headers=bearer(token), timeout=10).json()
        hang(hangable_mongo.uri, ["find"], 8000)
        answers: list[tuple[float, requests.Response]] = []

        def slow_read() -> None:
            started = time.monotonic()
            response = requests.get(f"{base}/api/v1/tasks/{task['id']}", headers=bearer(token), timeout=30)
            answers.append((time.monotonic() - started, response))

        try:
            readers = [threading.Thread(target=slow_read) for _ in range(4)]  # twice the request threads
            for reader in readers:
                reader.start()
            time.sleep(0.5)  # both request threads are now waiting on MongoDB
            probes = []
            for _ in range(5):
                started = time.monotonic()
                assert requests.get(base + "/healthz", timeout=5).status_code == 200
                probes.append(time.monotonic() - started)
            for reader in readers:
                reader.join(30)
        finally:
            hang(hangable_mongo.uri, ["find"], 0)
        assert max(probes) < 0.5, probes
        assert len(answers) == 4
        for _seconds, response in answers:
            assert response.status_code == 503, response.text
            assert response.headers["Content-Type"] == "application/problem+json"
            assert "did not answer in time" in response.json()["detail"]
            assert response.headers["Retry-After"] == "2"  # the dependency's hint, not the rate limiter's window
        # Two at a time on two threads: the first pair answers in ~2 s, the second in ~4 s; never 10 s.
        assert sorted(s for s, _ in answers)[1] < 3.5 and max(s for s, _ in answers) < 6, answers
        assert requests.get(f"{base}/api/v1/tasks/{task['id']}", headers=bearer(token), timeout=10).status_code == 200
