"""Every process of a unit, wherever it went: membership that survives ``setsid``, double
forks and re-parenting.

Each start of a unit gets a ``Membership``: a token no other start has, put in the
environment of its main process as ``VASTINIT_MEMBER=TOKEN`` and inherited by every
descendant that keeps its environment, and, in cgroup mode, a cgroup (v2) of its own that
the main process is born in and no descendant can leave without privileges. The members of
a start are the processes of its cgroup plus the processes whose environment holds its
token (found in /proc), whatever their session, group or parent.

What each mode catches (docs/states.md has the table): the marker is lost by a process that
clears or replaces its environment before exec (``env -i``, ``sudo`` without ``-E``, some
daemons); the cgroup is left only by a process with the rights to move itself. Both find
the processes of another user only when vastinit may read their /proc entries (root).

The scans read /proc and cgroupfs, which never block for long but are file system calls:
callers run them off the loop (``anyio.to_thread``).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

_log = structlog.get_logger("vastinit")

MARKER_VAR = "VASTINIT_MEMBER"

_RUN = secrets.token_hex(4)  # this run of vastinit: every token it hands out starts with it
_starts = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Member:
    """A process of a unit: its pid, process group and command line (for status)."""

    pid: int
    pgid: int
    command: str


def run_prefix() -> str:
    """The prefix of every token this run of vastinit hands out (for the shutdown sweep)."""
    return f"{_RUN}."


class Membership:
    """The members of one start of a unit (see the module doc)."""

    def __init__(self, unit: str, cgroups: CgroupTree | None = None) -> None:
        n = next(_starts)
        self.token = f"{_RUN}.{n}.{unit}"
        self._tree = cgroups
        self.cgroup = cgroups.new(f"{unit}.{n}") if cgroups is not None else None

    def env(self) -> dict[str, str]:
        """What the main process's environment gets."""
        return {MARKER_VAR: self.token}

    async def live(self, main: int | None = None) -> set[int]:
        """The live members now, off the loop. ``main``: the start's main process while it
        lives.

        When vastinit reaps orphans (``enable_quick_check``), every member descends from
        the main process or from a child of vastinit that no unit accounts for (an orphan
        it adopted): only those process trees are read — a few /proc files for a normal
        unit, none at all once its main process is gone and nothing strayed. Otherwise one
        pass over /proc, shared by concurrent callers (``SCANNER``)."""
        roots = _tree_roots(main)
        if roots is None:
            found = await SCANNER.marked(self.token)
        elif roots:
            found = await anyio.to_thread.run_sync(_marked_in_trees, roots, self.token)
        else:
            found = set()
        if self.cgroup is not None:
            found |= await anyio.to_thread.run_sync(cgroup_pids, self.cgroup)
        found.discard(os.getpid())
        return found

    def pids(self) -> set[int]:
        """The live members now (blocking: call off the loop)."""
        found = set(marked_pids([self.token]).get(self.token, ()))
        if self.cgroup is not None:
            found |= cgroup_pids(self.cgroup)
        found.discard(os.getpid())
        return found

    def kill_all(self) -> None:
        """SIGKILL every member now: ``cgroup.kill`` in cgroup mode (atomic, forks
        included), then each marked process (blocking)."""
        if self.cgroup is not None and self._tree is not None and not self._tree.broken:
            with contextlib.suppress(OSError):
                (self.cgroup / "cgroup.kill").write_text("1")
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 9)

    def release(self) -> None:
        """Remove the start's cgroup once it is empty (a no-op while members live)."""
        if self.cgroup is not None:
            remove_cgroup(self.cgroup)


_known_children: Callable[[], set[int]] | None = None


def enable_quick_check(known_children: Callable[[], set[int]]) -> None:
    """vastinit reaps orphans (PID 1 or child subreaper): ``known_children()`` gives the
    pids of its children that belong to no finished start (units' main processes)."""
    global _known_children
    _known_children = known_children


