"""Thread caps on a starved host (the previous image's ``12-cpu-thread-limits.sh``).

A container whose cgroup allows few processes (``pids.max``, which counts threads) next to
many visible CPUs kills PyTorch, tokenizers and BLAS with "can't start new thread": each
sizes its pool by the CPU count. As before, only when ``pids.max`` < 16 × the CPUs this
process may run on, the usual thread variables are capped to the CPU quota (``cpu.max``,
else the CPU count), clamped to 2..``VAST_CPU_THREAD_CEILING`` (default 16). A variable
already set is left as it is. vastinit computes this once at start and gives it to every
unit (``base_environment``); it writes nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "RAYON_NUM_THREADS",
    "TOKIO_WORKER_THREADS",
)
DEFAULT_CEILING = 16
PIDS_PER_CPU = 16  # below this many allowed processes per CPU, the caps apply


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def pids_max(cgroup: Path) -> int | None:
    """The cgroup's process limit (v2 ``pids.max``, v1 ``pids/pids.max``); None: no limit."""
    for path in (cgroup / "pids.max", cgroup / "pids" / "pids.max"):
        text = _read(path)
        if text is not None:
            return int(text) if text.isdigit() else None
    return None


def cpu_quota(cgroup: Path) -> float | None:
    """CPUs the cgroup's quota allows (v2 ``cpu.max``, v1 ``cfs_quota_us/cfs_period_us``)."""
    text = _read(cgroup / "cpu.max")
    if text is not None:
        quota, _, period = text.partition(" ")
        if quota.isdigit() and period.isdigit() and int(period) > 0:
            return int(quota) / int(period)
        return None
    quota_text = _read(cgroup / "cpu" / "cpu.cfs_quota_us")
    period_text = _read(cgroup / "cpu" / "cpu.cfs_period_us")
    if quota_text and period_text and quota_text.isdigit() and period_text.isdigit():
        return int(quota_text) / int(period_text) if int(period_text) > 0 else None
    return None


def thread_caps(
    env: Mapping[str, str], *, cgroup: Path = Path("/sys/fs/cgroup"), cpus: int | None = None
) -> dict[str, str]:
    """The thread variables to add to ``env`` (empty when the host is not starved)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    limit = pids_max(cgroup)
    if limit is None or limit >= PIDS_PER_CPU * cpus:
        return {}
    quota = cpu_quota(cgroup)
    allowed = math.ceil(quota) if quota is not None else cpus
    try:
        ceiling = int(env.get("VAST_CPU_THREAD_CEILING", "") or DEFAULT_CEILING)
    except ValueError:
        ceiling = DEFAULT_CEILING
    cap = max(2, min(allowed, cpus, max(2, ceiling)))
    return {name: str(cap) for name in THREAD_VARIABLES if not env.get(name)}
