"""The task rules beside the Task document, and the task service called directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from werkzeug.datastructures import ETags

from taskapi.errors import Conflict, NotFound, PreconditionFailed
from taskapi.extensions import get_redis
from taskapi.models.task import DEFAULTS, NO_DUE_EARLIEST, NO_DUE_LATEST, derived_fields, tasks
from taskapi.services import tasks as service

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OWNER = "6b0cf4e5d9870db21da3bdfa"


def values(**changes):
    return {"title": "t", **DEFAULTS, **changes}


def test_derived_sort_keys_put_tasks_without_a_due_date_last_both_ways():
    undated = derived_fields(values(), previous_status=None, previous_completed=None, now=NOW)
    dated = derived_fields(values(due_at=NOW, priority="urgent"), previous_status=None, previous_completed=None, now=NOW)
    assert (undated["due_key_asc"], undated["due_key_desc"]) == (NO_DUE_LATEST, NO_DUE_EARLIEST)
    assert (dated["due_key_asc"], dated["due_key_desc"]) == (NOW, NOW)
    assert (undated["priority_rank"], dated["priority_rank"]) == (1, 3)  # medium, urgent


def test_completed_at_is_set_on_done_kept_while_done_and_cleared_when_reopened():
    earlier = NOW - timedelta(days=3)
    becomes_done = derived_fields(values(status="done"), previous_status="todo", previous_completed=None, now=NOW)
    stays_done = derived_fields(values(status="done"), previous_status="done", previous_completed=earlier, now=NOW)
    reopened = derived_fields(values(status="todo"), previous_status="done", previous_completed=earlier, now=NOW)
    assert becomes_done["completed_at"] == NOW
    assert stays_done["completed_at"] == earlier
    assert reopened["completed_at"] is None


def test_create_then_conditional_update_and_delete_without_http(app):
    with app.app_context():
        task = service.create_task(owner=OWNER, data={"title": "Direct", "tags": ["x"]})
        assert task["version"] == 1 and task["status"] == "todo" and task["description"] == ""
        stored = tasks().find_one({"_id": task["_id"]})
        assert stored["due_key_asc"].replace(tzinfo=UTC) == NO_DUE_LATEST and stored["priority_rank"] == 1

        stale = service.Precondition(ETags(["v1"]))
        updated = service.update_task(owner=OWNER, task_id=str(task["_id"]), changes={"status": "done"},
                                      precondition=stale)
        assert updated["version"] == 2 and updated["completed_at"] is not None
        with pytest.raises(PreconditionFailed):  # v1 is gone now
            service.update_task(owner=OWNER, task_id=str(task["_id"]), changes={"title": "again"},
                                precondition=stale)
        with pytest.raises(NotFound):  # another owner sees nothing
            service.get_task(owner="6b0cf4e5d9870db21da3bdfb", task_id=str(task["_id"]))
        service.delete_task(owner=OWNER, task_id=str(task["_id"]), precondition=None)
        assert tasks().count_documents({}) == 0


def test_quota_refuses_the_task_past_the_limit_and_releases_a_failed_slot(app, make_app):
    quota_app = make_app(TASKS_MAX_PER_USER="2")
    with quota_app.app_context():
        for n in range(2):
            service.create_task(owner=OWNER, data={"title": f"t{n}"})
        with pytest.raises(Conflict, match="limit of 2 tasks"):
            service.create_task(owner=OWNER, data={"title": "one too many"})
        assert tasks().count_documents({"owner": {"$exists": True}}) == 2
        assert int(get_redis().get(f"taskapi:ntasks:{OWNER}")) == 2
