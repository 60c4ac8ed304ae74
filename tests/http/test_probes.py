"""Probes: /healthz never touches dependencies; /readyz names what is down, and recovers."""

from __future__ import annotations

import time

import pytest

from tests.servers import MongoServer, RedisServer


@pytest.fixture
def own_servers(log_dir):
    """Servers this test may stop and start without disturbing the rest of the suite."""
    mongo, cache = MongoServer(log_dir).start(), RedisServer(log_dir).start()
    yield mongo, cache
    mongo.stop()
    cache.stop()


@pytest.fixture
def own_app(own_servers, make_app):
    mongo, cache = own_servers
    return make_app(MONGODB_URI=mongo.uri, REDIS_URL=cache.url)


def test_healthz_is_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_ok_when_both_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"mongodb": "ok", "redis": "ok"}}


def test_readyz_names_redis_down_and_recovers(own_app, own_servers):
    mongo, cache = own_servers
    client = own_app.test_client()
    assert client.get("/readyz").status_code == 200
    cache.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert response.get_json()["checks"] == {"mongodb": "ok", "redis": "unavailable"}
    assert client.get("/healthz").status_code == 200  # liveness does not depend on Redis
    cache.start()
    assert client.get("/readyz").status_code == 200  # same app, no restart


def test_readyz_names_mongodb_down_quickly_and_recovers(own_app, own_servers):
    mongo, cache = own_servers
    client = own_app.test_client()
    assert client.get("/readyz").status_code == 200
    mongo.stop()
    started = time.monotonic()
    response = client.get("/readyz")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"mongodb": "unavailable", "redis": "ok"}
    assert elapsed < 5, f"readiness took {elapsed:.1f} s with MongoDB down"
    assert client.get("/healthz").status_code == 200
    mongo.start()
    assert client.get("/readyz").status_code == 200


def test_route_needing_mongodb_answers_503_problem_when_down(own_servers, make_app):
    from taskapi.extensions import get_db
    from taskapi.http.api import get_api
    from taskapi.http.blueprint import Blueprint
    from tests.helpers import assert_problem

    mongo, cache = own_servers
    application = make_app(MONGODB_URI=mongo.uri, REDIS_URL=cache.url)
    blp = Blueprint("needs_db", __name__)

    @blp.route("/count", methods=["GET"])
    def count():
        return {"n": get_db()["things"].count_documents({})}

    get_api(application).register_blueprint(blp, url_prefix="/_db")
    client = application.test_client()
    assert client.get("/_db/count").get_json() == {"n": 0}
    mongo.stop()
    response = client.get("/_db/count")
    body = assert_problem(response, 503)
    assert "MongoDB" in body["detail"]
    assert int(response.headers["Retry-After"]) > 0
    mongo.start()
    assert client.get("/_db/count").status_code == 200
