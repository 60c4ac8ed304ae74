"""Admin: user management (the admin role, which the token carries; a role change revokes every
token of that user, so a demotion applies on the next request)."""

from __future__ import annotations

from taskapi.http.auth import current_user_id
from taskapi.http.blueprint import Blueprint
from taskapi.http.headers import next_link
from taskapi.schemas.auth import AdminUserPatchSchema, UserPageSchema, UserQuerySchema, UserSchema
from taskapi.services import users

blp = Blueprint("users", __name__, description="User administration; admins only (403 for others).")


@blp.route("", methods=["GET"])
@blp.auth_required(role="admin")
@blp.arguments(UserQuerySchema(), location="query")
@blp.response(200, UserPageSchema(), headers={"Link": {"description": 'rel="next" page', "schema": {"type": "string"}}})
def list_users(query):
    """Users by ascending id, keyset-paged; `email` filters to one exact address.

    Admins only. Follow `next_cursor` (or the `Link: rel="next"` header) for the next page;
    `null` on the last one.
    """
    items, cursor = users.list_users(**query)
    return {"items": items, "next_cursor": cursor}, 200, next_link(cursor)


@blp.route("/<id:user_id>", methods=["GET"])
@blp.auth_required(role="admin")
@blp.response(200, UserSchema())
@blp.problem(404, "No user with this id.")
def get_user(user_id):
    """One user.

    Admins only. The account as the user sees it in `/auth/me`: no password hash, no token
    state.
    """
    return users.get_user(user_id=user_id)


@blp.route("/<id:user_id>", methods=["PATCH"])
@blp.auth_required(role="admin")
@blp.arguments(AdminUserPatchSchema())
@blp.response(200, UserSchema())
@blp.problem(404, "No user with this id.")
@blp.problem(409, "Admins cannot demote or deactivate themselves, nor the last active admin.")
def update_user(body, user_id):
    """Change a user's role or active flag; either change revokes all their tokens at once.

    The last active admin can be neither demoted nor deactivated (409)."""
    return users.update_user(actor_id=current_user_id(), user_id=user_id, **body)
