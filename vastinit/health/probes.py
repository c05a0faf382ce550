"""One attempt of a periodic probe (http, tcp, exec), whatever its kind, and its name."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vastinit.health.exec_probe import probe_exec
from vastinit.health.http_probe import new_session, probe_http
from vastinit.health.result import Outcome
from vastinit.health.tcp_probe import probe_tcp
from vastinit.model import Probe, ProbeKind
from vastinit.proc.reaper import Reaper

if TYPE_CHECKING:
    import aiohttp

# Kinds probed every interval; log and notify are events that happen once.
PERIODIC = frozenset({ProbeKind.HTTP, ProbeKind.TCP, ProbeKind.EXEC})


@dataclass
class ProbeContext:
    """What one run's probes need: the reaper, and the unit's environment, cwd and user for
    exec probes. Holds the HTTP session, made on first use; ``aclose`` when the run ends."""

    reaper: Reaper
    env: Mapping[str, str]
    cwd: str | None = None
    user: str | None = None
    group: str | None = None
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    def http_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session()
        return self._session

    async def aclose(self) -> None:
        """Close the HTTP session if one was made."""
        if self._session is not None:
            await self._session.close()
            self._session = None


async def run_probe(probe: Probe, ctx: ProbeContext) -> Outcome:
    """Try ``probe`` (an http, tcp or exec probe, target already expanded) once."""
    target = probe.target
    if probe.kind is ProbeKind.HTTP:
        return await probe_http(ctx.http_session(), str(target), probe.timeout)
    if probe.kind is ProbeKind.TCP:
        return await probe_tcp(str(target), probe.timeout)
    if probe.kind is ProbeKind.EXEC:
        argv = (target,) if isinstance(target, str) else target
        return await probe_exec(
            argv,
            timeout=probe.timeout,
            reaper=ctx.reaper,
            env=ctx.env,
            cwd=ctx.cwd,
            user=ctx.user,
            group=ctx.group,
        )
    raise ValueError(f"{probe.kind.value} probes are not periodic")


def describe(probe: Probe) -> str:
    """The probe as a person would name it: ``http http://127.0.0.1:8000/health``."""
    target = probe.target
    if probe.kind is ProbeKind.EXEC:
        text = shlex.join((target,) if isinstance(target, str) else target)
    elif probe.kind is ProbeKind.LOG:
        text = f"/{target}/"
    elif probe.kind is ProbeKind.NOTIFY:
        return "notify"
    else:
        text = str(target)
    return f"{probe.kind.value} {text}"
