"""The TURN server's settings: the ``[turn]`` section of the VideoConf configuration."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator


def _ip_networks(values: list[str]) -> list[str]:
    for value in values:
        ipaddress.ip_network(value, strict=False)  # ValueError -> a readable validation error
    return values


class TurnSettings(BaseModel):
    model_config = {"extra": "forbid"}

    enabled: bool = Field(default=False, description="run the TURN server inside `videoconf run`")
    listen: str = Field(default="127.0.0.1", description="address the listeners bind")
    udp_port: int | None = Field(default=3478, ge=0, le=65535, description="null: no UDP listener")
    tcp_port: int | None = Field(default=3478, ge=0, le=65535, description="null: no TCP listener")
    tls_port: int | None = Field(default=5349, ge=0, le=65535, description="used when tls_cert is set")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    relay_ip: str | None = Field(default=None, description="IPv4 address relays bind; default: listen")
    relay_ipv6: str | None = Field(default=None, description="IPv6 address relays bind; none: no IPv6 relays")
    external_ip: str | None = Field(default=None, description="public address of a 1:1 NAT in front of the relays")
    relay_ports: tuple[int, int] | None = Field(default=(49152, 65535), description="inclusive; null: any free port")

    realm: str = Field(default="videoconf", min_length=1, max_length=127)
    software: str = "VideoConf TURN"
    default_lifetime: int = Field(default=600, ge=60)
    max_lifetime: int = Field(default=3600, ge=60)
    permission_lifetime: int = Field(default=300, ge=10)
    channel_lifetime: int = Field(default=600, ge=10)
    channel_cooldown: int = Field(default=300, ge=0)
    nonce_lifetime: int = Field(default=600, ge=10)
    user_quota: int = Field(default=10, ge=0, description="allocations per user; 0: no limit")
    total_quota: int = Field(default=1000, ge=0, description="allocations in all; 0: no limit")
    max_permissions: int = Field(default=32, ge=1, description="peer addresses per allocation")
    max_bps: int = Field(default=20_000_000, ge=0, description="bits/s relayed per allocation, both ways; 0: no limit")
    unauthorized_burst: int = Field(default=30, ge=1, description="401 answers a source may get at once")
    unauthorized_per_second: float = Field(default=5.0, gt=0)
    native_relay: bool = Field(
        default=True,
        description="relay routed ChannelData over UDP with the native helper (turn/_relay.c: recvmmsg and sendmmsg) where it was built; false: Python",
    )
    socket_buffer: int = Field(default=4 * 1024 * 1024, ge=65536, le=256 * 1024 * 1024,
                               description="bytes of receive and send buffer asked for each UDP socket (forced past the kernel's rmem_max when run as root)")

    users: dict[str, SecretStr] = Field(default={}, description="static long-term users: name -> password")
    secrets: list[SecretStr] = Field(default=[], description="use-auth-secret keys; the first issues, all verify")
    credential_ttl: int = Field(default=86400, ge=60, description="lifetime of the credentials the join endpoint hands out")
    uris: list[str] = Field(default=[], description="TURN URIs given to clients; default: derived from the listeners")

    allow_loopback: bool = Field(default=False, description="let relays reach loopback peers (tests only)")
    allow_peers: list[str] = Field(default=[], description="networks allowed even if the default table denies them")
    deny_peers: list[str] = Field(default=[], description="networks always denied")
    only_peers: list[str] | None = Field(default=None, description="when set, relays may reach these networks and nothing else")
    sfu_only: bool = Field(default=False, description="relays may reach only this node's SFU media addresses")

    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="`videoconf turn`: /metrics and /healthz")

    @field_validator("allow_peers", "deny_peers")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return _ip_networks(value)

    @field_validator("only_peers")
    @classmethod
    def _only(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _ip_networks(value)

    @field_validator("relay_ip", "relay_ipv6", "external_ip")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TurnSettings:
        if self.max_lifetime < self.default_lifetime:
            raise ValueError("turn.max_lifetime must be at least turn.default_lifetime")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("turn.tls_cert and turn.tls_key go together")
        if self.relay_ports is not None and not 1 <= self.relay_ports[0] <= self.relay_ports[1] <= 65535:
            raise ValueError("turn.relay_ports must be an inclusive range of ports")
        return self

    def client_uris(self) -> list[str]:
        """The URIs clients are given: the configured ones, else one per listener of the TURN
        server this process runs (none when it runs none)."""
        if self.uris:
            return list(self.uris)
        if not self.enabled:
            return []
        host = self.external_ip or self.listen
        if ":" in host:
            host = f"[{host}]"
        uris = []
        if self.udp_port:
            uris.append(f"turn:{host}:{self.udp_port}?transport=udp")
        if self.tcp_port:
            uris.append(f"turn:{host}:{self.tcp_port}?transport=tcp")
        if self.tls_cert is not None and self.tls_port:
            uris.append(f"turns:{host}:{self.tls_port}?transport=tcp")
        return uris
