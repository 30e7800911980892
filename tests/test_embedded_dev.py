"""`loudou dev` on the embedded default: serves, keeps data across restarts, and leaves no
server process behind after Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

LOUDOU = str(Path(sys.executable).parent / "loudou")


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


def _start(home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"LOUDOU_HOME": str(home), "LOUDOU_LOG_FORMAT": "console"})
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [LOUDOU, "dev", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )


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


@pytest.mark.slow
def test_dev_serves_keeps_data_and_stops_cleanly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = tmp_path / "dev.log"
    port = _free_port()
    proc = _start(home, port, log)
    try:
        _wait_ready(port, proc)
        key = re.search(r"(ldk_[A-Za-z0-9_-]+)", log.read_text())
        assert key, log.read_text()[-2000:]
        h = {"Authorization": f"Bearer {key.group(1)}"}
        base = f"http://127.0.0.1:{port}"
        me = httpx.get(f"{base}/v1/me", headers=h).json()
        assert me["role"] == "admin" and me["organisation"]["name"] == "Demo"
        r = httpx.post(f"{base}/v1/users", json={"email": "kept@example.com"}, headers=h)
        assert r.status_code == 201
        user_id = r.json()["id"]
    finally:
        _stop(proc, signal.SIGINT, home)

    proc = _start(home, port, log)
    try:
        _wait_ready(port, proc)
        r = httpx.get(f"http://127.0.0.1:{port}/v1/users/{user_id}", headers=h)
        assert r.status_code == 200 and r.json()["email"] == "kept@example.com"
        assert log.read_text().count("First start") == 1
    finally:
        _stop(proc, signal.SIGTERM, home)
