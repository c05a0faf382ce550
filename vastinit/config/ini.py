"""supervisord INI files -> unit tables: ``[program:x]`` sections as vastinit units.

Each program (each process of a ``numprocs`` program) becomes the table a TOML unit file
would hold, with the INI line of every key, so that it goes through the same validation
(``build_unit``) and its problems read ``FILE:LINE: unit NAME: message``. ``vastinit
import`` writes the same tables as TOML (``to_toml``), so both load to the same ``Unit``.

supervisord's own rules are followed: ``%(ENV_X)s``, ``%(program_name)s``,
``%(process_num)d``, ``%(group_name)s``, ``%(numprocs)d``, ``%(here)s`` and
``%(host_node_name)s`` expansions (Python ``%`` formatting, done when the file is read),
``command`` split like a shell (no shell runs it), ``environment`` as ``KEY="val",K2=v``,
inline ``;`` comments. An option vastinit cannot honour is a warning naming FILE:LINE.
"""

from __future__ import annotations

import configparser
import glob
import itertools
import os
import re
import shlex
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vastinit.config.files import MIB, FileRefused, read_bounded
from vastinit.config.locate import KeyPath
from vastinit.role import box_role

MAX_INI_FILE = 1 * MIB
MAX_INCLUDES = 256
"""The most INI files one supervisord.conf may pull in through ``[include] files=``."""
SUPERVISOR_DIR = Path("/etc/supervisor")
"""Where supervisord's configuration lives (``$VASTINIT_SUPERVISOR_DIR`` overrides)."""
INI_SUFFIXES = (".conf", ".ini")

Problem = Callable[[Path, int, str, str], None]
"""Receives (file, line, unit or section name, message)."""

_KEY = re.compile(r"\s*([^=:\s;#][^=:]*?)\s*[=:]")
_SECTION = re.compile(r"\s*\[([^\]]+)\]")

# Every [program:x] option supervisord 4 documents, and how vastinit takes it.
MAPPED = frozenset(
    {
        "command",
        "process_name",
        "numprocs",
        "numprocs_start",
        "directory",
        "user",
        "umask",
        "environment",
        "autostart",
        "autorestart",
        "exitcodes",
        "startsecs",
        "startretries",
        "stopsignal",
        "stopwaitsecs",
        "stopasgroup",
        "killasgroup",
        "priority",
        "redirect_stderr",
        "stdout_logfile",
        "stdout_logfile_maxbytes",
        "stdout_logfile_backups",
        "stderr_logfile",
        "stderr_logfile_maxbytes",
        "stderr_logfile_backups",
    }
)
UNSUPPORTED = frozenset(
    {
        "stdout_capture_maxbytes",
        "stderr_capture_maxbytes",
        "stdout_events_enabled",
        "stderr_events_enabled",
        "stdout_syslog",
        "stderr_syslog",
        "serverurl",
    }
)
# Log file names that mean "no file of its own": vastinit's stdout already has every line.
_NO_FILE = frozenset(
    {"none", "off", "/dev/stdout", "/dev/stderr", "/dev/fd/1", "/dev/fd/2", "/dev/null"}
)
# Sections that configure supervisord itself: vastinit has its own equivalents.
_SERVER_SECTIONS = ("supervisord", "supervisorctl", "unix_http_server", "inet_http_server")


def supervisor_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("VASTINIT_SUPERVISOR_DIR") or SUPERVISOR_DIR)


def default_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """The box role's INI files: ``supervisord.conf`` (its ``[include]`` is followed when
    read) and ``conf.d/*.conf``; none in the workstation role."""
    if not box_role(env):
        return []
    base = supervisor_dir(env)
    files = [base / "supervisord.conf"] if (base / "supervisord.conf").is_file() else []
    return files + sorted((base / "conf.d").glob("*.conf"))


