"""Run ``videoconf`` as a separate process, the way an operator does, for tests that need a real
server (command line, fuzzing with synchronous clients)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from clients.loadtest.process import ChildProcess, free_port


def unverified() -> ssl.SSLContext:
    """For a test's own node over HTTPS, whatever its certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def request(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers)
    context = unverified() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


class ServerProcess:
    def __init__(self, data_dir: Path, *, log: Path | None = None, **env: str) -> None:
        """``log``: the file the server's standard error goes to (appended across restarts; by
        default ``<data_dir>-server.log`` beside it), never a pipe that a long run could fill."""
        self.port = free_port()
        self.env = {
            **os.environ,
            "VIDEOCONF_DATA_DIR": str(data_dir),
            "VIDEOCONF_PORT": str(self.port),
            **env,
        }
        tls = (
            self.env.get("VIDEOCONF_TLS_CERT")
            or self.env.get("VIDEOCONF_TLS_SELF_SIGNED", "").lower() == "true"
        )
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.env.pop("VIDEOCONF_CONFIG", None)
        self.log = log or data_dir.with_name(f"{data_dir.name}-server.log")
        self.child = ChildProcess(
            [sys.executable, "-m", "videoconf.cli", "run"], env=self.env, output=self.log, stdout_pipe=True
        )

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.child.process

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "videoconf.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self) -> str:
        """Start the server and wait until it is ready; returns its first line of output."""
        self.child.launch()
        assert self.process is not None and self.process.stdout is not None
        first_line = self.process.stdout.readline().decode()
        self.child.wait_ready(self.ready, 20, "the server")
        return first_line

    def ready(self) -> bool:
        try:
            return request(self.base + "/readyz")[0] == 200
        except OSError:
            return False

    def stop(self) -> tuple[int, str]:
        """Interrupt the server as Ctrl+C does; returns its exit code and its log."""
        code = self.child.stop(signal.SIGINT)
        assert code is not None
        return code, self._output()

    def kill(self) -> None:
        """Crash the server (SIGKILL): no goodbye to anyone, as when its host fails."""
        self.child.kill()

    def _output(self) -> str:
        return self.child.logged()
