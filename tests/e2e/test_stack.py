"""The shipped stack, end to end: a real ``vastinit run`` on units/ starts real Caddy, real
JupyterLab and ``vastinit launch sglang`` (with tests/programs/fake_sglang.py as the server).

Each stack runs on units/ plus a drop-in directory that moves the fixed ports to free ones
(and, for SGLang, shortens the stop timeout); everything else is the shipped unit. Its
provisioning runs a PROVISIONING_SCRIPT that waits for a file the test creates, so the
"before" of each story (dependents waiting, the loading page) is observed for certain.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import signal
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.e2e.conftest import CADDY, free_port
from tests.harness import PROGRAMS, REPO, Vastinit, wait_until

UNITS = REPO / "vastinit" / "units"
JUPYTER_LAB = Path(sys.executable).parent / "jupyter-lab"
FAKE_SGLANG = PROGRAMS / "fake_sglang.py"
TOKEN = "e2e-Token_4f2a9"
COOKIE = "C.42_auth_token"  # ${VAST_CONTAINERLABEL}_auth_token
BEARER = {"Authorization": f"Bearer {TOKEN}"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8", "Sec-Fetch-Mode": "navigate"}

pytestmark = pytest.mark.skipif(not CADDY.exists(), reason=f"{CADDY} is not installed")


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    target: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    body: object = None,
    timeout: float = 20.0,
) -> Reply:
    """One request to 127.0.0.1:``port``; no redirects followed, no cookie jar."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = None if body is None else json.dumps(body).encode()
    all_headers = dict(headers or {})
    if data is not None:
        all_headers["Content-Type"] = "application/json"
    try:
        conn.request(method, target, body=data, headers=all_headers)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read().decode())
    finally:
        conn.close()


def processes_in_group(pgid: int) -> list[int]:
    """Pids whose process group is ``pgid`` (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # Fields after "(comm)": state ppid pgrp ...; comm may contain spaces and parens.
        if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
            found.append(int(entry.name))
    return found


@dataclass
class Stack:
    """A running ``vastinit run`` on the shipped units, and what the test saw while it booted."""

    v: Vastinit
    tmp: Path
    edge: int  # Caddy's port for the service under test
    target: int  # the service's own port on 127.0.0.1
    markers: Path
    seen: dict[str, Any] = field(default_factory=dict)

    def status(self, name: str) -> dict[str, Any]:
        result = self.v.ctl("status", "--json", name)
        assert result.returncode in (0, 3), result.stderr
        unit: dict[str, Any] = json.loads(result.stdout)["units"][0]
        return unit

    def cause(self, unit: str, state: str) -> str:
        event = self.v.event(unit, state)
        assert event is not None, f"{unit} never was {state}: {self.v.states(unit)}"
        return str(event["cause"])


def start_stack(
    tmp: Path, *, edge: int, target: int, env: dict[str, str], dropins: dict[str, dict[str, Any]]
) -> tuple[Vastinit, Path, Path]:
    """``vastinit run --units units/ --units DROPINS`` with a gated PROVISIONING_SCRIPT.

    Returns the running vastinit, the marker directory and the file that lets provisioning end.
    """
    (tmp / "workspace").mkdir()
    markers = tmp / "markers"
    gate = tmp / "provisioning-may-finish"
    script = tmp / "provision.sh"
    # Bounded: 30 s at most, even if the test never opens the gate.
    script.write_text(
        "#!/bin/sh\n"
        'echo "provisioning: waiting for the test"\n'
        "i=0\n"
        f"while [ ! -e {shlex.quote(str(gate))} ] && [ $i -lt 600 ]; do\n"
        "    sleep 0.05; i=$((i + 1))\n"
        "done\n"
        'echo "provisioning: done"\n'
    )
    dropin_dir = tmp / "dropins"
    for unit, table in dropins.items():
        (dropin_dir / f"{unit}.d").mkdir(parents=True)
        (dropin_dir / f"{unit}.d" / "test.toml").write_text(tomli_w.dumps(table))
    home = tmp / "home"
    full_env = {
        # Every path a unit writes to is under tmp; nothing of this machine's is touched.
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_RUNTIME_DIR": str(tmp / "run"),  # the caddy unit's Caddyfile goes here
        "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
        "JUPYTER_DATA_DIR": str(home / "jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(home / "jupyter-runtime"),
        "WORKSPACE": str(tmp / "workspace"),
        "VASTINIT_MARKER_DIR": str(markers),
        "PROVISIONING_SCRIPT": str(script),
        "OPEN_BUTTON_TOKEN": TOKEN,
        "VAST_CONTAINERLABEL": "C.42",
        # Caddy: loopback only; its admin API is on a unix socket in vastinit's edge dir.
        "CADDY_BIND": "127.0.0.1",
        "SGLANG_MODEL": "",
        "SGLANG_ARGS_FILE": str(tmp / "no-sglang-args.conf"),
        **env,
    }
    v = Vastinit(UNITS, tmp, env=full_env, args=["--units", str(dropin_dir)], control=True)
    return v, markers, gate


def stop_stack(v: Vastinit) -> None:
    """SIGTERM vastinit; if it does not exit, SIGKILL it and every unit's group it left."""
    pgids = []
    if v.proc.poll() is None:
        result = v.ctl("status", "--json")
        if result.returncode in (0, 3):
            pgids = [u["pid"] for u in json.loads(result.stdout)["units"] if u.get("pid")]
    try:
        v.terminate(timeout=30)
    except Exception:
        v.kill()
        for pgid in pgids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        raise


