"""The control protocol: the wire format of the socket, and the one interface the server calls.

Wire format (docs/control-api.md has every field and every error):

HTTP/1.1 over a Unix stream socket (default ``/run/vastinit.sock``, mode 0660). Requests
and replies are JSON (``Content-Type: application/json``), except ``logs?follow=1`` and
``events``, whose replies are chunked streams of NDJSON, one log line or event a line.
Bodies are at most ``MAX_BODY`` bytes. Query endpoints are GET with query parameters
(``unit`` may repeat); actions are POST with a JSON object body::

    GET  /v1/version                           {"version", "pid", "events"}
    GET  /v1/status[?unit=NAME...]             {"pid", "now", "units": [status...]}
    GET  /v1/units/NAME                        {"name", "source", "toml"}              (show)
    GET  /v1/logs[?unit=NAME...][&n=N][&follow=1]
                                               {"lines": [line...]} | NDJSON of line
    GET  /v1/ready[?unit=NAME...][&wait=1][&timeout=S]
                                               {"ready": bool, "units": [ready...]}
    GET  /v1/events[?since=SEQ[&epoch=E]][&type=T...][&unit=NAME...][&logs=NAME...]
                                               NDJSON of event (docs/control-api.md)
    GET  /v1/avail                             {"units": [{"name", "state", "loaded",
                                                "on_disk"}...], "problems": [...]}
    POST /v1/start|stop|restart  {"units": [NAME...], "wait": true, "timeout": S|null}
                                               {"ok": bool, "results": [result...]}
    POST /v1/signal   {"unit": NAME, "signal": "HUP" | 1}   {"unit", "pid", "signal"}
    POST /v1/reload   {"dry_run": false}       {"dry_run", "added", "removed", "changed",
                                                "unchanged", "env_restart",
                                                "restart_to_apply"}
    POST /v1/shutdown {}                       202 {"ok": true}
    POST   /v1/units  {"name": NAME, "toml": TEXT}
                                               201 {"name", "state", "cause", "transient"}
    DELETE /v1/units/NAME                      {"name", "state", "cause", "transient"}

Every error is ``{"error": "<one line>", "code": "<code>"}`` with an HTTP status: 400
``bad_request`` (malformed JSON, wrong types, body too large), 404 ``unknown_unit`` (the
message names close matches) or ``not_found``, 405 ``method_not_allowed``, 409
``not_running`` (signal to a unit with no process), 409 ``unit_exists``,
``too_many_transient``, ``not_transient`` or ``in_use`` (transient units), 422
``invalid_units`` (reload, a transient unit; the reply adds
``"problems": ["FILE:LINE: unit NAME: message", ...]``), 503 ``shutting_down``, 500 ``internal``.

This module imports nothing from vastinit but ``errors``: the server depends on it, and the
supervisor's adapter (``vastinit.supervisor.commands``) implements ``Commands``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from vastinit.errors import ControlError

API = "/v1"
MAX_BODY = 64 * 1024  # requests are tiny; anything bigger is a mistake or an attack
DEFAULT_SOCKET_MODE = 0o660


class CommandRefused(ControlError):
    """The supervisor refused a well-formed command; ``status`` and ``code`` go on the wire."""

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class ActionResult:
    """How one unit ended a start/stop/restart: ``outcome`` is the state reached (``ready``,
    ``exited``, ``failed``, ...), ``timeout`` or ``requested`` (no wait); ``ok`` says if that
    is what was asked for."""

    name: str
    outcome: str
    ok: bool
    state: str
    cause: str


@dataclass(frozen=True)
class ReadyEntry:
    """Whether one unit counts as ready now (see ``docs/ctl.md`` for what counts)."""

    name: str
    ready: bool
    state: str
    cause: str


@dataclass(frozen=True)
class ReloadResult:
    """What a reload changed (or, with ``dry_run``, would change), by unit name."""

    dry_run: bool
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # Unit name -> cause: restarted (the same spec) for a change its restart_on_env lists.
    env_restart: dict[str, str] = field(default_factory=dict)
    # Unit name -> what changed in its environment: left running, "restart to apply".
    restart_to_apply: dict[str, str] = field(default_factory=dict)
    # Unit name -> its supervisord group (``process_group`` or its name), added and changed.
    groups: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ShowResult:
    """A unit's effective spec (drop-ins merged) rendered as TOML."""

    name: str
    source: str
    toml: str


@dataclass(frozen=True)
class SignalResult:
    """The signal sent and the pid it went to."""

    unit: str
    pid: int
    signal: str


@dataclass(frozen=True)
class TransientResult:
    """A transient unit just created (its start asked for) or removed (stopped, forgotten)."""

    name: str
    state: str
    cause: str
    transient: bool = True


# One log line on the wire: {"ts": float, "unit": str, "stream": "stdout"|"stderr", "text": str}
LogEntry = dict[str, Any]