def files_in(dirs: Sequence[Path]) -> list[Path]:
    """The INI files (``*.conf``, ``*.ini``) directly in the unit directories ``dirs``."""
    found: list[Path] = []
    for directory in dirs:
        try:
            entries = sorted(Path(directory).iterdir())
        except OSError:
            continue
        found += [
            e
            for e in entries
            if e.suffix in INI_SUFFIXES and not e.name.startswith(".") and not e.is_dir()
        ]
    return found


@dataclass
class Program:
    """One process of one ``[program:x]``: the unit table it stands for, and where each
    key came from."""

    name: str
    file: Path
    line: int  # the [program:x] header
    table: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)
    notes: dict[KeyPath, str] = field(default_factory=dict)  # approximate mappings
    priority: int = 999

    def line_of(self, path: KeyPath) -> int:
        for size in range(len(path), 0, -1):
            found = self.lines.get(path[:size])
            if found is not None:
                return found
        return self.line


@dataclass
class _Section:
    name: str
    line: int
    values: dict[str, str]
    lines: dict[str, int]


def read_programs(files: Sequence[Path], problem: Problem, warn: Problem) -> list[Program]:
    """Every program in ``files`` (``[include]`` globs followed), in file order."""
    programs: list[Program] = []
    groups: dict[str, tuple[Path, int, list[str]]] = {}
    seen: set[Path] = set()
    queue = list(files)
    while queue:
        path = queue.pop(0)
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        if len(seen) > MAX_INCLUDES:
            problem(path, 0, "*", f"more than {MAX_INCLUDES} INI files; the rest are not read")
            break
        sections = _parse(path, problem)
        if sections is None:
            continue
        for section in sections:
            kind, _, name = section.name.partition(":")
            kind = kind.strip()
            name = name.strip()
            if kind == "include":
                queue += _includes(path, section, problem)
            elif kind == "program" and name:
                programs += _program(path, section, name, problem, warn)
            elif kind == "group" and name:
                members = [m.strip() for m in section.values.get("programs", "").split(",")]
                groups[name] = (path, section.line, [m for m in members if m])
                for key in section.values:
                    if key not in ("programs", "priority"):
                        line = section.lines[key]
                        warn(path, line, name, f"[group:{name}] {key}: not supported; ignored")
            elif kind in _SERVER_SECTIONS or kind.startswith("rpcinterface"):
                continue
            else:
                what = f"[{section.name}]"
                if kind in ("eventlistener", "fcgi-program"):
                    what += f": supervisord {kind} sections are not supported; not run"
                else:
                    what += ": unknown section; ignored"
                warn(path, section.line, name or kind, what)
    _apply_groups(programs, groups, problem)
    _apply_priorities(programs)
    return programs


def _parse(path: Path, problem: Problem) -> list[_Section] | None:
    try:
        data = read_bounded(path, MAX_INI_FILE, "supervisord file")
    except FileRefused as exc:
        problem(path, 0, "*", str(exc))
        return None
    except OSError as exc:
        problem(path, 0, "*", f"cannot read: {exc.strerror or exc}")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problem(path, line, "*", f"not UTF-8 text (byte {exc.start})")
        return None
    # supervisord's parser: RawConfigParser with inline ; and # comments.
    parser = configparser.RawConfigParser(
        inline_comment_prefixes=(";", "#"), strict=False, interpolation=None
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, str(path))
    except configparser.Error as exc:
        line = getattr(exc, "lineno", 0) or 0
        message = str(exc).splitlines()[0]
        problem(path, line, "*", f"INI syntax error: {message}")
        return None
    lines = _lines(text)
    sections = []
    for name in parser.sections():
        section_line, key_lines = lines.get(name, (0, {}))
        values = {k.lower(): v for k, v in parser.items(name)}
        key_lines = {k.lower(): n for k, n in key_lines.items()}
        sections.append(_Section(name, section_line, values, key_lines))
    return sections


