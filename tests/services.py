"""Private PostgreSQL and Redis servers for tests that stop and restart them.

The machine's shared PostgreSQL (5432) and Redis (6379) serve other engineers' tests and CI, so
fault tests never touch them: each starts its own instance on a free loopback port in a temporary
directory, and may stop, kill and restart it at will.

- :class:`PrivatePostgres` runs Debian's PostgreSQL 15 binaries (``initdb``, ``postgres``) with
  trust authentication on 127.0.0.1; as root the server runs as the ``postgres`` user, which owns
  the directory.  ``url`` is ``postgresql://postgres@127.0.0.1:PORT/postgres``.
- :class:`PrivateRedis` runs ``redis-server`` with no persistence (``--save "" --appendonly no``):
  a restart loses every key, as it would for a cache-only deployment.

Both are synchronous and block for up to a few seconds while a server starts or stops; async
tests call them through ``asyncio.to_thread`` so that media keeps flowing meanwhile.  Every wait
polls with a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from clients.loadtest.process import free_port, listening

PG_BIN = Path(os.environ.get("VIDEOCONF_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _wait(predicate: Any, timeout: float, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s: {what}")
        time.sleep(0.05)


class _Service:
    """A server process on a fixed port that can be stopped and started again on that port."""

    name = "service"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"videoconf-{self.name}-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.dir / f"{self.name}.log"
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _popen_options(self) -> dict[str, Any]:
        return {}

    def _ready(self) -> bool:
        return listening(self.port)

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it answers.  A server that exits while starting (after
        a crash PostgreSQL may find its old backends still leaving) is started again, until
        ``timeout``."""
        assert not self.running, f"{self.name} is already running"
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, **self._popen_options(),
                )
            try:
                _wait(self._ready, max(0.1, deadline - time.monotonic()),
                      f"{self.name} on port {self.port} accepting connections ({self.log})", self.process)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.starts += 1

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGINT) -> None:
        """Stop the server (``sig``: SIGINT is PostgreSQL's fast shutdown, SIGTERM Redis's)."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        _wait(lambda: not listening(self.port), 10, f"{self.name} on port {self.port} closed")

    def kill(self) -> None:
        """Crash the server (SIGKILL), as a failed host would."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self, timeout: float = 30.0) -> None:
        self.stop(timeout)
        self.start(timeout)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PrivatePostgres(_Service):
    name = "postgres"

    def __init__(self) -> None:
        super().__init__()
        self.data = self.dir / "data"
        self.socket_dir = self.dir / "socket"
        self.socket_dir.mkdir()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            for path in (self.dir, self.socket_dir):
                shutil.chown(path, "postgres", "postgres")
            self.log.touch()
            shutil.chown(self.log, "postgres", "postgres")
        subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            check=True, capture_output=True, timeout=120, **self._popen_options(),
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _popen_options(self) -> dict[str, Any]:
        # Root may not run PostgreSQL: run it as the postgres user, which owns the directory.
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if self._as_postgres else {}

    def _command(self) -> list[str]:
        return [
            str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.socket_dir),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", "full_page_writes=off", "-c", "max_connections=50", "-c", "shared_buffers=16MB",
        ]

    def _ready(self) -> bool:
        # Accepting TCP is not enough: a starting server answers "the database system is starting up".
        done = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True, timeout=10,
        )
        return done.returncode == 0


class PrivateRedis(_Service):
    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "yes",
        ]

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> None:
        super().stop(timeout, sig)
