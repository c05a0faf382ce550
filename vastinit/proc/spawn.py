"""Start a unit's process in its own session, with clean fds, /dev/null stdin and its user.

``subprocess.Popen`` is used for the fork/exec only: its ``wait``/``poll`` are never
called, and ``returncode`` is filled in the moment the reaper has the status (a callback on
the reaper's future), so Popen's finaliser never calls ``waitpid`` behind the reaper's back,
even for a Child that was dropped before anyone awaited it.

Errors: ``SpawnError`` with a one-line reason; ``ProgramNotFound`` when the program is not
installed; ``TransientSpawnError`` when the kernel is out of a resource (fds, processes,
memory) and a later try may well succeed.
"""

from __future__ import annotations

import asyncio
import errno
import grp
import os
import pwd
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vastinit.errors import ProgramNotFound, SpawnError
from vastinit.proc.members import CgroupTree, Membership
from vastinit.proc.reaper import Reaper
from vastinit.proc.status import ExitStatus

# errnos that mean "out of a resource right now" (fds, processes, memory): worth a retry.
TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})


class TransientSpawnError(SpawnError):
    """The kernel is out of a resource (EMFILE, ENFILE, EAGAIN, ENOMEM): a later try may
    succeed, so the unit takes its restart path instead of failing for good."""


def spawn_os_error(what: str, exc: OSError) -> SpawnError:
    """``exc`` (from pipe2, fork or exec) as the SpawnError it stands for."""
    reason = f"{what}: {exc.strerror or exc}"
    if exc.errno in TRANSIENT_ERRNOS:
        return TransientSpawnError(reason)
    return SpawnError(reason)


@dataclass
class Child:
    """A spawned process; its pid is also its process-group and session id."""

    pid: int
    started_at: float  # time.monotonic()
    _popen: subprocess.Popen[bytes]
    _status: asyncio.Future[int]
    exit_status: ExitStatus | None = field(default=None)
    # Every process of this start, wherever it went (None: its process group only).
    members: Membership | None = field(default=None)

    def __post_init__(self) -> None:
        # The reaper is the only owner of waitpid: as soon as it has this pid's status,
        # Popen learns it is reaped, so neither its finaliser (which would call waitpid
        # when a dropped Child's Popen is collected) nor anything else waits again.
        self._status.add_done_callback(self._reaped)

    def _reaped(self, future: asyncio.Future[int]) -> None:
        if future.cancelled():
            return
        if self.exit_status is None:
            self.exit_status = ExitStatus.from_wait_status(future.result())
        self._popen.returncode = self.exit_status.shell_code

    @property
    def pgid(self) -> int:
        return self.pid

    @property
    def exited(self) -> bool:
        return self._status.done()

    def when_exited(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` (on the loop) once the main process has exited and been reaped; at
        once if it has."""
        if self._status.done():
            fn()
        else:
            self._status.add_done_callback(lambda _status: fn())

    async def wait(self) -> ExitStatus:
        """Wait for the main process to exit (reaped by the Reaper) and return how."""
        raw = await asyncio.shield(self._status)
        if self.exit_status is None:
            self._reaped(self._status)
        return self.exit_status or ExitStatus.from_wait_status(raw)


@dataclass(frozen=True)
class Identity:
    """Resolved ``user``/``group`` of a unit: ids plus the login environment it implies."""

    uid: int | None
    gid: int | None
    groups: tuple[int, ...] | None
    env: Mapping[str, str]


def resolve_identity(user: str | None, group: str | None) -> Identity:
    """Look up ``user`` and ``group`` (names or numbers); SpawnError if unknown."""
    uid = gid = None
    groups: tuple[int, ...] | None = None
    env: dict[str, str] = {}
    if user is not None:
        try:
            pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, ValueError, OverflowError):
            raise SpawnError(f"unknown user {user!r}") from None
        uid, gid = pw.pw_uid, pw.pw_gid
        groups = tuple(g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem)
        env = {"USER": pw.pw_name, "LOGNAME": pw.pw_name, "HOME": pw.pw_dir}
        if pw.pw_shell:
            env["SHELL"] = pw.pw_shell
    if group is not None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, ValueError, OverflowError):
            raise SpawnError(f"unknown group {group!r}") from None
    return Identity(uid, gid, groups, env)


def spawn(
    argv: Sequence[str],
    *,
    reaper: Reaper,
    env: Mapping[str, str],
    cwd: str | None = None,
    user: str | None = None,
    group: str | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    identity: Identity | None = None,
    members: Membership | None = None,
    cgroups: CgroupTree | None = None,
) -> Child:
    """Start ``argv`` in a new session (pgid = pid) with stdin on /dev/null.

    ``stdout``/``stderr`` are fds the child gets (the caller closes its copies). Raises
    SpawnError with a one-line reason when the program cannot be started. ``identity``:
    ``resolve_identity(user, group)`` done beforehand (off the loop: it may read NSS).
    ``members``: the start's membership (its marker goes in the environment; with
    ``cgroups``, the child is born in its cgroup).
    """
    if not argv:
        raise SpawnError("empty command")
    ident = identity if identity is not None else resolve_identity(user, group)
    if ident.uid is not None and ident.uid == os.geteuid() and group is None:
        ident = Identity(None, None, None, ident.env)  # already that user: nothing to switch
    full_env = {**ident.env, **env} if ident.env else dict(env)
    if members is not None:
        full_env.update(members.env())
    if cwd is not None and ("\0" in cwd or not os.path.isdir(cwd)):
        raise SpawnError(f"working_dir {cwd} does not exist".replace("\0", "\\0"))
    cgroup = members.cgroup if members is not None and cgroups is not None else None
    if cgroup is not None and cgroups is not None:
        try:
            cgroups.enter(cgroup)
        except OSError as exc:
            raise spawn_os_error(f"cannot enter the cgroup {cgroup}", exc) from None
    try:
        popen = _popen(argv, full_env, cwd, ident, stdout, stderr)
    except FileNotFoundError:
        raise ProgramNotFound(f"program not found: {argv[0]}") from None
    except PermissionError as exc:
        raise SpawnError(f"cannot execute {argv[0]}: {exc.strerror}") from None
    except OSError as exc:
        raise spawn_os_error(f"cannot start {argv[0]}", exc) from None
    except ValueError as exc:
        # A NUL byte in an argument, a variable or the working dir: no retry will help.
        raise SpawnError(f"cannot start {argv[0]!r}: {exc}") from None
    finally:
        if cgroup is not None and cgroups is not None:
            cgroups.leave()
    # Registered before any await: the reaper runs only on the loop, so it can't miss it.
    status = reaper.watch(popen.pid)
    return Child(
        pid=popen.pid, started_at=time.monotonic(), _popen=popen, _status=status, members=members
    )


def _popen(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str | None,
    ident: Identity,
    stdout: int | None,
    stderr: int | None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=env,
        start_new_session=True,  # own session and group: stop reaches the whole tree
        close_fds=True,
        user=ident.uid,
        group=ident.gid,
        extra_groups=list(ident.groups) if ident.groups is not None else None,
    )
