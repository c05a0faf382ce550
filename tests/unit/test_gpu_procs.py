"""GPU attribution (proc/gpu_procs.py): NVML's processes mapped to units by pid (the host's
PID namespace) or by the device nodes a unit's processes hold open (a container's)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vastinit.proc.gpu_procs import (
    INIT_PID_NS_INODE,
    Gpu,
    GpuProcess,
    GpuView,
    NvmlReader,
    attribute,
    device_holders,
    initial_pid_namespace,
)

GIB = 1 << 30


def view(mode: str, procs: list[tuple[int, int, int | None]], gpus: int = 2) -> GpuView:
    return GpuView(
        mode,
        tuple(Gpu(i, f"GPU-{i}", i, 0, 80 * GIB) for i in range(gpus)),
        tuple(GpuProcess(gpu, pid, used) for gpu, pid, used in procs),
    )


def test_pid_mode_sums_the_units_own_processes() -> None:
    v = view("pid", [(0, 10, 2 * GIB), (1, 11, GIB), (0, 99, 5 * GIB)])
    got = attribute(v, {"sglang": {10, 11, 12}, "jupyter": {20}})
    assert set(got) == {"sglang"}  # a unit on no GPU is left out
    assert got["sglang"].gpus == (0, 1) and got["sglang"].used_bytes == 3 * GIB
    assert got["sglang"].pids == (10, 11)
    assert not got["sglang"].released(v)
    assert got["sglang"].released(view("pid", [(0, 99, 5 * GIB)]))
    assert got["sglang"].held(v) == "pid 10 on GPU 0: 2048 MiB, pid 11 on GPU 1: 1024 MiB"


def test_pid_mode_memory_unknown_when_nvml_does_not_say() -> None:
    got = attribute(view("pid", [(0, 10, None)]), {"a": {10}})
    assert got["a"].used_bytes is None


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Real processes holding fake device nodes open: ``a`` holds nvidia0, ``b`` nvidia1
    (twice: two processes), ``c`` nvidia1."""
    for minor in (0, 1):
        (tmp_path / f"nvidia{minor}").write_bytes(b"")
    hold = (
        "import sys, time; fs = [open(p) for p in sys.argv[1:]]; "
        "print('ok', flush=True); time.sleep(60)"
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name, minor in (("a", 0), ("b", 1), ("b2", 1), ("c", 1)):
        p = subprocess.Popen(
            [sys.executable, "-c", hold, str(tmp_path / f"nvidia{minor}")], stdout=subprocess.PIPE
        )
        assert p.stdout is not None and p.stdout.readline() == b"ok\n"
        procs[name] = p
    yield procs
    for p in procs.values():
        p.kill()
        p.wait()


def test_device_holders_reads_open_device_nodes(tmp_path: Path, holders: dict[str, Any]) -> None:
    pids = {name: p.pid for name, p in holders.items()}
    held = device_holders(pids.values(), prefix=str(tmp_path / "nvidia"))
    assert held == {pids["a"]: {0}, pids["b"]: {1}, pids["b2"]: {1}, pids["c"]: {1}}


def test_device_mode_attributes_memory_only_where_the_unit_is_alone(
    tmp_path: Path, holders: dict[str, Any]
) -> None:
    pids = {name: p.pid for name, p in holders.items()}
    # NVML's pids are the host's: nothing like ours.
    v = view("device", [(0, 5001, 2 * GIB), (1, 5002, GIB), (1, 5003, GIB), (1, 5004, GIB)])
    members = {"sglang": {pids["a"]}, "lab": {pids["b"], pids["b2"]}, "other": {pids["c"]}}
    got = attribute(v, members, device_prefix=str(tmp_path / "nvidia"))
    # sglang is GPU 0's only holder and NVML lists one process there: its memory is known.
    assert got["sglang"].gpus == (0,) and got["sglang"].used_bytes == 2 * GIB
    assert got["sglang"].mode == "device" and got["sglang"].others == ((0, 0),)
    # GPU 1 is shared by two units: neither's memory can be told apart.
    assert got["lab"].gpus == (1,) and got["lab"].used_bytes is None
    assert got["other"].used_bytes is None
    assert got["lab"].others == ((1, 1),)  # a stop of lab leaves 1 process on GPU 1
    assert not got["lab"].released(v)
    assert got["lab"].released(view("device", [(1, 5004, GIB)]))
    assert got["lab"].held(v) == "GPU 1: 3 processes (expected 1)"


def test_device_mode_count_mismatch_means_unknown(tmp_path: Path, holders: dict[str, Any]) -> None:
    # One process of ours holds GPU 0 but NVML lists two there (one not ours): unknown.
    v = view("device", [(0, 5001, 2 * GIB), (0, 5009, GIB)])
    got = attribute(v, {"sglang": {holders["a"].pid}}, device_prefix=str(tmp_path / "nvidia"))
    assert got["sglang"].used_bytes is None


class BrokenNvml:
    def nvmlInit(self) -> None:
        raise RuntimeError("NVML Shared Library Not Found")


def test_no_nvml_is_none_with_the_reason_never_an_exception() -> None:
    reader = NvmlReader(BrokenNvml())
    assert reader.view() is None
    assert reader.error is not None and "Library Not Found" in reader.error
    assert reader.view() is None  # not retried on every scan


def test_reader_builds_the_view_from_nvml() -> None:
    handle = SimpleNamespace()
    nvml = SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: handle,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=3 * GIB, total=80 * GIB),
        nvmlDeviceGetMinorNumber=lambda h: 4,
        nvmlDeviceGetUUID=lambda h: b"GPU-abc",
        nvmlDeviceGetComputeRunningProcesses=lambda h: [
            SimpleNamespace(pid=7, usedGpuMemory=3 * GIB)
        ],
    )
    v = NvmlReader(nvml, pid_mode=True).view()
    assert v == GpuView(
        "pid", (Gpu(0, "GPU-abc", 4, 3 * GIB, 80 * GIB),), (GpuProcess(0, 7, 3 * GIB),)
    )


