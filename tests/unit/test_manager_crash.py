"""A bug in one unit's lifecycle is contained: the others run on and shutdown still works."""

from __future__ import annotations

import os
from pathlib import Path

import anyio

from vastinit.logs.console import ConsoleSink
from vastinit.logs.mux import LogMux
from vastinit.model import State, Unit
from vastinit.proc.reaper import Reaper
from vastinit.supervisor.manager import Manager
from vastinit.supervisor.unit import UnitRunner


def test_crashing_unit_task_is_abandoned_and_others_keep_running(tmp_path: Path) -> None:
    units = {
        "good": Unit(name="good", command=("sleep", "60")),
        "bad": Unit(name="bad", command=("sleep", "60")),
    }

    def break_bad(runner: UnitRunner) -> None:
        if runner.unit.name == "bad":

            def explode(*_: object) -> None:
                raise RuntimeError("bug in a hook")

            runner.prestart_hook = explode

    async def main() -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        console = ConsoleSink(devnull)
        reaper = Reaper()
        reaper.install()
        manager = Manager(
            units,
            reaper=reaper,
            mux=LogMux(console, tmp_path),
            base_env=dict(os.environ),
            runner_setup=[break_bad],
        )
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(manager.run)
                good, bad = manager.runner("good"), manager.runner("bad")
                with anyio.fail_after(10):
                    assert await manager.wait_for(
                        lambda: good.state is State.READY and bad.idle, None
                    )
                assert bad.state is State.STARTING and bad.child is None
                with anyio.fail_after(10):
                    await manager.shutdown("test")
                assert good.state is State.STOPPED
                tg.cancel_scope.cancel()
        finally:
            reaper.uninstall()
            console.close()
            os.close(devnull)

    anyio.run(main)
