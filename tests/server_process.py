"""Run ``videoconf`` as a separate process, the way an operator does, for tests that need a real
server (command line, fuzzing with synchronous clients)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class ServerProcess:
    def __init__(self, data_dir: Path, *, log: Path | None = None, **env: str) -> None:
        """``log``: write the server's stderr to this file (appending across restarts) instead of
        a pipe, for servers that run long or log much (a full pipe would block the server)."""
        self.log = log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "VIDEOCONF_DATA_DIR": str(data_dir), "VIDEOCONF_PORT": str(self.port), **env}
        self.env.pop("VIDEOCONF_CONFIG", None)
        self.process: subprocess.Popen[str] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "videoconf.cli", *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    def start(self) -> str:
        """Start the server and wait until it is ready; returns its first line of output."""
        stderr = open(self.log, "a") if self.log is not None else subprocess.PIPE  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "videoconf.cli", "run"],
                env=self.env, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )
        finally:
            if self.log is not None:
                stderr.close()
        first_line = self.process.stdout.readline()
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _ = request(self.base + "/readyz")
                if status == 200:
                    return first_line
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"server did not start: {self._output() if self.process.poll() is not None else ''}")
            time.sleep(0.1)

    def stop(self) -> tuple[int, str]:
        """Interrupt the server as Ctrl+C does; returns its exit code and its log."""
        assert self.process is not None
        self.process.send_signal(2)
        code = self.process.wait(timeout=20)
        return code, self._output()

    def kill(self) -> None:
        """Crash the server (SIGKILL): no goodbye to anyone, as when its host fails."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=20)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _output(self) -> str:
        assert self.process is not None
        if self.log is not None:
            return self.log.read_text(errors="replace")
        return self.process.stderr.read() if self.process.stderr is not None else ""
