"""``vastinit check`` as a real subprocess on good and bad unit directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vastinit", "check", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def good_stack(units: Path) -> None:
    write(units / "provisioning.toml", 'type = "oneshot"\ncommand = ["vastinit", "provision"]\n')
    write(units / "caddy.toml", 'command = ["caddy", "run"]\n')
    write(
        units / "sglang.toml",
        'command = ["vastinit", "launch", "sglang"]\n'
        '[depends_on]\nprovisioning = "exited"\ncaddy = "started"\n'
        '[readiness]\nlog = "The server is fired up"\n',
    )
    write(units / "jupyter.toml", 'command = ["jupyter", "lab"]\nenabled = false\n')


def test_good_units_print_start_layers(tmp_path: Path) -> None:
    good_stack(tmp_path)
    result = check("--units", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "layer 0: caddy, provisioning",
        "layer 1: sglang",
        "disabled: jupyter",
    ]
    assert result.stderr == ""


def test_dependent_of_a_disabled_unit_is_noted(tmp_path: Path) -> None:
    good_stack(tmp_path)
    write(tmp_path / "portal.toml", 'command = ["p"]\n[depends_on]\njupyter = "ready"\n')
    result = check("--units", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "note: portal depends on jupyter, which is disabled: portal will be skipped"
    )


def test_search_path_from_environment_and_dropins(tmp_path: Path) -> None:
    good_stack(tmp_path / "base")
    # A drop-in in a second directory switches jupyter on and makes it wait for sglang.
    write(
        tmp_path / "etc" / "jupyter.d" / "on.toml",
        'enabled = true\n[depends_on]\nsglang = "ready"\n',
    )
    env = {**os.environ, "VASTINIT_UNITS": f"{tmp_path / 'base'}:{tmp_path / 'etc'}"}
    result = check(env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "layer 2: jupyter"


def test_bad_units_print_every_problem_and_exit_2(tmp_path: Path) -> None:
    good_stack(tmp_path)
    write(tmp_path / "sglang.d" / "override.toml", '[restart]\ndelay = "soon"\n')
    write(tmp_path / "broken.toml", "command = [\n")
    write(
        tmp_path / "loop.toml",
        'command = ["x"]\ncommnd = 1\n[depends_on]\nloop2 = "ready"\n',
    )
    write(tmp_path / "loop2.toml", 'command = ["x"]\n[depends_on]\nloop = "ready"\n')
    result = check("--units", str(tmp_path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [
        f"{tmp_path}/broken.toml:1: unit broken: TOML syntax error: Invalid value",
        f"{tmp_path}/loop.toml:2: unit loop: unknown key 'commnd' (did you mean 'command'?)",
        f"{tmp_path}/loop.toml:4: unit loop: dependency cycle: loop -> loop2 -> loop",
        f"{tmp_path}/sglang.d/override.toml:2: unit sglang: restart.delay: bad duration 'soon': "
        'expected a duration such as "500ms", "30s", "5m", "2h", "1h30m", or a number of seconds',
        "vastinit check: 4 problems in 3 files",
    ]
    assert "Traceback" not in result.stderr


def test_missing_directory_is_noted_not_fatal(tmp_path: Path) -> None:
    result = check("--units", str(tmp_path / "nope"))
    assert result.returncode == 0
    assert "is not a directory" in result.stderr
    assert result.stdout.startswith("no units found in")
