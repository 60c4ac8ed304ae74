"""Both query plans return exactly the pages the contract defines, for every sort and filter
shape: the MongoDB plan (hinted ESR indexes) and the embedded server's (flat first filter,
second stage, windows bounded by learned edges), the latter also after writes that make its
remembered edges wrong."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from taskapi.extensions import get_db
from taskapi.models.task import NO_DUE_EARLIEST, NO_DUE_LATEST, PRIORITIES, PRIORITY_RANK
from tests.helpers import bearer, login

TAGS = ("home", "work", "errands", "q4")
SORTS = ("created_at", "-created_at", "updated_at", "-updated_at", "due_at", "-due_at", "priority", "-priority")
FILTERS = [
    {},
    {"status": "todo"},
    {"status": "todo,in_progress"},
    {"priority": "high"},
    {"priority": "low,urgent"},
    {"tag": "work"},
    {"tag": "work,home"},
    {"status": "done", "tag": "work"},
    {"due_before": "+3"},
    {"due_after": "-3"},
    {"due_after": "-10", "due_before": "+10"},
    {"overdue": "true"},
    {"overdue": "false"},
    {"q": "milk"},
    {"tag": "home", "priority": "high", "q": "a"},
    {"status": "todo", "priority": "urgent", "due_before": "+30"},
]


def stamp(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def query_string(filters: dict[str, str], sort: str) -> str:
    values = {k: stamp(int(v)) if k.startswith("due_") else v for k, v in filters.items()}
    return "&".join(f"{k}={v}" for k, v in {**values, "sort": sort}.items())


@pytest.fixture
def dataset(user_tokens, client):
    """100 tasks: many share timestamps (ties broken by id), a quarter have no due date."""
    rng = random.Random(5)
    owner = ObjectId(client.get("/api/v1/auth/me", headers=bearer(user_tokens["access_token"])).get_json()["id"])
    now = datetime.now(UTC).replace(microsecond=0)
    docs = []
    for _i in range(100):
        created = now - timedelta(hours=rng.choice([1, 2, 2, 5, 9, 30, 30, 100]))
        due = None if rng.random() < 0.25 else now + timedelta(days=rng.choice([-20, -5, -1, 1, 1, 4, 15, 40]))
        status = rng.choice(["todo", "in_progress", "done"])
        priority = rng.choice(PRIORITIES)
        docs.append({"_id": ObjectId(), "owner": owner, "title": rng.choice(["Buy milk", "Call Ada", "Plan q4"]),
                     "description": rng.choice(["", "semi-skimmed MILK", "ask about it"]), "status": status,
                     "priority": priority, "priority_rank": PRIORITY_RANK[priority], "due_at": due,
                     "due_key_asc": due or NO_DUE_LATEST, "due_key_desc": due or NO_DUE_EARLIEST,
                     "tags": rng.sample(TAGS, rng.choice([0, 1, 2])), "completed_at": None,
                     "created_at": created, "updated_at": created + timedelta(minutes=rng.choice([0, 0, 7])),
                     "version": 1})
    get_db().tasks.insert_many(docs)
    return docs


def expected(docs: list[dict], filters: dict[str, str], sort: str) -> list[str]:
    """The contract's answer, computed here without MongoDB."""
    now = datetime.now(UTC)

    def due(days: str) -> datetime:
        return datetime.strptime(stamp(int(days)), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    def keep(doc: dict) -> bool:
        overdue = doc["status"] != "done" and doc["due_at"] is not None and doc["due_at"] < now
        checks = [
            "status" not in filters or doc["status"] in filters["status"].split(","),
            "priority" not in filters or doc["priority"] in filters["priority"].split(","),
            "tag" not in filters or bool(set(doc["tags"]) & set(filters["tag"].split(","))),
            "due_before" not in filters or (doc["due_at"] is not None and doc["due_at"] < due(filters["due_before"])),
            "due_after" not in filters or (doc["due_at"] is not None and doc["due_at"] >= due(filters["due_after"])),
            "overdue" not in filters or overdue == (filters["overdue"] == "true"),
            "q" not in filters or filters["q"].lower() in (doc["title"] + "\n" + doc["description"]).lower(),
        ]
        return all(checks)

    name, reverse = sort.lstrip("-"), sort.startswith("-")
    key = {"created_at": "created_at", "updated_at": "updated_at", "priority": "priority_rank",
           "due_at": "due_key_desc" if reverse else "due_key_asc"}[name]
    chosen = sorted((d for d in docs if keep(d)), key=lambda d: (d[key], d["_id"]), reverse=reverse)
    return [str(d["_id"]) for d in chosen]


def walk(client, headers, query: str, limit: int) -> list[str]:
    seen, cursor = [], None
    for _ in range(200):
        url = f"/api/v1/tasks?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        assert len(page["items"]) <= limit
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the walk did not end")


@pytest.mark.parametrize("engine", ["secantus", "mongodb"])
@pytest.mark.parametrize("sort", SORTS)
def test_every_shape_walks_to_the_contracts_answer(request, make_app, dataset, engine, sort):
    if engine == "mongodb":
        request.getfixturevalue("mongodb_indexes")  # the hints name MongoDB's eleven indexes
    client = make_app(MONGODB_ENGINE=engine, CACHE_TTL_SECONDS="0").test_client()
    headers = bearer(login(client, "ada@example.com", environ_base={"REMOTE_ADDR": f"10.9.{SORTS.index(sort)}.1"})
                     ["access_token"])
    for filters in FILTERS:
        want = expected(dataset, filters, sort)
        query = query_string(filters, sort)
        assert walk(client, headers, query, 6) == want, (engine, sort, filters)
        if engine == "secantus":  # again: now the first page reads a remembered window
            assert walk(client, headers, query, 6) == want, (sort, filters)


def test_wrong_edges_cost_speed_never_results(make_app, dataset, app):
    """Remembered windows that writes made too small, or planted nonsense, still give exact pages."""
    client = make_app(MONGODB_ENGINE="secantus", CACHE_TTL_SECONDS="0").test_client()
    headers = bearer(login(client, "ada@example.com")["access_token"])
    for sort in SORTS:
        assert walk(client, headers, f"sort={sort}", 5) == expected(dataset, {}, sort)
    newest = sorted(dataset, key=lambda d: (d["created_at"], d["_id"]), reverse=True)
    for doc in newest[:8]:  # the remembered first-page windows of -created_at now hold too few
        assert client.delete(f"/api/v1/tasks/{doc['_id']}", headers=headers).status_code == 204
    remaining = [d for d in dataset if d not in newest[:8]]
    for sort in SORTS:
        assert walk(client, headers, f"sort={sort}", 5) == expected(remaining, {}, sort)
    edges = app.extensions["cache_redis"]
    key = f"taskapi:edges:{dataset[0]['owner']}"
    for shape in edges.hkeys(key):
        edges.hset(key, shape, random.choice([0, -1, 2**40, 7]))  # anything at all
    for sort in SORTS:
        assert walk(client, headers, f"sort={sort}", 5) == expected(remaining, {}, sort)
