"""The edge follows readiness (issue 30): real ``vastinit run`` on the shipped units, real
Caddy, and the SGLang stand-in whose HTTP port opens 2 s before it is ready.

- no request reaches the stand-in's completion endpoint before it is ready, and a client
  polling every 50 ms gets its first 200 within 100 ms after ready;
- a liveness failure sends the route back to the loading page at once, and a streaming
  answer started before it is not cut;
- ``ctl reload`` adding a unit with ``[[expose]]`` publishes its port within a second, a
  long request on another route going on; a route Caddy refuses leaves the old one serving
  and says why in ``ctl status``;
- a route with no unit behind it says so (page, 502) instead of "starting";
- ``route`` events on the control socket's stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import CADDY, UPSTREAM, free_port
from tests.e2e.test_stack import (
    BEARER,
    BROWSER,
    FAKE_SGLANG,
    Reply,
    request,
    start_stack,
    stop_stack,
)
from tests.harness import Vastinit, wait_until

pytestmark = pytest.mark.skipif(not CADDY.exists(), reason=f"{CADDY} is not installed")

WARMUP_S = 2.0  # the stand-in's port is open this long before it is ready
LIVENESS_S = 0.3  # the sglang liveness interval in this stack


class EventTail:
    """``GET /v1/events?since=0`` on the control socket, read in a thread into ``events``."""

    def __init__(self, path: Path, query: str = "type=route&type=state") -> None:
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(path))
        self._sock.sendall(
            f"GET /v1/events?since=0&{query} HTTP/1.1\r\nHost: vastinit\r\n\r\n".encode()
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            buffer = b""
            header_done = False
            for chunk in iter(lambda: self._sock.recv(65536), b""):
                buffer += chunk
                if not header_done:
                    if b"\r\n\r\n" not in buffer:
                        continue
                    buffer = buffer.split(b"\r\n\r\n", 1)[1]
                    header_done = True
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    line = line.strip()
                    if line.startswith(b"{"):
                        with self._cond:
                            self.events.append(json.loads(line))
                            self._cond.notify_all()

    def find(self, **match: object) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if all(e.get(k) == v for k, v in match.items())]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)


@dataclass
class Edge:
    v: Vastinit
    tmp: Path
    api: int  # Caddy's port for SGLang
    target: int
    nothing: int  # Caddy's port of a PORTAL_CONFIG route that no unit serves
    early_file: Path
    sick_file: Path
    tail: EventTail
    seen: dict[str, Any] = field(default_factory=dict)

    def ready_at(self, after: float = 0.0) -> float:
        """When vastinit marked sglang ready (its route event), the first one after ``after``."""
        found = [
            e["ts"]
            for e in self.tail.find(type="route", unit="sglang", change="state", ready=True)
            if e["ts"] > after
        ]
        assert found, [(e["ts"], e.get("state")) for e in self.tail.find(type="route")]
        return float(found[0])


def chat(port: int, max_tokens: int, *, stream: bool = False, timeout: float = 20.0) -> Reply:
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    return request(port, "/v1/chat/completions", BEARER, method="POST", body=body, timeout=timeout)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    api, port, nothing, nothing_target = free_port(), free_port(), free_port(), free_port()
    server = [
        sys.executable,
        str(FAKE_SGLANG),
        "--fake-load-seconds=0.2",
        f"--fake-warmup-seconds={WARMUP_S}",
        "--fake-token-delay=0.01",
    ]
    early, sick, weights = tmp / "early-requests", tmp / "unhealthy", tmp / "weights"
    v, _markers, gate = start_stack(
        tmp,
        edge=api,
        target=port,
        env={
            "PORTAL_CONFIG": f"localhost:{api}:{port}:/docs:SGLang API"
            f"|localhost:{nothing}:{nothing_target}:/:Model UI",
            "SGLANG_MODEL": "fake-org/Fake-1B",
            "SGLANG_SERVER_CMD": shlex.join(server),
            "SGLANG_SERVER_PORT": str(port),  # the launcher, probes and route follow it
            "SGLANG_ARGS": "--served-model-name fake",
            "FAKE_SGLANG_GATE": str(weights),
            "FAKE_SGLANG_EARLY_FILE": str(early),
            "FAKE_SGLANG_UNHEALTHY_FILE": str(sick),
            "CADDYFILE": str(tmp / "etc" / "Caddyfile"),  # /etc/Caddyfile in the image
        },
        dropins={
            "jupyter": {"enabled": False},
            "sglang": {
                "liveness": {
                    "http": f"http://127.0.0.1:{port}/health",
                    "interval": f"{int(LIVENESS_S * 1000)}ms",
                    "failures": 1,
                    "timeout": "2s",
                },
                "restart": {"delay": "100ms"},
                "stop": {"timeout": "20s"},
            },
        },
    )
    gate.touch()  # provisioning ends at once
    tail: EventTail | None = None
    try:
        v.wait_control()
        tail = EventTail(v.socket)
        stack = Edge(v, tmp, api, port, nothing, early, sick, tail)
        v.wait_state("caddy", "ready", timeout=30)
        v.wait_line("sglang", "Load weight begin", timeout=30)
        # An API client polling every 50 ms from before the port opens until well after ready.
        polls: list[tuple[float, int]] = []
        stop_polling = threading.Event()

        def poll() -> None:
            while not stop_polling.is_set():
                began = time.time()
                reply = chat(api, 1, timeout=10)
                polls.append((time.time(), reply.status))
                time.sleep(max(0.05 - (time.time() - began), 0.0))

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            weights.touch()
            v.wait_line("sglang", "Uvicorn running", timeout=30)
            stack.seen["browser_while_warming"] = request(api, "/docs", {**BEARER, **BROWSER})
            stack.seen["api_while_warming"] = request(api, "/v1/models", BEARER)
            v.wait_state("sglang", "ready", timeout=30)
            wait_until(lambda: any(s == 200 for _, s in polls), 10, "a 200 for the poller")
            time.sleep(0.3)  # a few more polls after the first 200
        finally:
            stop_polling.set()
            poller.join(15)
        stack.seen["polls"] = polls
        stack.seen["early"] = early.read_text().strip()
        yield stack
    finally:
        if tail is not None:
            tail.close()
        stop_stack(v)


def test_no_request_reaches_the_server_before_it_is_ready(edge: Edge) -> None:
    assert edge.seen["early"] == "0"
    polls = edge.seen["polls"]
    ready = edge.ready_at()
    assert all(status == 503 for at, status in polls if at < ready - 0.05), polls
    assert all(status in (200, 503) for _, status in polls), polls
    assert any(at < ready - 1.0 for at, _ in polls), "the poller began too late to tell"


def test_an_api_client_polling_every_50ms_gets_its_first_200_within_100ms_of_ready(
    edge: Edge,
) -> None:
    first = min(at for at, status in edge.seen["polls"] if status == 200)
    ready = edge.ready_at()
    # `at` is when the 200 came back (a one-token answer takes the stand-in 10 ms).
    assert first - ready < 0.1, (first - ready, edge.seen["polls"][-30:])


def test_while_warming_browsers_get_the_live_loading_page_and_api_clients_503(
    edge: Edge,
) -> None:
    page = edge.seen["browser_while_warming"]
    assert page.status == 200 and page.headers["X-Portal-Placeholder"] == "true", page
    assert "SGLang API is starting" in page.body, page.body
    assert 'new EventSource("/.vastinit/status")' in page.body
    assert "http-equiv" not in page.body and "<script src" not in page.body
    api = edge.seen["api_while_warming"]
    assert api.status == 503 and api.headers["Retry-After"] == "1", api


def test_a_route_with_no_unit_says_so_instead_of_starting(edge: Edge) -> None:
    page = request(edge.nothing, "/", {**BEARER, **BROWSER})
    assert page.status == 200 and "nothing serves this port" in page.body, page
    assert "starting" not in page.body
    api = request(edge.nothing, "/v1/models", BEARER)
    assert api.status == 502 and "nothing serves this port" in api.body, api


def test_the_status_stream_is_token_protected_and_read_only(edge: Edge) -> None:
    assert request(edge.api, "/.vastinit/status").status == 401
    reply = request(edge.api, "/.vastinit/status", BEARER, method="POST", timeout=5)
    assert reply.status in (404, 405), reply


def test_the_status_stream_is_server_sent_events_of_the_route(edge: Edge) -> None:
    conn = socket.create_connection(("127.0.0.1", edge.api), timeout=5)
    try:
        conn.sendall(
            f"GET /.vastinit/status HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {BEARER['Authorization']}\r\n\r\n".encode()
        )
        data = b""
        while b"\ndata: " not in data or not data.rstrip(b"\r\n ").endswith(b"}"):
            data += conn.recv(65536)
    finally:
        conn.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"200" in head.split(b"\r\n")[0] and b"text/event-stream" in head, head
    assert b"retry: " in body
    event = json.loads(body.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert event["port"] == edge.api and event["label"] == "SGLang API"
    assert event["unit"] == "sglang" and event["headline"].startswith("SGLang API is")


def test_route_events_name_unit_port_and_readiness(edge: Edge) -> None:
    sets = edge.tail.find(type="route", change="set")
    assert sets, edge.tail.events
    routes = {r["port"]: r for r in sets[0]["routes"]}
    assert routes[edge.api]["unit"] == "sglang" and routes[edge.api]["target"] == edge.target
    assert routes[edge.nothing]["unit"] is None
    moves = edge.tail.find(type="route", unit="sglang", change="state")
    assert [m["ready"] for m in moves][-1] is True
    assert all(m["port"] == edge.api for m in moves)
    assert any(m["state"] == "running" and m["ready"] is False for m in moves)


def test_the_caddyfile_is_written_without_the_token(edge: Edge) -> None:
    text = (edge.tmp / "etc" / "Caddyfile").read_text()
    assert f"http://:{edge.api}" in text and "e2e-Token" not in text
    assert "admin unix/" in text and "2019" not in text
    admin = next(edge.tmp.glob("vastinit-edge/admin.sock"))
    # Caddy (umask 077) recreates it at every load: owner only, in an owner-only directory.
    assert admin.stat().st_mode & 0o077 == 0 and admin.stat().st_uid == os.geteuid()
    assert (admin.parent.stat().st_mode & 0o777) == 0o700


def test_liveness_failure_sends_the_route_back_without_cutting_a_stream(edge: Edge) -> None:
    replies: list[Reply] = []
    prefills = _prefills(edge)
    streaming = threading.Thread(target=lambda: replies.append(chat(edge.api, 200, stream=True)))
    streaming.start()
    try:
        wait_until(lambda: _prefills(edge) > prefills, 10, "the stream to start")
        ready_before = edge.ready_at()
        edge.sick_file.touch()
        failed_at = time.time()
        # Back to the loading page within one liveness interval (and a poll's margin).
        wait_until(
            lambda: request(edge.api, "/v1/models", BEARER).status == 503,
            LIVENESS_S + 1.0,
            "the route to show the loading page",
        )
        assert time.time() - failed_at < LIVENESS_S + 1.0, time.time() - failed_at

        # The route left ready at the first failed probe: within one interval of the server
        # turning sick, plus the probe's own round trip (up to 250 ms on a loaded machine).
        # The marker goes before the event is published, so the 503 above can be seen
        # before the event reaches this test's reader thread: wait for it, then judge its
        # time stamp.
        def left() -> list[float]:
            return [
                e["ts"]
                for e in edge.tail.find(type="route", unit="sglang", change="state", ready=False)
                if e["ts"] > failed_at
            ]

        wait_until(left, 5, "the route event of the unit leaving ready")
        assert left()[0] - failed_at < LIVENESS_S + 0.25, (left(), failed_at)
    finally:
        # Healthy again whatever happened above, so the module's other tests are not
        # failed by this one.
        edge.sick_file.unlink(missing_ok=True)
        streaming.join(30)
    assert replies and replies[0].status == 200, replies
    assert replies[0].body.count("chat.completion.chunk") == 200, replies[0].body[-300:]
    assert replies[0].body.rstrip().endswith("data: [DONE]")
    # And back in service once restarted and ready.
    edge.v.wait_state("sglang", "ready", timeout=30, count=2)
    wait_until(
        lambda: edge.tail.find(type="route", unit="sglang", state="ready")[1:],
        10,
        "the route event of the second ready",
    )
    assert edge.ready_at(after=ready_before + 0.001) > failed_at
    wait_until(lambda: chat(edge.api, 1).status == 200, 10, "the route to proxy again")


WEB_UNIT = """
command = [{python}, "-c", {program}, "{port}"]
[readiness]
http = "http://127.0.0.1:{port}/"
[[expose]]
port = {edge}
target = {port}
label = "Web"
"""


def test_reload_adds_a_route_without_cutting_a_request_on_another(edge: Edge) -> None:
    web_edge, web_port = free_port(), free_port()
    unit_file = edge.tmp / "dropins" / "web.toml"
    replies: list[Reply] = []
    wait_until(lambda: chat(edge.api, 1).status == 200, 30, "sglang to serve")
    long = threading.Thread(target=lambda: replies.append(chat(edge.api, 150, stream=True)))
    long.start()
    try:
        unit_file.write_text(
            WEB_UNIT.format(
                python=json.dumps(sys.executable),
                program=json.dumps(UPSTREAM),
                port=web_port,
                edge=web_edge,
            )
        )
        result = edge.v.ctl("reload")
        reloaded = time.monotonic()
        assert result.returncode == 0, result.stdout + result.stderr
        wait_until(lambda: _status(web_edge, {}) == 401, 1.0, "the new route's 401")
        assert time.monotonic() - reloaded < 1.0
        edge.v.wait_state("web", "ready", timeout=20)
        wait_until(lambda: _status(web_edge, BEARER) == 200, 1.0, "the new route's 200")
    finally:
        long.join(30)
        unit_file.unlink(missing_ok=True)
        edge.v.ctl("reload")
    assert replies and replies[0].status == 200, replies
    assert replies[0].body.count("chat.completion.chunk") == 150
    assert edge.tail.find(type="route", change="set", added=[web_edge])


def test_a_route_caddy_refuses_leaves_the_old_one_serving_and_says_why(edge: Edge) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = busy.getsockname()[1]
    unit_file = edge.tmp / "dropins" / "clash.toml"
    try:
        unit_file.write_text(
            WEB_UNIT.format(
                python=json.dumps(sys.executable),
                program=json.dumps(UPSTREAM),
                port=free_port(),
                edge=taken,
            )
        )
        assert edge.v.ctl("reload").returncode == 0
        wait_until(
            lambda: edge.tail.find(type="route", change="error"), 10, "the route error event"
        )
        status = json.loads(edge.v.ctl("status", "--json", "caddy").stdout)["units"][0]
        assert "routes not loaded" in status["probe_error"], status
        assert str(taken) in status["probe_error"], status
        assert "routes not loaded" in edge.v.ctl("status").stdout
        assert chat(edge.api, 1).status == 200  # the old configuration serves on
    finally:
        unit_file.unlink(missing_ok=True)
        busy.close()
    assert edge.v.ctl("reload").returncode == 0
    wait_until(
        lambda: (
            not json.loads(edge.v.ctl("status", "--json", "caddy").stdout)["units"][0].get(
                "probe_error"
            )
        ),
        10,
        "the error to clear once a good configuration loaded",
    )


def _status(port: int, headers: dict[str, str]) -> int:
    try:
        return request(port, "/", headers, timeout=2).status
    except OSError:
        return 0


def _prefills(edge: Edge) -> int:
    return sum("Prefill batch" in line for line in edge.v.unit_lines("sglang"))


def test_reload_applies_a_changed_portal_config_without_restarting_caddy(edge: Edge) -> None:
    extra = free_port()
    pid = json.loads(edge.v.ctl("status", "--json", "caddy").stdout)["units"][0]["pid"]
    env_file = edge.tmp / "workspace" / ".env"
    env_file.write_text(
        f"PORTAL_CONFIG=localhost:{edge.api}:{edge.target}:/docs:SGLang API"
        f"|localhost:{extra}:{edge.target}:/docs:SGLang again\n"
    )
    try:
        assert _status(extra, {}) == 0  # an env file edit alone changes nothing
        assert edge.v.ctl("reload").returncode == 0
        wait_until(lambda: _status(extra, {}) == 401, 5, "the new PORTAL_CONFIG route")
        assert request(extra, "/v1/models", BEARER).status == 200
        # The Model UI entry is gone (Caddy closes the old listener once the new config runs).
        wait_until(lambda: _status(edge.nothing, {}) == 0, 5, "the Model UI route to go")
        now = json.loads(edge.v.ctl("status", "--json", "caddy").stdout)["units"][0]
        assert now["pid"] == pid and now["state"] == "ready"
        # Applied without a restart: no "restart to apply" left behind.
        wait_until(
            lambda: (
                not json.loads(edge.v.ctl("status", "--json", "caddy").stdout)["units"][0].get(
                    "restart_to_apply"
                )
            ),
            5,
            "the restart-to-apply note to clear",
        )
        text = (edge.tmp / "etc" / "Caddyfile").read_text()
        assert f"http://:{extra}" in text and "e2e-Token" not in text
    finally:
        env_file.unlink()
        edge.v.ctl("reload")
    wait_until(lambda: _status(extra, {}) == 0, 5, "the route to go with the entry")
