"""Transient units: created and removed over the control API at run time, in no file.

They go through the config pipeline (``vastinit.config.load_transient``) and its transient
rules, are capped at ``MAX_TRANSIENT_UNITS``, never replace or shadow another unit, are
left alone by reload (no file has them; a unit file of the same name is refused while one
exists), are never written anywhere, and are gone when vastinit restarts. Adding and
removing take the reloader's lock, so neither interleaves with a reload.
"""

from __future__ import annotations

import anyio
import structlog

from vastinit.config import MAX_TRANSIENT_UNITS, load_transient
from vastinit.config.validate import UNIT_NAME
from vastinit.control.protocol import CommandRefused
from vastinit.model import Unit
from vastinit.supervisor.reload import Reloader

log = structlog.get_logger("vastinit")

MAX_NAME = 64
"""The longest name of a transient unit."""


def transient_names(reloader: Reloader) -> list[str]:
    """The transient units that exist now, sorted."""
    return sorted(n for n, r in reloader.manager.runners.items() if r.unit.transient)


def _check_name(name: str) -> None:
    if not UNIT_NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise CommandRefused(
            f"invalid unit name {name!r}: use 1 to {MAX_NAME} letters, digits and - _ . @",
            code="bad_request",
            status=400,
        )


async def add_transient(reloader: Reloader, name: str, text: str) -> Unit:
    """Create the transient unit ``name`` from unit file text and start it (or mark it
    skipped when it says ``enabled = false``); its dependencies are respected as for any
    unit. ConfigError lists the problems of ``text``; CommandRefused says why else not."""
    _check_name(name)
    manager = reloader.manager
    async with reloader.lock:
        if manager.shutting_down:
            raise CommandRefused("vastinit is shutting down", code="shutting_down", status=503)
        existing = manager.runners.get(name)
        if existing is not None:
            what = "a transient unit" if existing.unit.transient else f"from {existing.unit.source}"
            raise CommandRefused(
                f"unit {name} already exists ({what}); a transient unit cannot replace or "
                f"shadow another unit",
                code="unit_exists",
                status=409,
            )
        count = len(transient_names(reloader))
        if count >= MAX_TRANSIENT_UNITS:
            raise CommandRefused(
                f"too many transient units ({count}; at most {MAX_TRANSIENT_UNITS}); "
                f"remove one first",
                code="too_many_transient",
                status=409,
            )
        units = {n: r.unit for n, r in manager.runners.items()}
        unit = await anyio.to_thread.run_sync(
            load_transient, name, text, units, abandon_on_cancel=True
        )
        log.info("transient unit added", unit=name)
        manager.add_unit(unit, cause="added over the control API")
        manager.events.publish("unit", name, action="added", transient=True)
        return unit


async def remove_transient(reloader: Reloader, name: str) -> None:
    """Stop the transient unit ``name`` by its stop rule and forget it. UnknownUnitError if
    there is no such unit; CommandRefused (409) for a unit from a file, or one another
    unit depends on."""
    manager = reloader.manager
    async with reloader.lock:
        runner = manager.runner(name)  # UnknownUnitError naming close matches
        if not runner.unit.transient:
            raise CommandRefused(
                f"unit {name} is not transient (it comes from {runner.unit.source}); only "
                f"units created over the control API can be removed; delete its file and "
                f"reload instead",
                code="not_transient",
                status=409,
            )
        users = sorted(n for n, r in manager.runners.items() if name in r.unit.depends_on)
        if users:
            raise CommandRefused(
                f"unit {name} cannot be removed: {', '.join(users)} depend"
                f"{'s' * (len(users) == 1)} on it",
                code="in_use",
                status=409,
            )
        log.info("removing transient unit", unit=name)
        # A client that hangs up mid-removal must not leave the unit stopped but not gone.
        with anyio.CancelScope(shield=True):
            await manager.remove_runner(name, cause="removed over the control API")
            manager.events.publish("unit", name, action="removed", transient=True)
