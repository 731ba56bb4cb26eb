"""``videoconf run --processes N``: one node per core on this host, with one command.

The supervisor migrates nothing and serves nothing itself: it starts N ``videoconf run``
processes, child ``i`` pinned to core ``i`` (modulo the cores there are), on HTTP port
``port + i`` and UDP port ``udp_port + i``, with node id ``<node_id>-i`` and its own signaling URL
(``signaling_url`` may name ``{port}`` or ``{index}``; without one, each child's is derived from its
port).  The children are nodes of one cluster (``cluster`` and ``redis_url`` are required): the API
places each meeting on one of them.  SIGTERM or SIGINT is passed on to every child (a cluster
node drains on SIGTERM; a second signal stops it at once), and so is SIGHUP (certificates are
loaded again).  A child that exits when nobody asked
is started again after a second, at most ``MAX_RESTARTS`` times a minute."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from types import FrameType

from videoconf.config import ConfigError, Settings

MAX_RESTARTS = 5  # per child, within RESTART_WINDOW seconds
RESTART_WINDOW = 60.0
RESTART_DELAY = 1.0
PR_SET_PDEATHSIG = 1


def check(settings: Settings, processes: int) -> None:
    """Refuse what would make the children collide or miss each other."""
    if processes < 1:
        raise ConfigError("--processes must be at least 1")
    if not settings.cluster:
        raise ConfigError(
            "--processes needs cluster = true (and redis_url): the processes share meetings through Redis"
        )
    if settings.ice_port_range is not None:
        raise ConfigError("with --processes, give udp_port (child i takes udp_port + i), not ice_port_range")
    if settings.port == 0:
        raise ConfigError("with --processes, give a port: child i serves port + i")
    shared_url = settings.signaling_url or (None if settings.public_url is None else settings.public_url)
    if shared_url is not None and "{port}" not in shared_url and "{index}" not in shared_url:
        raise ConfigError(
            "with --processes, each child needs its own signaling address: set signaling_url with {port} or {index}"
        )


def child_environment(settings: Settings, index: int) -> dict[str, str]:
    """What makes child ``index`` a node of its own."""
    port = settings.port + index
    env = {
        "VIDEOCONF_PORT": str(port),
        "VIDEOCONF_HOST": settings.host,
        "VIDEOCONF_NODE_ID": f"{settings.node_id or socket.gethostname()}-{index}",
    }
    if settings.udp_port is not None:
        env["VIDEOCONF_UDP_PORT"] = str(settings.udp_port + index)
    if settings.signaling_url:
        env["VIDEOCONF_SIGNALING_URL"] = settings.signaling_url.format(port=port, index=index)
    return env


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM (and drains) if the supervisor dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the service manager stops the children


class Supervisor:
    def __init__(self, settings: Settings, processes: int, config: str | None) -> None:
        self.settings = settings
        self.processes = processes
        self.config = config
        self.children: list[subprocess.Popen[bytes] | None] = [None] * processes
        self.restarts = [deque[float]() for _ in range(processes)]
        self.stopping = False
        self.cores = os.cpu_count() or 1

    def start(self, index: int) -> None:
        command = [sys.executable, "-m", "videoconf.cli"]
        if self.config:
            command += ["--config", self.config]
        command.append("run")
        core = index % self.cores

        def in_child() -> None:
            os.sched_setaffinity(0, {core})
            _die_with_parent()

        self.children[index] = subprocess.Popen(
            command,
            env={**os.environ, **child_environment(self.settings, index)},
            preexec_fn=in_child,
        )

    def signalled(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        for child in self.children:
            if child is not None and child.poll() is None:
                child.send_signal(signum)

    def forward(self, signum: int, frame: FrameType | None) -> None:
        """SIGHUP: every node loads its certificates again."""
        for child in self.children:
            if child is not None and child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.signalled)
        signal.signal(signal.SIGINT, self.signalled)
        signal.signal(signal.SIGHUP, self.forward)
        for index in range(self.processes):
            self.start(index)
        print(
            f"VideoConf: {self.processes} nodes on ports {self.settings.port}-{self.settings.port + self.processes - 1}",
            flush=True,
        )
        while True:
            running = False
            for index, child in enumerate(self.children):
                if child is None or child.poll() is None:
                    running = running or child is not None
                    continue
                if not self.stopping and self._may_restart(index):
                    print(
                        f"videoconf: node {index} exited with {child.returncode}; starting it again",
                        file=sys.stderr,
                        flush=True,
                    )
                    time.sleep(RESTART_DELAY)
                    self.start(index)
                    running = True
            if not running:
                break
            time.sleep(0.2)
        codes = [child.returncode for child in self.children if child is not None]
        return max((abs(code) for code in codes), default=0)

    def _may_restart(self, index: int) -> bool:
        now = time.monotonic()
        recent = self.restarts[index]
        while recent and now - recent[0] > RESTART_WINDOW:
            recent.popleft()
        if len(recent) >= MAX_RESTARTS:
            return False
        recent.append(now)
        return True
