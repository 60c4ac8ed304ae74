"""Flask CLI: `db upgrade|status|shard`, `keys rotate|ensure|list`, `users create-admin|delete|announce`, `seed`,
`openapi export|postman`, `worker`."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from taskapi.cli import migrate
from taskapi.extensions import get_db

db_cli = AppGroup("db", help="Database migrations.")


def needs_servers(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command that needs these servers ("mongodb", "redis"): when one is not there, say so in
    one line (and where it was looked for) instead of a driver's traceback after its timeout."""
    def decorator(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def checked(*args: Any, **kwargs: Any) -> Any:
            require_servers(*names)
            return command(*args, **kwargs)

        return checked

    return decorator


def require_servers(*names: str) -> None:
    from taskapi.services.health import unreachable

    config = current_app.config
    servers = {"mongodb": ("MongoDB", config["MONGODB_URI"], "MONGODB_URI"),
               "redis": ("Redis", config["REDIS_URL"], "REDIS_URL")}
    with _quiet("taskapi.health"):  # the one line below says it all
        down = [servers[name] for name in unreachable(*names)]
    if down:
        where = ", ".join(f"{label} at {without_credentials(url)}" for label, url, _ in down)
        settings = " / ".join(setting for _, _, setting in down)
        click.echo(f"error: cannot reach {where}: start `make run` (it starts the embedded servers) "
                   f"or set {settings} (EMBEDDED_*_PORT for other embedded ports)", err=True)
        raise SystemExit(1)


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    saved, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = saved


def without_credentials(url: str) -> str:
    """The URL with any password masked (`redis://:secret@host`, `mongodb://user:secret@host`)."""
    masked = re.sub(r"//([^/@]*)@", lambda m: "//" + (m.group(1).split(":")[0] + ":***" if ":" in m.group(1)
                                                        else "***") + "@", url)
    return re.sub(r"(sentinel_password=)[^&]*", r"\1***", masked)


@db_cli.command("upgrade")
@needs_servers("mongodb")  # migrations touch MongoDB only
def db_upgrade() -> None:
    """Apply pending migrations in order (safe to run twice)."""
    applied = migrate.upgrade(get_db())
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo("database is up to date")


@db_cli.command("status")
@needs_servers("mongodb")
def db_status() -> None:
    """List migrations, applied (with time) and pending."""
    for name, applied_at in migrate.status(get_db()):
        state = f"applied {applied_at:%Y-%m-%dT%H:%M:%SZ}" if applied_at else "pending"
        click.echo(f"{name}  {state}")


@db_cli.command("shard")
@needs_servers("mongodb")
def db_shard() -> None:
    """Shard this service's collections on a sharded cluster (MONGODB_URI names a mongos), with the
    keys of models.SHARD_KEYS; safe to run again. Anywhere else it refuses and changes nothing."""
    from pymongo.errors import OperationFailure

    from taskapi.models import SHARD_KEYS

    db = get_db()
    if db.client.admin.command("hello").get("msg") != "isdbgrid":
        click.echo("error: db shard needs a sharded cluster: MONGODB_URI must name a mongos, and it names a "
                   "replica set or a single server; nothing was changed", err=True)
        raise SystemExit(1)
    service = current_app.config["TASKAPI_SERVICE"]
    keys = {name: key for side, owned in SHARD_KEYS.items() if service in (side, "all") for name, key in owned.items()}
    db.client.admin.command("enableSharding", db.name)
    for name, key in keys.items():
        namespace = f"{db.name}.{name}"
        found = db.client["config"]["collections"].find_one({"_id": namespace, "dropped": {"$ne": True},
                                                             "unsplittable": {"$ne": True}, "key": {"$exists": True}})
        if found is not None:
            if dict(found["key"]) != key:
                click.echo(f"error: {name} is sharded on {dict(found['key'])}, not {key}; left as it is", err=True)
                raise SystemExit(1)
            click.echo(f"{name}: sharded already")
            continue
        try:  # a collection with data needs the shard key's index first
            db[name].create_index(list(key.items()), name="shard_key")
        except OperationFailure as exc:
            if exc.code not in (85, 86):  # the same keys exist under another name: that index serves
                raise
        db.client.admin.command("shardCollection", namespace, key=key)
        click.echo(f"{name}: sharded on {key}")
    click.echo("users, account_events and mails stay unsharded, on the primary shard")


users_cli = AppGroup("users", help="User administration.")


def require_users_here() -> None:
    """Users live in the auth service's database: refuse at a tasks service, in one line."""
    if current_app.config["TASKAPI_SERVICE"] == "tasks":
        raise click.ClickException("users live in the auth service's database: run this with TASKAPI_SERVICE=auth "
                                   "and the auth service's MONGODB_URI (or in the monolith, TASKAPI_SERVICE=all)")


@users_cli.command("create-admin")
@click.option("--email", required=True, help="The admin's email (created if new, promoted if it exists).")
@click.option("--password", help="Password for a new account (8..128 characters; asked for when not given); "
                                  "an existing account keeps its own.")
def users_create_admin(email: str, password: str | None) -> None:
    """Create an admin account, or promote (and re-activate) an existing one."""
    from marshmallow import ValidationError

    from taskapi.schemas.auth import RegisterSchema
    from taskapi.services.users import create_admin

    require_users_here()
    require_servers("mongodb", "redis")  # before asking for a password (promotion revokes tokens)
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        data = RegisterSchema().load({"email": email, "password": password})
    except ValidationError as exc:
        for field, messages in exc.messages_dict.items():
            click.echo(f"error: {field}: {' '.join(messages)}", err=True)
        raise SystemExit(2) from None
    user, created = create_admin(email=data["email"], password=data["password"])
    if created:
        click.echo(f"created admin {user['email']} ({user['_id']})")
    else:
        click.echo(f"promoted {user['email']} ({user['_id']}) to admin; its password is unchanged")


@users_cli.command("delete")
@click.option("--email", help="The account to erase.")
@click.option("--id", "user_id", help="The account to erase, by id.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@needs_servers("mongodb", "redis")  # revoking tokens needs Redis
def users_delete(email: str | None, user_id: str | None, yes: bool) -> None:
    """Erase an account: revoke its tokens first, then delete its tasks and records, then the user."""
    from taskapi.errors import ApiError
    from taskapi.models.user import users
    from taskapi.services.users import delete_user

    require_users_here()
    if bool(email) == bool(user_id):
        raise click.UsageError("give exactly one of --email and --id")
    found = users().find_one({"email": email.strip().lower()}, {"_id": 1}) if email else None
    target = str(found["_id"]) if found else user_id
    if target is None:
        click.echo(f"error: no user with email {email}", err=True)
        raise SystemExit(1)
    if not yes:
        click.confirm(f"Erase {email or user_id} and all their data?", abort=True)
    try:
        removed = delete_user(user_id=target)
    except ApiError as exc:
        click.echo(f"error: {exc.detail}", err=True)
        raise SystemExit(1) from None
    if removed is None:  # the auth service: the tasks service erases the data when the announcement arrives
        click.echo(f"deleted {email or user_id} ({target}): tokens revoked; the tasks service erases its tasks "
                   "and webhooks when its worker gets the announcement")
    else:
        click.echo(f"deleted {email or user_id} ({target}): tokens revoked, {removed['tasks']} tasks erased")


@users_cli.command("announce")
@needs_servers("mongodb")
def users_announce() -> None:
    """Announce every account to the tasks service again: after giving it a database of its own,
    or after a monolith upgrade during which older replicas still ran. Safe at any time."""
    from taskapi.services.auth import announce_all

    require_users_here()
    count = announce_all()
    where = ("applied to the members copy" if current_app.config["TASKAPI_SERVICE"] == "all"
             else "queued for the auth worker to relay")
    click.echo(f"announced {count} accounts ({where})")


@click.command("seed")
@with_appcontext
@click.option("--users", type=click.IntRange(1, 100_000), default=3, show_default=True, help="Users to create or reuse.")
@click.option("--tasks", type=click.IntRange(0, 1_000_000), default=100, show_default=True,
              help="Tasks added to EACH user (--users 10 --tasks 10000 makes 100 000).")
@click.option("--password", default="demo password", show_default=True, help="Password of created users.")
@click.option("--email-pattern", default="demo{n}@example.com", show_default=True, help="{n} is 1..users.")
@click.option("--seed", "seed_value", type=int, default=42, show_default=True, help="Random seed (repeatable data).")
@needs_servers("mongodb", "redis")
def seed_command(users: int, tasks: int, password: str, email_pattern: str, seed_value: int) -> None:
    """Demo data: users with a realistic spread of tasks, bulk-inserted."""
    import time

    from taskapi.services.seed import seed

    if "{n}" not in email_pattern:
        raise click.BadParameter("must contain {n}", param_hint="--email-pattern")
    if current_app.config["TASKAPI_SERVICE"] != "all":
        raise click.ClickException("seed writes users and tasks together: run it with TASKAPI_SERVICE=all "
                                   "(a development database), not against one service of a split deployment")
    started = time.perf_counter()
    with click.progressbar(length=users * tasks, label="seeding tasks", file=None) as bar:
        result = seed(users=users, tasks_per_user=tasks, password=password, email_pattern=email_pattern,
                      seed_value=seed_value, progress=bar.update,
                      stage=lambda name: click.echo(f"\n{name} (the collection was empty: indexes are built after the load)"))
    elapsed = time.perf_counter() - started
    click.echo(f"{result['tasks_inserted']} tasks for {users} users ({result['users_created']} new) "
               f"in {elapsed:.1f} s; users log in with password {password!r}")


openapi_cli = AppGroup("openapi", help="The OpenAPI document and what is made from it.")
COLLECTION = "docs/taskapi.postman_collection.json"


def spec_document(app: Flask) -> dict:
    from taskapi.http.api import get_api

    return get_api(app).spec.to_dict()


@openapi_cli.command("export")
@click.option("--output", "-o", default="openapi.json", show_default=True, help="File to write ('-': stdout).")
def openapi_export(output: str) -> None:
    """Write the OpenAPI document (what /openapi.json serves)."""
    _write(output, spec_document(current_app))


@openapi_cli.command("postman")
@click.option("--output", "-o", default=COLLECTION, show_default=True, help="File to write ('-': stdout).")
def openapi_postman(output: str) -> None:
    """Generate the Postman v2.1 collection from the OpenAPI document."""
    from taskapi.cli.postman import build_collection

    _write(output, build_collection(spec_document(current_app)))


def _write(output: str, document: dict) -> None:
    import json

    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output == "-":
        click.echo(text, nl=False)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    click.echo(f"wrote {path}")


@click.command("worker")
@click.option("--concurrency", type=click.IntRange(1, 256), default=None,
              help="Deliveries in flight at once (default WORKER_CONCURRENCY, 8).")
@click.option("--loglevel", default="INFO", show_default=True, help="Celery's log level.")
@with_appcontext
@needs_servers("mongodb", "redis")
def worker_command(concurrency: int | None, loglevel: str) -> None:
    """Run the notification service in the foreground: relay events, deliver webhooks, fire
    reminders, send mail (SIGTERM: finish what is in flight, then exit). Run as many as needed."""
    import os

    from config import ConfigError
    from taskapi.worker import broker_url, run_worker

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.config["ENV_NAME"] == "production" and not os.environ.get("BROKER_URL", "").strip():
        click.echo("error: BROKER_URL must be set when TASKAPI_ENV=production (amqp://user:password@host:5672/vhost "
                   "for RabbitMQ)", err=True)
        raise SystemExit(1)
    try:
        broker_url(app.config["BROKER_URL"])  # a broker the worker cannot reach as configured: one line
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    run_worker(app, concurrency=concurrency or app.config["WORKER_CONCURRENCY"], loglevel=loglevel)


keys_cli = AppGroup("keys", help="Token signing keys (JWT_ALGORITHM=RS256 or ES256).")


@keys_cli.command("rotate")
@click.option("--algorithm", type=click.Choice(["RS256", "ES256"]), default=None,
              help="The key's kind; default: JWT_ALGORITHM.")
@with_appcontext
def keys_rotate_command(algorithm: str | None) -> None:
    """Add a new private key to JWT_PRIVATE_KEYS; it signs after a reload (SIGHUP to gunicorn).

    Tokens signed by the older keys keep verifying until they expire; remove an old key's file
    once REFRESH_TOKEN_TTL_SECONDS have passed since the rotation (then reload again).
    """
    from taskapi.services import keys

    config = current_app.config
    algorithm = algorithm or config["JWT_ALGORITHM"]
    if algorithm not in keys.ASYMMETRIC:
        raise click.ClickException(f"JWT_ALGORITHM is {algorithm}: tokens are HMAC-signed with JWT_SECRET_KEY. "
                                   "Set JWT_ALGORITHM=RS256 or ES256 (or pass --algorithm).")
    if not config["JWT_PRIVATE_KEYS"]:
        raise click.ClickException("JWT_PRIVATE_KEYS is not set: name the directory the keys live in.")
    key = keys.add_key(config["JWT_PRIVATE_KEYS"], algorithm)
    click.echo(f"added {key.path} ({algorithm}, kid {key.kid})")
    click.echo("after a reload (kill -HUP <gunicorn master pid> on every auth instance) it is published at once "
               f"and signs {config['JWT_KEY_ACTIVATION_SECONDS']} s after it was added (JWT_KEY_ACTIVATION_SECONDS)")


@keys_cli.command("ensure")
@with_appcontext
def keys_ensure_command() -> None:
    """A first key when JWT_PRIVATE_KEYS holds none (boot.sh): made by one process, under a lock
    on the directory, however many replicas start at once; nothing when a key is there."""
    from taskapi.services import keys

    config = current_app.config
    if config["JWT_ALGORITHM"] not in keys.ASYMMETRIC or config["JWKS_URL"] or not config["JWT_PRIVATE_KEYS"]:
        click.echo("no signing key needed here (HS256, or a service that verifies with JWKS_URL)")
        return
    key = keys.ensure_key(config["JWT_PRIVATE_KEYS"], config["JWT_ALGORITHM"])
    click.echo(f"added {key.path} ({config['JWT_ALGORITHM']}, kid {key.kid})" if key
               else f"{config['JWT_PRIVATE_KEYS']} holds a key already")


@keys_cli.command("list")
@with_appcontext
def keys_list_command() -> None:
    """The keys of JWT_PRIVATE_KEYS as a reload would use them: the newest signs, all verify."""
    from taskapi.services import keys

    config = current_app.config
    try:
        ring = keys.load_keyring(config["JWT_PRIVATE_KEYS"], config["JWT_ALGORITHM"], config["JWT_KEY_ACTIVATION_SECONDS"])
    except keys.UnusableKey as exc:
        raise click.ClickException(str(exc)) from None
    for key in reversed(ring.keys):
        click.echo(f"{key.kid}  {'signs+verifies' if key is ring.signer else 'verifies'}  {key.path}")


def register_commands(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(keys_cli)
    app.cli.add_command(users_cli)
    app.cli.add_command(seed_command)
    app.cli.add_command(openapi_cli)
    app.cli.add_command(worker_command)
