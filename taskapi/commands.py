"""Flask CLI: `flask --app wsgi db upgrade|status` (more commands join as features land)."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from taskapi import migrate
from taskapi.extensions import get_db

db_cli = AppGroup("db", help="Database migrations.")


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations in order (safe to run twice)."""
    applied = migrate.upgrade(get_db())
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo("database is up to date")


@db_cli.command("status")
def db_status() -> None:
    """List migrations, applied (with time) and pending."""
    for name, applied_at in migrate.status(get_db()):
        state = f"applied {applied_at:%Y-%m-%dT%H:%M:%SZ}" if applied_at else "pending"
        click.echo(f"{name}  {state}")


def register(app: Flask) -> None:
    app.cli.add_command(db_cli)
