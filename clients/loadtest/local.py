"""A throw-away local node for ``videoconf loadtest --local`` and the benchmarks: ``videoconf
run`` on SQLite in a temporary folder, bound to 127.0.0.1 on a free port, optionally pinned to
one core so that the load generator on the other core does not steal its time.

The node's settings are read by the loader its creator passes in (``videoconf.config``'s
``load_settings``): the clients never import the composition that starts them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from clients.loadtest.process import ChildProcess, free_port, listening, pinned
from control_api.config import TokenSettings


class NodeSettings(TokenSettings, Protocol):
    """What the load generator reads of a node's settings: its room-token keys and the token
    ``/metrics`` asks for."""

    metrics_token: SecretStr | None


class SettingsLoader(Protocol):
    """Reads a node's settings as ``videoconf run`` would, with this process's environment."""

    def __call__(self, config_file: str | None = None) -> NodeSettings: ...


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
        self.cli = [sys.executable, "-m", "videoconf.cli"]
        self.child = ChildProcess(pinned(core, [*self.cli, "run"]), env=self.env, output=workdir / "node.log")

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
        subprocess.run([*self.cli, "migrate"], env=self.env, check=True, capture_output=True, timeout=timeout)
        self.child.start(lambda: listening(self.port), timeout, "the node")

    @property
    def pid(self) -> int:
        return self.child.pid

    def stop(self) -> None:
        self.child.stop()
