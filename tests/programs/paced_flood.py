"""paced_flood.py RATE: 100-byte numbered lines at RATE lines/s, forever (until killed).

The steady log flood of the follower and event-stream tests and benchmarks: paced, so a
test can reason about lines per second, in blocks of 100 lines per write.
"""

from __future__ import annotations

import sys
import time


def main(rate: float) -> None:
    pad = "x" * 90
    i = 0
    t0 = time.monotonic()
    while True:
        for _ in range(100):
            sys.stdout.write(f"{i:09d} {pad}\n")
            i += 1
        sys.stdout.flush()
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))


if __name__ == "__main__":
    main(float(sys.argv[1]))
