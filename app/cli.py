"""The `loudou` command: dev, serve, worker, migrate, org create, demo, openapi, schema plan."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from app.config import Settings, get_settings

cli = typer.Typer(
    help="Loudou (漏斗): a headless sales-process API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
org_cli = typer.Typer(help="Organisations.", no_args_is_help=True)
cli.add_typer(org_cli, name="org")

DEMO_ORG = "Demo"
DEMO_ADMIN = "admin@demo.loudou.test"


def main() -> None:
    """Console-script entry point."""
    cli()


class _Terminated(SystemExit):
    """SIGTERM turned into an exception, so `finally` blocks run."""


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated(128 + signum)


@contextlib.contextmanager
def embedded_if_needed(*, announce: bool = False, redis: bool = True) -> Iterator[Settings]:
    """Settings whose DATABASE_URL / REDIS_URL point at embedded servers when they were unset
    (Redis only when the command needs it).

    The servers are stopped on the way out, whether by return, Ctrl-C or SIGTERM (uvicorn
    re-raises SIGTERM after its own shutdown; our handler turns it into SystemExit here).
    """
    settings = get_settings()
    need_db, need_redis = not settings.database_url, redis and not settings.redis_url
    if not (need_db or need_redis):
        yield settings
        return
    try:
        from app import embedded
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise typer.BadParameter(
            "DATABASE_URL/REDIS_URL are not set and the embedded servers are not installed "
            "(pip install 'loudou[embedded]')"
        ) from exc

    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    servers = None
    try:
        servers = embedded.start(settings.home, database=need_db, redis=need_redis)
        if servers.database_url:
            os.environ["DATABASE_URL"] = servers.database_url
        if servers.redis_url:
            os.environ["REDIS_URL"] = servers.redis_url
        get_settings.cache_clear()
        if announce:
            typer.echo(
                f"embedded servers under {settings.home.resolve()}: "
                f"postgres={'yes' if need_db else 'no (DATABASE_URL)'} "
                f"redis={'yes' if need_redis else 'no (REDIS_URL)'}",
                err=True,
            )
        yield get_settings()
    finally:
        if servers is not None:
            servers.stop()
        signal.signal(signal.SIGTERM, previous)


async def _migrate(settings: Settings) -> None:
    from app.migrate import upgrade

    assert settings.database_url
    await upgrade(settings.database_url)


async def _create_org(
    settings: Settings, name: str, admin_email: str, password: str | None
) -> dict[str, str]:
    from app.db import create_engine, session_factory
    from app.services.organisation import create_organisation

    engine = create_engine(settings, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            created = await create_organisation(
                session, name=name, admin_email=admin_email, admin_password=password
            )
            await session.commit()
        return {
            "org_id": str(created.org.id),
            "user_id": str(created.admin.id),
            "api_key": created.api_key,
        }
    finally:
        await engine.dispose()


async def _first_start(settings: Settings) -> dict[str, str] | None:
    """Create the demo organisation if there is no organisation at all yet."""
    from sqlalchemy import func, select

    from app.db import create_engine, session_factory
    from app.models.organisation import Organisation

    engine = create_engine(settings, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            count = (await session.execute(select(func.count()).select_from(Organisation))).scalar_one()
    finally:
        await engine.dispose()
    if count:
        return None
    return await _create_org(settings, DEMO_ORG, DEMO_ADMIN, None)


@cli.command()
def dev(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run everything in one process: embedded PostgreSQL and Redis (when their URLs are unset),
    migrations, the API and an arq worker. Data stays under LOUDOU_HOME (./.loudou)."""
    import uvicorn

    from app.logging import configure_logging
    from app.main import create_app
    from app.workers.runner import run_worker

    # A developer's receivers live on localhost; production keeps the SSRF guard on.
    os.environ.setdefault("LOUDOU_WEBHOOK_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    base = get_settings()
    configure_logging(base.log_level, base.log_format)
    with embedded_if_needed(announce=True) as settings:
        asyncio.run(_migrate(settings))
        created = asyncio.run(_first_start(settings))
        if created:
            typer.echo(
                "\nFirst start: created organisation "
                f"{DEMO_ORG!r} (id {created['org_id']}) with admin {DEMO_ADMIN}.\n"
                f"Its admin API key (shown once, keep it):\n\n    {created['api_key']}\n\n"
                f"Try: curl -H 'Authorization: Bearer {created['api_key']}' http://{host}:{port}/v1/me\n"
            )
            sys.stdout.flush()

        async def run() -> None:
            server = uvicorn.Server(
                uvicorn.Config(create_app(settings), host=host, port=port, log_config=None)
            )
            stop = asyncio.Event()
            worker = asyncio.create_task(run_worker(settings, stop), name="worker")
            try:
                await server.serve()
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(worker, timeout=10)

        asyncio.run(run())


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Run the API with uvicorn (production). Uses embedded servers only when the URLs are unset."""
    import uvicorn

    from app.logging import configure_logging

    base = get_settings()
    configure_logging(base.log_level, base.log_format)
    if base.secret_key is None:
        if base.env == "production":
            # Every process and host must sign and check tokens with the same key.
            raise typer.BadParameter("LOUDOU_SECRET_KEY must be set when LOUDOU_ENV=production")
        base.resolved_secret_key()  # made once here, before the workers start, so they all share it
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker process writes its metrics here; /metrics merges them.
        metrics_dir = (base.home / "prometheus").resolve()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    with embedded_if_needed():
        uvicorn.run(
            "app.main:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            proxy_headers=True,
        )


@cli.command()
def worker() -> None:
    """Run an arq worker (jobs, cron, the outbox relay) until SIGINT/SIGTERM."""
    from app.logging import configure_logging
    from app.workers.runner import run_worker

    base = get_settings()
    configure_logging(base.log_level, base.log_format)
    with embedded_if_needed() as settings:

        async def run() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await run_worker(settings, stop)

        asyncio.run(run())


@cli.command()
def migrate() -> None:
    """Bring the database schema to the latest revision (alembic upgrade head)."""
    with embedded_if_needed() as settings:
        asyncio.run(_migrate(settings))
    typer.echo("database is at the latest revision")


@org_cli.command("create")
def org_create(
    name: Annotated[str, typer.Argument(help="The organisation's name.")],
    admin_email: Annotated[str, typer.Option("--admin-email", help="Email of its first admin.")],
    password: Annotated[
        str | None, typer.Option(help="Admin password for /v1/auth/token (optional).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an organisation with an admin user and print the admin's API key (once)."""
    from app.models.common import normalise_email

    try:
        admin_email = normalise_email(admin_email)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--admin-email") from exc
    if not name.strip():
        raise typer.BadParameter("the name is empty", param_hint="NAME")
    with embedded_if_needed() as settings:
        asyncio.run(_migrate(settings))
        created = asyncio.run(_create_org(settings, name.strip(), admin_email, password))
    if as_json:
        typer.echo(json.dumps(created))
    else:
        typer.echo(f"organisation {created['org_id']}\nadmin user {created['user_id']}")
        typer.echo(f"admin API key (shown once): {created['api_key']}")


@cli.command()
def demo(
    org: Annotated[str, typer.Option("--org", help="Name of the new organisation.")] = "Demo",
    seed: Annotated[int, typer.Option(help="The same seed gives the same counts of everything.")] = 1,
    months: Annotated[int, typer.Option(min=1, max=12, help="Months of leads (12 a month).")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"org_id", "api_key"}.')] = False,
) -> None:
    """Create a demo organisation filled through the API: teams, reps, leads from every channel,
    conversions, deals at every stage, quotes and orders; prints its admin key."""
    from app.demo import load_demo

    with embedded_if_needed() as settings:
        asyncio.run(_migrate(settings))
        result = asyncio.run(load_demo(settings, name=org, seed=seed, months=months))
    if as_json:
        typer.echo(json.dumps({"org_id": result.org_id, "api_key": result.api_key}))
        return
    typer.echo(f"organisation {result.org_id} ({org})")
    typer.echo(f"admin API key (shown once): {result.api_key}")
    typer.echo("rows: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()))
    typer.echo(
        "try:\n"
        f'  curl -H "Authorization: Bearer {result.api_key}" localhost:8000/v1/deals\n'
        f'  curl -H "Authorization: Bearer {result.api_key}" "localhost:8000/v1/export/deals?format=csv"\n'
        f'  curl -H "Authorization: Bearer {result.api_key}" localhost:8000/v1/export'
    )


@cli.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write it.")] = Path("openapi/openapi.json"),
) -> None:
    """Write the OpenAPI document the app serves (CI fails when the committed one differs)."""
    from app.main import openapi_document

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n")
    typer.echo(f"wrote {output}")


schema_cli = typer.Typer(help="The database schema.", no_args_is_help=True)
cli.add_typer(schema_cli, name="schema")


async def _schema_plan(settings: Settings) -> str:
    from app.db import create_engine
    from app.distribution import plan, read_catalog, render

    engine = create_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            return render(plan(await read_catalog(conn)))
    finally:
        await engine.dispose()


@schema_cli.command("plan")
def schema_plan() -> None:
    """Print the Citus distribution plan of the migrated schema (docs/scale.md), from its catalog."""
    with embedded_if_needed(redis=False) as settings:
        typer.echo(asyncio.run(_schema_plan(settings)), nl=False)