def _lines(text: str) -> dict[str, tuple[int, dict[str, int]]]:
    """Each section's header line and the line of each of its keys (first mention)."""
    out: dict[str, tuple[int, dict[str, int]]] = {}
    current: dict[str, int] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip()[0] in ";#":
            continue
        header = _SECTION.match(line)
        if header is not None and line[0] == "[":
            name = header.group(1)
            out.setdefault(name, (number, {}))
            current = out[name][1]
            continue
        if current is None or line[0].isspace():
            continue  # a continuation line
        key = _KEY.match(line)
        if key is not None:
            current.setdefault(key.group(1).strip(), number)
    return out


def _includes(path: Path, section: _Section, problem: Problem) -> list[Path]:
    found: list[Path] = []
    for pattern in section.values.get("files", "").split():
        expanded = _expand(pattern, {"here": str(path.parent.resolve())})
        if expanded is None:
            problem(path, section.lines.get("files", section.line), "*", "bad include pattern")
            continue
        full = expanded if os.path.isabs(expanded) else str(path.parent / expanded)
        found += sorted(Path(p) for p in glob.glob(full) if os.path.isfile(p))
    return found


def _expand(text: str, expansions: Mapping[str, object]) -> str | None:
    """supervisord's ``%(name)s`` expansion (Python % formatting); None when it fails."""
    try:
        return text % expansions
    except (KeyError, ValueError, TypeError):
        return None


def _expansions(path: Path, program: str, group: str, num: int, numprocs: int) -> dict[str, object]:
    out: dict[str, object] = {f"ENV_{k}": v for k, v in os.environ.items()}
    out.update(
        here=str(path.parent.resolve()),
        host_node_name=socket.gethostname(),
        program_name=program,
        group_name=group,
        process_num=num,
        numprocs=numprocs,
    )
    return out


def _dollar(text: str) -> str:
    """Literal text for a vastinit template field: supervisord expands no ``${VAR}``."""
    return text.replace("$", "$$")


def _int(text: str) -> int | str:
    try:
        return int(text.strip())
    except ValueError:
        return text


def _bool(text: str) -> bool | str:
    low = text.strip().lower()
    if low in ("true", "yes", "on", "1"):
        return True
    if low in ("false", "no", "off", "0"):
        return False
    return text


def _bytes(text: str) -> int | str:
    """supervisord's byte_size: ``50MB``, ``1KB``, ``1024``."""
    low = text.strip().upper()
    for suffix, factor in (("KB", 1024), ("MB", 1024**2), ("GB", 1024**3)):
        if low.endswith(suffix):
            number = _int(low[: -len(suffix)])
            return number * factor if isinstance(number, int) else text
    return _int(text)


def parse_environment(text: str) -> dict[str, str] | None:
    """supervisord's ``dict_of_key_value_pairs``: ``KEY="val",K2=v``; None if malformed."""
    lexer = shlex.shlex(text)
    lexer.wordchars += "/.+-():"
    try:
        tokens = list(lexer)
    except ValueError:
        return None
    out: dict[str, str] = {}
    for i in range(0, len(tokens), 4):
        triple = tokens[i : i + 3]
        if len(triple) != 3 or triple[1] != "=":
            return None
        out[triple[0]] = triple[2].strip("'\"")
    return out


