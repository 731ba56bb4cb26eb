"""deploy/nginx/*.conf as nginx runs them, in front of real nodes (``videoconf run`` processes).

Each committed file is included, as it is, in a small main configuration; only the values it
marks CHANGE (ports, certificate, paths, node addresses) and the API's read timeout are
replaced, and each replacement must match exactly as often as expected, so that an edit of the
file breaks this test loudly instead of testing something else.  A client reaches nginx as
``videoconf.test`` (a resolver of its own sends that name to 127.0.0.1) and trusts only the
test's own certificate, made with openssl.  Clients take addresses of 127.0.0.0/8 as their own,
so that the node can be seen telling them apart.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDictProxy
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from clients.loadtest.process import ChildProcess, free_port, listening
from tests.api.signaling import PROTOCOL, receive
from tests.faults.node import NODE_ENV, PASSWORD
from tests.server_process import ServerProcess

NGINX_DIR = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
HOST = "videoconf.test"
HSTS = "max-age=63072000"
LOGIN_PER_IP = 3  # the single-host node's login budget per client address (per hour)
# The proxy's read timeout for API answers, shortened from 60 s so that a signaling socket can
# outlast it within a test: the signaling locations must keep their own, long one.
API_READ_TIMEOUT = 2


def tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{name} is not installed (Debian package {package}): nothing proves the proxy works")
    return path


@dataclass(frozen=True)
class Substitution:
    old: str
    new: str
    times: int = 1


def rendered(name: str, substitutions: list[Substitution]) -> str:
    """The committed ``deploy/nginx/<name>`` with its CHANGE values replaced."""
    text = (NGINX_DIR / name).read_text()
    for sub in substitutions:
        found = text.count(sub.old)
        assert found == sub.times, (
            f"deploy/nginx/{name}: expected {sub.old!r} {sub.times} time(s), found {found}; "
            "the file changed: update this test with it"
        )
        text = text.replace(sub.old, sub.new)
    return text


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def self_signed(directory: Path) -> Certificate:
    directory.mkdir(parents=True, exist_ok=True)
    made = Certificate(directory / "fullchain.pem", directory / "privkey.pem")
    result = subprocess.run(
        [
            tool("openssl", "openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(made.key), "-out", str(made.cert),
            "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}",
        ],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return made


@dataclass(frozen=True)
class Site:
    """Where a rendered configuration serves: its ports, certificate, webroot and access log."""

    directory: Path
    http_port: int
    https_port: int
    certificate: Certificate

    @property
    def webroot(self) -> Path:
        return self.directory / "webroot"

    @property
    def access_log(self) -> Path:
        return self.directory / "access.log"

    @property
    def https(self) -> str:
        return f"https://{HOST}:{self.https_port}"

    @property
    def http(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def wss(self) -> str:
        return f"wss://{HOST}:{self.https_port}"

    def substitutions(self, access_log: str) -> list[Substitution]:
        """What both files mark CHANGE.  The IPv6 listeners go: the test binds 127.0.0.1 only."""
        cert, key = self.certificate.cert, self.certificate.key
        return [
            Substitution("listen 80;", f"listen 127.0.0.1:{self.http_port};"),
            Substitution("listen [::]:80;", ""),
            Substitution("listen 443 ssl http2;", f"listen 127.0.0.1:{self.https_port} ssl http2;"),
            Substitution("listen [::]:443 ssl http2;", ""),
            Substitution("server_name meet.example.com;", f"server_name {HOST};", 2),
            Substitution("/etc/letsencrypt/live/meet.example.com/fullchain.pem", str(cert)),
            Substitution("/etc/letsencrypt/live/meet.example.com/privkey.pem", str(key)),
            Substitution("root /var/www/letsencrypt;", f"root {self.webroot};"),
            Substitution(f"access_log {access_log} ", f"access_log {self.access_log} "),
            Substitution("proxy_read_timeout 60s;", f"proxy_read_timeout {API_READ_TIMEOUT}s;"),
        ]


def new_site(directory: Path) -> Site:
    return Site(directory, free_port(), free_port(), self_signed(directory / "tls"))


class Nginx:
    """nginx in the foreground, its prefix, pid, temporary files and logs in ``site.directory``,
    with a main configuration whose ``http`` block includes ``config`` (a rendered file)."""

    def __init__(self, site: Site, config: str) -> None:
        self.site = site
        root = site.directory
        (root / "site.conf").write_text(config)
        site.webroot.mkdir(parents=True, exist_ok=True)
        kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        temp_paths = "".join(f"    {kind}_temp_path {root / kind};\n" for kind in kinds)
        user = "user root;\n" if os.geteuid() == 0 else ""  # not "nobody", who cannot write here
        (root / "nginx.conf").write_text(
            f"{user}pid {root / 'nginx.pid'};\nworker_processes 1;\n"  # errors: to stderr, as -e says
            f"events {{\n    worker_connections 256;\n}}\n"
            f"http {{\n{temp_paths}    access_log {root / 'other.log'};\n"
            f"    include {root / 'site.conf'};\n}}\n"
        )
        nginx = tool("nginx", "nginx-light")
        self.command = [nginx, "-p", str(root), "-c", str(root / "nginx.conf"), "-e", "stderr"]
        self.child = ChildProcess([*self.command, "-g", "daemon off;"], output=root / "nginx.log")

    def start(self) -> None:
        checked = subprocess.run([*self.command, "-t"], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, f"nginx -t refused the configuration:\n{checked.stderr}"
        ports = (self.site.http_port, self.site.https_port)
        self.child.start(lambda: all(listening(port) for port in ports), 10, "nginx")

    def stop(self) -> None:
        self.child.stop(signal.SIGQUIT, timeout=10)  # graceful, as `nginx -s quit`


class StaticResolver(AbstractResolver):
    """``videoconf.test`` is 127.0.0.1, as a DNS record would say; other names do not exist."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != HOST:
            raise OSError(f"{host} is not resolved in this test")
        return [
            ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0)
        ]

    async def close(self) -> None:
        return None


