"""How many NVIDIA GPUs this process may use: NVML's devices filtered by CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import os
from typing import Any

import structlog

log = structlog.get_logger("vastinit.stack.gpu")

Device = tuple[int, str]
"""One device as NVML reports it: (index, UUID). A MIG instance is (parent index, "MIG-...")."""


def gpu_count() -> int:
    """The number of GPUs CUDA would show this process; 0 (logged as ``gpu.none``) without NVML."""
    try:
        devices = nvml_devices()
    except Exception as exc:  # any NVML failure means "no usable GPU", never a crash
        log.info("gpu.none", reason=_reason(exc))
        return 0
    count = visible_count(devices, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if count == 0:
        log.info("gpu.none", reason=_why_zero(devices))
    return count


def nvml_devices() -> list[Device]:
    """Every GPU (and MIG instance) the driver knows, from NVML; raises on any NVML error."""
    import pynvml  # imported here: only the callers that count GPUs pay for it

    pynvml.nvmlInit()
    try:
        devices: list[Device] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            devices.append((index, _text(pynvml.nvmlDeviceGetUUID(handle))))
            devices.extend((index, uuid) for uuid in _mig_uuids(pynvml, handle))
        return devices
    finally:
        pynvml.nvmlShutdown()


def _mig_uuids(nvml: Any, handle: Any) -> list[str]:
    # MIG lookups fail with NotSupported on GPUs without MIG; that just means "none".
    try:
        count = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
    except Exception:
        return []
    uuids: list[str] = []
    for slot in range(count):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            uuids.append(_text(nvml.nvmlDeviceGetUUID(mig)))
        except Exception:
            continue  # an empty MIG slot
    return uuids


def visible_count(devices: list[Device], cuda_visible: str | None) -> int:
    """How many of ``devices`` CUDA enumerates under ``CUDA_VISIBLE_DEVICES=cuda_visible``.

    Unset: every physical GPU. Empty: none. Otherwise a comma list of indices, ``GPU-`` UUIDs
    (unique prefixes allowed) or MIG ids; like CUDA, the list ends at the first entry that
    names no device, and a device named twice counts once.
    """
    gpus = [(index, uuid) for index, uuid in devices if not uuid.startswith("MIG-")]
    migs = [(index, uuid) for index, uuid in devices if uuid.startswith("MIG-")]
    if cuda_visible is None:
        return len(gpus)
    chosen: set[str] = set()
    mig_chosen = False
    for raw in cuda_visible.split(","):
        entry = raw.strip()
        if entry.startswith("MIG-"):
            uuid = _match_mig(entry, gpus, migs)
            if uuid is None:
                break
            # CUDA enumerates at most one MIG instance per process, however many are listed.
            mig_chosen = True
            continue
        gpu = _match_gpu(entry, gpus)
        if gpu is None:
            break
        chosen.add(gpu)
    return len(chosen) + (1 if mig_chosen else 0)


def _match_gpu(entry: str, gpus: list[Device]) -> str | None:
    if entry.isdigit():
        index = int(entry)
        return gpus[index][1] if index < len(gpus) else None
    if entry.startswith("GPU-"):
        found = [uuid for _, uuid in gpus if uuid.startswith(entry)]
        return found[0] if len(found) == 1 else None  # ambiguous prefix: CUDA rejects it
    return None  # "-1", names, garbage: CUDA stops here


def _match_mig(entry: str, gpus: list[Device], migs: list[Device]) -> str | None:
    # Two spellings: "MIG-<uuid>" (R470+) and the older "MIG-GPU-<uuid>/<gi>/<ci>".
    if entry.startswith("MIG-GPU-"):
        parent = entry[len("MIG-") :].split("/", 1)[0]
        has_parent = any(uuid == parent for _, uuid in gpus)
        return entry if has_parent and entry.count("/") == 2 else None
    found = [uuid for _, uuid in migs if uuid.startswith(entry)]
    return found[0] if len(found) == 1 else None


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes.
    return value.decode() if isinstance(value, bytes) else value


def _reason(exc: Exception) -> str:
    name = type(exc).__name__
    if "LibraryNotFound" in name or "DriverNotLoaded" in name:
        return f"no NVIDIA driver ({exc})"
    return f"NVML error: {exc}"


def _why_zero(devices: list[Device]) -> str:
    if not any(not uuid.startswith("MIG-") for _, uuid in devices):
        return "the driver reports no GPU"
    return f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r} hides every GPU"
