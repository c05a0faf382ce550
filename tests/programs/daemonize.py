"""Daemonizes the classic way, then exits: fork, setsid, fork again; the parent and the
middle process exit 0 at once. The daemon (now in a session of its own, an orphan) writes
its pid to argv[1], prints argv[2] numbered lines ``daemon line N`` 20 ms apart on the
stdout it inherited, and exits 0."""

import os
import sys
import time

pidfile, count = sys.argv[1], int(sys.argv[2])
middle = os.fork()
if middle == 0:
    os.setsid()
    if os.fork() == 0:
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pidfile + ".tmp", pidfile)
        for i in range(count):
            print(f"daemon line {i}", flush=True)
            time.sleep(0.02)
        os._exit(0)
    os._exit(0)
os.waitpid(middle, 0)
print("parent exiting", flush=True)
