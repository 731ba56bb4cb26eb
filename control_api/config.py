"""The control API's settings: the models of its nested sections (rate limits, password hashing,
ICE servers), and the read-only view of the whole configuration it works from.

``videoconf.config.Settings`` composes these sections with everything else and satisfies
``ApiSettings`` as it is; the control API never imports the composition, so the configuration
types it needs live here, next to their consumer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, SecretStr

from turn.config import TurnSettings


class RateLimitRule(BaseModel):
    """At most ``limit`` events at once, refilled evenly over ``period`` seconds."""

    model_config = {"extra": "forbid"}
    limit: int = Field(ge=1)
    period: float = Field(gt=0)


class IceServer(BaseModel):
    model_config = {"extra": "forbid"}
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class RateLimits(BaseModel):
    model_config = {"extra": "forbid"}
    login_per_ip: RateLimitRule = RateLimitRule(limit=20, period=60)
    # Failed logins: per account and address (that address is refused), and per account from
    # every address (then only addresses without failures may still try: the owner gets in).
    login_per_account_ip: RateLimitRule = RateLimitRule(limit=10, period=600)
    login_per_account: RateLimitRule = RateLimitRule(limit=10, period=600)
    register_per_ip: RateLimitRule = RateLimitRule(limit=10, period=3600)
    code_lookup_per_ip: RateLimitRule = RateLimitRule(limit=30, period=60)
    # Wrong passcodes, per user and meeting and per meeting; over either, every try is refused.
    passcode_per_user: RateLimitRule = RateLimitRule(limit=10, period=600)
    passcode_per_meeting: RateLimitRule = RateLimitRule(limit=30, period=3600)
    # Chat messages (REST and signaling alike), per sender in a meeting and per meeting.
    chat_per_user: RateLimitRule = RateLimitRule(limit=20, period=10)
    chat_per_meeting: RateLimitRule = RateLimitRule(limit=100, period=10)
    # Reactions per meeting (each fans out to everyone; each connection has its own budget too).
    reactions_per_meeting: RateLimitRule = RateLimitRule(limit=60, period=10)
    invite_per_user: RateLimitRule = RateLimitRule(limit=100, period=3600)  # addresses invited


class PasswordHashing(BaseModel):
    """argon2id parameters; the defaults are argon2-cffi's RFC 9106 low-memory profile."""

    model_config = {"extra": "forbid"}
    time_cost: int = Field(default=3, ge=1)
    memory_kib: int = Field(default=65536, ge=8)
    parallelism: int = Field(default=4, ge=1)


class WebhookSettings(BaseModel):
    """Webhook deliveries (README "Webhooks")."""

    model_config = {"extra": "forbid"}
    enabled: bool = True  # this node runs the delivery worker
    retry_delays: list[float] = Field(default=[5, 30, 120, 600, 1800, 3600], min_length=1)
    retry_window: float = Field(default=86400, gt=0)  # seconds a delivery is retried for
    jitter: float = Field(default=0.2, ge=0, le=1)
    timeout: float = Field(default=10, gt=0, le=120)  # seconds per attempt
    max_response_bytes: int = Field(default=65536, ge=0)
    poll_interval: float = Field(default=1.0, gt=0, le=60)
    batch: int = Field(default=20, ge=1, le=1000)  # deliveries claimed at once
    lease_seconds: float = Field(default=60, gt=0)  # a claimed delivery is retried after this if its node died
    allow_private_addresses: bool = False  # URLs may reach loopback, private and link-local addresses
    allowed_networks: list[str] = []  # networks URLs may reach although the TURN peer rules deny them
    retention: float = Field(default=7 * 86400, gt=0)  # seconds finished deliveries (and their events) are kept
    prune_interval: float = Field(default=3600, gt=0)  # seconds between clean-ups of what is past retention


class TokenSettings(Protocol):
    """What the token codecs are built from: the issuer and each kind's current and previous keys
    (``secret("access_token_secret")``, ``secret("room_token_secret")``)."""

    token_issuer: str
    access_token_previous_secrets: list[SecretStr]
    room_token_previous_secrets: list[SecretStr]

    def secret(self, name: str) -> str: ...


class ApiSettings(TokenSettings, Protocol):
    """Every setting the control API reads."""

    trusted_proxies: list[str]
    database_pool_size: int
    database_schema: str | None
    redis_url: str | None
    redis_prefix: str
    access_token_ttl: int
    refresh_token_ttl: int
    room_token_ttl: int
    auth_cache_seconds: float
    rate_limits: RateLimits
    password_hashing: PasswordHashing
    ice_servers: list[IceServer]  # handed to clients by the join endpoint, with the TURN server's
    turn: TurnSettings
    max_body_bytes: int
    metrics_token: SecretStr | None
    access_log: bool
    cluster: bool  # place meetings' rooms on the cluster's nodes (control_api/cluster.py)
    connect_sources: list[str]  # more origins the web client may connect to (a cluster's other nodes)
    webhooks: WebhookSettings

    @property
    def base_url(self) -> str: ...

    @property
    def effective_signaling_url(self) -> str: ...

    @property
    def effective_database_url(self) -> str: ...

    @property
    def effective_recordings_dir(self) -> Path: ...
