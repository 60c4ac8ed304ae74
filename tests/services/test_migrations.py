"""Migrations: numbered, applied once each in order, recorded; `db upgrade` twice changes nothing."""

from __future__ import annotations

import textwrap
from datetime import UTC

import pytest

from taskapi.cli import migrate
from taskapi.extensions import get_db


def write(directory, name, body):
    (directory / name).write_text(textwrap.dedent(body))


@pytest.fixture
def db(app):
    with app.app_context():
        database = get_db().client.get_database("taskapi_migration_test")
        yield database
        database.client.drop_database("taskapi_migration_test")


def test_applies_in_order_once_and_records(db, tmp_path):
    write(tmp_path, "0002_second.py", """
        def upgrade(db):
            assert db.steps.count_documents({}) == 1, "0001 must run first"
            db.steps.insert_one({"step": 2})
    """)
    write(tmp_path, "0001_first.py", """
        def upgrade(db):
            db.steps.insert_one({"step": 1})
    """)
    write(tmp_path, "notes.py", "raise SystemExit('not a migration')\n")
    assert [name for name, at in migrate.status(db, tmp_path)] == ["0001_first", "0002_second"]
    assert all(at is None for _, at in migrate.status(db, tmp_path))

    assert migrate.upgrade(db, tmp_path) == ["0001_first", "0002_second"]
    assert migrate.upgrade(db, tmp_path) == []  # twice changes nothing
    assert [d["step"] for d in db.steps.find().sort("step")] == [1, 2]
    assert all(at is not None for _, at in migrate.status(db, tmp_path))

    write(tmp_path, "0003_third.py", """
        def upgrade(db):
            db.steps.insert_one({"step": 3})
    """)
    assert migrate.status(db, tmp_path)[-1] == ("0003_third", None)
    assert migrate.upgrade(db, tmp_path) == ["0003_third"]
    assert db.steps.count_documents({}) == 3


def test_failed_step_is_not_recorded_and_is_retried(db, tmp_path):
    write(tmp_path, "0001_flaky.py", """
        def upgrade(db):
            if db.flags.count_documents({}) == 0:
                db.flags.insert_one({"tried": True})
                raise RuntimeError("first attempt fails")
            db.done.insert_one({"ok": True})
    """)
    with pytest.raises(RuntimeError):
        migrate.upgrade(db, tmp_path)
    assert migrate.status(db, tmp_path) == [("0001_flaky", None)]
    assert migrate.upgrade(db, tmp_path) == ["0001_flaky"]  # the lock was released
    assert db.done.count_documents({}) == 1


def test_duplicate_numbers_are_refused(db, tmp_path):
    write(tmp_path, "0001_a.py", "def upgrade(db):\n    pass\n")
    write(tmp_path, "0001_b.py", "def upgrade(db):\n    pass\n")
    with pytest.raises(RuntimeError, match="share the number"):
        migrate.upgrade(db, tmp_path)


def test_held_lock_blocks_a_second_upgrader(db, tmp_path):
    write(tmp_path, "0001_a.py", "def upgrade(db):\n    db.x.insert_one({})\n")
    from datetime import datetime

    db[migrate.LOCKS].insert_one({"_id": "upgrade", "taken_at": datetime.now(UTC)})
    with pytest.raises(RuntimeError, match="holds the migration lock"):
        migrate.upgrade(db, tmp_path, wait_seconds=0.5)
    assert db.x.count_documents({}) == 0


def test_cli_upgrade_and_status(runner):
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output or "applied" in result.output
    again = runner.invoke(args=["db", "upgrade"])
    assert again.output.strip() == "database is up to date"
    status = runner.invoke(args=["db", "status"])
    assert status.exit_code == 0
    names = [line.split()[0] for line in status.output.strip().splitlines()]
    assert names == [m.name for m in migrate.discover()]
    assert "pending" not in status.output
