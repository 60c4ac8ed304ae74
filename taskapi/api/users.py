"""Admin: user management (role admin only)."""

from taskapi.web import Blueprint

blp = Blueprint("users", __name__, description="User administration; admins only.")
