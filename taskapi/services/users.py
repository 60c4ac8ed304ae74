"""User administration: listing with keyset paging, role and activation changes."""

from __future__ import annotations

from bson import ObjectId

from taskapi import security
from taskapi.errors import Conflict, NotFound
from taskapi.models.user import User, utcnow
from taskapi.services.auth import parse_object_id
from taskapi.services.paging import decode_cursor, encode_cursor

CURSOR_SCOPE = "users"


def list_users(*, limit: int, cursor: str | None = None, email: str | None = None) -> tuple[list[User], str | None]:
    """A page of users by ascending id, optionally one exact email; returns (users, next_cursor)."""
    query_key = {"email": email.strip().lower() if email else None}
    query: dict = {}
    if query_key["email"]:
        query["email"] = query_key["email"]
    if cursor:
        (after,) = decode_cursor(CURSOR_SCOPE, query_key, cursor)
        query["_id"] = {"$gt": ObjectId(after)}
    users = list(User.objects(__raw__=query).order_by("id").limit(limit + 1))
    next_cursor = encode_cursor(CURSOR_SCOPE, query_key, [str(users[limit - 1].id)]) if len(users) > limit else None
    return users[:limit], next_cursor


NO_USER = "No user with this id."


def get_user(*, user_id: str) -> User:
    user = User.objects(id=parse_object_id(user_id, NO_USER)).first()
    if user is None:
        raise NotFound(NO_USER)
    return user


def update_user(*, actor: User, user_id: str, role: str | None = None, active: bool | None = None) -> User:
    """Change role and/or active; deactivation revokes every token of that user at once."""
    user = get_user(user_id=user_id)
    if user.id == actor.id and (role not in (None, "admin") or active is False):
        raise Conflict("Admins cannot demote or deactivate themselves; ask another admin.")
    changes = {}
    if role is not None:
        changes["set__role"] = user.role = role
    if active is not None:
        changes["set__active"] = user.active = active
    if changes:
        user.updated_at = changes["set__updated_at"] = utcnow()
        User.objects(id=user.id).update_one(**changes)
    if active is False:
        security.revoke_all_tokens(str(user.id))
    return user


def create_admin(*, email: str, password: str) -> tuple[User, bool]:
    """Create an admin, or promote (and re-activate) an existing account; returns (user, created)."""
    user = User.objects(email=email).first()
    if user is None:
        user = User(email=email, role="admin", password_hash=security.hash_password(password))
        user.save(force_insert=True)
        return user, True
    User.objects(id=user.id).update_one(set__role="admin", set__active=True, set__updated_at=utcnow())
    user.reload()
    return user, False
