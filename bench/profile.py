"""Per-request CPU of the hot paths, in process (no HTTP, no gunicorn): `make profile`.

Starts SecantusDB and two Redis servers, builds the app with the production config (rate
limits on, as deployed), and times N requests of each kind through the WSGI stack with a
WSGI-level client, so what is measured is the app's own work per request: middleware, token
check, cache, database calls. With --pyinstrument it also prints a profile of the cached list.
Prints a table and writes bench/profile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from taskapi import create_app
from taskapi.runtime import devserver
from tests.servers import MongoServer, RedisServer

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "profile password 1"


def measure(client, method: str, path: str, headers: dict, n: int, **kwargs) -> dict:
    """CPU seconds (process time: this process only) and wall seconds per request."""
    for _ in range(20):  # warm: imports, caches, connection pools
        client.open(path, method=method, headers=headers, **kwargs)
    cpu, wall = [], []
    for _ in range(n):
        c0, w0 = time.process_time(), time.perf_counter()
        response = client.open(path, method=method, headers=headers, **kwargs)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        assert response.status_code < 400, (path, response.status_code, response.get_data(as_text=True))
    return {"cpu_us": round(statistics.median(cpu) * 1e6), "wall_us": round(statistics.median(wall) * 1e6)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--pyinstrument", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="taskapi-profile-"))
    servers = [MongoServer(work).start(), RedisServer(work).start(),
               RedisServer(work, maxmemory="64mb", policy="allkeys-lru").start()]
    mongo, main_redis, cache_redis = servers
    try:
        devserver.apply_migrations(mongo.uri)
        os.environ.update({"TASKAPI_ENV": "production", "MONGODB_URI": mongo.uri, "REDIS_URL": main_redis.url,
                           "CACHE_REDIS_URL": cache_redis.url, "JWT_SECRET_KEY": "profile-secret-" + "p" * 40,
                           "LOG_LEVEL": "WARNING", "ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "8192",
                           "ARGON2_PARALLELISM": "1", "CACHE_TTL_SECONDS": "3600",
                           "RATELIMIT_DEFAULT": "100000000/minute"})  # on, as deployed, never reached
        app = create_app()
        client = app.test_client()
        client.post("/api/v1/auth/register", json={"email": "p@example.com", "password": PASSWORD})
        token = client.post("/api/v1/auth/login", json={"email": "p@example.com", "password": PASSWORD}).get_json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        ids = [client.post("/api/v1/tasks", json={"title": f"task {i}"}, headers=headers).get_json()["id"]
               for i in range(50)]
        results = {
            "healthz": measure(client, "GET", "/healthz", {}, args.n),
            "tasks_cached": measure(client, "GET", "/api/v1/tasks", headers, args.n),
            "task_by_id": measure(client, "GET", f"/api/v1/tasks/{ids[0]}", headers, args.n // 2),
            "tasks_uncached_first_page": measure(client, "GET", "/api/v1/tasks", headers, args.n // 4,
                                                 query_string={"limit": "20", "q": "task"}),
        }
        app.config["CACHE_TTL_SECONDS"] = 0
        results["tasks_uncached"] = measure(client, "GET", "/api/v1/tasks", headers, args.n // 4)
        results["task_patch"] = measure(client, "PATCH", f"/api/v1/tasks/{ids[1]}", headers, args.n // 4,
                                        json={"priority": "high"})
        app.config["CACHE_TTL_SECONDS"] = 3600
        print(f"{'request':<28} {'CPU µs':>8} {'wall µs':>8}")
        for name, row in results.items():
            print(f"{name:<28} {row['cpu_us']:>8} {row['wall_us']:>8}")
        (ROOT / "bench" / "profile.json").write_text(json.dumps(results, indent=2) + "\n")
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0001)
            profiler.start()
            for _ in range(args.n):
                client.get("/api/v1/tasks", headers=headers)
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))
    finally:
        for server in reversed(servers):
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
