"""Pieces of the bug barrier in-process: one waitpid owner, the reload fence, the loop's
rate-limited exception handler."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest

from vastinit.logs.console import ConsoleSink
from vastinit.logs.mux import LogMux
from vastinit.model import Unit
from vastinit.proc.reaper import Reaper
from vastinit.proc.spawn import spawn

# ---- item 11b: the reaper is the only owner of waitpid ----------------------------------


def test_a_dropped_child_is_never_waited_for_by_popen(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_waitpid = os.waitpid

    def recording_waitpid(pid: int, options: int) -> tuple[int, int]:
        calls.append(pid)
        return real_waitpid(pid, options)

    async def main() -> None:
        reaper = Reaper()
        reaper.install()
        try:
            child = spawn(["sh", "-c", "sleep 0.2"], reaper=reaper, env=dict(os.environ))
            pid, status = child.pid, child._status
            monkeypatch.setattr(os, "waitpid", recording_waitpid)
            del child  # dropped, as an abandoned unit's Child was, before its exit
            gc.collect()
            # A collected, still-running Popen parks itself in subprocess._active, whose
            # next _cleanup() (any later Popen) calls waitpid(pid) behind the reaper's back.
            assert not any(p.pid == pid for p in subprocess._active or ()), (
                "a dropped Child's Popen was handed to subprocess's own reaping"
            )
            with anyio.fail_after(10):
                raw = await asyncio.shield(status)
            gc.collect()
            await anyio.sleep(0)  # done-callbacks run
            gc.collect()
            assert os.waitstatus_to_exitcode(raw) == 0  # the reaper got the status
            assert pid not in calls, "Popen called waitpid for a pid the reaper owns"
        finally:
            monkeypatch.undo()
            reaper.uninstall()

    anyio.run(main)


def test_popen_learns_the_status_as_soon_as_the_reaper_has_it() -> None:
    async def main() -> None:
        reaper = Reaper()
        reaper.install()
        try:
            child = spawn(["sh", "-c", "exit 3"], reaper=reaper, env=dict(os.environ))
            with anyio.fail_after(10):
                await asyncio.shield(child._status)
            await anyio.sleep(0)
            assert child._popen.returncode == 3  # set without anyone calling wait()
        finally:
            reaper.uninstall()

    anyio.run(main)


# ---- item 1: a reload that raises anything is refused; nothing propagates ---------------


def _reload_with_broken_planner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import vastinit.supervisor.reload as reload_module
    from vastinit.supervisor.commands import SupervisorCommands
    from vastinit.supervisor.manager import Manager

    def broken(*_: object) -> Any:
        raise RuntimeError("bug in the planner")

    monkeypatch.setattr(reload_module, "plan_reload", broken)
    (tmp_path / "units").mkdir()
    outcome: list[Any] = []

    async def main() -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        console = ConsoleSink(devnull)
        reaper = Reaper()
        reaper.install()
        units = {"a": Unit(name="a", command=("sleep", "60"))}
        manager = Manager(units, reaper=reaper, mux=LogMux(console, tmp_path), base_env={})
        reloader = reload_module.make_reloader(manager, [tmp_path / "units"])
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(manager.run)
                await reloader.on_signal()  # SIGHUP: must not raise
                outcome.append("signal survived")
                try:
                    await SupervisorCommands(manager, reloader).reload(dry_run=False)
                except Exception as exc:  # ctl reload: refused with a 500
                    outcome.append(exc)
                assert set(manager.runners) == {"a"}  # the old configuration kept
                await manager.shutdown("test")
                tg.cancel_scope.cancel()
        finally:
            reaper.uninstall()
            console.close()
            os.close(devnull)

    anyio.run(main)
    return outcome


def test_sighup_and_ctl_reload_refuse_a_reload_whose_planner_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vastinit.control.protocol import CommandRefused

    outcome = _reload_with_broken_planner(tmp_path, monkeypatch)
    assert outcome[0] == "signal survived"
    refused = outcome[1]
    assert isinstance(refused, CommandRefused) and refused.status == 500
    assert "old configuration kept" in str(refused) and "bug in the planner" in str(refused)


# ---- the loop's exception handler is rate-limited ---------------------------------------


def test_loop_errors_are_logged_once_then_summarised() -> None:
    from vastinit.supervisor.loop_errors import LoopErrorLimiter

    async def main() -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        monkey = loop.default_exception_handler
        loop.default_exception_handler = reported.append  # type: ignore[method-assign]
        try:
            limiter = LoopErrorLimiter(loop, window=0.2)
            err = OSError(24, "Too many open files")
            for _ in range(3800):
                limiter(
                    loop, {"message": "socket.accept() out of system resource", "exception": err}
                )
            limiter(loop, {"message": "something else", "exception": ValueError("x")})
            assert len(reported) == 2  # the first of each kind, in full
            await anyio.sleep(0.4)
            assert limiter.summaries == 1  # one line for the 3,799 repeats
            for _ in range(10):
                limiter(
                    loop, {"message": "socket.accept() out of system resource", "exception": err}
                )
            assert len(reported) == 2
        finally:
            loop.default_exception_handler = monkey  # type: ignore[method-assign]

    anyio.run(main)


# ---- a reload and a shutdown that meet ----------------------------------------------------


def test_a_reload_whose_files_are_read_while_shutting_down_applies_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM lands while a reload reads the unit files (in a thread): the reload must not
    then remove units the shutdown is already stopping in dependency order."""
    import vastinit.supervisor.reload as reload_module
    from vastinit.control.protocol import CommandRefused
    from vastinit.model import DependencyCondition
    from vastinit.supervisor.commands import SupervisorCommands
    from vastinit.supervisor.manager import Manager

    units_dir = tmp_path / "units"
    units_dir.mkdir()
    (units_dir / "base.toml").write_text('command = ["sleep", "60"]\n')  # "top" is gone
    real_plan = reload_module.plan_reload
    outcome: list[Any] = []

    async def main() -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        console = ConsoleSink(devnull)
        reaper = Reaper()
        reaper.install()
        units = {
            "base": Unit(name="base", command=("sleep", "60")),
            "top": Unit(
                name="top",
                command=("sleep", "60"),
                depends_on={"base": DependencyCondition.STARTED},
            ),
        }
        manager = Manager(units, reaper=reaper, mux=LogMux(console, tmp_path), base_env={})
        reloader = reload_module.make_reloader(manager, [units_dir])
        shutdown_done = anyio.Event()

        async def plan_during_shutdown(m: Manager, loaded: Any) -> Any:
            plan = await real_plan(m, loaded)
            tg.start_soon(shut_down)  # SIGTERM arrives now
            await anyio.sleep(0)  # the shutdown begins before the reload goes on
            return plan

        async def shut_down() -> None:
            await manager.shutdown("SIGTERM received")
            shutdown_done.set()

        monkeypatch.setattr(reload_module, "plan_reload", plan_during_shutdown)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(manager.run)
                with anyio.fail_after(10):
                    await manager.wait_for(
                        lambda: manager.runners["top"].state.value == "ready", 10
                    )
                try:
                    await SupervisorCommands(manager, reloader).reload(dry_run=False)
                except CommandRefused as exc:
                    outcome.append((exc.code, exc.status))
                with anyio.fail_after(20):
                    await shutdown_done.wait()
                outcome.append(sorted(manager.runners))
                tg.cancel_scope.cancel()
        finally:
            reaper.uninstall()
            console.close()
            os.close(devnull)

    anyio.run(main)
    assert outcome == [("shutting_down", 503), ["base", "top"]]
