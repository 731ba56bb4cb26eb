"""Which peer addresses a relay may send to.

A TURN server that relays anywhere lets its users reach whatever the server can reach: its own
loopback services, the private network behind it, the cloud provider's metadata service.  By
default every such range is denied, including the same IPv4 ranges written as IPv6 (mapped,
compatible, SIIT-translated, NAT64, 6to4, Teredo).  Python's :mod:`ipaddress` misjudges several of
those forms on 3.11 and 3.12, so the embedded IPv4 addresses are extracted here and checked against
an explicit table rather than trusting ``is_private``/``is_global``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

# (network, why it is denied); loopback is listed separately because an option allows it.
DENIED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("0.0.0.0/8", "this-network"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "cgnat"),  # also Alibaba Cloud's metadata service, 100.100.100.200
        ("169.254.0.0/16", "link-local"),  # also the AWS/GCP/Azure/OpenStack metadata service
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments (Oracle Cloud metadata 192.0.0.192)
        ("192.0.2.0/24", "reserved"),
        ("192.88.99.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),
        ("198.51.100.0/24", "reserved"),
        ("203.0.113.0/24", "reserved"),
        ("168.63.129.16/32", "cloud-metadata"),  # Azure's wire server
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # includes 255.255.255.255
        ("::/128", "unspecified"),
        ("64:ff9b:1::/48", "private"),  # local-use NAT64
        ("100::/64", "reserved"),  # discard-only
        ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo is handled before)
        ("2001:db8::/32", "reserved"),
        ("3fff::/20", "reserved"),
        ("5f00::/16", "reserved"),
        ("fc00::/7", "private"),  # unique local, also AWS's IPv6 metadata fd00:ec2::254
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),  # deprecated site-local
        ("ff00::/8", "multicast"),
    )
)

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries in any of the standard embeddings."""
    if address.version == 4:
        return []
    value = int(address)
    found: list[ipaddress.IPv4Address] = []
    if address in _MAPPED or address in _TRANSLATED or address in _NAT64:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    elif address in _COMPATIBLE and value > 1:  # :: and ::1 are not IPv4-compatible addresses
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    elif address in _SIX_TO_FOUR:
        found.append(ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF))
    elif address in _TEREDO:
        found.append(ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF))  # the Teredo server
        found.append(ipaddress.IPv4Address(~value & 0xFFFFFFFF))  # the client, obfuscated
    return found


def networks(values: Iterable[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(value, strict=False) for value in values]


@dataclass
class PeerPolicy:
    """``only``: when given, the relay may reach these networks and nothing else (a deployment
    whose TURN server serves only its SFU sets the SFU's media addresses here).  Otherwise
    ``deny`` wins over ``allow``, which wins over the default table."""

    allow: list[IPNetwork] = field(default_factory=list)
    deny: list[IPNetwork] = field(default_factory=list)
    only: list[IPNetwork] | None = None
    allow_loopback: bool = False
    # Answers by host string, bounded: clients ask about the same few peers again and again.
    _answers: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)

    def check(self, host: str) -> str | None:
        """None when the relay may send to ``host``, else why not."""
        answers = self._answers
        if host in answers:
            return answers[host]
        why = self._judge(host)
        if len(answers) >= 4096:
            answers.clear()
        answers[host] = why
        return why

    def _judge(self, host: str) -> str | None:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return "not an IP address"
        forms: list[IPAddress] = [address, *embedded_ipv4(address)]
        for form in forms:
            if any(form in net for net in self.deny if net.version == form.version):
                return "denied by configuration"
        if self.only is not None:
            if any(form in net for form in forms for net in self.only if net.version == form.version):
                return None
            return "not an allowed peer"
        if any(address in net for net in self.allow if net.version == address.version):
            return None
        for form in forms:
            if form in _TEREDO or form in _SIX_TO_FOUR:
                continue  # judged by the IPv4 addresses they carry
            if any(form in net for net in LOOPBACK if net.version == form.version):
                if not self.allow_loopback:
                    return "loopback"
                continue
            for net, why in DENIED:
                if net.version == form.version and form in net:
                    return why
        return None
