"""Auth: registration, login, token refresh and revocation, the caller's own account."""

from taskapi.web import Blueprint

blp = Blueprint("auth", __name__, description="Registration, tokens and the caller's account.")
