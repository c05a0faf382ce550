"""GPU attribution and the GPU-aware stop on a real vastinit, with NVML stood in by
tests/fake_nvml/pynvml.py (CI has no GPU; docs/gpu.md has the run on a real H100): a unit's
GPU memory in status and as ``gpu`` events, and a stop that returns only once NVML no longer
shows the unit's processes — or says what is still held when it never stops showing them."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from tests.harness import REPO, Vastinit, pid_alive, wait_until, write_unit
from tests.integration.test_events import Follower

GIB = 1 << 30
FAKE = REPO / "tests" / "fake_nvml"


def start(tmp_path: Path, timeout: str = "5s") -> tuple[Vastinit, Path]:
    units = tmp_path / "units"
    write_unit(units, "hog", f'command = ["sleep", "600"]\n[stop]\ntimeout = "{timeout}"\n')
    state = tmp_path / "nvml.json"
    env = {
        "PYTHONPATH": f"{FAKE}{os.pathsep}{REPO}",
        "GPU_COUNT": "1",
        "VASTINIT_GPU_ATTRIBUTION": "pid",
        "FAKE_NVML_STATE": str(state),
    }
    vi = Vastinit(units, tmp_path, control=True, env=env)
    vi.wait_control()
    vi.wait_state("hog", "ready")
    return vi, state


def hog(vi: Vastinit) -> dict[str, object]:
    units: list[dict[str, object]] = json.loads(vi.ctl("status", "--json", "hog").stdout)["units"]
    return units[0]


def test_status_and_events_show_a_units_gpu_memory(tmp_path: Path) -> None:
    vi, state = start(tmp_path)
    events = None
    try:
        events = Follower(vi.socket, "type=gpu")
        pid = hog(vi)["pid"]
        assert hog(vi)["gpu"] is None
        state.write_text(json.dumps([{"pid": pid, "used": 2 * GIB}, {"pid": 1, "used": GIB}]))
        assert hog(vi)["gpu"] == {"mode": "pid", "gpus": [0], "used_bytes": 2 * GIB}
        wait_until(lambda: events.events, 5, "a gpu event")
        event = events.events[0]
        assert (event["unit"], event["gpus"], event["used_bytes"]) == ("hog", [0], 2 * GIB)
    finally:
        if events is not None:
            events.close()
        vi.terminate()


def test_a_stop_waits_until_nvml_no_longer_shows_the_unit(tmp_path: Path) -> None:
    """The "driver" (the fake) keeps listing the process for 0.8 s after it died: the stop
    returns only after that, and says the memory was released. Before issue 26 the stop
    returned as soon as the process group was empty."""
    vi, state = start(tmp_path)
    try:
        pid = hog(vi)["pid"]
        assert isinstance(pid, int)
        state.write_text(json.dumps([{"pid": pid, "used": 2 * GIB}]))
        assert hog(vi)["gpu"] is not None

        def driver() -> None:
            wait_until(lambda: not pid_alive(pid), 10, "the hog to die")
            time.sleep(0.8)  # the stand-in driver's cleanup time, on purpose
            state.write_text("[]")

        thread = threading.Thread(target=driver)
        thread.start()
        t0 = time.monotonic()
        assert vi.ctl("stop", "hog").returncode == 0
        took = time.monotonic() - t0
        thread.join()
        assert took >= 0.8, took
        assert any(e.get("event") == "GPU memory released" for e in vi.events)
    finally:
        vi.terminate()


def test_memory_that_never_goes_is_reported_not_waited_for_forever(tmp_path: Path) -> None:
    vi, state = start(tmp_path, timeout="1s")
    try:
        pid = hog(vi)["pid"]
        state.write_text(json.dumps([{"pid": pid, "used": 2 * GIB}]))
        assert hog(vi)["gpu"] is not None
        t0 = time.monotonic()
        assert vi.ctl("stop", "hog").returncode == 0
        assert time.monotonic() - t0 < 5
        held = [e for e in vi.events if e.get("event") == "GPU memory still held after the stop"]
        assert held and f"pid {pid} on GPU 0: 2048 MiB" in str(held[0]["held"])
    finally:
        vi.terminate()
