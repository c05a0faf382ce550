"""The unit search path: find files, parse them, merge drop-ins, validate, check across units.

Every problem in every file is collected; ``load_units`` raises one ``ConfigError`` with all
of them, so a bad edit never half-applies.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vastinit import graph
from vastinit.config import ini
from vastinit.config.crontab import Crontabs
from vastinit.config.files import MIB, FileRefused, read_bounded
from vastinit.config.locate import KeyPath, Locator, too_deep_line
from vastinit.config.validate import UNIT_NAME, Report, build_unit, close_match, dotted
from vastinit.errors import ConfigError, ConfigProblem
from vastinit.model import Unit

MAX_UNIT_FILE = 1 * MIB
"""The largest unit file (or drop-in) vastinit reads; a real one is a few hundred bytes."""
MAX_DEPTH = 32
"""The deepest nesting of tables and arrays (including dotted keys) in a unit file."""

_TOML_LINE = re.compile(r"\s*\(at line (\d+), column \d+\)$")
_TOML_END = re.compile(r"\s*\(at end of document\)$")


@dataclass
class _Source:
    """One unit's files and, once parsed, its merged table and where each key came from."""

    name: str
    base: Path | None = None
    dropins: list[Path] = field(default_factory=list)
    table: dict[str, Any] = field(default_factory=dict)
    # key path -> file that set it last; a path's file is that of its longest listed prefix
    origin: dict[KeyPath, Path] = field(default_factory=dict)
    ok: bool = True
    preset: dict[str, Any] | None = None  # the base's table when it is no TOML file (crontab)
    line: int = 0  # the base's line, when the whole base is one line of its file


class _Problems:
    """Collects problems, turning key paths into FILE:LINE with one Locator per file."""

    def __init__(self) -> None:
        self.items: list[ConfigProblem] = []
        self.locators: dict[Path, Locator] = {}
        self.last_line: dict[Path, int] = {}

    def add(self, file: Path, line: int, unit: str, message: str) -> None:
        self.items.append(ConfigProblem(str(file), line, unit, message))

    def at(self, source: _Source, path: KeyPath, message: str) -> None:
        file = _origin(source, path)
        locator = self.locators.get(file)
        line = locator.line(path) if locator is not None else 0
        if source.line and file == source.base:
            line = source.line
        self.add(file, line, source.name, message)


def load_units(
    dirs: Sequence[Path],
    crontabs: Crontabs | None = None,
    *,
    ini_files: Sequence[Path] | None = None,
    warnings: list[ConfigProblem] | None = None,
) -> dict[str, Unit]:
    """Every unit on the search path ``dirs``, drop-ins merged, every supervisord program
    (``ini_files``: default, those in ``dirs`` and, in the box role, /etc/supervisor's)
    and, with ``crontabs``, every crontab job line (vastinit.config.crontab; a bad line is
    a diagnostic of ``crontabs``, not a problem here: the other units still load).
    ConfigError lists all problems; ``warnings`` receives the rest."""
    problems = _Problems()
    sources = _discover(dirs, problems)
    if crontabs is not None:
        _add_crontab_sources(crontabs, sources)
    units: dict[str, Unit] = {}
    # ---- supervisord INI programs (vastinit.config.ini) ----
    programs = _ini_programs(dirs, ini_files, problems, warnings)
    for name in sorted(sources):
        source = sources[name]
        if source.base is None:
            for dropin in source.dropins:
                hint = close_match(name, [n for n, s in sources.items() if s.base is not None])
                problems.add(
                    dropin, 0, name, f"drop-in for a unit that does not exist: no {name}.toml{hint}"
                )
            continue
        try:
            _read_and_merge(source, problems)
            if not source.ok:
                continue
            unit = build_unit(name, source.table, functools.partial(problems.at, source))
        except Exception as exc:  # a bug on hostile input must be a problem, not a crash
            problems.add(
                source.base or Path(name), 0, name, f"internal error: {type(exc).__name__}: {exc}"
            )
            continue
        units[name] = dataclasses.replace(
            unit, source=str(source.base), raw=MappingProxyType(source.table)
        )
    known = {name for name, s in sources.items() if s.base is not None}
    _add_ini_units(programs, sources, units, known, problems, warnings)
    try:
        _check_dependencies(units, sources, known, problems)
        _check_exposed_ports(units, sources, problems)
    except Exception as exc:
        problems.add(Path(dirs[0]) if dirs else Path("."), 0, "*", f"internal error: {exc!r}")
    if problems.items:
        raise ConfigError(sorted(problems.items, key=lambda p: (p.file, p.line)))
    return units


