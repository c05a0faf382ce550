"""flood.py COUNT [--line-per-write] [--pause SECONDS]: flood.c's Python twin, for unit tests.

Line i is ``%010d`` of i, a space, 88 ``x`` and a newline (100 bytes).  ``--pause`` sleeps
after each line (with --line-per-write): a writer slower than its reader, the case where a
reader that wakes for every write pays a syscall per line.
"""

from __future__ import annotations

import os
import sys
import time


def line(i: int) -> bytes:
    """Line ``i`` of the flood, newline included (100 bytes)."""
    return b"%010d " % i + b"x" * 88 + b"\n"


def main(argv: list[str]) -> int:
    count = int(argv[0])
    per_write = "--line-per-write" in argv[1:]
    pause = float(argv[argv.index("--pause") + 1]) if "--pause" in argv else 0.0
    if per_write:
        for i in range(count):
            os.write(1, line(i))
            if pause:
                time.sleep(pause)
        return 0
    batch = 82  # 8200 bytes: about stdio's 8 KiB blocks
    for start in range(0, count, batch):
        os.write(1, b"".join(line(i) for i in range(start, min(start + batch, count))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
