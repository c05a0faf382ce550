"""The server's side of a status call: vastinit's XML-RPC vs supervisord 4.3, same run.

50 programs (``sleep``) from one conf.d file, run by ``python -m supervisor.supervisord``
and by ``vastinit run`` (the file in its unit directory). A raw unix-socket client sends
a canned ``supervisor.getAllProcessInfo`` request (``Connection: close``) and reads the
reply to EOF without parsing it: 1,000 calls to each, in alternating blocks of 100.
Beside it: the end-to-end ``xmlrpc.client`` call (parsing included) and the wall time of
the real ``supervisorctl status``. Prints one JSON object; docs/performance.md has the
table. Not run in CI::

    nice -n 10 .venv/bin/python -m benchmarks.xmlrpc_status
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from benchmarks.common import REPO

PY = sys.executable
PROGRAMS = 50
CALLS = 1000
BLOCK = 100
BODY = xmlrpc.client.dumps((), "supervisor.getAllProcessInfo").encode()
REQUEST = (
    b"POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


def conf_d(directory: Path) -> Path:
    path = directory / "programs.conf"
    path.write_text("".join(f"[program:p{i:02d}]\ncommand=sleep 3600\n" for i in range(PROGRAMS)))
    return path


def raw_call(sock_path: str) -> float:
    start = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(sock_path)
        s.sendall(REQUEST)
        while s.recv(65536):
            pass
    return time.perf_counter() - start


class _Conn(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


class _Transport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.unix_path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _Conn(self.unix_path)


def client_call(sock_path: str) -> float:
    proxy = xmlrpc.client.ServerProxy("http://localhost/RPC2", _Transport(sock_path))
    start = time.perf_counter()
    infos = proxy.supervisor.getAllProcessInfo()
    elapsed = time.perf_counter() - start
    assert len(infos) == PROGRAMS  # type: ignore[arg-type]
    return elapsed


def ctl_call(sock_path: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [PY, "-m", "supervisor.supervisorctl", "-s", f"unix://{sock_path}", "status"],
        stdout=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - start


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 3),
    }


def wait_running(sock_path: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            proxy = xmlrpc.client.ServerProxy("http://localhost/RPC2", _Transport(sock_path))
            infos = proxy.supervisor.getAllProcessInfo()
            if sum(i["statename"] == "RUNNING" for i in infos) == PROGRAMS:  # type: ignore[union-attr]
                return
        except (OSError, xmlrpc.client.Error):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{sock_path}: the {PROGRAMS} programs never all ran")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "sd").mkdir()
        (work / "vi").mkdir()
        conf_d(work / "sd")
        conf_d(work / "vi")
        sd_sock, vi_sock = str(work / "sd" / "s.sock"), str(work / "vi" / "s.sock")
        (work / "sd" / "supervisord.conf").write_text(
            f"[unix_http_server]\nfile={sd_sock}\n[supervisord]\nnodaemon=true\n"
            f"logfile={work}/sd/supervisord.log\npidfile={work}/sd/sd.pid\n"
            f"childlogdir={work}/sd\n[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
            "[include]\nfiles=programs.conf\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "VASTINIT_ROLE": "workstation"}
        sd = subprocess.Popen(
            [PY, "-m", "supervisor.supervisord", "-c", f"{work}/sd/supervisord.conf"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        vi_argv = [PY, "-m", "vastinit", "run", "--units", f"{work}/vi"]
        vi_argv += ["--log-dir", f"{work}/vi/log", "--socket", vi_sock]
        vi = subprocess.Popen(
            vi_argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            deadline = time.monotonic() + 60
            wait_running(sd_sock, deadline)
            wait_running(vi_sock, deadline)
            socks = {"vastinit": vi_sock, "supervisord": sd_sock}
            raw: dict[str, list[float]] = {k: [] for k in socks}
            for path in socks.values():  # warm-up
                for _ in range(20):
                    raw_call(path)
            for _ in range(CALLS // BLOCK):
                for name, path in socks.items():
                    raw[name] += [raw_call(path) for _ in range(BLOCK)]
            client = {k: [client_call(p) for _ in range(200)] for k, p in socks.items()}
            ctl = {k: [ctl_call(p) for _ in range(10)] for k, p in socks.items()}
        finally:
            for proc in (vi, sd):
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(60)
    result = {
        "programs": PROGRAMS,
        "raw_getAllProcessInfo": {k: summary(v) for k, v in raw.items()},
        "xmlrpc_client_getAllProcessInfo": {k: summary(v) for k, v in client.items()},
        "supervisorctl_status_wall": {k: summary(v) for k, v in ctl.items()},
    }
    r = result["raw_getAllProcessInfo"]
    result["ratio_median"] = round(r["vastinit"]["median_ms"] / r["supervisord"]["median_ms"], 3)
    result["ratio_p99"] = round(r["vastinit"]["p99_ms"] / r["supervisord"]["p99_ms"], 3)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
