"""`vastinit ctl reload` and SIGHUP against a real `vastinit run`: all or nothing, minimal."""

from __future__ import annotations

import json
import signal
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness import Vastinit, wait_until, write_unit

Start = Callable[..., Vastinit]


def units(v: Vastinit) -> dict[str, dict[str, Any]]:
    result = v.ctl("status", "--json")
    assert result.returncode in (0, 3), result.stderr
    return {u["name"]: u for u in json.loads(result.stdout)["units"]}


def shown(v: Vastinit, name: str) -> dict[str, Any]:
    """``ctl show NAME`` parsed back from TOML."""
    return tomllib.loads(v.ctl("show", name).stdout)


def wait_ready(v: Vastinit, *names: str, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """Wait until every unit in ``names`` is ready; returns the status of all units."""
    result = v.ctl("ready", "--wait", "--timeout", str(timeout), *names, timeout=timeout + 10)
    assert result.returncode == 0, result
    return units(v)


def test_reload_starts_added_stops_removed_restarts_changed_and_leaves_the_rest(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("GREETING=hello\nSECRET=hunter2\n")
    write_unit(units_dir, "keep", 'command = ["sleep", "60"]')
    write_unit(units_dir, "gone", 'command = ["sleep", "60"]')
    write_unit(units_dir, "edited", 'command = ["sleep", "60"]')
    write_unit(
        units_dir,
        "envd",
        f"""
        command = "echo greeting=$$GREETING; exec sleep 60"
        env_files = ["{env_file}"]
        """,
    )
    write_unit(units_dir, "idle_env", f'command = ["sleep", "60"]\nenv_files = ["{tmp_path}/none"]')
    v = vastinit_run(control=True)
    v.wait_control()
    before = wait_ready(v, "keep", "gone", "edited", "envd", "idle_env")
    v.wait_line("envd", "greeting=hello")
    assert before["envd"]["restart_to_apply"] is None

    (units_dir / "gone.toml").unlink()
    write_unit(units_dir, "edited", 'command = ["sleep", "61"]')
    # An edited env file restarts nothing: the unit is only marked "restart to apply".
    env_file.write_text("GREETING=bonjour\nSECRET=swordfish\nNEW=1\n")
    write_unit(units_dir, "added", 'command = ["sleep", "60"]\n[depends_on]\nedited = "ready"')
    note = f"GREETING, SECRET changed in {env_file}; NEW added to {env_file}"

    preview = v.ctl("reload", "--dry-run")
    assert preview.returncode == 0, preview
    assert preview.stdout.splitlines() == [
        "added: would start",
        "gone: would stop",
        "edited: would restart",
        f"envd: restart to apply: {note}",
        "3 units unchanged",
    ]
    assert units(v)["gone"]["pid"] == before["gone"]["pid"]  # a dry run changes nothing
    assert units(v)["envd"]["restart_to_apply"] is None
    reread = v.ctl("reread")
    assert reread.stdout.splitlines() == [
        "added: available",
        "edited: changed",
        "gone: disappeared",
        f"envd: restart to apply: {note}",
    ]

    reloaded = v.ctl("reload")
    assert reloaded.returncode == 0, reloaded
    assert reloaded.stdout.splitlines() == [
        "added: added",
        "gone: removed",
        "edited: changed",
        f"envd: restart to apply: {note}",
        "3 units unchanged",
    ]
    after = wait_ready(v, "keep", "edited", "envd", "added", "idle_env")
    assert "gone" not in after
    assert before["gone"]["pid"] is not None and v.state("gone") == "stopped"
    # Unchanged units keep their process, env-changed ones too; changed ones get a new one.
    assert after["keep"]["pid"] == before["keep"]["pid"]
    assert after["idle_env"]["pid"] == before["idle_env"]["pid"]
    assert after["edited"]["pid"] != before["edited"]["pid"]
    assert after["envd"]["pid"] == before["envd"]["pid"]
    assert after["envd"]["restart_to_apply"] == note
    assert after["keep"]["restart_to_apply"] is None
    assert f"envd: restart to apply: {note}" in v.ctl("status").stdout.splitlines()
    assert shown(v, "edited")["command"] == ["sleep", "61"]
    logged = [
        e for e in list(v.events) if e.get("event") == "environment changed; restart to apply"
    ]
    assert [(e["unit"], e["restart_to_apply"]) for e in logged] == [("envd", note)]
    # Names and sources only: no value reaches the status, the reply or the log.
    for text in (reloaded.stdout, v.ctl("status", "--json").stdout, json.dumps(list(v.events))):
        assert "swordfish" not in text and "hunter2" not in text and "bonjour" not in text
    assert all(
        "unit file changed" not in str(e.get("cause")) for e in v.events if e.get("unit") == "envd"
    )

    # A reload with nothing new keeps the note; the next start applies it and clears it.
    again = v.ctl("reload")
    assert again.stdout == f"envd: restart to apply: {note}\n5 units unchanged\n"
    assert units(v)["envd"]["pid"] == after["envd"]["pid"]
    restarted = v.ctl("restart", "envd")
    assert restarted.returncode == 0, restarted
    v.wait_line("envd", "greeting=bonjour")
    assert units(v)["envd"]["restart_to_apply"] is None
    assert v.ctl("reload").stdout == "5 units unchanged\n"
    assert v.terminate() == 0


def test_env_file_edit_reverted_before_the_next_reload_clears_the_note(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("A=1\n")
    write_unit(units_dir, "app", f'command = ["sleep", "60"]\nenv_files = ["{env_file}"]')
    v = vastinit_run(control=True)
    v.wait_control()
    before = wait_ready(v, "app")
    env_file.write_text("")
    reloaded = v.ctl("reload").stdout
    assert reloaded == f"app: restart to apply: A removed from {env_file}\n1 unit unchanged\n"
    assert units(v)["app"]["restart_to_apply"] == f"A removed from {env_file}"
    env_file.write_text("A=1\n")
    assert v.ctl("reload").stdout == "1 unit unchanged\n"
    after = units(v)["app"]
    assert after["restart_to_apply"] is None and after["pid"] == before["app"]["pid"]
    assert v.terminate() == 0


def test_restart_on_env_restarts_only_for_a_listed_variable(
    units_dir: Path, tmp_path: Path, vastinit_run: Start
) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("FOO=1\nBAR=1\n")
    write_unit(
        units_dir,
        "picky",
        f"""
        command = "echo foo=$$FOO bar=$$BAR; exec sleep 60"
        env_files = ["{env_file}"]
        restart_on_env = ["FOO"]
        """,
    )
    write_unit(
        units_dir,
        "eager",
        f"""
        command = ["sleep", "60"]
        env_files = ["{env_file}"]
        restart_on_env = ["*"]
        """,
    )
    v = vastinit_run(control=True)
    v.wait_control()
    first = wait_ready(v, "picky", "eager")

    env_file.write_text("FOO=1\nBAR=2\n")
    assert v.ctl("reload", "--dry-run").stdout.splitlines() == [
        f"eager: would restart (BAR changed in {env_file})",
        f"picky: restart to apply: BAR changed in {env_file}",
        "1 unit unchanged",
    ]
    reloaded = v.ctl("reload")
    assert reloaded.stdout.splitlines() == [
        f"eager: restarted (BAR changed in {env_file})",
        f"picky: restart to apply: BAR changed in {env_file}",
        "1 unit unchanged",
    ]
    v.wait_state("eager", "ready", count=2)
    second = wait_ready(v, "picky", "eager")
    assert second["picky"]["pid"] == first["picky"]["pid"]  # BAR is not listed
    assert second["eager"]["pid"] != first["eager"]["pid"]
    assert second["picky"]["restart_to_apply"] == f"BAR changed in {env_file}"

    env_file.write_text("FOO=2\nBAR=2\n")
    reloaded = v.ctl("reload")
    assert reloaded.returncode == 0, reloaded
    assert f"picky: restarted (FOO changed in {env_file})" in reloaded.stdout.splitlines()
    v.wait_line("picky", "foo=2 bar=2")
    third = wait_ready(v, "picky", "eager")
    assert third["picky"]["pid"] != second["picky"]["pid"]
    # The restart took every new value (BAR too): nothing is left to apply.
    assert third["picky"]["restart_to_apply"] is None
    stopped = v.event("picky", "stopping")
    assert stopped is not None and stopped["cause"] == f"FOO changed in {env_file}", stopped
    assert all(
        "unit file changed" not in str(e.get("cause")) for e in v.events if e.get("unit") == "picky"
    )
    assert v.terminate() == 0


def test_invalid_unit_files_change_nothing_and_every_error_is_printed(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "keep", 'command = ["sleep", "60"]')
    write_unit(units_dir, "edited", 'command = ["sleep", "60"]')
    v = vastinit_run(control=True)
    v.wait_control()
    before = wait_ready(v, "keep", "edited")

    write_unit(units_dir, "edited", 'command = ["sleep", "61"]\ncomand = "typo"')
    bad = write_unit(units_dir, "bad", 'command = ["true"]\n[restart]\ndelay = "soon"')
    write_unit(units_dir, "fine_new", 'command = ["sleep", "60"]')

    refused = v.ctl("reload")
    assert refused.returncode == 2, refused
    assert refused.stdout == ""
    errors = refused.stderr.splitlines()
    assert errors[-1] == "vastinit ctl: 2 problems in unit files; nothing changed"
    assert any(e.startswith(f"{units_dir / 'edited.toml'}:2: unit edited:") for e in errors)
    assert any(e.startswith(f"{bad}:3: unit bad:") for e in errors)
    after = units(v)
    assert set(after) == {"keep", "edited"}
    assert after["edited"]["pid"] == before["edited"]["pid"]
    assert after["keep"]["pid"] == before["keep"]["pid"]
    assert shown(v, "edited")["command"] == ["sleep", "60"]
    assert v.ctl("reread").returncode == 2  # the dry run reports the same problems
    assert v.terminate() == 0


def test_sighup_reloads_the_same_way(units_dir: Path, vastinit_run: Start) -> None:
    write_unit(units_dir, "keep", 'command = ["sleep", "60"]')
    v = vastinit_run(control=True)
    v.wait_control()
    before = wait_ready(v, "keep")
    write_unit(units_dir, "late", 'command = ["sleep", "60"]')
    v.signal(signal.SIGHUP)
    v.wait_state("late", "ready")
    assert units(v)["keep"]["pid"] == before["keep"]["pid"]

    write_unit(units_dir, "late", 'command = ["sleep", "60"]\nbogus = 1')
    v.signal(signal.SIGHUP)
    wait_until(
        lambda: any(e.get("event") == "reload refused; nothing changed" for e in list(v.events)),
        10,
        "the refused reload to be logged",
    )
    assert units(v)["late"]["state"] == "ready"
    assert v.terminate() == 0


def test_reload_applies_enabled_false_and_retries_units_skipped_for_a_changed_dependency(
    units_dir: Path, vastinit_run: Start
) -> None:
    write_unit(units_dir, "model", 'command = ["sleep", "60"]\nenabled = false')
    write_unit(units_dir, "ui", 'command = ["sleep", "60"]\n[depends_on]\nmodel = "ready"')
    write_unit(units_dir, "extra", 'command = ["sleep", "60"]')
    v = vastinit_run(control=True)
    v.wait_control()
    v.wait_state("ui", "skipped")
    wait_ready(v, "extra")

    write_unit(units_dir, "model", 'command = ["sleep", "60"]')
    write_unit(units_dir, "extra", 'command = ["sleep", "60"]\nenabled = false')
    result = v.ctl("reload")
    assert result.returncode == 0, result
    after = wait_ready(v, "model", "ui")  # ui's dependency came back, so ui is retried
    assert after["extra"]["state"] == "skipped" and after["extra"]["pid"] is None
    assert v.terminate() == 0
