"""Flask CLI: `flask --app wsgi db upgrade|status`, `flask --app wsgi users create-admin`."""

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


users_cli = AppGroup("users", help="User administration.")


@users_cli.command("create-admin")
@click.option("--email", required=True, help="The admin's email (created if new, promoted if it exists).")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Password for a new account (8..128 characters); an existing account keeps its own.")
def users_create_admin(email: str, password: str) -> None:
    """Create an admin account, or promote (and re-activate) an existing one."""
    from marshmallow import ValidationError

    from taskapi.schemas.auth import RegisterSchema
    from taskapi.services.users import create_admin

    try:
        data = RegisterSchema().load({"email": email, "password": password})
    except ValidationError as exc:
        for field, messages in exc.messages.items():
            click.echo(f"error: {field}: {' '.join(messages)}", err=True)
        raise SystemExit(2) from None
    user, created = create_admin(email=data["email"], password=data["password"])
    if created:
        click.echo(f"created admin {user.email} ({user.id})")
    else:
        click.echo(f"promoted {user.email} ({user.id}) to admin; its password is unchanged")


def register(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(users_cli)
