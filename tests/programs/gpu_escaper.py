"""gpu_escaper.py MIB: a unit's main process whose ``setsid`` child holds MIB of GPU memory
(torch) and ignores SIGTERM — the escaped GPU process of issue 26, run on a GPU machine for
docs/gpu.md. Prints ``child PID holding MIB MiB`` once the memory is allocated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

CHILD = """
import os, signal, sys, time
import torch
signal.signal(signal.SIGTERM, signal.SIG_IGN)
mib = int(sys.argv[1])
block = torch.empty(mib << 20, dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
print(f"child {os.getpid()} holding {mib} MiB", flush=True)
time.sleep(100000)
"""

if __name__ == "__main__":
    subprocess.Popen([sys.executable, "-c", CHILD, sys.argv[1]], start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"main {os.getpid()} started", flush=True)
    time.sleep(100000)
