"""Stats: dashboard numbers and completion series."""

from taskapi.web import Blueprint

blp = Blueprint("stats", __name__, description="Dashboard numbers for the caller (or everyone, for admins).")
