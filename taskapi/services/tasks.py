"""Tasks, always scoped to their owner: create, read, list (keyset), update (atomic on version), delete."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import ObjectId
from flask import current_app
from pymongo import ReturnDocument

from taskapi.errors import Conflict, NotFound, PreconditionFailed, ServiceUnavailable, ValidationFailed
from taskapi.models.task import NO_DUE_EARLIEST, NO_DUE_LATEST, PRIORITY_RANK, SORT_KEYS, Task, TaskCount, index_name
from taskapi.services import cache, idempotency
from taskapi.services.auth import parse_object_id
from taskapi.services.paging import decode_cursor, encode_cursor

CURSOR_SCOPE = "tasks"
WRITABLE = ("title", "description", "status", "priority", "due_at", "tags")
DEFAULTS = {"description": "", "status": "todo", "priority": "medium", "due_at": None, "tags": []}
OPEN_STATUSES = ["todo", "in_progress"]
MAX_WRITE_ATTEMPTS = 50
NO_TASK = "No task with this id."


def utcnow() -> datetime:
    """Now, at MongoDB's millisecond precision, so what we return is what we stored."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def etag_for(version: int) -> str:
    """The entity tag (unquoted) of a task at this version."""
    return f"v{version}"


class Precondition:
    """An If-Match header: `*` or a list of entity tags.

    `W/"v3"` matches version 3 as `"v3"` does. RFC 9110 (13.1.1) asks for the strong
    comparison here, but a proxy that compresses a response (the bundled Nginx with gzip)
    must weaken its tag, and a client that read the task through it can only send back what
    it got. Our tags name a version of the task, not a byte sequence, so the weak form says
    the same thing; refusing it would make conditional updates impossible behind gzip.
    """

    def __init__(self, etags) -> None:  # werkzeug.datastructures.ETags
        self.etags = etags

    def check(self, version: int) -> None:
        if not (self.etags.star_tag or self.etags.contains_weak(etag_for(version))):
            raise PreconditionFailed()


# --- derived fields -------------------------------------------------------------------------

def _derived(values: dict[str, Any], *, previous_status: str | None, previous_completed: datetime | None,
             now: datetime) -> dict[str, Any]:
    """Sort keys and completed_at that follow from the writable fields."""
    derived = dict(values)
    derived["priority_rank"] = PRIORITY_RANK[values["priority"]]
    due = values["due_at"]
    derived["due_key_asc"] = due or NO_DUE_LATEST
    derived["due_key_desc"] = due or NO_DUE_EARLIEST
    if values["status"] == "done":
        derived["completed_at"] = previous_completed if previous_status == "done" else now
    else:
        derived["completed_at"] = None
    return derived


# --- create / read ----------------------------------------------------------------------------

def create_task(*, owner: str, data: dict[str, Any]) -> Task:
    """A new task, within the owner's quota (TASKS_MAX_PER_USER; 409 beyond it)."""
    now = utcnow()
    values = {**DEFAULTS, **data}
    task = Task(owner=ObjectId(owner), created_at=now, updated_at=now, version=1,
                **_derived(values, previous_status=None, previous_completed=None, now=now))
    reserve_slots(owner, 1)
    try:
        task.save(force_insert=True)
    except Exception:
        release_slots(owner, 1)
        raise
    cache.bump(owner)
    return task


# --- quota -------------------------------------------------------------------------------------

def reserve_slots(owner: str, count: int, *, enforce: bool = True) -> None:
    """Count `count` more tasks for the owner (one atomic $inc on their counter document);
    over TASKS_MAX_PER_USER the reservation is undone and the create refused with 409."""
    quota = current_app.config["TASKS_MAX_PER_USER"]
    counter = TaskCount._get_collection().find_one_and_update(
        {"_id": ObjectId(owner)}, {"$inc": {"n": count}}, upsert=True, return_document=ReturnDocument.AFTER)
    if enforce and quota and counter["n"] > quota:
        release_slots(owner, count)
        raise Conflict(f"You have reached the limit of {quota} tasks; delete some to add more.")


def release_slots(owner: str, count: int) -> None:
    TaskCount._get_collection().update_one({"_id": ObjectId(owner)}, {"$inc": {"n": -count}})


