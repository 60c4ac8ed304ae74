"""Stats: dashboard numbers and completion series, cached with read-your-writes."""

from __future__ import annotations

from taskapi.models.user import utcnow
from taskapi.schemas.stats import CompletionsQuerySchema, CompletionsSchema, DashboardQuerySchema, DashboardSchema
from taskapi.security import current_user_id
from taskapi.services import stats
from taskapi.services.auth import require_admin
from taskapi.services.cache import cached_json
from taskapi.web import Blueprint

blp = Blueprint("stats", __name__, description="Dashboard numbers for the caller (or everyone, for admins).")
dashboard_schema, completions_schema = DashboardSchema(), CompletionsSchema()


@blp.route("/dashboard", methods=["GET"])
@blp.auth_required()
@blp.arguments(DashboardQuerySchema(), location="query")
@blp.response(200, DashboardSchema(), headers={"X-Cache": {"description": "HIT or MISS", "schema": {"type": "string"}}})
@blp.problem(403, "scope=global needs the admin role.")
def dashboard(query):
    """Counts by status and priority, due and overdue work, completion rate (UTC)."""
    if query["scope"] == "global":
        require_admin()  # the role comes from the database, so a demotion applies at once
        return cached_json("dashboard", None, query,
                           lambda: dashboard_schema.dump(stats.dashboard(owner=None, now=utcnow())))
    owner = current_user_id()
    return cached_json("dashboard", owner, query,
                       lambda: dashboard_schema.dump(stats.dashboard(owner=owner, now=utcnow())))


@blp.route("/completions", methods=["GET"])
@blp.auth_required()
@blp.arguments(CompletionsQuerySchema(), location="query")
@blp.response(200, CompletionsSchema(), headers={"X-Cache": {"description": "HIT or MISS", "schema": {"type": "string"}}})
def completions(query):
    """Tasks created and completed per UTC day, ending today, oldest first."""
    owner = current_user_id()
    return cached_json("completions", owner, query,
                       lambda: completions_schema.dump(stats.completions(owner=owner, now=utcnow(), **query)))
