"""Which GPU processes belong to which unit: the one place that maps them (status, the event
stream's ``gpu`` events and the GPU-aware stop read it from here).

NVML lists each GPU's compute processes with their memory, by pid — a pid of the host's
(the initial) PID namespace. Two modes follow from where vastinit runs:

- ``pid``: vastinit is in the initial PID namespace (the host, ``--pid=host``), so NVML's
  pids are vastinit's pids: a unit's GPU memory is the sum over NVML processes that are
  members of the unit. Exact.
- ``device``: in a container with its own PID namespace NVML's pids mean nothing here.
  What does hold there: the processes that have a GPU's device node (``/dev/nvidiaN``, N
  = NVML's minor number) open. A unit's GPUs are the ones its members hold open; its memory
  is known only where it is the only holder of a GPU here and NVML lists exactly as many
  processes on it as the unit holds (then every process on it is the unit's); otherwise it
  is reported as unknown (``None``), never guessed.

Every call here is blocking (NVML may take seconds on a sick driver): call off the loop.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

INIT_PID_NS_INODE = 0xEFFFFFFC
"""The inode number of the initial PID namespace (``PROC_PID_INIT_INO`` in the kernel)."""

_DEVICE_RE = re.compile(r"^/dev/nvidia(\d+)$")


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """One compute process NVML lists: the GPU's index, its pid (host namespace), memory."""

    gpu: int
    pid: int
    used_bytes: int | None


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    uuid: str
    minor: int | None
    used_bytes: int
    total_bytes: int


@dataclass(frozen=True, slots=True)
class GpuView:
    """NVML's view at one moment, and how its pids map to ours."""

    mode: str  # "pid" | "device"
    gpus: tuple[Gpu, ...]
    processes: tuple[GpuProcess, ...]

    def on(self, gpu: int) -> list[GpuProcess]:
        return [p for p in self.processes if p.gpu == gpu]


@dataclass(frozen=True, slots=True)
class UnitGpu:
    """A unit's share of the GPUs: the GPUs its processes use, its memory there (None:
    not attributable in device mode), and NVML's pids of its processes (pid mode)."""

    mode: str
    gpus: tuple[int, ...]
    used_bytes: int | None
    pids: tuple[int, ...] = ()  # pid mode: NVML's pids of the unit's processes
    # device mode: per GPU, how many NVML processes are not the unit's (what a stop leaves)
    others: tuple[tuple[int, int], ...] = ()

    def released(self, view: GpuView) -> bool:
        """Whether ``view`` shows none of this unit's GPU processes any more."""
        if self.mode == "pid":
            return not any(p.pid in self.pids for p in view.processes)
        return all(len(view.on(gpu)) <= left for gpu, left in self.others)

    def held(self, view: GpuView) -> str:
        """What ``view`` still shows of the unit on its GPUs, in words (for the log)."""
        if self.mode == "pid":
            left = [p for p in view.processes if p.pid in self.pids]
            return ", ".join(f"pid {p.pid} on GPU {p.gpu}: {_mib(p.used_bytes)}" for p in left)
        return ", ".join(
            f"GPU {gpu}: {len(view.on(gpu))} processes (expected {left})"
            for gpu, left in self.others
            if len(view.on(gpu)) > left
        )

    def as_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "gpus": list(self.gpus), "used_bytes": self.used_bytes}


def _mib(value: int | None) -> str:
    return "? MiB" if value is None else f"{value / (1 << 20):.0f} MiB"


