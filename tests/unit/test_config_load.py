"""The search path, drop-ins and the Unit values they produce."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from vastinit.config import load_units
from vastinit.errors import ConfigError
from vastinit.model import (
    DependencyCondition,
    Expose,
    LogSpec,
    Overlap,
    ProbeKind,
    RestartMode,
    RestartPolicy,
    StopMode,
    StopPolicy,
    UnitType,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(dirs: list[Path]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_units(dirs)
    return [str(p) for p in info.value.problems]


SGLANG = """\
description = "SGLang"
command = ["vastinit", "launch", "sglang"]
working_dir = "${WORKSPACE:-/workspace}"
environment = { HOME = "${WORKSPACE:-/workspace}", B = "2" }
env_files = ["/etc/environment"]

[depends_on]
provisioning = "exited"

[readiness]
log = "fired up"
start_timeout = "2h"

[liveness]
http = "http://127.0.0.1:18000/health"

[stop]
signal = "TERM"
mode = "main"
timeout = "30s"

[[expose]]
port = 8000
target = 18000
path = "/docs"
label = "SGLang API"
"""


def test_full_unit_becomes_frozen_spec(tmp_path: Path) -> None:
    base = write(tmp_path / "sglang.toml", SGLANG)
    write(tmp_path / "provisioning.toml", 'type = "oneshot"\ncommand = "echo hi"\n')
    units = load_units([tmp_path])
    assert sorted(units) == ["provisioning", "sglang"]
    u = units["sglang"]
    assert u.source == str(base)
    assert u.type is UnitType.SERVICE
    assert u.command == ("vastinit", "launch", "sglang")
    assert u.working_dir == "${WORKSPACE:-/workspace}"  # templates stay until each start
    assert dict(u.environment) == {"HOME": "${WORKSPACE:-/workspace}", "B": "2"}
    assert u.env_files == ("/etc/environment",)
    assert dict(u.depends_on) == {"provisioning": DependencyCondition.EXITED}
    assert u.readiness is not None and u.readiness.kind is ProbeKind.LOG
    assert (u.readiness.target, u.readiness.interval, u.readiness.timeout) == ("fired up", 1, 5)
    assert u.readiness.start_timeout == 7200
    assert u.liveness is not None and u.liveness.kind is ProbeKind.HTTP
    assert (u.liveness.interval, u.liveness.timeout, u.liveness.failures) == (30, 10, 3)
    assert u.restart == RestartPolicy(mode=RestartMode.ON_FAILURE)
    assert u.stop == StopPolicy(signal=signal.SIGTERM, mode=StopMode.MAIN, timeout=30)
    assert u.log == LogSpec()
    assert u.expose == (Expose(port=8000, target=18000, path="/docs", label="SGLang API"),)
    assert u.raw["description"] == "SGLang"
    with pytest.raises(TypeError):
        u.raw["description"] = "changed"  # type: ignore[index]
    p = units["provisioning"]
    assert p.command == ("/bin/sh", "-c", "echo hi")
    assert p.restart.mode is RestartMode.NEVER  # a oneshot does not restart by default


def test_defaults_of_a_minimal_unit(tmp_path: Path) -> None:
    write(tmp_path / "m.toml", 'command = ["true"]\n')
    u = load_units([tmp_path])["m"]
    assert (u.enabled, u.readiness, u.liveness, u.schedule) == (True, None, None, None)
    assert u.restart == RestartPolicy()
    assert u.stop == StopPolicy()
    assert u.log_file == "m.log"


def test_cron_unit_defaults(tmp_path: Path) -> None:
    write(
        tmp_path / "job.toml", 'type = "cron"\ncommand = ["true"]\n[schedule]\ncron = "@hourly"\n'
    )
    u = load_units([tmp_path])["job"]
    assert u.schedule is not None
    assert (u.schedule.cron, u.schedule.timezone) == ("@hourly", "UTC")
    assert (u.schedule.overlap, u.schedule.run_on_start) == (Overlap.SKIP, False)
    assert u.restart.mode is RestartMode.NEVER


def test_later_directory_replaces_a_unit_whole(tmp_path: Path) -> None:
    write(tmp_path / "a" / "x.toml", 'command = ["first"]\ndescription = "first"\n')
    later = write(tmp_path / "b" / "x.toml", 'command = ["second"]\n')
    u = load_units([tmp_path / "a", tmp_path / "b"])["x"]
    assert u.command == ("second",)
    assert u.description == ""  # nothing of the earlier file survives
    assert u.source == str(later)


def test_dropins_merge_tables_and_replace_arrays(tmp_path: Path) -> None:
    write(tmp_path / "a" / "sglang.toml", SGLANG)
    write(tmp_path / "provisioning.toml", 'type = "oneshot"\ncommand = ["true"]\n')
    # Filename order within a directory, then the path order of directories.
    write(
        tmp_path / "a" / "sglang.d" / "20-later.toml",
        'command = ["sglang", "serve", "--model-path", "m2"]\n[stop]\ntimeout = "1m"\n',
    )
    write(
        tmp_path / "a" / "sglang.d" / "10-args.toml",
        'command = ["sglang", "serve", "--model-path", "m1"]\n'
        'environment = { EXTRA = "1" }\n'
        "[[expose]]\nport = 9000\ntarget = 19000\n",
    )
    write(tmp_path / "b" / "sglang.d" / "00-last.toml", '[stop]\nsignal = "SIGINT"\n')
    write(tmp_path / "b" / "sglang.d" / "notes.txt", "ignored: not .toml")
    dirs = [tmp_path / "a", tmp_path, tmp_path / "b"]
    u = load_units(dirs)["sglang"]
    assert u.command == ("sglang", "serve", "--model-path", "m2")
    # Tables merge key by key...
    assert dict(u.environment) == {"HOME": "${WORKSPACE:-/workspace}", "B": "2", "EXTRA": "1"}
    assert u.stop == StopPolicy(signal=signal.SIGINT, mode=StopMode.MAIN, timeout=60)
    # ...arrays of tables replace.
    assert u.expose == (Expose(port=9000, target=19000),)
    assert u.raw["stop"] == {"signal": "SIGINT", "mode": "main", "timeout": "1m"}
    assert u.source == str(tmp_path / "a" / "sglang.toml")


def test_dropin_in_an_earlier_directory_applies_to_a_later_base(tmp_path: Path) -> None:
    write(tmp_path / "a" / "x.d" / "o.toml", "enabled = false\n")
    write(tmp_path / "b" / "x.toml", 'command = ["true"]\n')
    assert load_units([tmp_path / "a", tmp_path / "b"])["x"].enabled is False


def test_disabled_units_are_returned(tmp_path: Path) -> None:
    write(tmp_path / "off.toml", 'command = ["true"]\nenabled = false\n')
    assert load_units([tmp_path])["off"].enabled is False


def test_missing_directories_and_other_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path / "x.toml", 'command = ["true"]\n')
    write(tmp_path / "README.md", "not a unit")
    write(tmp_path / ".x.toml", "hidden: never read")
    (tmp_path / "dir.toml").mkdir()
    assert list(load_units([tmp_path / "nope", tmp_path])) == ["x"]
    assert load_units([tmp_path / "nope"]) == {}


def test_dropin_without_a_base_unit_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "sglang.toml", 'command = ["true"]\n')
    dropin = write(tmp_path / "sglnag.d" / "x.toml", "enabled = false\n")
    assert problems([tmp_path]) == [
        f"{dropin}: unit sglnag: drop-in for a unit that does not exist: "
        "no sglnag.toml (did you mean 'sglang'?)"
    ]


def test_problem_in_a_dropin_points_at_the_dropin(tmp_path: Path) -> None:
    write(tmp_path / "x.toml", 'command = ["true"]\n[restart]\nlimit = 1\n')
    dropin = write(tmp_path / "x.d" / "o.toml", "# override\n[restart]\nlimit = -1\n")
    assert problems([tmp_path]) == [
        f"{dropin}:3: unit x: restart.limit: -1 is out of range (must be >= 0)"
    ]


def test_every_problem_in_every_file_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", "command = 5\n")
    write(tmp_path / "b.toml", 'command = ["true"]\nenabled = "yes"\n')
    write(tmp_path / "c.toml", 'command = ["true"]\nx = \n')
    write(tmp_path / "bad name.toml", 'command = ["true"]\n')
    found = problems([tmp_path])
    assert [p.split(": unit")[0] for p in found] == [
        f"{tmp_path}/a.toml:1",
        f"{tmp_path}/b.toml:2",
        f"{tmp_path}/bad name.toml",
        f"{tmp_path}/c.toml:2",
    ]
    assert "TOML syntax error" in found[3] and "Traceback" not in found[3]
    assert "invalid unit name" in found[2]


def test_dependency_on_a_unit_with_a_syntax_error_is_not_called_unknown(tmp_path: Path) -> None:
    write(tmp_path / "a.toml", 'command = ["true"]\n[depends_on]\nb = "started"\n')
    write(tmp_path / "b.toml", "command = [\n")
    found = problems([tmp_path])
    assert len(found) == 1 and "b.toml" in found[0]
