"""deploy/compose.yaml: the Compose Specification's schema (check-jsonschema's built-in copy),
then what no schema knows: each node's environment is a configuration the real settings accept
in production mode, and the ports it publishes, the paths nginx routes, the targets Prometheus
scrapes, the files it mounts and the health checks are the ones that configuration serves.
No secret is committed: every secret comes from deploy/.env, whose example leaves them empty."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from videoconf.cli import parser
from videoconf.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
SECRETS = ("POSTGRES_PASSWORD", "ACCESS_TOKEN_SECRET", "ROOM_TOKEN_SECRET", "METRICS_TOKEN", "TURN_SECRET", "GRAFANA_ADMIN_PASSWORD")
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::?[?-][^}]*)?\}")


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def filled() -> dict[str, str]:
    """The example with strong stand-ins for the secrets it leaves empty, as an operator fills it."""
    values = env_example()
    for name in SECRETS:
        values[name] = hashlib.sha256(name.encode()).hexdigest()[:40]
    return values


def interpolate(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: values[m.group(1)], value)
    if isinstance(value, list):
        return [interpolate(v, values) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, values) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), filled())


def test_the_compose_file_follows_the_compose_specification() -> None:
    tool = Path(sys.executable).parent / "check-jsonschema"
    assert tool.exists(), "check-jsonschema is missing: the README's test command installs it"
    result = subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # ... and the schema does catch a mistake of this kind, so the check above means something.
    broken = COMPOSE.with_name(".compose-broken.yaml")
    try:
        broken.write_text(COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restart: sometimes\n    stop_grace: 3\n", 1))
        result = subprocess.run(
            [str(tool), "--builtin-schema", "vendor.compose-spec", str(broken)], capture_output=True, text=True
        )
        assert result.returncode != 0
    finally:
        broken.unlink(missing_ok=True)


def test_no_secret_is_committed_and_every_variable_is_in_the_example() -> None:
    text = COMPOSE.read_text()
    example = env_example()
    used = set(VARIABLE.findall(text))
    assert used <= set(example), f"variables missing from .env.example: {sorted(used - set(example))}"
    for name in SECRETS:
        assert name in used and example[name] == "", f"{name} must come from deploy/.env, empty in the example"
    raw = yaml.safe_load(text)
    for service in raw["services"].values():
        environment = service.get("environment", {})
        for name, value in environment.items() if isinstance(environment, dict) else []:
            if any(word in name for word in ("SECRET", "PASSWORD", "TOKEN")) and name != "VIDEOCONF_TRUSTED_PROXIES":
                assert isinstance(value, str) and VARIABLE.search(value), f"{name} is written in the file"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "deploy/.env" in ignored and "deploy/certs/" in ignored


def node_settings(
    service: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, secrets_needed: tuple[str, ...] | None = None
) -> Settings:
    """The settings a container of ``service`` runs with: the image's environment, then the
    service's (the image's ENV lines come from the Dockerfile)."""
    from tests.deploy.test_container import DOCKERFILE, env_of, stages

    image = env_of(stages(DOCKERFILE.read_text())[-1])
    for name in list(__import__("os").environ):
        if name.startswith("VIDEOCONF_"):
            monkeypatch.delenv(name)
    for name, value in {**image, **service.get("environment", {})}.items():
        if name.startswith("VIDEOCONF_"):
            monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("VIDEOCONF_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VIDEOCONF_RECORDINGS_DIR", str(tmp_path / "recordings"))
    settings = load_settings(None) if secrets_needed is None else load_settings(None, secrets_needed=secrets_needed)
    assert settings.env == "production"
    return settings


def published(service: dict[str, Any]) -> set[str]:
    """``host:container[/protocol]`` of each published port (a host address in front dropped)."""
    return {str(p).split(":", 1)[1] if str(p).count(":") == 2 else str(p) for p in service.get("ports", [])}


def nodes(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("command") is None and "videoconf" in str(s.get("image"))}


def test_each_node_runs_a_valid_production_configuration_whose_ports_paths_and_targets_match(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sfu = nodes(compose)
    assert set(sfu) == {"sfu-1", "sfu-2"}
    cluster_conf = (DEPLOY / "nginx" / "cluster.conf").read_text()
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    scraped = {t for job in prometheus["scrape_configs"] if job["job_name"] == "videoconf" for g in job["static_configs"] for t in g["targets"]}
    ids = set()
    for name, service in sfu.items():
        settings = node_settings(service, monkeypatch, tmp_path / name)
        ids.add(settings.effective_node_id)
        assert settings.cluster and settings.redis_url and settings.database_url.startswith("postgresql://")
        # The media port is published on the same number (ICE announces it).
        assert published(service) == {f"{settings.udp_port}:{settings.udp_port}/udp"}
        # Clients reach this node's signaling through nginx's /nodes/<name>/ route to it.
        assert settings.effective_signaling_url == f"wss://{filled()['PUBLIC_HOST']}/nodes/{name}/signaling"
        assert re.search(rf"^\s*{re.escape(name)}\s+{re.escape(name)}:{settings.port};", cluster_conf, re.M), name
        assert f"{name}:{settings.port}" in scraped
        assert settings.announced_ip == filled()["PUBLIC_IP"]
        # Docker waits for the drain before it kills the node.
        assert float(service["stop_grace_period"].rstrip("s")) > settings.drain_seconds
        assert settings.turn.client_uris() and all(filled()["PUBLIC_HOST"] in uri for uri in settings.turn.client_uris())
    assert len(ids) == len(sfu)
    assert scraped == {f"{name}:8080" for name in sfu}


def test_the_turn_server_publishes_its_listeners_and_relay_range_and_is_scraped(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    service = compose["services"]["turn"]
    assert service["command"] == ["turn"]
    # Least privilege: the TURN server gets its own secret and no token signing key ...
    assert not {"VIDEOCONF_ACCESS_TOKEN_SECRET", "VIDEOCONF_ROOM_TOKEN_SECRET"} & set(service["environment"])
    settings = node_settings(service, monkeypatch, tmp_path, secrets_needed=())  # ... as `videoconf turn` asks
    turn = settings.turn
    ports = published(service)
    assert {f"{turn.udp_port}:{turn.udp_port}/udp", f"{turn.tcp_port}:{turn.tcp_port}/tcp", f"{turn.tls_port}:{turn.tls_port}/tcp"} <= ports
    low, high = turn.relay_ports
    assert f"{low}-{high}:{low}-{high}/udp" in ports
    assert turn.tls_cert is not None and str(turn.tls_cert).startswith("/certs/")
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "videoconf-turn"]
    assert [t for g in job["static_configs"] for t in g["targets"]] == [f"turn:{turn.metrics_port}"]
    assert turn.metrics_host == "0.0.0.0"
    health = service["healthcheck"]["test"]
    assert health[0] == "CMD" and health[1] == "videoconf"
    parsed = parser().parse_args(health[2:])
    assert parsed.command == "health" and parsed.turn


def test_services_start_in_order_and_mount_files_that_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert parser().parse_args(services["migrate"]["command"]).command == "migrate"
    for name in nodes(compose):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["sfu-1"]["build"]["context"] == ".." and (DEPLOY / ".." / services["sfu-1"]["build"]["dockerfile"]).is_file()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and source != "./certs":
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not in deploy/"
            elif not source.startswith(("/", "./")):
                assert source in compose["volumes"], f"{name} uses the undeclared volume {source}"
    # Grafana gets the dashboard and the Prometheus datasource it names.
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services
    assert list((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert services["prometheus"]["secrets"] == ["metrics_token"]
    # Operators' consoles stay on the host's loopback.
    for name in ("prometheus", "grafana"):
        assert all(str(p).startswith("127.0.0.1:") for p in services[name]["ports"]), name
