"""Which webhook URLs a node may post to: the TURN relay's peer rules (``turn.peers``), applied to
every address the URL's host name resolves to.

A URL is checked when its endpoint is created or changed, and again at each delivery, since what a
name resolves to can change.  At delivery the check happens inside the HTTP client's resolver
(``GuardedResolver``): the client connects only to the addresses that were just checked, so a
name that resolves to something else between the check and the connection (DNS rebinding) cannot
slip through.  The resolver itself is injectable, for tests.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from turn.peers import PeerPolicy, networks

Resolve = Callable[[str, int], Awaitable[list[str]]]  # host, port -> IP addresses


class UnsafeUrl(Exception):
    """A URL the node will not post to; the message says why."""


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def url_policy(allow_private_addresses: bool, allowed_networks: list[str]) -> PeerPolicy:
    """The TURN peer policy, with ``allowed_networks`` let through (loopback too when named), or
    every address when private addresses are allowed."""
    allowed = networks(["0.0.0.0/0", "::/0"]) if allow_private_addresses else networks(allowed_networks)
    return PeerPolicy(allow=allowed)


def split_url(url: str) -> tuple[str, int]:
    """Host and port of an http(s) URL; UnsafeUrl for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the URL must be http or https")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeUrl("the URL's port is not valid") from None
    return parts.hostname, port


class UrlGuard:
    def __init__(self, policy: PeerPolicy, resolve: Resolve = system_resolve) -> None:
        self.policy = policy
        self.resolve = resolve

    def check_address(self, address: str) -> None:
        why = self.policy.check(address)
        if why is not None:
            raise UnsafeUrl(f"the URL's address {address} is not allowed ({why})")

    async def addresses(self, host: str, port: int) -> list[str]:
        """Every address ``host`` resolves to, each checked; UnsafeUrl if any is denied."""
        if is_ip(host):
            found = [host]
        else:
            try:
                found = await self.resolve(host, port)
            except OSError as exc:
                raise UnsafeUrl(f"the URL's host {host} does not resolve ({exc})") from None
            if not found:
                raise UnsafeUrl(f"the URL's host {host} does not resolve")
        for address in found:
            self.check_address(address)
        return found

    async def check(self, url: str) -> None:
        host, port = split_url(url)
        await self.addresses(host, port)


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, through the guard: the connection goes to checked addresses only.
    (aiohttp does not resolve IP literals; the worker checks those itself.)"""

    def __init__(self, guard: UrlGuard) -> None:
        self.guard = guard

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for address in await self.guard.addresses(host, port):
            version = ipaddress.ip_address(address).version
            results.append(
                ResolveResult(
                    hostname=host, host=address, port=port,
                    family=socket.AF_INET if version == 4 else socket.AF_INET6,
                    proto=0, flags=socket.AI_NUMERICHOST,
                )
            )
        return results

    async def close(self) -> None:
        return None


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
