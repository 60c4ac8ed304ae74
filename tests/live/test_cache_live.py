"""The response cache on real processes: read-your-writes across gunicorn workers; a dead cache
Redis costs nothing but speed."""

from __future__ import annotations

import requests

from tests.helpers import PASSWORD, bearer
from tests.servers import RedisServer, gunicorn


def fresh(method: str, url: str, **kwargs):
    """Each request on its own connection, so consecutive requests land on different workers."""
    with requests.Session() as session:
        return session.request(method, url, headers={**kwargs.pop("headers", {}), "Connection": "close"},
                               timeout=10, **kwargs)


def test_read_your_writes_across_three_workers(app_env, log_dir, app):
    with gunicorn(app_env, workers=3, log_path=log_dir / "gunicorn-cache.log") as base:
        fresh("POST", base + "/api/v1/auth/register", json={"email": "ryw@example.com", "password": PASSWORD})
        token = fresh("POST", base + "/api/v1/auth/login",
                      json={"email": "ryw@example.com", "password": PASSWORD}).json()["access_token"]
        headers, tasks = bearer(token), base + "/api/v1/tasks"
        hits = 0
        for round_ in range(15):
            created = fresh("POST", tasks, json={"title": f"round {round_}"}, headers=headers).json()
            listed = fresh("GET", tasks + "?limit=100", headers=headers)
            assert created["id"] in [t["id"] for t in listed.json()["items"]]
            again = fresh("GET", tasks + "?limit=100", headers=headers)  # no write in between: may be a hit
            hits += again.headers["X-Cache"] == "HIT"
            assert again.json() == listed.json()
            fresh("PATCH", f"{tasks}/{created['id']}", json={"title": f"renamed {round_}"}, headers=headers)
            titles = {t["id"]: t["title"] for t in fresh("GET", tasks + "?limit=100", headers=headers).json()["items"]}
            assert titles[created["id"]] == f"renamed {round_}"
            stats = fresh("GET", base + "/api/v1/stats/dashboard", headers=headers).json()
            assert stats["total"] == round_ + 1
            if round_ % 3 == 0:
                fresh("DELETE", f"{tasks}/{created['id']}", headers=headers)
                ids = [t["id"] for t in fresh("GET", tasks + "?limit=100", headers=headers).json()["items"]]
                assert created["id"] not in ids
                fresh("POST", tasks, json={"title": f"replacement {round_}"}, headers=headers)
        assert hits == 15  # the cache is shared: a page cached by one worker is a hit on the others


def test_cache_redis_down_reads_go_to_mongodb(make_app, log_dir, app_env):
    cache_server = RedisServer(log_dir).start()
    try:
        application = make_app(CACHE_REDIS_URL=cache_server.url, CACHE_RETRY_SECONDS="0")
        client = application.test_client()
        client.post("/api/v1/auth/register", json={"email": "cd@example.com", "password": PASSWORD})
        headers = bearer(client.post("/api/v1/auth/login", json={"email": "cd@example.com",
                                                                 "password": PASSWORD}).get_json()["access_token"])
        client.post("/api/v1/tasks", json={"title": "before"}, headers=headers)
        client.get("/api/v1/tasks", headers=headers)
        assert client.get("/api/v1/tasks", headers=headers).headers["X-Cache"] == "HIT"

        cache_server.stop()
        client.post("/api/v1/tasks", json={"title": "during"}, headers=headers)
        for url in ("/api/v1/tasks", "/api/v1/stats/dashboard", "/api/v1/stats/completions"):
            response = client.get(url, headers=headers)
            assert response.status_code == 200 and response.headers["X-Cache"] == "MISS"
        listed = client.get("/api/v1/tasks", headers=headers).get_json()["items"]
        assert [t["title"] for t in listed] == ["during", "before"]
        assert client.get("/api/v1/stats/dashboard", headers=headers).get_json()["total"] == 2

        cache_server.start()  # back, empty: caching resumes without a restart
        client.get("/api/v1/tasks", headers=headers)
        assert client.get("/api/v1/tasks", headers=headers).headers["X-Cache"] == "HIT"
    finally:
        cache_server.stop()
