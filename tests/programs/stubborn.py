"""Ignores SIGTERM, and so do its two grandchildren; writes all three pids to argv[1]."""

import os
import signal
import sys
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
pids = [os.getpid()]
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        # A grandchild that also ignores SIGTERM (inherited) and outlives nobody's wishes.
        while True:
            time.sleep(3600)
    pids.append(pid)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(" ".join(map(str, pids)))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
print("stubborn ready", flush=True)
while True:
    time.sleep(3600)