def _children(pid: int) -> set[int] | None:
    """The children of every thread of ``pid``; None if the kernel does not list them."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found  # the process is gone
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.update(int(child) for child in f.read().split())
        except FileNotFoundError:
            continue  # the thread or the process ended meanwhile
        except OSError:
            return None  # no children file (CONFIG_PROC_CHILDREN off)
    return found


def _tree_roots(main: int | None) -> set[int] | None:
    """Where a start's members can be: ``main`` and vastinit's children that no unit
    accounts for; None when that cannot be known (no quick check, no children file).
    Reads one small procfs file, on the loop."""
    if _known_children is None:
        return None
    # Only the main thread's list: vastinit forks from the loop's thread (the main one),
    # and orphans are re-parented to the thread-group leader while it lives. (Reading every
    # thread's list would cost a read per log-writer thread.)
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            mine = {int(child) for child in f.read().split()}
    except OSError:
        return None
    roots = mine - _known_children()
    if main is not None:
        roots.add(main)
    return roots


def _marked_in_trees(roots: set[int], token: str) -> set[int]:
    """The processes carrying ``token`` in the process trees under ``roots`` (blocking)."""
    found: set[int] = set()
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if _environ_token(f.read()) == token:
                    found.add(pid)
        except OSError:
            pass  # gone, or not ours to read: its children may still be
        todo.extend(_children(pid) or ())
    return found


class _Batch:
    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.driven = False
        self.done = anyio.Event()
        self.found: dict[str, set[int]] = {}


class Scanner:
    """Answers "which pids carry token T" for many concurrent askers with one /proc pass.

    Askers join the batch that has not started yet; its first asker drives it: it waits
    for the pass in progress (if any) to end, then closes the batch (later askers start the
    next one) and reads /proc once for every token in it. So every answer comes from a pass
    that began after the question was asked."""

    def __init__(self) -> None:
        self._batch = _Batch()
        self._lock = anyio.Lock()

    async def marked(self, token: str) -> set[int]:
        batch = self._batch
        batch.tokens.add(token)
        if batch.driven:
            await batch.done.wait()
        else:
            batch.driven = True
            # Shielded: the others wait on this batch, so its driver must finish it.
            with anyio.CancelScope(shield=True):
                async with self._lock:
                    self._batch = _Batch()
                    try:
                        batch.found = await anyio.to_thread.run_sync(marked_pids, batch.tokens)
                    finally:
                        batch.done.set()
        return set(batch.found.get(token, ()))


SCANNER = Scanner()


def _environ_token(data: bytes) -> str | None:
    """The value of ``VASTINIT_MEMBER`` in a NUL-separated environment block, if any."""
    key = MARKER_VAR.encode() + b"="
    if data.startswith(key):
        start = len(key)
    else:
        at = data.find(b"\0" + key)
        if at < 0:
            return None
        start = at + 1 + len(key)
    end = data.find(b"\0", start)
    return data[start : end if end >= 0 else len(data)].decode(errors="replace")


def _proc_pids() -> Iterator[int]:
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                yield int(entry.name)


def marked_pids(tokens: Iterable[str] = (), *, prefix: str | None = None) -> dict[str, set[int]]:
    """The pids whose environment holds ``VASTINIT_MEMBER`` = one of ``tokens`` (or any
    token starting with ``prefix``), by token; one pass over /proc (blocking)."""
    wanted = set(tokens)
    found: dict[str, set[int]] = {}
    me = os.getpid()
    for pid in _proc_pids():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                data = f.read()
        except OSError:
            continue  # gone, a kernel thread, or not ours to read
        token = _environ_token(data)
        if token is None:
            continue
        if token in wanted or (prefix is not None and token.startswith(prefix)):
            found.setdefault(token, set()).add(pid)
    return found


def describe(pid: int) -> Member | None:
    """``pid``'s process group and command line; None if it is gone (blocking)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    if not fields or fields[0] == b"Z":
        return None  # a zombie holds nothing but its pid; its parent (we) reaps it
    command = cmdline.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    # One line in status whatever the arguments hold (``python -c "<code>"``).
    command = "".join(c if c.isprintable() else repr(c)[1:-1] for c in command)
    if not command:
        command = "[" + stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace") + "]"
    return Member(pid, int(fields[2]), command[:200])


def children_of(parent: int) -> set[int]:
    """The live processes whose parent is ``parent`` (adopted orphans, for the shutdown
    sweep); blocking. The kernel's children lists when it has them, else every process."""
    listed = _children(parent)
    found = set()
    for pid in listed if listed is not None else _proc_pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent and fields[0] != b"Z":
            found.add(pid)
    return found


# ---- cgroup mode --------------------------------------------------------------------------


def cgroup_pids(path: Path) -> set[int]:
    """Every process in the cgroup at ``path`` and in the cgroups below it (blocking)."""
    found: set[int] = set()
    for dirpath, _dirs, _files in os.walk(path):
        with contextlib.suppress(OSError):
            found.update(int(line) for line in Path(dirpath, "cgroup.procs").read_text().split())
    return found


def remove_cgroup(path: Path) -> bool:
    """rmdir the cgroup (and its empty children); False while a process is in it."""
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        try:
            os.rmdir(dirpath)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                return False
    return True


class CgroupTree:
    """The cgroup (v2) directory vastinit puts each start in: ``root/UNIT.N``.

    Python cannot spawn into a cgroup (no ``CLONE_INTO_CGROUP``), and moving the child
    after the fork races with its first fork. So ``spawn_in`` moves vastinit itself into the
    start's cgroup for the fork and back right after: the child is born there. No
    controllers are enabled (membership and ``cgroup.kill`` need none), so moving costs two
    small writes and limits nothing.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = _own_cgroup(root)
        self.broken: str | None = None

    @classmethod
    def open(cls, root: Path) -> CgroupTree:
        """Check ``root`` is a writable cgroup2 directory vastinit can move itself within;
        OSError saying why not."""
        if not (root / "cgroup.controllers").exists():  # a file only cgroup v2 has
            raise OSError(f"{root} is not a cgroup v2 directory")
        tree = cls(root)
        probe = tree.new(f"probe.{os.getpid()}")
        try:
            tree.enter(probe)
            tree.leave()
        finally:
            remove_cgroup(probe)
        if tree.broken:
            raise OSError(tree.broken)
        return tree

    def new(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def enter(self, path: Path) -> None:
        """Move vastinit into the cgroup ``path`` (a fork now is born there); ``leave``
        right after the fork."""
        (path / "cgroup.procs").write_text(str(os.getpid()))

    def leave(self) -> None:
        """Move vastinit back to its own cgroup. Should that fail (it never has), vastinit
        stays a member of a unit's cgroup: ``cgroup.kill`` is then never used (it would kill
        vastinit), members are killed one by one."""
        try:
            (self.home / "cgroup.procs").write_text(str(os.getpid()))
        except OSError as exc:
            self.broken = f"could not leave a unit's cgroup: {exc}"
            _log.error("cgroup mode degraded", reason=self.broken)


def _mount_root(path: Path) -> Path:
    while path.parent != path and (path.parent / "cgroup.procs").exists():
        path = path.parent
    return path


def _own_cgroup(root: Path) -> Path:
    """The directory of vastinit's own cgroup in the hierarchy that ``root`` belongs to."""
    mount = _mount_root(root)
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return mount / line[3:].lstrip("/")
    raise OSError("vastinit is in no cgroup v2 hierarchy")
