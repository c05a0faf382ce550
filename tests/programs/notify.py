"""Speaks sd_notify: sends each message argument to $NOTIFY_SOCKET in order, then sleeps.

    notify.py [MESSAGE | sleep:S]...      e.g. notify.py STATUS=loading sleep:0.3 READY=1

In a MESSAGE, "\\n" separates lines ("READY=1\\nSTATUS=serving").
Prints "sending MESSAGE at T" just before sending.
"""

import os
import socket
import sys
import time

path = os.environ.get("NOTIFY_SOCKET", "")
print(f"NOTIFY_SOCKET={path}", flush=True)
for arg in sys.argv[1:]:
    if arg.startswith("sleep:"):
        time.sleep(float(arg[len("sleep:") :]))
        continue
    address = "\0" + path[1:] if path.startswith("@") else path
    print(f"sending {arg} at {time.time():.6f}", flush=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(arg.replace("\\n", "\n").encode(), address)
while True:
    time.sleep(3600)
