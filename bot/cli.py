"""The `cobrabot` command: serve, db, demo, users, portal links, imports."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import Counter
from typing import TYPE_CHECKING, NoReturn

import click

from bot.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from bot.services import Services

logger = logging.getLogger(__name__)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc))


def _services() -> Services:
    """The real services with every enabled channel adapter registered."""
    from bot.services import bootstrap
    from channels import build_registry

    settings = _settings()
    return bootstrap(settings, registry=build_registry(settings))


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """Cobrabot: conversational collections over WhatsApp, SMS, Telegram, email and web chat."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The Twilio SDK logs every request's URL and headers at INFO: ids and noise, no value in production logs.
    logging.getLogger("twilio.http_client").setLevel(logging.DEBUG if verbose else logging.WARNING)


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (creates the SQLite file if needed)."""
    from bot.migrate import upgrade
    from bot.store import Database

    settings = _settings()
    Database(settings.database_url).dispose()  # creates ./instance/ for SQLite
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}")


def _local_url(host: str, port: int) -> str:
    """The URL a browser on this machine uses to reach `serve` (a wildcard bind is reached via loopback)."""
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{reachable}:{port}"


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64))
@click.option("--demo", is_flag=True, help="Migrate, load demo data and print the demo links first.")
@click.option("--no-jobs", is_flag=True, help="Do not run background jobs in this process.")
def serve(host: str, port: int, threads: int, demo: bool, no_jobs: bool) -> None:
    """Serve webhooks, portal, API and console (waitress; use gunicorn in production).

    Without COBRABOT_REDIS_URL the background jobs (sending, reminders) run in this process too;
    with Redis they belong to `cobrabot scheduler` and `cobrabot worker`.
    """
    from waitress import serve as waitress_serve

    from bot.app import create_app
    from bot.demo import prepare_demo
    from bot.scheduler import build_scheduler

    if demo:
        # The demo's Pay button settles invoices in test mode, so the whole payment loop can be tried locally.
        os.environ.setdefault("COBRABOT_SANDBOX_PAYMENTS", "true")
        # The printed portal links must open on the port this process serves, not the default 8000.
        os.environ.setdefault("COBRABOT_PUBLIC_URL", _local_url(host, port))
    settings = _settings()
    if demo:
        for line in prepare_demo(settings):
            click.echo(line)
        if settings.sandbox_payments:
            click.echo("  Payments: sandbox (the portal's Pay button settles invoices; no money moves)")
    services = _services()
    app = create_app(services=services)
    if not no_jobs and not settings.redis_url:
        jobs, _leader = build_scheduler(services, background=True)
        jobs.start()
        click.echo("background jobs running in-process")
        if settings.inbound_queue:
            _drain_inbox_in_background(services)
    click.echo(f"serving on http://{host}:{port}  (Ctrl+C to stop)")
    waitress_serve(app, host=host, port=port, threads=threads, ident="cobrabot")


def _drain_inbox_in_background(services: Services) -> threading.Event:
    """Embedded mode with the inbound queue on: one worker thread in this process (a daemon: it dies with it,
    and whatever it had not finished is claimed again on the next start). Set the returned event to stop it."""
    worker = services.inbox_worker()
    stop = threading.Event()
    threading.Thread(target=worker.run, args=(stop,), name="inbox", daemon=True).start()
    click.echo("inbox worker running in-process")
    return stop


@main.command()
def demo() -> None:
    """Migrate and load the demo creditor, debtors and admin login (idempotent)."""
    from bot.demo import prepare_demo

    for line in prepare_demo(_settings()):
        click.echo(line)


@main.command()
def scheduler() -> None:
    """Fire background jobs on their intervals (one active scheduler per Redis; in-process without it)."""
    from bot.scheduler import build_scheduler

    services = _services()
    jobs, leader = build_scheduler(services)
    mode = "leader election over Redis, jobs to Celery" if leader else "in-process"
    click.echo(f"scheduler running ({mode}); Ctrl+C to stop")
    try:
        jobs.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if leader is not None:
            leader.release()


@main.command()
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option("--queue", default=None, help="Redis queue to read and send tasks to (default: celery).")
def worker(concurrency: int, queue: str | None) -> None:
    """Run a Celery worker for the background jobs (needs COBRABOT_REDIS_URL)."""
    from bot.tasks import make_celery

    services = _services()
    if not services.settings.redis_url:
        _fail("the worker needs COBRABOT_REDIS_URL; without Redis, `cobrabot scheduler` runs the jobs in-process")
    app = make_celery(services, queue)
    app.worker_main(["worker", "--loglevel=INFO", f"--concurrency={concurrency}", "--without-gossip"])


@main.command("inbox-worker")
@click.option(
    "--threads",
    default=4,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Turns run side by side where a claim is not one transaction (SQLite, and a batch's fallbacks).",
)
@click.option(
    "--batch",
    default=32,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Senders per claim (on PostgreSQL one transaction).",
)
@click.option("--once", is_flag=True, help="Drain what is waiting now, then exit.")
def inbox_worker(threads: int, batch: int, once: bool) -> None:
    """Run the conversations of messages the webhooks queued (COBRABOT_INBOUND_QUEUE=true).

    Start as many as the load needs: on PostgreSQL workers claim disjoint senders and keep each sender's order.
    On SQLite run one.
    """
    import signal

    services = _services()
    if not services.settings.inbound_queue:
        click.echo("note: COBRABOT_INBOUND_QUEUE is off; webhooks run conversations themselves", err=True)
    worker = services.inbox_worker(batch_size=batch, threads=threads)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if once:
            totals = Counter[str]()
            while (report := worker.run_once()).claimed:
                totals.update(report.as_dict())
            click.echo(f"inbox drained: {dict(totals)}")
        else:
            click.echo(f"inbox worker running ({threads} threads, {batch} senders per claim); Ctrl+C to stop")
            worker.run(stop)
    except KeyboardInterrupt:
        pass
    finally:
        worker.close()
        services.database.dispose()


@main.group()
def portal() -> None:
    """Debtor portal links."""


@portal.command("link")
@click.option("--creditor", "creditor_slug", required=True, help="Creditor slug.")
@click.argument("external_ref")
def portal_link(creditor_slug: str, external_ref: str) -> None:
    """Print a fresh portal link for the debtor with EXTERNAL_REF."""
    from sqlalchemy import select

    from bot.models import Creditor, Debtor
    from bot.services import bootstrap

    services = bootstrap(_settings())
    with services.database.session() as session:
        debtor_id = session.scalar(
            select(Debtor.id).join(Creditor).where(Creditor.slug == creditor_slug, Debtor.external_ref == external_ref)
        )
    if debtor_id is None:
        _fail(f"no debtor {external_ref!r} for creditor {creditor_slug!r}")
    token, expires_at = services.portal.issue(debtor_id, services.portal_link_lifetime)
    click.echo(f"{services.portal.url(token)}  (expires {expires_at:%Y-%m-%d %H:%M} UTC)")


@main.group()
def users() -> None:
    """Console users."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--role", type=click.Choice(["agent", "manager", "admin"]), default="agent", show_default=True)
@click.option("--name", default="")
@click.password_option(help="Asked for if not given (at least 10 characters).")
def users_create(email: str, role: str, name: str, password: str) -> None:
    """Create a console user with an argon2id-hashed password."""
    from bot.agents import AgentError, create_agent
    from bot.audit import record
    from bot.store import Database

    database = Database(_settings().database_url)
    with database.unit_of_work() as uow:
        try:
            agent = create_agent(uow.session, email, password, role=role, name=name)
        except AgentError as exc:
            _fail(str(exc))
        record(uow.session, "cli", "agent.created", agent, role=role)
        uow.commit()
    click.echo(f"created {role} {agent.email}")


def _register_subcommands() -> None:
    from bot.cli_chat import chat_command
    from bot.cli_email import email_group
    from bot.cli_flows import flows_group
    from bot.cli_import import import_group
    from bot.cli_knowledge import knowledge_group
    from bot.cli_nlu import nlu_group
    from bot.cli_simulate import simulate_command

    main.add_command(chat_command)
    main.add_command(email_group)
    main.add_command(knowledge_group)
    main.add_command(import_group)
    main.add_command(flows_group)
    main.add_command(nlu_group)
    main.add_command(simulate_command)


_register_subcommands()