def test_a_unit_on_a_shared_and_a_sole_gpu_has_unknown_memory(tmp_path: Path) -> None:
    for minor in (0, 1):
        (tmp_path / f"nvidia{minor}").write_bytes(b"")
    hold = (
        "import sys, time; fs = [open(p) for p in sys.argv[1:]]; "
        "print('ok', flush=True); time.sleep(60)"
    )
    both = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path / "nvidia0"), str(tmp_path / "nvidia1")],
        stdout=subprocess.PIPE,
    )
    other = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path / "nvidia0")], stdout=subprocess.PIPE
    )
    try:
        for proc in (both, other):
            assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
        gone = subprocess.Popen(["true"])
        gone.wait()  # a pid that no longer exists is skipped, not the end of the scan
        v = view("device", [(0, 1, GIB), (0, 2, GIB), (1, 3, GIB)])
        members = {"a": {gone.pid, both.pid}, "b": {other.pid}}
        got = attribute(v, members, device_prefix=str(tmp_path / "nvidia"))
        assert got["a"].gpus == (0, 1) and got["a"].used_bytes is None
    finally:
        for proc in (both, other):
            proc.kill()
            proc.wait()


def test_the_initial_pid_namespace_is_recognised_by_its_inode() -> None:
    assert INIT_PID_NS_INODE == 4026531836  # PROC_PID_INIT_INO, kernel ABI
    inode = Path("/proc/self/ns/pid").stat().st_ino
    assert initial_pid_namespace() is (inode == INIT_PID_NS_INODE)


def test_nvml_is_initialised_once_and_shut_down_once() -> None:
    calls: list[str] = []
    nvml = SimpleNamespace(
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: 0,
    )
    reader = NvmlReader(nvml, pid_mode=False)
    first, second = reader.view(), reader.view()
    assert first is not None and first.mode == "device" and second == first
    reader.close()
    reader.close()
    assert calls == ["init", "shutdown"]
