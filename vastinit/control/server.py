"""The control server: aiohttp on the Unix socket, JSON in and out, calling only ``Commands``.

Every reply is JSON (the wire format is at the top of ``vastinit.control.protocol``); a bad
request gets a JSON 400 and the server goes on serving. Waiting verbs hold their request
open until the supervisor's state settles; ``logs?follow=1`` streams NDJSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskGroup, TaskStatus

from vastinit import __version__
from vastinit.config.values import parse_signal
from vastinit.control.protocol import (
    API,
    DEFAULT_SOCKET_MODE,
    MAX_BODY,
    CommandRefused,
    Commands,
    EventFeed,
    LogFollow,
)
from vastinit.control.xmlrpc import RPCFault, SupervisorRPC
from vastinit.errors import ConfigError, ControlError, UnknownUnitError
from vastinit.paths import ensure_private_dir, is_private_runtime_dir

log = structlog.get_logger("vastinit")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DEFAULT_LOG_LINES = 100
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


# ---- the socket file ------------------------------------------------------------------


class ControlSocket:
    """A listening Unix socket at ``path``; ``close`` removes the file if it is still ours."""

    def __init__(self, path: Path, sock: socket.socket) -> None:
        self.path = path
        self.sock = sock
        st = os.stat(path)
        self._ident = (st.st_dev, st.st_ino)

    @classmethod
    def bind(cls, path: Path, *, mode: int = DEFAULT_SOCKET_MODE) -> ControlSocket:
        """Bind and listen at ``path`` (creating its directory) with ``mode``; a stale socket
        file is replaced; ControlError if a live server holds it or it cannot be bound."""
        try:
            if is_private_runtime_dir(path.parent):
                ensure_private_dir(path.parent)  # 0700, ours, or ControlError
            path.parent.mkdir(parents=True, exist_ok=True)
            _clear_stale(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # Born with the final mode: no moment in which others could connect.
            old_umask = os.umask(0o777 & ~mode)
            try:
                sock.bind(str(path))
            except OSError:
                sock.close()
                raise
            finally:
                os.umask(old_umask)
            os.chmod(path, mode)
            sock.listen(256)  # 100 clients at once must not meet a full backlog
            sock.setblocking(False)
        except ControlError:
            raise
        except OSError as exc:
            raise ControlError(
                f"cannot open the control socket {path}: {exc.strerror or exc}"
            ) from None
        return cls(path, sock)

    def close(self) -> None:
        """Close the socket and remove its file, unless another process has replaced it."""
        self.sock.close()
        try:
            st = os.stat(self.path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == self._ident:
            self.path.unlink(missing_ok=True)


def _clear_stale(path: Path) -> None:
    """Remove a socket file nobody listens on (a crashed run); refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} exists and is not a socket; remove it or pass --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)  # stale: its server died without removing it
        return
    except FileNotFoundError:
        return
    except PermissionError:
        raise ControlError(f"cannot check the control socket {path}: permission denied") from None
    finally:
        probe.close()
    raise ControlError(f"another vastinit is serving {path}")


# ---- request parsing -----------------------------------------------------------------


class _BadRequest(Exception):
    """The request is malformed; the message says how."""


