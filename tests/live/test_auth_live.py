"""Auth against real processes: revocation seen by every gunicorn worker; Redis down fails closed."""

from __future__ import annotations

import requests

from tests.helpers import PASSWORD, assert_problem, bearer
from tests.servers import MongoServer, RedisServer, gunicorn

ME = "/api/v1/auth/me"


def fresh_get(url: str, token: str) -> int:
    """One request on its own connection, so the kernel spreads them over the workers."""
    with requests.Session() as session:
        return session.get(url, headers={**bearer(token), "Connection": "close"}, timeout=10).status_code


def test_logout_is_refused_by_every_worker(app_env, log_dir, app):
    with gunicorn(app_env, workers=3, log_path=log_dir / "gunicorn-auth.log") as base:
        assert requests.post(base + "/api/v1/auth/register",
                             json={"email": "w@example.com", "password": PASSWORD}, timeout=10).status_code == 201
        pair = requests.post(base + "/api/v1/auth/login",
                             json={"email": "w@example.com", "password": PASSWORD}, timeout=10).json()
        token = pair["access_token"]
        before = [fresh_get(base + ME, token) for _ in range(30)]
        assert before == [200] * 30  # every worker verifies it: one shared secret
        with requests.Session() as session:
            assert session.post(base + "/api/v1/auth/logout", headers=bearer(token), timeout=10).status_code == 204
        after = [fresh_get(base + ME, token) for _ in range(60)]
        assert after == [401] * 60
        refreshed = requests.post(base + "/api/v1/auth/refresh", headers=bearer(pair["refresh_token"]), timeout=10)
        assert refreshed.status_code == 401


def test_redis_down_fails_closed_then_recovers(make_app, log_dir):
    mongo, cache = MongoServer(log_dir).start(), RedisServer(log_dir).start()
    try:
        application = make_app(MONGODB_URI=mongo.uri, REDIS_URL=cache.url)
        with application.app_context():
            from taskapi.cli import migrate
            from taskapi.extensions import get_db

            migrate.upgrade(get_db())
        client = application.test_client()
        assert client.post("/api/v1/auth/register", json={"email": "r@example.com", "password": PASSWORD}).status_code == 201
        pair = client.post("/api/v1/auth/login", json={"email": "r@example.com", "password": PASSWORD}).get_json()
        headers = bearer(pair["access_token"])
        assert client.get(ME, headers=headers).status_code == 200

        cache.stop()
        for response in (client.get(ME, headers=headers),
                         client.post("/api/v1/auth/logout", headers=headers),
                         client.post("/api/v1/auth/refresh", headers=bearer(pair["refresh_token"])),
                         client.post("/api/v1/auth/login", json={"email": "r@example.com", "password": PASSWORD})):
            body = assert_problem(response, 503)
            assert "Redis" in body["detail"] and int(response.headers["Retry-After"]) > 0
        # A forged or bad token is still a 401: nothing is accepted unchecked, nothing turns into a 500.
        assert client.get(ME, headers=bearer("x.y.z")).status_code == 401

        cache.start()  # an empty Redis: the session record is gone, so the old token stays refused
        assert client.get(ME, headers=headers).status_code == 401
        again = client.post("/api/v1/auth/login", json={"email": "r@example.com", "password": PASSWORD})
        assert again.status_code == 200  # service resumes without a restart
        assert client.get(ME, headers=bearer(again.get_json()["access_token"])).status_code == 200
    finally:
        mongo.stop()
        cache.stop()
