"""Stats: exact numbers on known tasks, scopes, and the read-your-writes cache."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from taskapi.extensions import get_db
from tests.helpers import assert_problem, bearer, login, register

DASHBOARD = "/api/v1/stats/dashboard"
COMPLETIONS = "/api/v1/stats/completions"
TASKS = "/api/v1/tasks"


@pytest.fixture
def headers(user_tokens):
    return bearer(user_tokens["access_token"])


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def create(client, headers, **fields):
    response = client.post(TASKS, json={"title": "t", **fields}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()


def not_near_midnight():
    """Day boundaries move under a test that runs in the last seconds of a UTC day."""
    now = datetime.now(UTC)
    to_midnight = (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1) - now).total_seconds()
    if to_midnight < 90:
        time.sleep(to_midnight + 1)


@pytest.fixture
def fixture_tasks(client, headers):
    not_near_midnight()
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    made = {
        "overdue": create(client, headers, status="todo", priority="high", due_at=iso(now - timedelta(hours=1))),
        "today": create(client, headers, status="in_progress", priority="urgent", due_at=iso(now + (midnight - now) / 2)),
        "in_3_days": create(client, headers, status="todo", priority="medium", due_at=iso(now + timedelta(days=3))),
        "in_10_days": create(client, headers, status="todo", priority="low", due_at=iso(now + timedelta(days=10))),
        "done_now": create(client, headers, status="done", priority="low", due_at=iso(now - timedelta(days=2))),
        "done_long_ago": create(client, headers, status="done", priority="medium"),
        "undated": create(client, headers, status="todo", priority="medium"),
    }
    get_db().tasks.update_one({"_id": ObjectId(made["done_long_ago"]["id"])},
                              {"$set": {"completed_at": now - timedelta(days=8)}})
    return made


def test_dashboard_numbers_are_exact(client, headers, fixture_tasks):
    response = client.get(DASHBOARD, headers=headers)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    stats = response.get_json()
    generated = stats.pop("generated_at")
    assert generated.endswith("Z")
    assert stats == {
        "total": 7,
        "by_status": {"todo": 4, "in_progress": 1, "done": 2},
        "by_priority": {"low": 2, "medium": 3, "high": 1, "urgent": 1},
        "overdue": 1,
        "due_today": 1,
        "due_next_7_days": 2,
        "completed_last_7_days": 1,
        "completion_rate": round(2 / 7, 4),
    }


def test_dashboard_of_a_user_without_tasks(client, headers):
    stats = client.get(DASHBOARD, headers=headers).get_json()
    assert stats["total"] == 0 and stats["completion_rate"] == 0 and stats["by_status"] == {
        "todo": 0, "in_progress": 0, "done": 0}


def test_completions_series_with_gaps(client, headers):
    not_near_midnight()
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    made = [create(client, headers, status="done") for _ in range(4)]
    placements = [(0, 0), (0, 2), (3, 3), (12, 1)]  # (created days ago, completed days ago)
    for task, (created_ago, completed_ago) in zip(made, placements, strict=False):
        get_db().tasks.update_one({"_id": ObjectId(task["id"])}, {"$set": {
            "created_at": today - timedelta(days=created_ago), "completed_at": today - timedelta(days=completed_ago)}})
    series = client.get(f"{COMPLETIONS}?days=5", headers=headers).get_json()["days"]
    dates = [(today - timedelta(days=ago)).strftime("%Y-%m-%d") for ago in range(4, -1, -1)]
    assert series == [
        {"date": dates[0], "created": 0, "completed": 0},
        {"date": dates[1], "created": 1, "completed": 1},  # 3 days ago
        {"date": dates[2], "created": 0, "completed": 1},  # 2 days ago
        {"date": dates[3], "created": 0, "completed": 1},  # yesterday (the one created 12 days ago)
        {"date": dates[4], "created": 2, "completed": 1},  # today
    ]
    default = client.get(COMPLETIONS, headers=headers).get_json()["days"]
    assert len(default) == 30 and default[-1]["date"] == dates[-1] and sum(d["created"] for d in default) == 4
    assert len(client.get(f"{COMPLETIONS}?days=1", headers=headers).get_json()["days"]) == 1
    assert len(client.get(f"{COMPLETIONS}?days=365", headers=headers).get_json()["days"]) == 365


@pytest.mark.parametrize("query", ["days=0", "days=366", "days=x", "days=-1", "scope=global", "extra=1"])
def test_completions_rejects_bad_arguments(client, headers, query):
    assert_problem(client.get(f"{COMPLETIONS}?{query}", headers=headers), 422)


def test_global_scope_is_admin_only_and_counts_everyone(client, headers, admin_tokens, fixture_tasks):
    assert_problem(client.get(f"{DASHBOARD}?scope=global", headers=headers), 403)
    assert_problem(client.get(f"{DASHBOARD}?scope=everyone", headers=headers), 422)
    admin = bearer(admin_tokens["access_token"])
    create(client, admin, status="done")
    mine = client.get(DASHBOARD, headers=admin).get_json()
    assert mine["total"] == 1 and "users" not in mine
    everyone = client.get(f"{DASHBOARD}?scope=global", headers=admin).get_json()
    assert everyone["total"] == 8 and everyone["users"] == 2 and everyone["by_status"]["done"] == 3


def test_stats_need_a_token(client):
    assert_problem(client.get(DASHBOARD), 401)
    assert_problem(client.get(COMPLETIONS), 401)


# --- cache ---------------------------------------------------------------------------------

def test_list_is_cached_and_reads_own_writes(client, headers):
    task = create(client, headers, title="first")
    miss = client.get(TASKS, headers=headers)
    hit = client.get(TASKS, headers=headers)
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert hit.get_json() == miss.get_json() and hit.headers["Cache-Control"] == "no-store"

    second = create(client, headers, title="second")
    after_post = client.get(TASKS, headers=headers)
    assert after_post.headers["X-Cache"] == "MISS"
    assert [t["title"] for t in after_post.get_json()["items"]] == ["second", "first"]

    client.patch(f"{TASKS}/{task['id']}", json={"title": "renamed"}, headers=headers)
    assert [t["title"] for t in client.get(TASKS, headers=headers).get_json()["items"]] == ["second", "renamed"]

    client.delete(f"{TASKS}/{second['id']}", headers=headers)
    assert [t["title"] for t in client.get(TASKS, headers=headers).get_json()["items"]] == ["renamed"]


def test_cached_page_keeps_its_link(client, headers):
    for i in range(3):
        create(client, headers, title=f"t{i}")
    first = client.get(f"{TASKS}?limit=2", headers=headers)
    again = client.get(f"{TASKS}?limit=2", headers=headers)
    assert again.headers["X-Cache"] == "HIT" and again.headers["Link"] == first.headers["Link"]


def test_dashboard_is_cached_and_reads_own_writes(client, headers):
    create(client, headers, status="todo")
    assert client.get(DASHBOARD, headers=headers).headers["X-Cache"] == "MISS"
    cached = client.get(DASHBOARD, headers=headers)
    assert cached.headers["X-Cache"] == "HIT" and cached.get_json()["total"] == 1
    task = create(client, headers, status="todo")
    fresh = client.get(DASHBOARD, headers=headers)
    assert fresh.headers["X-Cache"] == "MISS" and fresh.get_json()["total"] == 2
    client.patch(f"{TASKS}/{task['id']}", json={"status": "done"}, headers=headers)
    assert client.get(DASHBOARD, headers=headers).get_json()["by_status"]["done"] == 1
    client.get(COMPLETIONS, headers=headers)
    assert client.get(COMPLETIONS, headers=headers).headers["X-Cache"] == "HIT"


def test_users_never_see_each_others_cached_data(client, headers):
    register(client, "bob@example.com")
    bob = bearer(login(client, "bob@example.com")["access_token"])
    create(client, headers, title="ada's")
    create(client, bob, title="bob's")
    for _ in range(2):  # second round is served from the cache
        assert [t["title"] for t in client.get(TASKS, headers=headers).get_json()["items"]] == ["ada's"]
        assert [t["title"] for t in client.get(TASKS, headers=bob).get_json()["items"]] == ["bob's"]
        assert client.get(DASHBOARD, headers=headers).get_json()["total"] == 1
        assert client.get(DASHBOARD, headers=bob).get_json()["total"] == 1


def test_revoked_token_never_gets_a_cached_page(client, user_tokens, headers):
    create(client, headers)
    client.get(TASKS, headers=headers)
    assert client.get(TASKS, headers=headers).headers["X-Cache"] == "HIT"
    client.post("/api/v1/auth/logout", headers=headers)
    response = client.get(TASKS, headers=headers)
    assert_problem(response, 401)
    assert "X-Cache" not in response.headers


def test_repeated_parameters_do_not_share_a_cache_entry(client, headers):
    first = create(client, headers, title="due first", due_at="2030-01-01T00:00:00Z")
    second = create(client, headers, title="due second", due_at="2030-01-02T00:00:00Z")
    by_due = client.get(f"{TASKS}?sort=due_at&sort=-created_at", headers=headers)
    by_created = client.get(f"{TASKS}?sort=-created_at&sort=due_at", headers=headers)
    assert by_created.headers["X-Cache"] == "MISS"  # another query (the first value counts), not a hit
    assert [t["id"] for t in by_due.get_json()["items"]] == [first["id"], second["id"]]
    assert [t["id"] for t in by_created.get_json()["items"]] == [second["id"], first["id"]]
