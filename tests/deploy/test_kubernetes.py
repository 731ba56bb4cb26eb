"""The Kubernetes manifests (deploy/kubernetes): every kustomization builds and is valid Kubernetes,
the YAML is clean, and, what no tool checks, the manifests agree with the product itself: the
rendered ConfigMap and each pod's environment load into the real ``Settings`` in production mode,
and the ports, probes, commands, Services, Ingress paths and policies match what those settings
and the code serve.

The tools (kubectl's kustomize, kubernetes-validate, yamllint) are required: a missing one fails
the test that needs it, with the reason.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import make_settings
from turn.config import TurnSettings
from videoconf import cli
from videoconf.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
RENDERINGS = {
    "base": KUBERNETES / "base",
    "production": KUBERNETES / "overlays" / "production",
    "single-node": KUBERNETES / "overlays" / "single-node",
}
OPTIONAL = KUBERNETES / "optional"
SECRET_TEMPLATE = KUBERNETES / "base" / "secret.example.yaml"
KUBERNETES_VERSION = "1.30.0"  # kubernetes-validate ships schemas for 1.25 to 1.37
IMAGE_UID = 10001  # the image's user (the brief); the Dockerfile, once written, decides
HOST_IP = "192.0.2.10"  # what status.hostIP gives a pod in these tests
PLACEHOLDER = "CHANGE-ME"
SFU, TURN, MIGRATE = "videoconf-sfu", "videoconf-turn", "videoconf-migrate"


# Tools and renderings -------------------------------------------------------------------------


def tool(name: str) -> str:
    """The path of a command-line tool: the virtual environment's first, then PATH's."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is needed for this test and is not installed (not in {beside.parent} nor on PATH)"
        )
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


@functools.cache
def kustomized(directory: Path) -> str:
    built = run(tool("kubectl"), "kustomize", str(directory))
    if built.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory.relative_to(ROOT)} failed:\n{built.stderr}")
    return built.stdout


