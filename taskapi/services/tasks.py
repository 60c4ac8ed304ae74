"""Tasks, always scoped to their owner: create, read, list (keyset), update (atomic on version), delete."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from bson import ObjectId
from flask import current_app
from pymongo.client_session import ClientSession
from werkzeug.datastructures import ETags

from taskapi.clock import utcnow
from taskapi.errors import Conflict, NotFound, PreconditionFailed, ServiceUnavailable, ValidationFailed
from taskapi.extensions import PREFIX, get_redis, in_transaction, mongodb_engine, redis_script
from taskapi.ids import parse_object_id
from taskapi.models.task import (
    DEFAULTS,
    DONE,
    EMBEDDED_RANGE_KEYS,
    NO_DUE_EARLIEST,
    NO_DUE_LATEST,
    OPEN_STATUSES,
    SORT_KEYS,
    WRITABLE,
    derived_fields,
    index_name,
    tasks,
)
from taskapi.services import cache, events, idempotency
from taskapi.services.paging import decode_cursor, encode_cursor, fingerprint

CURSOR_SCOPE = "tasks"
MAX_WRITE_ATTEMPTS = 50
NO_TASK = "No task with this id."


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

    def __init__(self, etags: ETags) -> None:
        self.etags = etags

    def check(self, version: int) -> None:
        if not (self.etags.star_tag or self.etags.contains_weak(etag_for(version))):
            raise PreconditionFailed()


# --- create / read ----------------------------------------------------------------------------
#
# Tasks travel as plain documents (the dicts pymongo reads and writes through models.task.tasks()),
# validated on the way in by the input schemas and dumped on the way out by TaskSchema; the Task
# document declares the fields and indexes, and models/task.py holds the task rules.

def new_document(*, owner: str, data: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The stored form of a new task: writable fields with their defaults, derived fields."""
    values = derived_fields({**DEFAULTS, **data}, previous_status=None, previous_completed=None, now=now)
    return {"_id": ObjectId(), "owner": ObjectId(owner), **values, "created_at": now, "updated_at": now, "version": 1}


def create_task(*, owner: str, data: dict[str, Any]) -> dict[str, Any]:
    """A new task, within the owner's quota (TASKS_MAX_PER_USER; 409 beyond it)."""
    now = utcnow()
    document = new_document(owner=owner, data=data, now=now)
    reserve_slots(owner, 1)

    def write(session: ClientSession) -> None:
        tasks().insert_one(document, session=session)
        events.store(events.task_write_events(before=None, after=document, now=now), session)

    try:
        in_transaction(write)
    except Exception:
        release_slots(owner, 1)
        raise
    cache.bump(owner)
    return document


# --- quota -------------------------------------------------------------------------------------
#
# taskapi:ntasks:{uid} in the main Redis counts the owner's tasks: one INCRBY per create, not a
# second database write. The count is rebuilt from MongoDB whenever it is missing, and checked
# against MongoDB before a create is refused, so a counter that drifted (a crash between the
# two writes) never holds anyone back.

