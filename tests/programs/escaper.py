"""escaper.py MODE TAG [then]: a unit's main process that leaves processes outside its
process group, each with TAG in its command line, for the tests of docs/states.md
"Every process of a unit".

At start it prints ``leftovers=N``: how many processes with TAG in their command line exist
(none may, if the previous start was cleaned up before this one). Then, by MODE:

- ``setsid``: one child in a session of its own;
- ``double-fork``: the classic daemon (fork, setsid, fork; the middle exits);
- ``nohup``: a ``nohup`` job in the background (same group: the group stop covers it);
- ``ignore-term``: a setsid child that ignores SIGTERM;
- ``fork-again``: a setsid child that forks two more after escaping;
- ``env-i``: a setsid child whose environment was cleared (``env -i``).

It prints ``escaped`` once they run, then sleeps (or, with ``then`` = ``exit``, exits 0).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

SLEEPER = "import signal, sys, time; time.sleep(100000)"
IGNORER = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(100000)"
FORKER = (
    "import subprocess, sys, time\n"
    "sleeper = [sys.executable, '-c', 'import time; time.sleep(100000)', sys.argv[1]]\n"
    "for _ in range(2): subprocess.Popen(sleeper)\n"
    "time.sleep(100000)"
)


def count(tag: str) -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat", "rb") as f:
                zombie = f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        if tag.encode() in args and not zombie and b"escaper.py" not in b" ".join(args):
            n += 1
    return n


def main(mode: str, tag: str, then: str) -> None:
    print(f"leftovers={count(tag)}", flush=True)
    py = sys.executable
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if mode == "setsid":
        subprocess.Popen([py, "-c", SLEEPER, tag], start_new_session=True, **quiet)
    elif mode == "ignore-term":
        subprocess.Popen([py, "-c", IGNORER, tag], start_new_session=True, **quiet)
    elif mode == "fork-again":
        subprocess.Popen([py, "-c", FORKER, tag], start_new_session=True, **quiet)
    elif mode == "nohup":
        subprocess.Popen(["nohup", py, "-c", SLEEPER, tag], **quiet)
    elif mode == "env-i":
        subprocess.Popen(["env", "-i", py, "-c", SLEEPER, tag], start_new_session=True, **quiet)
    elif mode == "double-fork":
        middle = os.fork()
        if middle == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(py, [py, "-c", SLEEPER, tag])
            os._exit(0)
        os.waitpid(middle, 0)
    else:
        raise SystemExit(f"unknown mode {mode}")
    want = 3 if mode == "fork-again" else 1
    deadline = time.monotonic() + 10
    while count(tag) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    print("escaped", flush=True)
    if then == "exit":
        return
    time.sleep(100000)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "sleep")
