"""One unit's merged TOML table -> a frozen ``Unit``, reporting every problem it finds.

Validation never stops at the first problem: an invalid field is reported and replaced by
its default so that the rest of the unit (and the cross-unit checks) still run.
"""

from __future__ import annotations

import difflib
import enum
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time
from types import MappingProxyType, UnionType
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from vastinit.config.expand import MAX_EXPANSION, byte_size, expand, template_problem
from vastinit.config.files import MIB, format_size
from vastinit.config.locate import KeyPath
from vastinit.config.values import (
    DURATION_HINT,
    SIZE_HINT,
    parse_duration,
    parse_signal,
    parse_size,
    split_hostport,
)
from vastinit.cron.expression import cron_problem
from vastinit.model import (
    LIVENESS_FAILURES,
    LIVENESS_INTERVAL,
    LIVENESS_TIMEOUT,
    READINESS_INTERVAL,
    READINESS_START_TIMEOUT,
    READINESS_TIMEOUT,
    Condition,
    DependencyCondition,
    Escaped,
    Expose,
    LogSpec,
    MissingProgram,
    Overlap,
    Probe,
    ProbeKind,
    RestartMode,
    RestartPolicy,
    Schedule,
    StopMode,
    StopPolicy,
    Unit,
    UnitType,
)

Report = Callable[[KeyPath, str], None]
"""Receives each problem: the key path it concerns and a one-line message."""

Table = Mapping[str, object]
E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")
N = TypeVar("N", int, float)

