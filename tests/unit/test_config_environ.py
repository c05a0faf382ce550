"""The environment of one start and the unit resolved against it."""

from __future__ import annotations

from pathlib import Path

from vastinit.config import load_units, resolve_unit, start_environment
from vastinit.model import ProbeKind, Unit


def load_one(tmp_path: Path, text: str) -> Unit:
    (tmp_path / "units").mkdir(exist_ok=True)
    (tmp_path / "units" / "u.toml").write_text(text)
    return load_units([tmp_path / "units"])["u"]


def test_env_files_then_environment_in_order(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "global.env").write_text(f"WORKSPACE={tmp_path / 'ws'}\nFROM_GLOBAL=g\nB=global\n")
    (tmp_path / "ws" / ".env").write_text("B=workspace\n")
    unit = load_one(
        tmp_path,
        f'command = ["true"]\n'
        f'env_files = ["{tmp_path}/global.env", "${{WORKSPACE}}/.env", "/nonexistent/.env"]\n'
        "[environment]\n"
        'HOME = "${WORKSPACE:-/workspace}"\n'
        'DEVICES = "gpus=${GPU_COUNT}"\n'
        'SEEN = "${HOME}:${B}"\n',
    )
    env = start_environment(unit, {"GPU_COUNT": "2", "PATH": "/bin", "B": "base"})
    assert env["PATH"] == "/bin"  # vastinit's own environment is the base
    assert env["FROM_GLOBAL"] == "g"
    assert env["B"] == "workspace"  # the second path was expanded with the first file's WORKSPACE
    assert env["HOME"] == str(tmp_path / "ws")
    assert env["DEVICES"] == "gpus=2"
    assert env["SEEN"] == f"{tmp_path / 'ws'}:workspace"  # earlier environment keys are visible


def test_env_files_are_reread_at_each_start(tmp_path: Path) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text("MODEL=a\n")
    unit = load_one(tmp_path, f'command = ["true"]\nenv_files = ["{env_file}"]\n')
    assert start_environment(unit, {})["MODEL"] == "a"
    env_file.write_text("MODEL=b\n")
    assert start_environment(unit, {})["MODEL"] == "b"


def test_resolve_unit_expands_every_templated_field(tmp_path: Path) -> None:
    unit = load_one(
        tmp_path,
        'command = ["serve", "--tp", "${GPU_COUNT}", "$$HOME", "${MISSING}"]\n'
        'working_dir = "${WS:-/workspace}"\n'
        "[readiness]\n"
        'http = "http://127.0.0.1:${PORT}/health"\n'
        "[liveness]\n"
        'exec = ["test", "-S", "${WS}/x.sock"]\n'
        "[log]\n"
        'file = "${NAME}.log"\n',
    )
    env = {"GPU_COUNT": "4", "PORT": "18000", "WS": "/w", "NAME": "srv"}
    resolved = resolve_unit(unit, env)
    assert resolved.command == ("serve", "--tp", "4", "$HOME", "")
    assert resolved.working_dir == "/w"
    assert resolved.readiness is not None and resolved.readiness.kind is ProbeKind.HTTP
    assert resolved.readiness.target == "http://127.0.0.1:18000/health"
    assert resolved.liveness is not None
    assert resolved.liveness.target == ("test", "-S", "/w/x.sock")
    assert resolved.log.file == "srv.log"
    # The loaded unit keeps its templates for the next start.
    assert unit.command[2] == "${GPU_COUNT}"


def test_resolve_unit_keeps_absent_fields_absent(tmp_path: Path) -> None:
    unit = load_one(tmp_path, 'command = "echo $HOME"\n')
    resolved = resolve_unit(unit, {"HOME": "/root"})
    assert resolved.command == ("/bin/sh", "-c", "echo $HOME")  # a lone $ is the shell's
    assert (resolved.working_dir, resolved.readiness, resolved.log.file) == (None, None, None)


SECRET_ENV = {"OPEN_BUTTON_TOKEN": "o", "WEB_PASSWORD": "w", "CONTAINER_API_KEY": "k", "A": "a"}


def test_secrets_are_withheld_unless_listed(tmp_path: Path) -> None:
    plain = load_one(tmp_path, 'command = ["true"]\nenvironment = { X = "${WEB_PASSWORD:-none}" }')
    env = start_environment(plain, SECRET_ENV, SECRET_ENV)
    assert env == {"A": "a", "X": "none"}
    edge = load_one(tmp_path, 'command = ["true"]\nsecrets = ["OPEN_BUTTON_TOKEN", "WEB_PASSWORD"]')
    assert edge.secrets == ("OPEN_BUTTON_TOKEN", "WEB_PASSWORD")
    # Listed ones come from vastinit's own environment (secrets_from), not from base.
    env = start_environment(edge, {"A": "a"}, SECRET_ENV)
    assert env == {"A": "a", "OPEN_BUTTON_TOKEN": "o", "WEB_PASSWORD": "w"}
    assert "OPEN_BUTTON_TOKEN" not in start_environment(edge, {}, {})  # listed but unset


def test_secrets_in_an_env_file_are_withheld_unless_listed(tmp_path: Path) -> None:
    etc_env = tmp_path / "environment"
    etc_env.write_text("OPEN_BUTTON_TOKEN=o\nCONTAINER_API_KEY=k\nB=b\n")
    plain = load_one(tmp_path, f'command = ["true"]\nenv_files = ["{etc_env}"]')
    assert start_environment(plain, {}, {}) == {"B": "b"}
    edge = load_one(
        tmp_path, f'command = ["true"]\nenv_files = ["{etc_env}"]\nsecrets = ["OPEN_BUTTON_TOKEN"]'
    )
    assert start_environment(edge, {}, {}) == {"B": "b", "OPEN_BUTTON_TOKEN": "o"}


def test_base_environment_drops_the_secrets() -> None:
    from vastinit.app import base_environment

    env = base_environment({**SECRET_ENV, "PATH": "/bin"}, [Path("/u")], None, "")
    assert env == {"A": "a", "PATH": "/bin", "VASTINIT_UNITS": "/u", "VASTINIT_ROLE": "workstation"}


def test_secrets_must_be_variable_names(tmp_path: Path) -> None:
    import pytest

    from vastinit.errors import ConfigError

    with pytest.raises(ConfigError, match="secrets: invalid variable name '1X'"):
        load_one(tmp_path, 'command = ["true"]\nsecrets = ["OK", "1X"]')
    with pytest.raises(ConfigError, match="secrets"):
        load_one(tmp_path, 'command = ["true"]\nsecrets = "OPEN_BUTTON_TOKEN"')


def test_shipped_caddy_unit_gets_the_token_variables() -> None:
    from vastinit.paths import PACKAGE_UNITS

    caddy = load_units([PACKAGE_UNITS])["caddy"]
    assert set(caddy.secrets) == {"OPEN_BUTTON_TOKEN", "WEB_PASSWORD"}
