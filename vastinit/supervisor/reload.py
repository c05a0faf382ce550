"""Reload: re-read every unit file and apply the difference to the running supervisor.

All or nothing: if any file is invalid, nothing changes and every problem is reported.
Otherwise removed units are stopped and forgotten, changed ones restarted with their new
spec, added ones started, and unchanged ones are not touched (same process, same pid).

A changed environment (an env file edited, the unit file the same) restarts nothing: the
unit is marked "restart to apply: FOO changed in /workspace/.env" (names and sources, never
values) until its next start takes the new values. Only a unit whose ``restart_on_env``
lists a changed variable is restarted for it, with that as the cause.

The files are read off the event loop (a worker thread), so a huge or slow unit or env
file never stalls the supervisor. A reload that fails for any other reason (a bug) is
refused the same way: logged with its traceback, the old configuration kept.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog

from vastinit.config import load_units
from vastinit.config.crontab import Crontabs
from vastinit.errors import ConfigError, ConfigProblem, VastinitError
from vastinit.model import State, Unit
from vastinit.supervisor.manager import Manager
from vastinit.supervisor.policy import SkipKind
from vastinit.supervisor.unit import EnvFingerprint, fingerprinted_environment

log = structlog.get_logger("vastinit")


# How many variable names one note or cause names before "and N more".
_MAX_NAMED = 8


@dataclass(frozen=True)
class EnvChange:
    """What differs between two environments of a unit, by variable name, each with the
    source of its value (an env file's path...): new values' sources for added and changed
    variables, the last start's for removed ones. Never a value."""

    added: Mapping[str, str] = field(default_factory=dict)
    changed: Mapping[str, str] = field(default_factory=dict)
    removed: Mapping[str, str] = field(default_factory=dict)

    def names(self) -> set[str]:
        return set(self.added) | set(self.changed) | set(self.removed)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def describe(self) -> str:
        """``FOO, BAR changed in /workspace/.env; BAZ removed from /workspace/.env``."""
        groups: dict[tuple[str, str], list[str]] = {}
        for verb, sources in (
            ("changed in", self.changed),
            ("added to", self.added),
            ("removed from", self.removed),
        ):
            for name in sorted(sources):
                groups.setdefault((verb, sources[name]), []).append(name)
        parts, named = [], 0
        left = len(self.names())
        for (verb, origin), names in groups.items():
            room = _MAX_NAMED - named
            if room <= 0:
                break
            shown = names[:room]
            named += len(shown)
            left -= len(shown)
            parts.append(f"{', '.join(shown)} {verb} {origin}")
        text = "; ".join(parts)
        return f"{text}; and {left} more" if left > 0 else text


def env_change(old: EnvFingerprint, new: EnvFingerprint) -> EnvChange:
    """What changed from the environment ``old`` to ``new`` (compared by hashes)."""
    return EnvChange(
        added={n: new.origins[n] for n in new.hashes if n not in old.hashes},
        changed={
            n: new.origins[n]
            for n in new.hashes
            if n in old.hashes and old.hashes[n] != new.hashes[n]
        },
        removed={n: old.origins[n] for n in old.hashes if n not in new.hashes},
    )


def restart_wanted(unit: Unit, change: EnvChange) -> EnvChange | None:
    """The part of ``change`` that restarts ``unit`` by its ``restart_on_env``, if any."""
    listed = set(unit.restart_on_env)
    if not listed or not change:
        return None
    if "*" in listed:
        return change
    hit = EnvChange(
        added={n: o for n, o in change.added.items() if n in listed},
        changed={n: o for n, o in change.changed.items() if n in listed},
        removed={n: o for n, o in change.removed.items() if n in listed},
    )
    return hit or None


@dataclass(frozen=True)
class ReloadPlan:
    """The difference between the running units and the unit files, by name (sorted).

    ``changed`` units have a new spec (unit file); ``env_restart`` ones (name -> cause) the
    same spec but a changed environment that their ``restart_on_env`` lists: both are
    restarted. Every other unit is ``unchanged`` and keeps its process; those whose
    environment changed since their last start get the note in ``restart_to_apply``
    (name -> note; None clears an earlier one)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    units: Mapping[str, Unit] = field(default_factory=dict)
    env_restart: Mapping[str, str] = field(default_factory=dict)
    restart_to_apply: Mapping[str, str | None] = field(default_factory=dict)
    # The start each note was computed against: a unit that started again meanwhile
    # already has the new values, and gets no note.
    seen: Mapping[str, EnvFingerprint] = field(default_factory=dict)

    @property
    def notes(self) -> dict[str, str]:
        """The "restart to apply" notes this reload sets (name -> note)."""
        return {n: note for n, note in self.restart_to_apply.items() if note is not None}


def transient_conflicts(manager: Manager, units: Mapping[str, Unit]) -> list[ConfigProblem]:
    """Problems of freshly loaded unit files against the transient units that exist: a file
    may not take a transient unit's name (the transient one stays; the file is refused until
    it is removed) nor expose a port a transient unit exposes."""
    problems = []
    transient = {n: r.unit for n, r in manager.runners.items() if r.unit.transient}
    ports = {e.port: u.name for u in transient.values() if u.enabled for e in u.expose}
    for name in sorted(units):
        unit = units[name]
        if name in transient:
            problems.append(
                ConfigProblem(
                    unit.source,
                    0,
                    name,
                    f"a transient unit {name} exists (created over the control API); "
                    f"remove it (vastinit ctl remove {name}) before loading a unit file of "
                    f"that name",
                )
            )
            continue
        for expose in unit.expose if unit.enabled else ():
            owner = ports.get(expose.port)
            if owner is not None:
                problems.append(
                    ConfigProblem(
                        unit.source,
                        0,
                        name,
                        f"port {expose.port} is already exposed by the transient unit {owner}",
                    )
                )
    return problems


class ReloadShuttingDown(VastinitError):
    """vastinit began to shut down while the unit files were being read: nothing applied."""


class ReloadFailed(VastinitError):
    """A reload failed for a reason other than invalid unit files (a bug); logged with its
    traceback. The message says whether the old configuration was kept."""


async def env_now(unit: Unit, base_env: Mapping[str, str], last: EnvFingerprint) -> EnvChange | str:
    """What changed in ``unit``'s environment since the start ``last``; or, when it cannot
    be built now, why (its next start will fail with that)."""
    try:
        _, now = await anyio.to_thread.run_sync(
            fingerprinted_environment, unit, base_env, abandon_on_cancel=True
        )
    except (ValueError, VastinitError) as exc:
        return f"the environment cannot be built: {exc}"
    return env_change(last, now)


async def plan_reload(manager: Manager, units: Mapping[str, Unit]) -> ReloadPlan:
    """Compare the freshly loaded ``units`` with the manager's runners."""
    running = manager.runners
    changed, unchanged = [], []
    env_restart: dict[str, str] = {}
    notes: dict[str, str | None] = {}
    seen: dict[str, EnvFingerprint] = {}
    for name in sorted(set(units) & set(running)):
        runner, new = running[name], units[name]
        if runner.unit.transient:
            continue  # refused before planning (transient_conflicts)
        if new != runner.unit:
            changed.append(name)  # restarted with the new spec: cause "unit file changed"
            continue
        last = runner.start_env
        if last is None:
            # Never started (or a cron unit): its next start reads the env files anyway.
            unchanged.append(name)
            continue
        now = await env_now(new, manager.base_env, last)
        if isinstance(now, EnvChange):
            hit = restart_wanted(new, now)
            if hit is not None and runner.wanted:
                env_restart[name] = hit.describe()
                continue
            note = now.describe() if now else None
        else:
            log.warning("reload: the environment of a unit cannot be built", unit=name, error=now)
            note = now
        unchanged.append(name)
        if note is not None or runner.restart_to_apply is not None:
            notes[name] = note
            seen[name] = last
    # Transient units are in no file: a reload never removes them (see transient_conflicts
    # for a unit file that would take one's name).
    transient = {name for name, runner in running.items() if runner.unit.transient}
    return ReloadPlan(
        added=sorted(set(units) - set(running)),
        removed=sorted(set(running) - set(units) - transient),
        changed=changed,
        unchanged=unchanged,
        units=dict(units),
        env_restart=env_restart,
        restart_to_apply=notes,
        seen=seen,
    )


