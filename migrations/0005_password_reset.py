"""Password reset: the one working token of an account is found by its hash (sparse: only
accounts with a reset under way have one)."""

from pymongo import ASCENDING


def upgrade(db):
    db.users.create_index([("password_reset.hash", ASCENDING)], sparse=True, name="password_reset_hash")
