"""Thread caps on a starved host, as the previous image's 12-cpu-thread-limits.sh: only when
pids.max < 16 x CPUs; the CPU quota, clamped to 2..VAST_CPU_THREAD_CEILING (16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vastinit.stack.thread_caps import THREAD_VARIABLES, thread_caps


def cgroup(tmp_path: Path, pids: str | None, cpu: str | None = None, v1: bool = False) -> Path:
    if pids is not None:
        path = tmp_path / "pids" / "pids.max" if v1 else tmp_path / "pids.max"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pids + "\n")
    if cpu is not None:
        if v1:
            quota, period = cpu.split()
            (tmp_path / "cpu").mkdir(exist_ok=True)
            (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(quota + "\n")
            (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(period + "\n")
        else:
            (tmp_path / "cpu.max").write_text(cpu + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("pids", "cpu", "cpus", "env", "want"),
    [
        (None, None, 64, {}, None),  # no pids limit: nothing
        ("max", "max 100000", 64, {}, None),
        ("4096", None, 64, {}, None),  # 4096 >= 16 x 64: not starved
        ("1000", None, 64, {}, "16"),  # starved, no quota: the CPUs, clamped to 16
        ("1000", "400000 100000", 64, {}, "4"),  # quota 4 CPUs
        ("1000", "150000 100000", 64, {}, "2"),  # 1.5 -> 2 (ceil), and never below 2
        ("1000", "50000 100000", 64, {}, "2"),
        ("1000", "max 100000", 64, {"VAST_CPU_THREAD_CEILING": "8"}, "8"),
        ("1000", "max 100000", 64, {"VAST_CPU_THREAD_CEILING": "junk"}, "16"),
        ("20", None, 2, {}, "2"),  # 20 < 32 on a 2-CPU box
    ],
)
def test_caps(
    tmp_path: Path,
    pids: str | None,
    cpu: str | None,
    cpus: int,
    env: dict[str, str],
    want: str | None,
) -> None:
    caps = thread_caps(env, cgroup=cgroup(tmp_path, pids, cpu), cpus=cpus)
    if want is None:
        assert caps == {}
    else:
        assert caps == dict.fromkeys(THREAD_VARIABLES, want)


def test_cgroup_v1_files_are_read_too(tmp_path: Path) -> None:
    caps = thread_caps({}, cgroup=cgroup(tmp_path, "100", "300000 100000", v1=True), cpus=32)
    assert caps["OMP_NUM_THREADS"] == "3"


def test_a_variable_the_user_set_is_left_alone(tmp_path: Path) -> None:
    caps = thread_caps({"OMP_NUM_THREADS": "1"}, cgroup=cgroup(tmp_path, "100"), cpus=32)
    assert "OMP_NUM_THREADS" not in caps and caps["MKL_NUM_THREADS"] == "16"
