"""Makes argv[1] orphans: each is double-forked, so its parent is gone before it exits."""

import os
import sys
import time

count = int(sys.argv[1])
for _ in range(count):
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            time.sleep(0.05)  # outlive the middle process, then exit as an orphan
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)  # reap the middle process ourselves; the grandchild is orphaned
print(f"spawned {count} orphans", flush=True)
while True:
    time.sleep(3600)
