"""The `loudou` command: dev, serve, worker, migrate, org create, org update, demo, openapi, schema plan."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import json
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from app.config import GC_YOUNG_THRESHOLD, Settings, get_settings

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


CountryOption = Annotated[
    str | None,
    typer.Option(
        "--country",
        help="ISO 3166-1 alpha-2 code (CN, US, DE…): the organisation's country and the default "
        "country for reading phone numbers.",
    ),
]
CurrencyOption = Annotated[
    str | None, typer.Option("--currency", help="ISO 4217 code of the base currency (CNY, USD, EUR…).")
]
TimezoneOption = Annotated[
    str | None,
    typer.Option("--timezone", help="IANA timezone (Asia/Shanghai…): business dates and metrics."),
]


def settings_options(country: str | None, currency: str | None, timezone: str | None) -> dict[str, str]:
    """The organisation settings these options set, validated (typer.BadParameter naming the
    option otherwise); empty when none is given, so the defaults stay."""
    from app.models.common import iana_timezone, iso_country, iso_currency

    out: dict[str, str] = {}
    for value, check, hint, keys in (
        (country, iso_country, "--country", ("country", "default_phone_country")),
        (currency, iso_currency, "--currency", ("base_currency",)),
        (timezone, iana_timezone, "--timezone", ("timezone",)),
    ):
        if value is None:
            continue
        try:
            checked = check(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=hint) from exc
        out.update(dict.fromkeys(keys, checked))
    return out


def settings_command(org_id: str, values: dict[str, str], program: str = "loudou") -> str:
    """The `loudou org update` command line that sets these values (what `loudou dev` suggests)."""
    flags = {"country": "--country", "base_currency": "--currency", "timezone": "--timezone"}
    return " ".join(
        [program, "org update", org_id, *(f"{flags[k]} {v}" for k, v in values.items() if k in flags)]
    )


async def _create_org(
    settings: Settings,
    name: str,
    admin_email: str,
    password: str | None,
    org_settings: dict[str, str] | None = None,
) -> dict[str, str]:
    from app.db import create_engine, session_factory
    from app.models.organisation import OrganisationSettings
    from app.services.organisation import create_organisation

    engine = create_engine(settings, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            created = await create_organisation(
                session,
                name=name,
                admin_email=admin_email,
                admin_password=password,
                settings=OrganisationSettings.model_validate(org_settings or {}),
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

    from app.logging import choose_format, configure_logging, on_terminal
    from app.main import create_app
    from app.workers.runner import run_worker

    # A developer's receivers live on localhost; production keeps the SSRF guard on.
    os.environ.setdefault("LOUDOU_WEBHOOK_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    base = get_settings()
    fmt = choose_format(base.log_format, for_people=True, terminal=on_terminal())
    configure_logging(base.log_level, fmt, quiet_libraries=True)
    with embedded_if_needed(announce=True) as settings:
        asyncio.run(_migrate(settings))
        created = asyncio.run(_first_start(settings))
        if created:
            program = sys.argv[0] if Path(sys.argv[0]).name == "loudou" else "loudou"
            example = settings_command(
                created["org_id"],
                {"country": "CN", "base_currency": "CNY", "timezone": "Asia/Shanghai"},
                program=program,
            )
            typer.echo(
                "\nFirst start: created organisation "
                f"{DEMO_ORG!r} (id {created['org_id']}) with admin {DEMO_ADMIN}.\n"
                f"Its admin API key (shown once, keep it):\n\n    {created['api_key']}\n\n"
                f"Try: curl -H 'Authorization: Bearer {created['api_key']}' http://{host}:{port}/v1/me\n\n"
                "It uses the defaults: country none, currency USD, timezone UTC, phone numbers read as US.\n"
                "Set your own (in another terminal; the values are an example) with:\n\n"
                f"    {example}\n"
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

    from app.logging import choose_format, configure_logging

    base = get_settings()
    configure_logging(base.log_level, choose_format(base.log_format, for_people=False, terminal=False))
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
    from app.logging import choose_format, configure_logging
    from app.workers.runner import run_worker

    base = get_settings()
    configure_logging(base.log_level, choose_format(base.log_format, for_people=False, terminal=False))
    with embedded_if_needed() as settings:

        async def run() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await run_worker(settings, stop)

        # As in the API's servers (app.main): an assignment batch holds a few hundred leads' rows
        # and dicts at once, and a young collection every 700 allocations walks all of them.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        _run_event_loop(run())


def _run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed (uvicorn's `standard` extra brings it on Linux and
    macOS; the API's processes already run on it): the worker's relay and jobs are mostly socket
    round trips, which it makes cheaper. The standard loop elsewhere."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def _command_logging(*, quiet: bool = True) -> None:
    """Logs of a one-shot command go to stderr (stdout stays the command's answer, e.g. --json),
    readable on a terminal; `quiet` keeps library chatter at WARNING as for `loudou dev`."""
    from app.logging import choose_format, configure_logging, on_terminal

    base = get_settings()
    fmt = choose_format(base.log_format, for_people=True, terminal=on_terminal())
    configure_logging(base.log_level, fmt, quiet_libraries=quiet)


@cli.command()
def migrate() -> None:
    """Bring the database schema to the latest revision (alembic upgrade head)."""
    _command_logging(quiet=False)  # which migrations ran is this command's news
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
    country: CountryOption = None,
    currency: CurrencyOption = None,
    timezone: TimezoneOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create an organisation with an admin user and print the admin's API key (once).

    --country, --currency and --timezone set its settings (unset: US phone numbers, USD, UTC)."""
    from app.models.common import normalise_email

    try:
        admin_email = normalise_email(admin_email)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--admin-email") from exc
    if not name.strip():
        raise typer.BadParameter("the name is empty", param_hint="NAME")
    org_settings = settings_options(country, currency, timezone)
    _command_logging()
    with embedded_if_needed() as settings:
        asyncio.run(_migrate(settings))
        created = asyncio.run(_create_org(settings, name.strip(), admin_email, password, org_settings))
    if as_json:
        typer.echo(json.dumps(created))
    else:
        typer.echo(f"organisation {created['org_id']}\nadmin user {created['user_id']}")
        typer.echo(f"admin API key (shown once): {created['api_key']}")


async def _update_org(settings: Settings, org_id: uuid.UUID, name: str | None, values: dict[str, str]) -> Any:
    from app.db import create_engine, scope_session, session_factory
    from app.models.organisation import OrganisationSettingsUpdate, OrganisationUpdate
    from app.services.organisation import update_organisation

    engine = create_engine(settings, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            scope_session(session, org_id)
            update = OrganisationUpdate(
                name=name, settings=OrganisationSettingsUpdate.model_validate(values) if values else None
            )
            org = await update_organisation(session, None, update, expected_version=None, org_id=org_id)
            await session.commit()
            return org.typed_settings().model_dump(mode="json", include={"country", *values}) | {
                "org_id": str(org.id),
                "name": org.name,
            }
    finally:
        await engine.dispose()


@org_cli.command("update")
def org_update(
    org_id: Annotated[str, typer.Argument(help="The organisation's id.")],
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    country: CountryOption = None,
    currency: CurrencyOption = None,
    timezone: TimezoneOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Change an organisation's name, country, base currency or timezone (what is not given stays)."""
    from app.errors import NotFound

    try:
        target = uuid.UUID(org_id)
    except ValueError as exc:
        raise typer.BadParameter(f"{org_id!r} is not an organisation id", param_hint="ORG_ID") from exc
    if name is not None and not name.strip():
        raise typer.BadParameter("the name is empty", param_hint="--name")
    values = settings_options(country, currency, timezone)
    if not values and name is None:
        raise typer.BadParameter("nothing to change: give --name, --country, --currency or --timezone")
    _command_logging()
    with embedded_if_needed() as settings:
        asyncio.run(_migrate(settings))
        try:
            changed = asyncio.run(_update_org(settings, target, name.strip() if name else None, values))
        except NotFound as exc:
            raise typer.BadParameter(f"no organisation with id {org_id}", param_hint="ORG_ID") from exc
    if as_json:
        typer.echo(json.dumps(changed, ensure_ascii=False))
    else:
        typer.echo(" ".join(f"{k}={v}" for k, v in changed.items()))


@cli.command()
def demo(
    org: Annotated[str, typer.Option("--org", help="Name of the new organisation.")] = "Demo",
    seed: Annotated[int, typer.Option(help="The same seed gives the same counts of everything.")] = 1,
    months: Annotated[int, typer.Option(min=1, max=12, help="Months of leads (12 a month).")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"org_id", "api_key"}.')] = False,
) -> None:
    """Create a demo organisation filled through the API: teams, reps with targets, months of history
    (imported), leads from every channel, deals at every stage, quotes, orders, payments, dunning and
    webhook deliveries, so every metrics and collections endpoint has numbers; prints its admin key."""
    from app.demo import load_demo
    from app.logging import choose_format, configure_logging, on_terminal

    # Warnings only, on stderr: stdout carries the result (`--json` is read by scripts).
    fmt = choose_format(get_settings().log_format, for_people=True, terminal=on_terminal())
    configure_logging("WARNING", fmt, quiet_libraries=True)
    with embedded_if_needed() as settings:
        asyncio.run(_migrate(settings))
        result = asyncio.run(load_demo(settings, name=org, seed=seed, months=months))
    if as_json:
        typer.echo(json.dumps({"org_id": result.org_id, "api_key": result.api_key}))
        return
    key = result.api_key
    today = datetime.date.today()
    period = f"from={datetime.date(today.year - 1, today.month, 1)}&to={today + datetime.timedelta(days=1)}"
    typer.echo(f"organisation {result.org_id} ({org})")
    typer.echo(f"admin API key (shown once): {key}")
    typer.echo("rows: " + ", ".join(f"{k} {v}" for k, v in result.counts.items()))
    typer.echo(
        "try (with `loudou dev` running):\n"
        f'  H="Authorization: Bearer {key}"\n'
        '  curl -H "$H" localhost:8000/v1/metrics/funnel\n'
        '  curl -H "$H" "localhost:8000/v1/metrics/win-rate?group_by=month"\n'
        '  curl -H "$H" "localhost:8000/v1/metrics/pipeline/trend?interval=week"\n'
        '  curl -H "$H" localhost:8000/v1/metrics/reps\n'
        '  curl -H "$H" "localhost:8000/v1/receivables/aging?group_by=account"\n'
        f'  curl -H "$H" "localhost:8000/v1/metrics/collections?{period}&group_by=month"\n'
        '  curl -H "$H" "localhost:8000/v1/export/deals?format=csv"'
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
