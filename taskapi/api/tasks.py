"""Tasks: the caller's own tasks."""

from taskapi.web import Blueprint

blp = Blueprint("tasks", __name__, description="The caller's tasks.")
