"""One unit's lifecycle: dependencies, conditions, spawn, readiness, exit, restart, stop.

Each unit has exactly one task (``UnitRunner.main``) that owns its state machine. Commands
from the manager (start/stop/restart/disable) only set intent and cancel the current
activation; the unit's own task then carries them out, so two moves never race on one unit.

The bug barrier: an unexpected exception in an activation is logged once with its
traceback, the unit's process group is killed and the unit becomes ``failed`` with cause
``internal error: <Type>: <message>``; the task then waits for the next request, so a later
``ctl start``/``restart`` works. Nothing a unit does can end the supervisor.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio
import structlog

from vastinit.config import expand, resolve_unit, start_environment
from vastinit.config.environ import BASE_ORIGIN
from vastinit.config.values import format_duration
from vastinit.errors import ProgramNotFound, SpawnError, VastinitError
from vastinit.logs.mux import LogMux, UnitLog
from vastinit.logs.pump import Pump
from vastinit.model import Escaped, MissingProgram, State, Unit, UnitType
from vastinit.proc.gpu_procs import UnitGpu
from vastinit.proc.group import group_alive
from vastinit.proc.members import CgroupTree, Membership
from vastinit.proc.reaper import Reaper
from vastinit.proc.spawn import (
    Child,
    Identity,
    TransientSpawnError,
    resolve_identity,
    spawn,
    spawn_os_error,
)
from vastinit.proc.status import ExitStatus
from vastinit.supervisor.policy import (
    AfterExit,
    DependencyView,
    SkipKind,
    Verdict,
    after_exit,
    after_spawn_error,
    backoff_delay,
    dependency_verdict,
    run_was_healthy,
)
from vastinit.supervisor.states import StateMachine, Transition
from vastinit.supervisor.stopping import kill_child, leftovers, stop_child, stop_members

S = State

# How long a finished run waits for its output pipes to drain before moving on.
_OUTPUT_GRACE = 1.0


PrestartHook = Callable[["UnitRunner", Unit, dict[str, str], UnitLog], None]


class RunnerContext(Protocol):
    """What a unit runner needs from the manager, and nothing more."""

    @property
    def reaper(self) -> Reaper: ...
    @property
    def mux(self) -> LogMux: ...
    @property
    def base_env(self) -> Mapping[str, str]: ...
    @property
    def cgroups(self) -> CgroupTree | None: ...

    def dependency_view(self, name: str) -> DependencyView: ...
    async def changed(self) -> None: ...
    def on_transition(self, transition: Transition) -> None: ...
    def on_restart_to_apply(self, unit: str, note: str | None) -> None: ...
    def publish_event(self, type: str, unit: str | None, **fields: object) -> None: ...
    def notify(self) -> None: ...
    def essential_failed(self, unit: str, code: int) -> None: ...
    async def gpu_usage(self, name: str) -> UnitGpu | None: ...
    async def wait_gpu_released(self, before: UnitGpu, timeout: float) -> tuple[bool, str]: ...


@dataclass(frozen=True)
class UnitStatus:
    """A snapshot of one unit for status output (``ctl status``, the portal)."""

    name: str
    state: State
    cause: str
    since: float
    enabled: bool
    pid: int | None
    ready: bool
    started_at: float | None
    ready_at: float | None
    restarts: int
    last_exit: str | None
    last_exit_code: int | None
    last_exit_at: float | None
    next_run: float | None
    probe_error: str | None
    status_text: str | None
    last_run_duration: float | None = None  # seconds the last finished run took
    restart_to_apply: str | None = None  # what changed in its environment since its start
    # Its processes outside its main process group (Manager.scan_processes): ``kind`` is
    # "escaped" (of the running start), "lingering" (of a start whose main process exited,
    # ``escaped = "stop"``) or "released" (left running, ``escaped = "keep"``).
    escaped: tuple[EscapedProcess, ...] = ()
    # Its GPU use (proc/gpu_procs.py): {"mode", "gpus", "used_bytes"}; None: none, or no NVML.
    gpu: dict[str, object] | None = None


@dataclass(frozen=True)
class EscapedProcess:
    """A process of a unit outside its main process group, as status shows it."""

    pid: int
    kind: str
    command: str


# Keys the per-variable hashes: they say whether a value changed, and (with a key that is
# never kept anywhere but here) cannot be checked against guesses of a short secret.
_ENV_HASH_KEY = os.urandom(32)


@dataclass(frozen=True)
class EnvFingerprint:
    """The environment of one start without its values: each variable's keyed hash, and
    where its value came from (an env file's path, the unit's [environment]...). Reload
    compares one with the environment the unit would get now."""

    hashes: Mapping[str, bytes]
    origins: Mapping[str, str]


def value_hash(value: str) -> bytes:
    """A keyed hash of one variable's value (the value itself is not kept)."""
    data = value.encode(errors="surrogateescape")
    return hashlib.blake2b(data, key=_ENV_HASH_KEY, digest_size=16).digest()