async def apply_reload(manager: Manager, plan: ReloadPlan) -> None:
    """Carry out ``plan``: stop removed units, register added ones, restart changed ones
    (and those whose restart_on_env lists a changed variable), note the rest's changed
    environment, then start the added ones and retry units skipped only for a dependency
    that changed."""
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
        for name, cause in plan.env_restart.items():
            tg.start_soon(manager.replace_unit, plan.units[name], cause)
    for name, note in plan.restart_to_apply.items():
        runner = manager.runners.get(name)
        if runner is not None and runner.start_env is plan.seen.get(name):
            runner.set_restart_to_apply(note)
    for name in plan.added:
        if plan.units[name].autostart:  # supervisord's autostart=false: added, not started
            manager.begin(name, "added by reload")
    touched = set(plan.added) | set(plan.changed) | set(plan.env_restart)
    # Transient units are in no plan list but may depend on a unit a file added or changed.
    transient = [n for n, r in manager.runners.items() if r.unit.transient]
    for name in [*plan.unchanged, *transient]:
        runner = manager.runners[name]
        if (
            runner.state is State.SKIPPED
            and runner.skip_kind is SkipKind.DEPENDENCY
            and touched & set(runner.unit.depends_on)
        ):
            manager.begin(name, "a dependency changed on reload")


