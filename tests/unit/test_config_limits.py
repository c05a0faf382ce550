"""Bounds on what a unit file or env file can make large, and input execve would refuse."""

from __future__ import annotations

import dataclasses
import os
import tracemalloc
from pathlib import Path
from types import MappingProxyType

import pytest

from vastinit.config import expand, load_units, read_env_files, resolve_unit, start_environment
from vastinit.config.expand import MAX_EXPANSION
from vastinit.config.files import FileRefused, read_bounded
from vastinit.errors import ConfigError, ConfigProblem, ExpansionError
from vastinit.model import Unit


def load_one(tmp_path: Path, text: str) -> Unit:
    (tmp_path / "units").mkdir(exist_ok=True)
    (tmp_path / "units" / "u.toml").write_text(text)
    return load_units([tmp_path / "units"])["u"]


def test_expansion_over_the_limit_raises_while_building() -> None:
    env = {"A": "x" * 100_000}
    assert expand("${A}", env) == env["A"]
    with pytest.raises(ExpansionError, match="expands to more than 128 KiB"):
        expand("${A}${A}", env)
    with pytest.raises(ValueError, match="expands to more than 128 KiB"):  # a ValueError too
        expand("y" * (MAX_EXPANSION + 1), {})
    assert len(expand("y" * MAX_EXPANSION, {})) == MAX_EXPANSION


def test_unused_default_is_not_built() -> None:
    env = {"SET": "v", "BIG": "x" * 100_000}
    assert expand("${SET:-${BIG}${BIG}}", env) == "v"


def test_expansion_bomb_at_start_fails_without_allocating(tmp_path: Path) -> None:
    unit = load_one(tmp_path, 'command = ["true"]\n')
    bomb = {"A0": "x" * 100}
    bomb |= {f"A{i}": f"${{A{i - 1}}}${{A{i - 1}}}" for i in range(1, 27)}
    unit = dataclasses.replace(unit, environment=MappingProxyType(bomb))
    tracemalloc.start()
    try:
        with pytest.raises(ExpansionError, match=r"environment\.A11: .* more than 128 KiB"):
            start_environment(unit, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


def test_many_values_just_under_the_limit_add_up_to_a_failure(tmp_path: Path) -> None:
    unit = load_one(tmp_path, 'command = ["true"]\n')
    env = {"BIG": "x" * 100_000} | {f"C{i}": "${BIG}" for i in range(40)}
    unit = dataclasses.replace(unit, environment=MappingProxyType(env))
    with pytest.raises(ExpansionError, match="add up to more than 2 MiB"):
        start_environment(unit, {})


def test_check_reports_the_bomb_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "u.toml").write_text(
        'command = ["true"]\n[environment]\nA = "${B:-' + "z" * 70_000 + '}"\nB = "${A}${A}"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_units([tmp_path])
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'u.toml'}:4: unit u: environment.B: "
        "'${A}${A}' expands to more than 128 KiB"
    ]


def test_nul_from_env_file_or_base_never_reaches_the_environment(tmp_path: Path) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_bytes(b"GOOD=1\nBAD=a\x00b\nALSO=2\n")
    unit = load_one(tmp_path, f'command = ["true"]\nenv_files = ["{env_file}"]\n')
    env = start_environment(unit, {"BASE": "x\x00y", "OK": "1", "A=B": "c"})
    assert env == {"OK": "1", "GOOD": "1", "ALSO": "2"}
    assert read_env_files([str(env_file)]) == {"GOOD": "1", "ALSO": "2"}


def test_resolve_unit_refuses_a_nul_in_a_command_argument(tmp_path: Path) -> None:
    unit = load_one(tmp_path, 'command = ["true"]\n')
    unit = dataclasses.replace(unit, command=("echo", "a\x00b"))
    with pytest.raises(ExpansionError, match=r"command\[1\]: contains a NUL byte"):
        resolve_unit(unit, {})


def test_env_file_over_the_limit_or_not_regular_is_skipped(tmp_path: Path) -> None:
    big = tmp_path / "big.env"
    big.write_text("A=1\n" + "#" * (1024 * 1024))
    pipe = tmp_path / "pipe.env"
    os.mkfifo(pipe)
    link = tmp_path / "link.env"
    link.symlink_to(pipe)
    good = tmp_path / "good.env"
    good.write_text("B=2\n")
    assert read_env_files([str(big), str(pipe), str(link), str(good)]) == {"B": "2"}


def test_env_file_value_over_128_kib_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text("A=1\nHUGE=" + "x" * (MAX_EXPANSION + 1) + "\nB=2\n")
    assert read_env_files([str(path)]) == {"A": "1", "B": "2"}


def test_read_bounded_refuses_without_blocking(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(FileRefused, match=r"not a regular file \(a FIFO\)"):
        read_bounded(pipe, 100, "unit file")
    path = tmp_path / "f"
    path.write_bytes(b"x" * 101)
    with pytest.raises(FileRefused, match="unit file is 101 bytes; the limit is 100 bytes"):
        read_bounded(path, 100, "unit file")
    assert read_bounded(path, 101, "unit file") == b"x" * 101


def test_deep_nesting_is_a_config_error_not_a_recursion_error(tmp_path: Path) -> None:
    (tmp_path / "u.toml").write_text('command = ["true"]\nx = ' + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"u\.toml:2: unit u: nested deeper than 32 levels"):
        load_units([tmp_path])


def test_nesting_up_to_the_limit_is_fine(tmp_path: Path) -> None:
    (tmp_path / "u.toml").write_text('command = ["true"]\nx = ' + "[" * 32 + "]" * 32 + "\n")
    with pytest.raises(ConfigError) as info:  # x is an unknown key, but not too deep
        load_units([tmp_path])
    assert [p.message for p in info.value.problems] == ["unknown key 'x'"]


def test_problem_escapes_control_characters() -> None:
    problem = ConfigProblem("/u/a\x1b[2Jb\n.toml", 3, "a\x1b", "bad \x07 value")
    assert str(problem) == "/u/a\\x1b[2Jb\\n.toml:3: unit a\\x1b: bad \\x07 value"
    assert "\x1b" not in str(ConfigError([problem]))
