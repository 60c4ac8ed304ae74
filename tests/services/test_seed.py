"""Demo data: `flask seed` bulk-inserts a realistic spread, and seeded users can log in."""

from __future__ import annotations

from collections import Counter

from taskapi.extensions import get_db
from tests.helpers import bearer, login


def test_seed_creates_users_and_a_realistic_spread(runner, client):
    result = runner.invoke(args=["seed", "--users", "2", "--tasks", "300", "--password", "seeded password"])
    assert result.exit_code == 0, result.output
    assert "600 tasks for 2 users (2 new)" in result.output
    db = get_db()
    owners = {u["email"]: u["_id"] for u in db.users.find({}, {"email": 1})}
    assert set(owners) == {"demo1@example.com", "demo2@example.com"}
    assert db.tasks.count_documents({"owner": owners["demo1@example.com"]}) == 300
    statuses = Counter(t["status"] for t in db.tasks.find({}, {"status": 1}))
    priorities = Counter(t["priority"] for t in db.tasks.find({}, {"priority": 1}))
    assert set(statuses) == {"todo", "in_progress", "done"} and all(n > 30 for n in statuses.values())
    assert set(priorities) == {"low", "medium", "high", "urgent"}
    assert db.tasks.count_documents({"due_at": None}) > 50 and db.tasks.count_documents({"tags": {"$ne": []}}) > 300
    assert db.tasks.count_documents({"status": "done", "completed_at": None}) == 0

    token = login(client, "demo1@example.com", "seeded password")["access_token"]
    stats = client.get("/api/v1/stats/dashboard", headers=bearer(token)).get_json()
    assert stats["total"] == 300 and stats["by_status"]["done"] == statuses_for(db, owners["demo1@example.com"])
    page = client.get("/api/v1/tasks?sort=due_at&limit=100", headers=bearer(token)).get_json()
    assert len(page["items"]) == 100 and page["next_cursor"]  # seeded documents are valid tasks


def statuses_for(db, owner) -> int:
    return db.tasks.count_documents({"owner": owner, "status": "done"})


def test_seeding_again_reuses_users(runner):
    runner.invoke(args=["seed", "--users", "1", "--tasks", "10"])
    again = runner.invoke(args=["seed", "--users", "1", "--tasks", "10"])
    assert "10 tasks for 1 users (0 new)" in again.output
    assert get_db().users.count_documents({}) == 1 and get_db().tasks.count_documents({}) == 20


def test_seed_refuses_a_pattern_without_n(runner):
    result = runner.invoke(args=["seed", "--email-pattern", "fixed@example.com"])
    assert result.exit_code == 2 and "{n}" in result.output