def erase_owner_data(*, owner: str) -> dict[str, int]:
    """Every task of the owner, their counter, idempotency records and cache entries."""
    deleted = Task._get_collection().delete_many({"owner": ObjectId(owner)}).deleted_count
    TaskCount._get_collection().delete_one({"_id": ObjectId(owner)})
    idempotency.forget(user_id=owner)
    cache.forget(owner)
    return {"tasks": deleted}


def get_task(*, owner: str, task_id: str) -> Task:
    """The caller's task; another user's, an unknown and a malformed id are the same 404."""
    doc = Task._get_collection().find_one({"_id": parse_object_id(task_id, NO_TASK), "owner": ObjectId(owner)})
    if doc is None:
        raise NotFound(NO_TASK)
    return Task._from_son(doc)


# --- update / delete ----------------------------------------------------------------------------

def update_task(*, owner: str, task_id: str, changes: dict[str, Any], replace: bool = False,
                precondition: Precondition | None = None) -> Task:
    """PATCH (changes only) or PUT (every writable field, omitted ones reset to defaults).

    One conditional write on `version`: if another writer got there first, an If-Match
    request fails with 412; an unconditional one re-reads and re-applies, so no update is
    lost and `version` counts exactly the writes that changed something.
    """
    collection = Task._get_collection()
    oid = parse_object_id(task_id, NO_TASK)
    for _ in range(MAX_WRITE_ATTEMPTS):
        current = get_task(owner=owner, task_id=task_id)
        if precondition is not None:
            precondition.check(current.version)
        target = {**DEFAULTS, **changes} if replace else {**{f: current[f] for f in WRITABLE}, **changes}
        if all(_same(current[f], target[f]) for f in WRITABLE):
            return current  # nothing changes: no write, no new version
        now = utcnow()
        values = _derived({f: target[f] for f in WRITABLE}, previous_status=current.status,
                          previous_completed=current.completed_at, now=now)
        doc = collection.find_one_and_update(
            {"_id": oid, "owner": ObjectId(owner), "version": current.version},
            {"$set": {**values, "updated_at": now}, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            cache.bump(owner)
            return Task._from_son(doc)
        if precondition is not None:
            raise PreconditionFailed()
    raise ServiceUnavailable("The task is being changed by many requests at once; retry shortly.")


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, datetime) and isinstance(new, datetime):
        return old.astimezone(timezone.utc) == new.astimezone(timezone.utc)
    return old == new


def delete_task(*, owner: str, task_id: str, precondition: Precondition | None = None) -> None:
    collection = Task._get_collection()
    query = {"_id": parse_object_id(task_id, NO_TASK), "owner": ObjectId(owner)}
    if precondition is not None:
        current = get_task(owner=owner, task_id=task_id)
        precondition.check(current.version)
        query["version"] = current.version
    if collection.delete_one(query).deleted_count == 0:
        get_task(owner=owner, task_id=task_id)  # gone: 404
        raise PreconditionFailed()  # still there: it changed under the If-Match
    release_slots(owner, 1)
    cache.bump(owner)


# --- list --------------------------------------------------------------------------------------

@dataclass
class ListPlan:
    """What one list request runs: a query pinned to the index meant for its shape."""

    query: dict[str, Any]
    sort: list[tuple[str, int]]
    index: str
    sort_key: str
    direction: int
    empty: bool = False
    equality: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)


