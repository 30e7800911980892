"""`loudou dev` on the embedded default, as a new user meets it: on a terminal it logs readable
lines and prints the command that sets the demo organisation's country, currency and timezone;
the README's curl tour runs on it as written; it keeps data across restarts, logs JSON when not
on a terminal, and leaves no server process behind after Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import psutil
import pytest

LOUDOU = str(Path(sys.executable).parent / "loudou")
README = Path(__file__).resolve().parents[1] / "README.md"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _leftovers(home: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if str(home) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"{proc.pid}: {cmdline}")
    return found


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "LOUDOU_LOG_FORMAT")}
    env["LOUDOU_HOME"] = str(home)
    return env


def _start(home: Path, port: int, log: Path, *, terminal: bool) -> subprocess.Popen[bytes]:
    """`loudou dev`, its output into `log`: through a pseudo-terminal (as a person runs it), or
    a plain file (as when redirected)."""
    command = [LOUDOU, "dev", "--port", str(port)]
    if not terminal:
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(command, env=_env(home), stdout=out, stderr=subprocess.STDOUT)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, env=_env(home), stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)

    def pump() -> None:  # a terminal must be read, or the child blocks once its buffer fills
        with log.open("ab") as out:
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the child closed its end
                    break
                if not chunk:
                    break
                out.write(chunk)
                out.flush()
        os.close(leader)

    threading.Thread(target=pump, daemon=True).start()
    return proc


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "loudou dev exited early"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("loudou dev did not become ready")


def _stop(proc: subprocess.Popen[bytes], sig: int, home: Path) -> None:
    proc.send_signal(sig)
    assert proc.wait(timeout=60) is not None
    deadline = time.monotonic() + 10
    while _leftovers(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _leftovers(home) == []


@dataclass
class Dev:
    """A `loudou dev` started fresh on a terminal."""

    home: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    key: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", headers={"Authorization": f"Bearer {self.key}"})


@pytest.fixture(scope="module")
def first_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """The first start of `loudou dev` in an empty LOUDOU_HOME, on a terminal."""
    root = tmp_path_factory.mktemp("dev")
    home, log, port = root / "home", root / "dev.log", _free_port()
    proc = _start(home, port, log, terminal=True)
    try:
        _wait_ready(port, proc)
        key = re.search(r"(ldk_[A-Za-z0-9_-]+)", log.read_text(errors="replace"))
        assert key, log.read_text(errors="replace")[-2000:]
        yield Dev(home=home, port=port, log=log, proc=proc, key=key.group(1))
    finally:
        if proc.poll() is None:
            _stop(proc, signal.SIGINT, home)


def _tour_script(readme: str, *, key: str, api: str) -> str:
    """The README's tour block with only its KEY and API lines filled in."""
    block = readme.split("<!-- tour:begin -->")[1].split("<!-- tour:end -->")[0]
    script = block.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = script.splitlines()
    assert sum(line.startswith("KEY=") for line in lines) == 1
    assert sum(line.startswith("API=") for line in lines) == 1
    return "\n".join(
        f"KEY={key}" if line.startswith("KEY=") else f"API={api}" if line.startswith("API=") else line
        for line in lines
    )


def _half_up(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")), reason="the tour needs curl and jq")
def test_readme_tour_runs_as_written_on_a_fresh_dev(first_dev: Dev, tmp_path: Path) -> None:
    script = _tour_script(README.read_text(), key=first_dev.key, api=first_dev.base)
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == 7, done.stdout
    rule, decision, quote, submitted, sent, order, deal = answers
    assert rule == {"name": "All leads 所有线索", "strategy": "round_robin"}
    users = first_dev.get("/v1/users").json()["data"]
    rep = next(u for u in users if u["email"] == "li.na@example.com")
    assert decision == {"outcome": "assigned", "rule_name": "All leads 所有线索", "chosen_user_id": rep["id"]}
    # 20 days at 3,800 with 6 % tax, and a licence of 98,000 with 13 %.
    subtotal = 20 * Decimal("3800") + Decimal("98000")
    tax = _half_up(20 * Decimal("3800") * Decimal("0.06")) + _half_up(Decimal("98000") * Decimal("0.13"))
    total = subtotal + tax
    assert re.fullmatch(r"Q-\d{4}-0001", quote["number"])
    assert {k: Decimal(v) for k, v in quote.items() if k != "number"} == {
        "subtotal": subtotal,
        "tax_total": tax,
        "total": total,
    }
    assert submitted == {"status": "approved"} and sent == {"status": "sent"}
    first = _half_up(total * Decimal("0.30"))
    assert re.fullmatch(r"SO-\d{4}-0001", order["number"]) and Decimal(order["total"]) == total
    assert [Decimal(a) for a in order["installments"]] == [first, total - first]
    assert deal["status"] == "won" and Decimal(deal["amount"]) == total
    assert (tmp_path / "quote.pdf").read_bytes().startswith(b"%PDF-")
    lead = first_dev.get("/v1/leads").json()["data"][0]
    assert lead["phone"] == "+8613800138000" and lead["status"] == "converted"


@pytest.mark.slow
def test_first_start_on_a_terminal_reads_well_and_prints_the_settings_command(first_dev: Dev) -> None:
    text = first_dev.log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    assert not [line for line in lines if line.lstrip().startswith("{")]  # no JSON at all
    assert "\x1b[" in text  # coloured
    assert "Uvicorn running" in text and "embedded.postgres_started" in text
    assert "Running upgrade" not in text and "initdb" not in text  # alembic, embedded servers: quiet
    command = re.search(
        r"^\s*(\S*loudou org update \S+ --country CN --currency CNY --timezone Asia/Shanghai)\s*$", text, re.M
    )
    assert command, text[-3000:]
    done = subprocess.run(
        command.group(1).split(),
        env=_env(first_dev.home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    settings = first_dev.get("/v1/organisation").json()["settings"]
    assert (settings["country"], settings["base_currency"], settings["timezone"]) == (
        "CN",
        "CNY",
        "Asia/Shanghai",
    )


@pytest.mark.slow
def test_dev_keeps_data_logs_json_when_redirected_and_stops_cleanly(first_dev: Dev) -> None:
    h = {"Authorization": f"Bearer {first_dev.key}"}
    me = first_dev.get("/v1/me").json()
    assert me["role"] == "admin" and me["organisation"]["name"] == "Demo"
    r = httpx.post(f"{first_dev.base}/v1/users", json={"email": "kept@example.com"}, headers=h)
    assert r.status_code == 201
    user_id = r.json()["id"]
    _stop(first_dev.proc, signal.SIGINT, first_dev.home)

    log = first_dev.log.with_name("dev-again.log")
    proc = _start(first_dev.home, first_dev.port, log, terminal=False)
    try:
        _wait_ready(first_dev.port, proc)
        r = httpx.get(f"{first_dev.base}/v1/users/{user_id}", headers=h)
        assert r.status_code == 200 and r.json()["email"] == "kept@example.com"
        assert "First start" not in log.read_text()
        records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        assert any(r["event"].startswith("Uvicorn running") for r in records)
    finally:
        _stop(proc, signal.SIGTERM, first_dev.home)
    assert first_dev.log.read_text(errors="replace").count("First start") == 1
