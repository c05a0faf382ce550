"""A stand-in for nvidia-ml-py's ``pynvml`` (tests only: CI has no GPU), put first on a test
vastinit's PYTHONPATH. One GPU (index 0, minor 0, 80 GiB); its compute processes are read
from the JSON file named by ``FAKE_NVML_STATE`` at each call: ``[{"pid": N, "used": BYTES}]``
(a missing file: none). ``FAKE_NVML_CALLS``, when set, names a file that gets one line per
``nvmlDeviceGetComputeRunningProcesses`` call (so a test can see vastinit looking)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

TOTAL = 80 << 30


class NVMLError(Exception):
    pass


def _procs() -> list[dict[str, int]]:
    try:
        with open(os.environ["FAKE_NVML_STATE"]) as f:
            data: list[dict[str, int]] = json.load(f)
            return data
    except (KeyError, OSError, ValueError):
        return []


def nvmlInit() -> None:
    pass


def nvmlShutdown() -> None:
    pass


def nvmlDeviceGetCount() -> int:
    return 1


def nvmlDeviceGetHandleByIndex(index: int) -> Any:
    if index != 0:
        raise NVMLError("invalid index")
    return SimpleNamespace(index=0)


def nvmlDeviceGetUUID(handle: Any) -> str:
    return "GPU-00000000-fake-0000-0000-000000000000"


def nvmlDeviceGetMinorNumber(handle: Any) -> int:
    return 0


def nvmlDeviceGetMaxMigDeviceCount(handle: Any) -> int:
    raise NVMLError("Not Supported")


def nvmlDeviceGetMemoryInfo(handle: Any) -> Any:
    used = sum(p["used"] for p in _procs())
    return SimpleNamespace(used=used, total=TOTAL, free=TOTAL - used)


def nvmlDeviceGetComputeRunningProcesses(handle: Any) -> list[Any]:
    calls = os.environ.get("FAKE_NVML_CALLS")
    if calls:
        with open(calls, "a") as f:
            f.write("call\n")
    return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p["used"]) for p in _procs()]
