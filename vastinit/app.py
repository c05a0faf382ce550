"""Composition root of ``vastinit run``: config -> manager -> control -> pid1."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from vastinit import paths
from vastinit.role import ROLE_ENV, role_name

if TYPE_CHECKING:
    from vastinit.config.crontab import Crontabs
    from vastinit.control.server import ControlSocket
    from vastinit.model import Unit
    from vastinit.proc.members import CgroupTree


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vastinit run",
        description="Run every unit in dependency order, in the foreground (PID 1 or not).",
    )
    p.add_argument(
        "--units",
        action="append",
        metavar="DIR",
        help="unit directory (repeatable; replaces the default search path)",
    )
    p.add_argument("--log-dir", metavar="DIR", help="where unit log files go")
    p.add_argument(
        "--log-group",
        metavar="GROUP",
        help="group that may read the log files (default: $VASTINIT_LOG_GROUP, else ours)",
    )
    p.add_argument("--socket", metavar="PATH", help="control socket path")
    p.add_argument("--no-control", action="store_true", help="do not open the control socket")
    return p


def main_run(argv: list[str]) -> int:
    """``vastinit run``: returns 0, 2 for bad unit files, or the failed essential's code."""
    args = _parser().parse_args(argv)
    from vastinit.config import load_units
    from vastinit.errors import ConfigError

    unit_dirs = [Path(d) for d in args.units] if args.units else paths.default_unit_dirs()
    # Box or workstation, decided once for this run: every later check (conf.d, crontabs,
    # the socket alias, reloads) and every unit reads this answer.
    os.environ[ROLE_ENV] = role_name()
    from vastinit.errors import ConfigProblem

    warnings: list[ConfigProblem] = []
    crontabs = _crontabs()
    try:
        units = load_units(unit_dirs, crontabs, warnings=warnings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(
            f"vastinit: {len(exc.problems)} problem(s) in unit files; nothing started",
            file=sys.stderr,
        )
        return 2
    for warning in warnings:
        print(warning, file=sys.stderr)
    from vastinit.logs.filesink import prepare_log_dir, resolve_group

    log_dir = Path(args.log_dir) if args.log_dir else paths.default_log_dir()
    group_name = args.log_group or os.environ.get("VASTINIT_LOG_GROUP", "")
    try:
        log_group = resolve_group(group_name) if group_name else os.getgid()
    except ValueError as exc:
        print(f"vastinit: bad --log-group/VASTINIT_LOG_GROUP: {exc}", file=sys.stderr)
        return 2
    try:
        prepare_log_dir(log_dir, log_group)  # 0750, that group: only it may read the logs
    except OSError as exc:
        print(f"vastinit: cannot create log dir {log_dir}: {exc.strerror}", file=sys.stderr)
        return 2
    from vastinit.supervisor.pid1 import hold_signals

    hold_signals()  # a SIGTERM from here until the handlers exist waits for them
    listener = None
    if not args.no_control:
        from vastinit.control.server import ControlSocket
        from vastinit.errors import ControlError

        socket = Path(args.socket) if args.socket else paths.default_socket()
        try:
            # Bound before anything starts: a second vastinit on the same socket stops here.
            listener = ControlSocket.bind(socket)
        except ControlError as exc:
            print(f"vastinit: {exc}", file=sys.stderr)
            return 2
    from vastinit.health.notify import remove_notify_dir

    alias = _supervisor_socket_alias(socket) if listener is not None else None
    try:
        code: int = anyio.run(_run, units, unit_dirs, log_dir, listener, log_group, crontabs)
    except Exception:
        # A failure outside the supervisor's own fence (_run stops every unit itself when
        # it can): say what it was, and exit non-zero with everything cleaned up.
        import traceback

        traceback.print_exc()
        code = EXIT_INTERNAL_ERROR
    finally:
        if listener is not None:
            listener.close()
        if alias is not None:
            _remove_alias(alias, socket)
        # os._exit below skips atexit: remove the notify sockets' directory here.
        remove_notify_dir()
    # Everything is stopped and flushed: skip the interpreter's teardown (40-90 ms of module
    # and object finalisation) so `docker stop` returns as soon as the units are gone.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


SUPERVISOR_SOCKET = "/var/run/supervisor.sock"
"""supervisord's default socket: tools that hard-code it find vastinit's (box role only)."""


def _supervisor_socket_alias(socket: Path) -> Path | None:
    """In the box role, a symlink at supervisord's socket path (``$VASTINIT_SUPERVISOR_SOCKET``
    overrides it; empty: none) to vastinit's socket, when that path is free; else None."""
    from vastinit.role import box_role

    path = os.environ.get("VASTINIT_SUPERVISOR_SOCKET", SUPERVISOR_SOCKET)
    if not path or not box_role() or Path(path) == socket:
        return None
    alias = Path(path)
    try:
        os.symlink(socket.resolve(), alias)
    except OSError:
        return None  # taken (a real supervisord), or no such directory: leave it alone
    return alias


def _remove_alias(alias: Path, socket: Path) -> None:
    try:
        if alias.is_symlink() and os.readlink(alias) == str(socket.resolve()):
            alias.unlink()
    except OSError:
        pass


def _crontabs() -> Crontabs | None:
    """The crontabs as units, in the box role only (SPEC 4.3): on a workstation the host's
    own cron runs them already. ``VASTINIT_CRONTABS=off`` turns them off in a box too."""
    from vastinit.config.crontab import CrontabPaths, Crontabs
    from vastinit.role import box_role

    if os.environ.get("VASTINIT_CRONTABS", "").lower() in ("0", "off", "false", "no"):
        return None
    if not box_role():
        return None
    return Crontabs(CrontabPaths.from_environ())


# vastinit itself failed (a bug in the supervisor, not in a unit): EX_SOFTWARE.
EXIT_INTERNAL_ERROR = 70


def gpu_environment() -> dict[str, str]:
    """``GPU_COUNT`` for every unit (0 without a driver)."""
    from vastinit.stack.gpu import gpu_count

    return {"GPU_COUNT": str(gpu_count())}


def base_environment(
    environ: Mapping[str, str], unit_dirs: Sequence[Path], socket: Path | None, bin_dir: str
) -> dict[str, str]:
    """Every unit's starting environment: ``environ``, plus this vastinit's unit path and
    socket (so ``vastinit caddyfile`` and ``vastinit ctl`` run by a unit see this
    supervisor), plus ``bin_dir`` at the end of PATH when it is not there yet."""
    from vastinit.config.environ import SECRET_VARIABLES

    # The edge credentials go only to units that list them in `secrets` (start_environment).
    env = {k: v for k, v in environ.items() if k not in SECRET_VARIABLES}
    env["VASTINIT_UNITS"] = ":".join(str(d) for d in unit_dirs)
    # A host that allows few threads per CPU: cap the pools as the previous image did.
    from vastinit.stack.thread_caps import thread_caps

    env.update(thread_caps(environ))
    # main_run decided it already (PID 1 is only true of vastinit itself); units agree.
    env[ROLE_ENV] = role_name(environ)
    # Where `vastinit caddyfile` points Caddy's readiness gate and admin socket (edge.py).
    edge = paths.default_edge_dir(socket)
    if edge is not None:
        env["VASTINIT_EDGE_DIR"] = str(edge)
    if socket is not None:
        env["VASTINIT_SOCKET"] = str(socket)
    # A venv's vastinit (`make run`) must find its own `vastinit` for commands such as
    # ["vastinit", "provision"]. Appended, not prepended: the venv's python3, pip and
    # jupyter must not shadow the image's own for every unit.
    path = env.get("PATH", os.defpath)
    if bin_dir and bin_dir not in path.split(os.pathsep):
        env["PATH"] = f"{path}{os.pathsep}{bin_dir}" if path else bin_dir
    return env


async def _run(
    units: Mapping[str, Unit],
    unit_dirs: list[Path],
    log_dir: Path,
    listener: ControlSocket | None,
    log_group: int | None = None,
    crontabs: Crontabs | None = None,
) -> int:
    from vastinit.control.server import start_control_server
    from vastinit.logs.console import ConsoleSink
    from vastinit.logs.events import configure_structlog
    from vastinit.logs.mux import LogMux
    from vastinit.proc.gpu_procs import NvmlReader
    from vastinit.proc.members import enable_quick_check
    from vastinit.proc.reaper import Reaper, become_subreaper
    from vastinit.supervisor.commands import SupervisorCommands
    from vastinit.supervisor.edge import Edge
    from vastinit.supervisor.loop_errors import LoopErrorLimiter
    from vastinit.supervisor.manager import Manager
    from vastinit.supervisor.pid1 import SignalQueue, is_pid1, serve_signals
    from vastinit.supervisor.reload import log_crontab_diagnostics, make_reloader

    fmt = "json" if os.environ.get("VASTINIT_LOG_FORMAT", "").lower() == "json" else "text"
    console = ConsoleSink(1, fmt=fmt)
    configure_structlog(console, fmt)
    log = structlog.get_logger("vastinit")
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(LoopErrorLimiter(loop))
    reaper = Reaper()
    reaper.install()
    signals = SignalQueue()
    reaps_orphans = is_pid1() or become_subreaper()
    if not reaps_orphans:
        log.warning("could not become child subreaper; orphans will not be reaped by us")
    mux = LogMux(console, log_dir, file_group=log_group)
    for name in sorted(units):
        console.register(name)  # pad every prefix to the longest name from the first line
    base_env = base_environment(
        os.environ,
        unit_dirs,
        listener.path if listener is not None else None,
        os.path.dirname(sys.executable),
    )
    if "GPU_COUNT" not in base_env:
        # NVML can take seconds (or hang on a sick driver): never on the loop.
        gpu = await anyio.to_thread.run_sync(gpu_environment, abandon_on_cancel=True)
        base_env["GPU_COUNT"] = gpu["GPU_COUNT"]
    cgroups = await _cgroup_mode(log)
    # The GPU attribution (status, gpu events, the GPU-aware stop) on boxes with a GPU.
    # VASTINIT_GPU_ATTRIBUTION=pid|device overrides the PID-namespace test (docs/gpu.md).
    forced = {"pid": True, "device": False}.get(os.environ.get("VASTINIT_GPU_ATTRIBUTION", ""))
    has_gpu = base_env.get("GPU_COUNT", "0") not in ("", "0")
    nvml = NvmlReader(pid_mode=forced) if has_gpu else None
    manager = Manager(
        units,
        reaper=reaper,
        mux=mux,
        base_env=base_env,
        runner_setup=_runner_setup(),
        cgroups=cgroups,
        gpu=nvml,
    )
    if reaps_orphans:
        # Orphans come to vastinit: a finished start with no stray child has no member left.
        enable_quick_check(manager.known_children)
    reloader = make_reloader(manager, unit_dirs, crontabs)
    # Everything loaded so far lives as long as vastinit: move it out of the collector's
    # reach, so no full collection pass over it lands in a shutdown or a restart.
    gc.collect()
    gc.freeze()
    log.info("vastinit starting", pid=os.getpid(), units=len(units), log_dir=str(log_dir))
    log_crontab_diagnostics(crontabs)
    code = 0
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            if base_env.get("VASTINIT_EDGE_DIR"):
                await tg.start(Edge(manager, Path(base_env["VASTINIT_EDGE_DIR"])).run)
            if crontabs is not None:
                from vastinit.config.crontab import rescan_interval

                tg.start_soon(reloader.watch_crontabs, rescan_interval())
            if listener is not None:
                await start_control_server(tg, SupervisorCommands(manager, reloader), listener)
            code = await serve_signals(manager, reloader.on_signal, signals)
            tg.cancel_scope.cancel()
    except Exception:
        # Only a failure of vastinit's own machinery gets here (units, clients, probes and
        # reloads are fenced where they run). No unit may outlive its supervisor: stop
        # every group by its stop rule, SIGKILL what is left, then exit non-zero.
        log.exception("vastinit failed; stopping every unit before exiting")
        with anyio.CancelScope(shield=True):
            await manager.emergency_stop()
        code = EXIT_INTERNAL_ERROR
    finally:
        log.info("vastinit exiting", code=code)
        await console.drain(2.0)
        await mux.aclose()
        if nvml is not None:
            with anyio.move_on_after(2.0):
                await anyio.to_thread.run_sync(nvml.close, abandon_on_cancel=True)
        signals.close()
        reaper.uninstall()
        console.close()
    return code


async def _cgroup_mode(log: Any) -> CgroupTree | None:
    """The cgroup tree of ``VASTINIT_CGROUP`` (a writable cgroup v2 directory), or None:
    processes are then tracked by their environment marker alone (docs/states.md)."""
    from vastinit.proc.members import CgroupTree

    root = os.environ.get("VASTINIT_CGROUP", "")
    if not root:
        log.info("process tracking", mode="marker")
        return None
    try:
        tree = await anyio.to_thread.run_sync(CgroupTree.open, Path(root))
    except OSError as exc:
        log.warning(
            "cgroup mode unavailable; tracking processes by their environment marker",
            cgroup=root,
            reason=str(exc),
        )
        return None
    log.info("process tracking", mode="cgroup", cgroup=root)
    return tree


def _runner_setup() -> list[Callable[..., None]]:
    """Plug-ins for each unit runner: health probes and cron schedules."""
    from vastinit.cron.runner import setup_runner as cron_setup
    from vastinit.health import setup_runner as health_setup

    return [health_setup, cron_setup]
