"""A throw-away local node for ``videoconf loadtest --local`` and the benchmarks: ``videoconf
run`` on SQLite in a temporary folder, bound to 127.0.0.1 on a free port, optionally pinned to
one core so that the load generator on the other core does not steal its time.

The node's settings are read by the loader its creator passes in (``videoconf.config``'s
``load_settings``): the clients never import the composition that starts them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from control_api.config import TokenSettings


class NodeSettings(TokenSettings, Protocol):
    """What the load generator reads of a node's settings: its room-token keys and the token
    ``/metrics`` asks for."""

    metrics_token: SecretStr | None


class SettingsLoader(Protocol):
    """Reads a node's settings as ``videoconf run`` would, with this process's environment."""

    def __call__(self, config_file: str | None = None) -> NodeSettings: ...


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int | None, command: list[str]) -> list[str]:
    """``command`` under ``taskset -c core`` when there is a core to spare."""
    if core is not None and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *command]
    return command


class LocalNode:
    def __init__(
        self, workdir: Path, core: int | None = 0, env: dict[str, str] | None = None, *, load_settings: SettingsLoader
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "VIDEOCONF_ENV": "development",
            "VIDEOCONF_DATA_DIR": str(workdir),
            "VIDEOCONF_HOST": "127.0.0.1",
            "VIDEOCONF_PORT": str(self.port),
            "VIDEOCONF_ACCESS_LOG": "false",
            "VIDEOCONF_LOG_LEVEL": "WARNING",
            "VIDEOCONF_ICE_ADDRESSES": '["127.0.0.1"]',
            **(env or {}),
        }
        self.core = core
        self.workdir = workdir
        self.load_settings = load_settings
        self.process: subprocess.Popen[bytes] | None = None

    def settings(self) -> NodeSettings:
        """The node's settings as it loads them (its development secrets are generated into the
        work folder on the first load, so the load generator and the node share them)."""
        saved = {k: os.environ.get(k) for k in self.env if k.startswith("VIDEOCONF_")}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("VIDEOCONF_")})
        try:
            return self.load_settings()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def start(self, timeout: float = 60.0) -> None:
        self.settings()  # generate the secrets before the node reads them
        cli = [sys.executable, "-m", "videoconf.cli"]
        subprocess.run([*cli, "migrate"], env=self.env, check=True, capture_output=True, timeout=timeout)
        log = open(self.workdir / "node.log", "wb")  # noqa: SIM115 - the node writes to it until stop()
        self.process = subprocess.Popen(pinned(self.core, [*cli, "run"]), env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the node exited: {(self.workdir / 'node.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the node did not start listening")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
