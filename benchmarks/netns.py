"""Confine a benchmark to a private network namespace of its own.

:func:`confine` re-executes the calling script under ``unshare --net`` (root only) after
bringing up ``lo`` and a veth pair whose one end carries 127.0.0.2: Janus 1.1.2 skips loopback
interfaces when it gathers ICE candidates, so it is told to use that veth (``ice_enforce_list``)
and its candidates still name a loopback-range address.  Inside the namespace nothing routes
beyond it, so no benchmark process can reach another machine whatever it is configured to do.
"""

from __future__ import annotations

import os
import shutil
import sys

JANUS_ADDRESS = "127.0.0.2"
JANUS_INTERFACE = "vcb0"
MARKER = "VIDEOCONF_NETNS"

SETUP = " && ".join([
    "ip link set lo up",
    f"ip link add {JANUS_INTERFACE} type veth peer name vcb1",
    f"ip link set {JANUS_INTERFACE} up",
    "ip link set vcb1 up",
    f"ip addr add {JANUS_ADDRESS}/32 dev {JANUS_INTERFACE}",
])


def confined() -> bool:
    return os.environ.get(MARKER) == "1"


def confine(argv: list[str] | None = None) -> None:
    """Return at once inside the namespace; otherwise replace this process with the same command
    run inside a new one (it never returns)."""
    if confined():
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        raise SystemExit("this benchmark makes a network namespace: run it as root with util-linux's unshare and iproute2's ip")
    command = argv or [sys.executable, *sys.argv]
    os.environ[MARKER] = "1"
    os.execvp("unshare", ["unshare", "--net", "--", "sh", "-c", f'{SETUP} && exec "$@"', "sh", *command])