def _ini_programs(
    dirs: Sequence[Path],
    ini_files: Sequence[Path] | None,
    problems: _Problems,
    warnings: list[ConfigProblem] | None,
) -> list[ini.Program]:
    files = [*ini.default_files(), *ini.files_in(dirs)] if ini_files is None else ini_files

    def warn(file: Path, line: int, unit: str, message: str) -> None:
        if warnings is not None:
            warnings.append(ConfigProblem(str(file), line, unit, f"warning: {message}"))

    try:
        return ini.read_programs(files, problems.add, warn)
    except Exception as exc:  # a bug on hostile input must be a problem, not a crash
        problems.add(Path(files[0]) if files else Path("."), 0, "*", f"internal error: {exc!r}")
        return []


def _add_ini_units(
    programs: Sequence[ini.Program],
    sources: dict[str, _Source],
    units: dict[str, Unit],
    known: set[str],
    problems: _Problems,
    warnings: list[ConfigProblem] | None,
) -> None:
    """Build each supervisord program as a unit; a TOML unit of the same name wins."""
    for program in programs:
        name, file = program.name, program.file
        if not UNIT_NAME.fullmatch(name):
            problems.add(file, program.line, name, "invalid program name for a unit")
            continue
        if name in known:
            first = sources[name].base
            if first is not None and first.suffix == ".toml":
                message = f"warning: {first} defines the same unit; the TOML unit wins"
                if warnings is not None:
                    warnings.append(ConfigProblem(str(file), program.line, name, message))
                continue
            problems.add(file, program.line, name, f"program {name} is defined twice")
            continue

        def report(path: KeyPath, message: str, program: ini.Program = program) -> None:
            problems.add(program.file, program.line_of(path), program.name, message)

        try:
            unit = build_unit(name, program.table, report)
        except Exception as exc:
            problems.add(file, program.line, name, f"internal error: {type(exc).__name__}: {exc}")
            continue
        known.add(name)
        sources[name] = _Source(name, base=file, origin={(): file})
        units[name] = dataclasses.replace(
            unit, source=str(file), raw=MappingProxyType(program.table)
        )


def _discover(dirs: Sequence[Path], problems: _Problems) -> dict[str, _Source]:
    sources: dict[str, _Source] = {}
    for directory in dirs:
        try:
            entries = sorted(Path(directory).iterdir())
        except OSError:
            continue  # a missing directory on the search path is normal
        for entry in entries:
            # Hidden files are editor droppings (.#x.toml, .x.toml.swp), never units.
            if entry.name.startswith("."):
                continue
            # Anything named *.toml but a directory is a unit file: a FIFO or a device is
            # then reported ("not a regular file"), never skipped in silence or read.
            if entry.suffix == ".toml" and not entry.is_dir():
                name = entry.name[: -len(".toml")]
                if _valid_name(name, entry, problems):
                    # A later directory's NAME.toml replaces an earlier one whole.
                    sources.setdefault(name, _Source(name)).base = entry
            elif entry.name.endswith(".d") and entry.is_dir():
                name = entry.name[: -len(".d")]
                dropins = sorted(p for p in entry.glob("*.toml") if not p.is_dir())
                if dropins and _valid_name(name, entry, problems):
                    sources.setdefault(name, _Source(name)).dropins.extend(dropins)
    return sources


def _add_crontab_sources(crontabs: Crontabs, sources: dict[str, _Source]) -> None:
    """The crontab hook: each job line is a source whose base table is already parsed; its
    drop-ins (``NAME.d/*.toml``) merge on it as on a unit file."""
    files = {name for name, s in sources.items() if s.base is not None}
    for entry in crontabs.scan(files):
        source = sources.setdefault(entry.name, _Source(entry.name))
        source.base, source.preset, source.line = entry.file, entry.table, entry.line


def _valid_name(name: str, path: Path, problems: _Problems) -> bool:
    if UNIT_NAME.fullmatch(name):
        return True
    problems.add(
        path,
        0,
        name,
        "invalid unit name: use only letters, digits and - _ . @ in the file name",
    )
    return False


