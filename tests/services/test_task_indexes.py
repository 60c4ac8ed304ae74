"""Indexes: every list query shape is pinned to an index that follows Equality-Sort-Range, and
the embedded server's planner really walks it (explain: no COLLSCAN, the intended index wins)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from taskapi.extensions import get_db
from taskapi.models.task import TASK_INDEXES, Task
from taskapi.schemas.tasks import SORTS
from taskapi.services.tasks import plan_list

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
FILTER_SETS = [
    {},
    {"status": ["todo"]},
    {"status": ["todo", "in_progress"]},
    {"priority": ["high"]},
    {"priority": ["low", "urgent"]},
    {"tag": ["work"]},
    {"tag": ["work", "home"]},
    {"due_before": NOW},
    {"due_after": NOW - timedelta(days=3)},
    {"due_after": NOW - timedelta(days=3), "due_before": NOW + timedelta(days=3)},
    {"overdue": True},
    {"overdue": False},
    {"q": "milk (2%)"},
    {"status": ["done"], "tag": ["work"]},
    {"tag": ["work"], "priority": ["high"], "q": "x"},
    {"status": ["todo"], "priority": ["urgent"], "due_before": NOW, "q": "a.b"},
]
INDEX_FIELDS = {spec["name"]: spec["fields"] for spec in TASK_INDEXES}


def shapes():
    owner = str(ObjectId())
    for sort, filters, paged in itertools.product(SORTS, FILTER_SETS, (False, True)):
        value = 2 if sort.lstrip("-") == "priority" else NOW
        after = [value, ObjectId()] if paged else None
        yield pytest.param(plan_list(owner=owner, filters=filters, sort=sort, now=NOW, after=after),
                           id=f"{sort}-{'+'.join(filters) or 'none'}-{'page2' if paged else 'page1'}")


def stages(plan: dict):
    yield plan
    for key in ("inputStage", "outerStage", "innerStage"):
        if key in plan:
            yield from stages(plan[key])
    for child in plan.get("inputStages", []):
        yield from stages(child)


def test_declared_indexes_are_the_ones_the_migrations_create(app, tmp_path):
    """Migrations 0002 and 0004 write out the model's twelve; on SecantusDB, 0003 keeps six."""
    import shutil

    from taskapi.cli import migrate
    from taskapi.models.task import EMBEDDED_TASK_INDEXES

    scratch = get_db().client["taskapi_index_check"]
    try:
        for name in ("0001_users.py", "0002_tasks.py", "0004_notifications.py"):
            shutil.copy(migrate.MIGRATIONS_DIR / name, tmp_path / name)
        migrate.upgrade(scratch, tmp_path)
        existing = {spec["name"]: list(spec["key"].items()) for spec in scratch.tasks.list_indexes()}
        declared = {spec["name"]: spec["fields"] for spec in Task._meta["index_specs"]}
        assert set(existing) - {"_id_"} == set(declared) and len(declared) == 12
        for name, fields in declared.items():
            assert [(k, int(d)) for k, d in existing[name]] == fields
    finally:
        get_db().client.drop_database("taskapi_index_check")
    on_secantus = {spec["name"] for spec in get_db().tasks.list_indexes()} - {"_id_"}
    assert on_secantus == set(EMBEDDED_TASK_INDEXES)


@pytest.mark.parametrize("plan", list(shapes()))
def test_query_shape_follows_equality_sort_range(plan):
    fields = INDEX_FIELDS[plan.index]
    n = len(plan.equality)
    assert fields[:n] == plan.equality, "equality fields come first"
    assert fields[n] == plan.sort_key and fields[n + 1] == "_id", "then the sort key and its tie-breaker"
    assert plan.sort == [(plan.sort_key, plan.direction), ("_id", plan.direction)], "one direction: one index walk"
    assert set(plan.ranges) <= {plan.sort_key}, "ranges only on the sort key, after the equalities"
    constrained = {next(iter(c)) for c in plan.query.get("$and", [])} | {"owner"}
    assert set(plan.equality) <= constrained, "every equality field of the index is constrained by the query"


@pytest.mark.parametrize("plan", list(shapes()))
def test_explain_uses_the_intended_index_without_collscan(mongodb_indexes, plan):
    cursor = Task._get_collection().find(plan.query).sort(plan.sort).hint(plan.index).limit(21)
    winning = cursor.explain()["queryPlanner"]["winningPlan"]
    found = list(stages(winning))
    assert not any(stage.get("stage") == "COLLSCAN" for stage in found), winning
    scans = [stage for stage in found if stage.get("stage") == "IXSCAN"]
    assert scans and all(stage["indexName"] == plan.index for stage in scans), winning