def env_fingerprint(env: Mapping[str, str], origins: Mapping[str, str]) -> EnvFingerprint:
    """The fingerprint of ``env``; ``origins`` as ``start_environment`` fills it."""
    return EnvFingerprint(
        hashes={name: value_hash(value) for name, value in env.items()},
        origins={name: origins.get(name, BASE_ORIGIN) for name in env},
    )


def fingerprinted_environment(
    unit: Unit, base: Mapping[str, str]
) -> tuple[dict[str, str], EnvFingerprint]:
    """``start_environment(unit, base)`` and its fingerprint (sync: call it in a thread)."""
    origins: dict[str, str] = {}
    env = start_environment(unit, base, origins=origins)
    return env, env_fingerprint(env, origins)


def prepare_start(
    unit: Unit, base: Mapping[str, str]
) -> tuple[dict[str, str], EnvFingerprint, str | None]:
    """The environment of a start, its fingerprint, and why the unit's ``[condition]`` is
    false now (None: it holds). Reads env files and stats condition paths, which may hang
    on a network mount: call it in a thread."""
    env, fingerprint = fingerprinted_environment(unit, base)
    return env, fingerprint, condition_problem(unit, env)


def environment_and_condition(
    unit: Unit, base: Mapping[str, str]
) -> tuple[dict[str, str], str | None]:
    """``start_environment`` and ``condition_problem`` together (sync: call it in a thread)."""
    env = start_environment(unit, base)
    return env, condition_problem(unit, env)


def condition_problem(unit: Unit, env: Mapping[str, str]) -> str | None:
    """Why the unit's ``[condition]`` is false in ``env`` now, or None when it holds."""
    cond = unit.condition
    for var in cond.env:
        if not env.get(var):
            return f"{var} is not set"
    for path in cond.path_exists:
        real = expand(path, env)
        if not os.path.exists(real):
            return f"{real} does not exist"
    for path in cond.path_missing:
        real = expand(path, env)
        if os.path.exists(real):
            return f"{real} exists"
    return None


def _pipe() -> tuple[int, int]:
    try:
        return os.pipe2(os.O_CLOEXEC)
    except OSError as exc:
        raise spawn_os_error("cannot make an output pipe", exc) from None


def spawn_logged(
    unit: Unit,
    env: Mapping[str, str],
    ulog: UnitLog,
    reaper: Reaper,
    identity: Identity | None = None,
    members: Membership | None = None,
    cgroups: CgroupTree | None = None,
) -> tuple[Child, tuple[Pump, Pump]]:
    """Spawn a resolved unit's command with its stdout and stderr piped into ``ulog``.

    Raises SpawnError (ProgramNotFound when the program is not installed,
    TransientSpawnError when out of fds, processes or memory); no fd is left open then."""
    out_r, out_w = _pipe()
    try:
        err_r, err_w = _pipe()
    except BaseException:
        os.close(out_r)
        os.close(out_w)
        raise
    try:
        child = spawn(
            unit.command,
            reaper=reaper,
            env=env,
            cwd=unit.working_dir,
            user=unit.user,
            group=unit.group,
            stdout=out_w,
            stderr=err_w,
            identity=identity,
            members=members,
            cgroups=cgroups,
        )
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    return child, (ulog.attach(out_r, "stdout"), ulog.attach(err_r, "stderr"))


