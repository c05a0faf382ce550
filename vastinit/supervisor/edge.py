"""The edge follows the units: the owner of the public routes inside vastinit.

- **Readiness gate.** Caddy proxies a route whose target is a unit only while
  ``EDGE_DIR/ready/UNIT`` exists (its ``file`` matcher stats it per request). This module
  creates the marker the moment the unit enters ``ready`` and removes it the moment it
  leaves (a transition listener: no polling, no Caddy reload); requests already proxied,
  a streaming answer included, are not touched.
- **Live routes.** At start and after every reload (or transient unit added or removed) it
  recomputes the routes from the caddy unit's environment (``PORTAL_CONFIG``) and the
  units' ``[[expose]]``, and hands Caddy the new Caddyfile through its admin API on a unix
  socket in the 0700 edge directory (``POST /load``: no restart, open connections kept).
  A configuration Caddy refuses leaves the old one serving; the error is logged, shown in
  the caddy unit's status and published.
- **``route`` events** on the event stream: each routed unit's moves (port, unit, ready,
  state, reason) and the route set changing.
- **Status projection** (``EDGE_DIR/status.sock``, read-only, HTTP): the loading page and
  its server-sent events, fed by the ``route`` events of the in-process hub. Caddy proxies
  ``/.vastinit/status`` and unready browser requests there after its auth check. It is
  never the control socket: nothing here changes anything.
"""

from __future__ import annotations

import contextlib
import html
import itertools
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskStatus

from vastinit.config.expand import expand
from vastinit.errors import VastinitError
from vastinit.logs.ring import LogSubscription
from vastinit.model import State
from vastinit.paths import ensure_private_dir
from vastinit.stack.caddy import EdgePlan, jupyter_launch_mode, plan, render, unit_ports
from vastinit.stack.caddy import write_atomically as write_caddyfile
from vastinit.supervisor.events import EventSubscriber
from vastinit.supervisor.manager import Manager
from vastinit.supervisor.reload import env_change
from vastinit.supervisor.states import Transition
from vastinit.supervisor.unit import EnvFingerprint, UnitRunner, fingerprinted_environment

log = structlog.get_logger("vastinit")

CADDY_UNIT = "caddy"
LOAD_TIMEOUT_S = 30.0
HEARTBEAT_S = 15.0
SSE_RETRY_MS = 250  # how soon a browser's EventSource reconnects after a cut
SOCKET_PATH_MAX = 107  # sun_path, less its terminating NUL


@dataclass(frozen=True)
class RouteView:
    """One served route: its external port, its upstream, its label, the unit behind it."""

    port: int
    host: str
    target: int
    label: str
    path: str
    unit: str | None