# ---- Jupyter behind Caddy -----------------------------------------------------------------


def jupyter_dropin(port: int) -> dict[str, Any]:
    """The shipped jupyter unit moved to ``port``, and made to wait for provisioning."""
    shipped = tomllib.loads((UNITS / "jupyter.toml").read_text())
    command = [arg.replace("=18080", f"={port}") for arg in shipped["command"]]
    assert f"--ServerApp.port={port}" in command, "the shipped command no longer sets the port"
    url = f"http://127.0.0.1:{port}/api"
    return {
        "command": command,
        # Only here: holds Jupyter back so the loading page is there for certain.
        "depends_on": {"provisioning": "exited"},
        "readiness": {"http": url},
        "liveness": {"http": url},
    }


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not JUPYTER_LAB.exists():
        pytest.fail(f"{JUPYTER_LAB} is missing: JupyterLab is in the test extra (make test)")
    tmp = tmp_path_factory.mktemp("jupyter-stack")
    edge, port = free_port(), free_port()
    v, markers, gate = start_stack(
        tmp,
        edge=edge,
        target=port,
        env={"PORTAL_CONFIG": f"localhost:{edge}:{port}:/:Jupyter"},
        dropins={"jupyter": jupyter_dropin(port)},
    )
    stack = Stack(v, tmp, edge, port, markers)
    try:
        v.wait_control()
        v.wait_state("caddy", "ready", timeout=30)
        v.wait_state("provisioning", "running", timeout=30)
        stack.seen["jupyter_state"] = v.state("jupyter")
        stack.seen["browser"] = request(edge, "/lab", {**BEARER, **BROWSER})
        stack.seen["api"] = request(edge, "/api/status", BEARER)
        stack.seen["no_token"] = request(edge, "/lab", BROWSER)
        gate.touch()
        v.wait_state("jupyter", "ready", timeout=60)
        yield stack
    finally:
        stop_stack(v)


def test_jupyter_shows_the_loading_page_until_ready_then_the_real_page(jupyter: Stack) -> None:
    assert jupyter.seen["jupyter_state"] == "waiting"
    page = jupyter.seen["browser"]
    assert page.status == 200  # the interstitial is not a 5xx
    assert page.headers["X-Portal-Placeholder"] == "true"
    assert "Jupyter is starting" in page.body
    api = jupyter.seen["api"]
    assert api.status == 503 and api.headers["Retry-After"] == "1"
    assert jupyter.seen["no_token"].status == 401  # auth before the loading page

    real = request(jupyter.edge, "/lab", {**BEARER, **BROWSER})
    assert real.status == 200, real.body[:500]
    assert "X-Portal-Placeholder" not in real.headers
    assert "<title>JupyterLab</title>" in real.body


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": f"Bearer {TOKEN}x"}, {"Cookie": f"{COOKIE}=nope"}, BROWSER],
    ids=["nothing", "wrong-bearer", "wrong-cookie", "browser"],
)
def test_jupyter_without_the_token_is_refused(jupyter: Stack, headers: dict[str, str]) -> None:
    for target in ("/lab", "/api/status", "/api/contents/"):
        reply = request(jupyter.edge, target, headers)
        assert reply.status == 401, (target, reply.body)


