"""Users: email is unique (it is the login); admin listing pages by _id (built in)."""

from pymongo import ASCENDING


def upgrade(db):
    db.users.create_index([("email", ASCENDING)], unique=True, name="email_unique")
