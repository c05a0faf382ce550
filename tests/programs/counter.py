"""Prints numbered lines ``L000000 xxx...x`` (88 bytes each) at argv[2] lines/s (default 1000)
until the file argv[1] exists, then ``done N`` (N: lines printed) and exits 0."""

import os
import sys
import time

stop = sys.argv[1]
rate = float(sys.argv[2]) if len(sys.argv) > 2 else 1000.0
pad = "x" * 80
i = 0
start = time.monotonic()
while not os.path.exists(stop):
    target = int((time.monotonic() - start) * rate) + 1
    if target > i:
        sys.stdout.write("".join(f"L{n:06d} {pad}\n" for n in range(i, target)))
        sys.stdout.flush()
        i = target
    time.sleep(0.005)
print(f"done {i}", flush=True)
