"""GPU discovery: CUDA_VISIBLE_DEVICES over a device list, and the real NVML path."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vastinit.stack.gpu import nvml_devices, visible_count

FOUR = [
    (0, "GPU-aaaa-1111"),
    (1, "GPU-bbbb-2222"),
    (2, "GPU-cccc-3333"),
    (3, "GPU-cccd-4444"),
]
MIG = [(0, "GPU-m000-0000"), (0, "MIG-1111-aaaa"), (0, "MIG-2222-bbbb")]


@pytest.mark.parametrize(
    ("devices", "cuda_visible", "expected"),
    [
        (FOUR, None, 4),  # unset: every GPU
        (FOUR, "", 0),  # empty: CUDA hides every GPU
        ([], None, 0),
        (FOUR, "0", 1),
        (FOUR, "0,1", 2),
        (FOUR, "2,0", 2),  # order does not matter for the count
        (FOUR, "0,1,2,3", 4),
        (FOUR, " 1 , 2 ", 2),  # spaces around entries
        (FOUR, "0,0", 1),  # one device named twice counts once
        (FOUR, "7", 0),  # index out of range
        (FOUR, "0,7,1", 1),  # CUDA stops at the first invalid entry
        (FOUR, "-1", 0),  # the usual "no GPU" idiom
        (FOUR, "0,-1,1", 1),
        (FOUR, "abc", 0),
        (FOUR, "1,abc,2", 1),
        (FOUR, "0,", 1),  # trailing comma: an empty entry ends the list
        (FOUR, "GPU-aaaa-1111", 1),  # full UUID
        (FOUR, "GPU-bbbb", 1),  # unique UUID prefix
        (FOUR, "GPU-ccc", 0),  # ambiguous prefix (cccc, cccd) is invalid
        (FOUR, "GPU-aaaa-1111,3", 2),  # UUIDs and indices mixed
        (FOUR, "GPU-aaaa-1111,0", 1),  # the same device by UUID and by index
        (FOUR, "GPU-nope,0", 0),
        (MIG, None, 1),  # MIG instances are not extra physical GPUs
        (MIG, "MIG-1111-aaaa", 1),
        (MIG, "MIG-1111", 1),  # unique MIG UUID prefix
        (MIG, "MIG-1111-aaaa,MIG-2222-bbbb", 1),  # CUDA shows one MIG instance per process
        (MIG, "MIG-GPU-m000-0000/1/0", 1),  # the pre-R470 MIG spelling
        (MIG, "MIG-GPU-zzzz/1/0", 0),  # ... whose parent GPU does not exist
        (MIG, "MIG-9999", 0),
    ],
)
def test_visible_count_follows_cuda_visible_devices(
    devices: list[tuple[int, str]], cuda_visible: str | None, expected: int
) -> None:
    assert visible_count(devices, cuda_visible) == expected


def _driver_present() -> bool:
    try:
        nvml_devices()
    except Exception:
        return False
    return True


def _count_in_subprocess(cuda_visible: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if cuda_visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible
    code = "from vastinit.stack.gpu import gpu_count; print('COUNT', gpu_count())"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(_driver_present(), reason="an NVIDIA driver is present on this machine")
def test_gpu_count_without_driver_is_zero_and_says_why() -> None:
    result = _count_in_subprocess(None)
    assert result.returncode == 0, result.stderr
    assert "COUNT 0" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "gpu.none" in line]
    assert len(lines) == 1, result.stdout
    assert "no NVIDIA driver" in lines[0]


@pytest.mark.skipif(not _driver_present(), reason="needs an NVIDIA driver (NVML)")
def test_gpu_count_with_driver_honours_cuda_visible_devices() -> None:
    physical = len([d for d in nvml_devices() if d[1].startswith("GPU-")])
    assert physical >= 1
    assert f"COUNT {physical}" in _count_in_subprocess(None).stdout
    assert "COUNT 1" in _count_in_subprocess("0").stdout
    hidden = _count_in_subprocess("")
    assert "COUNT 0" in hidden.stdout
    assert "gpu.none" in hidden.stdout and "hides every GPU" in hidden.stdout
