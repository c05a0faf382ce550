"""The reload planner's view of a changed environment: which variables, from where, which
of them restart a unit that opted in (restart_on_env), and never a value."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import anyio
import pytest

from vastinit.config.environ import BASE_ORIGIN, ENVIRONMENT_ORIGIN, start_environment
from vastinit.model import Unit
from vastinit.supervisor.manager import Manager
from vastinit.supervisor.reload import EnvChange, env_change, plan_reload, restart_wanted
from vastinit.supervisor.unit import (
    EnvFingerprint,
    env_fingerprint,
    fingerprinted_environment,
    value_hash,
)

DOTENV = "/workspace/.env"


def fp(env: dict[str, str], origin: str = DOTENV) -> EnvFingerprint:
    return env_fingerprint(env, dict.fromkeys(env, origin))


def test_a_fingerprint_keeps_no_value_and_tells_values_apart() -> None:
    print_ = fp({"TOKEN": "hunter2", "EMPTY": ""})
    assert "hunter2" not in repr(print_)
    assert b"hunter2" not in b"".join(print_.hashes.values())
    assert print_.hashes["TOKEN"] == value_hash("hunter2") != value_hash("hunter3")
    assert print_.hashes["EMPTY"] != print_.hashes["TOKEN"]


def test_env_change_names_added_changed_and_removed_variables_with_their_source() -> None:
    old = fp({"KEEP": "1", "FOO": "1", "GONE": "1"})
    new = env_fingerprint(
        {"KEEP": "1", "FOO": "2", "NEW": "x", "HF_HOME": "/h"},
        {"KEEP": DOTENV, "FOO": DOTENV, "NEW": "/etc/extra.env", "HF_HOME": ENVIRONMENT_ORIGIN},
    )
    change = env_change(old, new)
    assert change == EnvChange(
        added={"NEW": "/etc/extra.env", "HF_HOME": ENVIRONMENT_ORIGIN},
        changed={"FOO": DOTENV},
        removed={"GONE": DOTENV},
    )
    assert change.describe() == (
        f"FOO changed in {DOTENV}; HF_HOME added to {ENVIRONMENT_ORIGIN}; "
        f"NEW added to /etc/extra.env; GONE removed from {DOTENV}"
    )
    assert not env_change(old, old)
    assert env_change(old, old).describe() == ""


def test_describe_groups_by_source_and_names_at_most_eight_variables() -> None:
    old = fp({f"V{i:02d}": "1" for i in range(12)})
    new = fp({f"V{i:02d}": "2" for i in range(12)})
    text = env_change(old, new).describe()
    assert text == f"V00, V01, V02, V03, V04, V05, V06, V07 changed in {DOTENV}; and 4 more"


@pytest.mark.parametrize(
    ("listed", "restarts"),
    [
        ((), None),
        (("BAR",), None),
        (("FOO",), f"FOO changed in {DOTENV}"),
        (("FOO", "GONE"), f"FOO changed in {DOTENV}; GONE removed from {DOTENV}"),
        (("*",), f"FOO, OTHER changed in {DOTENV}; GONE removed from {DOTENV}"),
    ],
)
def test_restart_on_env_restarts_only_for_what_it_lists(
    listed: tuple[str, ...], restarts: str | None
) -> None:
    change = env_change(
        fp({"FOO": "1", "OTHER": "1", "GONE": "1", "BAR": "1"}),
        fp({"FOO": "2", "OTHER": "2", "BAR": "1"}),
    )
    hit = restart_wanted(Unit(name="u", restart_on_env=listed), change)
    assert (hit.describe() if hit is not None else None) == restarts
    # The cause names only what the unit listed, never "unit file changed".
    nothing = env_change(fp({"FOO": "1"}), fp({"FOO": "1"}))
    assert restart_wanted(Unit(name="u", restart_on_env=listed), nothing) is None


def test_start_environment_says_where_each_variable_came_from(tmp_path: Path) -> None:
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    first.write_text("A=1\nB=1\n")
    second.write_text("B=2\nC=3\n")
    unit = Unit(
        name="u",
        env_files=(str(first), "${DIR}/b.env"),
        environment={"D": "${A}x", "C": "${C}"},
    )
    origins: dict[str, str] = {}
    env = start_environment(unit, {"DIR": str(tmp_path), "PATH": "/bin"}, origins=origins)
    assert env == {"DIR": str(tmp_path), "PATH": "/bin", "A": "1", "B": "2", "C": "3", "D": "1x"}
    assert {k: origins[k] for k in env} == {
        "DIR": BASE_ORIGIN,
        "PATH": BASE_ORIGIN,
        "A": str(first),
        "B": str(second),  # the last file that set it
        "C": ENVIRONMENT_ORIGIN,
        "D": ENVIRONMENT_ORIGIN,
    }
    same_env, print_ = fingerprinted_environment(unit, {"DIR": str(tmp_path), "PATH": "/bin"})
    assert same_env == env and dict(print_.origins) == {k: origins[k] for k in env}


def test_plan_reload_sorts_spec_changes_env_restarts_and_notes(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("FOO=2\nBAR=1\n")  # at their start: FOO=1 BAR=1
    files = (str(dotenv),)
    started = {"FOO": "1", "BAR": "1"}
    origins = dict.fromkeys(started, str(dotenv))

    def unit(name: str, **fields: Any) -> Unit:
        return Unit(name=name, command=("sleep", "1"), env_files=files, **fields)

    def runner(spec: Unit, *, wanted: bool = True, started_at: bool = True) -> Any:
        start = env_fingerprint(started, origins) if started_at else None
        return SimpleNamespace(unit=spec, start_env=start, wanted=wanted, restart_to_apply=None)

    running = {
        "edited": runner(unit("edited")),
        "noted": runner(unit("noted")),
        "picky": runner(unit("picky", restart_on_env=("FOO",))),
        "bar_only": runner(unit("bar_only", restart_on_env=("BAR",))),
        "stopped": runner(unit("stopped", restart_on_env=("*",)), wanted=False),
        "fresh": runner(unit("fresh"), started_at=False),
        "gone": runner(unit("gone")),
    }
    new = {name: r.unit for name, r in running.items() if name != "gone"}
    new["edited"] = unit("edited", description="new text")
    new["added"] = unit("added")
    manager = cast(Manager, SimpleNamespace(runners=running, base_env={}))

    plan = anyio.run(plan_reload, manager, new)
    note = f"FOO changed in {dotenv}"
    assert plan.added == ["added"] and plan.removed == ["gone"]
    assert plan.changed == ["edited"]  # the unit file changed: restarted as before
    assert dict(plan.env_restart) == {"picky": note}  # FOO is listed
    assert plan.unchanged == ["bar_only", "fresh", "noted", "stopped"]
    # Not listed, or stopped by hand: left alone with the note; never started: nothing.
    assert plan.notes == {"bar_only": note, "noted": note, "stopped": note}
    assert all(plan.seen[n] is running[n].start_env for n in plan.notes)
