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
from vastinit.config.locate import KeyPath, Locator
from vastinit.config.validate import UNIT_NAME, build_unit, close_match, dotted
from vastinit.errors import ConfigError, ConfigProblem
from vastinit.model import Unit

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
        self.add(file, line, source.name, message)


def load_units(dirs: Sequence[Path]) -> dict[str, Unit]:
    """Every unit on the search path ``dirs``, drop-ins merged; ConfigError lists all problems."""
    problems = _Problems()
    sources = _discover(dirs, problems)
    units: dict[str, Unit] = {}
    for name in sorted(sources):
        source = sources[name]
        if source.base is None:
            for dropin in source.dropins:
                hint = close_match(name, [n for n, s in sources.items() if s.base is not None])
                problems.add(
                    dropin, 0, name, f"drop-in for a unit that does not exist: no {name}.toml{hint}"
                )
            continue
        _read_and_merge(source, problems)
        if not source.ok:
            continue
        unit = build_unit(name, source.table, functools.partial(problems.at, source))
        units[name] = dataclasses.replace(
            unit, source=str(source.base), raw=MappingProxyType(source.table)
        )
    known = {name for name, s in sources.items() if s.base is not None}
    _check_dependencies(units, sources, known, problems)
    _check_exposed_ports(units, sources, problems)
    if problems.items:
        raise ConfigError(sorted(problems.items, key=lambda p: (p.file, p.line)))
    return units


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
            if entry.suffix == ".toml" and entry.is_file():
                name = entry.name[: -len(".toml")]
                if _valid_name(name, entry, problems):
                    # A later directory's NAME.toml replaces an earlier one whole.
                    sources.setdefault(name, _Source(name)).base = entry
            elif entry.name.endswith(".d") and entry.is_dir():
                name = entry.name[: -len(".d")]
                dropins = sorted(p for p in entry.glob("*.toml") if p.is_file())
                if dropins and _valid_name(name, entry, problems):
                    sources.setdefault(name, _Source(name)).dropins.extend(dropins)
    return sources


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
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        problems.add(path, 0, unit, f"cannot read: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError as exc:
        problems.add(path, 0, unit, f"not UTF-8 text (byte {exc.start})")
        return None
    problems.locators[path] = Locator(text)
    try:
        return tomllib.loads(text)
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
