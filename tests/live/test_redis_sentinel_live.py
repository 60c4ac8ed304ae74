"""Redis behind Sentinel (REDIS_URL=redis+sentinel://...): a real master, replica and three
Sentinels. A revocation answers 2xx only once a replica has it (WAIT), so no failover can undo
it; with too few replicas it fails closed (503)."""

from __future__ import annotations

import os
import signal

import jwt
import pytest
import redis

from config import ConfigError, parse_sentinel_url
from taskapi.worker import broker_url
from tests.helpers import assert_problem, bearer, login, register
from tests.servers import SentinelSet


def test_sentinel_urls_are_read_in_full():
    url = "rediss+sentinel://app:p%40ss@10.0.0.1:26379,[::1]:26380,sentinel-c:26381/taskapi/3?sentinel_password=s3"
    sentinels, service, db, auth, sentinel_auth, tls = parse_sentinel_url(url)
    assert sentinels == [("10.0.0.1", 26379), ("::1", 26380), ("sentinel-c", 26381)]
    assert (service, db, auth, sentinel_auth, tls) == ("taskapi", 3, {"username": "app", "password": "p@ss"},
                                                       {"password": "s3"}, True)
    assert parse_sentinel_url("redis+sentinel://h:1/svc")[1:3] == ("svc", 0)
    for bad in ("redis+sentinel://h:1/", "redis+sentinel://h/svc", "redis+sentinel://h:1/svc/x", "redis+sentinel://h:1/a/1/2",
                "redis+sentinel://h:1/svc?ssl_ca_certs=/ca.pem"):
        with pytest.raises(ConfigError):
            parse_sentinel_url(bad)
    # The worker's broker, when BROKER_URL is unset, in kombu's spelling.
    assert broker_url("redis+sentinel://:pw@h1:1,h2:2/svc/2") == (
        "sentinel://:pw@h1:1/2;sentinel://:pw@h2:2/2", {"master_name": "svc"})
    assert broker_url("amqp://guest:guest@rabbit:5672/v") == ("amqp://guest:guest@rabbit:5672/v", {})


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory):
    ha = SentinelSet(tmp_path_factory.mktemp("sentinel")).start()
    yield ha
    ha.stop()


def test_the_wait_must_end_before_the_client_gives_up_on_redis(make_app, sentinels):
    from config import ConfigError

    with pytest.raises(ConfigError, match="REDIS_WAIT_TIMEOUT_MS must be below REDIS_TIMEOUT_MS"):
        make_app(REDIS_URL=sentinels.url, REDIS_WAIT_TIMEOUT_MS="500", REDIS_TIMEOUT_MS="500")


def test_a_logout_is_on_the_replica_before_it_answers(make_app, sentinels):
    app = make_app(REDIS_URL=sentinels.url)
    assert app.config["REDIS_REVOCATION_REPLICAS"] == 1  # the default with a Sentinel URL
    client = app.test_client()
    register(client, "ha@example.com")
    pair = login(client, "ha@example.com")
    headers = bearer(pair["access_token"])
    assert client.post("/api/v1/tasks", json={"title": "on the master"}, headers=headers).status_code == 201
    sid = jwt.decode(pair["access_token"], options={"verify_signature": False})["sid"]
    replica = redis.Redis(port=sentinels.replica.port)
    assert replica.exists(f"taskapi:sess:{sid}")
    # With the replica paused, nothing confirms: the logout fails closed (503), whatever the master did.
    other = login(client, "ha@example.com")
    os.kill(sentinels.replica.process.pid, signal.SIGSTOP)
    try:
        refused = client.post("/api/v1/auth/logout", headers=bearer(other["access_token"]))
    finally:
        os.kill(sentinels.replica.process.pid, signal.SIGCONT)
    assert_problem(refused, 503)
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    assert not replica.exists(f"taskapi:sess:{sid}")  # no later read: WAIT made the 204 wait for it
    assert_problem(client.get("/api/v1/auth/me", headers=headers), 401)


def test_without_enough_replicas_a_revocation_fails_closed(make_app, sentinels):
    client = make_app(REDIS_URL=sentinels.url, REDIS_REVOCATION_REPLICAS="2").test_client()
    register(client, "closed@example.com")
    pair = login(client, "closed@example.com")
    refused = client.post("/api/v1/auth/logout-all", headers=bearer(pair["access_token"]))
    assert_problem(refused, 503)
    assert "replica" in refused.get_json()["detail"] and refused.headers["Retry-After"]


def test_a_worker_whose_broker_is_the_sentinel_set_delivers(client, user_tokens, app_env, log_dir, sentinels):
    """BROKER_URL unset: the worker's queue lives in REDIS_URL's Redis, here the Sentinel set's
    master (kombu's sentinel:// transport, from worker.broker_url)."""
    from tests.live.test_notifications_live import create, subscribe, wait_until
    from tests.receivers import receiver
    from tests.servers import worker

    headers = bearer(user_tokens["access_token"])
    env = {key: value for key, value in {**app_env, "REDIS_URL": sentinels.url}.items() if key != "BROKER_URL"}
    with receiver() as hook, worker(env, log_dir / "sentinel-broker.log") as running:
        subscribe(client, headers, hook.url, ["task.created"])
        create(client, headers)
        assert wait_until(lambda: hook.received, timeout=20), running.log()[-2000:]
        assert "sentinel://" in running.log()  # Celery's banner names the transport it connected with
