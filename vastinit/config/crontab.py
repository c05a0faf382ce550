"""Crontabs as cron units: ``/etc/crontab``, ``/etc/cron.d/*`` and the ``crontab`` spool.

Each job line becomes the unit table a ``type = "cron"`` unit file would hold, so it goes
through the same validation, drop-ins (``NAME.d/*.toml`` on the unit search path) and
reload as any unit. The rules, as Debian's cron applies them (docs/units.md, "cron, as you
know it"):

- Names: ``etc-crontab-N`` (``/etc/crontab``), ``cron.d-FILE-N`` and ``crontab-USER-N``
  (the spool), N counting the file's job lines from 1: editing a line keeps its name (and
  its drop-in); adding or removing a job line renames the ones after it.
- Environment: cron's ``SHELL=/bin/sh``, ``PATH=/usr/bin:/bin``, ``HOME`` and ``LOGNAME``
  of the line's user, then the file's ``NAME=value`` lines above the job (``LOGNAME`` cannot
  be set). ``%`` ends the command: the rest is its stdin, each further ``%`` a newline;
  ``\\%`` is a literal ``%``. Nothing in a line is a vastinit ``${VAR}`` template.
- Permissions: ``/etc/crontab`` and ``/etc/cron.d`` files must be owned by root and not
  writable by group or others; a spool file must be owned by its user, mode 0600, and the
  user must exist. Otherwise the file is ignored with a warning.
- Overlap ``allow`` (cron starts a run even if the last still goes); ``[stop] escaped`` and
  ``leftovers`` are ``keep``: what a run leaves behind (``nohup x &``) is never killed when
  it ends; it is listed and stopped at vastinit's shutdown.
- ``@reboot`` runs once per boot (after ``provisioning`` when that unit exists); a
  ``@reboot`` line added or edited after boot waits for the next boot.

A bad line is an error naming FILE:LINE and is skipped: the other lines still run. Every
path can be moved with an environment variable (tests use scratch directories).
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vastinit.config.files import MIB, FileRefused, read_bounded
from vastinit.config.locate import KeyPath
from vastinit.config.validate import UNIT_NAME, build_unit

SYSTEM_CRONTAB_ENV = "VASTINIT_CRONTAB"  # default /etc/crontab
CRON_D_ENV = "VASTINIT_CRON_D"  # default /etc/cron.d
SPOOL_ENV = "VASTINIT_CRON_SPOOL"  # default /var/spool/cron/crontabs
LOCALTIME_ENV = "VASTINIT_LOCALTIME"  # default /etc/localtime
RESCAN_ENV = "VASTINIT_CRON_RESCAN"  # seconds between looks at the crontabs (default 10)

DEFAULT_RESCAN = 10.0
MAX_CRONTAB = 1 * MIB
CRON_PATH = "/usr/bin:/bin"
CRON_SHELL = "/bin/sh"

# The @ forms of crontab(5) as the engine's expressions (it knows @hourly..@monthly, @reboot).
_MACROS = {
    "@reboot": "@reboot",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_ENV_LINE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)")
_CRON_D_NAME = re.compile(r"[A-Za-z0-9_-]+")  # run-parts' names: Debian cron skips others


@dataclass(frozen=True)
class CrontabPaths:
    system: Path = Path("/etc/crontab")
    cron_d: Path = Path("/etc/cron.d")
    spool: Path = Path("/var/spool/cron/crontabs")
    localtime: Path = Path("/etc/localtime")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> CrontabPaths:
        env = os.environ if environ is None else environ
        d = cls()
        return cls(
            system=Path(env.get(SYSTEM_CRONTAB_ENV) or d.system),
            cron_d=Path(env.get(CRON_D_ENV) or d.cron_d),
            spool=Path(env.get(SPOOL_ENV) or d.spool),
            localtime=Path(env.get(LOCALTIME_ENV) or d.localtime),
        )


def rescan_interval(environ: Mapping[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    try:
        value = float(env.get(RESCAN_ENV, "") or DEFAULT_RESCAN)
    except ValueError:
        return DEFAULT_RESCAN
    return min(max(value, 0.05), 60.0)


@dataclass(frozen=True)
class CrontabUnit:
    """One job line as a unit table: ``table`` is what a unit file would hold."""

    name: str
    file: Path
    line: int
    table: dict[str, Any]
    text: str = ""  # the line as written


@dataclass(frozen=True)
class Diagnostic:
    level: str  # "warning" or "error"
    file: str
    line: int
    text: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.text}"


@dataclass
class Crontabs:
    """The crontab half of the config pipeline: ``scan`` for each load, state kept between
    loads (the @reboot lines of this boot, the warnings already said)."""

    paths: CrontabPaths = field(default_factory=CrontabPaths)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    boot_lines: dict[str, str] | None = None  # @reboot unit name -> its line, at boot
    diagnostics: list[Diagnostic] = field(default_factory=list)
    _said: set[str] = field(default_factory=set)

    def owns(self, source: str) -> bool:
        """Whether a unit whose ``source`` is this path came from a crontab."""
        path = Path(source)
        return path == self.paths.system or path.parent in (self.paths.cron_d, self.paths.spool)

    def take_diagnostics(self) -> list[Diagnostic]:
        """What the last scan found that the one before it did not: each problem is said
        once for as long as it holds, not at every rescan of an unchanged file."""
        current = {str(d) for d in self.diagnostics}
        out = [d for d in self.diagnostics if str(d) not in self._said]
        self._said = current
        self.diagnostics = []
        return out

    def fingerprint(self) -> tuple[object, ...]:
        """What changes when a crontab does: the directories' and the files' stat data
        (cron's own way of noticing ``crontab -e``). Cheap: a few stat calls."""
        out: list[object] = [_stat_key(self.paths.system)]
        for directory in (self.paths.cron_d, self.paths.spool):
            out.append(_stat_key(directory))
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            out.extend((n, _stat_key(directory / n)) for n in names)
        return tuple(out)

    def scan(self, existing: Collection[str]) -> list[CrontabUnit]:
        """Every good job line as a unit; problems go to ``diagnostics``. ``existing`` are
        the unit files' names: a line never takes one (it is skipped, with a warning)."""
        timezone = self._timezone()
        after = "provisioning" if "provisioning" in existing else None
        out: list[CrontabUnit] = []
        files: list[tuple[Path, str, str | None]] = []
        if self.paths.system.exists():
            files.append((self.paths.system, "etc-crontab", None))
        for path in _listing(self.paths.cron_d):
            if not _CRON_D_NAME.fullmatch(path.name):
                self._warn(
                    path,
                    0,
                    "ignored: cron.d file names may hold only letters, digits, '-' and '_' "
                    "(as Debian's cron; files with a '.' are packaging leftovers)",
                )
                continue
            files.append((path, f"cron.d-{path.name}", None))
        for path in _listing(self.paths.spool):
            if path.name.startswith("tmp."):
                continue  # crontab(1)'s file being written
            files.append((path, f"crontab-{path.name}", path.name))
        for path, prefix, owner in files:
            out.extend(self._file(path, prefix, owner, timezone, after, existing))
        first = self.boot_lines is None
        if first:
            self.boot_lines = {
                u.name: u.text for u in out if u.table["schedule"]["cron"] == "@reboot"
            }
        else:
            assert self.boot_lines is not None
            for u in out:
                if u.table["schedule"]["cron"] != "@reboot":
                    continue
                if self.boot_lines.get(u.name) != u.text:
                    u.table["enabled"] = False
                    self._warn(
                        u.file,
                        u.line,
                        f"@reboot line added or changed after boot ({u.name}): it runs at the "
                        "next boot (vastinit ctl start runs it now)",
                    )
        return out

    # ---- one file ------------------------------------------------------------------------

    def _file(
        self,
        path: Path,
        prefix: str,
        owner: str | None,
        timezone: str,
        after: str | None,
        existing: Collection[str],
    ) -> list[CrontabUnit]:
        if owner is not None:
            if self._check_file(path, owner) is None:
                return []
        elif not self._system_file_ok(path):
            return []
        try:
            data = read_bounded(path, MAX_CRONTAB, "crontab")
        except FileRefused as exc:
            self._warn(path, 0, f"ignored: {exc}")
            return []
        except OSError as exc:
            self._warn(path, 0, f"ignored: cannot read: {exc.strerror or exc}")
            return []
        text = data.decode("utf-8", errors="replace")
        env: dict[str, str] = {}
        out: list[CrontabUnit] = []
        job = 0
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line[0] not in "0123456789*@":
                match = _ENV_LINE.fullmatch(line)
                if match is None:
                    self._error(path, number, "not a job line nor a NAME=value line: skipped")
                    continue
                name, value = match.group(1), _unquote(match.group(2).strip())
                if name == "MAILTO":
                    self._warn(
                        path,
                        number,
                        "MAILTO: there is no mail here; a job's output goes to its log "
                        "(vastinit ctl logs UNIT)",
                    )
                elif name == "LOGNAME":
                    self._warn(path, number, "LOGNAME cannot be changed (cron sets it): ignored")
                else:
                    env[name] = value
                continue
            job += 1
            unit = self._job(path, number, line, f"{prefix}-{job}", owner, env, timezone, after)
            if unit is None:
                continue
            if unit.name in existing:
                self._warn(path, number, f"skipped: unit {unit.name} exists as a unit file already")
                continue
            out.append(unit)
        return out

    def _job(
        self,
        path: Path,
        number: int,
        line: str,
        name: str,
        owner: str | None,
        env: Mapping[str, str],
        timezone: str,
        after: str | None,
    ) -> CrontabUnit | None:
        if not UNIT_NAME.fullmatch(name):
            self._error(path, number, f"cannot name a unit {name!r}: skipped")
            return None
        if line.startswith("@"):
            parts = line.split(None, 1)
            word, rest = parts[0], (parts[1] if len(parts) > 1 else "")
            expr = _MACROS.get(word.lower())
            if expr is None:
                known = ", ".join(_MACROS)
                self._error(path, number, f"unknown {word!r} (use one of {known}): skipped")
                return None
        else:
            parts = line.split(None, 5)
            if len(parts) < 6:
                self._error(path, number, "expected 5 time fields and a command: skipped")
                return None
            expr, rest = " ".join(parts[:5]), parts[5]
        user = owner
        if owner is None:
            split = rest.split(None, 1)
            if len(split) < 2:
                self._error(path, number, "expected a user name and a command: skipped")
                return None
            user, rest = split[0], split[1]
        assert user is not None
        command = rest.strip()
        if not command:
            self._error(path, number, "no command: skipped")
            return None
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            self._warn(path, number, f"ignored: user {user!r} has no passwd entry")
            return None
        environment = {
            "SHELL": CRON_SHELL,
            "PATH": CRON_PATH,
            "HOME": account.pw_dir,
            **env,
            "LOGNAME": account.pw_name,
        }
        table: dict[str, Any] = {
            # No line number: a line moved by an edit above it is the same unit.
            "description": f"{path}: {line[:200]}",
            "type": "cron",
            "command": [_escape(a) for a in _argv(command, environment["SHELL"])],
            "user": user,
            "environment": {k: _escape(v) for k, v in environment.items()},
            "schedule": {"cron": expr, "timezone": timezone, "overlap": "allow"},
            "stop": {"escaped": "keep", "leftovers": "keep"},
        }
        home = environment["HOME"]
        table["working_dir"] = _escape(home if os.path.isdir(home) else "/")
        if expr == "@reboot" and after is not None:
            table["depends_on"] = {after: "exited"}
        problems: list[str] = []

        def report(key: KeyPath, message: str) -> None:
            problems.append(message)

        build_unit(name, table, report)
        if problems:
            for message in problems:
                self._error(path, number, f"unit {name}: {message}: skipped")
            return None
        return CrontabUnit(name, path, number, table, line)

    # ---- checks -------------------------------------------------------------------------

    def _check_file(self, path: Path, owner: str) -> pwd.struct_passwd | None:
        """A spool file's user, when the file may be used (else None, warned)."""
        try:
            account = pwd.getpwnam(owner)
        except KeyError:
            self._warn(path, 0, f"ignored: user {owner!r} has no passwd entry")
            return None
        try:
            info = os.stat(path)
        except OSError as exc:
            self._warn(path, 0, f"ignored: {exc.strerror or exc}")
            return None
        if info.st_uid != account.pw_uid:
            self._warn(path, 0, f"ignored: not owned by {owner} (uid {info.st_uid})")
            return None
        mode = stat.S_IMODE(info.st_mode)
        if mode != 0o600:
            self._warn(path, 0, f"ignored: mode {mode:04o}; a crontab must be 0600")
            return None
        return account

    def _system_file_ok(self, path: Path) -> bool:
        try:
            info = os.stat(path)
        except OSError as exc:
            self._warn(path, 0, f"ignored: {exc.strerror or exc}")
            return False
        if info.st_uid != 0:
            self._warn(path, 0, f"ignored: not owned by root (uid {info.st_uid})")
            return False
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o022:
            self._warn(path, 0, f"ignored: writable by group or others (mode {mode:04o})")
            return False
        return True

    def _timezone(self) -> str:
        """``TZ``, else the zone ``/etc/localtime`` links to, else UTC."""
        tz = self.environ.get("TZ", "").strip().lstrip(":")
        if tz:
            return tz
        try:
            target = os.readlink(self.paths.localtime)
        except OSError:
            return "UTC"
        marker = "zoneinfo/"
        at = target.rfind(marker)
        return target[at + len(marker) :] if at >= 0 else "UTC"

    def _warn(self, path: Path, line: int, text: str) -> None:
        self.diagnostics.append(Diagnostic("warning", str(path), line, text))

    def _error(self, path: Path, line: int, text: str) -> None:
        self.diagnostics.append(Diagnostic("error", str(path), line, text))


def _listing(directory: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [directory / n for n in names if not n.startswith(".")]


def _stat_key(path: Path) -> tuple[int, int, int, int, int] | None:
    try:
        s = os.stat(path)
    except OSError:
        return None
    return (s.st_mtime_ns, s.st_size, s.st_mode, s.st_uid, s.st_ino)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def split_percent(command: str) -> tuple[str, str | None]:
    """cron's ``%``: the command up to the first unescaped ``%``, and the rest as its stdin
    (each further ``%`` a newline), None when there is none. ``\\%`` is a literal ``%``."""
    out: list[str] = []
    stdin: list[str] | None = None
    i = 0
    while i < len(command):
        char = command[i]
        if char == "\\" and command.startswith("%", i + 1):
            (out if stdin is None else stdin).append("%")
            i += 2
            continue
        if char == "%":
            if stdin is None:
                stdin = []
            else:
                stdin.append("\n")
            i += 1
            continue
        (out if stdin is None else stdin).append(char)
        i += 1
    return "".join(out), None if stdin is None else "".join(stdin)


def _argv(command: str, shell: str) -> list[str]:
    text, stdin = split_percent(command)
    if stdin is None:
        return [shell, "-c", text]
    # The stdin text reaches the command through a pipe, as cron gives it.
    return ["/bin/sh", "-c", 'printf "%s\\n" "$1" | "$0" -c "$2"', shell, stdin, text]


def _escape(text: str) -> str:
    """Nothing in a crontab is a vastinit template: ``$`` stays ``$`` for the shell."""
    return text.replace("$", "$$")
