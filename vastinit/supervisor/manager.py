"""All units together: boot, dependency views, start/stop/restart, ordered shutdown."""

from __future__ import annotations

import difflib
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping

import anyio
import structlog
from anyio.abc import TaskGroup

from vastinit.errors import UnknownUnitError
from vastinit.logs.mux import LogMux
from vastinit.model import State, Unit
from vastinit.proc.gpu_procs import NvmlReader, UnitGpu, attribute
from vastinit.proc.group import kill_group, signal_group, signal_pid
from vastinit.proc.members import (
    CgroupTree,
    Membership,
    cgroup_pids,
    children_of,
    describe,
    marked_pids,
    run_prefix,
)
from vastinit.proc.reaper import Reaper
from vastinit.supervisor.events import EventHub
from vastinit.supervisor.policy import DependencyView, SkipKind
from vastinit.supervisor.states import ALIVE, Transition
from vastinit.supervisor.stopping import stop_child
from vastinit.supervisor.unit import EscapedProcess, UnitRunner, UnitStatus

log = structlog.get_logger("vastinit")

# Entering these from a state a process lives in, a state event says how the run ended.
_EXIT_STATES = frozenset(
    {State.BACKOFF, State.EXITED, State.FAILED, State.STOPPED, State.SCHEDULED}
)

# Plug-ins set on each new runner (health probes, cron); see vastinit.app.
RunnerSetup = Callable[[UnitRunner], None]


SCAN_MAX_AGE_S = 0.5
"""A process scan this recent is reused by status (a scan reads every /proc entry)."""

GPU_WATCH_S = 5.0
"""How often the GPU attribution is renewed while NVML works (it has no change events)."""

GPU_EVENT_BYTES = 64 << 20
"""A unit's GPU memory must move by this much for a new ``gpu`` event."""

SWEEP_GRACE_S = 5.0
"""How long processes that outlived the units get between SIGTERM and SIGKILL at shutdown."""