def plan_list(*, owner: str, filters: dict[str, Any], sort: str, now: datetime,
              after: list[Any] | None = None) -> ListPlan:
    """Build the query, sort and index hint for these filters and this sort.

    Index choice (equality, then sort, then range — MongoDB's ESR rule):
      a status filter (or overdue=true, which means status in todo/in_progress)
                                       -> owner, status, <sort key>, _id
      a tag filter with the created_at sort  -> owner, tags, created_at, _id
      anything else                      -> owner, <sort key>, _id
    Other filters (priority, a tag under another sort, q, due ranges under a non-due sort)
    are checked on the documents the index walk fetches, in index order, so the sort never
    happens in memory and a page stops after `limit` matches.
    """
    descending = sort.startswith("-")
    name = sort.lstrip("-")
    key = SORT_KEYS["-due_at" if name == "due_at" and descending else name]
    direction = -1 if descending else 1
    clauses: list[dict[str, Any]] = []
    empty = False

    statuses = filters.get("status")
    if filters.get("overdue") is True:
        statuses = [s for s in (statuses or OPEN_STATUSES) if s != "done"]
        empty = not statuses
    if statuses:
        clauses.append({"status": statuses[0] if len(statuses) == 1 else {"$in": statuses}})
    tags = filters.get("tag")
    if tags:
        clauses.append({"tags": tags[0] if len(tags) == 1 else {"$in": tags}})
    if filters.get("priority"):
        priorities = filters["priority"]
        clauses.append({"priority": priorities[0] if len(priorities) == 1 else {"$in": priorities}})

    due: dict[str, datetime] = {}
    upper = [t for t in (filters.get("due_before"), now if filters.get("overdue") is True else None) if t]
    if upper:
        due["$lt"] = min(upper)
    if filters.get("due_after"):
        due["$gte"] = filters["due_after"]
    if due:
        clauses.append({"due_at": due})
        if key in ("due_key_asc", "due_key_desc"):
            clauses.append({key: _due_key_bounds(key, due)})  # the same range as index bounds
    if filters.get("overdue") is False:
        clauses.append({"$nor": [{"status": {"$ne": "done"}, "due_at": {"$lt": now}}]})
    if filters.get("q"):
        pattern = {"$regex": re.escape(filters["q"]), "$options": "i"}
        clauses.append({"$or": [{"title": pattern}, {"description": pattern}]})
    if after is not None:
        # After (value, id) in sort order: key beyond value, or equal with a later id. Written
        # as "key at or beyond value, and not (key == value with an id at or before last)":
        # the range gives the index bounds, and there is no $or for a planner to trip on.
        value, last_id = after
        op, behind = ("$gte", "$lte") if direction == 1 else ("$lte", "$gte")
        clauses.append({key: {op: value}})
        clauses.append({"$nor": [{key: value, "_id": {behind: last_id}}]})

    query: dict[str, Any] = {"owner": ObjectId(owner)}
    if clauses:
        query["$and"] = clauses
    if statuses:
        prefix, equality = ("owner", "status"), ["owner", "status"]
    elif tags and key == "created_at":
        prefix, equality = ("owner", "tags"), ["owner", "tags"]
    else:
        prefix, equality = ("owner",), ["owner"]
    ranges = [key] if (due and key.startswith("due_key")) or after is not None else []
    return ListPlan(query=query, sort=[(key, direction), ("_id", direction)], index=index_name(prefix, key),
                    sort_key=key, direction=direction, empty=empty, equality=equality, ranges=ranges)


def _due_key_bounds(key: str, due: dict[str, datetime]) -> dict[str, datetime]:
    """The due_at range restated on a due sort key (whose sentinels stand for 'no due date')."""
    bounds = dict(due)
    if key == "due_key_asc":  # no due date = the latest date: keep it out of a lower-bounded range
        bounds["$lt"] = min(bounds.get("$lt", NO_DUE_LATEST), NO_DUE_LATEST)
    else:  # no due date = the earliest date
        bounds["$gt"] = NO_DUE_EARLIEST
    return bounds


def list_tasks(*, owner: str, filters: dict[str, Any], sort: str, limit: int,
               cursor: str | None = None) -> tuple[list[Task], str | None]:
    """One page in sort order and the cursor of the next; one MongoDB round trip."""
    binding = {"owner": owner, "filters": filters, "sort": sort}
    after = None
    if cursor:
        value, last_id = decode_cursor(CURSOR_SCOPE, binding, cursor)
        after = [_position_value(value, sort), ObjectId(last_id)]
    plan = plan_list(owner=owner, filters=filters, sort=sort, now=utcnow(), after=after)
    if plan.empty:
        return [], None
    docs = list(Task._get_collection().find(plan.query).sort(plan.sort).hint(plan.index)
                .limit(limit + 1).batch_size(limit + 1))
    tasks = [Task._from_son(doc) for doc in docs[:limit]]
    next_cursor = None
    if len(docs) > limit:
        last = docs[limit - 1]
        next_cursor = encode_cursor(CURSOR_SCOPE, binding, [_position_token(last[plan.sort_key]), str(last["_id"])])
    return tasks, next_cursor


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _position_token(value: Any) -> Any:
    """Sort key values in a cursor: dates as epoch milliseconds, ranks as they are."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return (value - EPOCH) // timedelta(milliseconds=1)
    return value


def _position_value(token: Any, sort: str) -> Any:
    if not isinstance(token, int) or isinstance(token, bool):
        raise ValidationFailed(errors={"cursor": ["The cursor is invalid."]})
    return token if sort.lstrip("-") == "priority" else EPOCH + timedelta(milliseconds=token)
