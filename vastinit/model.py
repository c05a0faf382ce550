"""Frozen unit specifications and the State enum: the vocabulary every layer shares.

A ``Unit`` is produced by ``vastinit.config`` and never mutated.  Fields that may hold
``${VAR}`` templates (``command``, ``working_dir``, ``environment``, ``env_files``, probe
targets, ``log.file``) keep the template text here; ``vastinit.config.expand`` resolves
them against the environment of each start, so ``env_files`` edits apply at the next start.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class State(enum.Enum):
    """A unit's lifecycle state (SPEC §2)."""

    INACTIVE = "inactive"
    WAITING = "waiting"
    STARTING = "starting"
    RUNNING = "running"
    READY = "ready"
    STOPPING = "stopping"
    STOPPED = "stopped"
    BACKOFF = "backoff"
    EXITED = "exited"
    FAILED = "failed"
    SKIPPED = "skipped"
    SCHEDULED = "scheduled"

    def __str__(self) -> str:
        return self.value


class UnitType(enum.Enum):
    SERVICE = "service"
    ONESHOT = "oneshot"
    CRON = "cron"


class DependencyCondition(enum.Enum):
    """What a dependency must reach before the dependent starts."""

    STARTED = "started"
    READY = "ready"
    SUCCEEDED = "succeeded"
    EXITED = "exited"


class RestartMode(enum.Enum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class StopMode(enum.Enum):
    GROUP = "group"  # signal the whole process group
    MAIN = "main"  # signal the main pid only; the group is SIGKILLed after the timeout


class ProbeKind(enum.Enum):
    HTTP = "http"
    TCP = "tcp"
    EXEC = "exec"
    LOG = "log"
    NOTIFY = "notify"


class Escaped(enum.Enum):
    """What a stop does with the unit's members that left its process group (``setsid``,
    double forks): see docs/states.md."""

    STOP = "stop"  # they are stopped with the unit: signal, timeout, SIGKILL
    KEEP = "keep"  # released: left running (a person's tmux, nohup job), listed, and
    # stopped only at vastinit's own shutdown


class MissingProgram(enum.Enum):
    """What a start does when the unit's program is not installed."""

    FAIL = "fail"  # the unit is failed: "program not found: X" (a typo should be visible)
    SKIP = "skip"  # the unit is skipped (an optional part of a stack, as the shipped units)


class Overlap(enum.Enum):
    SKIP = "skip"
    ALLOW = "allow"


def _frozen_map(m: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(m or {}))


# The probe defaults, defined here only (config fills them in; docs/probes.md and
# docs/units.md document them; tests/unit/test_probe_defaults.py keeps the three in step).
READINESS_INTERVAL = 1.0  # a periodic readiness probe: ready within a second of listening
READINESS_TIMEOUT = 5.0
READINESS_START_TIMEOUT: float | None = None  # no limit: a model load may take hours
# While a unit starts, its readiness probe is tried sooner than every `interval`: every
# 50 ms for http and tcp probes (a loopback connect: ready within 100 ms of answering,
# the attempt itself included), and for exec probes (a process each time) 50 ms after the
# first attempt, then twice as long each time up to the interval. After ready, `interval`.
READINESS_FAST_FIRST = 0.05
READINESS_FAST_CAP = 0.05
LIVENESS_INTERVAL = 30.0  # liveness is cheap insurance, not a load on the service
LIVENESS_TIMEOUT = 10.0
LIVENESS_FAILURES = 3  # one slow answer is not a dead service


@dataclass(frozen=True)
class Probe:
    """A readiness or liveness check (field defaults: a readiness probe's).

    ``target`` by kind: HTTP a URL, TCP ``host:port``, EXEC an argv tuple, LOG a regex,
    NOTIFY ``""``.  Durations are seconds.
    """

    kind: ProbeKind
    target: str | tuple[str, ...]
    interval: float = READINESS_INTERVAL
    timeout: float = READINESS_TIMEOUT
    start_timeout: float | None = READINESS_START_TIMEOUT  # readiness only: failed start
    failures: int = LIVENESS_FAILURES  # liveness only: consecutive failures before a restart


@dataclass(frozen=True)
class Condition:
    """Checked at every start; any false -> the unit is skipped with the reason."""

    env: tuple[str, ...] = ()
    path_exists: tuple[str, ...] = ()
    path_missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestartPolicy:
    mode: RestartMode = RestartMode.ON_FAILURE
    delay: float = 1.0
    max_delay: float = 60.0
    limit: int = 5
    window: float = 600.0
    essential: bool = False


@dataclass(frozen=True)
class StopPolicy:
    signal: int = 15  # signal number (SIGTERM)
    mode: StopMode = StopMode.GROUP
    timeout: float = 10.0
    escaped: Escaped = Escaped.STOP
    # What is left of the run's own process group when its main process exits: "stop" ends
    # it; "keep" leaves it running, handled like members outside the group (``escaped``).
    leftovers: Escaped = Escaped.STOP


@dataclass(frozen=True)
class LogSpec:
    file: str | None = None  # None: NAME.log; "": no file; else relative to the log dir
    max_size: int = 10 * 1024 * 1024
    keep: int = 3


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = "UTC"
    overlap: Overlap = Overlap.SKIP
    run_on_start: bool = False


@dataclass(frozen=True)
class Expose:
    port: int
    target: int
    path: str = "/"
    label: str = ""
    auth: bool = True
    pass_credentials: bool = False  # the upstream checks the edge token: Caddy strips nothing


@dataclass(frozen=True)
class Unit:
    """One unit file's effective content (drop-ins merged), validated and frozen."""

    name: str
    source: str = ""  # the file it came from (first of the files, drop-ins follow)
    description: str = ""
    type: UnitType = UnitType.SERVICE
    command: tuple[str, ...] = ()  # a string command is stored as ("/bin/sh", "-c", text)
    working_dir: str | None = None
    user: str | None = None
    group: str | None = None
    environment: Mapping[str, str] = field(default_factory=_frozen_map)
    env_files: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()  # withheld variables (environ.SECRET_VARIABLES) it receives
    # Variables whose change restarts the running unit on reload ("*": any); otherwise a
    # changed environment only marks the unit "restart to apply".
    restart_on_env: tuple[str, ...] = ()
    enabled: bool = True
    missing_program: MissingProgram = MissingProgram.FAIL
    condition: Condition = field(default_factory=Condition)
    depends_on: Mapping[str, DependencyCondition] = field(
        default_factory=lambda: MappingProxyType({})
    )
    readiness: Probe | None = None
    liveness: Probe | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop: StopPolicy = field(default_factory=StopPolicy)
    log: LogSpec = field(default_factory=LogSpec)
    schedule: Schedule | None = None
    expose: tuple[Expose, ...] = ()
    raw: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}), compare=True)
    """The merged TOML table, for ``ctl show`` and change detection on reload."""
    transient: bool = False
    """Created over the control API (``POST /v1/units``), in no file; gone at restart."""

    @property
    def log_file(self) -> str | None:
        """The log file name relative to the log dir, or None for no file (template text)."""
        if self.log.file is None:
            return f"{self.name}.log"
        return self.log.file or None