def _program(
    path: Path, section: _Section, program: str, problem: Problem, warn: Problem
) -> list[Program]:
    values = section.values
    lines = section.lines
    numprocs = _int(values.get("numprocs", "1"))
    start = _int(values.get("numprocs_start", "0"))
    if not isinstance(numprocs, int) or not 1 <= numprocs <= 1000:
        problem(path, lines.get("numprocs", section.line), program, "numprocs: not 1..1000")
        return []
    if not isinstance(start, int) or start < 0:
        problem(path, lines.get("numprocs_start", section.line), program, "numprocs_start: bad")
        return []
    for key in sorted(values, key=lambda k: lines.get(k, 0)):
        if key in UNSUPPORTED:
            warn(path, lines[key], program, f"{key}: not supported by vastinit; ignored")
        elif key not in MAPPED:
            warn(path, lines[key], program, f"{key}: not a supervisord program option; ignored")
    name_template = values.get("process_name", "%(program_name)s")
    if numprocs > 1 and "%(process_num)" not in name_template:
        problem(
            path,
            lines.get("numprocs", section.line),
            program,
            "numprocs > 1 needs %(process_num)s in process_name (as supervisord requires)",
        )
        return []
    out: list[Program] = []
    for num in range(start, start + numprocs):
        exp = _expansions(path, program, program, num, numprocs)
        name = _expand(name_template, exp)
        if name is None:
            problem(path, lines.get("process_name", section.line), program, "process_name: bad")
            return []
        expanded: dict[str, str] = {}
        for key, value in values.items():
            if key not in MAPPED:
                expanded[key] = value
                continue
            result = _expand(value, exp)
            if result is None:
                problem(path, lines[key], name, f"{key}: cannot expand %(...)s in {value!r}")
                result = value
            expanded[key] = result
        out.append(_to_unit(path, section, program, name, expanded, exp, problem))
    return out


def _to_unit(
    path: Path,
    section: _Section,
    program: str,
    name: str,
    v: dict[str, str],
    exp: Mapping[str, object],
    problem: Problem,
) -> Program:
    lines = section.lines
    p = Program(name=name, file=path, line=section.line, table={})
    t = p.table

    def put(key_path: KeyPath, value: object, option: str, note: str | None = None) -> None:
        sub = t
        for part in key_path[:-1]:
            sub = sub.setdefault(str(part), {})
        sub[str(key_path[-1])] = value
        p.lines[key_path] = lines.get(option, section.line)
        if note:
            p.notes[key_path] = note

    t["process_group"] = program
    p.lines[("process_group",)] = section.line
    command = v.get("command")
    if command is None:
        problem(path, section.line, name, "command is missing")
    else:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            problem(path, lines["command"], name, f"command: cannot split: {exc}")
            argv = []
        if argv:
            argv = [_dollar(a) for a in argv]
            umask = v.get("umask")
            if umask is not None:
                # supervisord sets the umask before exec; a tiny shell does it here.
                script = f'umask {shlex.quote(umask.strip())} && exec "$$@"'
                argv = ["/bin/sh", "-c", script, "sh", *argv]
            put(("command",), argv, "command")
        else:
            put(("command",), command, "command")
    if "directory" in v:
        put(("working_dir",), _dollar(v["directory"]), "directory")
    if "user" in v:
        put(("user",), v["user"].strip(), "user")
    if "environment" in v:
        env = parse_environment(v["environment"])
        if env is None:
            problem(path, lines["environment"], name, 'environment: expected KEY="val",K2=v')
        put(("environment",), {k: _dollar(x) for k, x in (env or {}).items()}, "environment")
    if "autostart" in v:
        put(("autostart",), _bool(v["autostart"]), "autostart")
    restart = v.get("autorestart", "unexpected").strip().lower()
    policy = {"true": "always", "false": "never", "unexpected": "on-failure"}.get(
        restart, v.get("autorestart", "")
    )
    exitcodes = v.get("exitcodes", "0").replace(" ", "")
    note = None
    if policy == "on-failure" and exitcodes != "0":
        note = f"autorestart=unexpected with exitcodes={exitcodes}: any exit but 0 restarts"
    put(("restart", "policy"), policy, "autorestart", note)
    retries = _int(v.get("startretries", "3"))
    put(
        ("restart", "limit"),
        retries,
        "startretries",
        "startretries: restarts allowed within restart.window (supervisord counts only "
        "exits within startsecs)",
    )
    startsecs = _int(v.get("startsecs", "1"))
    if isinstance(startsecs, int) and startsecs > 0:
        put(("restart", "window"), max(60, startsecs * 10), "startsecs", "from startsecs")
    elif not isinstance(startsecs, int):
        put(("restart", "window"), startsecs, "startsecs")
    if "stopsignal" in v:
        put(("stop", "signal"), v["stopsignal"].strip(), "stopsignal")
    if "stopwaitsecs" in v:
        put(("stop", "timeout"), _int(v["stopwaitsecs"]), "stopwaitsecs")
    asgroup = _bool(v.get("stopasgroup", "false")) is True
    killgroup = _bool(v.get("killasgroup", "false")) is True or asgroup
    put(
        ("stop", "mode"),
        "group" if asgroup else "main",
        "stopasgroup",
        None if asgroup or not killgroup else "killasgroup without stopasgroup",
    )
    # supervisord leaves a program's other processes alone: they are not vastinit's to kill.
    put(("stop", "escaped"), "keep", "killasgroup")
    put(("stop", "leftovers"), "keep", "killasgroup")
    stdout = v.get("stdout_logfile")
    if stdout is not None:
        low = stdout.strip().lower()
        if low in _NO_FILE:
            put(("log", "file"), "", "stdout_logfile")
        elif low != "auto":
            put(("log", "file"), _dollar(stdout.strip()), "stdout_logfile")
    if "stdout_logfile_maxbytes" in v:
        size = _bytes(v["stdout_logfile_maxbytes"])
        if size != 0:
            put(("log", "max_size"), size, "stdout_logfile_maxbytes")
    if "stdout_logfile_backups" in v:
        put(("log", "keep"), _int(v["stdout_logfile_backups"]), "stdout_logfile_backups")
    redirect = _bool(v.get("redirect_stderr", "false")) is True
    if not redirect:
        # supervisord keeps stderr apart: its own file (AUTO: NAME.stderr.log), or none.
        stderr = v.get("stderr_logfile", "AUTO").strip()
        low = stderr.lower()
        if low in _NO_FILE:
            put(("log", "stderr_file"), "", "stderr_logfile")
        elif low == "auto":
            put(("log", "stderr_file"), f"{name}.stderr.log", "redirect_stderr")
        else:
            put(("log", "stderr_file"), _dollar(stderr), "stderr_logfile")
    priority = _int(v.get("priority", "999"))
    p.priority = priority if isinstance(priority, int) else 999
    p.lines[("depends_on",)] = lines.get("priority", section.line)
    return p