def _query_bool(request: web.Request, key: str) -> bool:
    value = request.query.get(key, "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _BadRequest(f"{key} must be 1 or 0, not {value!r}")


def _query_timeout(request: web.Request) -> float | None:
    value = request.query.get("timeout", "")
    if value == "":
        return None
    try:
        return _timeout(float(value))
    except ValueError:
        raise _BadRequest(f"timeout must be a number of seconds, not {value!r}") from None


def _timeout(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise _BadRequest(f"timeout must be a number of seconds >= 0 or null, not {value!r}")
    return float(value)


def _query_int(request: web.Request, key: str, default: int) -> int:
    value = request.query.get(key)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise _BadRequest(f"{key} must be a whole number, not {value!r}") from None
    if number < 0:
        raise _BadRequest(f"{key} must be >= 0, not {number}")
    return number


def _query_rate(request: web.Request, key: str) -> float | None:
    value = request.query.get(key, "")
    if value == "":
        return None
    try:
        return float(value)  # its range is the supervisor's to check
    except ValueError:
        raise _BadRequest(f"{key} must be a number of lines per second, not {value!r}") from None


def _names(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _BadRequest("units must be a list of unit names")
    return value


async def _body(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The request's JSON object body ({} if none), with only ``allowed`` keys."""
    raw = await request.read()  # HTTPRequestEntityTooLarge past MAX_BODY
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:  # bad syntax, bad UTF-8, an int of more than 4300 digits
        raise _BadRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # `[` * 100000: the parser gives up before MAX_BODY does
        raise _BadRequest("request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise _BadRequest("request body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise _BadRequest(f"unknown field {unknown[0]!r}; expected one of {sorted(allowed)}")
    return data


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def _error(status: int, code: str, message: str, **extra: object) -> web.Response:
    return _json({"error": message, "code": code, **extra}, status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes one JSON error; nothing a client sends stops the server."""
    try:
        return await handler(request)
    except _BadRequest as exc:
        return _error(400, "bad_request", str(exc))
    except UnknownUnitError as exc:
        return _error(404, "unknown_unit", str(exc))
    except CommandRefused as exc:
        return _error(exc.status, exc.code, str(exc))
    except ConfigError as exc:
        count = len(exc.problems)
        return _error(
            422,
            "invalid_units",
            f"{count} problem{'s' * (count != 1)} in unit files; nothing changed",
            problems=[str(p) for p in exc.problems],
        )
    except web.HTTPException as exc:
        if exc.status == 413:
            return _error(400, "bad_request", f"request too large (at most {MAX_BODY} bytes)")
        if exc.status == 404:
            return _error(404, "not_found", f"no such endpoint: {request.method} {request.path}")
        if exc.status == 405:
            return _error(405, "method_not_allowed", f"{request.method} {request.path}")
        return _error(exc.status, "http_error", exc.reason)
    except Exception as exc:
        log.exception("control request failed", method=request.method, path=request.path)
        return _error(500, "internal", f"internal error: {type(exc).__name__}: {exc}")


# ---- endpoints --------------------------------------------------------------------------


class _Endpoints:
    """The HTTP face of ``Commands``: parse, call, serialise."""

    def __init__(self, commands: Commands) -> None:
        self.commands = commands
        self.rpc = SupervisorRPC(commands)
        self.follows: set[LogFollow] = set()
        self.event_feeds: set[EventFeed] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{API}/version", self.version),
            web.get(f"{API}/status", self.status),
            web.get(f"{API}/units/{{name}}", self.show),
            web.get(f"{API}/logs", self.logs),
            web.get(f"{API}/events", self.events),
            web.get(f"{API}/ready", self.ready),
            web.get(f"{API}/avail", self.avail),
            web.post(f"{API}/start", self.start),
            web.post(f"{API}/stop", self.stop),
            web.post(f"{API}/restart", self.restart),
            web.post(f"{API}/signal", self.signal),
            web.post(f"{API}/reload", self.reload),
            web.post(f"{API}/shutdown", self.shutdown),
            *self.transient_routes(),
            *self.supervisor_routes(),
        ]

    # ---- supervisord's XML-RPC API and log tails (vastinit.control.xmlrpc) -------------

    def supervisor_routes(self) -> list[web.RouteDef]:
        return [
            web.post("/RPC2", self.rpc2),
            web.get("/logtail/{name}", self.logtail),
            web.get("/logtail/{name}/{channel}", self.logtail),
            web.get("/mainlogtail", self.mainlogtail),
        ]

    async def rpc2(self, request: web.Request) -> web.Response:
        body = await request.read()
        reply = await self.rpc.handle(body)
        return web.Response(body=reply, content_type="text/xml")

    async def logtail(self, request: web.Request) -> web.StreamResponse:
        """supervisorctl's ``tail -f``: the last KiB of the unit's output, then what follows."""
        channel = request.match_info.get("channel", "stdout")
        if channel not in ("stdout", "stderr"):
            raise web.HTTPNotFound()
        try:
            unit = self.rpc._single(request.match_info["name"])
        except RPCFault:
            raise web.HTTPNotFound() from None
        feed = self.commands.logs_follow([unit["name"]], 0)
        self.follows.add(feed)
        response = web.StreamResponse(headers={"Content-Type": "text/plain;charset=utf-8"})
        try:
            await response.prepare(request)
            backlog = self.rpc.log_text(unit["name"], channel).encode()[-1024:]
            await response.write(backlog)
            while batch := await feed.next_batch():
                lines = [e for e in batch if channel == "stdout" or e.get("stream") == "stderr"]
                data = "".join(f"{e['text']}\n" for e in lines).encode()
                if data and not await _follow_write(request, response, data, feed):
                    return response
            await response.write_eof()
        except ConnectionError:
            pass
        finally:
            feed.close()
            self.follows.discard(feed)
        return response

    async def mainlogtail(self, request: web.Request) -> web.Response:
        """vastinit's own log is its stdout (the container log): nothing to tail here."""
        return web.Response(text="", content_type="text/plain")

    # ---- transient units (POST /v1/units, DELETE /v1/units/NAME) ----------------------

    def transient_routes(self) -> list[web.RouteDef]:
        return [
            web.post(f"{API}/units", self.add_transient),
            web.delete(f"{API}/units/{{name}}", self.remove_transient),
        ]

    async def add_transient(self, request: web.Request) -> web.Response:
        body = await _body(request, frozenset({"name", "toml"}))
        name, text = body.get("name"), body.get("toml")
        if not isinstance(name, str) or not name:
            raise _BadRequest("name must be a unit name")
        if not isinstance(text, str):
            raise _BadRequest("toml must be the unit file's text (a string)")
        try:
            result = await self.commands.add_transient(name, text)
        except ConfigError as exc:
            count = len(exc.problems)
            return _error(
                422,
                "invalid_units",
                f"{count} problem{'s' * (count != 1)} in transient unit {name}; not added",
                problems=[str(p) for p in exc.problems],
            )
        return _json(dataclasses.asdict(result), 201)

    async def remove_transient(self, request: web.Request) -> web.Response:
        await _body(request, frozenset())
        result = await self.commands.remove_transient(request.match_info["name"])
        return _json(dataclasses.asdict(result))

    async def version(self, request: web.Request) -> web.Response:
        return _json(
            {"version": __version__, "pid": os.getpid(), "events": self.commands.events_info()}
        )

    async def status(self, request: web.Request) -> web.Response:
        names = request.query.getall("unit", [])
        self.commands.status(names)  # unknown names are refused before any scan
        await self.commands.scan_processes()
        units = self.commands.status(names)
        return _json({"pid": os.getpid(), "now": time.time(), "units": units})

    async def show(self, request: web.Request) -> web.Response:
        return _json(dataclasses.asdict(self.commands.show(request.match_info["name"])))

    async def ready(self, request: web.Request) -> web.Response:
        entries = await self.commands.ready(
            request.query.getall("unit", []),
            wait=_query_bool(request, "wait"),
            timeout=_query_timeout(request),
        )
        return _json(
            {
                "ready": all(e.ready for e in entries),
                "units": [dataclasses.asdict(e) for e in entries],
            }
        )

    async def avail(self, request: web.Request) -> web.Response:
        loaded = {s["name"]: s["state"] for s in self.commands.status([])}
        problems: list[str] = []
        on_disk = set(loaded)
        try:
            plan = await self.commands.reload(dry_run=True)
            on_disk = (on_disk | set(plan.added)) - set(plan.removed)
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
        units = [
            {"name": n, "state": loaded.get(n), "loaded": n in loaded, "on_disk": n in on_disk}
            for n in sorted(set(loaded) | on_disk)
        ]
        return _json({"units": units, "problems": problems})

    async def _action(self, request: web.Request, verb: str) -> web.Response:
        body = await _body(request, frozenset({"units", "wait", "timeout"}))
        names = _names(body.get("units"))
        if not names:
            raise _BadRequest(f"{verb} needs at least one unit name")
        wait = body.get("wait", True)
        if not isinstance(wait, bool):
            raise _BadRequest("wait must be true or false")
        timeout = _timeout(body.get("timeout"))
        method = getattr(self.commands, verb)
        results = await method(names, wait=wait, timeout=timeout)
        return _json(
            {"ok": all(r.ok for r in results), "results": [dataclasses.asdict(r) for r in results]}
        )

    async def start(self, request: web.Request) -> web.Response:
        return await self._action(request, "start")

    async def stop(self, request: web.Request) -> web.Response:
        return await self._action(request, "stop")

    async def restart(self, request: web.Request) -> web.Response:
        return await self._action(request, "restart")

    async def signal(self, request: web.Request) -> web.Response:
        body = await _body(request, frozenset({"unit", "signal"}))
        unit, sig = body.get("unit"), body.get("signal")
        if not isinstance(unit, str) or not unit:
            raise _BadRequest("unit must be a unit name")
        if isinstance(sig, bool) or not isinstance(sig, str | int):
            raise _BadRequest("signal must be a name (TERM, SIGHUP) or a number")
        try:
            signum = parse_signal(sig)
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        return _json(dataclasses.asdict(self.commands.signal(unit, signum)))

    async def reload(self, request: web.Request) -> web.Response:
        body = await _body(request, frozenset({"dry_run"}))
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise _BadRequest("dry_run must be true or false")
        return _json(dataclasses.asdict(await self.commands.reload(dry_run=dry_run)))

    async def shutdown(self, request: web.Request) -> web.Response:
        await _body(request, frozenset())
        self.commands.shutdown()
        return _json({"ok": True}, 202)

    async def logs(self, request: web.Request) -> web.StreamResponse:
        names = request.query.getall("unit", [])
        n = _query_int(request, "n", DEFAULT_LOG_LINES)
        if not _query_bool(request, "follow"):
            return _json({"lines": self.commands.logs_tail(names, n)})
        feed = self.commands.logs_follow(names, n)  # errors here still get a JSON reply
        self.follows.add(feed)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            while batch := await feed.next_batch():
                # One write per batch (at most ~64 KiB of lines, so a follower holds little
                # beyond its queue): a burst of lines costs one chunk, not one per line.
                data = "".join(json.dumps(e) + "\n" for e in batch).encode()
                if not await _follow_write(request, response, data, feed):
                    return response  # cut off: the connection is gone
            await response.write_eof()
        except ConnectionError:
            pass  # the follower went away; its subscription is closed below
        finally:
            feed.close()
            self.follows.discard(feed)
        return response

    async def events(self, request: web.Request) -> web.StreamResponse:
        """The event stream: NDJSON, one event a line, until the client goes away."""
        since_text = request.query.get("since")
        since = None if since_text is None else _query_int(request, "since", 0)
        feed = self.commands.events_subscribe(
            since=since,
            epoch=request.query.get("epoch") or None,
            types=request.query.getall("type", []),
            units=request.query.getall("unit", []),
            logs=request.query.getall("logs", []),
            backlog=_query_int(request, "n", 0),
            log_rate=_query_rate(request, "log_rate"),
        )  # errors here still get a JSON reply
        self.event_feeds.add(feed)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            async with anyio.create_task_group() as tg:
                tg.start_soon(feed.pump)
                while batch := await feed.next_batch():
                    if not await _event_write(request, response, b"".join(batch), feed):
                        tg.cancel_scope.cancel()
                        return response  # dropped and cut off: the connection is gone
                tg.cancel_scope.cancel()
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away; its subscription is closed below
        finally:
            feed.close()
            self.event_feeds.discard(feed)
        return response


FOLLOW_CUTOFF_S = 10.0
"""A follower whose queue overflowed and whose socket took no byte for this long is cut off."""


async def _follow_write(
    request: web.Request, response: web.StreamResponse, data: bytes, feed: LogFollow
) -> bool:
    """Write ``data`` to a follower; False if it was cut off for not reading.

    A write that fits under the transport's high-water mark never waits.  Otherwise, while
    it waits, a watchdog checks once a second whether the socket took bytes; after
    FOLLOW_CUTOFF_S without progress, if the follower's queue overflowed meanwhile (it is
    losing lines, not just idle), it gets a final notice line and the connection is aborted,
    dropping what its transport holds.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("follower went away")
    if transport.get_write_buffer_size() + len(data) <= transport.get_write_buffer_limits()[1]:
        await response.write(data)
        return True
    dropped_before = getattr(feed, "dropped", 0)
    cut = False

    async def watch(scope: anyio.CancelScope) -> None:
        nonlocal cut
        last = transport.get_write_buffer_size()
        since = time.monotonic()
        while True:
            await anyio.sleep(1.0)
            size = transport.get_write_buffer_size()
            if size < last:
                last, since = size, time.monotonic()
            elif (
                time.monotonic() - since >= FOLLOW_CUTOFF_S
                and getattr(feed, "dropped", 0) > dropped_before
            ):
                cut = True
                scope.cancel()
                return
            last = min(last, size)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, tg.cancel_scope)
        await response.write(data)
        tg.cancel_scope.cancel()
    if not cut:
        return True
    lost = getattr(feed, "dropped", 0)
    text = (
        f"vastinit: follower cut off: not reading for {FOLLOW_CUTOFF_S:g} s, {lost} lines dropped"
    )
    entry = {"ts": time.time(), "unit": "vastinit", "stream": "stdout", "text": text}
    line = (json.dumps(entry) + "\n").encode()
    # Straight onto the transport, in the chunked framing aiohttp uses for this response.
    transport.write(b"%x\r\n%s\r\n" % (len(line), line))
    with anyio.move_on_after(1.0):
        while transport.get_write_buffer_size() and not transport.is_closing():
            await anyio.sleep(0.05)
    log.warning("log follower cut off", reason="not reading", lines_dropped=lost)
    transport.abort()  # frees what it holds; the client sees the connection end
    return False


async def _event_write(
    request: web.Request, response: web.StreamResponse, data: bytes, feed: EventFeed
) -> bool:
    """Write ``data`` to an event client; False if the supervisor dropped the client while
    the write waited on it (it then gets its final ``dropped`` event, if its socket takes
    it within a second, and the connection is aborted, freeing what the transport holds)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("event client went away")
    if transport.get_write_buffer_size() + len(data) <= transport.get_write_buffer_limits()[1]:
        await response.write(data)
        return True
    interrupted = False
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            nonlocal interrupted
            await feed.wait_gone()
            interrupted = True
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        await response.write(data)
        tg.cancel_scope.cancel()
    if not interrupted:
        return True
    if feed.dropped_reason is None:
        # Closed (shutdown) while the write waited: the chunk may be half written, so the
        # stream cannot go on; end the connection.
        transport.abort()
        return False
    last = b"".join(await feed.next_batch())  # the ``dropped`` event
    if last:
        # Straight onto the transport, in the chunked framing aiohttp uses for this response.
        transport.write(b"%x\r\n%s\r\n" % (len(last), last))
    with anyio.move_on_after(1.0):
        while transport.get_write_buffer_size() and not transport.is_closing():
            await anyio.sleep(0.05)
    transport.abort()
    return False


# ---- serving ------------------------------------------------------------------------------


async def serve_control(
    commands: Commands,
    listener: ControlSocket,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``commands`` on ``listener`` until cancelled; then end every follower, finish
    the requests in flight (briefly) and remove the socket file."""
    endpoints = _Endpoints(commands)
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_errors])
    app.add_routes(endpoints.routes())
    runner = web.AppRunner(
        app,
        access_log=None,
        # A client that hangs up (Ctrl-C on `ctl ready --wait`) must not leave its wait behind.
        handler_cancellation=True,
        shutdown_timeout=2.0,
    )
    await runner.setup()
    try:
        site = web.SockSite(runner, listener.sock, backlog=256)
        await site.start()
        log.info("control socket ready", socket=str(listener.path))
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            for feed in list(endpoints.follows):
                feed.close()  # followers get a clean end of stream, not a cut connection
            for events in list(endpoints.event_feeds):
                events.close()
            await runner.cleanup()
        listener.close()


async def start_control_server(tg: TaskGroup, commands: Commands, listener: ControlSocket) -> None:
    """Start serving ``commands`` on ``listener`` in ``tg``; returns once it is accepting."""
    await tg.start(serve_control, commands, listener)