def _read_and_merge(source: _Source, problems: _Problems) -> None:
    assert source.base is not None
    for index, path in enumerate([source.base, *source.dropins]):
        if index == 0 and source.preset is not None:
            table: dict[str, Any] | None = copy.deepcopy(source.preset)
        else:
            table = _parse(path, source.name, problems)
        if table is None:
            source.ok = False
            continue
        if index == 0:
            source.table = table
            source.origin = {(): path}
        else:
            _merge(source.table, table, (), source.origin, path)


def _parse(path: Path, unit: str, problems: _Problems) -> dict[str, Any] | None:
    try:
        data = read_bounded(path, MAX_UNIT_FILE, "unit file")
    except FileRefused as exc:
        problems.add(path, 0, unit, str(exc))
        return None
    except OSError as exc:
        problems.add(path, 0, unit, f"cannot read: {exc.strerror or exc}")
        return None
    return _parse_bytes(data, path, unit, problems)


def _parse_bytes(data: bytes, path: Path, unit: str, problems: _Problems) -> dict[str, Any] | None:
    """A unit file's bytes (at most MAX_UNIT_FILE) as a TOML table, or None after
    reporting why not."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.add(path, line, unit, f"not UTF-8 text (byte {exc.start})")
        return None
    too_deep = f"nested deeper than {MAX_DEPTH} levels of tables and arrays"
    deep = too_deep_line(text, MAX_DEPTH)
    if deep is not None:
        problems.add(path, deep, unit, too_deep)
        return None
    problems.locators[path] = Locator(text)
    try:
        table = tomllib.loads(text)
    except RecursionError:
        problems.add(path, 0, unit, too_deep)
        return None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = 0
        match = _TOML_LINE.search(message)
        if match is not None:
            line = int(match.group(1))
            message = message[: match.start()]
        elif (end := _TOML_END.search(message)) is not None:
            line = max(1, len(text.splitlines()))
            message = message[: end.start()]
        problems.add(path, line, unit, f"TOML syntax error: {message}")
        return None
    deep_path = _too_deep(table, MAX_DEPTH)
    if deep_path is not None:
        problems.add(path, problems.locators[path].line(deep_path), unit, too_deep)
        return None
    return table


def _too_deep(table: dict[str, Any], limit: int) -> KeyPath | None:
    """The first key path whose value is nested more than ``limit`` levels, or None."""
    stack: list[tuple[KeyPath, object, int]] = [((), table, 0)]
    while stack:
        path, value, depth = stack.pop()
        items: list[tuple[str | int, object]]
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, list):
            items = list(enumerate(value))
        else:
            continue
        for key, child in items:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return (*path, key)
                stack.append(((*path, key), child, depth + 1))
    return None


def _merge(
    base: dict[str, Any],
    overlay: Mapping[str, Any],
    prefix: KeyPath,
    origin: dict[KeyPath, Path],
    file: Path,
) -> None:
    """Merge ``overlay`` into ``base``: tables merge recursively, anything else replaces."""
    for key, value in overlay.items():
        path = (*prefix, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, path, origin, file)
            continue
        base[key] = copy.deepcopy(value)
        for stale in [p for p in origin if p[: len(path)] == path]:
            del origin[stale]
        origin[path] = file


def _origin(source: _Source, path: KeyPath) -> Path:
    for size in range(len(path), -1, -1):
        found = source.origin.get(path[:size])
        if found is not None:
            return found
    assert source.base is not None
    return source.base


def _check_dependencies(
    units: Mapping[str, Unit],
    sources: Mapping[str, _Source],
    known: set[str],
    problems: _Problems,
) -> None:
    for name, unit in units.items():
        for dep in unit.depends_on:
            path = ("depends_on", dep)
            if dep == name:
                problems.at(sources[name], path, f"{dotted(path)}: a unit cannot depend on itself")
            elif dep not in known:
                problems.at(
                    sources[name],
                    path,
                    f"{dotted(path)}: unknown unit {dep!r}{close_match(dep, sorted(known))}",
                )
    # Self-dependencies are reported above; leave them out so each cycle is named once.
    acyclic_self = {
        name: dataclasses.replace(
            unit,
            depends_on=MappingProxyType({d: c for d, c in unit.depends_on.items() if d != name}),
        )
        for name, unit in units.items()
    }
    for cycle in graph.cycles(acyclic_self):
        first, second = cycle[0], cycle[1]
        problems.at(
            sources[first],
            ("depends_on", second),
            f"dependency cycle: {' -> '.join(cycle)}",
        )


def _check_exposed_ports(
    units: Mapping[str, Unit], sources: Mapping[str, _Source], problems: _Problems
) -> None:
    # Only enabled units claim a port: a disabled unit's route is never served.
    owner: dict[int, str] = {}
    for name in sorted(units):
        unit = units[name]
        if not unit.enabled:
            continue
        for index, expose in enumerate(unit.expose):
            first = owner.setdefault(expose.port, name)
            if first != name:
                path = ("expose", index, "port")
                problems.at(
                    sources[name],
                    path,
                    f"{dotted(path)}: port {expose.port} is exposed by both {first} and {name}",
                )


# ---- transient units (created over the control API, in no file) ------------------------

MAX_TRANSIENT_UNITS = 16
"""How many transient units may exist at once (``POST /v1/units`` refuses more)."""


def transient_source(name: str) -> str:
    """The pseudo file name of a transient unit in problems and ``ctl show``."""
    return f"<transient {name}>"


def load_transient(name: str, text: str, units: Mapping[str, Unit]) -> Unit:
    """The transient unit ``name`` described by the unit file text ``text``, checked against
    the running ``units`` (its dependencies must exist there, its exposed ports be free).

    The text goes through the same pipeline as a unit file (size, nesting, TOML syntax,
    validation, dependencies), plus the rules of transient units: not ``essential``, no
    ``user``, ``group`` or ``secrets``, no ``[[expose]]`` with ``auth = false`` or
    ``pass_credentials = true``. ConfigError lists every problem as
    ``<transient NAME>:LINE: unit NAME: message``. The name itself (its validity, whether
    it is taken) is the caller's to check.
    """
    path = Path(transient_source(name))
    problems = _Problems()
    source = _Source(name, base=path)
    # A lone surrogate (JSON allows "\\ud800") becomes bytes that are not UTF-8: a problem.
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) > MAX_UNIT_FILE:
        problems.add(path, 0, name, _too_large_text(len(data)))
        raise ConfigError(problems.items)
    table = _parse_bytes(data, path, name, problems)
    if table is None:
        raise ConfigError(problems.items)
    source.table, source.origin = table, {(): path}
    report = functools.partial(problems.at, source)
    try:
        unit = build_unit(name, table, report)
        _check_transient_rules(unit, table, report)
        _check_transient_links(unit, units, report)
    except Exception as exc:  # a bug on hostile input must be a problem, not a crash
        problems.add(path, 0, name, f"internal error: {type(exc).__name__}: {exc}")
    if problems.items:
        raise ConfigError(sorted(problems.items, key=lambda p: p.line))
    return dataclasses.replace(unit, source=str(path), raw=MappingProxyType(table), transient=True)


def _too_large_text(size: int) -> str:
    return f"unit file is {size} bytes; the limit is {MAX_UNIT_FILE // MIB} MiB"


def _check_transient_rules(unit: Unit, table: Mapping[str, Any], report: Report) -> None:
    """What a transient unit may not do: the API that creates one is reachable from the
    portal, so it gets no more than a unit needs to run a helper like a tunnel."""
    if unit.restart.essential:
        report(("restart", "essential"), "restart.essential: a transient unit cannot be essential")
    for key in ("user", "group"):
        if key in table:
            report((key,), f"{key}: a transient unit cannot set {key}")
    if "secrets" in table:
        report(("secrets",), "secrets: a transient unit cannot receive withheld variables")
    for index, expose in enumerate(unit.expose):
        if not expose.auth:
            path = ("expose", index, "auth")
            report(path, f"{dotted(path)}: a transient unit cannot expose a port without auth")
        if expose.pass_credentials:
            path = ("expose", index, "pass_credentials")
            report(path, f"{dotted(path)}: a transient unit cannot receive the edge credentials")


def _check_transient_links(unit: Unit, units: Mapping[str, Unit], report: Report) -> None:
    """Its dependencies exist among ``units``; its exposed ports are nobody else's."""
    path: KeyPath
    for dep in unit.depends_on:
        path = ("depends_on", dep)
        if dep == unit.name:
            report(path, f"{dotted(path)}: a unit cannot depend on itself")
        elif dep not in units:
            report(path, f"{dotted(path)}: unknown unit {dep!r}{close_match(dep, sorted(units))}")
    if not unit.enabled:
        return
    owner = {e.port: u.name for u in units.values() if u.enabled for e in u.expose}
    for index, expose in enumerate(unit.expose):
        first = owner.get(expose.port)
        if first is not None:
            path = ("expose", index, "port")
            report(path, f"{dotted(path)}: port {expose.port} is already exposed by {first}")