def test_jupyter_api_answers_with_bearer_token(jupyter: Stack) -> None:
    status = request(jupyter.edge, "/api/status", BEARER)
    assert status.status == 200, status.body
    assert "started" in status.json()
    # root_dir is /, so the workspace is reachable by its path.
    (jupyter.tmp / "workspace" / "notes.txt").write_text("hello\n")
    listing = request(jupyter.edge, f"/api/contents{jupyter.tmp}/workspace", BEARER)
    assert listing.status == 200, listing.body
    assert "notes.txt" in [item["name"] for item in listing.json()["content"]]


def test_jupyter_query_token_sets_the_cookie_and_redirects_the_browser(jupyter: Stack) -> None:
    reply = request(jupyter.edge, f"/lab?token={TOKEN}", BROWSER)
    assert reply.status == 302
    assert reply.headers["Location"] == "/lab"
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN};") and "HttpOnly" in cookie
    followed = request(jupyter.edge, "/lab", {**BROWSER, "Cookie": cookie.split(";")[0]})
    assert followed.status == 200
    assert "<title>JupyterLab</title>" in followed.body


def test_sglang_without_a_model_is_skipped_with_the_reason(jupyter: Stack) -> None:
    assert jupyter.v.state("sglang") == "skipped"
    assert jupyter.cause("sglang", "skipped") == "SGLANG_MODEL is not set"
    assert jupyter.v.ctl("ready").returncode == 0  # skipped counts as fine for the container


# ---- SGLang (the stand-in) behind Caddy -----------------------------------------------------


