"""HTTPS served by the node itself: the development certificate authority, a certificate that is
loaded again on SIGHUP (and a bad one that is refused), and Chromium joining a meeting by a host
name over HTTPS with camera and microphone, trusting the development certificate through its
key alone, while the same page over plain HTTP gets no camera and says why."""

from __future__ import annotations

import asyncio
import datetime
import re
import signal
import socket
import stat
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.media.browser import chromium
from tests.media.conftest import until
from tests.media.test_web_client import person
from tests.server_process import ServerProcess, request, unverified
from videoconf.tls import dev_certificate

HOST = "videoconf.test"


def _sans(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {str(v) for v in san.get_values_for_type(x509.IPAddress)}


def _leaf(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def test_the_development_authority_is_made_once_and_the_certificate_keeps_its_key(tmp_path: Path) -> None:
    first = dev_certificate(tmp_path / "tls", [HOST])
    ca = x509.load_pem_x509_certificate(first.ca.read_bytes())
    leaf = _leaf(first.cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    leaf.verify_directly_issued_by(ca)
    assert {HOST, "localhost", "127.0.0.1", socket.gethostname()} <= _sans(leaf)
    for secret in (tmp_path / "tls" / "key.pem", tmp_path / "tls" / "ca-key.pem"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    # Asked again with the same names: nothing is made anew.
    again = dev_certificate(tmp_path / "tls", [HOST])
    assert again.cert.read_bytes() == first.cert.read_bytes() and again == first

    # A new name: the same authority issues a new certificate for the same key.
    widened = dev_certificate(tmp_path / "tls", [HOST, "meet.lan"])
    assert widened.ca.read_bytes() == first.ca.read_bytes()
    assert widened.spki_sha256 == first.spki_sha256
    assert {HOST, "meet.lan"} <= _sans(_leaf(widened.cert))
    assert _leaf(widened.cert).serial_number != leaf.serial_number

    # Near its end, it is issued again, still for the same key.
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=380)
    renewed = dev_certificate(tmp_path / "tls", [HOST], now=later)
    assert _leaf(renewed.cert).not_valid_after_utc > later + datetime.timedelta(days=300)
    assert renewed.spki_sha256 == first.spki_sha256


def _pair(directory: Path, name: str, days: int) -> tuple[Path, Path, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path, cert


def _served(port: int) -> x509.Certificate:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, unverified().wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _metric(server: ServerProcess, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(server.base + "/metrics", timeout=10, context=unverified()) as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} is not on /metrics"
    return float(found.group(1))


def _wait(check: Any, what: str, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_node_serves_https_and_loads_a_renewed_certificate_on_sighup_refusing_a_bad_one(tmp_path: Path) -> None:
    live = tmp_path / "live"
    first_cert, first_key, first = _pair(tmp_path / "a", "first.test", 30)
    second_cert, second_key, second = _pair(tmp_path / "b", "second.test", 90)
    live.mkdir()
    (live / "cert.pem").write_bytes(first_cert.read_bytes())
    (live / "key.pem").write_bytes(first_key.read_bytes())
    server = ServerProcess(
        tmp_path / "data", VIDEOCONF_TLS_CERT=str(live / "cert.pem"), VIDEOCONF_TLS_KEY=str(live / "key.pem")
    )
    assert server.cli("migrate").returncode == 0
    first_line = server.start()
    try:
        assert first_line.startswith(f"VideoConf is running at https://127.0.0.1:{server.port}")
        assert _served(server.port).serial_number == first.serial_number
        assert _metric(server, "videoconf_tls_certificate_expiry_timestamp_seconds") == first.not_valid_after_utc.timestamp()
        health = server.cli("health")
        assert health.returncode == 0 and "https://127.0.0.1" in health.stdout, health.stderr
        # Not TLS, a truncated or oversized handshake, and idle connections: each is dropped
        # alone, the node answers others meanwhile and logs no traceback.
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
        for junk in (b"\x00" * 10, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\xff\xff" + b"A" * 70000):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
                raw.sendall(junk)
                assert raw.recv(100) == b""  # closed, nothing served in plain text
        assert request(server.base + "/healthz")[0] == 200
        for connection in idle:
            connection.close()

        # A renewal (certbot writes new files), then SIGHUP: new connections get the new one.
        (live / "cert.pem").write_bytes(second_cert.read_bytes())
        (live / "key.pem").write_bytes(second_key.read_bytes())
        assert server.process is not None
        server.process.send_signal(signal.SIGHUP)
        _wait(lambda: _served(server.port).serial_number == second.serial_number, "the renewed certificate")
        assert _metric(server, "videoconf_tls_certificate_expiry_timestamp_seconds") == second.not_valid_after_utc.timestamp()

        # A pair that does not match (a renewal half written): refused, the good one stays.
        (live / "cert.pem").write_bytes(first_cert.read_bytes())
        server.process.send_signal(signal.SIGHUP)
        _wait(lambda: "cannot use" in server.child.logged(), "the refusal in the log")
        assert _served(server.port).serial_number == second.serial_number
        assert request(server.base + "/healthz")[0] == 200
        # ... and an unreadable one.
        (live / "key.pem").unlink()
        server.process.send_signal(signal.SIGHUP)
        _wait(lambda: server.child.logged().count("cannot") >= 2, "the second refusal in the log")
        assert _served(server.port).serial_number == second.serial_number
    finally:
        code, log = server.stop()
    assert code == 0, log
    assert "Traceback" not in log


def test_a_certificate_that_cannot_be_loaded_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    cert, _, _ = _pair(tmp_path, "only-cert.test", 30)
    server = ServerProcess(tmp_path / "data", VIDEOCONF_TLS_CERT=str(cert), VIDEOCONF_TLS_KEY=str(tmp_path / "missing.key"))
    result = server.cli("run")
    assert result.returncode == 2
    assert "cannot read the key" in result.stderr and "missing.key" in result.stderr
    half = ServerProcess(tmp_path / "data", VIDEOCONF_TLS_CERT=str(cert))
    result = half.cli("run")
    assert result.returncode == 2 and "set tls_cert and tls_key together" in result.stderr


async def _joined(page: Any) -> dict:
    await page.get_by_role("button", name="Join now").click()
    await page.get_by_role("toolbar", name="Meeting controls").wait_for()
    return await page.evaluate(
        "() => ({secure: window.isSecureContext, protocol: location.protocol, host: location.hostname,"
        " devices: Boolean(navigator.mediaDevices)})"
    )


async def test_chromium_joins_by_host_name_over_https_with_camera_and_microphone_but_not_over_http(tmp_path: Path) -> None:
    secure = ServerProcess(
        tmp_path / "secure", VIDEOCONF_TLS_SELF_SIGNED="true", VIDEOCONF_TLS_HOSTNAMES=f'["{HOST}"]',
    )
    plain = ServerProcess(tmp_path / "plain")
    for server in (secure, plain):
        assert server.cli("migrate").returncode == 0
        server.start()
    try:
        pinned = dev_certificate(tmp_path / "secure" / "tls", [HOST])  # made by the node: read, not made again
        assert HOST in pinned.names
        mapping = f"--host-resolver-rules=MAP {HOST} 127.0.0.1"
        https_base, http_base = f"https://{HOST}:{secure.port}", f"http://{HOST}:{plain.port}"

        # Without the key pinned, Chromium refuses the development certificate: it is not
        # trusted by any blanket flag.
        async with chromium([mapping]) as browser:
            page = await (await browser.new_context()).new_page()
            try:
                await page.goto(https_base + "/")
                raise AssertionError("Chromium accepted the development certificate without trusting it")
            except Exception as exc:  # playwright's Error: net::ERR_CERT_AUTHORITY_INVALID
                assert "ERR_CERT" in str(exc), exc

        async with chromium([mapping, f"--ignore-certificate-errors-spki-list={pinned.spki_sha256}"]) as browser:
            page = await person(browser, https_base, "Ada Secure")
            await page.get_by_role("button", name="New meeting").click()
            state = await _joined(page)
            assert state == {"secure": True, "protocol": "https:", "host": HOST, "devices": True}
            # The camera and the microphone reach the SFU.
            await until(
                lambda: _published(secure), 20, "the browser's audio and video tracks on the node", interval=0.3
            )
            assert not page.errors, page.errors

            # Plain HTTP by the same kind of name: no camera, and the page says why.
            page = await person(browser, http_base, "Bob Plain")
            await page.get_by_role("button", name="New meeting").click()
            alert = page.get_by_role("alert").filter(has_text="secure pages")
            await alert.wait_for()
            text = await alert.inner_text()
            assert "plain HTTP" in text and http_base in text and "https://" in text
            state = await _joined(page)  # joining without media still works
            assert state == {"secure": False, "protocol": "http:", "host": HOST, "devices": False}
            assert not page.errors, page.errors
        assert _metric(plain, 'videoconf_sfu_tracks{kind="video"}') == 0
    finally:
        for server in (secure, plain):
            server.stop()


async def _published(server: ServerProcess) -> bool:
    loop = asyncio.get_running_loop()
    audio, video = await loop.run_in_executor(
        None, lambda: (_metric(server, 'videoconf_sfu_tracks{kind="audio"}'), _metric(server, 'videoconf_sfu_tracks{kind="video"}'))
    )
    return audio == 1 and video == 1

