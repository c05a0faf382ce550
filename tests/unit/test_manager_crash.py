"""The bug barrier in a unit's lifecycle: whatever goes wrong in one unit's task (a bug, a
spawn error, an expansion error), the unit ends in a visible state, its processes are
gone, the others run on, a later start works, and shutdown still works."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
import pytest

from vastinit.errors import VastinitError
from vastinit.logs.console import ConsoleSink
from vastinit.logs.mux import LogMux
from vastinit.model import RestartPolicy, State, Unit
from vastinit.proc.reaper import Reaper
from vastinit.supervisor import states as states_module
from vastinit.supervisor.manager import Manager
from vastinit.supervisor.unit import UnitRunner

Body = Callable[[Manager], Awaitable[None]]


def run_manager(
    tmp_path: Path,
    units: Iterable[Unit],
    body: Body,
    setup: Iterable[Callable[[UnitRunner], None]] = (),
) -> None:
    """Run a Manager over ``units`` (real processes), call ``body``, then shut down."""

    async def main() -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        console = ConsoleSink(devnull)
        reaper = Reaper()
        reaper.install()
        manager = Manager(
            {u.name: u for u in units},
            reaper=reaper,
            mux=LogMux(console, tmp_path),
            base_env=dict(os.environ),
            runner_setup=list(setup),
        )
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(manager.run)
                with anyio.fail_after(20):
                    await body(manager)
                with anyio.fail_after(20):
                    await manager.shutdown("test")
                tg.cancel_scope.cancel()
        finally:
            reaper.uninstall()
            console.close()
            os.close(devnull)

    anyio.run(main)


async def reach(manager: Manager, name: str, *wanted: State) -> UnitRunner:
    runner = manager.runner(name)
    ok = await manager.wait_for(lambda: runner.state in wanted and runner.idle in (True, False), 10)
    assert ok, f"{name} is {runner.state} ({runner.sm.cause}), wanted {wanted}"
    return runner


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


SLEEP = ("sleep", "60")
FAST = RestartPolicy(delay=0.05, max_delay=0.1, limit=3, window=60.0)


# ---- item 11a: a crashed unit task --------------------------------------------------------


def test_a_crash_makes_the_unit_failed_and_a_later_restart_works(tmp_path: Path) -> None:
    broken = {"yes": True}

    def break_bad(runner: UnitRunner) -> None:
        if runner.unit.name == "bad":

            def explode(*_: object) -> None:
                if broken["yes"]:
                    raise RuntimeError("bug in a hook")

            runner.prestart_hook = explode

    async def body(manager: Manager) -> None:
        good = await reach(manager, "good", State.READY)
        bad = await reach(manager, "bad", State.FAILED)
        assert bad.sm.cause == "internal error: RuntimeError: bug in a hook"
        assert bad.child is None
        assert good.state is State.READY
        broken["yes"] = False
        bad.restart("restart requested (test)")
        await reach(manager, "bad", State.READY)

    units = [Unit(name="good", command=SLEEP), Unit(name="bad", command=SLEEP)]
    run_manager(tmp_path, units, body, [break_bad])


def test_a_crash_while_running_kills_the_units_group(tmp_path: Path) -> None:
    pids: list[int] = []

    def break_readiness(runner: UnitRunner) -> None:
        async def explode(r: UnitRunner, unit: Unit, child: Any) -> None:
            pids.append(child.pid)
            r.mark_ready("ready (test)")
            await anyio.sleep(0.2)
            raise KeyError("probe bug")

        runner.readiness_hook = explode

    async def body(manager: Manager) -> None:
        bad = await reach(manager, "bad", State.FAILED)
        assert bad.sm.cause == "internal error: KeyError: 'probe bug'"
        assert pids and not alive(pids[0])

    unit = Unit(name="bad", command=("sh", "-c", "sleep 60 & sleep 60"), liveness=None)
    # A readiness probe makes the runner call readiness_hook.
    from vastinit.model import Probe, ProbeKind

    unit = dataclasses.replace(unit, readiness=Probe(ProbeKind.LOG, "x"))
    run_manager(tmp_path, [unit], body, [break_readiness])


def test_every_state_may_move_to_failed() -> None:
    for old, moves in states_module.TRANSITIONS.items():
        assert State.FAILED in moves, old


# ---- item 2: spawn errors become visible states ----------------------------------------


@pytest.mark.parametrize(
    "unit",
    [
        Unit(name="nul", command=SLEEP, environment={"X": "a\0b"}),
        Unit(name="nul", command=("sleep", "6\x000")),
    ],
    ids=["environment", "command"],
)
def test_a_nul_byte_fails_the_unit_and_a_restart_after_the_fix_works(
    tmp_path: Path, unit: Unit
) -> None:
    async def body(manager: Manager) -> None:
        runner = await reach(manager, "nul", State.FAILED)
        assert runner.sm.cause.startswith("cannot start: "), runner.sm.cause
        assert "nul" in runner.sm.cause.lower(), runner.sm.cause  # caught by config or by execve
        await manager.replace_unit(Unit(name="nul", command=SLEEP), "fixed (test)")
        runner.restart("restart requested (test)")
        await reach(manager, "nul", State.READY)

    run_manager(tmp_path, [unit], body)


def test_emfile_at_spawn_takes_the_restart_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pipe2 = os.pipe2
    failures = {"left": 2}

    def pipe2(flags: int) -> tuple[int, int]:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_pipe2(flags)

    monkeypatch.setattr(os, "pipe2", pipe2)
    seen: list[tuple[State, str]] = []

    async def body(manager: Manager) -> None:
        manager.transition_listeners.append(lambda t: seen.append((t.new, t.cause)))
        runner = await reach(manager, "api", State.READY)
        backoffs = [c for s, c in seen if s is State.BACKOFF]
        assert len(backoffs) == 2, seen
        assert "Too many open files" in backoffs[0] and "restarting in" in backoffs[0]
        assert runner.restarts == 2

    run_manager(tmp_path, [Unit(name="api", command=SLEEP, restart=FAST)], body)


def test_a_lasting_resource_shortage_ends_in_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def pipe2(flags: int) -> tuple[int, int]:
        raise OSError(errno.ENFILE, os.strerror(errno.ENFILE))

    async def body(manager: Manager) -> None:
        monkeypatch.setattr(os, "pipe2", pipe2)
        manager.runner("api").start("start (test)")
        runner = await reach(manager, "api", State.FAILED)
        monkeypatch.undo()
        assert "restart limit reached" in runner.sm.cause, runner.sm.cause
        assert runner.restarts == FAST.limit

    unit = Unit(name="api", command=SLEEP, restart=FAST, enabled=False)
    run_manager(tmp_path, [unit], body)


@pytest.mark.parametrize("error", [ValueError("value too long"), VastinitError("value too long")])
def test_an_expansion_error_at_start_fails_the_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    import vastinit.supervisor.unit as unit_module

    def start_environment(*_: object, **__: object) -> dict[str, str]:
        raise error

    monkeypatch.setattr(unit_module, "start_environment", start_environment)

    async def body(manager: Manager) -> None:
        runner = await reach(manager, "api", State.FAILED)
        assert runner.sm.cause == "cannot start: value too long"

    run_manager(tmp_path, [Unit(name="api", command=SLEEP)], body)


def test_an_expansion_error_in_the_command_fails_the_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vastinit.supervisor.unit as unit_module

    def resolve_unit(*_: object) -> Unit:
        raise ValueError("expanded value too long")

    monkeypatch.setattr(unit_module, "resolve_unit", resolve_unit)

    async def body(manager: Manager) -> None:
        runner = await reach(manager, "api", State.FAILED)
        assert runner.sm.cause == "cannot start: expanded value too long"

    run_manager(tmp_path, [Unit(name="api", command=SLEEP)], body)


# ---- item 11d: missing_program ----------------------------------------------------------


def test_a_missing_program_fails_by_default_and_is_skipped_on_request(tmp_path: Path) -> None:
    from vastinit.model import MissingProgram

    prog = ("surely-not-installed-vastinit-tool",)

    async def body(manager: Manager) -> None:
        failed = await reach(manager, "typo", State.FAILED)
        assert failed.sm.cause == "program not found: surely-not-installed-vastinit-tool"
        skipped = await reach(manager, "optional", State.SKIPPED)
        assert skipped.sm.cause == "program not found: surely-not-installed-vastinit-tool"

    units = [
        Unit(name="typo", command=prog),
        Unit(name="optional", command=prog, missing_program=MissingProgram.SKIP),
    ]
    run_manager(tmp_path, units, body)


# ---- state written only by the unit's own task -----------------------------------------


def test_no_state_change_is_made_by_the_manager_or_a_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Boot and reload only ask; the unit's own task (or a child of it: its probes)
    makes every move, also the "disabled" skip."""
    writers: set[int] = set()
    outsiders: set[int] = set()
    real_set = states_module.StateMachine.set

    def recording_set(self: states_module.StateMachine, new: State, cause: str) -> None:
        writers.add(id(asyncio.current_task()))
        real_set(self, new, cause)

    monkeypatch.setattr(states_module.StateMachine, "set", recording_set)

    def note_manager_task(_: UnitRunner) -> None:
        outsiders.add(id(asyncio.current_task()))  # runner_setup runs in Manager.run

    async def body(manager: Manager) -> None:
        outsiders.add(id(asyncio.current_task()))  # a client's (or reload's) task
        await reach(manager, "off", State.SKIPPED)
        await reach(manager, "on", State.READY)
        # Disable the running one and enable the disabled one, as a reload would.
        await manager.replace_unit(Unit(name="on", command=SLEEP, enabled=False))
        await manager.replace_unit(Unit(name="off", command=SLEEP))
        await reach(manager, "on", State.SKIPPED)
        await reach(manager, "off", State.READY)
        assert manager.runner("on").skip_kind is not None

    units = [Unit(name="off", command=SLEEP, enabled=False), Unit(name="on", command=SLEEP)]
    run_manager(tmp_path, units, body, [note_manager_task])
    assert outsiders and not writers & outsiders


def test_a_condition_path_that_does_not_expand_fails_the_unit_with_the_reason(
    tmp_path: Path,
) -> None:
    from vastinit.model import Condition

    big = "a" * 100 * 1024  # two of them: past the 128 KiB of one expanded value
    unit = Unit(
        name="api",
        command=SLEEP,
        environment={"A": big},
        condition=Condition(path_exists=("${A}${A}",)),
    )

    async def body(manager: Manager) -> None:
        runner = await reach(manager, "api", State.FAILED)
        assert runner.sm.cause.startswith("cannot start: "), runner.sm.cause
        assert "128 KiB" in runner.sm.cause

    run_manager(tmp_path, [unit], body)
