"""Schemathesis fuzzes every operation of the OpenAPI document against a running server: no
request, however malformed, may produce a 5xx, and every response must match the document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.server_process import ServerProcess, request


def test_no_generated_request_breaks_the_server(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "data",
        VIDEOCONF_ACCESS_LOG="false",
        VIDEOCONF_RATE_LIMITS__REGISTER_PER_IP__LIMIT="100000",
        VIDEOCONF_RATE_LIMITS__REGISTER_PER_IP__PERIOD="1",
        VIDEOCONF_RATE_LIMITS__LOGIN_PER_IP__LIMIT="100000",
        VIDEOCONF_RATE_LIMITS__LOGIN_PER_IP__PERIOD="1",
    )
    assert server.cli("migrate").returncode == 0
    server.start()
    try:
        _, account = request(server.base + "/api/auth/register", {"email": "fuzz@example.com", "password": "fuzzing password", "display_name": "Fuzz"})
        schemathesis = Path(sys.executable).with_name("schemathesis")
        result = subprocess.run(
            [
                str(schemathesis), "run", server.base + "/api/openapi.json",
                "--header", f"Authorization: Bearer {account['access_token']}",
                "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance",
                "--phases", "examples,fuzzing",
                "--max-examples", "12",
                "--seed", "20261124",
                "--exclude-path", "/api/notifications/stream",
                "--no-color",
            ],
            capture_output=True, text=True, timeout=300,
        )
    finally:
        code, log = server.stop()
    assert result.returncode == 0, result.stdout[-4000:]
    assert "passed" in result.stdout
    assert "internal_error" not in log and "unhandled error" not in log
