"""Dashboard numbers and completion series, each from one MongoDB aggregation ($facet)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from flask import current_app

from taskapi.extensions import stats_read_preference
from taskapi.models.task import DONE, PRIORITIES, STATUSES, tasks
from taskapi.services import members

OPEN = {"$ne": DONE}  # open = not done


def start_of_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def dashboard(*, owner: str | None, now: datetime) -> dict[str, Any]:
    """The dashboard numbers (docs/api.md "Stats") for one owner, or for everyone (owner None, plus the user count).

    UTC throughout; open = not done: overdue = open and due_at < now; due_today = open and
    now <= due_at < next midnight; due_next_7_days = open and now <= due_at < now + 7 days;
    completed_last_7_days = completed_at >= now - 7 days; completion_rate = done / total.
    """
    match = {"owner": ObjectId(owner)} if owner else {}
    midnight = start_of_day(now) + timedelta(days=1)
    facets = {
        "by_status": [{"$group": {"_id": "$status", "n": {"$sum": 1}}}],
        "by_priority": [{"$group": {"_id": "$priority", "n": {"$sum": 1}}}],
        "overdue": [{"$match": {"status": OPEN, "due_at": {"$lt": now}}}, {"$count": "n"}],
        "due_today": [{"$match": {"status": OPEN, "due_at": {"$gte": now, "$lt": midnight}}}, {"$count": "n"}],
        "due_next_7_days": [{"$match": {"status": OPEN, "due_at": {"$gte": now, "$lt": now + timedelta(days=7)}}},
                            {"$count": "n"}],
        "completed_last_7_days": [{"$match": {"completed_at": {"$gte": now - timedelta(days=7)}}}, {"$count": "n"}],
    }
    pipeline = ([{"$match": match}] if match else []) + [{"$facet": facets}]
    # A user's numbers read the primary (read-your-writes); the admin's global ones, a scatter-gather
    # over every owner, may read a secondary (MONGODB_STATS_READ_PREFERENCE, bounded staleness).
    source = tasks() if owner else tasks().with_options(read_preference=stats_read_preference(current_app.config))
    (result,) = source.aggregate(pipeline)
    by_status = dict.fromkeys(STATUSES, 0) | {row["_id"]: row["n"] for row in result["by_status"]}
    by_priority = dict.fromkeys(PRIORITIES, 0) | {row["_id"]: row["n"] for row in result["by_priority"]}
    total = sum(by_status.values())
    stats = {
        "total": total,
        "by_status": by_status,
        "by_priority": by_priority,
        **{name: (result[name][0]["n"] if result[name] else 0)
           for name in ("overdue", "due_today", "due_next_7_days", "completed_last_7_days")},
        "completion_rate": round(by_status[DONE] / total, 4) if total else 0,
        "generated_at": now,
    }
    if owner is None:
        stats["users"] = members.count(read_preference=stats_read_preference(current_app.config))
    return stats


def completions(*, owner: str, days: int, now: datetime) -> dict[str, Any]:
    """Tasks created and completed per UTC day, `days` days ending today, oldest first, zero-filled."""
    first = start_of_day(now) - timedelta(days=days - 1)

    def per_day(field: str) -> list[dict[str, Any]]:
        return [{"$match": {field: {"$gte": first}}},
                {"$group": {"_id": {"$dateToString": {"format": "%Y-%m-%d", "date": f"${field}"}}, "n": {"$sum": 1}}}]

    pipeline: list[dict[str, Any]] = [{"$match": {"owner": ObjectId(owner)}},
                {"$facet": {"created": per_day("created_at"), "completed": per_day("completed_at")}}]
    (result,) = tasks().aggregate(pipeline)
    created = {row["_id"]: row["n"] for row in result["created"]}
    completed = {row["_id"]: row["n"] for row in result["completed"]}
    series = []
    for offset in range(days):
        date = (first + timedelta(days=offset)).strftime("%Y-%m-%d")
        series.append({"date": date, "created": created.get(date, 0), "completed": completed.get(date, 0)})
    return {"days": series}

