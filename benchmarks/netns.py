"""Confine a benchmark to a private network namespace of its own.

:func:`confine` re-executes the calling command (``python -m benchmarks...``) under ``unshare
--net`` (we are root) after bringing up ``lo`` and a veth pair whose one end carries 127.0.0.2.
Janus 1.1.2 skips loopback interfaces when it gathers ICE candidates, so it is told to use that
veth only (``ice_enforce_list``) and its candidates still name a loopback-range address. The
address is local to the namespace: a socket bound to 127.0.0.2 and one bound to 127.0.0.1
exchange datagrams through ``lo`` with the default sysctls (no ``route_localnet``, ``rp_filter``
or ``accept_local`` change is needed). Inside the namespace nothing routes beyond it, so no
benchmark process can reach another machine whatever it is configured to do.
"""

from __future__ import annotations

import os
import shutil
import sys

JANUS_ADDRESS = "127.0.0.2"
JANUS_INTERFACE = "vcb0"
PEER_INTERFACE = "vcb1"
MARKER = "VIDEOCONF_NETNS"

SETUP = " && ".join([
    "ip link set lo up",
    f"ip link add {JANUS_INTERFACE} type veth peer name {PEER_INTERFACE}",
    f"ip link set {JANUS_INTERFACE} up",
    f"ip link set {PEER_INTERFACE} up",
    f"ip addr add {JANUS_ADDRESS}/32 dev {JANUS_INTERFACE}",
])


def confined() -> bool:
    """Whether this process already runs inside the namespace :func:`confine` makes."""
    return os.environ.get(MARKER) == "1"


def confine(argv: list[str] | None = None) -> None:
    """Return at once inside the namespace; otherwise replace this process with ``argv`` (by
    default this very command, ``-m`` and all) run inside a new one, so it never returns: the
    exit code is the child's."""
    if confined():
        return
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        raise SystemExit("this benchmark makes a network namespace: run it as root, with util-linux's unshare and iproute2's ip")
    command = list(argv) if argv else [sys.executable, *sys.orig_argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ[MARKER] = "1"
    os.execvp("unshare", ["unshare", "--net", "--", "sh", "-c", f'{SETUP} && exec "$@"', "sh", *command])
