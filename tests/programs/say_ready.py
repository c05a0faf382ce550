"""Prints a few lines, then after DELAY seconds "TEXT T" (T = time.time()), then sleeps.

say_ready.py DELAY TEXT [--stderr]
"""

import sys
import time

delay, text = float(sys.argv[1]), sys.argv[2]
out = sys.stderr if "--stderr" in sys.argv[3:] else sys.stdout
print("booting; not ready yet", flush=True)
print("READY is a word in this line but not the ready line", file=out, flush=True)
time.sleep(delay)
print(f"{text} {time.time():.6f}", file=out, flush=True)
while True:
    time.sleep(3600)