class Edge:
    """Ready markers, live routes, ``route`` events and the status projection."""

    def __init__(self, manager: Manager, edge_dir: Path) -> None:
        self.manager = manager
        self.dir = edge_dir
        self.ready_dir = edge_dir / "ready"
        self.status_socket = edge_dir / "status.sock"
        self.admin_socket = edge_dir / "admin.sock"
        self.routes: dict[int, RouteView] = {}
        self.error: str | None = None  # the last configuration that could not be loaded
        self._lock = anyio.Lock()
        self._markers: set[str] = set()

    # ---- setup --------------------------------------------------------------------------

    def setup(self) -> bool:
        """Create the 0700 directory, sync the markers, listen to transitions; False (and a
        warning) when the edge cannot follow the units here."""
        if len(str(self.admin_socket)) > SOCKET_PATH_MAX:
            log.warning(
                "edge: directory path too long for a unix socket; routes will not follow readiness",
                edge_dir=str(self.dir),
            )
            return False
        try:
            ensure_private_dir(self.dir)
            os.makedirs(self.ready_dir, mode=0o700, exist_ok=True)
            for stale in os.listdir(self.ready_dir):
                os.unlink(self.ready_dir / stale)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.status_socket)
        except (OSError, VastinitError) as exc:
            log.warning("edge: cannot use its directory", edge_dir=str(self.dir), error=str(exc))
            return False
        for name, runner in self.manager.runners.items():
            self._mark(name, runner.state is State.READY)
        self.manager.transition_listeners.append(self._on_transition)
        return True

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve the status socket and follow reloads until cancelled. Nothing here may end
        vastinit: a failure is logged and the edge goes on as it can."""
        if not self.setup():
            task_status.started()
            return
        sub = self.manager.events.subscribe(types=FOLLOWED)
        runner: web.AppRunner | None = None
        try:
            try:
                runner = await self._serve_status()
            except OSError as exc:
                log.error(
                    "edge: cannot serve the loading page's status socket",
                    path=str(self.status_socket),
                    error=str(exc),
                )
            await self._refresh_logged("start")
            task_status.started()
            while True:
                batch = await sub.next_batch()
                if not batch:  # dropped (it cannot fall behind by much): follow again
                    sub = self.manager.events.subscribe(types=FOLLOWED)
                    await self._refresh_logged("events missed")
                    continue
                cause = _refresh_cause([json.loads(line) for line in batch])
                if cause is not None:
                    await self._refresh_logged(cause)
        finally:
            sub.close()
            if runner is not None:
                with anyio.CancelScope(shield=True):
                    await runner.cleanup()

    async def _refresh_logged(self, cause: str) -> None:
        try:
            await self.refresh(cause)
        except Exception:
            log.exception("edge: routes not refreshed (a bug); the old ones stay", cause=cause)

    # ---- readiness: markers and route events --------------------------------------------

    def _mark(self, unit: str, ready: bool) -> None:
        path = self.ready_dir / unit
        try:
            if ready:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
                self._markers.add(unit)
            elif unit in self._markers or path.exists():
                path.unlink(missing_ok=True)
                self._markers.discard(unit)
        except OSError as exc:
            log.error("edge: cannot update the ready marker", unit=unit, error=str(exc))

    def _on_transition(self, transition: Transition) -> None:
        """Runs inside the state change, before anything else hears of it: the marker first,
        then the route event (so a client that sees ``ready`` is proxied). Never raises: a
        bug here must not take the unit (or vastinit) down."""
        try:
            self._mark(transition.unit, transition.new is State.READY)
            for route in self.routes.values():
                if route.unit == transition.unit:
                    fields = self.view(route.port, transition)
                    fields.pop("unit", None)
                    self.manager.events.publish("route", route.unit, change="state", **fields)
        except Exception:
            log.exception("edge: cannot follow a state change", unit=transition.unit)

    def view(self, port: int, transition: Transition | None = None) -> dict[str, object]:
        """The route on ``port`` as the loading page shows it (``route`` event fields)."""
        route = self.routes.get(port)
        if route is None:
            return {"port": port, "routed": False}
        fields: dict[str, object] = {
            "port": port,
            "target": route.target,
            "label": route.label,
            "routed": True,
        }
        if route.unit is None:
            return {**fields, "ready": None, "state": None, "reason": "no unit serves it"}
        runner = self.manager.runners.get(route.unit)
        if runner is None:
            return {**fields, "unit": route.unit, "ready": False, "state": None,
                    "reason": f"no unit named {route.unit}"}  # fmt: skip
        state = transition.new if transition is not None else runner.state
        reason = transition.cause if transition is not None else runner.sm.cause
        return {
            **fields,
            "unit": route.unit,
            "ready": state is State.READY,
            "state": state.value,
            # While it starts, the probe's last error says more than "pid 57".
            "reason": reason if state is State.READY else (runner.probe_error or reason),
            "status": runner.status_text,
        }

    # ---- routes ---------------------------------------------------------------------------

    async def refresh(self, cause: str) -> None:
        """Recompute the routes; hand Caddy the new configuration when it runs."""
        async with self._lock:
            caddy = self.manager.runners.get(CADDY_UNIT)
            if caddy is None or not caddy.unit.enabled:
                self._set_routes({}, cause)
                return
            try:
                env, fingerprint, edge, text = await anyio.to_thread.run_sync(
                    self._render, caddy.unit
                )
            except (VastinitError, ValueError) as exc:
                await self._failed(f"the routes cannot be built: {exc}", cause)
                return
            own_admin = not env.get("CADDY_ADMIN")
            if caddy.state is State.READY and not own_admin and cause != "caddy ready":
                # The user chose Caddy's admin endpoint: vastinit cannot load routes live.
                log.warning(
                    "edge: CADDY_ADMIN is set, so new routes apply when caddy restarts",
                    cause=cause,
                )
            if caddy.state is State.READY and own_admin:
                new_ports = sorted({r.port for r in edge.routes} - set(self.routes))
                problem = _ports_taken(new_ports, env.get("CADDY_BIND") or "")
                if problem is not None:
                    # Not handed to Caddy: a load that fails to bind leaves the listeners it
                    # opened behind, serving, in Caddy 2.6 (caddyserver/caddy#7175).
                    await self._failed(f"the new routes cannot be served: {problem}", cause)
                    return
                problem = await self._load(text)
                if problem is not None:
                    await self._failed(f"Caddy refused the new routes: {problem}", cause)
                    return
                self._applied(caddy, fingerprint)
            # Its next start renders the same from the files; a running one has it now.
            output = _output_path(caddy.unit.command, env)
            if output is not None:
                try:
                    await anyio.to_thread.run_sync(write_caddyfile, Path(output), text)
                except OSError as exc:
                    log.warning("edge: cannot write the Caddyfile", path=output, error=str(exc))
            if self.error is not None:
                self.error = None
                if caddy.probe_error and caddy.probe_error.startswith("routes not loaded"):
                    caddy.probe_error = None
                    self.manager.notify()
            self._set_routes(
                {
                    r.port: RouteView(
                        r.port, r.host, r.target, r.label, r.path, edge.units.get(r.port)
                    )
                    for r in edge.routes
                },
                cause,
            )
            for name, runner in self.manager.runners.items():
                self._mark(name, runner.state is State.READY)

    def _render(self, caddy_unit: Any) -> tuple[dict[str, str], EnvFingerprint, EdgePlan, str]:
        env, fingerprint = fingerprinted_environment(caddy_unit, self.manager.base_env)
        units = [r.unit for r in self.manager.runners.values()]
        edge = plan(env, unit_ports(units, env), jupyter_launch=jupyter_launch_mode(env))
        return env, fingerprint, edge, render(env, edge, edge_dir=str(self.dir))

    def _applied(self, caddy: UnitRunner, fingerprint: EnvFingerprint) -> None:
        """A running Caddy now has what the caddy unit's changed environment means for its
        routes: when only such variables changed, it needs no "restart to apply"."""
        if caddy.start_env is None:
            return
        change = env_change(caddy.start_env, fingerprint)
        if change and all(_live(name) for name in change.names()):
            caddy.start_env = fingerprint
            caddy.set_restart_to_apply(None)

    async def _load(self, text: str) -> str | None:
        """POST the Caddyfile to Caddy's admin socket; None when loaded, else Caddy's error."""
        body = text.encode()
        # Caddy allows only an empty Host on a unix socket (its origin check).
        head = (
            "POST /load HTTP/1.1\r\nHost: \r\nContent-Type: text/caddyfile\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            with anyio.fail_after(LOAD_TIMEOUT_S):
                async with await anyio.connect_unix(self.admin_socket) as stream:
                    await stream.send(head + body)
                    reply = b""
                    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                        while len(reply) < 1 << 20:
                            reply += await stream.receive()
        except (OSError, TimeoutError) as exc:
            return f"cannot reach Caddy's admin socket {self.admin_socket}: {exc}"
        status_line, _, rest = reply.partition(b"\r\n")
        parts = status_line.split()
        if len(parts) >= 2 and parts[1] == b"200":
            return None
        message = rest.partition(b"\r\n\r\n")[2].decode(errors="replace").strip()
        with contextlib.suppress(ValueError, AttributeError):
            message = str(json.loads(message).get("error", message))
        return f"{status_line.decode(errors='replace')}: {message[:2000]}"

    async def _failed(self, error: str, cause: str) -> None:
        self.error = error
        log.error("edge: routes not loaded; the old configuration keeps serving", error=error)
        caddy = self.manager.runners.get(CADDY_UNIT)
        if caddy is not None:
            caddy.probe_error = f"routes not loaded: {error}"
            self.manager.notify()
        self.manager.events.publish("route", change="error", cause=cause, error=error)

    def _set_routes(self, routes: dict[int, RouteView], cause: str) -> None:
        old = self.routes
        self.routes = routes
        added = sorted(set(routes) - set(old))
        removed = sorted(set(old) - set(routes))
        changed = sorted(p for p in set(routes) & set(old) if routes[p] != old[p])
        if not (added or removed or changed):
            return  # nothing to say (no route at all, at start: no event)
        self.manager.events.publish(
            "route",
            change="set",
            cause=cause,
            added=added,
            removed=removed,
            changed=changed,
            routes=[
                {**self.view(p), "unit": routes[p].unit, "host": routes[p].host}
                for p in sorted(routes)
            ],
        )
        if added or removed or changed:
            log.info("edge: routes", added=added, removed=removed, changed=changed, cause=cause)

    # ---- the status projection ------------------------------------------------------------

    async def _serve_status(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/v1/route/{port:\\d+}/events", self._events)
        app.router.add_get("/v1/route/{port:\\d+}/page", self._page)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        old = os.umask(0o077)
        try:
            await web.UnixSite(runner, str(self.status_socket)).start()
        finally:
            os.umask(old)
        return runner

    async def _page(self, request: web.Request) -> web.Response:
        port = int(request.match_info["port"])
        return web.Response(
            text=loading_page(self.view(port)),
            content_type="text/html",
            headers={"Cache-Control": "no-store", "X-Portal-Placeholder": "true"},
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        port = int(request.match_info["port"])
        sub = self.manager.events.subscribe(types=("route",))
        route = self.routes.get(port)
        # The unit's newest output line too ("Load weight begin", a download's progress):
        # one line per batch of its log, through the same bounded queue.
        logs = self.manager.mux.subscribe([route.unit], backlog=1) if route and route.unit else None
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            async with anyio.create_task_group() as tg:
                if logs is not None:
                    tg.start_soon(_last_lines, logs, sub)
                await response.prepare(request)
                await response.write(f"retry: {SSE_RETRY_MS}\n\n".encode() + _sse(self.view(port)))
                await self._stream(response, sub, port)
                tg.cancel_scope.cancel()
        except (ConnectionError, RuntimeError):
            pass  # the browser went away (RuntimeError: aiohttp's closed transport)
        finally:
            sub.close()
            if logs is not None:
                logs.discard()
        return response

    async def _stream(self, response: web.StreamResponse, sub: EventSubscriber, port: int) -> None:
        while True:
            batch: list[bytes] = []
            with anyio.move_on_after(HEARTBEAT_S):
                batch = await sub.next_batch()
                if not batch:
                    return  # dropped: the browser reconnects and starts afresh
            if not batch:
                await response.write(b": still here\n\n")
                continue
            out = b""
            for line in batch:
                event = json.loads(line)
                if event.get("type") == "log":
                    out += _sse_data({"log": str(event.get("text", ""))[-LOG_LINE_CHARS:]})
                elif event.get("change") == "state" and event.get("port") == port:
                    out += _sse({k: event[k] for k in event if k != "seq"})
                elif event.get("change") == "set":
                    out += _sse(self.view(port))
            if out:
                await response.write(out)


LOG_LINE_CHARS = 300


async def _last_lines(logs: LogSubscription, sub: EventSubscriber) -> None:
    """Push the newest line of each batch of a unit's output to ``sub``."""
    while not sub.closed:
        lines = await logs.next_batch()
        if not lines:
            return
        sub.push_log(lines[-1:])


