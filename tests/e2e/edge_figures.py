"""The edge's figures for docs/performance.md (issue 30): ``python -m tests.e2e.edge_figures``.

One stack as tests/e2e/test_edge.py's (shipped units, real Caddy, the SGLang stand-in whose
port opens 2 s before it is ready, headless Chromium), then ``--runs`` cycles of: a
liveness failure restarts the stand-in while an API client polls every 50 ms and a browser
waits on the loading page. Per cycle: requests that reached the stand-in before ready,
the poller's first 200 after ready, the browser's switch to the real page after ready.
Then an http-probed unit with the shipped Jupyter unit's [readiness] (the stand-in
tests/programs/http_server.py, listening 0.37 s after each start) is restarted ``--runs``
times: its ready moment after it began to answer.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

from tests.e2e.conftest import free_port
from tests.e2e.test_edge import EventTail, chat
from tests.e2e.test_edge_browser import CHROMEDRIVER, CHROMIUM
from tests.e2e.test_stack import BEARER, FAKE_SGLANG, TOKEN, UNITS, request, start_stack, stop_stack
from tests.harness import PROGRAMS, wait_until


def _summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"median {statistics.median(ms):.0f} ms, max {max(ms):.0f} ms (n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    tmp = Path(tempfile.mkdtemp(prefix="edge-figures-"))
    api, port, lab = free_port(), free_port(), free_port()
    server = [sys.executable, str(FAKE_SGLANG), "--fake-load-seconds=0.2",
              "--fake-warmup-seconds=2", "--fake-token-delay=0.01"]  # fmt: skip
    early, sick = tmp / "early", tmp / "sick"
    shipped = tomllib.loads((UNITS / "jupyter.toml").read_text())["readiness"]
    readiness = {k: v for k, v in shipped.items() if k != "http"}
    v, _, gate = start_stack(
        tmp,
        edge=api,
        target=port,
        env={
            "PORTAL_CONFIG": f"localhost:{api}:{port}:/docs:SGLang API",
            "SGLANG_MODEL": "fake-org/Fake-1B",
            "SGLANG_SERVER_CMD": shlex.join(server),
            "SGLANG_SERVER_PORT": str(port),  # the launcher, probes and route follow it
            "SGLANG_ARGS": "--served-model-name fake",
            "FAKE_SGLANG_EARLY_FILE": str(early),
            "FAKE_SGLANG_UNHEALTHY_FILE": str(sick),
        },
        dropins={
            "jupyter": {"enabled": False},
            "sglang": {
                "liveness": {
                    "http": f"http://127.0.0.1:{port}/health",
                    "interval": "300ms",
                    "failures": 1,
                },
                # Every cycle is a restart: keep the crash-loop limit out of the way.
                "restart": {"delay": "100ms", "limit": 1000},
            },
        },
    )
    lab_cmd = [sys.executable, str(PROGRAMS / "http_server.py"), str(lab), "--delay", "0.37"]
    (tmp / "dropins" / "lab.toml").write_text(
        f"command = {json.dumps(lab_cmd)}\n"
        + "[readiness]\n"
        + f'http = "http://127.0.0.1:{lab}/api"\n'
        + "".join(f'{k} = "{val}"\n' for k, val in readiness.items())
    )
    gate.touch()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp / 'chromium'}"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    results: dict[str, list[float]] = {"api_first_200": [], "browser_switch": [], "lab_ready": []}
    earlies: list[int] = []
    tail = None
    try:
        v.wait_control()
        tail = EventTail(v.socket)
        v.wait_state("sglang", "ready", timeout=60)
        wait_until(lambda: tail.find(type="route", unit="sglang", ready=True), 10, "ready event")
        for cycle in range(args.runs):
            before = max(e["ts"] for e in tail.find(type="route", unit="sglang", ready=True))
            sick.touch()
            wait_until(lambda: request(api, "/v1/models", BEARER).status == 503, 10, "503")
            sick.unlink()
            polls: list[tuple[float, int]] = []
            stop = threading.Event()

            def poll(polls: list[tuple[float, int]] = polls, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    began = time.time()
                    polls.append((time.time(), chat(api, 1, timeout=10).status))
                    time.sleep(max(0.05 - (time.time() - began), 0.0))

            poller = threading.Thread(target=poll)
            poller.start()
            driver.get(f"http://127.0.0.1:{api}/v1/models?token={TOKEN}")
            script = "return document.getElementById('headline') === null"
            deadline = time.monotonic() + 60
            while not driver.execute_script(script):
                assert time.monotonic() < deadline, "still on the loading page after 60 s"
                time.sleep(0.01)
            shown = time.time()
            wait_until(lambda p=polls: any(s == 200 for _, s in p), 10, "a 200")
            stop.set()
            poller.join(10)
            wait_until(
                lambda b=before: [
                    e for e in tail.find(type="route", unit="sglang", ready=True) if e["ts"] > b
                ],
                10,
                "the ready event",
            )
            ready = min(
                e["ts"]
                for e in tail.find(type="route", unit="sglang", ready=True)
                if e["ts"] > before
            )
            results["browser_switch"].append(shown - ready)
            results["api_first_200"].append(min(t for t, s in polls if s == 200) - ready)
            earlies.append(int(early.read_text()))
            print(f"cycle {cycle + 1}: " + ", ".join(f"{k} {vals[-1] * 1000:.0f} ms"
                  for k, vals in results.items() if vals), f"early {earlies[-1]}")  # fmt: skip
        assert v.ctl("reload").returncode == 0
        for run in range(1, args.runs + 1):
            if run > 1:
                assert v.ctl("restart", "lab").returncode == 0
            v.wait_state("lab", "ready", timeout=20, count=run)
            listening = [float(x.split()[2]) for x in v.unit_lines("lab") if x.startswith("listen")]
            ready_ts = [e["ts"] for e in v.events if e.get("unit") == "lab" and e.get("state") == "ready"]  # fmt: skip  # noqa: E501
            results["lab_ready"].append(ready_ts[run - 1] - listening[run - 1])
    finally:
        driver.quit()
        if tail is not None:
            tail.close()
        stop_stack(v)
    print(f"requests reaching the stand-in before ready: {earlies}")
    for name, values in results.items():
        print(f"{name}: {_summary(values)}  raw: {[round(x * 1000) for x in values]}")


if __name__ == "__main__":
    main()
