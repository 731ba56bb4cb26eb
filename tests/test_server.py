"""The ``videoconf`` command as an operator runs it: migrate, run, answer, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def videoconf(*args: str, env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "videoconf.cli", *args], env=env, capture_output=True, text=True, timeout=60, **kwargs)


def request(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_migrate_run_and_stop(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "VIDEOCONF_DATA_DIR": str(tmp_path / "data"), "VIDEOCONF_PORT": str(port)}
    env.pop("VIDEOCONF_CONFIG", None)
    migrated = videoconf("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "database at revision 0001" in migrated.stdout
    assert (tmp_path / "data" / "videoconf.db").exists()
    server = subprocess.Popen(
        [sys.executable, "-m", "videoconf.cli", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert f"running at http://127.0.0.1:{port}" in server.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body = request(base + "/readyz")
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert (status, body["status"]) == (200, "ok")
        status, body = request(base + "/api/auth/register", {"email": "op@example.com", "password": "operator password", "display_name": "Op"})
        assert status == 201 and body["user"]["email"] == "op@example.com"
        with urllib.request.urlopen(base + "/", timeout=10) as landing:
            assert b"/api/docs" in landing.read()
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
    logs = [json.loads(line) for line in server.stderr.read().splitlines() if line.startswith("{")]
    assert any(entry.get("route") == "/api/auth/register" and entry.get("status") == 201 for entry in logs)


def test_production_mode_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    env = {**os.environ, "VIDEOCONF_DATA_DIR": str(tmp_path), "VIDEOCONF_ENV": "production", "VIDEOCONF_PORT": str(free_port())}
    for key in ("VIDEOCONF_ACCESS_TOKEN_SECRET", "VIDEOCONF_ROOM_TOKEN_SECRET"):
        env.pop(key, None)
    result = videoconf("run", env=env)
    assert result.returncode == 2
    assert "refusing to start in production mode" in result.stderr
    assert "access_token_secret is missing" in result.stderr
