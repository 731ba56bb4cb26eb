"""A real TURN server on loopback, and the processes of Debian's coturn package to talk to it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.loadtest.polling import until
from clients.loadtest.process import free_port, udp_answers
from turn import fastpath
from turn.config import TurnSettings
from turn.transport import TurnService

SECRET = "interop-secret-for-tests-0123456789abcdef"
USERS = {"alice": "wonderland"}


def coturn_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # `make test` installs Debian's coturn; a missing tool is a failure, not a skip
        pytest.fail(f"{name} is missing: apt-get install coturn")
    return path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def turn_settings(**overrides) -> TurnSettings:
    values = dict(
        enabled=True, listen="127.0.0.1", udp_port=0, tcp_port=0, relay_ports=None, allow_loopback=True,
        users=USERS, secrets=[SECRET], max_bps=0, unauthorized_burst=1000,
    )
    values.update(overrides)
    return TurnSettings(**values)


@pytest.fixture(params=["native", "python"])
async def turn_service(request, tls_files) -> AsyncIterator[TurnService]:
    """A TURN server on loopback, once with routed ChannelData in C (turn/_relay.c) and once in
    Python (turn/fastpath.py's fallback)."""
    if request.param == "native" and fastpath.NATIVE is None:
        pytest.fail("turn/_relay.c was not built: `pip install -e .` builds it (gcc and the Python headers)")
    cert, key = tls_files
    service = TurnService(turn_settings(tls_port=0, tls_cert=cert, tls_key=key, native_relay=request.param == "native"))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
async def udp_peer() -> AsyncIterator[int]:
    """Debian's turnutils_peer: a UDP echo server on loopback."""
    port = free_port(socket.SOCK_DGRAM)
    process = await asyncio.create_subprocess_exec(
        coturn_tool("turnutils_peer"), "-L", "127.0.0.1", "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    await until(lambda: udp_answers(port, b"ping", b"ping".__eq__), 10, "turnutils_peer to echo")
    try:
        yield port
    finally:
        process.kill()
        await process.wait()
