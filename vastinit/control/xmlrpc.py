"""supervisord's XML-RPC API (``POST /RPC2``) and its log tails, on vastinit's control socket.

What supervisord 4's ``supervisor.*`` and ``system.*`` methods return, built from
``Commands``: the real ``supervisorctl``, web dashboards and configuration-management
modules talk to vastinit as they did to supervisord. Parsing and encoding are the
standard library's ``xmlrpc.client.loads``/``dumps``; no XML is built by hand.

A unit is a supervisord process; its group is ``Unit.process_group`` (a ``[group:x]``
or ``numprocs`` program) or its own name. vastinit states map to the nearest
supervisord state (docs/migration-supervisord.md): ready and running are RUNNING,
waiting is STARTING, failed is FATAL, inactive, skipped and scheduled are STOPPED.
"""

from __future__ import annotations

import os
import signal as signals
import time
import tomllib
import xmlrpc.client
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from vastinit import __version__
from vastinit.control.protocol import CommandRefused, Commands
from vastinit.errors import ConfigError, UnknownUnitError

API_VERSION = "3.0"
SUPERVISOR_VERSION = "4.3.0"
"""What ``getSupervisorVersion`` answers: the supervisord whose API is implemented."""
MAX_LOG_LINES = 5000
"""How many of a unit's last lines the log reads and tails see (the ring's, not the file's)."""


class Faults:
    """supervisord's fault codes (supervisor/xmlrpc.py)."""

    UNKNOWN_METHOD = 1
    INCORRECT_PARAMETERS = 2
    BAD_ARGUMENTS = 3
    SIGNATURE_UNSUPPORTED = 4
    SHUTDOWN_STATE = 6
    BAD_NAME = 10
    BAD_SIGNAL = 11
    NO_FILE = 20
    NOT_EXECUTABLE = 21
    FAILED = 30
    ABNORMAL_TERMINATION = 40
    SPAWN_ERROR = 50
    ALREADY_STARTED = 60
    NOT_RUNNING = 70
    SUCCESS = 80
    ALREADY_ADDED = 90
    STILL_RUNNING = 91
    CANT_REREAD = 92


_FAULT_NAMES = {v: k for k, v in vars(Faults).items() if isinstance(v, int)}


class RPCFault(Exception):
    """A supervisord fault: ``code`` and the text ``NAME: extra`` as supervisord writes it."""

    def __init__(self, code: int, extra: str | None = None) -> None:
        self.code = code
        self.text = _FAULT_NAMES.get(code, "FAILED") + (f": {extra}" if extra else "")
        super().__init__(self.text)


# supervisord's process states
STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL, UNKNOWN = (
    0,
    10,
    20,
    30,
    40,
    100,
    200,
    1000,
)
STATE_NAMES = {
    STOPPED: "STOPPED",
    STARTING: "STARTING",
    RUNNING: "RUNNING",
    BACKOFF: "BACKOFF",
    STOPPING: "STOPPING",
    EXITED: "EXITED",
    FATAL: "FATAL",
    UNKNOWN: "UNKNOWN",
}
_STATE = {
    "inactive": STOPPED,
    "waiting": STARTING,
    "starting": STARTING,
    "running": RUNNING,
    "ready": RUNNING,
    "stopping": STOPPING,
    "stopped": STOPPED,
    "backoff": BACKOFF,
    "exited": EXITED,
    "failed": FATAL,
    "skipped": STOPPED,
    "scheduled": STOPPED,
}
_RUNNING_STATES = (RUNNING, BACKOFF, STARTING)
_STOPPED_STATES = (STOPPED, EXITED, FATAL, UNKNOWN)


def supervisor_state(vastinit_state: str) -> int:
    return _STATE.get(vastinit_state, UNKNOWN)


