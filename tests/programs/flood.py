"""flood.py COUNT [--line-per-write]: the Python twin of flood.c, for quick unit tests.

Line i is ``%010d`` of i, a space, 88 ``x`` and a newline (100 bytes).
"""

from __future__ import annotations

import os
import sys


def line(i: int) -> bytes:
    """Line ``i`` of the flood, newline included (100 bytes)."""
    return b"%010d " % i + b"x" * 88 + b"\n"


def main(argv: list[str]) -> int:
    count = int(argv[0])
    per_write = "--line-per-write" in argv[1:]
    if per_write:
        for i in range(count):
            os.write(1, line(i))
        return 0
    batch = 82  # 8200 bytes: about stdio's 8 KiB blocks
    for start in range(0, count, batch):
        os.write(1, b"".join(line(i) for i in range(start, min(start + batch, count))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