QUOTA_SCRIPT = """
local known = tonumber(ARGV[3])
local n = redis.call('GET', KEYS[1])
if known >= 0 then n = known elseif not n then return -1 end
n = tonumber(n) + tonumber(ARGV[1])
if tonumber(ARGV[2]) > 0 and n > tonumber(ARGV[2]) then
  if known >= 0 then redis.call('SET', KEYS[1], known) end
  return -2
end
redis.call('SET', KEYS[1], n)
return n
"""
RELEASE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECRBY', KEYS[1], ARGV[1]) end
return 0
"""


def _count_key(owner: str) -> str:
    return f"{PREFIX}ntasks:{owner}"


def reserve_slots(owner: str, count: int, *, enforce: bool = True) -> None:
    """Count `count` more tasks for the owner; over TASKS_MAX_PER_USER (when enforced), 409."""
    quota = current_app.config["TASKS_MAX_PER_USER"] if enforce else 0
    script = redis_script(QUOTA_SCRIPT)
    outcome = script(keys=[_count_key(owner)], args=[count, quota, -1])
    if outcome in (-1, -2):  # unknown, or at the limit: count what is really there
        actual = tasks().count_documents({"owner": ObjectId(owner)})
        outcome = script(keys=[_count_key(owner)], args=[count, quota, actual])
    if outcome == -2:
        raise Conflict(f"You have reached the limit of {quota} tasks; delete some to add more.")


def set_task_count(owner: str, count: int) -> None:
    """What a bulk load into an empty collection knows: exactly how many tasks the owner has."""
    get_redis().set(_count_key(owner), count)


def release_slots(owner: str, count: int) -> None:
    redis_script(RELEASE_SCRIPT)(keys=[_count_key(owner)], args=[count])


def erase_owner_data(*, owner: str) -> dict[str, int]:
    """Every task of the owner, their counter, idempotency records and cache entries."""
    deleted = tasks().delete_many({"owner": ObjectId(owner)}).deleted_count
    get_redis().delete(_count_key(owner))
    idempotency.forget(user_id=owner)
    cache.forget(owner)
    return {"tasks": deleted}


def get_task(*, owner: str, task_id: str) -> dict[str, Any]:
    """The caller's task; another user's, an unknown and a malformed id are the same 404.

    MongoDB reads by `_id` and `owner` (the shard key's prefix: one shard answers). SecantusDB
    answers `{_id}` alone with a point lookup but `{_id, owner}` five times slower, so there
    the owner is compared here.
    """
    oid, owner_id = parse_object_id(task_id, NO_TASK), ObjectId(owner)
    if mongodb_engine() == "secantus":
        doc = tasks().find_one({"_id": oid})
        if doc is not None and doc["owner"] != owner_id:
            doc = None
    else:
        doc = tasks().find_one({"_id": oid, "owner": owner_id})
    if doc is None:
        raise NotFound(NO_TASK)
    return doc


# --- update / delete ----------------------------------------------------------------------------

def update_task(*, owner: str, task_id: str, changes: dict[str, Any], replace: bool = False,
                precondition: Precondition | None = None) -> dict[str, Any]:
    """PATCH (changes only) or PUT (every writable field, omitted ones reset to defaults).

    One conditional write on `version`: if another writer got there first, an If-Match
    request fails with 412; an unconditional one re-reads and re-applies, so no update is
    lost and `version` counts exactly the writes that changed something. The write is an
    `update_one` of the fields that change, whose result is computed here (the version check
    makes it exact): SecantusDB scans its whole collection for every findAndModify.
    """
    collection = tasks()
    oid = parse_object_id(task_id, NO_TASK)
    for _ in range(MAX_WRITE_ATTEMPTS):
        current = get_task(owner=owner, task_id=task_id)
        if precondition is not None:
            precondition.check(current["version"])
        target = {**DEFAULTS, **changes} if replace else {**{f: current.get(f) for f in WRITABLE}, **changes}
        if all(_same(current.get(f), target[f]) for f in WRITABLE):
            return current  # nothing changes: no write, no new version
        now = utcnow()
        values = derived_fields({f: target[f] for f in WRITABLE}, previous_status=current["status"],
                                previous_completed=current["completed_at"], now=now,
                                previous_remind_at=current.get("remind_at"),
                                previous_reminded_at=current.get("reminded_at"))
        changed = {name: value for name, value in values.items() if not _same(current.get(name), value)}
        changed["updated_at"] = now
        updated = {**current, **changed, "version": current["version"] + 1}

        def write(session: ClientSession, version: int = current["version"], after: dict[str, Any] = updated,
                  before: dict[str, Any] = current, at: datetime = now, fields: dict[str, Any] = changed) -> int:
            written = collection.update_one(_version_filter(oid, owner, version),
                                            {"$set": fields, "$inc": {"version": 1}}, session=session)
            if written.matched_count:
                events.store(events.task_write_events(before=before, after=after, now=at), session)
            return written.matched_count

        with task_lock(oid):
            written = in_transaction(write)
        if written:
            cache.bump(owner)
            return updated
        if precondition is not None:
            raise PreconditionFailed()
    raise ServiceUnavailable("The task is being changed by many requests at once; retry shortly.")


@contextmanager
def task_lock(oid: ObjectId) -> Iterator[None]:
    """Writers of one task take turns (a short Redis lock), so their transactions never conflict:
    SecantusDB retries a conflicting transactional write inside the server for as long as the
    other stays open, and 30 parallel PATCHes of one task ran out of their time budget there.
    The version check still decides who wins; the lock only orders the attempts."""
    lock = get_redis().lock(f"{PREFIX}lock:task:{oid}", timeout=5, sleep=0.005,
                            blocking_timeout=current_app.config["MONGODB_REQUEST_TIMEOUT_MS"] / 1000)
    if not lock.acquire():
        raise ServiceUnavailable("The task is being changed by many requests at once; retry shortly.")
    try:
        yield
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:  # held past its timeout; the version check kept it safe
            pass


def _version_filter(oid: ObjectId, owner: str, version: int) -> dict[str, Any]:
    """The task at this version: by `_id` first (SecantusDB's point lookup), the owner too on
    MongoDB (targeted on a sharded cluster; the caller has read the task, so it is theirs)."""
    if mongodb_engine() == "secantus":
        return {"_id": oid, "version": version}
    return {"_id": oid, "owner": ObjectId(owner), "version": version}


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, datetime) and isinstance(new, datetime):
        return old.astimezone(UTC) == new.astimezone(UTC)
    return bool(old == new)


def delete_task(*, owner: str, task_id: str, precondition: Precondition | None = None) -> None:
    collection = tasks()
    query = {"_id": parse_object_id(task_id, NO_TASK), "owner": ObjectId(owner)}  # _id first: a point lookup
    if precondition is not None:
        current = get_task(owner=owner, task_id=task_id)
        precondition.check(current["version"])
        query["version"] = current["version"]
    now = utcnow()

    def write(session: ClientSession) -> int:
        deleted = collection.delete_one(query, session=session).deleted_count
        if deleted:
            gone = {"_id": query["_id"], "owner": query["owner"]}
            events.store(events.task_write_events(before=gone, after=None, now=now), session)
        return deleted

    with task_lock(query["_id"]):
        deleted = in_transaction(write)
    if deleted == 0:
        get_task(owner=owner, task_id=task_id)  # gone: 404
        raise PreconditionFailed()  # still there: it changed under the If-Match
    release_slots(owner, 1)
    cache.bump(owner)


# --- list --------------------------------------------------------------------------------------
#
# Two plans for one query, one per engine (extensions.mongodb_engine()):
#   MongoDB  - the whole filter under owner, pinned by hint() to the index that follows
#              Equality-Sort-Range for its shape: the server walks the index in sort order and
#              stops after `limit` matches, whatever the collection holds.
#   SecantusDB (the embedded default) - any hint makes it walk the whole hinted index, and any
#              top-level $and/$or/$nor makes it scan the collection; it always sorts the matches
#              in memory, and rewrites every index entry of a task on each update. So it keeps
#              one task index (owner, created_at, _id: models/task.py), and a query is a flat
#              first filter that index serves (owner, and a created_at range: a window, below)
#              with every other condition in a second $match on those candidates. Cost follows
#              the caller's matching tasks (within the window), never the collection.
# Both return the same pages (tests/test_task_plans.py walks every shape on both).

@dataclass
class Conditions:
    """A list request's conditions, before an engine's plan arranges them."""

    sort_key: str
    direction: int
    statuses: list[str] | None
    tags: list[str] | None
    priorities: list[str] | None
    due: dict[str, datetime]
    not_overdue: bool
    q: str | None
    after: list[Any] | None
    empty: bool


def conditions(*, filters: dict[str, Any], sort: str, now: datetime, after: list[Any] | None) -> Conditions:
    statuses = filters.get("status")
    empty = False
    if filters.get("overdue") is True:
        statuses = [s for s in (statuses or OPEN_STATUSES) if s != DONE]
        empty = not statuses
    due: dict[str, datetime] = {}
    upper = [t for t in (filters.get("due_before"), now if filters.get("overdue") is True else None) if t]
    if upper:
        due["$lt"] = min(upper)
    if filters.get("due_after"):
        due["$gte"] = filters["due_after"]
    return Conditions(sort_key=SORT_KEYS[_sort_name(sort)],
                      direction=-1 if sort.startswith("-") else 1, statuses=statuses, tags=filters.get("tag"),
                      priorities=filters.get("priority"), due=due, not_overdue=filters.get("overdue") is False,
                      q=filters.get("q"), after=after, empty=empty)


def _one_or_in(values: list[str]) -> Any:
    return values[0] if len(values) == 1 else {"$in": values}


def _not_overdue(now: datetime) -> dict[str, Any]:
    return {"$nor": [{"status": {"$ne": "done"}, "due_at": {"$lt": now}}]}


def _field_clauses(c: Conditions) -> list[dict[str, Any]]:
    """The status, tag and priority filters, one clause each (both plans start from these)."""
    clauses: list[dict[str, Any]] = []
    if c.statuses:
        clauses.append({"status": _one_or_in(c.statuses)})
    if c.tags:
        clauses.append({"tags": _one_or_in(c.tags)})
    if c.priorities:
        clauses.append({"priority": _one_or_in(c.priorities)})
    return clauses


def _search(q: str) -> dict[str, Any]:
    pattern = {"$regex": re.escape(q), "$options": "i"}
    return {"$or": [{"title": pattern}, {"description": pattern}]}


def _keyset(c: Conditions) -> tuple[dict[str, Any], dict[str, Any]]:
    """After (value, id) in sort order, as a range on the key and a tie-break: "key at or
    beyond value, and not (key == value with an id at or before last)" (no $or)."""
    assert c.after is not None
    value, last_id = c.after
    op, behind = ("$gte", "$lte") if c.direction == 1 else ("$lte", "$gte")
    return {op: value}, {"$nor": [{c.sort_key: value, "_id": {behind: last_id}}]}


@dataclass
class ListPlan:
    """MongoDB's plan: one query pinned to the index meant for its shape."""

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
    """MongoDB: build the query, sort and index hint for these filters and this sort.

    Index choice (equality, then sort, then range — MongoDB's ESR rule):
      a status filter (or overdue=true, which means status in todo/in_progress)
                                       -> owner, status, <sort key>, _id
      a tag filter with the created_at sort  -> owner, tags, created_at, _id
      anything else                      -> owner, <sort key>, _id
    Other filters (priority, a tag under another sort, q, due ranges under a non-due sort)
    are checked on the documents the index walk fetches, in index order, so the sort never
    happens in memory and a page stops after `limit` matches.
    """
    c = conditions(filters=filters, sort=sort, now=now, after=after)
    key = c.sort_key
    clauses = _field_clauses(c)
    if c.due:
        clauses.append({"due_at": c.due})
        if key in ("due_key_asc", "due_key_desc"):
            clauses.append({key: _due_key_bounds(key, c.due)})  # the same range as index bounds
    if c.not_overdue:
        clauses.append(_not_overdue(now))
    if c.q:
        clauses.append(_search(c.q))
    if c.after is not None:
        bound, tie_break = _keyset(c)
        clauses += [{key: bound}, tie_break]

    query: dict[str, Any] = {"owner": ObjectId(owner)}
    if clauses:
        query["$and"] = clauses
    prefix: tuple[str, ...]
    if c.statuses:
        prefix, equality = ("owner", "status"), ["owner", "status"]
    elif c.tags and key == "created_at":
        prefix, equality = ("owner", "tags"), ["owner", "tags"]
    else:
        prefix, equality = ("owner",), ["owner"]
    ranges = [key] if (c.due and key.startswith("due_key")) or c.after is not None else []
    return ListPlan(query=query, sort=[(key, c.direction), ("_id", c.direction)], index=index_name(prefix, key),
                    sort_key=key, direction=c.direction, empty=c.empty, equality=equality, ranges=ranges)


@dataclass
class FlatPlan:
    """SecantusDB's plan: a flat first filter served from an index, the rest on its candidates."""

    indexed: dict[str, Any]
    residual: list[dict[str, Any]]
    sort: list[tuple[str, int]]
    sort_key: str
    direction: int
    empty: bool = False

    def pipeline(self, limit: int) -> list[dict[str, Any]]:
        rest = self.residual[0] if len(self.residual) == 1 else {"$and": self.residual}
        return [{"$match": self.indexed}, {"$match": rest}, {"$sort": dict(self.sort)}, {"$limit": limit}]


def plan_flat(*, owner: str, filters: dict[str, Any], sort: str, now: datetime,
              after: list[Any] | None = None, edge: Any = None) -> FlatPlan:
    """SecantusDB: the first filter holds only what its (owner, sort key, _id) index serves
    (owner, then a range of the sort key); every other condition goes to a second stage,
    evaluated on those candidates. `edge` bounds the far side of that range (_list_flat)."""
    c = conditions(filters=filters, sort=sort, now=now, after=after)
    key = c.sort_key
    indexed: dict[str, Any] = {"owner": ObjectId(owner)}
    residual = _field_clauses(c)
    bounds: dict[str, Any] = {}
    if c.due:
        residual.append({"due_at": c.due})
        if key in ("due_key_asc", "due_key_desc"):
            bounds.update(_due_key_bounds(key, c.due))
    if c.not_overdue:
        residual.append(_not_overdue(now))
    if c.q:
        residual.append(_search(c.q))
    if c.after is not None:
        bound, tie_break = _keyset(c)
        bounds = _narrower(bounds, bound)
        residual.append(tie_break)
    if edge is not None:
        bounds = _narrower(bounds, {"$lte" if c.direction == 1 else "$gte": edge})
    if bounds:
        if key in EMBEDDED_RANGE_KEYS:
            indexed[key] = _inclusive_upper_as_exclusive(bounds)
        else:
            residual.append({key: bounds})
    return FlatPlan(indexed=indexed, residual=residual, sort=[(key, c.direction), ("_id", c.direction)],
                    sort_key=key, direction=c.direction, empty=c.empty)


def _inclusive_upper_as_exclusive(bounds: dict[str, Any]) -> dict[str, Any]:
    """`$lte v` as `$lt` the next value: SecantusDB 0.7's bounded index scan treats an inclusive
    upper bound on a field that is not the index's last as exclusive, and loses the ties at v
    (its in-memory match is right). Sort keys are whole milliseconds or whole ranks."""
    if "$lte" not in bounds:
        return bounds
    bounds = dict(bounds)
    value = bounds.pop("$lte")
    successor = value + timedelta(milliseconds=1) if isinstance(value, datetime) else value + 1
    bounds["$lt"] = min(bounds["$lt"], successor) if "$lt" in bounds else successor
    return bounds


def _narrower(bounds: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """Both sets of range bounds on one field, each operator at its tightest."""
    merged = dict(bounds)
    for op, value in more.items():
        if op in merged:
            merged[op] = max(merged[op], value) if op in ("$gt", "$gte") else min(merged[op], value)
        else:
            merged[op] = value
    return merged


def _due_key_bounds(key: str, due: dict[str, datetime]) -> dict[str, datetime]:
    """The due_at range restated on a due sort key (whose sentinels stand for 'no due date')."""
    bounds = dict(due)
    if key == "due_key_asc":  # no due date = the latest date: keep it out of a lower-bounded range
        bounds["$lt"] = min(bounds.get("$lt", NO_DUE_LATEST), NO_DUE_LATEST)
    else:  # no due date = the earliest date
        bounds["$gt"] = NO_DUE_EARLIEST
    return bounds


def list_tasks(*, owner: str, filters: dict[str, Any], sort: str, limit: int,
               cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """One page in sort order and the cursor of the next."""
    binding = {"owner": owner, "filters": filters, "sort": sort}
    after, edge = None, None
    if cursor:
        value, last_id, *rest = decode_cursor(CURSOR_SCOPE, binding, cursor)
        after = [_position_value(value, sort), ObjectId(last_id)]
        edge = rest[0] if rest else None
    if mongodb_engine() == "secantus":
        return _list_flat(owner=owner, binding=binding, limit=limit, after=after, cursor_edge=edge, first=not cursor)
    plan = plan_list(owner=owner, filters=filters, sort=sort, now=utcnow(), after=after)
    if plan.empty:
        return [], None
    docs = list(tasks().find(plan.query).sort(plan.sort).hint(plan.index).limit(limit + 1)
                .batch_size(limit + 1))
    return _page(docs, limit, binding, plan.sort_key)


def _page(docs: list[dict[str, Any]], limit: int, binding: dict[str, Any], sort_key: str,
          edge: int | None = None) -> tuple[list[dict[str, Any]], str | None]:
    page = docs[:limit]
    if len(docs) <= limit:
        return page, None
    last = docs[limit - 1]
    position = [_position_token(last[sort_key]), str(last["_id"])] + ([edge] if edge is not None else [])
    return page, encode_cursor(CURSOR_SCOPE, binding, position)


# SecantusDB reads every candidate of a query and sorts them all before it takes the page, so
# an open-ended range costs every matching task the caller has. A page is therefore read as a
# *window* of the sort key: from the cursor (or the top) to an edge a page and a margin away
# (window_size). The first page's edge is remembered per caller and query shape (cache.page_edge); the
# next page's travels in the cursor. A window that holds at least limit + 1 matches gives the
# exact page (everything outside it sorts after everything inside); one that holds fewer is
# read again without the edge, which also learns a new one. Edges only ever cost speed.
def window_size(limit: int) -> int:
    """Matches a window is sized to hold: the page, one more to know there is a next page, and
    a margin for tasks deleted since the edge was learned. Every match the window holds beyond
    the page is read and sorted for nothing, and a filter that matches one task in five reads
    five tasks per match, so the margin is small."""
    return limit + 1 + max(4, limit // 4)


def _list_flat(*, owner: str, binding: dict[str, Any], limit: int, after: list[Any] | None,
               cursor_edge: int | None, first: bool) -> tuple[list[dict[str, Any]], str | None]:
    filters, sort = binding["filters"], binding["sort"]
    shape = fingerprint({**binding, "limit": limit})  # an edge is a window of this page size
    edge = cache.page_edge(owner, shape) if first else cursor_edge
    fetch = window_size(limit)
    now = utcnow()
    docs, complete = None, False
    if edge is not None:
        docs = _run_flat(plan_flat(owner=owner, filters=filters, sort=sort, now=now, after=after,
                                   edge=_position_value(edge, sort)), fetch)
    if docs is None or len(docs) <= limit:  # no edge, or the window held less than a page
        docs = _run_flat(plan_flat(owner=owner, filters=filters, sort=sort, now=now, after=after), fetch)
        complete = docs is not None and len(docs) < fetch  # every remaining match is here
    if docs is None:
        return [], None
    sort_key, direction = SORT_KEYS[_sort_name(sort)], -1 if sort.startswith("-") else 1
    tokens = [_position_token(doc[sort_key]) for doc in docs]
    if first:
        if len(tokens) == fetch:
            learned = tokens[-1]  # the window that held these holds a page and the margin
        elif complete and len(tokens) > limit:
            learned = tokens[limit]  # few matches in all: a window of one page and one more
        elif complete:
            learned = None  # everything fits on one page: no window needed
        else:
            learned = edge  # the window still held a page
        if learned != edge:
            cache.remember_page_edge(owner, shape, learned)
    return _page(docs, limit, binding, sort_key, _next_edge(tokens, limit, fetch, direction, complete))


def _sort_name(sort: str) -> str:
    """The SORT_KEYS entry of an API sort (`-due_at` has a key of its own)."""
    name = sort.lstrip("-")
    return "-due_at" if name == "due_at" and sort.startswith("-") else name


def _run_flat(plan: FlatPlan, fetch: int) -> list[dict[str, Any]] | None:
    if plan.empty:
        return None
    collection = tasks()
    if plan.residual:
        return list(collection.aggregate(plan.pipeline(fetch)))
    return list(collection.find(plan.indexed).sort(plan.sort).limit(fetch).batch_size(fetch))


def _next_edge(tokens: list[int], limit: int, fetch: int, direction: int, complete: bool) -> int | None:
    """The far edge of the next page's window, from the sort-key tokens of the fetched matches:
    exact when every remaining match was fetched, else extrapolated from their spacing to reach
    about `fetch` matches past the next page's start (half again, for uneven spacing)."""
    if len(tokens) <= limit:
        return None
    if complete:
        return tokens[-1]
    spacing = abs(tokens[-1] - tokens[0]) / max(len(tokens) - 1, 1)
    reach = math.ceil(spacing * fetch * 1.5)
    return int(min(max(tokens[limit - 1] + direction * reach, EDGE_MIN), EDGE_MAX))


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _position_token(value: Any) -> Any:
    """Sort key values in a cursor: dates as epoch milliseconds, ranks as they are."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - EPOCH) // timedelta(milliseconds=1)
    return value


def _position_value(token: Any, sort: str) -> Any:
    if not isinstance(token, int) or isinstance(token, bool):
        raise ValidationFailed(errors={"cursor": ["The cursor is invalid."]})
    return token if sort.lstrip("-") == "priority" else EPOCH + timedelta(milliseconds=token)


EDGE_MIN, EDGE_MAX = _position_token(NO_DUE_EARLIEST), _position_token(NO_DUE_LATEST)  # what dates can hold