def documents(directory: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(kustomized(directory)) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def container(workload: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    if name is None:
        assert len(containers) == 1, f"{workload['metadata']['name']} has {len(containers)} containers"
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def ports(spec: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """A container's named ports: name -> (port, protocol)."""
    return {p["name"]: (p["containerPort"], p.get("protocol", "TCP")) for p in spec.get("ports", [])}


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def sfu_pod_names(docs: list[dict[str, Any]]) -> list[str]:
    return [f"{SFU}-{index}" for index in range(find(docs, "StatefulSet", SFU)["spec"]["replicas"])]


def validate(manifest: Path) -> list[str]:
    """kubernetes-validate's verdict on each document of ``manifest``, strictly; fails on an error."""
    checked = run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(manifest))
    lines = checked.stdout.splitlines() + checked.stderr.splitlines()
    assert checked.returncode == 0, "\n".join(lines)
    return lines


# The product's settings as a pod gets them ------------------------------------------------------


def secret_template() -> dict[str, str]:
    secret = yaml.safe_load(SECRET_TEMPLATE.read_text())
    return dict(secret["stringData"])


def strong(values: dict[str, str]) -> dict[str, str]:
    """The template's values with each placeholder replaced by a strong random secret (what an
    operator following its comment puts there)."""
    return {key: value.replace(PLACEHOLDER, secrets.token_urlsafe(48)) for key, value in values.items()}


def pod_environment(
    pod: dict[str, Any], spec: dict[str, Any], pod_name: str, secret: dict[str, str]
) -> dict[str, str]:
    """A container's environment as the kubelet makes it: ``envFrom`` first, then ``env`` in
    order, each value's ``$(VAR)`` expanded from the variables defined before it (an unknown
    one stays as written, as in Kubernetes)."""
    environment: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        assert set(source) == {"secretRef"}, f"unexpected envFrom {source}"
        assert source["secretRef"]["name"] == "videoconf", "the pods' Secret is the template's"
        environment.update(secret)
    fields = {"metadata.name": pod_name, "status.hostIP": HOST_IP, "metadata.namespace": pod["namespace"]}
    for entry in spec.get("env", []):
        if "value" in entry:
            value = re.sub(
                r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)",
                lambda m: "$" if m.group(0) == "$$" else environment.get(m.group(1), m.group(0)),
                entry["value"],
            )
        elif "secretKeyRef" in entry["valueFrom"]:
            reference = entry["valueFrom"]["secretKeyRef"]
            assert reference["name"] == "videoconf", "the pods' Secret is the template's"
            assert reference["key"] in secret, f"the Secret template has no key {reference['key']}"
            value = secret[reference["key"]]
        else:
            value = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        environment[entry["name"]] = value
    return environment


def mounted_config(
    docs: list[dict[str, Any]], workload: dict[str, Any], spec: dict[str, Any], path: str
) -> str:
    """The text of the file at ``path`` in the container: a ConfigMap's key on a mounted volume."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    for mount in spec["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "configMap" in volume and path.startswith(mount["mountPath"].rstrip("/") + "/"):
            key = path[len(mount["mountPath"].rstrip("/")) + 1 :]
            data = find(docs, "ConfigMap", volume["configMap"]["name"])["data"]
            assert key in data, f"{path}: the ConfigMap has no key {key}"
            return data[key]
    raise AssertionError(f"{path} is on no ConfigMap volume of {workload['metadata']['name']}")


def load_pod_settings(
    docs: list[dict[str, Any]],
    workload: dict[str, Any],
    pod_name: str,
    secret: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    """The real Settings of a pod of ``workload``: its mounted TOML file and its environment,
    with nothing else from this process's environment."""
    pod = {"namespace": workload["metadata"]["namespace"]}
    spec = container(workload)
    environment = pod_environment(pod, spec, pod_name, secret)
    config = tmp_path / f"{pod_name}.toml"
    config.write_text(mounted_config(docs, workload, spec, environment["VIDEOCONF_CONFIG"]))
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("VIDEOCONF_")]:
            patch.delenv(name)
        for name, value in environment.items():
            if name.startswith("VIDEOCONF_"):
                patch.setenv(name, value)
        patch.setenv("VIDEOCONF_CONFIG", str(config))
        if spec.get("args", spec.get("command", []))[-1:] == ["turn"]:
            # as `videoconf turn` loads them: with no token signing key, which it is not given
            assert not {"VIDEOCONF_ACCESS_TOKEN_SECRET", "VIDEOCONF_ROOM_TOKEN_SECRET"} & set(environment)
            return load_settings(secrets_needed=())
        return load_settings()


