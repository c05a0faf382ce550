"""Transient units against a real `vastinit run`: created and removed over the control
socket (`ctl add`, `ctl remove`), left alone by `ctl reload`, gone after a restart, and
each refusal of the API (issue 22)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Vastinit, pid_alive, wait_until, write_unit
from vastinit.config import MAX_TRANSIENT_UNITS

Start = Callable[..., Vastinit]
SLEEPER = 'command = ["sleep", "300"]\n'


def units(v: Vastinit) -> dict[str, dict[str, Any]]:
    result = v.ctl("status", "--json")
    assert result.returncode in (0, 3), result.stderr
    return {u["name"]: u for u in json.loads(result.stdout)["units"]}


def add(v: Vastinit, tmp: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp / f"{name}.unit"  # not in the units directory: a transient unit has no file
    path.write_text(text)
    return v.ctl("add", name, str(path))


def wait_ready(v: Vastinit, *names: str) -> dict[str, dict[str, Any]]:
    result = v.ctl("ready", "--wait", "--timeout", "15", *names, timeout=30)
    assert result.returncode == 0, result
    return units(v)


def test_transient_unit_survives_reload_is_removed_and_is_gone_after_restart(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "base", SLEEPER)
    write_unit(units_dir, "other", SLEEPER)
    v = vastinit_run(control=True)
    v.wait_control()
    wait_ready(v, "base", "other")

    # From standard input, depending on a unit from a file.
    text = SLEEPER + '[depends_on]\nbase = "ready"\n'
    added = subprocess.run(
        v.ctl_argv("add", "tunnel", "-"), input=text, capture_output=True, text=True, timeout=30
    )
    assert added.returncode == 0, added
    assert added.stdout.startswith("tunnel: added (transient;")
    before = wait_ready(v, "tunnel")
    assert before["tunnel"]["transient"] is True
    assert before["base"]["transient"] is False
    pid = before["tunnel"]["pid"]
    assert pid and pid_alive(pid)

    table = v.ctl("status").stdout
    assert "tunnel*" in table and "* transient" in table
    shown = v.ctl("show", "tunnel")
    assert shown.stdout.startswith("# <transient tunnel>")
    assert not list(units_dir.glob("tunnel*")) and not list(tmp_path.glob("**/tunnel.toml"))

    # An unrelated unit file change: reload restarts `other`, leaves the transient unit be.
    write_unit(units_dir, "other", 'command = ["sleep", "301"]')
    reload = v.ctl("reload")
    assert reload.returncode == 0, reload
    assert "other: changed" in reload.stdout
    assert "tunnel" not in reload.stdout
    after = wait_ready(v, "other", "tunnel")
    assert after["tunnel"]["pid"] == pid
    assert after["other"]["pid"] != before["other"]["pid"]

    # A unit file that would take its name is refused while the transient unit exists.
    write_unit(units_dir, "tunnel", SLEEPER)
    refused = v.ctl("reload")
    assert refused.returncode == 2
    assert "a transient unit tunnel exists" in refused.stderr
    (units_dir / "tunnel.toml").unlink()

    removed = v.ctl("remove", "tunnel")
    assert removed.returncode == 0, removed
    assert removed.stdout.strip() == "tunnel: removed"
    wait_until(lambda: not pid_alive(pid), 10, "the transient unit's process to end")
    assert "tunnel" not in units(v)

    assert add(v, tmp_path, "again", SLEEPER).returncode == 0
    wait_ready(v, "again")
    assert v.terminate() == 0

    v2 = vastinit_run(control=True)
    v2.wait_control()
    wait_ready(v2, "base", "other")
    assert set(units(v2)) == {"base", "other"}


def test_transient_unit_refusals(units_dir: Path, tmp_path: Path, vastinit_run: Start) -> None:
    write_unit(units_dir, "filed", SLEEPER)
    v = vastinit_run(control=True)
    v.wait_control()
    wait_ready(v, "filed")

    def refused(name: str, text: str) -> str:
        result = add(v, tmp_path, name, text)
        assert result.returncode != 0, result
        return result.stderr

    essential = refused("e", SLEEPER + "[restart]\nessential = true\n")
    assert "<transient e>:3: unit e: restart.essential: a transient unit cannot be essential" in (
        essential
    )
    assert "user: a transient unit cannot set user" in refused("u", SLEEPER + 'user = "nobody"\n')
    assert "group: a transient unit cannot set group" in refused("g", SLEEPER + 'group = "x"\n')
    noauth = refused("x", SLEEPER + "[[expose]]\nport = 8123\ntarget = 18123\nauth = false\n")
    assert "<transient x>:5: unit x: expose[0].auth: a transient unit cannot expose" in noauth
    bad = refused("bad", 'command = ["sleep",\n')
    assert "<transient bad>:" in bad and "TOML syntax error" in bad
    assert "unknown unit 'nope'" in refused("dep", SLEEPER + '[depends_on]\nnope = "ready"\n')
    dup = refused("filed", SLEEPER)
    assert "unit filed already exists" in dup and "cannot replace or shadow" in dup
    assert "invalid unit name" in refused("../x", SLEEPER)

    # Removing a unit from a file: 409, it keeps running.
    pid = units(v)["filed"]["pid"]
    no = v.ctl("remove", "filed")
    assert no.returncode == 1
    assert "unit filed is not transient" in no.stderr
    assert units(v)["filed"]["pid"] == pid
    assert "no unit 'nothere'" in v.ctl("remove", "nothere").stderr

    # The cap: MAX_TRANSIENT_UNITS of them, then 409; one removed makes room again.
    for i in range(MAX_TRANSIENT_UNITS):
        result = add(v, tmp_path, f"t{i}", 'command = ["sleep", "300"]\nenabled = false\n')
        assert result.returncode == 0, result
    dup_t = refused("t0", SLEEPER)
    assert "already exists (a transient unit)" in dup_t
    over = refused("one-more", SLEEPER)
    assert f"too many transient units ({MAX_TRANSIENT_UNITS}; at most" in over
    assert v.ctl("remove", "t0").returncode == 0
    assert add(v, tmp_path, "one-more", SLEEPER).returncode == 0
    assert not any(name.startswith("<") for name in units(v))


def test_a_transient_unit_waits_on_its_dependency_and_is_retried_when_reload_enables_it(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "later", SLEEPER + "enabled = false\n")
    v = vastinit_run(control=True)
    v.wait_control()
    v.wait_state("later", "skipped")
    assert add(v, tmp_path, "needs", SLEEPER + '[depends_on]\nlater = "ready"\n').returncode == 0
    v.wait_state("needs", "skipped")
    write_unit(units_dir, "later", SLEEPER)
    assert v.ctl("reload").returncode == 0
    ready = wait_ready(v, "later", "needs")
    assert ready["needs"]["transient"] and ready["needs"]["pid"]
