"""One typed Settings object, read from the environment (DATABASE_URL, REDIS_URL, LOUDOU_*)."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIB = 1024 * 1024


# Allocations between young garbage collections in a server or worker process (Python's default
# is 700; app.main and `loudou worker` set it).
GC_YOUNG_THRESHOLD = 20_000


class Settings(BaseSettings):
    """Process configuration. Unset DATABASE_URL / REDIS_URL mean "use the embedded servers"."""

    model_config = SettingsConfigDict(env_prefix="LOUDOU_", extra="ignore", populate_by_name=True)

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "LOUDOU_DATABASE_URL")
    )
    database_read_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_READ_URL", "LOUDOU_DATABASE_READ_URL")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "LOUDOU_REDIS_URL")
    )
    home: Path = Path(".loudou")
    # "production" turns on the checks a public deployment needs (https-only webhook targets).
    env: Literal["development", "production"] = "development"
    secret_key: SecretStr | None = None

    log_level: str = "INFO"
    # Unset: console lines for `loudou dev` on a terminal, JSON otherwise (app.logging.choose_format).
    log_format: Literal["json", "console"] | None = None
    cors_origins: Annotated[list[str], NoDecode] = []

    max_body_bytes: int = 1 * MIB
    email_max_bytes: int = 25 * MIB
    import_max_bytes: int = 100 * MIB
    import_max_rows: int = 50_000
    page_size_default: int = 50
    page_size_max: int = 200
    # Requests a minute per credential; 0 turns the API's rate limits off (per address too).
    rate_limit_per_minute: int = 1200
    # Requests a minute per client address (API and intake alike), counted across processes.
    rate_limit_per_ip_per_minute: int = 6000
    jwt_ttl_seconds: int = 3600
    idempotency_ttl_hours: int = 24

    queue_name: str = "loudou:queue"
    # Seconds between outbound webhook tries: 7 tries over ~1.7 h by default (tests use "1,1,1").
    webhook_retry_schedule: Annotated[list[float], NoDecode] = [5, 30, 120, 600, 1800, 3600]
    webhook_timeout_seconds: float = 10.0
    # Outbound webhooks go to globally routable addresses only, unless this is set (`loudou dev`, tests).
    webhook_allow_private: bool = False
    # At most this much of a receiver's answer is read (streamed); the rest is never downloaded.
    webhook_max_response_bytes: int = 4096
    assignment_concurrency: int = 2
    # Every metrics query runs under this statement timeout (a 503 when exceeded, never a hung pool).
    metrics_statement_timeout_ms: int = 30_000
    # work_mem of a metrics transaction (medians and percentiles sort up to millions of values; with
    # the server's default 4MB those sorts spill to disk). Per sort/hash node, in PostgreSQL's units.
    metrics_work_mem: str = Field(default="64MB", pattern=r"^[0-9]+(kB|MB|GB)$")
    # Connections a process keeps open, and at most uses at once: a request or job beyond them
    # waits for one. No overflow by default: an overflow connection is closed when it is given
    # back, so under steady load it is a new connection (and backend) per burst.
    db_pool_size: int = 12
    db_max_overflow: int = 0
    # Server-side limits on every pooled connection (0 turns one off): a runaway statement, a lock
    # wait or a transaction left idle can never hold a connection or a lock for long.
    db_statement_timeout_ms: int = 30_000
    db_lock_timeout_ms: int = 5_000
    db_idle_in_transaction_timeout_ms: int = 60_000
    # A pre-ping costs a round trip on every checkout; stale connections are recycled after 30 min
    # and a dropped server invalidates the pool on the first error anyway.
    db_pre_ping: bool = False
    # A new connection that takes longer fails (the request answers 503 database_unavailable).
    db_connect_timeout_seconds: float = 5.0
    access_log: bool = True
    # Dunning email: smtp://user:password@host:port (smtps:// for TLS); unset = webhooks only.
    smtp_url: str | None = None
    smtp_from: str = "Loudou <noreply@localhost>"
    # GET /metrics needs `Authorization: Bearer <token>` when set; in production without one it is off.
    metrics_token: SecretStr | None = None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            return [float(v) for v in value.split(",") if v.strip()]
        return value

    @field_validator("database_url", "database_read_url")
    @classmethod
    def _asyncpg_driver(cls, value: str | None) -> str | None:
        return normalise_database_url(value) if value else value

    def resolved_secret_key(self) -> str:
        """The signing key: LOUDOU_SECRET_KEY, else one generated once and kept under LOUDOU_HOME."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.home / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.home.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key


def normalise_database_url(url: str) -> str:
    """Accept the usual `postgres://` / `postgresql://` spellings and select the asyncpg driver."""
    for prefix in (
        "postgres://",
        "postgresql://",
        "postgresql+psycopg://",
        "postgresql+psycopg2://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests and `loudou dev` clear the cache after setting env)."""
    return Settings()
