"""Daemonizes the classic way, then exits: fork, setsid, fork again; the parent and the
middle process exit 0 at once. The daemon (now in a session of its own, an orphan) writes
its pid to argv[1], prints argv[2] numbered lines ``daemon line N`` 20 ms apart on the
stdout it inherited, and exits 0. Each line is one write(2), so lines of the daemon and of
its parent, sharing the pipe, never interleave mid-line."""

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
            os.write(1, f"daemon line {i}\n".encode())
            time.sleep(0.02)
        os._exit(0)
    os._exit(0)
os.waitpid(middle, 0)
os.write(1, b"parent exiting\n")
