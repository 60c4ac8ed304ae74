"""Stats: dashboard numbers and completion series, cached with read-your-writes."""

from __future__ import annotations

import functools

from taskapi.clock import utcnow
from taskapi.http.auth import current_user_id, require_role
from taskapi.http.blueprint import Blueprint
from taskapi.http.caching import cached
from taskapi.schemas.stats import CompletionsQuerySchema, CompletionsSchema, DashboardQuerySchema, DashboardSchema
from taskapi.services import stats

blp = Blueprint("stats", __name__, description="Dashboard numbers for the caller (or everyone, for admins).")
X_CACHE = {"X-Cache": {"description": "HIT or MISS", "schema": {"type": "string"}}}


def is_global(query) -> bool:
    return query["scope"] == "global"


def admin_for_global_scope(view):
    """scope=global needs the admin role (checked before the cache is read)."""
    @functools.wraps(view)
    def guarded(query, *args, **kwargs):
        if is_global(query):
            require_role("admin")
        return view(query, *args, **kwargs)

    return guarded


@blp.route("/dashboard", methods=["GET"])
@blp.auth_required()
@blp.arguments(DashboardQuerySchema(), location="query")
@admin_for_global_scope
@cached("dashboard", shared=is_global)
@blp.response(200, DashboardSchema(), headers=X_CACHE)
@blp.problem(403, "scope=global needs the admin role.")
def dashboard(query):
    """Counts by status and priority, due and overdue work, completion rate (UTC).

    For the caller's tasks, or every user's with `scope=global` (admins only; then also the
    number of users). Open means not done; overdue is open with a due date in the past. Cached
    per user with read-your-writes (`X-Cache`).
    """
    return stats.dashboard(owner=None if is_global(query) else current_user_id(), now=utcnow())


@blp.route("/completions", methods=["GET"])
@blp.auth_required()
@blp.arguments(CompletionsQuerySchema(), location="query")
@cached("completions")
@blp.response(200, CompletionsSchema(), headers=X_CACHE)
def completions(query):
    """Tasks created and completed per UTC day, ending today, oldest first.

    `days` days (1 to 365, default 30), every day present, zero when nothing happened. Cached
    per user with read-your-writes (`X-Cache`).
    """
    return stats.completions(owner=current_user_id(), now=utcnow(), **query)
