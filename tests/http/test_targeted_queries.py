"""Sharding readiness: every MongoDB command the task, webhook and delivery routes send carries
an owner equality (the shard key's prefix, so a sharded cluster sends it to one shard). A pymongo
CommandListener records every command of a full API flow against the real server, with the
MongoDB query plans (MONGODB_ENGINE=mongodb, MongoDB's indexes). The admin's global stats are
the documented exception: a scatter-gather over every owner."""

from __future__ import annotations

from typing import Any

import mongoengine
import pytest
from pymongo import monitoring

from taskapi.extensions import MONGO_ALIAS, init_mongo, replica_set_options
from tests.helpers import bearer, login, register

OWNED = {"tasks", "webhooks", "deliveries", "events"}
READS_AND_WRITES = {"find", "aggregate", "count", "distinct", "update", "delete", "findAndModify", "insert"}


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []
        self.on = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on and event.command_name in READS_AND_WRITES:
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def owner_equality(selector: Any) -> bool:
    """Whether a filter pins `owner` to one value (directly or inside a top-level $and)."""
    if not isinstance(selector, dict):
        return False
    if "owner" in selector and not (isinstance(selector["owner"], dict)
                                    and set(selector["owner"]) - {"$eq"}):
        return True
    return any(owner_equality(part) for part in selector.get("$and", []))


def untargeted(command: dict[str, Any]) -> list[str]:
    """What in one recorded command does not name an owner."""
    name = next(iter(command))
    collection = command[name]
    if collection not in OWNED:
        return []
    if name == "insert":
        return [f"insert into {collection} without owner" for doc in command["documents"] if "owner" not in doc]
    if name in ("update", "delete"):
        key = "updates" if name == "update" else "deletes"
        return [f"{name} {collection} {op['q']}" for op in command[key] if not owner_equality(op["q"])]
    if name == "aggregate":
        first = command["pipeline"][0] if command["pipeline"] else {}
        return [] if owner_equality(first.get("$match")) else [f"aggregate {collection} {command['pipeline'][:1]}"]
    if name == "findAndModify":
        return [] if owner_equality(command.get("query")) else [f"findAndModify {collection} {command.get('query')}"]
    return [] if owner_equality(command.get("filter", command.get("query"))) else [f"{name} {collection} {command}"]


@pytest.fixture
def recorded(make_app, mongodb_indexes):
    app = make_app(MONGODB_ENGINE="mongodb", CACHE_TTL_SECONDS="0")
    recorder = Recorder()
    mongoengine.disconnect(alias=MONGO_ALIAS)
    mongoengine.connect(alias=MONGO_ALIAS, host=app.config["MONGODB_URI"], tz_aware=True, uuidRepresentation="standard",
                        event_listeners=[recorder], **replica_set_options(app.config))
    yield app, recorder
    init_mongo(app)


def test_every_command_of_the_task_webhook_and_delivery_routes_names_one_owner(recorded):
    app, recorder = recorded
    client = app.test_client()
    register(client, "shard@example.com")
    headers = bearer(login(client, "shard@example.com")["access_token"])
    recorder.on = True
    made = [client.post("/api/v1/tasks", json={"title": f"t{n}", "tags": ["work"], "due_at": "2030-01-01T00:00:00Z"},
                        headers={**headers, "Idempotency-Key": f"k{n}"}).get_json()["id"] for n in range(3)]
    for query in ("", "?status=todo", "?tag=work", "?priority=high", "?q=t1", "?overdue=true", "?sort=due_at",
                  "?sort=-priority&limit=1", "?due_after=2029-01-01T00:00:00Z&due_before=2031-01-01T00:00:00Z"):
        assert client.get(f"/api/v1/tasks{query}", headers=headers).status_code == 200, query
    page = client.get("/api/v1/tasks?limit=1", headers=headers).get_json()
    assert client.get(f"/api/v1/tasks?limit=1&cursor={page['next_cursor']}", headers=headers).status_code == 200
    assert client.get(f"/api/v1/tasks/{made[0]}", headers=headers).status_code == 200
    assert client.patch(f"/api/v1/tasks/{made[0]}", json={"status": "done"}, headers=headers).status_code == 200
    assert client.put(f"/api/v1/tasks/{made[1]}", json={"title": "replaced"}, headers=headers).status_code == 200
    assert client.delete(f"/api/v1/tasks/{made[2]}", headers=headers).status_code == 204
    assert client.get("/api/v1/stats/dashboard", headers=headers).status_code == 200
    assert client.get("/api/v1/stats/completions?days=7", headers=headers).status_code == 200
    hook = client.post("/api/v1/webhooks", json={"url": "https://hooks.example.com/in", "events": ["*"]},
                       headers=headers).get_json()["id"]
    for method, path, body in (("get", "/api/v1/webhooks", None), ("get", f"/api/v1/webhooks/{hook}", None),
                               ("patch", f"/api/v1/webhooks/{hook}", {"description": "d"}),
                               ("post", f"/api/v1/webhooks/{hook}/ping", None),
                               ("get", f"/api/v1/webhooks/{hook}/deliveries", None),
                               ("post", f"/api/v1/webhooks/{hook}/rotate-secret", None),
                               ("delete", f"/api/v1/webhooks/{hook}", None)):
        answer = getattr(client, method)(path, json=body, headers=headers)
        assert answer.status_code < 300, (method, path, answer.get_json())
    recorder.on = False
    seen = {next(iter(command)) + " " + str(command[next(iter(command))]) for command in recorder.commands}
    assert {"insert tasks", "find tasks", "aggregate tasks", "insert webhooks", "find webhooks",
            "find deliveries"} <= seen, seen
    problems = [problem for command in recorder.commands for problem in untargeted(command)]
    assert problems == []


def test_db_shard_refuses_anything_but_a_mongos_in_one_line(runner):
    result = runner.invoke(args=["db", "shard"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line]
    assert len(lines) == 1 and "needs a sharded cluster" in lines[0] and "nothing was changed" in lines[0]


def test_shard_keys_lead_with_the_owner_and_every_unique_index_could_be_enforced():
    """MongoDB enforces a unique index on a sharded collection only when the shard key is its
    prefix, and never with a hashed shard key."""
    from taskapi.models import SHARD_KEYS
    from taskapi.models.event import Event
    from taskapi.models.member import Member
    from taskapi.models.task import Task
    from taskapi.models.webhook import Delivery, Webhook

    documents = {"tasks": Task, "webhooks": Webhook, "events": Event, "members": Member, "deliveries": Delivery}
    sharded = SHARD_KEYS["tasks"]
    assert set(sharded) == set(documents)
    for name, key in sharded.items():
        assert next(iter(key)) in ("owner", "_id"), name
        unique = [spec["fields"] for spec in documents[name]._meta["index_specs"] if spec.get("unique")]
        if "hashed" in key.values():
            assert unique == [], (name, unique)
        else:
            assert unique and all([field for field, _ in spec[:len(key)]] == list(key) for spec in unique), name