def verifying(certificate: Certificate, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client context that trusts the test's certificate alone (and speaks only ``version``)."""
    context = ssl.create_default_context(cafile=str(certificate.cert))
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


def client(site: Site, source: str = "127.0.0.1") -> aiohttp.ClientSession:
    """A browser's view of ``videoconf.test``, from the address ``source`` (any of 127.0.0.0/8)."""
    connector = aiohttp.TCPConnector(
        resolver=StaticResolver(), ssl=verifying(site.certificate), local_addr=(source, 0)
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20))


def node_settings(site: Site, **extra: str) -> dict[str, str]:
    return {
        **NODE_ENV,
        "VIDEOCONF_PUBLIC_URL": site.https,
        "VIDEOCONF_TRUSTED_PROXIES": '["127.0.0.1/32"]',  # a list setting: JSON in the environment
        **extra,
    }


def start_node(node: ServerProcess) -> None:
    migrated = node.cli("migrate")
    assert migrated.returncode == 0, migrated.stderr
    node.start()


async def call(
    http: aiohttp.ClientSession, method: str, url: str | URL, body: Any = None, token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    """Status, body (JSON, or text) and headers; redirects are answers, not followed."""
    headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    async with http.request(method, url, json=body, headers=headers, allow_redirects=False) as response:
        data = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, data, response.headers


def refused_by_nginx(status: int, body: Any, headers: CIMultiDictProxy[str], expected: int) -> bool:
    """nginx's own error page, not an answer of the node (which answers in JSON)."""
    own_page = isinstance(body, str) and "<center>nginx</center>" in body
    return status == expected and headers.get("Server") == "nginx" and own_page


async def joined_meeting(http: aiohttp.ClientSession, base: str, email: str) -> dict[str, Any]:
    """A new account's join answer for its new instant meeting: room token and signaling URL."""
    body = {"email": email, "password": PASSWORD, "display_name": email.split("@")[0]}
    status, account, _ = await call(http, "POST", base + "/api/auth/register", body)
    assert status == 201, account
    token = account["access_token"]
    instant = {"title": "Call", "kind": "instant"}
    status, meeting, _ = await call(http, "POST", base + "/api/meetings", instant, token)
    assert status == 201, meeting
    status, joined, _ = await call(http, "POST", base + f"/api/meetings/{meeting['id']}/join", {}, token)
    assert status == 200, joined
    return joined


async def silence() -> None:
    """Nothing sent either way for longer than the API's read timeout (and less than the node's
    join timeout, 10 s): a signaling socket must still be open afterwards.  The duration is the
    condition here, so this is a sleep."""
    await asyncio.sleep(API_READ_TIMEOUT + 1.5)


async def after_silence(ws: aiohttp.ClientWebSocketResponse, message: dict[str, Any]) -> dict[str, Any]:
    """The server's answer to ``message`` (a join or a ping) on a socket that was silent."""
    try:
        await ws.send_json(message)
        return await receive(ws, "joined", "pong", "error")
    except aiohttp.ClientConnectionResetError:
        pytest.fail("the proxy closed a signaling socket silent for longer than an API answer may take")


def join_message(token: str) -> dict[str, Any]:
    return {"type": "join", "protocol": PROTOCOL, "token": token}


# The single-host configuration ------------------------------------------------------------------


@dataclass(frozen=True)
class SingleHost:
    site: Site
    node: ServerProcess


@pytest.fixture(scope="module")
def single_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SingleHost]:
    root = tmp_path_factory.mktemp("single-host")
    site = new_site(root / "nginx")
    limit = {"VIDEOCONF_RATE_LIMITS__LOGIN_PER_IP__LIMIT": str(LOGIN_PER_IP)}
    node = ServerProcess(
        root / "data", log=root / "node.log",
        **node_settings(site, **limit, VIDEOCONF_RATE_LIMITS__LOGIN_PER_IP__PERIOD="3600"),
    )
    nginx = Nginx(site, rendered("videoconf.conf", [
        *site.substitutions(access_log="/var/log/nginx/videoconf.access.log"),
        Substitution("server 127.0.0.1:8080;", f"server 127.0.0.1:{node.port};"),
    ]))
    start_node(node)
    try:
        nginx.start()
        yield SingleHost(site, node)
    finally:
        nginx.stop()
        node.stop()