def publish_reload(manager: Manager, plan: ReloadPlan) -> None:
    """The ``reload`` event of an applied reload."""
    manager.events.publish(
        "reload",
        added=list(plan.added),
        removed=list(plan.removed),
        changed=list(plan.changed),
        env_restart=dict(plan.env_restart),
        restart_to_apply=plan.notes,
    )


def log_crontab_diagnostics(crontabs: Crontabs | None) -> None:
    """Say what the last crontab scans found wrong (warnings once, errors each time)."""
    if crontabs is None:
        return
    for d in crontabs.take_diagnostics():
        if d.level == "error":
            log.error("crontab line skipped", problem=str(d))
        else:
            log.warning("crontab", problem=str(d))


class Reloader:
    """Reloads of one manager from one search path (and the crontabs), one at a time."""

    def __init__(
        self, manager: Manager, unit_dirs: Sequence[Path], crontabs: Crontabs | None = None
    ) -> None:
        self.manager = manager
        self.unit_dirs = list(unit_dirs)
        self.crontabs = crontabs
        self._lock = anyio.Lock()

    def _load(self, warnings: list[ConfigProblem]) -> dict[str, Unit]:
        try:
            return load_units(self.unit_dirs, self.crontabs, warnings=warnings)
        finally:
            log_crontab_diagnostics(self.crontabs)

    def _crontab_only(self, units: Mapping[str, Unit]) -> dict[str, Unit]:
        """``units`` with every unit that is not a crontab line as it runs now (and none
        that is not running), so that a crontab rescan touches crontab units only."""
        crontabs = self.crontabs
        assert crontabs is not None
        running = {n: r.unit for n, r in self.manager.runners.items() if not r.unit.transient}
        kept = {n: u for n, u in running.items() if not crontabs.owns(u.source)}
        return {**{n: u for n, u in units.items() if crontabs.owns(u.source)}, **kept}

    @property
    def lock(self) -> anyio.Lock:
        """Held by a reload, and by adding or removing a transient unit (one at a time)."""
        return self._lock

    async def reload(self, *, dry_run: bool = False, crontab_only: bool = False) -> ReloadPlan:
        """Re-read the unit files and apply the difference (not with ``dry_run``); raises
        ConfigError with every problem, having changed nothing, or ReloadFailed (any other
        error, logged with its traceback). ``crontab_only``: apply only what changed in
        the crontab units (a rescan); every other unit stays as it runs."""
        async with self._lock:
            # A reload waits for the one before it, so it diffs against the units that one
            # left, never against a half-applied state.
            try:
                warnings: list[ConfigProblem] = []
                units = await anyio.to_thread.run_sync(
                    functools.partial(self._load, warnings), abandon_on_cancel=True
                )
                for warning in warnings:
                    log.warning("reload: unit file warning", problem=str(warning))
                if crontab_only and self.crontabs is not None:
                    units = self._crontab_only(units)
                conflicts = transient_conflicts(self.manager, units)
                if conflicts:
                    raise ConfigError(conflicts)
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
            if self.manager.shutting_down:
                # A SIGTERM came while the files were read: stopping wins, nothing changes.
                log.info("reload not applied: vastinit is shutting down")
                raise ReloadShuttingDown("vastinit is shutting down; reload not applied")
            log.info(
                "reloading unit files",
                added=plan.added,
                removed=plan.removed,
                changed=plan.changed,
                env_restart=sorted(plan.env_restart),
                restart_to_apply=sorted(plan.notes),
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
            publish_reload(self.manager, plan)
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
        except (ReloadFailed, ReloadShuttingDown):
            pass  # logged by reload()
        except Exception:
            log.exception("reload refused; old configuration kept")

    async def watch_crontabs(self, interval: float) -> None:
        """Notice a changed crontab (``crontab -e``, a file in /etc/cron.d) as cron does,
        by the files' and directories' stat data every ``interval`` seconds, and reload
        the crontab units only. Runs until cancelled; never ends vastinit."""
        crontabs = self.crontabs
        if crontabs is None:
            return
        seen = await anyio.to_thread.run_sync(crontabs.fingerprint, abandon_on_cancel=True)
        while True:
            await anyio.sleep(interval)
            now = await anyio.to_thread.run_sync(crontabs.fingerprint, abandon_on_cancel=True)
            if now == seen or self.manager.shutting_down:
                continue
            seen = now
            log.info("crontabs changed; reloading the crontab units")
            try:
                await self.reload(crontab_only=True)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("crontab rescan: invalid unit file", problem=str(problem))
                log.error("crontab rescan not applied; nothing changed")
            except (ReloadFailed, ReloadShuttingDown):
                pass  # logged by reload()
            except Exception:
                log.exception("crontab rescan failed; old configuration kept")


def make_reloader(
    manager: Manager, unit_dirs: Sequence[Path], crontabs: Crontabs | None = None
) -> Reloader:
    """The reloader ``vastinit run`` wires to SIGHUP, to ``ctl reload`` and to the
    crontab rescan."""
    return Reloader(manager, unit_dirs, crontabs)
