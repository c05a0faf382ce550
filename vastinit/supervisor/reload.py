"""Reload: re-read every unit file and apply the difference to the running supervisor.

All or nothing: if any file is invalid, nothing changes and every problem is reported.
Otherwise removed units are stopped and forgotten, changed ones restarted with their new
spec, added ones started, and unchanged ones are not touched (same process, same pid).

The files are read off the event loop (a worker thread), so a huge or slow unit or env
file never stalls the supervisor. A reload that fails for any other reason (a bug) is
refused the same way: logged with its traceback, the old configuration kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog

from vastinit.config import load_units, start_environment
from vastinit.errors import ConfigError, VastinitError
from vastinit.model import State, Unit
from vastinit.supervisor.manager import Manager
from vastinit.supervisor.policy import SkipKind
from vastinit.supervisor.unit import env_digest

log = structlog.get_logger("vastinit")


@dataclass(frozen=True)
class ReloadPlan:
    """The difference between the running units and the unit files, by name (sorted)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    units: Mapping[str, Unit] = field(default_factory=dict)


class ReloadFailed(VastinitError):
    """A reload failed for a reason other than invalid unit files (a bug); logged with its
    traceback. The message says whether the old configuration was kept."""


async def unit_changed(
    running: Unit, new: Unit, base_env: Mapping[str, str], digest: str | None
) -> bool:
    """Whether ``new`` differs from ``running``: the spec (with its raw table), or what its
    env_files say now compared with the last start's environment (``digest``)."""
    if new != running:
        return True
    if digest is None or not new.env_files:
        return False  # never started: its next start reads the env files anyway
    try:
        env = await anyio.to_thread.run_sync(
            start_environment, new, base_env, abandon_on_cancel=True
        )
    except (ValueError, VastinitError) as exc:
        # Its next start will fail with this: restart it so the failure shows now.
        log.warning(
            "reload: the environment of a unit cannot be built", unit=new.name, error=str(exc)
        )
        return True
    return env_digest(env) != digest


async def plan_reload(manager: Manager, units: Mapping[str, Unit]) -> ReloadPlan:
    """Compare the freshly loaded ``units`` with the manager's runners."""
    running = manager.runners
    changed, unchanged = [], []
    for name in sorted(set(units) & set(running)):
        runner = running[name]
        if await unit_changed(runner.unit, units[name], manager.base_env, runner.start_env_digest):
            changed.append(name)
        else:
            unchanged.append(name)
    return ReloadPlan(
        added=sorted(set(units) - set(running)),
        removed=sorted(set(running) - set(units)),
        changed=changed,
        unchanged=unchanged,
        units=dict(units),
    )


async def apply_reload(manager: Manager, plan: ReloadPlan) -> None:
    """Carry out ``plan``: stop removed units, register added ones, restart changed ones,
    then start the added ones and retry units skipped only for a dependency that changed."""
    async with anyio.create_task_group() as tg:
        for name in plan.removed:
            tg.start_soon(manager.remove_runner, name)
    # Added units are registered before changed ones restart, so a changed unit that now
    # depends on a new one waits for it instead of being skipped for a missing dependency.
    for name in plan.added:
        manager.add_unit(plan.units[name], start=False)
    async with anyio.create_task_group() as tg:
        for name in plan.changed:
            tg.start_soon(manager.replace_unit, plan.units[name])
    for name in plan.added:
        manager.begin(name, "added by reload")
    touched = set(plan.added) | set(plan.changed)
    for name in plan.unchanged:
        runner = manager.runners[name]
        if (
            runner.state is State.SKIPPED
            and runner.skip_kind is SkipKind.DEPENDENCY
            and touched & set(runner.unit.depends_on)
        ):
            manager.begin(name, "a dependency changed on reload")


class Reloader:
    """Reloads of one manager from one search path, one at a time."""

    def __init__(self, manager: Manager, unit_dirs: Sequence[Path]) -> None:
        self.manager = manager
        self.unit_dirs = list(unit_dirs)
        self._lock = anyio.Lock()

    async def reload(self, *, dry_run: bool = False) -> ReloadPlan:
        """Re-read the unit files and apply the difference (not with ``dry_run``); raises
        ConfigError with every problem, having changed nothing, or ReloadFailed (any other
        error, logged with its traceback)."""
        async with self._lock:
            # A reload waits for the one before it, so it diffs against the units that one
            # left, never against a half-applied state.
            try:
                units = await anyio.to_thread.run_sync(
                    load_units, self.unit_dirs, abandon_on_cancel=True
                )
                plan = await plan_reload(self.manager, units)
            except ConfigError:
                raise
            except Exception as exc:
                log.exception("reload refused; old configuration kept")
                raise ReloadFailed(
                    f"reload refused; old configuration kept: internal error: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if dry_run:
                return plan
            log.info(
                "reloading unit files",
                added=plan.added,
                removed=plan.removed,
                changed=plan.changed,
                unchanged=len(plan.unchanged),
            )
            try:
                await apply_reload(self.manager, plan)
            except Exception as exc:
                log.exception("reload failed while being applied")
                raise ReloadFailed(
                    f"reload failed while being applied (some units may have their new "
                    f"configuration): internal error: {type(exc).__name__}: {exc}"
                ) from exc
            return plan

    async def on_signal(self) -> None:
        """SIGHUP: reload, logging every problem instead of raising. Nothing here may end
        vastinit: an unexpected error is logged (once, with its traceback) and the reload
        refused."""
        try:
            await self.reload()
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload: invalid unit file", problem=str(problem))
            log.error("reload refused; nothing changed", problems=len(exc.problems))
        except ReloadFailed:
            pass  # logged with its traceback by reload()
        except Exception:
            log.exception("reload refused; old configuration kept")


def make_reloader(manager: Manager, unit_dirs: Sequence[Path]) -> Reloader:
    """The reloader ``vastinit run`` wires to SIGHUP and to ``ctl reload``."""
    return Reloader(manager, unit_dirs)