def describe(info: dict[str, Any]) -> str:
    """supervisord's ``description`` (rpcinterface._interpretProcessInfo)."""
    state = info["state"]
    if state == RUNNING:
        start = datetime(*time.gmtime(info["start"])[:6])
        now = datetime(*time.gmtime(info["now"])[:6])
        uptime = max(now - start, timedelta(0))
        return f"pid {info['pid']}, uptime {uptime}"
    if state in (FATAL, BACKOFF):
        return str(info["spawnerr"] or f'unknown error (try "tail {info["name"]}")')
    if state in (STOPPED, EXITED):
        if info["start"]:
            return datetime(*time.localtime(info["stop"])[:6]).strftime("%b %d %I:%M %p")
        return "Not started"
    return ""


class SupervisorRPC:
    """The ``supervisor.*`` and ``system.*`` methods over ``Commands``."""

    def __init__(self, commands: Commands, log_dir: str = "") -> None:
        self.commands = commands
        self.log_dir = log_dir
        self.shutting_down = False
        self.methods: dict[str, Callable[..., Awaitable[Any]]] = {}
        for attr in dir(self):
            if attr.startswith("rpc_"):
                ns, _, method = attr[4:].partition("_")
                self.methods[f"{ns}.{method}"] = getattr(self, attr)

    # ---- dispatch ----------------------------------------------------------------------

    async def handle(self, body: bytes) -> bytes:
        """One XML-RPC request body -> the response body (a fault for anything wrong)."""
        try:
            params, method = xmlrpc.client.loads(body, use_builtin_types=True)
        except Exception as exc:
            return _fault_body(Faults.INCORRECT_PARAMETERS, f"cannot parse request: {exc}")
        if method is None:
            return _fault_body(Faults.UNKNOWN_METHOD)
        try:
            result = await self.call(method, params)
        except RPCFault as exc:
            return _fault_body(exc.code, exc.text.partition(": ")[2] or None)
        except Exception as exc:  # a bug on odd input must be a fault, never a 500
            return _fault_body(Faults.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        return xmlrpc.client.dumps((result,), methodresponse=True, allow_none=False).encode()

    async def call(self, method: str, params: Sequence[Any]) -> Any:
        func = self.methods.get(method)
        if func is None:
            raise RPCFault(Faults.UNKNOWN_METHOD)
        try:
            result = await func(*params)
        except TypeError as exc:
            raise RPCFault(Faults.INCORRECT_PARAMETERS, str(exc)) from None
        except UnknownUnitError as exc:
            raise RPCFault(Faults.BAD_NAME, str(exc)) from None
        except ConfigError as exc:
            raise RPCFault(Faults.CANT_REREAD, "; ".join(str(p) for p in exc.problems)) from None
        except CommandRefused as exc:
            code = Faults.SHUTDOWN_STATE if "shutting down" in str(exc) else Faults.FAILED
            raise RPCFault(code, str(exc)) from None
        if result is None:
            raise RPCFault(Faults.FAILED, "no result")
        return result

    # ---- names -------------------------------------------------------------------------

    def _infos(self) -> list[dict[str, Any]]:
        return self.commands.status([])

    def _resolve(self, name: object) -> tuple[str, list[dict[str, Any]], bool]:
        """``name`` (``proc``, ``group:proc``, ``group:*``, ``group``) -> (group, units,
        whether it names a whole group); BAD_NAME otherwise."""
        if not isinstance(name, str):
            raise RPCFault(Faults.INCORRECT_PARAMETERS, "name must be a string")
        units = self._infos()
        group, colon, proc = name.partition(":")
        members = [u for u in units if u["group"] == group]
        if colon and proc not in ("", "*"):
            found = [u for u in members if u["name"] == proc]
            if not found:
                raise RPCFault(Faults.BAD_NAME, name)
            return group, found, False
        if not members:
            raise RPCFault(Faults.BAD_NAME, name)
        single = not colon and len(members) == 1 and members[0]["name"] == group
        return group, members, not single

    def _group(self, name: object) -> list[dict[str, Any]]:
        if not isinstance(name, str):
            raise RPCFault(Faults.INCORRECT_PARAMETERS, "name must be a string")
        members = [u for u in self._infos() if u["group"] == name]
        if not members:
            raise RPCFault(Faults.BAD_NAME, name)
        return members

    def _info(self, unit: dict[str, Any]) -> dict[str, Any]:
        state = supervisor_state(unit["state"])
        now = int(time.time())
        start = int(unit.get("started_at") or 0)
        stop = int(unit.get("last_exit_at") or 0)
        code = unit.get("last_exit_code")
        spawnerr = unit.get("cause") or "" if state in (FATAL, BACKOFF) else ""
        log = os.path.join(self.log_dir, f"{unit['name']}.log") if self.log_dir else ""
        info = {
            "name": unit["name"],
            "group": unit["group"],
            "start": start,
            "stop": stop,
            "now": now,
            "state": state,
            "statename": STATE_NAMES[state],
            "spawnerr": spawnerr,
            "exitstatus": code if isinstance(code, int) and 0 <= code < 256 else 0,
            "logfile": log,
            "stdout_logfile": log,
            "stderr_logfile": "",
            "pid": unit.get("pid") or 0,
        }
        info["description"] = describe(info)
        return info

    @staticmethod
    def _status(unit: dict[str, Any], code: int, description: str) -> dict[str, Any]:
        return {
            "name": unit["name"],
            "group": unit["group"],
            "status": code,
            "description": description,
        }

    def _check_bool(self, value: object, what: str = "wait") -> bool:
        if not isinstance(value, bool | int):
            raise RPCFault(Faults.INCORRECT_PARAMETERS, f"{what} must be a boolean")
        return bool(value)

    # ---- system.* ----------------------------------------------------------------------

    async def rpc_system_listMethods(self) -> list[str]:
        return sorted(self.methods)

    async def rpc_system_methodHelp(self, name: str) -> str:
        func = self.methods.get(name) if isinstance(name, str) else None
        if func is None:
            raise RPCFault(Faults.SIGNATURE_UNSUPPORTED)
        return (func.__doc__ or "").strip()

    async def rpc_system_methodSignature(self, name: str) -> list[list[str]]:
        if not isinstance(name, str) or name not in self.methods:
            raise RPCFault(Faults.SIGNATURE_UNSUPPORTED)
        return [["undef"]]

    async def rpc_system_multicall(self, calls: list[Any]) -> list[Any]:
        if not isinstance(calls, list):
            raise RPCFault(Faults.INCORRECT_PARAMETERS, "calls must be an array")
        out: list[Any] = []
        for call in calls:
            if not isinstance(call, dict) or "methodName" not in call:
                out.append({"faultCode": Faults.INCORRECT_PARAMETERS, "faultString": "bad call"})
                continue
            name, params = call["methodName"], call.get("params", [])
            if name == "system.multicall" or not isinstance(params, list):
                out.append({"faultCode": Faults.INCORRECT_PARAMETERS, "faultString": "bad call"})
                continue
            try:
                out.append([await self.call(name, params)])
            except RPCFault as exc:
                out.append({"faultCode": exc.code, "faultString": exc.text})
        return out

    # ---- supervisor.*: the daemon ------------------------------------------------------

    async def rpc_supervisor_getAPIVersion(self) -> str:
        """The XML-RPC API version: 3.0, as supervisord 3 and 4."""
        return API_VERSION

    async def rpc_supervisor_getVersion(self) -> str:
        """getAPIVersion's older name."""
        return API_VERSION

    async def rpc_supervisor_getSupervisorVersion(self) -> str:
        """The supervisord version whose API this is, and vastinit's."""
        return f"{SUPERVISOR_VERSION} (vastinit {__version__})"

    async def rpc_supervisor_getIdentification(self) -> str:
        return "supervisor"

    async def rpc_supervisor_getState(self) -> dict[str, Any]:
        if self.shutting_down:
            return {"statecode": -1, "statename": "SHUTDOWN"}
        return {"statecode": 1, "statename": "RUNNING"}

    async def rpc_supervisor_getPID(self) -> int:
        return os.getpid()

    async def rpc_supervisor_readLog(self, offset: int, length: int) -> str:
        """vastinit's own log is its stdout (the container's log): empty here."""
        return _read_slice("", offset, length)

    async def rpc_supervisor_tailLog(self, offset: int, length: int) -> list[Any]:
        return _tail_slice("", offset, length)

    async def rpc_supervisor_clearLog(self) -> bool:
        return True

    async def rpc_supervisor_shutdown(self) -> bool:
        self.shutting_down = True
        self.commands.shutdown()
        return True

    async def rpc_supervisor_restart(self) -> bool:
        """Re-read the configuration and restart every unit (vastinit itself keeps running)."""
        self._not_shutting_down()
        await self.commands.reload(dry_run=False)
        names = [u["name"] for u in self._infos() if supervisor_state(u["state"]) == RUNNING]
        if names:
            await self.commands.restart(names, wait=False, timeout=None)
        return True

    def _not_shutting_down(self) -> None:
        if self.shutting_down:
            raise RPCFault(Faults.SHUTDOWN_STATE)

    # ---- configuration -----------------------------------------------------------------

    async def rpc_supervisor_reloadConfig(self) -> list[Any]:
        """[[added, changed, removed]] group names, nothing applied yet (``update`` does)."""
        self._not_shutting_down()
        plan = await self.commands.reload(dry_run=True)
        return [[*self._plan_groups(plan)]]

    def _plan_groups(self, plan: Any) -> tuple[list[str], list[str], list[str]]:
        groups = {u["name"]: u["group"] for u in self._infos()}
        groups.update(plan.groups)
        added = sorted({groups.get(n, n) for n in plan.added})
        changed = sorted({groups.get(n, n) for n in [*plan.changed, *plan.env_restart]})
        removed = sorted({groups.get(n, n) for n in plan.removed})
        return added, changed, removed

    async def rpc_supervisor_addProcessGroup(self, name: str) -> bool:
        """Apply the configuration for group ``name`` (a reload) and start its autostart
        programs."""
        self._not_shutting_down()
        if not isinstance(name, str):
            raise RPCFault(Faults.INCORRECT_PARAMETERS, "name must be a string")
        plan = await self.commands.reload(dry_run=True)
        pending = set(plan.added) | set(plan.changed)
        before = {u["name"]: u for u in self._infos()}
        if pending:
            await self.commands.reload(dry_run=False)
        members = [u for u in self._infos() if u["group"] == name]
        if not members:
            raise RPCFault(Faults.BAD_NAME, name)
        fresh = [u for u in members if u["name"] in pending]
        if not fresh and all(u["name"] in before for u in members):
            raise RPCFault(Faults.ALREADY_ADDED, name)
        for unit in fresh:
            stopped = supervisor_state(unit["state"]) in _STOPPED_STATES
            if unit["name"] in plan.changed and stopped and unit.get("autostart", True):
                await self.commands.start([unit["name"]], wait=False, timeout=None)
        return True

    async def rpc_supervisor_removeProcessGroup(self, name: str) -> bool:
        """Remove group ``name`` once its file is gone (its programs must be stopped)."""
        self._not_shutting_down()
        members = self._group(name)
        if any(supervisor_state(u["state"]) in _RUNNING_STATES for u in members):
            raise RPCFault(Faults.STILL_RUNNING, name)
        plan = await self.commands.reload(dry_run=True)
        if any(u["name"] in plan.removed for u in members):
            await self.commands.reload(dry_run=False)
        return True

    async def rpc_supervisor_getAllConfigInfo(self) -> list[dict[str, Any]]:
        out = []
        for unit in self._infos():
            shown = self.commands.show(unit["name"])
            try:
                raw = tomllib.loads(shown.toml)
            except tomllib.TOMLDecodeError:
                raw = {}
            out.append(_config_info(unit, raw, self.log_dir))
        return sorted(out, key=lambda d: d["name"])

    # ---- process info ------------------------------------------------------------------

    async def rpc_supervisor_getProcessInfo(self, name: str) -> dict[str, Any]:
        _, units, _ = self._resolve(name)
        if len(units) != 1:
            raise RPCFault(Faults.BAD_NAME, name)
        return self._info(units[0])

    async def rpc_supervisor_getAllProcessInfo(self) -> list[dict[str, Any]]:
        return [self._info(u) for u in sorted(self._infos(), key=lambda u: (u["group"], u["name"]))]

    # ---- start / stop ------------------------------------------------------------------

    async def _start_one(self, unit: dict[str, Any], wait: bool) -> None:
        state = supervisor_state(unit["state"])
        if state in _RUNNING_STATES:
            raise RPCFault(Faults.ALREADY_STARTED, _namespec(unit))
        (result,) = await self.commands.start([unit["name"]], wait=wait, timeout=None)
        if wait and not result.ok:
            if result.outcome in ("failed", "backoff"):
                raise RPCFault(Faults.SPAWN_ERROR, _namespec(unit))
            raise RPCFault(Faults.ABNORMAL_TERMINATION, _namespec(unit))

    async def _stop_one(self, unit: dict[str, Any], wait: bool) -> None:
        if supervisor_state(unit["state"]) not in (*_RUNNING_STATES, STOPPING):
            raise RPCFault(Faults.NOT_RUNNING, _namespec(unit))
        await self.commands.stop([unit["name"]], wait=wait, timeout=None)

    async def rpc_supervisor_startProcess(self, name: str, wait: bool = True) -> Any:
        self._not_shutting_down()
        wait = self._check_bool(wait)
        group, units, whole = self._resolve(name)
        if whole:
            return await self.rpc_supervisor_startProcessGroup(group, wait)
        await self._start_one(units[0], wait)
        return True

    async def rpc_supervisor_stopProcess(self, name: str, wait: bool = True) -> Any:
        self._not_shutting_down()
        wait = self._check_bool(wait)
        group, units, whole = self._resolve(name)
        if whole:
            return await self.rpc_supervisor_stopProcessGroup(group, wait)
        await self._stop_one(units[0], wait)
        return True

    async def _many(
        self, units: list[dict[str, Any]], action: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> list[dict[str, Any]]:
        out = []
        for unit in units:
            try:
                await action(unit)
            except RPCFault as exc:
                out.append(self._status(unit, exc.code, exc.text))
            else:
                out.append(self._status(unit, Faults.SUCCESS, "OK"))
        return out

    async def rpc_supervisor_startProcessGroup(
        self, name: str, wait: bool = True
    ) -> list[dict[str, Any]]:
        self._not_shutting_down()
        wait = self._check_bool(wait)
        units = self._group(name)
        units = [u for u in units if supervisor_state(u["state"]) not in _RUNNING_STATES]
        return await self._many(units, lambda u: self._start_one(u, wait))

    async def rpc_supervisor_stopProcessGroup(
        self, name: str, wait: bool = True
    ) -> list[dict[str, Any]]:
        self._not_shutting_down()
        wait = self._check_bool(wait)
        units = [u for u in self._group(name) if supervisor_state(u["state"]) in _RUNNING_STATES]
        return await self._many(units, lambda u: self._stop_one(u, wait))

    async def rpc_supervisor_startAllProcesses(self, wait: bool = True) -> list[dict[str, Any]]:
        self._not_shutting_down()
        wait = self._check_bool(wait)
        units = [u for u in self._infos() if supervisor_state(u["state"]) not in _RUNNING_STATES]
        return await self._many(_ordered(units), lambda u: self._start_one(u, wait))

    async def rpc_supervisor_stopAllProcesses(self, wait: bool = True) -> list[dict[str, Any]]:
        self._not_shutting_down()
        wait = self._check_bool(wait)
        units = [u for u in self._infos() if supervisor_state(u["state"]) in _RUNNING_STATES]
        return await self._many(_ordered(units)[::-1], lambda u: self._stop_one(u, wait))

    # ---- signals -----------------------------------------------------------------------

    def _signum(self, value: object) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            text = value.strip().upper()
            if text.isdigit():
                number = int(text)
            else:
                name = text if text.startswith("SIG") else f"SIG{text}"
                member = signals.Signals.__members__.get(name)
                if member is None:
                    raise RPCFault(Faults.BAD_SIGNAL, str(value))
                number = int(member)
        else:
            raise RPCFault(Faults.BAD_SIGNAL, str(value))
        if not 1 <= number < signals.NSIG:
            raise RPCFault(Faults.BAD_SIGNAL, str(value))
        return number

    async def _signal_one(self, unit: dict[str, Any], signum: int) -> None:
        if supervisor_state(unit["state"]) not in (*_RUNNING_STATES, STOPPING) or not unit.get(
            "pid"
        ):
            raise RPCFault(Faults.NOT_RUNNING, _namespec(unit))
        try:
            self.commands.signal(unit["name"], signum)
        except CommandRefused:
            raise RPCFault(Faults.NOT_RUNNING, _namespec(unit)) from None

    async def rpc_supervisor_signalProcess(self, name: str, signal: Any) -> Any:
        signum = self._signum(signal)
        group, units, whole = self._resolve(name)
        if whole:
            return await self.rpc_supervisor_signalProcessGroup(group, signal)
        await self._signal_one(units[0], signum)
        return True

    async def rpc_supervisor_signalProcessGroup(self, name: str, signal: Any) -> Any:
        signum = self._signum(signal)
        units = [u for u in self._group(name) if supervisor_state(u["state"]) in _RUNNING_STATES]
        return await self._many(units, lambda u: self._signal_one(u, signum))

    async def rpc_supervisor_signalAllProcesses(self, signal: Any) -> Any:
        signum = self._signum(signal)
        units = [u for u in self._infos() if supervisor_state(u["state"]) in _RUNNING_STATES]
        return await self._many(units, lambda u: self._signal_one(u, signum))

    async def rpc_supervisor_sendProcessStdin(self, name: str, chars: str) -> bool:
        """Not supported: vastinit does not connect a program's stdin to anything."""
        _, units, whole = self._resolve(name)
        if whole or supervisor_state(units[0]["state"]) not in _RUNNING_STATES:
            raise RPCFault(Faults.NOT_RUNNING, name)
        if not isinstance(chars, str | bytes):
            raise RPCFault(Faults.INCORRECT_PARAMETERS, "chars must be a string")
        raise RPCFault(Faults.FAILED, "vastinit does not support writing to a program's stdin")

    # ---- process logs ------------------------------------------------------------------

    def log_text(self, name: str, channel: str) -> str:
        """A unit's recent output as one text: ``stdout`` is its log (both streams, as its
        log file), ``stderr`` its stderr lines only."""
        entries = self.commands.logs_tail([name], MAX_LOG_LINES)
        if channel == "stderr":
            entries = [e for e in entries if e.get("stream") == "stderr"]
        return "".join(f"{e['text']}\n" for e in entries)

    def _single(self, name: object) -> dict[str, Any]:
        _, units, whole = self._resolve(name)
        if whole and len(units) != 1:
            raise RPCFault(Faults.BAD_NAME, str(name))
        return units[0]

    async def rpc_supervisor_readProcessStdoutLog(self, name: str, offset: int, length: int) -> str:
        unit = self._single(name)
        return _read_slice(self.log_text(unit["name"], "stdout"), offset, length)

    async def rpc_supervisor_readProcessStderrLog(self, name: str, offset: int, length: int) -> str:
        unit = self._single(name)
        return _read_slice(self.log_text(unit["name"], "stderr"), offset, length)

    async def rpc_supervisor_readProcessLog(self, name: str, offset: int, length: int) -> str:
        return await self.rpc_supervisor_readProcessStdoutLog(name, offset, length)

    async def rpc_supervisor_tailProcessStdoutLog(
        self, name: str, offset: int, length: int
    ) -> list[Any]:
        unit = self._single(name)
        return _tail_slice(self.log_text(unit["name"], "stdout"), offset, length)

    async def rpc_supervisor_tailProcessStderrLog(
        self, name: str, offset: int, length: int
    ) -> list[Any]:
        unit = self._single(name)
        return _tail_slice(self.log_text(unit["name"], "stderr"), offset, length)

    async def rpc_supervisor_tailProcessLog(self, name: str, offset: int, length: int) -> list[Any]:
        return await self.rpc_supervisor_tailProcessStdoutLog(name, offset, length)

    async def rpc_supervisor_clearProcessLogs(self, name: str) -> bool:
        """Accepted; vastinit keeps a unit's log (its file rotates by size)."""
        self._single(name)
        return True

    async def rpc_supervisor_clearProcessLog(self, name: str) -> bool:
        return await self.rpc_supervisor_clearProcessLogs(name)

    async def rpc_supervisor_clearAllProcessLogs(self) -> list[dict[str, Any]]:
        return [self._status(u, Faults.SUCCESS, "OK") for u in self._infos()]


def _namespec(unit: dict[str, Any]) -> str:
    group, name = unit["group"], unit["name"]
    return name if group == name else f"{group}:{name}"


def _ordered(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(units, key=lambda u: (u["group"], u["name"]))


def _int_arg(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RPCFault(Faults.INCORRECT_PARAMETERS, f"{what} must be an integer")
    return value


def _read_slice(text: str, offset: object, length: object) -> str:
    """supervisord's readLog semantics (options.readFile): a negative offset reads from the
    end, length 0 reads to the end; BAD_ARGUMENTS for impossible ranges."""
    offset = _int_arg(offset, "offset")
    length = _int_arg(length, "length")
    data = text.encode()
    size = len(data)
    if (offset < 0 and length != 0) or length < 0:
        raise RPCFault(Faults.BAD_ARGUMENTS)
    if offset < 0:
        offset = max(0, size + offset)
    if offset > size:
        raise RPCFault(Faults.BAD_ARGUMENTS)
    end = size if length == 0 else offset + length
    return data[offset:end].decode(errors="replace")


def _tail_slice(text: str, offset: object, length: object) -> list[Any]:
    """supervisord's tailFile: [bytes, new offset, overflow]."""
    offset = _int_arg(offset, "offset")
    length = _int_arg(length, "length")
    if offset < 0 or length < 0:
        raise RPCFault(Faults.BAD_ARGUMENTS)
    data = text.encode()
    size = len(data)
    overflow = False
    if offset > size - 1 or size - offset > length:
        if offset < size - length:
            overflow = True
        offset = max(0, size - length)
    return [data[offset:].decode(errors="replace"), size, overflow]


def _fault_body(code: int, extra: str | None = None) -> bytes:
    fault = RPCFault(code, extra)
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, fault.text), methodresponse=True).encode()


def _config_info(unit: dict[str, Any], raw: dict[str, Any], log_dir: str) -> dict[str, Any]:
    command = raw.get("command", "")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    stop = raw.get("stop", {}) if isinstance(raw.get("stop"), dict) else {}
    restart = raw.get("restart", {}) if isinstance(raw.get("restart"), dict) else {}
    signum = stop.get("signal", 15)
    try:
        stopsignal = int(signals.Signals[f"SIG{str(signum).upper().removeprefix('SIG')}"])
    except KeyError:
        stopsignal = int(signum) if str(signum).isdigit() else 15
    log = os.path.join(log_dir, f"{unit['name']}.log") if log_dir else "auto"
    return {
        "autostart": bool(raw.get("autostart", True)),
        "directory": str(raw.get("working_dir", "")),
        "uid": 0,
        "command": str(command),
        "exitcodes": [0],
        "group": unit["group"],
        "group_prio": 999,
        "inuse": True,
        "killasgroup": stop.get("mode", "group") == "group",
        "name": unit["name"],
        "process_prio": 999,
        "redirect_stderr": True,
        "startretries": int(restart.get("limit", 5))
        if str(restart.get("limit", 5)).isdigit()
        else 5,
        "startsecs": 1,
        "stdout_capture_maxbytes": 0,
        "stdout_events_enabled": False,
        "stdout_logfile": log,
        "stdout_logfile_backups": 3,
        "stdout_logfile_maxbytes": 10 * 1024 * 1024,
        "stdout_syslog": False,
        "stopsignal": stopsignal,
        "stopwaitsecs": 10,
        "stderr_capture_maxbytes": 0,
        "stderr_events_enabled": False,
        "stderr_logfile": "none",
        "stderr_logfile_backups": 0,
        "stderr_logfile_maxbytes": 0,
        "stderr_syslog": False,
        "serverurl": "auto",
    }


def _as_int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