async def test_the_web_client_and_the_api_are_served_over_https_with_one_hsts_header(
    single_host: SingleHost,
) -> None:
    site = single_host.site
    async with client(site) as http:
        status, page, headers = await call(http, "GET", site.https + "/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert page.startswith("<!doctype html>") and "<title>VideoConf</title>" in page
        assert headers.getall("Strict-Transport-Security") == [HSTS]  # nginx's; the node's is hidden
        status, health, headers = await call(http, "GET", site.https + "/healthz")
        assert (status, health) == (200, {"status": "ok", "checks": {}})
        assert headers.getall("Strict-Transport-Security") == [HSTS]

        account = {"email": "ada@example.com", "password": PASSWORD}
        registration = {**account, "display_name": "Ada"}
        status, _, _ = await call(http, "POST", site.https + "/api/auth/register", registration)
        assert status == 201
        status, login, _ = await call(http, "POST", site.https + "/api/auth/login", account)
        assert status == 200, login
        token = login["access_token"]
        instant = {"title": "Proxied", "kind": "instant"}
        status, meeting, _ = await call(http, "POST", site.https + "/api/meetings", instant, token)
        assert status == 201 and meeting["title"] == "Proxied", meeting
        status, me, _ = await call(http, "GET", site.https + "/api/users/me", token=token)
        assert status == 200 and me["email"] == account["email"]


async def test_the_signaling_websocket_is_upgraded_and_outlives_the_api_timeout(
    single_host: SingleHost,
) -> None:
    site = single_host.site
    async with client(site) as http:
        joined = await joined_meeting(http, site.https, "grace@example.com")
        assert joined["signaling_url"] == site.wss + "/signaling"  # from public_url
        # The path a cluster's signaling_url names reaches the node unchanged (any name).
        async with (
            http.ws_connect(joined["signaling_url"]) as ws,
            http.ws_connect(site.wss + "/nodes/any-name/signaling") as named,
        ):
            await silence()
            answer = await after_silence(ws, join_message(joined["token"]))
            assert answer["type"] == "joined" and answer["protocol"] == 1, answer
            answer = await after_silence(named, join_message("not-a-room-token"))
            assert (answer["type"], answer["code"]) == ("error", "invalid_token"), answer


async def test_plain_http_redirects_to_https_except_for_certificate_challenges(
    single_host: SingleHost,
) -> None:
    site = single_host.site
    challenge = site.webroot / ".well-known" / "acme-challenge" / "token-123"
    challenge.parent.mkdir(parents=True, exist_ok=True)
    challenge.write_text("token-123.thumbprint")
    async with client(site) as http:
        status, _, headers = await call(http, "GET", site.http + "/j/abc-defg-hij?x=1")
        assert status == 301 and headers["Location"] == f"https://{HOST}/j/abc-defg-hij?x=1"
        status, body, _ = await call(http, "GET", site.http + "/.well-known/acme-challenge/token-123")
        assert (status, body) == (200, "token-123.thumbprint")


def test_tls_1_2_and_1_3_are_served_with_the_operators_certificate(single_host: SingleHost) -> None:
    site = single_host.site
    for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        with socket.create_connection(("127.0.0.1", site.https_port), timeout=10) as raw:
            with verifying(site.certificate, version).wrap_socket(raw, server_hostname=HOST) as tls:
                assert tls.version() == name
                assert dict(field[0] for field in tls.getpeercert()["subject"])["commonName"] == HOST


async def test_operator_endpoints_are_refused_by_the_proxy_and_still_answer_on_the_node(
    single_host: SingleHost,
) -> None:
    """Through a proxy on the same host every request comes from loopback, which the node lets
    see /metrics: nginx must refuse them itself, in each spelling the node answers as its own."""
    site = single_host.site
    attempts = [
        ("GET", "/metrics"), ("GET", "/%6Detrics"), ("GET", "/metrics?name[]=x"),
        ("GET", "/api/nodes"), ("POST", "/api/nodes/any-node/drain"),
    ]
    async with client(site) as http:
        for method, path in attempts:
            url = URL(site.https + path, encoded=True)  # sent as written, not normalised by the client
            status, body, headers = await call(http, method, url)
            assert refused_by_nginx(status, body, headers, 403), (path, status, str(body)[:200])
            assert headers.getall("Strict-Transport-Security") == [HSTS], path
    with urllib.request.urlopen(single_host.node.base + "/metrics", timeout=10) as direct:
        metrics = direct.read().decode()
    assert "videoconf_http_requests_total" in metrics
    assert 'route="/metrics"' not in metrics and 'route="/api/nodes"' not in metrics  # none reached it


async def test_a_body_over_the_nodes_limit_gets_the_nodes_error_and_a_huge_one_nginxs(
    single_host: SingleHost,
) -> None:
    site = single_host.site
    over = {"email": "big@example.com", "password": PASSWORD, "display_name": "x" * 100_000}  # node: 64 KiB
    huge = {**over, "display_name": "x" * 200_000}  # nginx: 128 KiB
    async with client(site) as http:
        status, body, _ = await call(http, "POST", site.https + "/api/auth/register", over)
        assert status == 413 and isinstance(body, dict) and body["error"]["code"] == "payload_too_large", body
        status, body, headers = await call(http, "POST", site.https + "/api/auth/register", huge)
        assert refused_by_nginx(status, body, headers, 413), (status, body)


async def test_the_node_sees_each_clients_own_address_and_no_client_can_choose_it(
    single_host: SingleHost,
) -> None:
    """The login budget is per client address (as the node finds it through trusted_proxies):
    one address spends its budget, another keeps its own, and what a client writes in its own
    X-Forwarded-For header changes nothing, even from an address the node trusts."""
    site = single_host.site
    wrong = {"email": "nobody@example.com", "password": "not the password"}

    async def login(source: str, claimed: str | None = None) -> int:
        headers = {"X-Forwarded-For": claimed} if claimed else {}
        async with client(site, source) as http:
            status, _, _ = await call(http, "POST", site.https + "/api/auth/login", wrong, headers=headers)
            return status

    for _ in range(LOGIN_PER_IP):
        assert await login("127.0.0.2") == 401
    assert await login("127.0.0.2") == 429
    assert await login("127.0.0.3") == 401  # had the node seen the proxy's address, 429
    assert await login("127.0.0.2", claimed="198.51.100.7") == 429
    assert await login("127.0.0.1", claimed="127.0.0.2") == 401  # nginx replaces the header, never appends


async def test_nginx_gives_each_request_an_id_that_the_node_and_the_access_log_share(
    single_host: SingleHost,
) -> None:
    site = single_host.site
    async with client(site) as http:
        own_id = {"X-Request-ID": "my-id"}
        status, _, headers = await call(http, "GET", site.https + "/healthz", headers=own_id)
    assert status == 200
    request_id = headers["X-Request-ID"]  # the node's echo of the id it was given
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
    log = site.access_log.read_text().splitlines()
    (line,) = [line for line in log if f"request_id={request_id}" in line]
    assert '"GET /healthz HTTP/1.1" 200' in line


# The cluster configuration ---------------------------------------------------------------------


def requests_to(node: ServerProcess, route: str) -> float:
    """How many GET requests to ``route`` the node answered 200, from its own /metrics."""
    with urllib.request.urlopen(node.base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "videoconf_http_requests_total"
        and sample.labels == {"method": "GET", "route": route, "status": "200"}
    )


async def test_the_cluster_proxy_sends_each_node_its_own_path_and_the_rest_to_either(tmp_path: Path) -> None:
    site = new_site(tmp_path / "nginx")
    nodes = {
        name: ServerProcess(
            tmp_path / name, log=tmp_path / f"{name}.log",
            **node_settings(site, VIDEOCONF_SIGNALING_URL=f"{site.wss}/nodes/{name}/signaling"),
        )
        for name in ("sfu-1", "sfu-2")
    }
    # Docker's names become IPs: nginx needs no resolver for those, so the resolver line stays.
    nginx = Nginx(site, rendered("cluster.conf", [
        *site.substitutions(access_log="/var/log/nginx/access.log"),
        *(Substitution(f"{name}:8080", f"127.0.0.1:{node.port}", 2) for name, node in nodes.items()),
    ]))
    try:
        for node in nodes.values():
            start_node(node)
        nginx.start()
        await check_cluster(site, nodes)
    finally:
        nginx.stop()
        for node in nodes.values():
            if node.process is not None:  # launched
                node.stop()


async def check_cluster(site: Site, nodes: dict[str, ServerProcess]) -> None:
    # Each node makes its own room tokens (its own secrets and database): a token is accepted by
    # the node that made it alone, which tells the nodes apart through the proxy.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as direct:
        joins = {}
        for name, node in nodes.items():
            joins[name] = await joined_meeting(direct, node.base, f"host@{name}.example.com")
    assert {name: joined["signaling_url"] for name, joined in joins.items()} == {
        name: f"{site.wss}/nodes/{name}/signaling" for name in nodes
    }

    async with client(site) as http:
        sockets = {
            (name, maker): await http.ws_connect(joins[name]["signaling_url"])
            for name in joins
            for maker in joins
        }
        anywhere = await http.ws_connect(site.wss + "/signaling")  # either node
        await silence()
        for (name, maker), ws in sockets.items():
            answer = await after_silence(ws, join_message(joins[maker]["token"]))
            expected = ("joined", None) if maker == name else ("error", "invalid_token")
            assert (answer["type"], answer.get("code")) == expected, (name, maker, answer)
        assert await after_silence(anywhere, {"type": "ping", "id": "p1"}) == {"type": "pong", "id": "p1"}
        for ws in [*sockets.values(), anywhere]:
            await ws.close()
        status, body, headers = await call(http, "GET", site.https + "/nodes/sfu-3/signaling")
        assert refused_by_nginx(status, body, headers, 404), (status, body)  # an unknown name goes nowhere
        for path in ("/metrics", "/api/nodes"):
            status, body, headers = await call(http, "GET", site.https + path)
            assert refused_by_nginx(status, body, headers, 403), (path, status, str(body)[:200])

        for _ in range(20):
            status, _, headers = await call(http, "GET", site.https + "/healthz")
            assert status == 200 and headers.getall("Strict-Transport-Security") == [HSTS]
        answered = {name: requests_to(node, "/healthz") for name, node in nodes.items()}
        assert sum(answered.values()) == 20 and min(answered.values()) >= 1, answered  # either node

        nodes["sfu-2"].stop()  # down (stopped, drained, restarting): the other node answers for it
        for _ in range(10):
            status, _, _ = await call(http, "GET", site.https + "/healthz")
            assert status == 200
        assert requests_to(nodes["sfu-1"], "/healthz") == answered["sfu-1"] + 10
