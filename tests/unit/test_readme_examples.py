"""Every configuration example in README.md works as written: environment variables, TOML, the
keys of the configuration table, and the command lines (``videoconf ...``, the benchmarks,
``make``), read from the README itself so that a new example is checked as soon as it is added."""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import re
import runpy
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from videoconf.cli import main, parser
from videoconf.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^ {0,3}```(\w*)\n(.*?)^ {0,3}```", re.S | re.M)  # CommonMark: a fence may be indented 3
ENV_ASSIGNMENT = re.compile(r"\bVIDEOCONF_[A-Z0-9_]+=[^\s`]+")
ENV_NAME = re.compile(r"\bVIDEOCONF_[A-Z0-9_]*[A-Z0-9]\b")
HARNESS = ("tests", "benchmarks", "videoconf", "clients")  # where non-setting variables are read


# Reading the README ---------------------------------------------------------------------------


def blocks(info: str) -> list[str]:
    return [body for kind, body in FENCE.findall(README) if kind == info]


def spans() -> list[str]:
    """Inline code outside fenced blocks, whitespace collapsed (spans may wrap)."""
    prose = FENCE.sub("", README)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def commands(program: str) -> list[str]:
    """Command lines starting with ``program``: shell block lines (comments dropped) and spans."""
    lines = [line.split("  #")[0].strip() for body in blocks("sh") for line in body.splitlines()]
    return sorted({c for c in lines + spans() if c.startswith(program + " ") or c == program})


def variants(command: str) -> list[list[str]]:
    """Every way of writing ``command``: each ``[optional]`` part left out or in, and each
    ``a|b`` alternative taken."""
    optional = re.findall(r"\[([^\]]+)\]", command)
    required = re.sub(r"\s*\[[^\]]+\]", "", command)
    written = [required + "".join(" " + part for part, take in zip(optional, mask, strict=True) if take)
               for mask in itertools.product((False, True), repeat=len(optional))]
    result = []
    for line in written:
        words = [word.split("|") for word in shlex.split(line)]
        result += [list(choice) for choice in itertools.product(*words)]
    return result


def settings_path(name: str) -> list[str] | None:
    """The settings field a ``VIDEOCONF_*`` variable sets, or None when it is not a setting."""
    path = name.removeprefix("VIDEOCONF_").lower().split("__")
    return path if is_setting(path) else None


def is_setting(path: list[str]) -> bool:
    model: Any = Settings
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return False
        default = model.model_fields[part].default
        model = type(default) if isinstance(default, BaseModel) else None
    return True


def value_at(settings: BaseModel, path: list[str]) -> Any:
    value: Any = settings
    for part in path:
        value = getattr(value, part)
    return value


def defaults() -> Settings:
    return Settings.model_construct()


# Environment variables -------------------------------------------------------------------------


ASSIGNMENTS = sorted(set(ENV_ASSIGNMENT.findall(README)))


def test_the_readme_has_environment_examples() -> None:
    assert "VIDEOCONF_RATE_LIMITS__LOGIN_PER_IP__LIMIT=20" in ASSIGNMENTS


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_each_environment_example_loads_as_written(assignment: str, tmp_path: Path, monkeypatch) -> None:
    name, value = assignment.split("=", 1)
    path = settings_path(name)
    if path is None:  # a variable of the tests or tools: it must be read somewhere
        assert read_by_code(name), f"{name} is in the README but nothing reads it"
        return
    monkeypatch.setenv(name, value)
    settings = load_settings(data_dir=tmp_path)
    assert str(value_at(settings, path)).lower() == value.lower()
    parent, default = value_at(settings, path[:-1]), value_at(defaults(), path[:-1])
    if len(path) > 1 and isinstance(parent, BaseModel):  # the other keys of a nested setting keep their defaults
        assert parent.model_dump(exclude={path[-1]}) == default.model_dump(exclude={path[-1]})


@pytest.mark.parametrize("name", sorted({n for span in spans() for n in ENV_NAME.findall(span)}))
def test_each_variable_the_readme_names_exists(name: str) -> None:
    assert settings_path(name) is not None or read_by_code(name), f"{name} is neither a setting nor read by any code"


def read_by_code(name: str) -> bool:
    return any(f'"{name}"' in path.read_text() for folder in HARNESS for path in (ROOT / folder).rglob("*.py"))


# TOML and the configuration table -------------------------------------------------------------


def toml_examples() -> list[str]:
    inline = [s for s in spans() if re.fullmatch(r"[a-z_]+(\.[a-z_]+)* = \S.*", s)]
    return blocks("toml") + inline


