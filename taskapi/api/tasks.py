"""Tasks: the caller's own tasks, with ETags, conditional writes and idempotent create."""

from __future__ import annotations

from flask import request, url_for

from taskapi.http.auth import current_user_id
from taskapi.http.blueprint import Blueprint
from taskapi.http.caching import cached
from taskapi.http.headers import etag_header, next_link, not_modified
from taskapi.schemas.tasks import TaskInputSchema, TaskPageSchema, TaskPatchSchema, TaskQuerySchema, TaskSchema
from taskapi.services import tasks as service

blp = Blueprint("tasks", __name__, description="The caller's tasks. Other users' tasks are invisible (404).")

ETAG_HEADER = {"ETag": {"description": 'Entity tag of this version, e.g. "v3".', "schema": {"type": "string"}}}
IF_MATCH = {"in": "header", "name": "If-Match", "required": False, "schema": {"type": "string"},
            "description": 'Only act if the task is still at this ETag (412 otherwise); `*` matches any. '
                           'The weak form (`W/"v3"`, what a compressing proxy hands out) matches too: '
                           'tags name versions, not bytes (a deliberate departure from RFC 9110\'s strong '
                           'comparison, so conditional updates work behind gzip).'}
IF_NONE_MATCH = {"in": "header", "name": "If-None-Match", "required": False, "schema": {"type": "string"},
                 "description": "304 Not Modified if the task is still at this ETag."}


def precondition() -> service.Precondition | None:
    return service.Precondition(request.if_match) if "If-Match" in request.headers else None


def etag(task: dict) -> dict[str, str]:
    return etag_header(service.etag_for(task["version"]))


@blp.route("", methods=["POST"])
@blp.auth_required()
@blp.arguments(TaskInputSchema())
@blp.idempotent()
@blp.response(201, TaskSchema(), headers={**ETAG_HEADER, "Location": {"schema": {"type": "string"}}})
@blp.problem(400, "Malformed body, or an Idempotency-Key over 255 characters.")
@blp.problem(409, "A request with this Idempotency-Key is still in flight, or the task quota is reached.")
def create_task(body):
    """Create a task. With `Idempotency-Key`, a retry replays the first response (`Idempotent-Replayed: true`).

    Each user may keep up to TASKS_MAX_PER_USER tasks (default 50 000; 409 beyond). The most
    recent IDEMPOTENCY_MAX_KEYS_PER_USER keys (default 1 000) are remembered for 24 h."""
    task = service.create_task(owner=current_user_id(), data=body)
    return task, 201, {"Location": url_for("tasks.get_task", task_id=str(task["_id"])), **etag(task)}


@blp.route("", methods=["GET"])
@blp.auth_required()
@blp.arguments(TaskQuerySchema(), location="query")
@cached("tasks")
@blp.response(200, TaskPageSchema(), headers={"Link": {"description": 'rel="next" page', "schema": {"type": "string"}},
                                            "X-Cache": {"description": "HIT or MISS", "schema": {"type": "string"}}})
def list_tasks(query):
    """The caller's tasks, filtered and sorted, keyset-paged (`next_cursor`, `Link: rel="next"`).

    Pages are cached per user and query for CACHE_TTL_SECONDS; any write by the user makes
    their next read fresh (`X-Cache: HIT|MISS` tells which).
    """
    filters = dict(query)
    limit, cursor, sort = filters.pop("limit"), filters.pop("cursor", None), filters.pop("sort")
    items, next_cursor = service.list_tasks(owner=current_user_id(), filters=filters, sort=sort, limit=limit,
                                            cursor=cursor)
    return {"items": items, "next_cursor": next_cursor}, 200, next_link(next_cursor)


@blp.route("/<id:task_id>", methods=["GET"])
@blp.auth_required()
@blp.response(200, TaskSchema(), headers=ETAG_HEADER)
@blp.alt_response(304, description="Not modified: the task is still at the If-None-Match ETag.")
@blp.problem(404, "No such task for the caller (unknown, malformed or another user's id).")
@blp.doc(parameters=[IF_NONE_MATCH])
def get_task(task_id):
    """One task, with its ETag.

    `ETag` names the task's version (`"v3"`); send it back as `If-None-Match` to get 304 while
    the task is unchanged, or as `If-Match` with a write. Another user's task is a 404, exactly
    like an unknown id.
    """
    task = service.get_task(owner=current_user_id(), task_id=task_id)
    tag = service.etag_for(task["version"])
    if request.if_none_match.star_tag or request.if_none_match.contains_weak(tag):
        return not_modified(tag)
    return task, 200, etag_header(tag)


@blp.route("/<id:task_id>", methods=["PATCH"])
@blp.auth_required()
@blp.arguments(TaskPatchSchema())
@blp.response(200, TaskSchema(), headers=ETAG_HEADER)
@blp.problem(404, "No such task for the caller.")
@blp.problem(412, "If-Match does not match the task's current ETag.")
@blp.doc(parameters=[IF_MATCH])
def patch_task(body, task_id):
    """Change some fields; `version` grows by one if anything changed.

    Only the fields sent change; server-owned fields (id, owner, version, timestamps) are
    refused by name. With `If-Match`, a task changed since is a 412. A PATCH that changes
    nothing writes nothing and keeps the version.
    """
    task = service.update_task(owner=current_user_id(), task_id=task_id, changes=body, precondition=precondition())
    return task, 200, etag(task)


@blp.route("/<id:task_id>", methods=["PUT"])
@blp.auth_required()
@blp.arguments(TaskInputSchema())
@blp.response(200, TaskSchema(), headers=ETAG_HEADER)
@blp.problem(404, "No such task for the caller.")
@blp.problem(412, "If-Match does not match the task's current ETag.")
@blp.doc(parameters=[IF_MATCH])
def put_task(body, task_id):
    """Replace every writable field: `title` is required, omitted fields reset to their defaults.

    Like PATCH, but the body is the whole task: description, status, priority, due date and tags
    not sent go back to their defaults. `If-Match` protects against lost updates.
    """
    task = service.update_task(owner=current_user_id(), task_id=task_id, changes=body, replace=True,
                               precondition=precondition())
    return task, 200, etag(task)


@blp.route("/<id:task_id>", methods=["DELETE"])
@blp.auth_required()
@blp.response(204)
@blp.problem(404, "No such task for the caller.")
@blp.problem(412, "If-Match does not match the task's current ETag.")
@blp.doc(parameters=[IF_MATCH])
def delete_task(task_id):
    """Delete a task.

    204 once the task is gone; a second DELETE is a 404. With `If-Match`, a task changed since
    is kept and the answer is 412.
    """
    service.delete_task(owner=current_user_id(), task_id=task_id, precondition=precondition())