class Manager:
    """Owns every UnitRunner; the only object the control layer talks to (via commands)."""

    def __init__(
        self,
        units: Mapping[str, Unit],
        *,
        reaper: Reaper,
        mux: LogMux,
        base_env: Mapping[str, str],
        runner_setup: Iterable[RunnerSetup] = (),
        cgroups: CgroupTree | None = None,
        gpu: NvmlReader | None = None,
    ) -> None:
        self.reaper = reaper
        self.cgroups = cgroups  # cgroup mode (VASTINIT_CGROUP), else None: the marker only
        self.gpu = gpu  # NVML (None on a box without GPUs): the GPU attribution's source
        self.mux = mux
        self.base_env = dict(base_env)
        self.units: dict[str, Unit] = dict(units)
        self.runners: dict[str, UnitRunner] = {}
        self._setup = list(runner_setup)
        # One anyio.Event per "generation" of state: notify() sets the current one (waking
        # every waiter at once) and starts the next.
        self._changed = anyio.Event()
        self._tg: TaskGroup | None = None
        self._scopes: dict[str, anyio.CancelScope] = {}
        self.shutting_down = False
        self.exit_code = 0
        self.shutdown_requested = anyio.Event()
        self.transition_listeners: list[Callable[[Transition], None]] = []
        # The event stream (GET /v1/events): state changes, reloads, notes, cron runs.
        self.events = EventHub()
        self._scanned_at = float("-inf")
        self._scan_key = (-1, -1)
        self._transitions = 0

    # ---- RunnerContext ----------------------------------------------------------------

    def dependency_view(self, name: str) -> DependencyView:
        runner = self.runners.get(name)
        if runner is None:
            from vastinit.model import UnitType

            return DependencyView(False, False, UnitType.SERVICE, State.INACTIVE)
        return DependencyView(
            exists=True,
            enabled=runner.unit.enabled,
            type=runner.unit.type,
            state=runner.state,
            skip_kind=runner.skip_kind,
            cause=runner.sm.cause,
        )

    async def changed(self) -> None:
        """Return at the next state change of any unit."""
        await self._changed.wait()

    def notify(self) -> None:
        event, self._changed = self._changed, anyio.Event()
        event.set()

    def on_transition(self, transition: Transition) -> None:
        self._transitions += 1
        for listener in self.transition_listeners:
            listener(transition)
        self._publish_state(transition)
        self.notify()

    def _publish_state(self, transition: Transition) -> None:
        """A ``state`` event: the move, its cause, the pid, how the run ended (entering an
        exit state) and how long it took to become ready (entering ready)."""
        fields: dict[str, object] = {
            "old": transition.old.value,
            "new": transition.new.value,
            "cause": transition.cause,
        }
        runner = self.runners.get(transition.unit)
        if runner is not None:
            child = runner.child
            fields["pid"] = child.pid if child is not None else None
            last = runner.last_exit
            started = runner.started_at
            if (
                transition.new in _EXIT_STATES
                and transition.old in ALIVE
                and last is not None
                and started is not None
                and (runner.last_exit_at or 0.0) >= started
            ):
                fields["exit"] = {"code": last.code, "signal": last.signal, "text": str(last)}
            if transition.new is State.READY and runner.ready_at and started:
                fields["ready_after_s"] = round(runner.ready_at - started, 6)
        self.events.publish("state", transition.unit, **fields)

    def publish_event(self, type: str, unit: str | None, **fields: object) -> None:
        """Publish one event on the stream (cron runs use it); never blocks."""
        self.events.publish(type, unit, **fields)

    def on_restart_to_apply(self, unit: str, note: str | None) -> None:
        """A unit's "restart to apply" note was set (or cleared, None)."""
        self.events.publish("restart_to_apply", unit, note=note)
        self.notify()

    def essential_failed(self, unit: str, code: int) -> None:
        if self.shutting_down:
            return
        log.error("essential unit failed; stopping everything", failed_unit=unit, code=code)
        self.exit_code = code
        self.shutdown_requested.set()

    # ---- running ------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start every runner's task and boot every enabled unit; runs until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for unit in self.units.values():
                self._add_runner(unit)
            self.boot()
            task_status.started()
            if self.gpu is not None:
                tg.start_soon(self._watch_gpus)
            await anyio.sleep_forever()

    async def _watch_gpus(self) -> None:
        """GPU memory has no change notification: while NVML works, re-attribute every
        GPU_WATCH_S seconds, so ``gpu`` events and status follow a unit's GPU use."""
        while self.gpu is not None and self.gpu.error is None:
            await self.scan_processes(max_age=0.0)
            await anyio.sleep(GPU_WATCH_S)

    def boot(self) -> None:
        for runner in self.runners.values():
            self._begin(runner, "boot")

    def _begin(self, runner: UnitRunner, cause: str) -> None:
        """Ask the runner to start its unit, or to mark it skipped when its spec says
        enabled = false (the unit's own task makes either move)."""
        if self.shutting_down:
            return  # a reload that races a shutdown must not start anything
        if runner.unit.enabled:
            runner.start(cause)
        elif not (runner.state is State.SKIPPED and runner.skip_kind is SkipKind.DISABLED):
            runner.disable("unit disabled")

    def _add_runner(self, unit: Unit) -> UnitRunner:
        assert self._tg is not None
        runner = UnitRunner(unit, self)
        for setup in self._setup:
            setup(runner)
        self.runners[unit.name] = runner
        scope = anyio.CancelScope()
        self._scopes[unit.name] = scope

        async def task() -> None:
            with scope:
                while True:
                    try:
                        await runner.main()
                        return
                    except Exception as exc:
                        # runner.main fences each activation itself; this is the last
                        # line: the unit is failed, its group killed, and its task runs
                        # on, so a later start works. PID 1 is never taken down by it.
                        await runner.crashed(exc)

        self._tg.start_soon(task)
        return runner

    async def emergency_stop(self, grace: float = 30.0) -> None:
        """The last resort when vastinit itself is dying of a bug (the unit tasks are gone):
        stop every unit's process group by its stop rule, all at once, then SIGKILL every
        group that is still there after ``grace`` seconds. No unit outlives vastinit."""
        self.shutting_down = True
        children = [(r, r.child) for r in self.runners.values() if r.child is not None]
        with anyio.move_on_after(grace):
            async with anyio.create_task_group() as tg:
                for runner, child in children:
                    tg.start_soon(stop_child, child, runner.unit.stop, self.reaper)
        for _, child in children:
            signal_group(child.pgid, signal.SIGKILL)
        with anyio.move_on_after(5.0):
            for _, child in children:
                await kill_group(child.pgid, self.reaper)
        with anyio.move_on_after(15.0):
            await self.sweep(grace=2.0)

    async def remove_runner(self, name: str, cause: str = "unit removed") -> None:
        """Stop a unit and forget it (reload: its file is gone; a transient unit removed)."""
        if name not in self.runners:
            return  # already gone
        await self.stop_and_wait(name, cause)
        scope = self._scopes.pop(name, None)
        if scope is not None:
            scope.cancel()
        self.runners.pop(name, None)
        self.units.pop(name, None)
        self.notify()

    def add_unit(
        self, unit: Unit, *, start: bool = True, cause: str = "added by reload"
    ) -> UnitRunner:
        """Register a new unit (reload, a transient unit) and start it if enabled."""
        self.units[unit.name] = unit
        runner = self._add_runner(unit)
        if start:
            self._begin(runner, cause)
        self.notify()
        return runner

    def begin(self, name: str, cause: str) -> None:
        """Start ``name`` (or mark it skipped if disabled); used by reload after add_unit."""
        self._begin(self.runner(name), cause)

    async def replace_unit(self, unit: Unit, cause: str = "unit file changed") -> None:
        """Give ``unit.name``'s runner the new spec: stop it, swap the spec, and start it
        again unless it had been stopped by hand (a disabled spec leaves it skipped)."""
        runner = self.runner(unit.name)
        # Whether it should run is the runner's explicit flag (start/restart set it, stop
        # clears it), not inferred from its state: a unit stopped by hand is still
        # `stopping` when a reload lands during its stop, and must stay stopped.
        wanted = runner.wanted
        await self.stop_and_wait(unit.name, cause)
        self.units[unit.name] = unit
        runner.replace_spec(unit)
        if wanted or not unit.enabled:
            self._begin(runner, cause)
        self.notify()

    # ---- commands --------------------------------------------------------------------

    def runner(self, name: str) -> UnitRunner:
        """The runner of ``name``; UnknownUnitError naming close matches otherwise."""
        runner = self.runners.get(name)
        if runner is None:
            close = difflib.get_close_matches(name, list(self.runners), n=3, cutoff=0.6)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise UnknownUnitError(f"no unit {name!r}{hint}")
        return runner

    def status(self, names: Iterable[str] | None = None) -> list[UnitStatus]:
        selected = list(names) if names else sorted(self.runners)
        return [self.runner(n).snapshot() for n in selected]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``predicate()`` holds; False on timeout."""
        with anyio.move_on_after(timeout):
            while not predicate():
                await self.changed()
            return True
        return predicate()

    async def stop_and_wait(self, name: str, cause: str, timeout: float | None = None) -> bool:
        runner = self.runner(name)
        runner.stop(cause)
        return await self.wait_for(lambda: runner.idle, timeout)

    async def shutdown(self, cause: str) -> None:
        """Stop every unit, dependents before their dependencies, independent ones in
        parallel, each by its own stop rule; returns when every group is empty."""
        self.shutting_down = True
        log.info("shutting down", cause=cause)
        for runner in self.runners.values():
            runner.hold()  # no new activation from here on
        dependents: dict[str, set[str]] = {name: set() for name in self.runners}
        for name, runner in self.runners.items():
            for dep in runner.unit.depends_on:
                if dep in dependents:
                    dependents[dep].add(name)

        async def stop_after_dependents(name: str) -> None:
            # A unit forgotten meanwhile (a reload that was already applying) counts as
            # stopped: its removal stopped it.
            await self.wait_for(
                lambda: all(r is None or r.idle for r in map(self.runners.get, dependents[name])),
                timeout=None,
            )
            if name in self.runners:
                await self.stop_and_wait(name, cause)

        async with anyio.create_task_group() as tg:
            for name in list(self.runners):
                tg.start_soon(stop_after_dependents, name)
        await self.sweep()

    def known_children(self) -> set[int]:
        """vastinit's children that belong to no finished start: the units' live main
        processes (members.enable_quick_check)."""
        return {
            r.child.pid for r in self.runners.values() if r.child is not None and not r.child.exited
        }

    async def scan_processes(self, max_age: float = SCAN_MAX_AGE_S) -> None:
        """Find every unit's processes outside its main process group (one pass over /proc,
        off the loop) and keep them on each runner for status; a scan younger than
        ``max_age`` seconds is reused."""
        # Reused only while nothing changed that it could see: no child reaped, no state
        # moved since it began, and it is young (an escapee's own child ending is seen by no
        # one but its parent). GPU memory changes with no such sign: never reused with NVML.
        key = (self.reaper.generation, self._transitions)
        now = time.monotonic()
        fresh = key == self._scan_key and now - self._scanned_at < max_age
        if fresh and self.gpu is None:
            return
        starts: list[tuple[UnitRunner, Membership, int | None, str]] = []
        for runner in self.runners.values():
            child = runner.child
            if child is not None and child.members is not None:
                starts.append((runner, child.members, child.pgid, "escaped"))
            if runner.lingering is not None:
                starts.append((runner, runner.lingering, None, "lingering"))
            starts.extend((runner, m, None, "released") for m in runner.released)

        gpu = self.gpu

        def scan() -> tuple[dict[str, list[EscapedProcess]], dict[str, UnitGpu] | None]:
            marked = marked_pids([m.token for _, m, _, _ in starts])
            found: dict[str, list[EscapedProcess]] = {}
            every: dict[str, set[int]] = {}
            for runner, members, pgid, kind in starts:
                pids = set(marked.get(members.token, ()))
                if members.cgroup is not None:
                    pids |= cgroup_pids(members.cgroup)
                pids.discard(os.getpid())
                every.setdefault(runner.unit.name, set()).update(pids)
                for pid in sorted(pids):
                    member = describe(pid)
                    if member is not None and (pgid is None or member.pgid != pgid):
                        item = EscapedProcess(member.pid, kind, member.command)
                        found.setdefault(runner.unit.name, []).append(item)
            view = gpu.view() if gpu is not None else None
            return found, attribute(view, every) if view is not None else None

        found, gpus = await anyio.to_thread.run_sync(scan, abandon_on_cancel=True)
        for name, runner in self.runners.items():
            runner.escaped = tuple(found.get(name, ()))
            if gpus is not None:
                self._gpu_changed(runner, gpus.get(name))
        self._scanned_at, self._scan_key = now, key

    def _gpu_changed(self, runner: UnitRunner, usage: UnitGpu | None) -> None:
        """Keep ``usage`` on the runner; a ``gpu`` event when the unit's GPUs or its memory
        (by GPU_EVENT_BYTES or more) changed."""
        old, runner.gpu = runner.gpu, usage
        if old == usage:
            return
        if (
            old is not None
            and usage is not None
            and old.gpus == usage.gpus
            and old.used_bytes is not None
            and usage.used_bytes is not None
            and abs(old.used_bytes - usage.used_bytes) < GPU_EVENT_BYTES
        ):
            return
        fields = usage.as_dict() if usage is not None else {"gpus": [], "used_bytes": 0}
        self.events.publish("gpu", runner.unit.name, **fields)

    async def gpu_usage(self, name: str) -> UnitGpu | None:
        """The unit's GPU use now (a fresh scan); None without NVML or when it uses none."""
        if self.gpu is None:
            return None
        await self.scan_processes(max_age=0.0)
        runner = self.runners.get(name)
        return runner.gpu if runner is not None else None

    async def wait_gpu_released(self, before: UnitGpu, timeout: float) -> tuple[bool, str]:
        """Wait (at most ``timeout`` s) until NVML shows none of ``before``'s processes;
        (True, what was freed) or (False, what NVML still shows). Never kills anything."""
        gpu = self.gpu
        if gpu is None:
            return True, "no NVML"
        view = None
        with anyio.move_on_after(timeout):
            while True:
                view = await anyio.to_thread.run_sync(gpu.view, abandon_on_cancel=True)
                if view is None or before.released(view):
                    used = before.used_bytes
                    freed = "unknown" if used is None else f"{used / (1 << 20):.0f} MiB"
                    return True, f"GPU {list(before.gpus)}: {freed} released"
                await anyio.sleep(0.1)
        return False, before.held(view) if view is not None else "NVML did not answer"

    async def sweep(self, grace: float = SWEEP_GRACE_S) -> None:
        """After the units: stop what outlived them — released members (``escaped =
        "keep"``), anything else carrying one of this run's markers or in its cgroups, and
        orphans adopted by vastinit. SIGTERM, then SIGKILL after ``grace`` seconds; rounds
        go on while killing one re-parents its children to us (bounded)."""
        cgroups = self.cgroups

        def find() -> set[int]:
            pids: set[int] = set().union(*marked_pids(prefix=run_prefix()).values())
            pids |= children_of(os.getpid())
            if cgroups is not None:
                pids |= cgroup_pids(cgroups.root)
            pids.discard(os.getpid())
            return pids

        left = await anyio.to_thread.run_sync(find)
        if not left:
            return
        described = await anyio.to_thread.run_sync(lambda: [describe(p) for p in sorted(left)])
        log.warning(
            "stopping processes that outlived the units",
            processes=[f"{m.pid} {m.command}" for m in described if m is not None][:20],
            count=len(left),
        )
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0), (signal.SIGKILL, 5.0)):
            with anyio.move_on_after(wait):
                while left:
                    for pid in left:
                        signal_pid(pid, sig)
                        if sig == signal.SIGTERM:
                            signal_pid(pid, signal.SIGCONT)
                    with anyio.move_on_after(0.1):
                        await self.reaper.wait_any_reaped()
                    left = await anyio.to_thread.run_sync(find)
            if not left:
                return
        log.error("processes survived SIGKILL at shutdown", pids=sorted(left)[:20])
