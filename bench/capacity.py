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
          mongo_reads_per_second: float, mongo_writes_per_second: float) -> dict[str, Any]:
    """Per target: cores and instances, Redis commands/s and servers, MongoDB operations/s and nodes."""
    core_seconds = sum(share / rps[f"worker1_{route}"] for route, share in MIX.items())
    per_request = {kind: sum(share * operations.get(route, {}).get(kind, 0.0) for route, share in MIX.items())
                   for kind in ("redis", "cache_redis", "mongodb")}
    write_share = MIX["create"]
    rows = []
    for target in TARGETS:
        cores = target * core_seconds / HEADROOM
        redis = target * per_request["redis"]
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
    lines = ["| requests/s | app cores | instances (4 cores, N+1) | Redis commands/s | Redis masters | "
             "cache Redis commands/s | MongoDB ops/s (writes) | MongoDB shards | MongoDB nodes (3 per shard) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in capacity["rows"]:
        lines.append(f"| {row['requests_per_second']:,} | {row['app_cores']} | {row['app_instances']} | "
                     f"{row['redis_commands_per_second']:,} | {row['redis_masters'] if row['redis_masters'] else 'n/a'} | "
                     f"{row['cache_redis_commands_per_second']:,} | {row['mongodb_operations_per_second']:,} "
                     f"({row['mongodb_write_operations_per_second']:,}) | {row['mongodb_shards']} | "
                     f"{row['mongodb_nodes']} |")
    return "\n".join(lines) + "\n"