def _apply_groups(
    programs: list[Program],
    groups: Mapping[str, tuple[Path, int, list[str]]],
    problem: Problem,
) -> None:
    by_group: dict[str, list[Program]] = {}
    for prog in programs:
        by_group.setdefault(prog.table["process_group"], []).append(prog)
    for group, (path, line, members) in groups.items():
        for member in members:
            if member not in by_group:
                problem(path, line, group, f"[group:{group}] programs: no [program:{member}]")
                continue
            for prog in by_group[member]:
                prog.table["process_group"] = group


def _apply_priorities(programs: list[Program]) -> None:
    """supervisord starts lower ``priority`` first: each program waits for those of the
    priority level just below its own to have started."""
    # A program that does not start by itself is nobody's dependency.
    programs = [p for p in programs if p.table.get("autostart") is not False] + [
        p for p in programs if p.table.get("autostart") is False
    ]
    starting = [p for p in programs if p.table.get("autostart") is not False]
    levels = sorted({p.priority for p in starting})
    if len(levels) < 2:
        return
    below: dict[int, list[str]] = {}
    for previous, level in itertools.pairwise(levels):
        below[level] = sorted(p.name for p in starting if p.priority == previous)
    for prog in programs:
        deps = below.get(prog.priority)
        if deps:
            prog.table["depends_on"] = {d: "started" for d in deps if d != prog.name}
            prog.notes[("depends_on",)] = f"from priority={prog.priority}"