class LogFollow(Protocol):
    """A live feed of log lines, keyed by unit name (it survives the units restarting)."""

    async def next_batch(self) -> list[LogEntry]:
        """The lines available now, waiting for at least one; ``[]`` once closed."""
        ...

    def close(self) -> None:
        """Stop following; a pending ``next_batch`` returns what is left, then ``[]``."""
        ...


class EventFeed(Protocol):
    """One client's subscription to the event stream (``GET /v1/events``): encoded events,
    one JSON line each, from a bounded queue the supervisor drops when the client lags."""

    async def next_batch(self) -> list[bytes]:
        """The events queued now (JSON lines), waiting for at least one; ``[]`` once the
        feed is closed or dropped and its last event (``dropped``) was taken."""
        ...

    async def pump(self) -> None:
        """Move the log lines the client asked for into its queue until the feed ends
        (returns at once when it asked for none); the server runs it beside its reads."""
        ...

    async def wait_gone(self) -> None:
        """Return once the feed is closed or dropped (a blocked write can stop waiting)."""
        ...

    @property
    def dropped_reason(self) -> str | None:
        """Why the supervisor dropped this feed (None while it is not dropped)."""
        ...

    def close(self) -> None:
        """Stop and free the feed (the client went away)."""
        ...


class Commands(Protocol):
    """Everything the control server may ask of the supervisor, and nothing more.

    Methods raise ``UnknownUnitError`` for a unit name that does not exist (the message
    names close matches), ``CommandRefused`` for a command that cannot be carried out now,
    and ``ConfigError`` (reload) listing every problem in the unit files.
    """

    async def scan_processes(self) -> None:
        """Bring each unit's escaped processes (status ``escaped``) up to date."""
        ...

    def status(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """Status of ``names`` (all units, sorted, if empty) as JSON-ready dicts."""
        ...

    async def start(
        self, names: Sequence[str], *, wait: bool, timeout: float | None
    ) -> list[ActionResult]:
        """Start units; with ``wait``, return once each is ready, exited, failed or skipped."""
        ...

    async def stop(
        self, names: Sequence[str], *, wait: bool, timeout: float | None
    ) -> list[ActionResult]:
        """Stop units; with ``wait``, return once each one's process group is empty."""
        ...

    async def restart(
        self, names: Sequence[str], *, wait: bool, timeout: float | None
    ) -> list[ActionResult]:
        """Stop then start units; ``wait`` as for ``start`` (for the new activation)."""
        ...

    async def ready(
        self, names: Sequence[str], *, wait: bool, timeout: float | None
    ) -> list[ReadyEntry]:
        """Readiness of ``names`` (all units if empty); with ``wait``, return the moment all
        are ready, one can never be (failed, skipped), or ``timeout`` passes."""
        ...

    def signal(self, name: str, signum: int) -> SignalResult:
        """Send ``signum`` to the unit's main process; CommandRefused if it has none."""
        ...

    async def reload(self, *, dry_run: bool) -> ReloadResult:
        """Re-read the unit files and apply the difference (or only report it)."""
        ...

    def show(self, name: str) -> ShowResult:
        """The unit's effective spec as TOML."""
        ...

    def logs_tail(self, names: Sequence[str], n: int) -> list[LogEntry]:
        """The last ``n`` lines of ``names`` (all units if empty), merged in time order."""
        ...

    def logs_follow(self, names: Sequence[str], backlog: int) -> LogFollow:
        """Follow ``names`` (all if empty), starting with their last ``backlog`` lines."""
        ...

    def events_subscribe(
        self,
        *,
        since: int | None,
        epoch: str | None,
        types: Sequence[str],
        units: Sequence[str],
        logs: Sequence[str],
        backlog: int = 0,
        log_rate: float | None = None,
    ) -> EventFeed:
        """Subscribe to events of ``types`` about ``units`` (all when empty), with the log
        lines of ``logs`` (``*``: every unit's), starting with their last ``backlog`` lines,
        every line or at most ``log_rate`` a second; with ``since``, first the kept events
        after it (or ``reset``, also when ``epoch`` names another run of vastinit)."""
        ...

    def events_info(self) -> dict[str, object]:
        """The stream's ``epoch`` and counters: ``last_seq``, ``subscribers``, ``dropped``."""
        ...

    def shutdown(self) -> None:
        """Begin an orderly shutdown, exactly as SIGTERM would."""
        ...

    # ---- transient units ----------------------------------------------------------------

    async def add_transient(self, name: str, toml: str) -> TransientResult:
        """Create the transient unit ``name`` from unit file text and start it. ConfigError
        lists the problems of ``toml``; CommandRefused a taken name or the cap reached."""
        ...

    async def remove_transient(self, name: str) -> TransientResult:
        """Stop the transient unit ``name`` by its stop rule and forget it; CommandRefused
        (409) for a unit from a file."""
        ...
