"""HTTPS served by ``videoconf run`` itself.

Browsers give a page camera and microphone only in a secure context: ``https://`` or
``localhost``.  A node can therefore serve TLS on its own port:

- **An operator's certificate** (``tls_cert``, ``tls_key``: PEM files, e.g. certbot's
  ``fullchain.pem`` and ``privkey.pem``).  The files are read again on SIGHUP and whenever they
  change (checked every ``RELOAD_CHECK`` seconds), so a renewal needs no restart: connections
  already open keep their session, new ones get the new certificate.  A pair that cannot be
  loaded (missing, unreadable, key not matching) is refused and the old one stays in use.
- **Development** (``tls_self_signed``): a local certificate authority made once in
  ``<data_dir>/tls/`` and a certificate from it for this host's names and addresses, so that a
  phone or a second computer on the LAN can join.  Each device trusts the authority once
  (``ca.pem``, also served at ``/tls/ca.pem``); the certificate is issued again, from the same
  authority and with the same key, when the host's addresses change or it nears its end.
  The key is kept, so a Chromium pinned to it with ``--ignore-certificate-errors-spki-list``
  goes on trusting it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import logging
import os
import signal
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from turn.config import TurnSettings

log = logging.getLogger(__name__)

RELOAD_CHECK = 30.0  # seconds between looks at the certificate files' modification times
CA_DAYS = 3650
LEAF_DAYS = 397  # Apple's and Chromium's longest accepted validity for a server certificate
RENEW_BEFORE = datetime.timedelta(days=30)
MAX_PEM_BYTES = 1 << 20


class TlsError(Exception):
    """The certificate or key cannot be used; the message says why."""


# Development certificates --------------------------------------------------------------------


@dataclass(frozen=True)
class DevCertificate:
    cert: Path  # the server's certificate followed by the authority's
    key: Path
    ca: Path
    names: tuple[str, ...]
    spki_sha256: str  # base64: Chromium's --ignore-certificate-errors-spki-list
    ca_sha256: str  # the authority's fingerprint, hex with colons, to compare on each device


def host_names(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The names and addresses a device on the LAN may use for this host."""
    names: list[str] = ["localhost", "127.0.0.1", "::1"]
    hostname = socket.gethostname()
    if hostname:
        names += [hostname, f"{hostname}.local"]
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(hostname, None):
            names.append(str(info[4][0]))
    # The address of the default route, found without sending anything.
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 9))
        names.append(probe.getsockname()[0])
    names += [n.strip() for n in extra if n.strip()]
    seen: dict[str, None] = {}
    for name in names:
        name = name.split("%", 1)[0]  # no IPv6 zone ids in a certificate
        if name and not name.startswith("fe80:"):
            seen.setdefault(name.lower(), None)
    return list(seen)


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _alt_names(names: list[str]) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address(n)) if is_ip(n) else x509.DNSName(n) for n in names]
    )


def _names_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v).lower() for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    if not path.is_file():
        return None
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{path} is not an EC key made by VideoConf; remove {path.parent} to start again")
    return key


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    """A KeyUsage extension allowing what ``allowed`` names and nothing else."""
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{name: allowed.get(name, False) for name in names})


def spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def dev_certificate(
    directory: Path, extra_names: list[str] | tuple[str, ...] = (), *, now: datetime.datetime | None = None
) -> DevCertificate:
    """The development authority and certificate in ``directory``: made once, then kept; the
    certificate is issued again (same authority, same key) when a name is missing from it or it
    has less than ``RENEW_BEFORE`` left."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    names = host_names(extra_names)
    ca_key_path, ca_path = directory / "ca-key.pem", directory / "ca.pem"
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    try:
        ca_key = _load_key(ca_key_path)
        ca_cert = (
            x509.load_pem_x509_certificate(ca_path.read_bytes()) if ca_key and ca_path.is_file() else None
        )
        if ca_key is None or ca_cert is None or ca_cert.not_valid_after_utc - now < RENEW_BEFORE:
            ca_key = ca_key or ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "VideoConf development"),
                    x509.NameAttribute(
                        NameOID.COMMON_NAME, f"VideoConf development CA ({socket.gethostname()})"[:64]
                    ),
                ]
            )
            ca_cert = (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(subject)
                .public_key(ca_key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    _key_usage(key_cert_sign=True, crl_sign=True),
                    critical=True,
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256())
            )
            _write_private(ca_key_path, _pem_key(ca_key))
            _write_public(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM))
            cert_path.unlink(missing_ok=True)  # a new authority: the certificate is issued again
        key = _load_key(key_path)
        if key is None:
            key = ec.generate_private_key(ec.SECP256R1())
            _write_private(key_path, _pem_key(key))
            cert_path.unlink(missing_ok=True)
        leaf = x509.load_pem_x509_certificates(cert_path.read_bytes())[0] if cert_path.is_file() else None
        if (
            leaf is None
            or not set(names) <= _names_of(leaf)
            or leaf.not_valid_after_utc - now < RENEW_BEFORE
            or leaf.public_key() != key.public_key()
            or leaf.issuer != ca_cert.subject
        ):
            covered = sorted(
                set(names)
                | (_names_of(leaf) if leaf is not None and leaf.issuer == ca_cert.subject else set())
            )
            leaf = (
                x509.CertificateBuilder()
                .subject_name(
                    x509.Name(
                        [x509.NameAttribute(NameOID.COMMON_NAME, names[3] if len(names) > 3 else "localhost")]
                    )
                )
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
                .add_extension(_alt_names(covered), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    _key_usage(digital_signature=True),
                    critical=True,
                )
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
                )
                .sign(ca_key, hashes.SHA256())
            )
            chain = leaf.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
                serialization.Encoding.PEM
            )
            _write_public(cert_path, chain)
            log.info("development certificate issued for %s", ", ".join(covered))
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot make or read the development certificate in {directory}: {exc}") from exc
    return DevCertificate(
        cert=cert_path,
        key=key_path,
        ca=ca_path,
        names=tuple(sorted(_names_of(leaf))),
        spki_sha256=spki_sha256(leaf),
        ca_sha256=ca_cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    )


# Serving --------------------------------------------------------------------------------------


def _read_pem(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TlsError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_PEM_BYTES:
        raise TlsError(f"the {what} {path} is larger than {MAX_PEM_BYTES} bytes")
    return data


def _load_pair(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``load_cert_chain`` takes file names: the bytes go through files only this process reads."""
    with tempfile.TemporaryDirectory(prefix="videoconf-tls-") as scratch:
        cert_file, key_file = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
        cert_file.write_bytes(cert)
        _write_private(key_file, key)
        context.load_cert_chain(cert_file, key_file)


def server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


@dataclass
class CertificateFiles:
    """The certificate and key a node serves, loaded into one live ``SSLContext``.

    ``reload`` reads the files, checks the pair in a scratch context first and only then loads
    it into the live one: a bad pair (a renewal half written, a key that does not match) never
    replaces a good one."""

    cert: Path
    key: Path
    context: ssl.SSLContext = field(default_factory=server_context)
    not_after: float | None = None  # UNIX time: the expiry metric
    _stamp: tuple[float, float, int, int] | None = None

    def __post_init__(self) -> None:
        self.reload()

    def stamp(self) -> tuple[float, float, int, int] | None:
        try:
            c, k = os.stat(self.cert), os.stat(self.key)
        except OSError:
            return None
        return (c.st_mtime, k.st_mtime, c.st_size, k.st_size)

    def reload(self) -> bool:
        """Load the files again; True when the new pair is in use.  Raises TlsError (the old
        pair stays) when they cannot be used."""
        stamp = self.stamp()
        cert, key = _read_pem(self.cert, "certificate"), _read_pem(self.key, "key")
        try:
            leaf = x509.load_pem_x509_certificate(cert)
            _load_pair(server_context(), cert, key)  # the check: raises on any problem
            _load_pair(self.context, cert, key)
        except (ssl.SSLError, ValueError) as exc:
            raise TlsError(f"cannot use {self.cert} with {self.key}: {exc}") from exc
        self.not_after = leaf.not_valid_after_utc.timestamp()
        self._stamp = stamp
        return True

    def changed(self) -> bool:
        stamp = self.stamp()
        return stamp is not None and stamp != self._stamp

    def reload_logged(self, why: str) -> None:
        try:
            self.reload()
        except TlsError as exc:
            log.error("TLS: %s; still serving the certificate loaded before (%s)", exc, why)
        else:
            log.warning(
                "TLS: certificate %s loaded (%s); it expires %s",
                self.cert,
                why,
                datetime.datetime.fromtimestamp(self.not_after or 0, datetime.timezone.utc).isoformat(),
            )


def turn_certificate(settings: TurnSettings) -> CertificateFiles | None:
    """The TURN server's certificate for TURN over TLS, when its settings name one."""
    if settings.tls_cert is None or settings.tls_key is None or settings.tls_port is None:
        return None
    return CertificateFiles(settings.tls_cert, settings.tls_key)


class TlsReloader:
    """SIGHUP, or certificate files that changed: load them again (each pair keeps its old
    certificate when the new one cannot be used)."""

    def __init__(self, files: list[CertificateFiles]) -> None:
        self.files = files
        self._task: asyncio.Task[None] | None = None
        self._signal = False

    def reload(self, why: str) -> None:
        for files in self.files:
            files.reload_logged(why)

    def start(self) -> None:
        if not self.files:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
            loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
            self._signal = True
        self._task = asyncio.create_task(self._watch(), name="tls-reload")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_CHECK)
            for files in self.files:
                if files.changed():
                    files.reload_logged("its files changed")

    async def stop(self) -> None:
        if self._signal:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._signal = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
