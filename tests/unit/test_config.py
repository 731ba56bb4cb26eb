"""Configuration: environment, TOML, masking, generated development secrets, production checks."""

from __future__ import annotations

import json
import stat

import pytest

from videoconf.cli import main
from videoconf.config import ConfigError, load_settings, masked, weakness

STRONG = "Zq8m3Kp1Lx7Vb2Nc9Rt4Wy6Hs5Gd0Fa!Ju"


def test_the_environment_overrides_the_toml_file_and_secrets_are_masked_when_shown(tmp_path, monkeypatch) -> None:
    config = tmp_path / "videoconf.toml"
    config.write_text(
        f'port = 9000\ndata_dir = "{tmp_path}"\nredis_url = "redis://:hunter2@127.0.0.1:6379/0"\n'
        "[rate_limits.login_per_ip]\nlimit = 7\nperiod = 60\n"
        '[[ice_servers]]\nurls = ["turn:127.0.0.1:3478"]\nusername = "u"\ncredential = "pw"\n'
    )
    monkeypatch.setenv("VIDEOCONF_PORT", "9100")  # the environment wins over the file
    monkeypatch.setenv("VIDEOCONF_RATE_LIMITS__LOGIN_PER_ACCOUNT__LIMIT", "4")
    monkeypatch.setenv("VIDEOCONF_RATE_LIMITS__LOGIN_PER_ACCOUNT__PERIOD", "60")
    settings = load_settings(config)
    assert settings.port == 9100
    assert settings.rate_limits.login_per_ip.limit == 7
    assert settings.rate_limits.login_per_account.limit == 4
    shown = masked(settings)
    assert shown["redis_url"] == "redis://:***@127.0.0.1:6379/0"
    assert shown["ice_servers"][0]["credential"] == "********"
    assert shown["access_token_secret"] == "********"
    assert settings.secret("access_token_secret") not in json.dumps(shown)


def test_bad_configuration_is_reported(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VIDEOCONF_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="port"):
        load_settings(data_dir=tmp_path)
    monkeypatch.delenv("VIDEOCONF_PORT")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="colour"):
        load_settings(bad, data_dir=tmp_path)


def test_development_secrets_are_generated_once_and_kept(tmp_path) -> None:
    first = load_settings(data_dir=tmp_path)
    path = tmp_path / "secrets.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_settings(data_dir=tmp_path)
    for name in ("access_token_secret", "room_token_secret"):
        value = first.secret(name)
        assert value == second.secret(name) and weakness(value) is None
    assert first.secret("access_token_secret") != first.secret("room_token_secret")
    other = load_settings(data_dir=tmp_path / "elsewhere")
    assert other.secret("access_token_secret") != first.secret("access_token_secret")


def test_production_refuses_missing_or_weak_secrets(tmp_path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="access_token_secret is missing"):
        load_settings(env="production", data_dir=tmp_path)
    assert not (tmp_path / "secrets.toml").exists()
    for weak, reason in (("short", "shorter"), ("a" * 40, "distinct"), ("changeme-" + STRONG, "placeholder")):
        with pytest.raises(ConfigError, match=reason):
            load_settings(env="production", data_dir=tmp_path, access_token_secret=weak,
                          room_token_secret=STRONG + "1")
    ok = load_settings(env="production", data_dir=tmp_path, access_token_secret=STRONG,
                       room_token_secret=STRONG + "1")
    assert ok.env == "production"


