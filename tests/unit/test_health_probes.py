"""Each probe against the real thing: sockets, an HTTP server, processes, a log pipe."""

from __future__ import annotations

import ctypes
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from vastinit.health.exec_probe import probe_exec
from vastinit.health.http_probe import new_session, probe_http
from vastinit.health.log_probe import LogMatcher
from vastinit.health.notify import NotifySocket, notify_dir
from vastinit.health.result import Outcome
from vastinit.health.tcp_probe import probe_tcp
from vastinit.logs.console import ConsoleSink
from vastinit.logs.mux import LogMux
from vastinit.model import Probe, ProbeKind
from vastinit.proc.group import group_alive
from vastinit.proc.reaper import Reaper, become_subreaper

pytestmark = pytest.mark.anyio
_PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def within(seconds: float, what: str, predicate: Callable[[], object]) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await anyio.sleep(0.01)


# ---- tcp ----------------------------------------------------------------------------------


async def test_tcp_probe_passes_on_a_listening_port_and_names_a_refused_one() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert await probe_tcp(f"127.0.0.1:{port}", 1.0) == Outcome(True, "connected")
    assert await probe_tcp(f"127.0.0.1:{closed_port()}", 1.0) == Outcome(
        False, "connection refused"
    )
    assert not (await probe_tcp("no-port-here", 1.0)).ok


# ---- http ---------------------------------------------------------------------------------


@pytest.fixture
async def http_server() -> AsyncIterator[Callable[[str], str]]:
    """A real HTTP server on 127.0.0.1: path /N answers status N, /hang never answers."""

    async def handle(reader: anyio.abc.ByteStream) -> None:
        async with reader:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await reader.receive()
                data += chunk
            path = data.split(b" ", 2)[1].decode()
            if path == "/hang":
                await anyio.sleep_forever()
            status = int(path.strip("/"))
            extra = "Location: /302\r\n" if 300 <= status < 400 else ""
            await reader.send(
                f"HTTP/1.1 {status} Test\r\nContent-Length: 0\r\n{extra}\r\n".encode()
            )

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield lambda path: f"http://127.0.0.1:{port}{path}"
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("path", "ok", "detail"),
    [
        ("/200", True, "HTTP 200 Test"),
        ("/204", True, "HTTP 204 Test"),
        ("/302", True, "HTTP 302 Test"),  # its Location is itself: following would never end
        ("/404", False, "HTTP 404 Test"),
        ("/503", False, "HTTP 503 Test"),
    ],
)
async def test_http_probe_passes_on_2xx_and_3xx_only(
    http_server: Callable[[str], str], path: str, ok: bool, detail: str
) -> None:
    async with new_session() as session:
        assert await probe_http(session, http_server(path), 2.0) == Outcome(ok, detail)


async def test_http_probe_times_out_on_a_server_that_never_answers(
    http_server: Callable[[str], str],
) -> None:
    async with new_session() as session:
        began = time.monotonic()
        outcome = await probe_http(session, http_server("/hang"), 0.2)
        took = time.monotonic() - began
    assert outcome == Outcome(False, "no answer within 200ms")
    assert 0.19 <= took < 1.0


async def test_http_probe_reports_connection_refused_and_bad_urls() -> None:
    async with new_session() as session:
        refused = await probe_http(session, f"http://127.0.0.1:{closed_port()}/", 1.0)
        bad = await probe_http(session, "http://[::1/", 1.0)
    assert refused == Outcome(False, "connection refused")
    assert not bad.ok


# ---- exec ---------------------------------------------------------------------------------


