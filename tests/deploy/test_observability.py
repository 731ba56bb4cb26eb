"""Observability as deployed: the Prometheus scrape configuration and alert rules (checked and
unit-tested with promtool), the Grafana dashboard, yamllint over every YAML file in deploy/, and
every metric the dashboard and the alerts name, looked up on a real node's /metrics.

The tools are required: a missing one fails its test, with the name of what to install."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from clients.loadtest.process import free_port
from tests.server_process import ServerProcess, unverified

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "videoconf.json"
ALERTS_TEST = Path(__file__).with_name("alerts_test.yml")
REDIS_URL = "redis://127.0.0.1:6379/0"
GRID_COLUMNS = 24

# Names in PromQL that VideoConf exports (process_* comes from prometheus_client's ProcessCollector);
# `up` and the rest are Prometheus' own.
METRIC_NAME = re.compile(r"\b(?:videoconf|process)_[A-Za-z0-9_]*\b")
# Grafana's variables, replaced by something PromQL accepts in their place.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}


def tool(name: str) -> str:
    """The path of a command: the virtual environment's first (yamllint), then PATH (promtool)."""
    beside_python = Path(sys.executable).with_name(name)
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    assert found, (
        f"{name} is not installed (promtool: Debian's prometheus package; yamllint: the test extras)"
    )
    return found


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those collapsed inside rows included."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]


def variable_queries(board: dict[str, Any]) -> list[str]:
    queries = []
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


# promtool ---------------------------------------------------------------------------------------


