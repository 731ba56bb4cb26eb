"""The ``videoconf`` command as an operator runs it: migrate, run, answer, stop."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from control_api.storage.migrate import head_revision
from tests.server_process import ServerProcess, request


def test_the_command_migrates_serves_logs_each_request_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    migrated = server.cli("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert f"database at revision {head_revision()}" in migrated.stdout
    assert (tmp_path / "data" / "videoconf.db").exists()
    try:
        assert f"running at http://127.0.0.1:{server.port}" in server.start()
        status, body = request(server.base + "/api/auth/register", {"email": "op@example.com", "password": "operator password", "display_name": "Op"})
        assert status == 201 and body["user"]["email"] == "op@example.com"
        with urllib.request.urlopen(server.base + "/", timeout=10) as landing:
            assert b"/api/docs" in landing.read()
    finally:
        code, log = server.stop()
    assert code == 0
    logs = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(entry.get("route") == "/api/auth/register" and entry.get("status") == 201 for entry in logs)


def test_production_mode_refuses_to_start_without_secrets(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, VIDEOCONF_ENV="production")
    for key in ("VIDEOCONF_ACCESS_TOKEN_SECRET", "VIDEOCONF_ROOM_TOKEN_SECRET"):
        server.env.pop(key, None)
    result = server.cli("run")
    assert result.returncode == 2
    assert "refusing to start in production mode" in result.stderr
    assert "access_token_secret is missing" in result.stderr