# What makes the edge recompute its routes: a reload, a transient unit added or removed,
# and Caddy becoming ready (a start that rendered the files while a reload changed them).
FOLLOWED = ("reload", "unit", "state")


def _refresh_cause(events: list[dict[str, Any]]) -> str | None:
    causes = []
    for event in events:
        kind = event.get("type")
        if kind == "reload":
            causes.append("reload")
        elif kind == "unit":
            causes.append(f"transient unit {event.get('action', 'changed')}")
        elif kind == "state" and event.get("unit") == CADDY_UNIT and event.get("new") == "ready":
            causes.append("caddy ready")
    return causes[0] if causes else None


# The caddy unit's variables that only shape the rendered Caddyfile: a load applies them.
# (The token variables live in Caddy's process environment: they need a restart.)
LIVE_VARIABLES = frozenset(
    {
        "PORTAL_CONFIG",
        "ENABLE_AUTH",
        "AUTH_EXCLUDE",
        "VAST_CONTAINERLABEL",
        "CADDY_BIND",
        "CADDY_FLUSH_INTERVAL",
        "JUPYTER_OVERRIDE",
    }
)


def _live(name: str) -> bool:
    return name in LIVE_VARIABLES or name.startswith("VAST_TCP_PORT_")


def _sse(view: Mapping[str, object]) -> bytes:
    title, detail = headline(view)
    return _sse_data({**view, "headline": title, "detail": detail})


