"""N units of ``sleep infinity`` under either supervisor: the fleet that start and shutdown use.

Equivalent configurations: each unit is its own vastinit unit file / supervisord program,
started at launch, restarted on failure, with its output in a per-unit log file (vastinit:
``NAME.log`` in the log dir; supervisord: ``AUTO`` files in ``childlogdir``).  supervisord
gets ``startsecs=0`` so that a program is RUNNING as soon as it is spawned, as a vastinit
unit without a readiness probe is.  ``supervisord-group`` puts the same programs in one
``[group:fleet]``, which supervisord stops in one step instead of one program at a time.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import SUPERVISORD, VASTINIT, BenchError
from benchmarks.tools import (
    Supervisor,
    SupervisordRun,
    VastinitRun,
    sd_command,
    write_supervisord_conf,
    write_vastinit_unit,
)

SD_GROUP = "supervisord-group"
ARGV = ["sleep", "infinity"]


def names(n: int) -> list[str]:
    """The units' names: s000, s001, ..."""
    width = max(3, len(str(n - 1)))
    return [f"s{i:0{width}d}" for i in range(n)]


def launch_fleet(tool: str, work: Path, n: int) -> Supervisor:
    """Write ``n`` sleeping units for ``tool`` into ``work`` and launch the supervisor."""
    units = names(n)
    if tool == VASTINIT:
        for name in units:
            write_vastinit_unit(work / "units", name, {"command": ARGV})
        return VastinitRun(work)
    if tool in (SUPERVISORD, SD_GROUP):
        program = {
            "command": sd_command(ARGV),
            "autostart": "true",
            "autorestart": "unexpected",
            "startsecs": "0",
        }
        groups = {"fleet": units} if tool == SD_GROUP else None
        conf = write_supervisord_conf(work, {u: program for u in units}, groups=groups)
        return SupervisordRun(work, conf)
    raise BenchError(f"unknown tool {tool!r}")