def initial_pid_namespace() -> bool:
    """True when this process is in the initial PID namespace (NVML's pids are ours)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino == INIT_PID_NS_INODE
    except OSError:
        return False


class NvmlReader:
    """NVML, initialised once (lazily) for vastinit's lifetime."""

    def __init__(self, nvml: Any = None, *, pid_mode: bool | None = None) -> None:
        self._nvml = nvml
        self._ready = False
        self._pid_mode = pid_mode
        self.error: str | None = None  # why NVML is unavailable, once known

    def _init(self) -> Any:
        if self._nvml is None:
            import pynvml  # only a box that asks pays for it

            self._nvml = pynvml
        if not self._ready:
            self._nvml.nvmlInit()
            self._ready = True
        return self._nvml

    def view(self) -> GpuView | None:
        """NVML's compute processes and memory now; None without a usable NVML."""
        if self.error is not None:
            return None
        try:
            nvml = self._init()
            gpus: list[Gpu] = []
            procs: list[GpuProcess] = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                try:
                    minor: int | None = int(nvml.nvmlDeviceGetMinorNumber(handle))
                except Exception:
                    minor = None
                uuid = nvml.nvmlDeviceGetUUID(handle)
                gpus.append(
                    Gpu(
                        index,
                        uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                        minor,
                        int(memory.used),
                        int(memory.total),
                    )
                )
                for info in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    used = getattr(info, "usedGpuMemory", None)
                    procs.append(
                        GpuProcess(index, int(info.pid), None if used is None else int(used))
                    )
        except Exception as exc:  # no driver, no library, a sick GPU: "no NVML", never a crash
            self.error = f"{type(exc).__name__}: {exc}"
            return None
        pid_mode = self._pid_mode if self._pid_mode is not None else initial_pid_namespace()
        return GpuView("pid" if pid_mode else "device", tuple(gpus), tuple(procs))

    def close(self) -> None:
        if self._ready and self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._ready = False


def device_holders(pids: Iterable[int], prefix: str = "/dev/nvidia") -> dict[int, set[int]]:
    """For each of ``pids``, the minor numbers of the ``PREFIX<N>`` device nodes it has open."""
    pattern = _DEVICE_RE if prefix == "/dev/nvidia" else re.compile(rf"^{re.escape(prefix)}(\d+)$")
    held: dict[int, set[int]] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            match = pattern.match(target)
            if match:
                held.setdefault(pid, set()).add(int(match.group(1)))
    return held


def attribute(
    view: GpuView,
    members: Mapping[str, set[int]],
    *,
    device_prefix: str = "/dev/nvidia",
) -> dict[str, UnitGpu]:
    """Each unit's GPU use (units using none are left out), from ``members`` (unit name →
    its live pids)."""
    out: dict[str, UnitGpu] = {}
    if view.mode == "pid":
        for name, pids in members.items():
            mine = [p for p in view.processes if p.pid in pids]
            if mine:
                amounts = [p.used_bytes for p in mine]
                out[name] = UnitGpu(
                    "pid",
                    tuple(sorted({p.gpu for p in mine})),
                    None if None in amounts else sum(a for a in amounts if a is not None),
                    tuple(sorted({p.pid for p in mine})),
                )
        return out
    by_minor = {g.minor: g.index for g in view.gpus if g.minor is not None}
    everyone = set().union(*members.values()) if members else set()
    held = device_holders(everyone, device_prefix)
    holders_on: dict[int, dict[str, int]] = {}  # gpu -> unit -> processes holding it
    for name, pids in members.items():
        for pid in pids:
            for minor in held.get(pid, ()):
                gpu = by_minor.get(minor)
                if gpu is not None:
                    per_unit = holders_on.setdefault(gpu, {})
                    per_unit[name] = per_unit.get(name, 0) + 1
    for name in members:
        gpus = sorted(g for g, units in holders_on.items() if name in units)
        if not gpus:
            continue
        used: int | None = 0
        for gpu in gpus:
            nvml_procs = view.on(gpu)
            sole = holders_on[gpu] == {name: holders_on[gpu][name]}
            if used is None or not sole or len(nvml_procs) != holders_on[gpu][name]:
                used = None
                continue
            amounts = [p.used_bytes for p in nvml_procs]
            used = None if None in amounts else used + sum(a for a in amounts if a is not None)
        others = tuple((g, max(0, len(view.on(g)) - holders_on[g][name])) for g in gpus)
        out[name] = UnitGpu("device", tuple(gpus), used, others=others)
    return out