def _sse_data(data: Mapping[str, object]) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


def _ports_taken(ports: list[int], host: str) -> str | None:
    """Which of ``ports`` another process holds (as Caddy would bind them), or None."""
    taken = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go's listeners
            try:
                probe.bind((host, port))
            except OSError as exc:
                taken.append(f"port {port}: {exc.strerror or exc}")
    return "; ".join(taken) or None


def _output_path(command: tuple[str, ...], env: Mapping[str, str]) -> str | None:
    """The caddy unit's ``--output`` file, expanded in its environment."""
    for flag, value in itertools.pairwise(command):
        if flag in ("--output", "-o"):
            try:
                return expand(value, env)
            except (VastinitError, ValueError):
                return None
    return None


# ---- the loading page -------------------------------------------------------------------------


def headline(view: Mapping[str, Any]) -> tuple[str, str]:
    """What the loading page says about a route: a headline and the detail under it."""
    label = str(view.get("label") or f"port {view.get('port')}")
    state = view.get("state")
    reason = str(view.get("status") or view.get("reason") or "")
    if not view.get("routed"):
        return f"{label}: this route is gone", "The configuration changed; reload later."
    if view.get("unit") is None:
        return f"{label}: nothing serves this port", "No unit of this container runs it."
    if state == "ready":
        return f"{label} is ready", "Opening it now."
    if state == "skipped":
        return f"{label} is not started", reason
    if state == "failed":
        return f"{label} failed", f"{reason}. It does not start again by itself."
    if state == "backoff":
        return f"{label} stopped; restarting", reason
    if state in ("stopping", "stopped", "inactive", "exited"):
        return f"{label} is stopped", reason
    return f"{label} is starting", reason