UNIT_NAME = re.compile(r"[A-Za-z0-9_.@-]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# environ.MAX_EXPANDED_TOTAL (not imported: environ imports this package's loader)
_EXPANDED_TOTAL = 2 * MIB

_TOP = (
    "description",
    "type",
    "command",
    "working_dir",
    "user",
    "group",
    "environment",
    "env_files",
    "secrets",
    "restart_on_env",
    "enabled",
    "missing_program",
    "condition",
    "depends_on",
    "readiness",
    "liveness",
    "restart",
    "stop",
    "log",
    "schedule",
    "expose",
)
_READINESS_KINDS = ("log", "http", "tcp", "exec", "notify")
_LIVENESS_KINDS = ("http", "tcp", "exec")
_PROBE_TIMING = ("interval", "timeout")
_CONDITION = ("env", "path_exists", "path_missing")
_RESTART = ("policy", "delay", "max_delay", "limit", "window", "essential")
_STOP = ("signal", "mode", "timeout", "escaped", "leftovers")
_LOG = ("file", "max_size", "keep")
_SCHEDULE = ("cron", "timezone", "overlap", "run_on_start")
_EXPOSE = ("port", "target", "path", "label", "auth", "pass_credentials")


def dotted(path: KeyPath) -> str:
    """A key path as the user would write it: ``readiness.http``, ``expose[1].port``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def type_name(value: object) -> str:
    """The TOML name of a parsed value's type, with the value when it is short."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"{'integer' if isinstance(value, int) else 'float'} {value}"
    if isinstance(value, str):
        return f"string {value!r}" if len(value) <= 40 else "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date/time"
    return type(value).__name__


def close_match(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'X'?)`` for the closest of ``choices``, or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def build_unit(name: str, table: Table, report: Report) -> Unit:
    """The ``Unit`` described by ``table``; every problem goes to ``report`` (defaults fill in)."""
    return _Builder(report).unit(name, table)


class _Builder:
    def __init__(self, report: Report) -> None:
        self.report = report

    # -- the unit ---------------------------------------------------------------------------

    def unit(self, name: str, t: Table) -> Unit:
        self.unknown(t, (), _TOP)
        unit_type = self.enum(t, ("type",), UnitType) or UnitType.SERVICE
        schedule = self.schedule(t, unit_type)
        default_mode = (
            RestartMode.ON_FAILURE if unit_type is UnitType.SERVICE else RestartMode.NEVER
        )
        return Unit(
            name=name,
            description=self.string(t, ("description",)) or "",
            type=unit_type,
            command=self.command(t),
            working_dir=self.string(t, ("working_dir",), template=True, nonempty=True),
            user=self.string(t, ("user",), nonempty=True),
            group=self.string(t, ("group",), nonempty=True),
            environment=self.environment(t),
            env_files=self.strings(t, ("env_files",), template=True) or (),
            secrets=self.secrets(t),
            restart_on_env=self.restart_on_env(t, unit_type),
            enabled=_or(self.boolean(t, ("enabled",)), True),
            missing_program=self.enum(t, ("missing_program",), MissingProgram)
            or MissingProgram.FAIL,
            condition=self.condition(t),
            depends_on=self.depends_on(t),
            readiness=self.probe(t, "readiness", _READINESS_KINDS),
            liveness=self.probe(t, "liveness", _LIVENESS_KINDS),
            restart=self.restart(t, default_mode),
            stop=self.stop(t),
            log=self.log(t),
            schedule=schedule,
            expose=self.expose(t),
        )

    def command(self, t: Table) -> tuple[str, ...]:
        path: KeyPath = ("command",)
        value = t.get("command")
        if value is None:
            self.report(path, "command is missing: give an argv array or a shell string")
            return ()
        if isinstance(value, str):
            if not value.strip():
                self.report(path, "command must not be empty")
                return ()
            self.template(path, value)
            return ("/bin/sh", "-c", value)
        if not isinstance(value, list):
            self.wrong(path, "an argv array or a shell string", value)
            return ()
        argv = self.strings(t, path, template=True)
        if argv is None:
            return ()
        if not argv or not argv[0]:
            self.report(path, "command must not be empty: give the program first")
            return ()
        return argv

    def secrets(self, t: Table) -> tuple[str, ...]:
        names = self.strings(t, ("secrets",)) or ()
        for i, name in enumerate(names):
            if not ENV_NAME.fullmatch(name):
                self.report(
                    ("secrets", i),
                    f"secrets: invalid variable name {name!r} "
                    "(letters, digits and '_', not starting with a digit)",
                )
        return names

    def restart_on_env(self, t: Table, unit_type: UnitType) -> tuple[str, ...]:
        names = self.strings(t, ("restart_on_env",)) or ()
        for i, name in enumerate(names):
            if name != "*" and not ENV_NAME.fullmatch(name):
                self.report(
                    ("restart_on_env", i),
                    f"restart_on_env: invalid variable name {name!r} (letters, digits and "
                    "'_', not starting with a digit; or \"*\" for any variable)",
                )
        if names and unit_type is UnitType.CRON:
            self.report(
                ("restart_on_env",),
                "restart_on_env: a cron unit reads its environment at every run; "
                "remove restart_on_env",
            )
        return names

    def environment(self, t: Table) -> Mapping[str, str]:
        table = self.table(t, ("environment",))
        env: dict[str, str] = {}
        for key, value in (table or {}).items():
            path: KeyPath = ("environment", key)
            if not ENV_NAME.fullmatch(key):
                self.report(
                    path,
                    f"environment: invalid variable name {key!r} "
                    "(letters, digits and '_', not starting with a digit)",
                )
            elif not isinstance(value, str):
                hint = ' (quote it: "...")' if isinstance(value, int | float | bool) else ""
                self.report(
                    path, f"{dotted(path)}: expected a string, got {type_name(value)}{hint}"
                )
            elif self.template(path, value):
                env[key] = value
        self.static_expansion(env)
        return MappingProxyType(env)

    def static_expansion(self, env: Mapping[str, str]) -> None:
        """Expand ``environment`` as a start would with nothing set: a value (or all of
        them) too large is already certain here (an expansion bomb), so report it now."""
        seen: dict[str, str] = {}
        left = _EXPANDED_TOTAL
        for key, value in env.items():
            limit = min(MAX_EXPANSION, left)
            try:
                seen[key] = expand(value, seen, limit=limit)
            except ValueError as exc:
                path: KeyPath = ("environment", key)
                if limit < MAX_EXPANSION:
                    self.report(
                        path,
                        f"{dotted(path)}: the expanded environment values add up to more "
                        f"than {format_size(_EXPANDED_TOTAL)}",
                    )
                else:
                    self.report(path, f"{dotted(path)}: {exc}")
                return
            left -= byte_size(seen[key])

    def condition(self, t: Table) -> Condition:
        table = self.table(t, ("condition",))
        if table is None:
            return Condition()
        self.unknown(table, ("condition",), _CONDITION)
        names = self.strings(table, ("condition", "env")) or ()
        for i, var in enumerate(names):
            if not ENV_NAME.fullmatch(var):
                self.report(
                    ("condition", "env", i), f"condition.env: invalid variable name {var!r}"
                )
        return Condition(
            env=names,
            path_exists=self.strings(table, ("condition", "path_exists"), template=True) or (),
            path_missing=self.strings(table, ("condition", "path_missing"), template=True) or (),
        )

    def depends_on(self, t: Table) -> Mapping[str, DependencyCondition]:
        value = t.get("depends_on")
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, dict):
            self.report(
                ("depends_on",),
                f'depends_on: expected a table such as {{ provisioning = "exited" }}, '
                f"got {type_name(value)}",
            )
            return MappingProxyType({})
        deps: dict[str, DependencyCondition] = {}
        for dep in value:
            # An invalid condition still records the edge so unknown units and cycles are found.
            deps[dep] = self.enum(value, ("depends_on", dep), DependencyCondition) or (
                DependencyCondition.STARTED
            )
        return MappingProxyType(deps)

    def probe(self, t: Table, section: str, kinds: tuple[str, ...]) -> Probe | None:
        table = self.table(t, (section,))
        if table is None:
            return None
        base: KeyPath = (section,)
        allowed = (*kinds, *_PROBE_TIMING)
        allowed += ("start_timeout",) if section == "readiness" else ("failures",)
        for key in table:
            if key in ("log", "notify") and section == "liveness":
                self.report(
                    (section, key),
                    f"liveness.{key}: {key} probes are for readiness only; "
                    "liveness takes one of http, tcp, exec",
                )
        self.unknown({k: v for k, v in table.items() if k not in ("log", "notify")}, base, allowed)
        readiness = section == "readiness"
        interval = _or(
            self.duration(table, (*base, "interval"), positive=True),
            READINESS_INTERVAL if readiness else LIVENESS_INTERVAL,
        )
        timeout = _or(
            self.duration(table, (*base, "timeout"), positive=True),
            READINESS_TIMEOUT if readiness else LIVENESS_TIMEOUT,
        )
        start_timeout = READINESS_START_TIMEOUT
        failures = LIVENESS_FAILURES
        if readiness:
            start_timeout = _or(
                self.duration(table, (*base, "start_timeout"), positive=True),
                READINESS_START_TIMEOUT,
            )
        else:
            failures = _or(self.integer(table, (*base, "failures"), minimum=1), LIVENESS_FAILURES)
        chosen = [k for k in kinds if k in table and table[k] is not False]
        if not chosen and any(k in table for k in ("log", "notify") if k not in kinds):
            return None  # already reported: a readiness-only probe in [liveness]
        if len(chosen) != 1:
            found = f"found {', '.join(chosen)}" if chosen else "found none"
            self.report(base, f"[{section}] must name exactly one of {', '.join(kinds)} ({found})")
            return None
        kind = chosen[0]
        target = self.probe_target(table, (*base, kind), kind)
        if target is None:
            return None
        return Probe(
            kind=ProbeKind(kind),
            target=target,
            interval=interval,
            timeout=timeout,
            start_timeout=start_timeout,
            failures=failures,
        )

    def probe_target(self, t: Table, path: KeyPath, kind: str) -> str | tuple[str, ...] | None:
        if kind == "notify":
            if self.boolean(t, path) is not True:
                return None
            return ""
        if kind == "exec":
            argv = self.strings(t, path, template=True)
            if argv is not None and (not argv or not argv[0]):
                self.report(path, f"{dotted(path)}: expected a non-empty argv array, program first")
                return None
            return argv
        text = self.string(t, path, template=True, nonempty=True)
        if text is None or "${" in text:
            return text  # a templated target is checked for shape only after expansion
        literal = expand(text, {})
        problem = None
        if kind == "log":
            try:
                re.compile(literal)
            except re.error as exc:
                problem = f"invalid regular expression {text!r}: {exc}"
            except (RecursionError, OverflowError, MemoryError):
                problem = f"regular expression too complex: {text[:60]!r}"
        elif kind == "http":
            problem = _url_problem(literal)
        elif kind == "tcp":
            problem = _hostport_problem(literal)
        if problem is not None:
            self.report(path, f"{dotted(path)}: {problem}")
            return None
        return text

    def restart(self, t: Table, default_mode: RestartMode) -> RestartPolicy:
        table = self.table(t, ("restart",))
        if table is None:
            return RestartPolicy(mode=default_mode)
        base: KeyPath = ("restart",)
        self.unknown(table, base, _RESTART)
        d = RestartPolicy()
        delay = _or(self.duration(table, (*base, "delay")), d.delay)
        max_delay = _or(self.duration(table, (*base, "max_delay")), d.max_delay)
        if max_delay < delay:
            self.report(
                (*base, "max_delay"), "restart.max_delay must not be shorter than restart.delay"
            )
        return RestartPolicy(
            mode=self.enum(table, (*base, "policy"), RestartMode) or default_mode,
            delay=delay,
            max_delay=max_delay,
            limit=_or(self.integer(table, (*base, "limit"), minimum=0), d.limit),
            window=_or(self.duration(table, (*base, "window"), positive=True), d.window),
            essential=_or(self.boolean(table, (*base, "essential")), d.essential),
        )

    def stop(self, t: Table) -> StopPolicy:
        table = self.table(t, ("stop",))
        d = StopPolicy()
        if table is None:
            return d
        base: KeyPath = ("stop",)
        self.unknown(table, base, _STOP)
        signum = self.parsed(
            table, (*base, "signal"), parse_signal, "a signal name or number", str | int
        )
        return StopPolicy(
            signal=_or(signum, d.signal),
            mode=self.enum(table, (*base, "mode"), StopMode) or d.mode,
            timeout=_or(self.duration(table, (*base, "timeout")), d.timeout),
            escaped=self.enum(table, (*base, "escaped"), Escaped) or d.escaped,
            leftovers=self.enum(table, (*base, "leftovers"), Escaped) or d.leftovers,
        )

    def log(self, t: Table) -> LogSpec:
        table = self.table(t, ("log",))
        d = LogSpec()
        if table is None:
            return d
        base: KeyPath = ("log",)
        self.unknown(table, base, _LOG)
        max_size = self.parsed(table, (*base, "max_size"), parse_size, SIZE_HINT, str | int)
        if max_size is not None and max_size < 1:
            self.report((*base, "max_size"), "log.max_size must be at least 1 byte")
            max_size = None
        return LogSpec(
            file=self.string(table, (*base, "file"), template=True),
            max_size=_or(max_size, d.max_size),
            keep=_or(self.integer(table, (*base, "keep"), minimum=0), d.keep),
        )

    def schedule(self, t: Table, unit_type: UnitType) -> Schedule | None:
        table = self.table(t, ("schedule",))
        base: KeyPath = ("schedule",)
        if unit_type is not UnitType.CRON:
            if table is not None:
                self.report(base, '[schedule] is only for type = "cron" units')
            return None
        if table is None:
            self.report(("type",), 'type = "cron" needs a [schedule] table with a cron expression')
            return None
        self.unknown(table, base, _SCHEDULE)
        expr = self.string(table, (*base, "cron"), nonempty=True)
        timezone = self.string(table, (*base, "timezone"), nonempty=True) or "UTC"
        good_zone = True
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory
            good_zone = False
            self.report(
                (*base, "timezone"),
                f"schedule.timezone: unknown time zone {timezone!r} "
                "(use an IANA name such as 'UTC' or 'Europe/Berlin')",
            )
        if expr is None:
            if "cron" not in table:
                self.report(base, '[schedule] needs cron = "..." (5 fields or @hourly/@daily...)')
            return None
        if good_zone:
            problem = cron_problem(expr, timezone)
            if problem is not None:
                self.report((*base, "cron"), f"schedule.cron: {problem}")
        return Schedule(
            cron=expr,
            timezone=timezone,
            overlap=self.enum(table, (*base, "overlap"), Overlap) or Overlap.SKIP,
            run_on_start=_or(self.boolean(table, (*base, "run_on_start")), False),
        )

    def expose(self, t: Table) -> tuple[Expose, ...]:
        value = t.get("expose")
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.report(("expose",), "expose: expected [[expose]] tables")
            return ()
        out: list[Expose] = []
        seen: set[int] = set()
        for i, entry in enumerate(value):
            base: KeyPath = ("expose", i)
            self.unknown(entry, base, _EXPOSE)
            port = self.port(entry, (*base, "port"))
            target = self.port(entry, (*base, "target"))
            path = self.string(entry, (*base, "path")) or "/"
            if not path.startswith("/"):
                self.report((*base, "path"), f"{dotted((*base, 'path'))}: must start with '/'")
            label = self.string(entry, (*base, "label")) or ""
            auth = _or(self.boolean(entry, (*base, "auth")), True)
            shared = _or(self.boolean(entry, (*base, "pass_credentials")), False)
            if port is None or target is None:
                continue
            if port in seen:
                self.report(
                    (*base, "port"), f"{dotted((*base, 'port'))}: port {port} is exposed twice"
                )
            seen.add(port)
            out.append(
                Expose(
                    port=port,
                    target=target,
                    path=path,
                    label=label,
                    auth=auth,
                    pass_credentials=shared,
                )
            )
        return tuple(out)

    def port(self, t: Table, path: KeyPath) -> int | None:
        if path[-1] not in t:
            self.report(path[:-1], f"{dotted(path[:-1])}: {path[-1]} is missing (1..65535)")
            return None
        return self.integer(t, path, minimum=1, maximum=65535)

    # -- typed getters: each reports a wrong type and returns None -------------------------

    def unknown(self, t: Table, base: KeyPath, allowed: tuple[str, ...]) -> None:
        for key in t:
            if key not in allowed:
                path = (*base, key)
                self.report(path, f"unknown key '{dotted(path)}'{close_match(key, allowed)}")

    def wrong(self, path: KeyPath, expected: str, value: object) -> None:
        self.report(path, f"{dotted(path)}: expected {expected}, got {type_name(value)}")

    def table(self, t: Table, path: KeyPath) -> Table | None:
        value = t.get(str(path[-1]))
        if value is None:
            return None
        if not isinstance(value, dict):
            self.wrong(path, f"a table ([{dotted(path)}])", value)
            return None
        return value

    def string(
        self, t: Table, path: KeyPath, *, template: bool = False, nonempty: bool = False
    ) -> str | None:
        value = t.get(str(path[-1]))
        if value is None:
            return None
        if not isinstance(value, str):
            self.wrong(path, "a string", value)
            return None
        if nonempty and not value.strip():
            self.report(path, f"{dotted(path)}: must not be empty")
            return None
        if template:
            self.template(path, value)
        elif not self.no_nul(path, value):
            return None
        return value

    def strings(self, t: Table, path: KeyPath, *, template: bool = False) -> tuple[str, ...] | None:
        value = t.get(str(path[-1]))
        if value is None:
            return None
        if not isinstance(value, list):
            self.wrong(path, "an array of strings", value)
            return None
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.wrong((*path, i), "a string", item)
                ok = False
            elif template:
                self.template((*path, i), item)
            else:
                ok = self.no_nul((*path, i), item) and ok
        return tuple(value) if ok else None

    def boolean(self, t: Table, path: KeyPath) -> bool | None:
        value = t.get(str(path[-1]))
        if value is None or isinstance(value, bool):
            return value
        self.wrong(path, "a boolean (true or false)", value)
        return None

    def integer(
        self, t: Table, path: KeyPath, *, minimum: int, maximum: int | None = None
    ) -> int | None:
        value = t.get(str(path[-1]))
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.wrong(path, "an integer", value)
            return None
        if value < minimum or (maximum is not None and value > maximum):
            limits = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            self.report(path, f"{dotted(path)}: {value} is out of range (must be {limits})")
            return None
        return value

    def parsed(
        self,
        t: Table,
        path: KeyPath,
        parse: Callable[[Any], N],
        hint: str,
        types: UnionType | type,
    ) -> N | None:
        """``parse`` of the value at ``path`` (of ``types``, never a bool), or None after
        reporting why it is unusable; None too when the key is absent."""
        value = t.get(str(path[-1]))
        if value is None:
            return None
        if not isinstance(value, types) or isinstance(value, bool):
            self.wrong(path, hint, value)
            return None
        try:
            return parse(value)
        except ValueError as exc:
            self.report(path, f"{dotted(path)}: {exc}")
            return None

    def duration(self, t: Table, path: KeyPath, *, positive: bool = False) -> float | None:
        seconds = self.parsed(t, path, parse_duration, DURATION_HINT, str | int | float)
        if seconds is None:
            return None
        if positive and seconds <= 0:
            self.report(path, f"{dotted(path)}: must be longer than 0")
            return None
        return seconds

    def enum(self, t: Table, path: KeyPath, cls: type[E]) -> E | None:
        value = t.get(str(path[-1]))
        if value is None:
            return None
        choices = [m.value for m in cls]
        allowed = " | ".join(choices)
        if not isinstance(value, str):
            self.wrong(path, f"one of {allowed}", value)
            return None
        try:
            return cls(value)
        except ValueError:
            self.report(
                path,
                f"{dotted(path)}: {value!r} is not one of {allowed}{close_match(value, choices)}",
            )
            return None

    def template(self, path: KeyPath, text: str) -> bool:
        """Report a NUL byte or a malformed template in ``text``; True when it is fine."""
        if not self.no_nul(path, text):
            return False
        problem = template_problem(text)
        if problem is not None:
            self.report(path, f"{dotted(path)}: {problem}")
            return False
        return True

    def no_nul(self, path: KeyPath, text: str) -> bool:
        # execve cannot pass a NUL byte in an argument, a variable or a path.
        if "\0" in text:
            self.report(
                path, f"{dotted(path)}: contains a NUL byte (\\x00), which no program can receive"
            )
            return False
        return True


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def _url_problem(url: str) -> str | None:
    if not url.startswith(("http://", "https://")):
        return f"expected an http:// or https:// URL, got {url!r}"
    if not urllib.parse.urlsplit(url).hostname:
        return f"URL {url!r} has no host"
    return None


def _hostport_problem(text: str) -> str | None:
    try:
        split_hostport(text)
    except ValueError as exc:
        return str(exc)
    return None
