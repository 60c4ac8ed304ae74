"""Flask CLI: `flask --app wsgi db upgrade|status`, `users create-admin`, `seed`."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

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


@click.command("seed")
@with_appcontext
@click.option("--users", type=click.IntRange(1, 100_000), default=3, show_default=True, help="Users to create or reuse.")
@click.option("--tasks", type=click.IntRange(0, 1_000_000), default=100, show_default=True, help="Tasks added per user.")
@click.option("--password", default="demo password", show_default=True, help="Password of created users.")
@click.option("--email-pattern", default="demo{n}@example.com", show_default=True, help="{n} is 1..users.")
@click.option("--seed", "seed_value", type=int, default=42, show_default=True, help="Random seed (repeatable data).")
def seed_command(users: int, tasks: int, password: str, email_pattern: str, seed_value: int) -> None:
    """Demo data: users with a realistic spread of tasks, bulk-inserted."""
    import time

    from taskapi.services.seed import seed

    if "{n}" not in email_pattern:
        raise click.BadParameter("must contain {n}", param_hint="--email-pattern")
    started = time.perf_counter()
    with click.progressbar(length=users * tasks, label="seeding tasks", file=None) as bar:
        result = seed(users=users, tasks_per_user=tasks, password=password, email_pattern=email_pattern,
                      seed_value=seed_value, progress=bar.update)
    elapsed = time.perf_counter() - started
    click.echo(f"{result['tasks_inserted']} tasks for {users} users ({result['users_created']} new) "
               f"in {elapsed:.1f} s; users log in with password {password!r}")


def register(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(users_cli)
    app.cli.add_command(seed_command)