@pytest.fixture
async def reaper() -> AsyncIterator[Reaper]:
    """The one reaper, with this process as subreaper (as vastinit is), so a probe's
    orphaned grandchildren are reaped here and its group empties at once."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert become_subreaper()
    r = Reaper()
    r.install()
    yield r
    r.uninstall()
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


async def test_exec_probe_passes_on_exit_0_and_shows_the_last_output_line(
    reaper: Reaper,
) -> None:
    env = dict(os.environ)
    assert await probe_exec(["true"], timeout=5, reaper=reaper, env=env) == Outcome(True, "exit 0")
    script = "echo first; echo 'socket not there' >&2; exit 3"
    assert await probe_exec(["sh", "-c", script], timeout=5, reaper=reaper, env=env) == Outcome(
        False, "exit 3: socket not there"
    )
    missing = await probe_exec(["/no/such/probe"], timeout=5, reaper=reaper, env=env)
    assert missing == Outcome(False, "program not found: /no/such/probe")


async def test_exec_probe_runs_in_the_units_environment_and_directory(
    reaper: Reaper, tmp_path: Path
) -> None:
    script = 'test "$PROBE_VAR" = yes && test "$(pwd)" = "$EXPECT_DIR"'
    env = {**os.environ, "PROBE_VAR": "yes", "EXPECT_DIR": str(tmp_path)}
    outcome = await probe_exec(
        ["sh", "-c", script], timeout=5, reaper=reaper, env=env, cwd=str(tmp_path)
    )
    assert outcome.ok, outcome


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def test_exec_probe_timeout_kills_its_whole_group(reaper: Reaper, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $$ $! > {pids}; wait"
    began = time.monotonic()
    outcome = await probe_exec(["sh", "-c", script], timeout=0.3, reaper=reaper, env={})
    assert outcome == Outcome(False, "timed out after 300ms, killed")
    assert time.monotonic() - began < 2.0
    shell, sleeper = _pids(pids)
    assert not group_alive(shell)
    assert not os.path.exists(f"/proc/{sleeper}")


async def test_exec_probe_cancelled_midway_leaves_no_process(
    reaper: Reaper, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    with anyio.move_on_after(0.3):
        await probe_exec(
            ["sh", "-c", f"echo $$ > {pids}; exec sleep 30"], timeout=30, reaper=reaper, env={}
        )
    (shell,) = _pids(pids)
    assert not group_alive(shell)


async def test_exec_probe_kills_what_a_passing_command_left_behind(
    reaper: Reaper, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pids}; exit 0"
    outcome = await probe_exec(["sh", "-c", script], timeout=5, reaper=reaper, env={})
    assert outcome.ok
    (sleeper,) = _pids(pids)
    assert not os.path.exists(f"/proc/{sleeper}")


# ---- log ----------------------------------------------------------------------------------


@pytest.fixture
def mux() -> Iterator[LogMux]:
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    console = ConsoleSink(null, color=False)
    yield LogMux(console, None)
    console.close()
    os.close(null)


async def test_log_matcher_sees_lines_from_a_real_pipe_and_detaches_at_the_match(
    mux: LogMux,
) -> None:
    ulog = mux.unit_log("u", None, 1 << 20, 1)
    matcher = LogMatcher(r"fired up and ready")
    matcher.attach(ulog)
    r, w = os.pipe2(os.O_CLOEXEC)
    ulog.attach(r, "stderr")
    os.write(w, b"loading weights\r\nprogress 50%\rprogress 100%\n")
    os.write(w, b"The server is fired up and ready to roll!\r\nlater line\n")
    with anyio.fail_after(5):
        await matcher.matched.wait()
    assert matcher.line == "The server is fired up and ready to roll!"
    assert matcher.at is not None and abs(matcher.at - time.time()) < 5
    assert ulog._watchers == []  # detached: a ready unit's log path pays nothing
    os.close(w)
    await mux.aclose()


async def test_log_matcher_ignores_non_matching_and_undecodable_lines() -> None:
    matcher = LogMatcher(r"^ready$")
    matcher.feed([b"not ready", b"\xff\xfe", b"ready?"])
    assert not matcher.matched.is_set()
    matcher.feed([b"ready"])
    assert matcher.matched.is_set() and matcher.line == "ready"


# ---- notify -------------------------------------------------------------------------------


async def test_notify_socket_receives_messages_from_any_sender(tmp_path: Path) -> None:
    got: list[dict[str, str]] = []
    sock = NotifySocket(got.append, name="svc", directory=tmp_path)
    assert stat.S_IMODE(os.stat(sock.path).st_mode) == 0o666  # another user may send
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.sendto(b"STATUS=loading", sock.path)
        client.sendto(b"READY=1\nSTATUS=" + b"x" * 5000, sock.path)
    await within(5, "two messages", lambda: len(got) == 2)
    assert got[0] == {"STATUS": "loading"}
    assert got[1]["READY"] == "1" and len(got[1]["STATUS"]) == 1024
    sock.close()
    assert not os.path.exists(sock.path)
    sock.close()  # idempotent


async def test_notify_dir_is_private_but_traversable() -> None:
    d = notify_dir()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o711
    sock = NotifySocket(lambda _: None, name="x" * 200)
    assert len(sock.path.encode()) < 108 and os.path.dirname(sock.path) == str(d)
    sock.close()


@pytest.mark.parametrize(
    ("kind", "target", "interval", "expected"),
    [
        # http/tcp: a loopback connect is cheap; 50 ms apart while starting.
        (ProbeKind.HTTP, "http://127.0.0.1:1/", 1.0, [0.05] * 5),
        (ProbeKind.TCP, "127.0.0.1:1", 30.0, [0.05] * 5),
        # exec: a process each time: doubling up to the interval.
        (ProbeKind.EXEC, ("true",), 0.5, [0.05, 0.1, 0.2, 0.4, 0.5]),
        # never more often than the interval asks
        (ProbeKind.HTTP, "http://127.0.0.1:1/", 0.02, [0.02] * 5),
    ],
)
def test_readiness_is_probed_fast_while_starting(
    kind: ProbeKind, target: str | tuple[str, ...], interval: float, expected: list[float]
) -> None:
    from itertools import islice

    from vastinit.health.hooks import starting_delays

    delays = list(islice(starting_delays(Probe(kind, target, interval=interval)), 5))
    assert delays == pytest.approx(expected)