@pytest.fixture(scope="module")
def sglang(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("sglang-stack")
    edge, port = free_port(), free_port()
    server = [
        sys.executable,
        str(FAKE_SGLANG),
        "--fake-detached-scheduler",
        "--fake-load-seconds=0.3",
        "--fake-warmup-seconds=0.3",
        "--fake-token-delay=0.02",
    ]
    weights = tmp / "weights-loaded"
    v, markers, gate = start_stack(
        tmp,
        edge=edge,
        target=port,
        env={
            "PORTAL_CONFIG": f"localhost:{edge}:{port}:/docs:SGLang API",
            "SGLANG_MODEL": "fake-org/Fake-1B",
            "SGLANG_SERVER_CMD": shlex.join(server),
            # The one port setting: the launcher, the unit's probes and Caddy follow it.
            "SGLANG_SERVER_PORT": str(port),
            "SGLANG_ARGS": "--served-model-name fake",
            "FAKE_SGLANG_GATE": str(weights),  # the model loads until this file exists
        },
        dropins={
            "jupyter": {"enabled": False},
            # The detached scheduler is only ever SIGKILLed: keep the wait for it short.
            "sglang": {"stop": {"timeout": "4s"}},
        },
    )
    stack = Stack(v, tmp, edge, port, markers)
    try:
        v.wait_control()
        v.wait_state("caddy", "ready", timeout=30)
        wait_until(lambda: (markers / ".provisioning").exists(), 30, "/.provisioning")
        stack.seen["sglang_while_provisioning"] = v.state("sglang")
        stack.seen["markers_while_provisioning"] = sorted(p.name for p in markers.iterdir())
        stack.seen["api_while_provisioning"] = request(edge, "/v1/models", BEARER)
        gate.touch()
        v.wait_state("provisioning", "exited", timeout=30)
        stack.seen["markers_after"] = sorted(p.name for p in markers.iterdir())
        v.wait_line("sglang", "Load weight begin", timeout=30)
        stack.seen["sglang_while_loading"] = v.state("sglang")
        stack.seen["browser_while_loading"] = request(edge, "/docs", {**BEARER, **BROWSER})
        stack.seen["api_while_loading"] = request(edge, "/v1/models", BEARER)
        weights.touch()
        v.wait_state("sglang", "ready", timeout=30)
        yield stack
    finally:
        stop_stack(v)


def test_sglang_waits_for_provisioning_and_markers_follow_it(sglang: Stack) -> None:
    assert sglang.seen["sglang_while_provisioning"] == "waiting"
    assert sglang.seen["markers_while_provisioning"] == [".provisioning", "provisioning.sh"]
    assert sglang.seen["markers_after"] == [".provisioning_complete", "provisioning.sh"]
    order = [t for t in sglang.v.transitions() if t[0] in ("provisioning", "sglang")]
    assert order.index(("provisioning", "exited")) < order.index(("sglang", "starting"))


def test_sglang_is_launched_from_the_environment(sglang: Stack) -> None:
    lines = sglang.v.unit_lines("sglang")
    command = next(line for line in lines if str(FAKE_SGLANG) in line)
    argv = shlex.split(command)
    assert argv[argv.index("--model-path") + 1] == "fake-org/Fake-1B"
    assert argv[argv.index("--port") + 1] == str(sglang.target)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert (sglang.tmp / "workspace").samefile(Path(f"/proc/{sglang.status('sglang')['pid']}/cwd"))


def test_caddy_serves_the_loading_page_until_sglang_is_ready(sglang: Stack) -> None:
    assert sglang.seen["sglang_while_loading"] == "running"
    for key in ("api_while_provisioning", "api_while_loading"):
        api = sglang.seen[key]
        assert api.status == 503, (key, api.body)
        assert api.headers["X-Portal-Placeholder"] == "true"
        assert api.headers["Retry-After"] == "1"
    page = sglang.seen["browser_while_loading"]
    assert page.status == 200 and "SGLang API is starting" in page.body
    ready = request(sglang.edge, "/v1/models", BEARER)
    assert ready.status == 200 and ready.json()["data"][0]["id"] == "fake"


def chat(port: int, max_tokens: int, headers: dict[str, str]) -> Reply:
    body = {
        "model": "fake",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": max_tokens,
    }
    return request(port, "/v1/chat/completions", headers, method="POST", body=body)


def test_chat_completions_through_caddy_need_the_token(sglang: Stack) -> None:
    assert chat(sglang.edge, 4, {}).status == 401
    assert chat(sglang.edge, 4, {"Authorization": "Bearer wrong"}).status == 401
    reply = chat(sglang.edge, 4, BEARER)
    assert reply.status == 200, reply.body
    answer = reply.json()
    assert answer["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3"
    assert answer["usage"]["completion_tokens"] == 4


def test_restart_drains_requests_and_leaves_no_process_of_the_old_group(sglang: Stack) -> None:
    old = sglang.status("sglang")
    old_group = processes_in_group(old["pid"])
    # The server, its scheduler, and the scheduler that detached from its tree.
    assert len(old_group) >= 3, old_group
    prefills = sum("Prefill batch" in line for line in sglang.v.unit_lines("sglang"))
    replies: list[Reply] = []
    client = threading.Thread(target=lambda: replies.append(chat(sglang.edge, 40, BEARER)))
    client.start()
    try:
        wait_until(
            lambda: sum("Prefill batch" in ln for ln in sglang.v.unit_lines("sglang")) > prefills,
            10,
            "the request to reach the server",
        )
        result = sglang.v.ctl("restart", "sglang", "--timeout", "60", timeout=90)
    finally:
        client.join(30)
    assert result.returncode == 0, result.stdout + result.stderr
    # SIGTERM reached the server alone: it finished the running request, then exited.
    assert replies and replies[0].status == 200, replies
    assert replies[0].json()["usage"]["completion_tokens"] == 40
    assert any("Graceful shutdown complete" in line for line in sglang.v.unit_lines("sglang"))
    # The server itself exited 0; only the detached scheduler needed the group SIGKILL.
    stopped = sglang.cause("sglang", "stopped")
    assert "exit 0" in stopped and "SIGKILL after SIGTERM timed out" in stopped, stopped
    # ...and the restart began only once the whole old group was gone, straggler included.
    assert processes_in_group(old["pid"]) == []
    new = sglang.status("sglang")
    assert new["state"] == "ready" and new["pid"] != old["pid"]
    assert chat(sglang.edge, 2, BEARER).status == 200


def test_caddyfile_is_a_runtime_file_without_the_token(sglang: Stack) -> None:
    caddyfile = sglang.tmp / "run" / "vastinit" / "Caddyfile"
    text = caddyfile.read_text()
    assert f"http://:{sglang.edge}" in text
    assert TOKEN not in text


# ---- readiness that does not depend on the log level (issue 23, item 1) --------------------


def fake_sglang_dist(tmp: Path, version: str) -> Path:
    """A directory whose ``sglang-VERSION.dist-info`` makes ``importlib.metadata`` report that
    version (to the launcher's version lookup and to the stand-in, which then plays it)."""
    site = tmp / "site"
    dist = site / f"sglang-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: sglang\nVersion: {version}\n")
    return site


@pytest.fixture(scope="module", params=["0.5.8", "0.5.23"])
def quiet_sglang(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The stand-in at ``--log-level warning`` (no ready line), playing SGLang 0.5.8 (no
    /ready: the unit's watcher polls /health) or 0.5.23 (it polls /ready)."""
    version = request.param
    tmp = tmp_path_factory.mktemp(f"sglang-quiet-{version}")
    edge, port = free_port(), free_port()
    site = fake_sglang_dist(tmp, version)
    server = [
        sys.executable,
        str(FAKE_SGLANG),
        "--fake-load-seconds=0.5",
        "--fake-warmup-seconds=0.5",
        "--fake-token-delay=0.01",
    ]
    v, markers, gate = start_stack(
        tmp,
        edge=edge,
        target=port,
        env={
            "PORTAL_CONFIG": f"localhost:{edge}:{port}:/docs:SGLang API",
            "SGLANG_MODEL": "fake-org/Fake-1B",
            "SGLANG_SERVER_CMD": shlex.join(server),
            "SGLANG_SERVER_PORT": str(port),
            "SGLANG_ARGS": "--log-level warning --served-model-name fake",
            "FAKE_SGLANG_READY_FILE": str(tmp / "stand-in-ready-at"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        },
        dropins={"jupyter": {"enabled": False}},
    )
    stack = Stack(v, tmp, edge, port, markers)
    stack.seen["version"] = version
    try:
        v.wait_control()
        gate.touch()
        v.wait_state("sglang", "ready", timeout=60)
        yield stack
    finally:
        stop_stack(v)


def test_quiet_sglang_is_ready_within_100ms_of_its_ready_moment(quiet_sglang: Stack) -> None:
    status = quiet_sglang.status("sglang")
    stand_in_ready = float((quiet_sglang.tmp / "stand-in-ready-at").read_text())
    late = status["ready_at"] - stand_in_ready
    print(f"ready {late * 1000:.1f} ms after the stand-in")
    assert 0 <= late < 0.1, f"ready {late * 1000:.0f} ms after the stand-in"
    lines = quiet_sglang.v.unit_lines("sglang")
    assert not any("fired up and ready to roll" in line for line in lines)  # hidden by the level
    path = "/ready" if quiet_sglang.seen["version"] == "0.5.23" else "/health"
    assert status["status_text"] == f"serving: GET {path} 200"
    command = next(line for line in lines if str(FAKE_SGLANG) in line)
    # No /ready in 0.5.8: its /health is made a flag check (not a >= 1 s generation).
    generation_off = "SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=false" in command
    assert generation_off == (path == "/health")


def test_quiet_sglang_serves_through_caddy(quiet_sglang: Stack) -> None:
    reply = chat(quiet_sglang.edge, 3, BEARER)
    assert reply.status == 200, reply.body
    assert reply.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2"