_SCRIPT = """
(function () {
  var first = true;
  var es = new EventSource("%s");
  es.onmessage = function (m) {
    var s = JSON.parse(m.data);
    if ("log" in s) {
      document.getElementById("last").textContent = s.log;
      return;
    }
    if (s.ready) {
      es.close();
      // Ready already at the first message: Caddy just failed to reach it; do not spin.
      setTimeout(function () { location.reload(); }, first ? 1000 : 0);
      return;
    }
    first = false;
    document.getElementById("headline").textContent = s.headline;
    document.getElementById("detail").textContent = s.detail;
    document.title = s.headline;
  };
})();
"""


def loading_page(view: Mapping[str, Any]) -> str:
    """The loading page of a route: its unit's state and reason, live (no internet needed)."""
    from vastinit.stack.caddy import STATUS_PATH

    title, detail = headline(view)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 4em auto; '
        'padding: 0 1em; color: #222">'
        f'<h1 id="headline">{html.escape(title)}</h1>'
        f'<p id="detail">{html.escape(detail)}</p>'
        '<pre id="last" style="white-space: pre-wrap; color: #666"></pre>'
        "<p>This page follows the service live and opens it the moment it is ready.</p>"
        f"<script>{_SCRIPT % STATUS_PATH}</script></body></html>"
    )