def test_promtool_accepts_the_alert_rules() -> None:
    checked = run(tool("promtool"), "check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_promtool_accepts_the_scrape_configuration(tmp_path: Path) -> None:
    """promtool insists that the token file and the rule files exist: the copy points at files in
    ``tmp_path`` instead of the compose secret and mount."""
    token = tmp_path / "metrics_token"
    token.write_text("a token\n")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    text = PROMETHEUS.read_text()
    for deployed, local in (
        ("/run/secrets/metrics_token", token),
        ("/etc/prometheus/alerts.yml", tmp_path / "alerts.yml"),
    ):
        assert deployed in text, f"{PROMETHEUS.name} no longer names {deployed}"
        text = text.replace(deployed, str(local))
    (tmp_path / "prometheus.yml").write_text(text)
    checked = run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout, checked.stdout


def test_prometheus_scrapes_both_nodes_with_the_metrics_token_and_the_turn_server() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"videoconf", "videoconf-turn"}
    nodes = jobs["videoconf"]
    assert nodes.get("metrics_path", "/metrics") == "/metrics"
    assert nodes["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}
    assert [target for group in nodes["static_configs"] for target in group["targets"]] == [
        "sfu-1:8080",
        "sfu-2:8080",
    ]
    turn = jobs["videoconf-turn"]
    assert [target for group in turn["static_configs"] for target in group["targets"]] == [
        "turn:9641"
    ]


def test_each_alert_fires_when_it_should_and_stays_silent_on_healthy_series() -> None:
    tested = run(tool("promtool"), "test", "rules", str(ALERTS_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    # Every alert has a case in the unit tests, and every one has what the runbook and routing need.
    cases = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    tested_alerts = {case["alertname"] for test in cases for case in test["alert_rule_test"]}
    for rule in alert_rules():
        assert rule["alert"] in tested_alerts, f"{rule['alert']} has no case in {ALERTS_TEST.name}"
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    # ... with at least one case where it stays silent and one where it fires.
    for alert in tested_alerts:
        outcomes = {
            bool(case.get("exp_alerts"))
            for test in cases
            for case in test["alert_rule_test"]
            if case["alertname"] == alert
        }
        assert outcomes == {True, False}, f"{alert}: needs a case that fires and one that stays silent"


# yamllint ---------------------------------------------------------------------------------------


def test_every_yaml_file_in_deploy_passes_yamllint() -> None:
    """The whole directory, so that files others add (compose, Kubernetes) are checked too."""
    assert list(DEPLOY.rglob("*.yml")), "no YAML under deploy/"
    linted = run(
        tool("yamllint"), "--strict", "-c", str(DEPLOY / ".yamllint.yml"), str(DEPLOY), str(ALERTS_TEST)
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


# Grafana ----------------------------------------------------------------------------------------


def test_the_dashboard_is_valid_and_its_panels_query_prometheus_without_overlapping() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["instance"]["datasource"]["uid"] == "prometheus"
    every = panels(board)
    assert every, "no panels"
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {sorted(ids)}"
    occupied: dict[tuple[int, int], str] = {}
    for panel in every:
        title = panel["title"]
        assert panel["type"] in {"timeseries", "stat", "gauge", "bargauge", "table", "state-timeline"}, title
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, title
        assert panel["targets"], f"{title}: no target"
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{title}: an empty expression"
            assert target.get("datasource", {"uid": "prometheus"})["uid"] == "prometheus", title
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0, title
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, f"{title}: wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in occupied, f"{title} overlaps {occupied[(x, y)]}"
                occupied[(x, y)] = title


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    """Each panel's query, with Grafana's variables replaced, as a recording rule that promtool
    parses (an unbalanced brace or a misspelt function fails here, not on the operator's screen)."""
    rules = []
    for index, expr in enumerate(dashboard_expressions(dashboard())):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"an unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:expression_{index}", "expr": expr})
    (tmp_path / "dashboard.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    checked = run(tool("promtool"), "check", "rules", str(tmp_path / "dashboard.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# Metric names against a running node -------------------------------------------------------------


def scrape(node: ServerProcess) -> tuple[int, str]:
    """GET /metrics from the node's loopback (no token needed there), over HTTPS unverified."""
    try:
        with urllib.request.urlopen(node.base + "/metrics", timeout=10, context=unverified()) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def exposed_names(text: str) -> set[str]:
    """The sample names a scrape of ``text`` can yield: every sample printed, and for each family
    declared (some have no sample yet, such as a labelled counter nothing has counted) the names
    of its type: a counter's ``_total``, a histogram's ``_bucket``, ``_sum`` and ``_count``."""
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.update(name + suffix for suffix in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_exposed_names_map_histograms_and_counters_to_their_samples() -> None:
    text = (
        "# TYPE videoconf_a_total counter\n"
        "# TYPE videoconf_b_seconds histogram\n"
        'videoconf_b_seconds_bucket{le="+Inf"} 0.0\n'
        "# TYPE videoconf_c gauge\n"
    )
    assert exposed_names(text) == {
        "videoconf_a_total",
        "videoconf_b_seconds_bucket",
        "videoconf_b_seconds_sum",
        "videoconf_b_seconds_count",
        "videoconf_c",
    }


def test_every_metric_the_dashboard_and_the_alerts_name_is_on_a_running_nodes_metrics(tmp_path: Path) -> None:
    board = dashboard()
    used: dict[str, set[str]] = {}
    for source, expressions in (
        ("dashboard", dashboard_expressions(board) + variable_queries(board)),
        ("alerts", [rule["expr"] for rule in alert_rules()]),
    ):
        for expr in expressions:
            for name in METRIC_NAME.findall(expr):
                used.setdefault(name, set()).add(source)
    assert "videoconf_sfu_forward_delay_seconds_bucket" in used and "process_cpu_seconds_total" in used

    node = ServerProcess(
        tmp_path / "data",
        VIDEOCONF_CLUSTER="true",
        VIDEOCONF_REDIS_URL=REDIS_URL,
        VIDEOCONF_REDIS_PREFIX=f"vcobs:{uuid.uuid4().hex[:10]}:",
        VIDEOCONF_TLS_SELF_SIGNED="true",
        VIDEOCONF_ICE_ADDRESSES='["127.0.0.1"]',
        VIDEOCONF_ICE_SERVERS="[]",
        VIDEOCONF_SFU_ICE_SERVERS="[]",
        VIDEOCONF_TURN__ENABLED="true",
        VIDEOCONF_TURN__UDP_PORT=str(free_port(socket.SOCK_DGRAM)),
        VIDEOCONF_TURN__TCP_PORT=str(free_port()),
        VIDEOCONF_TURN__TLS_PORT=str(free_port()),
        VIDEOCONF_TURN__RELAY_PORTS="null",
    )
    migrated = node.cli("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert node.base.startswith("https://"), node.base
    node.start()
    try:
        status, text = scrape(node)
    finally:
        code, log = node.stop()
    assert status == 200, text[:2000]
    assert code == 0, log[-2000:]
    missing = {
        name: sorted(sources) for name, sources in sorted(used.items()) if name not in exposed_names(text)
    }
    assert not missing, f"named but not on /metrics: {missing}"