@pytest.mark.parametrize("example", toml_examples())
def test_each_toml_example_loads_as_written(example: str, tmp_path: Path) -> None:
    config = tmp_path / "example.toml"
    config.write_text(example + "\n")
    load_settings(config, data_dir=tmp_path)


def table_keys() -> list[str]:
    """The keys in the first column of the README's configuration table; ``.x`` after
    ``turn.listen`` means ``turn.x``."""
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    keys = []
    for row in re.findall(r"^\| (`[^|]+) \|", section, re.M):
        parent = ""
        for key in re.findall(r"`([^`]+)`", row):
            if key.startswith("."):
                key = parent + key
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            keys.append(key)
    return keys


@pytest.mark.parametrize("key", table_keys())
def test_each_key_of_the_configuration_table_can_be_set_alone(key: str, tmp_path: Path, monkeypatch) -> None:
    """Each key, written back as its own environment variable with its default value (for a
    nested group, one key of each member), loads and changes nothing."""
    path = key.removesuffix(".*").split(".")
    assert is_setting(path), f"{key} is not a setting"
    expected = value_at(load_settings(data_dir=tmp_path), path)
    for leaf in leaves(path) if key.endswith(".*") else [path]:
        value = value_at(defaults(), leaf)
        if value is not None:
            monkeypatch.setenv("VIDEOCONF_" + "__".join(leaf).upper(), as_env(value))
    assert value_at(load_settings(data_dir=tmp_path), path) == expected


def leaves(path: list[str]) -> list[list[str]]:
    """One key of each member of the nested setting at ``path`` (``rate_limits.*``: each rule's
    limit; ``password_hashing.*``: each parameter)."""
    result = []
    for name, member in value_at(defaults(), path):
        leaf = path + [name]
        if isinstance(member, BaseModel):
            leaf.append(next(iter(type(member).model_fields)))
        result.append(leaf)
    return result


def as_env(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=lambda v: v.get_secret_value() if isinstance(v, SecretStr) else str(v))
    return str(value)


# Command lines --------------------------------------------------------------------------------


def test_the_readme_has_command_examples() -> None:
    assert "videoconf config show" in commands("videoconf")
    assert any(c.startswith("videoconf loadtest --api") for c in commands("videoconf"))


@pytest.mark.parametrize("command", [c for c in commands("videoconf") if c != "videoconf"])
def test_each_videoconf_command_line_parses(command: str) -> None:
    for argv in variants(command):
        parser().parse_args(argv[1:])  # argparse exits on anything it does not accept


def test_the_readme_commands_that_finish_at_once_succeed(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("VIDEOCONF_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VIDEOCONF_RATE_LIMITS__LOGIN_PER_IP__LIMIT", "20")
    assert main(["config", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["rate_limits"]["login_per_ip"] == {"limit": 20, "period": 60.0}
    assert main(["migrate"]) == 0 and (tmp_path / "videoconf.db").is_file()


class Parsed(Exception):
    pass


BENCHMARK_COMMANDS = [c for c in commands("python") if c.startswith(("python benchmarks/", "python -m benchmarks."))]


def test_the_readme_has_benchmark_commands() -> None:
    assert "python -m benchmarks.side_by_side [--quick]" in BENCHMARK_COMMANDS


@pytest.mark.parametrize("command", BENCHMARK_COMMANDS)
def test_each_benchmark_command_line_parses(command: str, monkeypatch) -> None:
    real = argparse.ArgumentParser.parse_args

    def parse_only(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        raise Parsed(real(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for argv in variants(command):
        if argv[1] == "-m":  # the module's file, run as the command runs it
            argv = [argv[0], argv[2].replace(".", "/") + ".py", *argv[3:]]
        monkeypatch.setattr(sys, "argv", argv[1:])
        with pytest.raises(Parsed):
            runpy.run_path(str(ROOT / argv[1]), run_name="__main__")


def test_each_make_command_names_a_target_and_its_variables() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for command in commands("make"):
        for argv in variants(command):
            for word in argv[1:]:
                if "=" in word:
                    assert re.search(rf"^{word.split('=')[0]} \??=", makefile, re.M), (command, word)
                else:
                    assert re.search(rf"^{re.escape(word)}:", makefile, re.M), (command, word)


def test_each_python_module_and_path_the_readme_runs_exists() -> None:
    for command in commands("python") + commands("python3"):
        argv = shlex.split(command)
        if argv[1:2] == ["-m"]:
            assert importlib.util.find_spec(argv[2]) is not None, command
        elif len(argv) > 1:
            assert (ROOT / argv[1]).is_file(), command
