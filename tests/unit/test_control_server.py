"""The control server on a real Unix socket, driving a stand-in ``Commands`` (not the engine).

The engine's side is covered by tests/integration/test_ctl.py; here the socket file's life,
the JSON error mapping and what happens when clients hang up are pinned down.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from vastinit.control.client import Client, CtlError
from vastinit.control.protocol import (
    ActionResult,
    CommandRefused,
    LogEntry,
    ReadyEntry,
    ReloadResult,
    ShowResult,
    SignalResult,
    TransientResult,
)
from vastinit.control.server import ControlSocket, serve_control
from vastinit.errors import ConfigError, ConfigProblem, ControlError, UnknownUnitError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Feed:
    """A log follow that yields one line, then waits until closed."""

    def __init__(self) -> None:
        self.closed = anyio.Event()
        self.sent = False

    async def next_batch(self) -> list[LogEntry]:
        if not self.sent:
            self.sent = True
            return [{"ts": 1.0, "unit": "web", "stream": "stdout", "text": "hi"}]
        await self.closed.wait()
        return []

    def close(self) -> None:
        self.closed.set()


class Stub:
    """Commands whose answers the tests choose; it records what the server asked."""

    def __init__(self) -> None:
        self.waits_cancelled = 0
        self.waiting = anyio.Event()
        self.feeds: list[Feed] = []

    async def scan_processes(self) -> None:
        pass

    def status(self, names: Sequence[str]) -> list[dict[str, Any]]:
        if list(names) == ["boom"]:
            raise RuntimeError("kaboom")
        if list(names) == ["nope"]:
            raise UnknownUnitError("no unit 'nope' (did you mean nape?)")
        return [{"name": n, "state": "ready"} for n in names or ["web"]]

    async def start(
        self, names: Sequence[str], *, wait: bool, timeout: float | None
    ) -> list[ActionResult]:
        return [ActionResult(n, "ready", True, "ready", f"wait={wait} t={timeout}") for n in names]

    stop = restart = start

    async def ready(
        self, names: Sequence[str], *, wait: bool, timeout: float | None
    ) -> list[ReadyEntry]:
        try:
            self.waiting.set()
            await anyio.sleep_forever()
        except BaseException:
            self.waits_cancelled += 1
            raise
        return []

    def signal(self, name: str, signum: int) -> SignalResult:
        raise CommandRefused(f"unit {name} has no running process", code="not_running", status=409)

    async def reload(self, *, dry_run: bool) -> ReloadResult:
        if not dry_run:
            raise ConfigError([ConfigProblem("/u/a.toml", 3, "a", "bad duration 'soon'")])
        return ReloadResult(True, added=["new"])

    def show(self, name: str) -> ShowResult:
        return ShowResult(name, "/u/web.toml", 'command = "x"\n')

    def logs_tail(self, names: Sequence[str], n: int) -> list[LogEntry]:
        return [{"ts": 1.0, "unit": "web", "stream": "stdout", "text": f"n={n}"}]

    def logs_follow(self, names: Sequence[str], backlog: int) -> Feed:
        feed = Feed()
        self.feeds.append(feed)
        return feed

    def shutdown(self) -> None:
        pass

    async def add_transient(self, name: str, toml: str) -> TransientResult:
        if name == "web":
            raise CommandRefused("unit web already exists", code="unit_exists", status=409)
        if "essential" in toml:
            problem = ConfigProblem(f"<transient {name}>", 2, name, "cannot be essential")
            raise ConfigError([problem])
        return TransientResult(name, "inactive", f"toml={toml!r}")

    async def remove_transient(self, name: str) -> TransientResult:
        if name == "web":
            raise CommandRefused("unit web is not transient", code="not_transient", status=409)
        return TransientResult(name, "inactive", "removed")


# ---- the socket file --------------------------------------------------------------------


def test_bind_creates_the_directory_and_the_socket_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "run" / "deeper" / "vastinit.sock"
    listener = ControlSocket.bind(path)
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and st.st_mode & 0o777 == 0o660
    finally:
        listener.close()
    assert not path.exists()
    private = ControlSocket.bind(path, mode=0o600)
    assert os.stat(path).st_mode & 0o777 == 0o600
    private.close()


def test_bind_replaces_a_stale_socket_and_refuses_a_live_one(tmp_path: Path) -> None:
    path = tmp_path / "vastinit.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # bound, never listening: what a crashed run leaves
    listener = ControlSocket.bind(path)
    try:
        with pytest.raises(ControlError, match=f"^another vastinit is serving {path}$"):
            ControlSocket.bind(path)
        assert path.exists()  # the refused attempt did not touch the live socket
    finally:
        listener.close()


def test_bind_refuses_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "vastinit.sock"
    path.write_text("precious")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        ControlSocket.bind(path)
    assert path.read_text() == "precious"


def test_close_leaves_a_socket_file_that_replaced_ours(tmp_path: Path) -> None:
    path = tmp_path / "vastinit.sock"
    listener = ControlSocket.bind(path)
    path.unlink()
    newer = ControlSocket.bind(path)
    listener.close()
    assert path.exists()
    newer.close()
    assert not path.exists()


# ---- serving --------------------------------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Stub, Client, Path]]:
    stub = Stub()
    path = tmp_path / "ctl.sock"
    listener = ControlSocket.bind(path)
    async with anyio.create_task_group() as tg:
        await tg.start(serve_control, stub, listener)
        yield stub, Client(str(path)), path
        tg.cancel_scope.cancel()
    assert not path.exists()  # removed at exit


async def call(fn: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(fn, *args)


async def error_of(fn: Any, *args: Any) -> CtlError:
    try:
        await call(fn, *args)
    except CtlError as exc:
        return exc
    raise AssertionError("no error")


async def test_errors_come_back_as_one_json_line_with_a_code(
    served: tuple[Stub, Client, Path],
) -> None:
    _, client, _ = served
    unknown = await error_of(client.get, "/v1/status?unit=nope")
    assert (unknown.status, unknown.code) == (404, "unknown_unit")
    assert str(unknown) == "no unit 'nope' (did you mean nape?)"
    refused = await error_of(client.post, "/v1/signal", {"unit": "web", "signal": "HUP"})
    assert (refused.status, refused.code) == (409, "not_running")
    invalid = await error_of(client.post, "/v1/reload", {})
    assert (invalid.status, invalid.code) == (422, "invalid_units")
    assert invalid.reply["problems"] == ["/u/a.toml:3: unit a: bad duration 'soon'"]
    assert str(invalid) == "1 problem in unit files; nothing changed"
    crash = await error_of(client.get, "/v1/status?unit=boom")
    assert (crash.status, crash.code) == (500, "internal")
    assert "kaboom" in str(crash)
    method = await error_of(client.post, "/v1/status", {})
    assert (method.status, method.code) == (405, "method_not_allowed")
    empty = await error_of(client.post, "/v1/start", {"units": []})
    assert (empty.status, empty.code, str(empty)) == (
        400,
        "bad_request",
        "start needs at least one unit name",
    )
    # After all that, it still serves.
    assert (await call(client.get, "/v1/status"))["units"] == [{"name": "web", "state": "ready"}]


async def test_requests_are_parsed_into_the_commands_arguments(
    served: tuple[Stub, Client, Path],
) -> None:
    _, client, _ = served
    reply = await call(client.post, "/v1/restart", {"units": ["a", "b"], "timeout": 2})
    assert reply["ok"] is True
    assert [r["cause"] for r in reply["results"]] == ["wait=True t=2.0", "wait=True t=2.0"]
    assert (await call(client.get, "/v1/logs?n=7"))["lines"][0]["text"] == "n=7"
    assert (await call(client.get, "/v1/units/web"))["toml"] == 'command = "x"\n'
    avail = await call(client.get, "/v1/avail")
    assert avail["units"] == [
        {"name": "new", "state": None, "loaded": False, "on_disk": True},
        {"name": "web", "state": "ready", "loaded": True, "on_disk": True},
    ]


async def test_a_client_hanging_up_cancels_its_wait(served: tuple[Stub, Client, Path]) -> None:
    stub, _, path = served

    def ask_and_hang_up() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            sock.sendall(b"GET /v1/ready?wait=1 HTTP/1.1\r\nHost: x\r\n\r\n")

    await call(ask_and_hang_up)
    with anyio.fail_after(10):
        await stub.waiting.wait()
        while stub.waits_cancelled == 0:
            await anyio.sleep(0.01)


async def test_followers_get_a_clean_end_of_stream_when_the_server_stops(tmp_path: Path) -> None:
    stub = Stub()
    path = tmp_path / "ctl.sock"
    listener = ControlSocket.bind(path)
    got: list[list[LogEntry]] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            got.extend(Client(str(path)).stream("/v1/logs?follow=1"))
        except BaseException as exc:
            errors.append(exc)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as outer, anyio.create_task_group() as server:
            await server.start(serve_control, stub, listener)
            outer.start_soon(anyio.to_thread.run_sync, follow)
            while not got:
                await anyio.sleep(0.01)
            server.cancel_scope.cancel()
    assert errors == []
    assert [e["text"] for batch in got for e in batch] == ["hi"]
    assert all(feed.closed.is_set() for feed in stub.feeds)
    assert not path.exists()


async def test_malformed_body_is_a_json_400(served: tuple[Stub, Client, Path]) -> None:
    _, _, path = served

    def raw(body: bytes) -> tuple[int, Any]:
        head = "POST /v1/stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            sock.sendall(head.encode() + body)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        status_line, _, rest = data.partition(b"\r\n")
        return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])

    for body in (b"{", b'"units"', b'{"units": [1]}', b'{"units": ["a"], "wait": "yes"}'):
        status, reply = await call(raw, body)
        assert status == 400 and reply["code"] == "bad_request", (body, reply)
    status, reply = await call(raw, b'{"units": ["a"], "x": "' + b"y" * 70_000 + b'"}')
    assert status == 400 and "too large" in reply["error"]
    # Hostile but small: deep nesting (json.loads raised RecursionError -> 500 + traceback),
    # bad UTF-8, a 5,000-digit number. Each is a 400, and the server keeps serving.
    hostile = [b"[" * 60_000, b'{"units": ' + b"[" * 20_000, b'{"units": ["\xff"]}']
    hostile.append(b'{"timeout": ' + b"9" * 5000 + b"}")
    for body in hostile:
        status, reply = await call(raw, body)
        assert status == 400 and reply["code"] == "bad_request", (body[:30], reply)
    assert "nested too deeply" in (await call(raw, b"[" * 60_000))[1]["error"]
    status, reply = await call(raw, b'{"units": ["a"]}')
    assert status == 200, reply


async def test_odd_requests_never_get_a_500(served: tuple[Stub, Client, Path]) -> None:
    """What a client sends never reaches the 500 path (an unexpected exception) of an endpoint."""
    _, _, path = served

    def send(request: bytes) -> int:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1])

    def post(target: str, body: bytes) -> bytes:
        head = f"POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        return head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body

    def get(target: str) -> bytes:
        return f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()

    requests = [
        get("/v1/status?unit=%ff%fe"),
        get("/v1/logs?n=" + "9" * 5000),
        get("/v1/logs?n=-1"),
        get("/v1/ready?timeout=nan"),
        get("/v1/ready?timeout=-inf"),
        get("/v1/units/%00"),
        get("/v1/nope"),
        post("/v1/start", b'{"units": [{}], "timeout": 1e999999}'),
        post("/v1/start", b'{"units": ["web"], "timeout": "NaN"}'),
        post("/v1/signal", b'{"unit": "web", "signal": 99999999999999999999}'),
        post("/v1/signal", b'{"unit": ["web"], "signal": "HUP"}'),
        post("/v1/reload", b'{"dry_run": [[[[]]]]}'),
        post("/v1/shutdown", b"[]"),
    ]
    for request in requests:
        status = await call(send, request)
        assert status < 500, (request[:60], status)


async def test_transient_units_are_created_with_post_and_removed_with_delete(
    served: tuple[Stub, Client, Path],
) -> None:
    _, client, _ = served
    added = await call(client.post, "/v1/units", {"name": "t", "toml": "command = 1"})
    assert added == {
        "name": "t",
        "state": "inactive",
        "cause": "toml='command = 1'",
        "transient": True,
    }
    removed = await call(client.delete, "/v1/units/t")
    assert removed["name"] == "t" and removed["cause"] == "removed"
    invalid = await error_of(client.post, "/v1/units", {"name": "t", "toml": "essential"})
    assert (invalid.status, invalid.code) == (422, "invalid_units")
    assert str(invalid) == "1 problem in transient unit t; not added"
    assert invalid.reply["problems"] == ["<transient t>:2: unit t: cannot be essential"]
    taken = await error_of(client.post, "/v1/units", {"name": "web", "toml": ""})
    assert (taken.status, taken.code) == (409, "unit_exists")
    filed = await error_of(client.delete, "/v1/units/web")
    assert (filed.status, filed.code) == (409, "not_transient")
    for body in ({"toml": ""}, {"name": "t"}, {"name": "t", "toml": 1}, {"name": "", "toml": ""}):
        bad = await error_of(client.post, "/v1/units", body)
        assert (bad.status, bad.code) == (400, "bad_request"), body
    extra = await error_of(client.post, "/v1/units", {"name": "t", "toml": "", "user": "root"})
    assert (extra.status, extra.code) == (400, "bad_request")
