"""Run alembic migrations from code (the CLI, `loudou dev`, and the test session use this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def project_root() -> Path:
    """Where alembic.ini and migrations/ are: the source checkout, else the working directory
    (the Docker image installs the package and puts them in its WORKDIR)."""
    for candidate in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (candidate / "alembic.ini").exists() and (candidate / "migrations").is_dir():
            return candidate
    raise RuntimeError("alembic.ini and migrations/ not found next to the app or in the working directory")


def alembic_config() -> Config:
    """The project's alembic.ini, wherever the process was started from."""
    root = project_root()
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def upgrade(url: str, revision: str = "heads") -> None:
    """Bring the database at `url` to `revision`, on a connection of our own (no nested loop)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()


def _downgrade(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


async def downgrade(url: str, revision: str) -> None:
    """Take the database at `url` back to `revision`, on a connection of our own."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_downgrade, revision)
    finally:
        await engine.dispose()


def revision_before(revision: str) -> str:
    """The revision `revision` upgrades from (its single down_revision)."""
    down = ScriptDirectory.from_config(alembic_config()).get_revision(revision).down_revision
    if not isinstance(down, str):
        raise RuntimeError(f"{revision} does not have exactly one down revision")
    return down
