"""Accounts: registration, authentication, profile and password changes."""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from mongoengine.errors import NotUniqueError

from taskapi.clock import utcnow
from taskapi.errors import Conflict, Unauthorized, ValidationFailed
from taskapi.ids import parse_token_subject
from taskapi.models.user import User
from taskapi.services import tokens

BAD_CREDENTIALS = "The email or password is incorrect."


def register(*, email: str, password: str, name: str = "") -> User:
    user = User(email=email, name=name, password_hash=tokens.hash_password(password))
    try:
        user.save(force_insert=True)
    except NotUniqueError:
        raise Conflict("An account with this email already exists.") from None
    return user


def authenticate(*, email: str, password: str) -> tuple[User, int]:
    """The user for these credentials and the token generation to issue with.

    Unknown email, wrong password and a deactivated account all raise the same 401, after the
    same argon2 work. The generation is read before the (slow) verification and the account
    is read again after it: a password change, logout-all or deactivation that lands while the
    hash is being checked either bumps a generation this login's tokens already carry, or is
    seen by the second read. Either way no token outlives it.
    """
    user = User.objects(email=email).first()
    if user is None:
        tokens.burn_verify_time(password)
        raise Unauthorized(BAD_CREDENTIALS, error=None)
    generation = tokens.token_generation(str(user.id), user.token_gen)
    if not tokens.verify_password(user.password_hash, password) or not user.active:
        raise Unauthorized(BAD_CREDENTIALS, error=None)
    now = User.objects(id=user.id).only("password_hash", "active", "token_gen", "role").first()
    if now is None or now.password_hash != user.password_hash or not now.active or now.token_gen > generation:
        raise Unauthorized(BAD_CREDENTIALS, error=None)
    if tokens.needs_rehash(user.password_hash):
        # Parameters changed since this hash was made: upgrade it while we hold the password.
        User.objects(id=user.id, password_hash=user.password_hash).update_one(
            set__password_hash=tokens.hash_password(password))
    return user, generation


def refresh(claims: dict[str, Any]) -> dict[str, Any]:
    """Rotate the session, after reading the account again: a deleted, deactivated or revoked
    account cannot refresh, even if its Redis state was lost."""
    user = User.objects(id=parse_token_subject(claims["sub"])).only("active", "token_gen", "role").first()
    if user is None or not user.active or user.token_gen > claims["gen"]:
        tokens.end_session(claims["sid"])
        raise Unauthorized("The token's account is not available.")
    tokens.token_generation(claims["sub"], user.token_gen)  # restore a lost mirror before rotating
    return tokens.rotate_session(claims, role=user.role)


def revoke_and_update(user_id: ObjectId, durable_generation: int, **changes: Any) -> int:
    """Revoke every token of the user, then store `changes` with the new generation.

    Revocation first: if Redis refuses, the RedisError (503) leaves everything as it was; if
    MongoDB then fails, the tokens are revoked and the change is not stored (stronger than
    the write, never weaker). Returns the new generation.
    """
    generation = tokens.revoke_all_tokens(str(user_id), durable_generation)
    User.objects(id=user_id).update_one(__raw__={"$set": {**changes, "updated_at": utcnow()},
                                                 "$max": {"token_gen": generation}})
    return generation


def logout_all(*, user_id: str) -> None:
    """Every token of the user, on every device, stops working now."""
    user = User.objects(id=parse_token_subject(user_id)).only("token_gen").first()
    if user is None:
        raise Unauthorized("The token's account is not available.")
    revoke_and_update(user.id, user.token_gen)


def current_user(user_id: str) -> User:
    """The caller's account, loaded only by routes that need more than the token says."""
    user = User.objects(id=parse_token_subject(user_id)).first()
    if user is None or not user.active:
        raise Unauthorized("The token's account is not available.")
    return user


def update_profile(*, user: User, name: str) -> User:
    now = utcnow()
    User.objects(id=user.id).update_one(set__name=name, set__updated_at=now)
    user.name, user.updated_at = name, now
    return user


def change_password(*, user: User, current_password: str, new_password: str) -> None:
    """Verify, revoke every token of the user (this one included), then store the new hash."""
    if not tokens.verify_password(user.password_hash, current_password):
        raise ValidationFailed(errors={"current_password": ["The current password is incorrect."]})
    if current_password == new_password:
        raise ValidationFailed(errors={"new_password": ["The new password must differ from the current one."]})
    revoke_and_update(user.id, user.token_gen, password_hash=tokens.hash_password(new_password))