async def drain_output(pumps: tuple[Pump, ...]) -> None:
    """Wait (briefly) until a finished run's pipes reach EOF.

    Once its group is gone the pipes close at once, so the last (partial) line is logged
    before the exit is. A process that escaped the group (setsid) may still hold them: its
    output keeps flowing, but the unit does not wait for it."""
    with anyio.move_on_after(_OUTPUT_GRACE):
        for pump in pumps:
            await pump.wait_eof()


class UnitRunner:
    """Runs one unit for the life of the supervisor (or until the unit is removed)."""

    def __init__(self, unit: Unit, ctx: RunnerContext) -> None:
        self.unit = unit
        self.ctx = ctx
        self.sm = StateMachine(unit.name, ctx.on_transition)
        self.log = structlog.get_logger("vastinit").bind(unit=unit.name)
        self.child: Child | None = None
        self.restart_times: deque[float] = deque(maxlen=max(unit.restart.limit, 1) + 1)
        self.restarts = 0
        self.consecutive_failures = 0
        self.last_exit: ExitStatus | None = None
        self.last_exit_at: float | None = None
        self.last_run_duration: float | None = None
        self._last_start_mono: float | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.skip_kind: SkipKind | None = None
        self.next_run: float | None = None
        self.probe_error: str | None = None
        self.status_text: str | None = None
        self.active = False  # an activation (or its stop) is in progress
        self.held = False  # shutdown began: no new activation or cron run
        # Set by start/restart (and boot, reload), cleared by stop: whether the unit should
        # be running. A reload restarts a changed unit only if it is wanted, so a unit
        # stopped by hand stays stopped even when the reload lands during its stop.
        self.wanted = False
        self._pending_start: str | None = None  # cause of a requested start
        self._pending_disable: str | None = None  # cause of a requested "disabled" skip
        self._stop_cause = "stop requested"
        # Wakes the unit's task for a new request (one token is enough: it re-checks all).
        self._wake_send, self._wake_recv = anyio.create_memory_object_stream[None](1)
        self._scope: anyio.CancelScope | None = None
        self.run_failure: str | None = None  # why the current run was failed by a probe
        # The fingerprint of the last start's environment (None: not started, or a cron
        # unit, whose every run reads it afresh). When reload finds the environment changed
        # since, the unit is not restarted (unless restart_on_env lists what changed): it
        # carries a note, restart_to_apply, until its next start takes the new values.
        self.start_env: EnvFingerprint | None = None
        self.restart_to_apply: str | None = None
        # Starts whose escaped members were left running (``[stop] escaped = "keep"``).
        self.released: list[Membership] = []
        # The last start's members that outlived its main process (``escaped = "stop"``):
        # stopped by the next start, a stop or the shutdown; shown in status meanwhile.
        self.lingering: Membership | None = None
        self._pending_linger_stop: str | None = None
        self.escaped: tuple[EscapedProcess, ...] = ()  # as the last process scan found them
        self.gpu: UnitGpu | None = None  # its GPU use, as the last scan found it
        # Hooks the health and scheduling layers plug into (see vastinit.app):
        # prestart_hook(runner, unit, env, ulog): just before spawn, may add to env and
        #   watch the unit's output from its first line;
        # readiness_hook(runner, unit, child): runs while the process lives; calls
        #   mark_ready / mark_not_ready / fail_run;
        # cron_hook(runner): runs a cron unit's schedule for the whole activation;
        # run_now_hook(cause): set by it while the schedule is armed (see run_now).
        self.prestart_hook: PrestartHook | None = None
        self.readiness_hook: Callable[[UnitRunner, Unit, Child], Awaitable[None]] | None = None
        self.cron_hook: Callable[[UnitRunner], Awaitable[None]] | None = None
        self.run_now_hook: Callable[[str], None] | None = None

    # ---- commands (called by the manager; they only record intent) -------------------

    @property
    def state(self) -> State:
        return self.sm.state

    def start(self, cause: str) -> None:
        """Begin an activation unless one is already under way; a cron unit whose schedule
        is armed is asked for a run now instead (``run_now``)."""
        if self.held:
            return
        self.wanted = True
        self._pending_disable = None
        if self.active and self._scope is not None and not self._scope.cancel_called:
            self.run_now(cause)
            return
        self._pending_start = cause
        self._wake()

    def stop(self, cause: str) -> None:
        """End the current activation: stop the process group, then state ``stopped``."""
        self.wanted = False
        self._pending_start = None
        self._stop_cause = cause
        if self._scope is not None:
            self._scope.cancel()
        elif self.lingering is not None:
            self._pending_linger_stop = cause
            self._wake()

    def restart(self, cause: str) -> None:
        """Stop (if running) and start again once the old group is gone."""
        self.stop(cause)
        if self.held:
            return
        self.wanted = True
        self._pending_disable = None
        self._pending_start = cause
        self._wake()

    def disable(self, cause: str) -> None:
        """Ask the unit's task to mark the unit skipped as disabled (``enabled = false``)
        once it is idle. It stays wanted: enabled again (reload), it starts."""
        if self.held:
            return
        self.wanted = True
        self._pending_start = None
        self._pending_disable = cause
        self._wake()

    def _wake(self) -> None:
        # WouldBlock: a wake-up is already queued, and the task re-checks every request.
        with contextlib.suppress(anyio.WouldBlock):
            self._wake_send.send_nowait(None)

    def run_now(self, cause: str) -> bool:
        """Ask a cron unit with an armed schedule for a run now (its overlap rule applies);
        False when no schedule is armed to ask."""
        if self.run_now_hook is None:
            return False
        self.run_now_hook(cause)
        return True

    @property
    def stop_cause(self) -> str:
        """Why the current (or last) stop was requested."""
        return self._stop_cause

    def replace_spec(self, unit: Unit) -> None:
        """Take a new spec (reload; the unit is stopped): with a fresh crash-loop budget,
        whose limit may have changed too."""
        self.unit = unit
        self.restart_times = deque(maxlen=max(unit.restart.limit, 1) + 1)
        self.consecutive_failures = 0

    def set_restart_to_apply(self, note: str | None) -> None:
        """Set (or clear, None) the unit's "restart to apply" note: what changed in its
        environment since its last start, by variable name and source, never a value.
        Every change of the note goes through here."""
        if note == self.restart_to_apply:
            return
        self.restart_to_apply = note
        if note is not None:
            self.log.info("environment changed; restart to apply", restart_to_apply=note)
        self.ctx.on_restart_to_apply(self.unit.name, note)  # an event, and a notify

    def hold(self) -> None:
        """Drop any pending start and refuse new ones (shutdown: nothing new begins)."""
        self._pending_start = None
        self._pending_disable = None
        self.held = True

    @property
    def start_pending(self) -> bool:
        """A start was requested and the unit's task has not begun it yet."""
        return self._pending_start is not None

    @property
    def idle(self) -> bool:
        """No activation, no stop in progress, no request pending."""
        return not self.active and self._pending_start is None and self._pending_disable is None

    # ---- the unit's task ------------------------------------------------------------

    async def main(self) -> None:
        """The unit's only task: carry out start (and disable) requests until cancelled.

        The bug barrier: an activation that raises makes the unit ``failed`` (see
        ``crashed``) and the loop goes on waiting for the next request."""
        while True:
            while (
                self._pending_start is None
                and self._pending_disable is None
                and self._pending_linger_stop is None
            ):
                await self._wake_recv.receive()
            if self._pending_linger_stop is not None:
                linger_cause, self._pending_linger_stop = self._pending_linger_stop, None
                self.active = True
                try:
                    with anyio.CancelScope(shield=True):
                        await self._end_lingering(linger_cause)
                finally:
                    self.active = False
                    self.ctx.notify()
                continue
            if self._pending_disable is not None:
                disable_cause, self._pending_disable = self._pending_disable, None
                self._apply_disable(disable_cause)
                self.ctx.notify()
                continue
            cause = self._pending_start
            assert cause is not None
            self._pending_start = None
            self.active = True
            self.ctx.notify()
            try:
                with anyio.CancelScope() as scope:
                    self._scope = scope
                    await self._activate(cause)
                self._scope = None
                if scope.cancel_called:
                    with anyio.CancelScope(shield=True):
                        await self._stop_now(self._stop_cause)
            except Exception as exc:
                await self.crashed(exc)
            finally:
                self._scope = None
                self.active = False
                self.ctx.notify()

    async def crashed(self, exc: BaseException) -> None:
        """The bug barrier's move (in the unit's own task): log ``exc`` once with its
        traceback, kill what the unit left, and make the unit ``failed``."""
        inner = _innermost(exc)
        reason = f"internal error: {type(inner).__name__}: {inner}"
        self.log.error("unit task crashed; the unit is failed", error=reason, exc_info=exc)
        with anyio.CancelScope(shield=True):
            child = self.child
            if child is not None and await leftovers(child, self.unit.stop):
                await kill_child(child, self.unit.stop, self.ctx.reaper)
                self.record_exit(await child.wait())
        self.child = None
        self._scope = None
        self.run_now_hook = None
        self._fail(reason, 1)

    def _apply_disable(self, cause: str) -> None:
        """Carry out a disable request: ``skipped`` as disabled (no process is running)."""
        if self.state is S.SKIPPED and self.skip_kind is SkipKind.DISABLED:
            return
        # The table has no move into SKIPPED from a finished state: pass through
        # stopped -> inactive, as a freshly booted disabled unit would start from.
        if self.state not in (S.STOPPED, S.INACTIVE):
            self.sm.set(S.STOPPED, cause)
        if self.state is S.STOPPED:
            self.sm.set(S.INACTIVE, cause)
        self.skip_kind = SkipKind.DISABLED
        self.sm.set(S.SKIPPED, "disabled (enabled = false)")

    async def _activate(self, cause: str) -> None:
        self.sm.set(S.WAITING, cause)
        self.skip_kind = None
        never = await self._wait_dependencies()
        if never is not None:
            self._skip(SkipKind.DEPENDENCY, never)
            return
        if self.unit.type is UnitType.CRON:
            if self.cron_hook is None:
                raise RuntimeError("cron units need the scheduler (vastinit.cron.runner)")
            await self.cron_hook(self)
            return
        self.consecutive_failures = 0
        while True:
            try:
                # Env files and condition paths are read off the loop: a slow or huge file,
                # or a hung mount, must not stall it.
                env, fingerprint, problem = await anyio.to_thread.run_sync(
                    prepare_start,
                    self.unit,
                    self.ctx.base_env,
                    abandon_on_cancel=True,
                )
            except (ValueError, VastinitError) as exc:
                self.start_env = None
                self.set_restart_to_apply(None)
                self._fail(f"cannot start: {exc}", 127)
                return
            # This start takes the environment as it is now: nothing is left to apply.
            self.start_env = fingerprint
            self.set_restart_to_apply(None)
            if problem is not None:
                self._skip(SkipKind.CONDITION, problem)
                return
            try:
                status = await self.run_once(env, "dependencies met")
            except ProgramNotFound as exc:
                if self.unit.missing_program is MissingProgram.SKIP:
                    # Not installed here (an optional part of the stack): nothing to run.
                    self._skip(SkipKind.CONDITION, str(exc))
                else:
                    self._fail(str(exc), 127)
                return
            except TransientSpawnError as exc:
                # Out of fds, processes or memory for now: the restart path, counted.
                reason = f"cannot start: {exc}"
                spawn_decision = after_spawn_error(
                    self.unit.restart, reason, self.restart_times, time.monotonic()
                )
                if spawn_decision.action is AfterExit.FAILED:
                    self._fail(spawn_decision.reason, 127)
                    return
                await self._backoff(reason, ran_for=0.0)
                continue
            except SpawnError as exc:
                self._fail(f"cannot start: {exc}", 127)
                return
            decision = after_exit(
                self.unit.restart,
                status,
                self.restart_times,
                time.monotonic(),
                failed_run=self.run_failure,
            )
            if decision.action is AfterExit.EXITED:
                self.sm.set(S.EXITED, decision.reason)
                return
            note = self._status_note()
            if decision.action is AfterExit.FAILED:
                self._fail(decision.reason + note, status.shell_code)
                return
            what = f"{self.run_failure} ({status})" if self.run_failure else str(status)
            what += note
            ran_for = time.monotonic() - (self._last_start_mono or time.monotonic())
            await self._backoff(what, ran_for)

    async def _backoff(self, what: str, ran_for: float) -> None:
        if run_was_healthy(self.unit.restart, ran_for):
            self.consecutive_failures = 0
        self.consecutive_failures += 1
        delay = backoff_delay(self.unit.restart, self.consecutive_failures)
        self.restart_times.append(time.monotonic())
        self.restarts += 1
        self.sm.set(S.BACKOFF, f"{what}; restarting in {format_duration(delay)}")
        if delay > 0:
            await anyio.sleep(delay)

    async def run_once(self, env: Mapping[str, str], cause: str) -> ExitStatus:
        """Spawn the unit once and supervise it until its main process exits and its group
        is empty; returns how the main process ended. Raises SpawnError (an expansion
        that fails is one too: nothing was started)."""
        try:
            unit = resolve_unit(self.unit, env)
        except (ValueError, VastinitError) as exc:
            raise SpawnError(str(exc)) from exc
        spawn_env = dict(env)
        await self._end_lingering("a new start")
        self.sm.set(S.STARTING, cause)
        self.run_failure = None
        # getpwnam/getgrall may ask NSS (LDAP, sssd): off the loop.
        identity = await anyio.to_thread.run_sync(
            resolve_identity, unit.user, unit.group, abandon_on_cancel=True
        )
        ulog = self.ctx.mux.unit_log(unit.name, unit.log_file, unit.log.max_size, unit.log.keep)
        if self.prestart_hook is not None:
            try:
                self.prestart_hook(self, unit, spawn_env, ulog)
            except OSError as exc:  # e.g. no fd left for the notify socket
                raise spawn_os_error("cannot prepare the start", exc) from exc
        cgroups = self.ctx.cgroups
        try:
            members = Membership(unit.name, cgroups)
        except OSError as exc:
            raise spawn_os_error("cannot create the unit's cgroup", exc) from exc
        child, pumps = spawn_logged(
            unit, spawn_env, ulog, self.ctx.reaper, identity, members=members, cgroups=cgroups
        )
        self.child = child
        self.started_at, self.ready_at = time.time(), None
        self._last_start_mono = time.monotonic()
        self.probe_error = self.status_text = None
        self.sm.set(S.RUNNING, f"pid {child.pid}")
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._readiness, unit, child)
            status = await child.wait()
            tg.cancel_scope.cancel()
        self.record_exit(status)
        # `leftovers = "keep"` (cron's way: a job's `nohup x &` outlives it): what is left
        # of the group is handled with the members outside it, by `escaped` (_after_run).
        if self.unit.stop.leftovers is Escaped.STOP and group_alive(child.pgid):
            if self.sm.state is not S.STOPPING:
                self.sm.set(
                    S.STOPPING, f"main process {status}; stopping what is left of its group"
                )
            how = await stop_child(child, self.unit.stop, self.ctx.reaper, escaped=False)
            self.log.info("leftover processes stopped", by=how)
        await self._after_run(child, stopped=False)
        await self._wait_gpu_released(self.gpu)
        await drain_output(pumps)
        self.child = None
        return status

    async def _wait_gpu_released(self, on_gpu: UnitGpu | None) -> None:
        """After a run is over: wait (at most the stop timeout) until NVML no longer shows
        the unit's GPU processes, so a restart never puts two generations on a GPU; say
        what is still held if it does not. Never kills: what is left is not attributable."""
        if on_gpu is None:
            return
        released, text = await self.ctx.wait_gpu_released(on_gpu, max(self.unit.stop.timeout, 1.0))
        if released:
            self.log.info("GPU memory released", gpu=text)
        else:
            self.log.warning("GPU memory still held after the stop", held=text)

    async def _after_run(self, child: Child, *, stopped: bool) -> None:
        """A start's main process and group are gone; its members outside the group may
        not be. ``escaped = "keep"``: they are released (kept in ``released``, listed in
        status, stopped at vastinit's shutdown). ``"stop"``: a stop has ended them already
        (``stopped``); after the main process exited on its own they linger, shown in
        status, until the next start, a stop or the shutdown ends them."""
        members = child.members
        if members is None:
            return
        keep = self.unit.stop.escaped is Escaped.KEEP
        # After a stop in "stop" mode nothing of the start is left (the stop ended only
        # once nothing was): no need to look again.
        alive = await members.live() if keep or not stopped else set()
        if not alive:
            if members.cgroup is not None:
                await anyio.to_thread.run_sync(members.release)
        elif keep:
            earlier = [m for m in self.released if m is not members]
            # Earlier releases whose processes have all ended need no tracking any more.
            live = [m for m in earlier if await m.live()]
            self.released = [*live, members]
            self.log.info("escaped processes released", pids=sorted(alive))
        elif not stopped:
            self.lingering = members
            self.log.info(
                "main process exited; escaped processes still running", pids=sorted(alive)
            )

    async def _end_lingering(self, cause: str) -> None:
        """Stop the members the last start left running (``escaped = "stop"``)."""
        members, self.lingering = self.lingering, None
        if members is None or not await members.live():
            return
        how = await stop_members(members, self.unit.stop, self.ctx.reaper)
        self.log.info("escaped processes of the last run stopped", by=how, cause=cause)
        await anyio.to_thread.run_sync(members.release)

    async def _readiness(self, unit: Unit, child: Child) -> None:
        if unit.type is not UnitType.SERVICE:
            return  # a oneshot or cron run is done when it exits; it is never "ready"
        if unit.readiness is None:
            self.mark_ready("started; no readiness probe")
            if unit.liveness is None:
                return
        if self.readiness_hook is None:
            raise RuntimeError("readiness and liveness probes need vastinit.health")
        await self.readiness_hook(self, unit, child)

    def mark_ready(self, cause: str) -> None:
        """RUNNING -> READY (called by readiness probes); the first time, logs time to ready."""
        if self.sm.state is S.RUNNING:
            if self.ready_at is None:
                self.ready_at = time.time()
                took = self.ready_at - (self.started_at or self.ready_at)
                cause = f"{cause}; ready {format_duration(took)} after start"
            self.sm.set(S.READY, cause)

    async def fail_run(self, reason: str) -> None:
        """Stop the current process as a *failed* run (start timeout, liveness failures):
        the restart policy then decides, and the run counts toward the crash-loop limit."""
        child = self.child
        if child is None or child.exited:
            return
        self.run_failure = reason
        if self.sm.state in (S.RUNNING, S.READY):
            self.sm.set(S.STOPPING, reason)
        with anyio.CancelScope(shield=True):
            await stop_child(child, self.unit.stop, self.ctx.reaper)

    def mark_not_ready(self, cause: str) -> None:
        """READY -> RUNNING: a readiness probe failed after ready (no restart)."""
        if self.sm.state is S.READY:
            self.sm.set(S.RUNNING, cause)

    def record_exit(self, status: ExitStatus, duration: float | None = None) -> None:
        """Keep how the last run ended, when, and how long it took (default: since the
        latest spawn)."""
        if duration is None and self._last_start_mono is not None:
            duration = time.monotonic() - self._last_start_mono
        self.last_exit, self.last_exit_at = status, time.time()
        self.last_run_duration = duration

    async def _wait_dependencies(self) -> str | None:
        """Wait until every dependency holds; the reason if one never can, else None."""
        while True:
            waiting = False
            for name, want in self.unit.depends_on.items():
                view = self.ctx.dependency_view(name)
                verdict = dependency_verdict(view, want)
                if verdict is Verdict.NEVER:
                    return _never_reason(name, view, want.value)
                waiting = waiting or verdict is Verdict.WAIT
            if not waiting:
                return None
            await self.ctx.changed()

    def _status_note(self) -> str:
        """The last ``STATUS=`` of a run that never became ready, for its exit's cause: a
        program that refuses its settings can say why in ``ctl status``."""
        if self.ready_at is not None or not self.status_text:
            return ""
        return f" (status: {self.status_text[:300]})"

    def _skip(self, kind: SkipKind, reason: str) -> None:
        self.skip_kind = kind
        self.sm.set(S.SKIPPED, reason)

    def _fail(self, reason: str, code: int) -> None:
        self.sm.set(S.FAILED, reason)
        if self.unit.restart.essential:
            self.ctx.essential_failed(self.unit.name, code)

    async def _stop_now(self, cause: str) -> None:
        """Carry out a stop: signal, timeout, SIGKILL, empty group; then ``stopped``."""
        child = self.child
        if child is not None and await leftovers(child, self.unit.stop):
            if self.sm.state is not S.STOPPING:
                self.sm.set(S.STOPPING, cause)
            on_gpu = await self.ctx.gpu_usage(self.unit.name)
            how = await stop_child(child, self.unit.stop, self.ctx.reaper)
            status = await child.wait()
            self.record_exit(status)
            await self._after_run(child, stopped=True)
            await self._wait_gpu_released(on_gpu)
            self.child = None
            self.sm.set(S.STOPPED, f"{cause} ({how}; {status})")
            return
        self.child = None
        await self._end_lingering(cause)
        if self.sm.state in (S.WAITING, S.STARTING, S.BACKOFF, S.SCHEDULED, S.STOPPING):
            self.sm.set(S.STOPPED, cause)
        elif self.sm.state in (S.RUNNING, S.READY):
            self.sm.set(S.STOPPING, cause)  # the process exited as we were told to stop it
            self.sm.set(S.STOPPED, cause)

    def snapshot(self) -> UnitStatus:
        """The unit's status now."""
        last = self.last_exit
        return UnitStatus(
            name=self.unit.name,
            state=self.sm.state,
            cause=self.sm.cause,
            since=self.sm.since,
            enabled=self.unit.enabled,
            pid=self.child.pid if self.child is not None and not self.child.exited else None,
            ready=self.sm.state is S.READY,
            started_at=self.started_at,
            ready_at=self.ready_at,
            restarts=self.restarts,
            last_exit=str(last) if last is not None else None,
            last_exit_code=last.shell_code if last is not None else None,
            last_exit_at=self.last_exit_at,
            next_run=self.next_run,
            probe_error=self.probe_error,
            status_text=self.status_text,
            last_run_duration=self.last_run_duration,
            restart_to_apply=self.restart_to_apply,
            escaped=self.escaped,
            gpu=self.gpu.as_dict() if self.gpu is not None else None,
        )


def _innermost(exc: BaseException) -> BaseException:
    """The one real exception inside (nested) single-exception groups, else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _never_reason(name: str, view: DependencyView, want: str) -> str:
    if not view.exists:
        return f"dependency {name} does not exist"
    if not view.enabled:
        return f"dependency {name} is disabled"
    return f"dependency {name} can never be {want}: it is {view.state} ({view.cause})"
