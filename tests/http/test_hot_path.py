"""The hot path, counted (not timed): a cached list touches no MongoDB, an uncached one sends one command."""

from __future__ import annotations

import pytest
from pymongo import monitoring

from tests.helpers import bearer, login, register


class CommandCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


@pytest.fixture
def counted(make_app):
    """An app whose MongoClient (created after the listener is registered) reports every command."""
    counter = CommandCounter()
    monitoring.register(counter)
    application = make_app()
    return application.test_client(), counter


def test_cached_list_sends_no_mongodb_command_and_uncached_sends_one(counted):
    client, counter = counted
    register(client, "hot@example.com")
    headers = bearer(login(client, "hot@example.com")["access_token"])
    for i in range(25):
        client.post("/api/v1/tasks", json={"title": f"t{i}"}, headers=headers)

    counter.names.clear()
    client.get("/api/v1/tasks?limit=5", headers=headers)
    assert counter.names == ["buildInfo", "find"], counter.names  # which engine: asked at the first query only

    counter.names.clear()
    miss = client.get("/api/v1/tasks?limit=20", headers=headers)
    assert miss.headers["X-Cache"] == "MISS" and len(miss.get_json()["items"]) == 20
    assert counter.names == ["find"], counter.names  # one round trip: no count, no user lookup, no getMore

    counter.names.clear()
    hit = client.get("/api/v1/tasks?limit=20", headers=headers)
    assert hit.headers["X-Cache"] == "HIT" and hit.get_json() == miss.get_json()
    assert counter.names == []  # token, revocation and cache all come from the token and Redis

    counter.names.clear()
    client.get("/api/v1/stats/dashboard", headers=headers)
    assert counter.names == ["aggregate"]
    counter.names.clear()
    client.get("/api/v1/stats/dashboard", headers=headers)
    assert counter.names == []
