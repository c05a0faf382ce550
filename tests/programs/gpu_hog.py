"""Holds GPU memory through the CUDA driver API (ctypes, no torch), in itself and a child.

Usage: gpu_hog.py MIB [--ignore-term]. Prints "holding N MiB in PID" per process once the
memory is allocated, then sleeps. Used on a GPU machine to prove that stopping a unit
releases the memory of its whole process group.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time


def hold(mib: int) -> None:
    cuda = ctypes.CDLL("libcuda.so.1")
    dev, ctx, ptr = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
    for call, args in (
        ("cuInit", (0,)),
        ("cuDeviceGet", (ctypes.byref(dev), 0)),
        ("cuCtxCreate_v2", (ctypes.byref(ctx), 0, dev)),
        ("cuMemAlloc_v2", (ctypes.byref(ptr), ctypes.c_size_t(mib << 20))),
    ):
        rc = getattr(cuda, call)(*args)
        if rc != 0:
            raise SystemExit(f"{call} failed with CUDA error {rc}")
    print(f"holding {mib} MiB in {os.getpid()}", flush=True)


def main() -> None:
    mib = int(sys.argv[1])
    if "--ignore-term" in sys.argv:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:  # the child initialises CUDA itself (no CUDA state crosses a fork)
        hold(mib)
        while True:
            time.sleep(3600)
    hold(mib)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