def test_cli_config_show_masks_and_production_exit_code(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("VIDEOCONF_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VIDEOCONF_ROOM_TOKEN_SECRET", STRONG)
    assert main(["config", "show"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["room_token_secret"] == "********" and STRONG not in json.dumps(out)
    assert out["effective"]["database_url"].startswith("sqlite:///")
    monkeypatch.setenv("VIDEOCONF_ENV", "production")
    assert main(["config", "show"]) == 2
    assert "refusing to start in production mode" in capsys.readouterr().err


def test_the_example_production_configuration_loads(monkeypatch, tmp_path) -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "deploy" / "videoconf.example.toml"
    monkeypatch.setenv("VIDEOCONF_ACCESS_TOKEN_SECRET", STRONG)
    monkeypatch.setenv("VIDEOCONF_ROOM_TOKEN_SECRET", STRONG + "x")
    settings = load_settings(example, data_dir=tmp_path)
    assert settings.env == "production" and settings.redis_url and settings.trusted_proxies
    assert settings.effective_signaling_url == "wss://meet.example.com/signaling"
    assert settings.recording.layout == "grid" and settings.recording.fps == 30
    assert settings.turn.realm == "meet.example.com" and not settings.turn.enabled
    assert settings.turn.client_uris()[0] == "turn:turn.example.com:3478?transport=udp"


def test_turn_secrets_are_generated_in_development_and_required_in_production(tmp_path, monkeypatch) -> None:
    settings = load_settings(data_dir=tmp_path, turn={"enabled": True})
    (secret,) = settings.turn.secrets
    assert weakness(secret.get_secret_value()) is None
    again = load_settings(data_dir=tmp_path, turn={"enabled": True})
    assert again.turn.secrets[0].get_secret_value() == secret.get_secret_value()  # kept in secrets.toml
    assert load_settings(data_dir=tmp_path).turn.secrets == []  # not generated when TURN is off
    shown = json.dumps(masked(settings))
    assert secret.get_secret_value() not in shown and settings.turn.client_uris() == [
        "turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
    monkeypatch.setenv("VIDEOCONF_ACCESS_TOKEN_SECRET", STRONG)
    monkeypatch.setenv("VIDEOCONF_ROOM_TOKEN_SECRET", STRONG + "x")
    with pytest.raises(ConfigError, match="turn.secrets is empty"):
        load_settings(env="production", data_dir=tmp_path, turn={"enabled": True})
    with pytest.raises(ConfigError, match=r"turn.secrets\[0\] is weak"):
        load_settings(env="production", data_dir=tmp_path, turn={"enabled": True, "secrets": ["short"]})


@pytest.mark.parametrize("turn, message", [
    ({"allow_peers": ["not-a-network"]}, "allow_peers"),
    ({"relay_ip": "turn.example.com"}, "relay_ip"),
    ({"default_lifetime": 900, "max_lifetime": 600}, "max_lifetime"),
    ({"tls_cert": "/etc/cert.pem"}, "tls_cert and turn.tls_key"),
    ({"relay_ports": [5000, 4000]}, "relay_ports"),
])
def test_bad_turn_settings_are_reported(tmp_path, turn, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(data_dir=tmp_path, turn=turn)


def test_one_field_of_a_nested_setting_can_be_set_alone(tmp_path, monkeypatch) -> None:
    config = tmp_path / "videoconf.toml"
    config.write_text("[rate_limits.code_lookup_per_ip]\nperiod = 30\n[rate_limits.login_per_account]\nperiod = 120\n")
    monkeypatch.setenv("VIDEOCONF_RATE_LIMITS__LOGIN_PER_IP__LIMIT", "20")
    monkeypatch.setenv("VIDEOCONF_RATE_LIMITS__LOGIN_PER_ACCOUNT__LIMIT", "3")  # over the file's period
    monkeypatch.setenv("VIDEOCONF_PASSWORD_HASHING__TIME_COST", "2")
    limits = load_settings(config, data_dir=tmp_path).rate_limits
    assert (limits.login_per_ip.limit, limits.login_per_ip.period) == (20, 60)
    assert (limits.code_lookup_per_ip.limit, limits.code_lookup_per_ip.period) == (30, 30)
    assert (limits.login_per_account.limit, limits.login_per_account.period) == (3, 120)
    assert (limits.register_per_ip.limit, limits.register_per_ip.period) == (10, 3600)  # untouched
    settings = load_settings(config, data_dir=tmp_path, rate_limits={"passcode_per_user": {"limit": 5}})
    assert (settings.rate_limits.passcode_per_user.limit, settings.rate_limits.passcode_per_user.period) == (5, 600)
    assert settings.password_hashing.time_cost == 2 and settings.password_hashing.memory_kib == 65536


def test_a_nested_setting_given_in_part_is_still_validated(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VIDEOCONF_RATE_LIMITS__LOGIN_PER_IP__COLOUR", "blue")
    with pytest.raises(ConfigError, match="colour"):
        load_settings(data_dir=tmp_path)
    monkeypatch.delenv("VIDEOCONF_RATE_LIMITS__LOGIN_PER_IP__COLOUR")
    monkeypatch.setenv("VIDEOCONF_RATE_LIMITS__LOGIN_PER_IP__PERIOD", "0")
    with pytest.raises(ConfigError, match="period"):
        load_settings(data_dir=tmp_path)


def test_config_file_is_taken_before_or_after_the_command(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("VIDEOCONF_DATA_DIR", str(tmp_path))
    config = tmp_path / "videoconf.toml"
    config.write_text("port = 9123\n")
    for argv in (["--config", str(config), "config", "show"], ["config", "show", "--config", str(config)]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out)["port"] == 9123
    assert main(["config", "show"]) == 0 and json.loads(capsys.readouterr().out)["port"] == 8080


def test_the_turn_server_needs_no_token_signing_key_in_production(tmp_path, monkeypatch, capsys) -> None:
    turn = {"secrets": [STRONG + "t"]}
    with pytest.raises(ConfigError, match="access_token_secret is missing"):
        load_settings(env="production", data_dir=tmp_path, turn=turn)
    settings = load_settings(env="production", data_dir=tmp_path, turn=turn, secrets_needed=())
    assert settings.access_token_secret is None and settings.turn.secrets
    with pytest.raises(ConfigError, match=r"turn.secrets\[0\] is weak"):
        load_settings(env="production", data_dir=tmp_path, turn={"secrets": ["short"]}, secrets_needed=())
    # `videoconf turn` asks for none of them: it stops at the TURN secret's own check.
    monkeypatch.setenv("VIDEOCONF_ENV", "production")
    monkeypatch.setenv("VIDEOCONF_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VIDEOCONF_TURN__SECRETS", '["short"]')
    assert main(["turn"]) == 2
    refusal = capsys.readouterr().err
    assert "turn.secrets[0] is weak" in refusal and "access_token_secret" not in refusal


def test_tls_settings_go_together_and_make_the_public_url_https(tmp_path) -> None:
    with pytest.raises(ConfigError, match="tls_cert and tls_key together"):
        load_settings(data_dir=tmp_path, tls_cert=tmp_path / "cert.pem")
    with pytest.raises(ConfigError, match="not both"):
        load_settings(data_dir=tmp_path, tls_cert=tmp_path / "c", tls_key=tmp_path / "k", tls_self_signed=True)
    with pytest.raises(ConfigError, match="tls_hostnames"):
        load_settings(data_dir=tmp_path, tls_self_signed=True, tls_hostnames=["bad name/with slash"])
    settings = load_settings(data_dir=tmp_path, tls_self_signed=True, port=8443)
    assert settings.base_url == "https://127.0.0.1:8443"
    assert settings.effective_signaling_url == "wss://127.0.0.1:8443/signaling"