@pytest.fixture(params=list(RENDERINGS))
def rendering(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return documents(RENDERINGS[request.param])


@pytest.fixture
def node(rendering: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The first SFU node's settings in a rendering."""
    return load_pod_settings(
        rendering,
        find(rendering, "StatefulSet", SFU),
        f"{SFU}-0",
        strong(secret_template()),
        tmp_path,
        monkeypatch,
    )


# 1-3: the tools' verdicts ----------------------------------------------------------------------


@pytest.mark.parametrize("name", list(RENDERINGS))
def test_each_kustomization_builds_and_every_document_is_valid_kubernetes(name: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(kustomized(RENDERINGS[name]))
    count = len(documents(RENDERINGS[name]))
    lines = validate(manifest)
    passed = [line for line in lines if " passed for resource " in line]
    others = [line for line in lines if line not in passed]
    assert not others, (
        "kubernetes-validate warned or failed (a kind it has no schema for is not checked):\n"
        + "\n".join(others)
    )
    assert len(passed) == count >= 10


def test_the_secret_template_is_valid_kubernetes_but_never_part_of_a_kustomization() -> None:
    assert [line for line in validate(SECRET_TEMPLATE) if " passed for resource secret/videoconf " in line]
    for name, directory in RENDERINGS.items():
        assert not of_kind(documents(directory), "Secret"), (
            f"{name} renders a Secret: secrets stay out of git"
        )


def test_the_optional_pod_monitors_are_well_formed_and_select_the_pods_ports(tmp_path: Path) -> None:
    """kubernetes-validate has no schemas for custom resources: it only warns ("Couldn't find
    schema") and passes them, so the PodMonitors' structure is checked here."""
    manifest = tmp_path / "optional.yaml"
    manifest.write_text(kustomized(OPTIONAL))
    verdicts = validate(manifest)
    assert not [line for line in verdicts if "ERROR" in line]
    monitors = documents(OPTIONAL)
    assert {m["kind"] for m in monitors} == {"PodMonitor"} and len(monitors) == 2
    base = documents(RENDERINGS["base"])
    workloads = [find(base, "StatefulSet", SFU), find(base, "DaemonSet", TURN)]
    template = secret_template()
    scraped = set()
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["namespace"] == "videoconf"
        assert set(monitor["spec"]) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
        selector = monitor["spec"]["selector"]
        assert set(selector) == {"matchLabels"}
        chosen = [w for w in workloads if selects(selector["matchLabels"], pod_labels(w))]
        assert len(chosen) == 1, f"{monitor['metadata']['name']} should select exactly one workload's pods"
        workload = chosen[0]
        scraped.add(workload["metadata"]["name"])
        endpoints = monitor["spec"]["podMetricsEndpoints"]
        assert endpoints
        for endpoint in endpoints:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "authorization", "scheme"}
            assert endpoint["port"] in ports(container(workload)), f"no port {endpoint['port']} on the pods"
            assert endpoint["path"] == "/metrics"
            assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
            if workload["metadata"]["name"] == SFU:
                # The node answers /metrics to loopback only, or to the bearer metrics_token.
                auth = endpoint["authorization"]
                assert auth["type"] == "Bearer"
                assert auth["credentials"]["name"] == "videoconf"
                assert (
                    auth["credentials"]["key"] == "VIDEOCONF_METRICS_TOKEN"
                    and auth["credentials"]["key"] in template
                )
    assert scraped == {SFU, TURN}


def test_yamllint_finds_nothing_in_the_kubernetes_manifests() -> None:
    shared = ROOT / "deploy" / ".yamllint.yml"
    config = ["-c", str(shared)] if shared.exists() else ["-d", "extends: default"]
    linted = run(tool("yamllint"), "--strict", "-f", "parsable", *config, str(KUBERNETES))
    assert linted.returncode == 0, linted.stdout + linted.stderr


# 4: agreement with the product ---------------------------------------------------------------


def test_the_secret_templates_placeholders_are_refused_by_production_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = documents(RENDERINGS["base"])
    with pytest.raises(ConfigError) as refused:
        load_pod_settings(
            docs, find(docs, "StatefulSet", SFU), f"{SFU}-0", secret_template(), tmp_path, monkeypatch
        )
    message = str(refused.value)
    for name in ("access_token_secret is weak", "room_token_secret is weak", "turn.secrets[0] is weak"):
        assert name in message


def test_every_pod_loads_production_settings_from_the_config_map_and_its_environment(
    rendering: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = strong(secret_template())
    for index, pod_name in enumerate(sfu_pod_names(rendering)):
        node = load_pod_settings(
            rendering, find(rendering, "StatefulSet", SFU), pod_name, secret, tmp_path, monkeypatch
        )
        assert node.env == "production" and node.cluster
        assert (
            node.redis_url == secret["VIDEOCONF_REDIS_URL"]
            and node.database_url == secret["VIDEOCONF_DATABASE_URL"]
        )
        assert node.node_id == pod_name, index
        assert node.ice_addresses == [HOST_IP]
        assert (
            node.signaling_url
            == f"wss://{urlsplit(node.public_url or '').hostname}/nodes/{pod_name}/signaling"
        )
        for network in node.trusted_proxies:
            ipaddress.ip_network(network)
    turn = load_pod_settings(
        rendering, find(rendering, "DaemonSet", TURN), "turn", secret, tmp_path, monkeypatch
    )
    assert turn.turn.relay_ip == HOST_IP and turn.turn.secrets
    migrate = load_pod_settings(
        rendering, find(rendering, "Job", MIGRATE), "migrate", secret, tmp_path, monkeypatch
    )
    assert migrate.database_url == secret["VIDEOCONF_DATABASE_URL"]


def test_the_sfu_ports_are_the_settings_ports(rendering: list[dict[str, Any]], node: Settings) -> None:
    sfu = find(rendering, "StatefulSet", SFU)
    spec = sfu["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    named = ports(container(sfu))
    assert named["http"] == (node.port, "TCP")
    assert named["media"] == (node.udp_port, "UDP")
    for port in container(sfu)["ports"]:
        assert port.get("hostPort", port["containerPort"]) == port["containerPort"]
    # One node process per Kubernetes node: the host ports would collide.
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["labelSelector"]["matchLabels"], pod_labels(sfu))


def test_the_commands_and_the_prestop_hook_are_real_videoconf_commands_and_the_drain_fits_the_grace(
    rendering: list[dict[str, Any]], node: Settings
) -> None:
    expected = {("StatefulSet", SFU): "run", ("DaemonSet", TURN): "turn", ("Job", MIGRATE): "migrate"}
    for (kind, name), command in expected.items():
        argv = container(find(rendering, kind, name))["command"]
        assert argv[0] == "videoconf"
        assert cli.parser().parse_args(argv[1:]).command == command
    sfu = find(rendering, "StatefulSet", SFU)
    pre_stop = container(sfu)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "videoconf"
    try:
        parsed = cli.parser().parse_args(pre_stop[1:])
    except SystemExit:
        pytest.fail(f"the preStop hook {pre_stop} is not a command `videoconf` knows")
    assert parsed.command == "drain"
    grace = sfu["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > node.drain_seconds
    assert node.drain_seconds <= float(parsed.wait) < grace


def test_the_turn_ports_are_the_turn_settings_from_the_same_file(
    rendering: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = find(rendering, "DaemonSet", TURN)
    settings = load_pod_settings(
        rendering, daemon, "turn", strong(secret_template()), tmp_path, monkeypatch
    ).turn
    assert daemon["spec"]["template"]["spec"]["hostNetwork"] is True
    spec = container(daemon)
    assert sorted(ports(spec).values()) == sorted(
        [
            (settings.udp_port, "UDP"),
            (settings.tcp_port, "TCP"),
            (settings.tls_port, "TCP"),
            (settings.metrics_port, "TCP"),
        ]
    )
    assert ports(spec)["metrics"] == (settings.metrics_port, "TCP")
    assert not ipaddress.ip_address(settings.metrics_host).is_loopback, "the kubelet probes it from the node"
    # TLS from the Secret videoconf-turn-tls, mounted where tls_cert and tls_key point.
    volumes = {v["name"]: v for v in daemon["spec"]["template"]["spec"]["volumes"]}
    (mount,) = [
        m
        for m in spec["volumeMounts"]
        if volumes[m["name"]].get("secret", {}).get("secretName") == "videoconf-turn-tls"
    ]
    assert settings.tls_cert == Path(mount["mountPath"]) / "tls.crt"
    assert settings.tls_key == Path(mount["mountPath"]) / "tls.key"
    # One relay port per allocation: the quota fits in the range.
    assert settings.relay_ports is not None
    low, high = settings.relay_ports
    assert 0 < settings.total_quota <= high - low + 1
    policy = find(rendering, "NetworkPolicy", "allow-turn")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels(daemon))
    rules = policy["spec"]["ingress"]
    allowed = {
        (p["protocol"], p["port"], p.get("endPort", p["port"])) for rule in rules for p in rule["ports"]
    }
    assert allowed == {
        ("UDP", settings.udp_port, settings.udp_port),
        ("TCP", settings.tcp_port, settings.tcp_port),
        ("TCP", settings.tls_port, settings.tls_port),
        ("UDP", low, high),
    }


async def test_the_probes_ask_routes_that_the_node_and_the_turn_server_answer(tmp_path: Path) -> None:
    from turn.service import metrics_app
    from turn.transport import TurnService
    from videoconf.app import create_app

    probed: dict[str, set[str]] = {SFU: set(), TURN: set()}
    pods: set[str] = set()
    for directory in RENDERINGS.values():
        docs = documents(directory)
        pods.update(sfu_pod_names(docs))
        for kind, name in (("StatefulSet", SFU), ("DaemonSet", TURN)):
            spec = container(find(docs, kind, name))
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = spec[probe]["httpGet"]
                assert get["port"] in ports(spec), f"{name} {probe}: no port {get['port']}"
                probed[name].add(get["path"])
            if name == SFU:
                assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz", (
                    "draining shows on /readyz only"
                )
                assert ports(spec)[spec["readinessProbe"]["httpGet"]["port"]][0] == 8080
    async with TestClient(TestServer(create_app(make_settings(tmp_path)), host="127.0.0.1")) as client:
        for path in sorted(probed[SFU]):
            response = await client.get(path)
            assert response.status == 200, path
        for pod in sorted(pods):  # the node's socket under the path the Ingress gives it
            response = await client.get(f"/nodes/{pod}/signaling")
            assert response.status in (400, 426), f"{pod}: {response.status} (404: no such route)"
    async with TestClient(TestServer(metrics_app(TurnService(TurnSettings())), host="127.0.0.1")) as client:
        for path in sorted(probed[TURN]):
            response = await client.get(path)
            assert response.status == 200, path


def service_ports_reach(service: dict[str, Any], workloads: list[dict[str, Any]]) -> None:
    selector = service["spec"]["selector"]
    # A per-node Service also names its pod (a label the StatefulSet controller adds to each pod).
    common = {key: value for key, value in selector.items() if key != "statefulset.kubernetes.io/pod-name"}
    chosen = [w for w in workloads if selects(common, pod_labels(w))]
    assert len(chosen) == 1, f"Service {service['metadata']['name']} selects no workload's pods"
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports(container(chosen[0])), (
            f"{service['metadata']['name']}: {port['targetPort']}"
        )


def test_services_the_pdb_and_the_policies_select_the_pods_and_reach_their_named_ports(
    rendering: list[dict[str, Any]], node: Settings
) -> None:
    sfu = find(rendering, "StatefulSet", SFU)
    workloads = [sfu, find(rendering, "DaemonSet", TURN)]
    assert selects(sfu["spec"]["selector"]["matchLabels"], pod_labels(sfu))
    services = {s["metadata"]["name"]: s for s in of_kind(rendering, "Service")}
    assert sfu["spec"]["serviceName"] in services
    for service in services.values():
        service_ports_reach(service, workloads)
    api = services["videoconf-api"]
    assert api["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in api["spec"]["ports"]] == [(80, "http")]
    assert ports(container(sfu))["http"][0] == node.port
    pdb = find(rendering, "PodDisruptionBudget", SFU)
    assert pdb["spec"]["maxUnavailable"] == 1 and selects(
        pdb["spec"]["selector"]["matchLabels"], pod_labels(sfu)
    )
    policies = {p["metadata"]["name"]: p for p in of_kind(rendering, "NetworkPolicy")}
    assert policies["default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    def allowed(name: str) -> tuple[set[str], set[tuple[str, int]]]:
        rules = policies[name]["spec"]["ingress"]
        sources = {
            s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for r in rules
            for s in r.get("from", [])
        }
        return sources, {(p["protocol"], p["port"]) for r in rules for p in r["ports"]}

    assert selects(
        policies["allow-ingress-controller"]["spec"]["podSelector"]["matchLabels"], pod_labels(sfu)
    )
    assert allowed("allow-ingress-controller") == ({"ingress-nginx"}, {("TCP", node.port)})
    assert allowed("allow-prometheus") == (
        {"monitoring"},
        {("TCP", node.port), ("TCP", node.turn.metrics_port)},
    )
    assert allowed("allow-sfu-media") == (set(), {("UDP", node.udp_port)})


def nginx_size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmMgG]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit.lower()]


def test_the_ingress_serves_the_public_host_and_one_path_per_node_for_the_replica_count(
    rendering: list[dict[str, Any]], node: Settings
) -> None:
    ingress = find(rendering, "Ingress", "videoconf")
    services = {s["metadata"]["name"]: s for s in of_kind(rendering, "Service")}
    host = urlsplit(node.public_url or "").hostname
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == host == urlsplit(node.signaling_url or "").hostname
    assert ingress["spec"]["tls"] == [{"hosts": [host], "secretName": "videoconf-tls"}]
    paths = {p["path"]: p for p in rule["http"]["paths"]}
    assert paths["/"]["backend"]["service"]["name"] == "videoconf-api"
    per_node = {path for path in paths if path.startswith("/nodes/")}
    pods = sfu_pod_names(rendering)
    assert per_node == {f"/nodes/{pod}/" for pod in pods}
    assert urlsplit(node.signaling_url or "").path == f"/nodes/{SFU}-0/signaling"
    for path, entry in paths.items():
        assert entry["pathType"] == "Prefix"
        backend = entry["backend"]["service"]
        service = services[backend["name"]]
        assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
        if path in per_node:
            assert service["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == path.split("/")[2]
    annotations = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[prefix + timeout]) >= 60, (
            "signaling sockets ping every 15 s and live for hours"
        )
    assert nginx_size(annotations[prefix + "proxy-body-size"]) >= node.max_body_bytes


def dockerfile_uid() -> int:
    dockerfile = ROOT / "Dockerfile"
    if not dockerfile.exists():
        return IMAGE_UID
    text = dockerfile.read_text()
    found = re.search(r"(?:--uid[= ]|\s-u\s+)(\d+)", text) or re.search(r"^USER\s+(\d+)", text, re.MULTILINE)
    assert found, "the Dockerfile names no numeric uid for its user"
    return int(found.group(1))


def pod_security(workload: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    pod = workload["spec"]["template"]["spec"]
    for spec in pod["containers"] + pod.get("initContainers", []):
        yield pod.get("securityContext", {}), spec


def test_every_container_runs_as_the_images_user_read_only_and_writes_only_to_volumes(
    rendering: list[dict[str, Any]], node: Settings
) -> None:
    uid = dockerfile_uid()
    for kind, name in (("StatefulSet", SFU), ("DaemonSet", TURN), ("Job", MIGRATE)):
        workload = find(rendering, kind, name)
        for pod, spec in pod_security(workload):
            context = pod | spec.get("securityContext", {})
            assert context["runAsNonRoot"] is True and context["runAsUser"] == uid, name
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            writable = {m["mountPath"] for m in spec["volumeMounts"] if not m.get("readOnly")}
            assert "/tmp" in writable, name
    sfu = find(rendering, "StatefulSet", SFU)
    data = [m for m in container(sfu)["volumeMounts"] if m["name"] == "data"]
    assert [m["mountPath"] for m in data] == [str(node.data_dir)]
    assert node.effective_recordings_dir.is_relative_to(node.data_dir)
    assert [t["metadata"]["name"] for t in sfu["spec"]["volumeClaimTemplates"]] == ["data"]
    assert sfu["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == uid
    resources = container(sfu)["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == "1", (
        "one node process forwards on one core"
    )
