"""Configuration: environment variables (``VIDEOCONF_*``), an optional TOML file, and generated
development secrets.

Precedence, highest first: explicit overrides (tests, CLI flags), environment variables, the TOML
file, the development secrets file, defaults.  In production mode every secret must be supplied
and strong; in development and test modes missing secrets are generated once and stored in
``<data_dir>/secrets.toml`` (mode 0600), never hard-coded.

Each section's model lives beside the package that reads it (``control_api.config``,
``recorder.config``, ``turn.config``); ``Settings`` composes them and is re-exported with them.
"""

from __future__ import annotations

import os
import secrets
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from control_api.config import IceServer, PasswordHashing, RateLimits, WebhookSettings
from control_api.config import RateLimitRule as RateLimitRule  # re-exported, with the others
from recorder.config import RecordingSettings
from turn.config import TurnSettings

SECRET_FIELDS = ("access_token_secret", "room_token_secret")
TURN_SECRET = "turn_secret"  # the development TURN auth secret's name in the secrets file
MIN_SECRET_LENGTH = 32
_WEAK_WORDS = ("changeme", "change-me", "secret", "password", "example", "default", "videoconf")


class ConfigError(Exception):
    """The configuration cannot be used; the message says why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VIDEOCONF_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) to serve HTTPS on `port` with; read again on SIGHUP and on change",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert")
    tls_self_signed: bool = Field(
        default=False,
        description="development: serve HTTPS with a certificate from a local authority made once in <data_dir>/tls",
    )
    tls_hostnames: list[
        Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:*-]+$")]
    ] = Field(
        default=[],
        max_length=32,
        description="more names or addresses for the development certificate",
    )
    data_dir: Path = Path("var")
    database_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1)
    database_schema: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", description="PostgreSQL schema"
    )
    redis_url: str | None = None
    redis_prefix: str = "videoconf:"
    recordings_dir: Path | None = None
    recording: RecordingSettings = RecordingSettings()
    turn: TurnSettings = TurnSettings()

    access_token_secret: SecretStr | None = None
    access_token_previous_secrets: list[SecretStr] = []
    room_token_secret: SecretStr | None = None
    room_token_previous_secrets: list[SecretStr] = []

    token_issuer: str = "videoconf"
    access_token_ttl: int = Field(default=900, ge=30)
    refresh_token_ttl: int = Field(default=30 * 86400, ge=300)
    room_token_ttl: int = Field(default=600, ge=30)
    auth_cache_seconds: float = Field(default=5.0, ge=0, le=60)

    signaling_url: str | None = None
    ice_servers: list[IceServer] = Field(default=[], description="Given to clients by the join endpoint")
    ice_addresses: list[str] | None = Field(
        default=["127.0.0.1"],
        description="IPs or interface names the SFU offers ICE candidates on; null: every interface",
    )
    ice_port_range: tuple[int, int] | None = Field(default=None, description="UDP ports for ICE, inclusive")
    udp_port: int | None = Field(
        default=None,
        ge=1024,
        le=65535,
        description="One UDP port for every peer connection's ICE (one socket per address); instead of ice_port_range",
    )
    announced_ip: str | None = Field(
        default=None, description="Public address of a 1:1 NAT in front of the SFU"
    )
    sfu_ice_servers: list[IceServer] = Field(default=[], description="STUN/TURN servers the SFU itself uses")
    native_send: bool = Field(
        default=True,
        description="Protect and write forwarded copies with the native helper (sfu/_fastsend.c) where it was built; false: Python only",
    )
    cluster: bool = Field(
        default=False,
        description="Join the cluster in Redis: heartbeats, and rooms placed on its nodes (needs redis_url)",
    )
    node_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="This node's id in the cluster; default <host name>:<port>",
    )
    connect_sources: list[
        Annotated[str, Field(pattern=r"^(wss?|https?)://[A-Za-z0-9.*:\[\]-]+$", max_length=200)]
    ] = Field(
        default=[],
        max_length=64,
        description="Origins beyond this node's the web client may connect to (CSP connect-src): a cluster's other nodes",
    )
    node_max_participants: int | None = Field(
        default=None, ge=1, description="Participants this node holds before new meetings go to other nodes"
    )
    drain_seconds: float = Field(
        default=300.0,
        ge=0,
        le=86400,
        description="On SIGTERM, a cluster node drains: the longest it waits for its participants to move",
    )
    resume_seconds: int = Field(default=30, ge=1, le=600)
    join_timeout: float = Field(
        default=10.0, gt=0, le=300, description="seconds a signaling connection may stay open without joining"
    )

    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    trusted_proxies: list[str] = []
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token /metrics asks for; unset: /metrics answers loopback clients only",
    )
    rate_limits: RateLimits = RateLimits()
    password_hashing: PasswordHashing = PasswordHashing()
    webhooks: WebhookSettings = WebhookSettings()

    log_level: str = "INFO"
    log_json: bool = True
    access_log: bool = True

    @model_validator(mode="before")
    @classmethod
    def _nested_in_part(cls, data: Any) -> Any:
        """A nested setting given in part (one environment variable such as
        ``VIDEOCONF_RATE_LIMITS__LOGIN_PER_IP__LIMIT``, or a TOML table with one key) changes
        those keys; the others keep their defaults instead of being required."""
        if not isinstance(data, dict):
            return data
        completed = dict(data)
        for name, info in cls.model_fields.items():
            if isinstance(info.default, BaseModel) and isinstance(data.get(name), dict):
                completed[name] = over_default(info.default, data[name])
        return completed

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.udp_port is not None and self.ice_port_range is not None:
            raise ValueError("set udp_port or ice_port_range, not both")
        if self.cluster and not self.redis_url:
            raise ValueError("cluster needs redis_url: the nodes find each other in Redis")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("set tls_cert and tls_key together")
        if self.tls_self_signed and self.tls_cert is not None:
            raise ValueError("set tls_cert and tls_key, or tls_self_signed, not both")
        return self

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None or self.tls_self_signed

    @property
    def effective_node_id(self) -> str:
        return self.node_id or f"{socket.gethostname()}:{self.port}"

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = os.environ.get("VIDEOCONF_CONFIG")
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    # Derived values --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls_enabled else "http"
        return (self.public_url or f"{scheme}://{self.host}:{self.port}").rstrip("/")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'videoconf.db').resolve()}"

    @property
    def effective_recordings_dir(self) -> Path:
        return (self.recordings_dir or self.data_dir / "recordings").resolve()

    @property
    def effective_signaling_url(self) -> str:
        if self.signaling_url:
            return self.signaling_url
        base = self.base_url
        scheme = "wss" if base.startswith("https://") else "ws"
        return f"{scheme}://{base.split('://', 1)[1]}/signaling"

    def secret(self, name: str) -> str:
        value = getattr(self, name)
        if value is None:
            raise ConfigError(f"{name} is not set")
        return value.get_secret_value()


def over_default(default: BaseModel, given: dict[str, Any]) -> dict[str, Any]:
    """``given``, part of a nested setting, laid over the setting's ``default``, recursively:
    every key ``given`` lacks comes from the default.  Unknown keys pass through, so that
    validation still refuses them."""
    merged: dict[str, Any] = {name: getattr(default, name) for name in type(default).model_fields}
    for name, value in given.items():
        current = merged.get(name)
        merged[name] = (
            over_default(current, value)
            if isinstance(current, BaseModel) and isinstance(value, dict)
            else value
        )
    return merged


def weakness(value: str) -> str | None:
    """Why a secret is too weak to use in production, or None when it is acceptable."""
    if len(value) < MIN_SECRET_LENGTH:
        return f"shorter than {MIN_SECRET_LENGTH} characters"
    if len(set(value)) < 12:
        return "too few distinct characters"
    lowered = value.lower()
    for word in _WEAK_WORDS:
        if word in lowered:
            return f"contains the placeholder word {word!r}"
    return None


def _dev_secrets(path: Path, missing: list[str]) -> dict[str, str]:
    """Read the stored development secrets, generating and saving those not yet there."""
    stored: dict[str, Any] = {}
    if path.exists():
        try:
            stored = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the development secrets file {path}: {exc}") from exc
    changed = False
    for name in missing:
        if not isinstance(stored.get(name), str) or weakness(stored[name]):
            stored[name] = secrets.token_urlsafe(48)
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("# Generated development secrets. Do not use in production.\n")
            for key in sorted(stored):
                handle.write(f'{key} = "{stored[key]}"\n')
        os.replace(tmp, path)
    return {name: stored[name] for name in missing}


def load_settings(
    config_file: str | os.PathLike[str] | None = None, *, secrets_needed: tuple[str, ...] = SECRET_FIELDS, **overrides: Any
) -> Settings:
    """Load settings from overrides, environment and TOML file, then settle the secrets.
    ``secrets_needed``: the signing keys this process uses (``videoconf turn`` uses none, so a
    TURN host need not hold them)."""
    previous = os.environ.get("VIDEOCONF_CONFIG")
    if config_file is not None:
        if not Path(config_file).is_file():
            raise ConfigError(f"configuration file {config_file} does not exist")
        os.environ["VIDEOCONF_CONFIG"] = str(config_file)
    try:
        settings = Settings(**overrides)
    except Exception as exc:  # pydantic's ValidationError carries a readable report
        raise ConfigError(f"invalid configuration:\n{exc}") from exc
    finally:
        if config_file is not None:
            if previous is None:
                os.environ.pop("VIDEOCONF_CONFIG", None)
            else:
                os.environ["VIDEOCONF_CONFIG"] = previous
    return settle_secrets(settings, secrets_needed)


def settle_secrets(settings: Settings, needed: tuple[str, ...] = SECRET_FIELDS) -> Settings:
    missing = [name for name in needed if getattr(settings, name) is None]
    if settings.env == "production":
        problems = [f"{name} is missing" for name in missing]
        for name in needed:
            value = getattr(settings, name)
            if value is not None and (why := weakness(value.get_secret_value())):
                problems.append(f"{name} is weak: {why}")
        for name in ("access_token_previous_secrets", "room_token_previous_secrets"):
            for index, value in enumerate(getattr(settings, name)):
                if why := weakness(value.get_secret_value()):
                    problems.append(f"{name}[{index}] is weak: {why}")
        for index, value in enumerate(settings.turn.secrets):
            if why := weakness(value.get_secret_value()):
                problems.append(f"turn.secrets[{index}] is weak: {why}")
        if settings.turn.enabled and not settings.turn.secrets and not settings.turn.users:
            problems.append("turn.enabled is set but turn.secrets is empty")
        if problems:
            raise ConfigError(
                "refusing to start in production mode: "
                + "; ".join(problems)
                + f" (set them with VIDEOCONF_<NAME> or in the TOML file; at least "
                f"{MIN_SECRET_LENGTH} random characters each)"
            )
        return settings
    turn_missing = settings.turn.enabled and not settings.turn.secrets
    if turn_missing:
        missing.append(TURN_SECRET)
    if not missing:
        return settings
    generated = _dev_secrets(settings.data_dir / "secrets.toml", missing)
    turn_secret = generated.pop(TURN_SECRET, None)
    update: dict[str, Any] = {k: SecretStr(v) for k, v in generated.items()}
    if turn_secret is not None:
        update["turn"] = settings.turn.model_copy(update={"secrets": [SecretStr(turn_secret)]})
    return settings.model_copy(update=update)


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret masked, for ``videoconf config show``."""
    data = settings.model_dump(mode="json")
    for name in SECRET_FIELDS:
        data[name] = "********" if getattr(settings, name) is not None else None
    for name in ("access_token_previous_secrets", "room_token_previous_secrets"):
        data[name] = ["********" for _ in getattr(settings, name)]
    data["metrics_token"] = "********" if settings.metrics_token is not None else None
    turn = data["turn"]
    turn["secrets"] = ["********" for _ in settings.turn.secrets]
    turn["users"] = {name: "********" for name in settings.turn.users}
    for server in data.get("ice_servers", []):
        if server.get("credential"):
            server["credential"] = "********"
    for name in ("database_url", "redis_url"):
        if data.get(name):
            data[name] = _mask_url_password(data[name])
    data["effective"] = {
        "base_url": settings.base_url,
        "database_url": _mask_url_password(settings.effective_database_url),
        "recordings_dir": str(settings.effective_recordings_dir),
        "signaling_url": settings.effective_signaling_url,
        "turn_uris": settings.turn.client_uris() if settings.turn.secrets else [],
    }
    return data


def _mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable url>"
