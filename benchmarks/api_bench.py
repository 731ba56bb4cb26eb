"""Control API benchmark: throughput and latency of joining a meeting and listing meetings.

The server runs as the operator runs it (``videoconf run``, uvloop, access log off) pinned to
one core; the load comes from the other core.  Throughput is measured closed-loop with wrk
(Debian's package); latency at a fixed rate is measured open-loop by an asyncio client that
times each request from its scheduled send time, so a stalled server cannot hide its queue.
``GET /healthz`` runs in the same session as the baseline: the ratio join/healthz says how much
of aiohttp's floor the join path keeps, whatever the machine is doing.

    python -m benchmarks.api_bench [--backend sqlite|postgres] [--duration 10] [--trials 3]

Writes ``benchmarks/results/api-<backend>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from clients.loadtest.process import ChildProcess, cpu_seconds, free_port, listening, pinned
from clients.loadtest.stats import median

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
PASSWORD = "benchmark password"


class Server:
    def __init__(self, backend: str, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.schema: str | None = None
        loose = {"limit": "1000000", "period": "1"}
        self.env = {
            **os.environ,
            "VIDEOCONF_ENV": "development",
            "VIDEOCONF_DATA_DIR": str(workdir),
            "VIDEOCONF_PORT": str(self.port),
            "VIDEOCONF_ACCESS_LOG": "false",
            "VIDEOCONF_LOG_LEVEL": "WARNING",
            "VIDEOCONF_ACCESS_TOKEN_TTL": "7200",
            "VIDEOCONF_PASSWORD_HASHING__TIME_COST": "1",
            "VIDEOCONF_PASSWORD_HASHING__MEMORY_KIB": "1024",
            "VIDEOCONF_PASSWORD_HASHING__PARALLELISM": "1",
        }
        for rule in ("login_per_ip", "login_per_account", "register_per_ip", "code_lookup_per_ip", "passcode_per_user"):
            for field, value in loose.items():
                self.env[f"VIDEOCONF_RATE_LIMITS__{rule.upper()}__{field.upper()}"] = value
        if backend == "postgres":
            self.schema = f"vc_bench_{uuid.uuid4().hex[:8]}"
            self.env["VIDEOCONF_DATABASE_URL"] = POSTGRES_URL
            self.env["VIDEOCONF_DATABASE_SCHEMA"] = self.schema
            self.env["VIDEOCONF_REDIS_URL"] = REDIS_URL
            self.env["VIDEOCONF_REDIS_PREFIX"] = f"vcbench:{uuid.uuid4().hex[:8]}:"
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", f'CREATE SCHEMA "{self.schema}"'], check=True)
        self.cli = [sys.executable, "-m", "videoconf.cli"]
        self.child = ChildProcess(pinned(0, [*self.cli, "run"]), env=self.env, output=workdir / "server.log")

    def start(self) -> None:
        subprocess.run([*self.cli, "migrate"], env=self.env, check=True, capture_output=True)
        self.child.start(lambda: listening(self.port), 30, "the server")

    def stop(self) -> None:
        self.child.stop()
        if self.schema:
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", f'SET client_min_messages = warning; DROP SCHEMA "{self.schema}" CASCADE'], check=True)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.child.pid)


async def seed(base: str, users: int) -> dict[str, Any]:
    """A host with a live meeting and ``users`` people; each hosts 3 meetings and is invited to 5."""
    async with aiohttp.ClientSession() as http:

        async def call(method: str, path: str, token: str | None = None, body: Any = None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.request(method, base + path, json=body, headers=headers) as response:
                assert response.status < 300, (path, response.status, await response.text())
                return await response.json() if response.status != 204 else None

        people = []
        for i in range(users):
            account = await call("POST", "/api/auth/register", body={"email": f"user{i}@bench.example", "password": PASSWORD, "display_name": f"User {i}"})
            people.append(account)
        host = people[0]["access_token"]
        room = await call("POST", "/api/meetings", host, {"title": "Benchmark room", "kind": "instant"})
        emails = [f"user{i}@bench.example" for i in range(users)]
        for person in people:
            for n in range(3):
                await call("POST", "/api/meetings", person["access_token"], {
                    "title": f"Own {n}", "kind": "scheduled", "start_time": f"2030-01-0{n + 1}T10:00:00Z"})
        for n in range(5):
            meeting = await call("POST", "/api/meetings", host, {"title": f"Invited {n}", "kind": "scheduled", "start_time": f"2030-02-0{n + 1}T10:00:00Z"})
            await call("POST", f"/api/meetings/{meeting['id']}/invitations", host, {"emails": emails[1:]})
        return {"room": room["id"], "tokens": [p["access_token"] for p in people]}


LUA = """
local tokens = {%(tokens)s}
local method, path, body = "%(method)s", "%(path)s", %(body)s
math.randomseed(os.time())
request = function()
  local headers = {["Authorization"] = "Bearer " .. tokens[math.random(#tokens)]}
  if body then headers["Content-Type"] = "application/json" end
  return wrk.format(method, path, headers, body)
end
"""


def wrk(base: str, method: str, path: str, tokens: list[str], body: str | None, duration: int, connections: int, server: Server) -> dict[str, Any]:
    script = LUA % {
        "tokens": ",".join(f'"{t}"' for t in tokens),
        "method": method,
        "path": path,
        "body": f"'{body}'" if body is not None else "nil",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    cpu_before = server.cpu_seconds()
    started = time.monotonic()
    out = subprocess.run(
        pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", handle.name, base + path]),
        capture_output=True, text=True, check=True,
    ).stdout
    elapsed = time.monotonic() - started
    cpu = (server.cpu_seconds() - cpu_before) / elapsed
    os.unlink(handle.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    socket_errors = re.search(r"Socket errors: (.*)", out)

    def percentile(p: str) -> float:
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {
        "requests_per_second": rps,
        "p50_ms": percentile("50"),
        "p99_ms": percentile("99"),
        "non_2xx": errors,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
        "server_cpu_cores": round(cpu, 3),
    }


async def fixed_rate(base: str, method: str, path: str, tokens: list[str], body: Any, rate: int, duration: int) -> dict[str, Any]:
    """Open loop: request i is due at start + i/rate; its latency counts from then."""
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as http:
        loop = asyncio.get_running_loop()
        total = rate * duration
        start = loop.time() + 0.2

        async def one(i: int) -> None:
            nonlocal failures
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            async with http.request(method, base + path, json=body, headers=headers) as response:
                await response.read()
                if response.status >= 300:
                    failures += 1
            latencies.append((loop.time() - due) * 1000)

        await asyncio.gather(*(one(i) for i in range(total)))
    latencies.sort()
    return {
        "rate": rate,
        "requests": len(latencies),
        "failures": failures,
        "p50_ms": round(latencies[len(latencies) // 2], 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
        "max_ms": round(latencies[-1], 3),
    }


def median_of(trials: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in trials[0].items() if isinstance(v, (int, float))]
    result = {k: median([t[k] for t in trials], 3) for k in keys}
    result["trials"] = trials
    return result


def run_fixed_rate_pinned(args: argparse.Namespace, base: str, path: str, tokens: list[str]) -> dict[str, Any]:
    """The open-loop client runs in its own process on the load core."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"base": base, "path": path, "tokens": tokens}, handle)
    out = subprocess.run(
        pinned(1, [sys.executable, "-m", "benchmarks.api_bench", "--fixed-rate-worker", handle.name,
                   "--rate", str(args.rate), "--duration", str(args.duration)]),
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    os.unlink(handle.name)
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--fixed-rate-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.fixed_rate_worker:
        spec = json.loads(Path(args.fixed_rate_worker).read_text())
        print(json.dumps(asyncio.run(fixed_rate(spec["base"], "POST", spec["path"], spec["tokens"], {}, args.rate, args.duration))))
        return
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    with tempfile.TemporaryDirectory() as workdir:
        server = Server(args.backend, Path(workdir))
        server.start()
        try:
            data = asyncio.run(seed(server.base, args.users))
            join_path = f"/api/meetings/{data['room']}/join"
            cases = {
                "healthz": ("GET", "/healthz", None),
                "join": ("POST", join_path, "{}"),
                "list_my_meetings": ("GET", "/api/meetings/my-meetings?limit=20", None),
                "list_upcoming": ("GET", "/api/meetings/upcoming?limit=20", None),
            }
            trials: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
            trials["join_fixed_rate"] = []
            for trial in range(args.trials):
                for name, (method, path, body) in cases.items():
                    result = wrk(server.base, method, path, data["tokens"], body, args.duration, args.connections, server)
                    trials[name].append(result)
                    print(f"trial {trial + 1} {name}: {result['requests_per_second']:.0f} req/s, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, server CPU {result['server_cpu_cores']:.2f}", flush=True)
                result = run_fixed_rate_pinned(args, server.base, join_path, data["tokens"])
                trials["join_fixed_rate"].append(result)
                print(f"trial {trial + 1} join at {args.rate}/s: p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, failures {result['failures']}", flush=True)
        finally:
            server.stop()

    summary = {name: median_of(values) for name, values in trials.items()}
    baseline = summary["healthz"]["requests_per_second"]
    report = {
        "benchmark": "control API",
        "backend": args.backend + (" + redis" if args.backend == "postgres" else ""),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"duration_s": args.duration, "connections": args.connections, "trials": args.trials, "fixed_rate": args.rate, "server_cores": 1},
        "results": summary,
        "ratios_to_healthz": {
            name: round(summary[name]["requests_per_second"] / baseline, 3) for name in cases if name != "healthz"
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"api-{args.backend}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
