"""Public routes: ``PORTAL_CONFIG`` entries and units' ``[[expose]]`` tables, merged by port.

``PORTAL_CONFIG`` keeps the previous image's format: ``host:external:internal:path:Label``
entries separated by ``|``; only the label may contain ``:``; a later entry with the same
label replaces the earlier one; an entry whose two ports are equal is an alias the portal
lists but Caddy does not serve.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vastinit.model import Expose
from vastinit.stack.common import StackError

# The sglang image's default (reference: vast-base-image.md §3.2) without the entries of
# programs this image does not ship (Model UI); the Instance Portal joins through its own
# unit's [[expose]] when that unit exists, so no route waits for a server that never comes.
DEFAULT_PORTAL_CONFIG = (
    "localhost:8000:18000:/docs:SGLang API"
    "|localhost:8080:18080:/:Jupyter"
    "|localhost:8080:8080:/terminals/1:Jupyter Terminal"
)
SGLANG_PORT_VARIABLE = "SGLANG_SERVER_PORT"  # the sglang unit's port (vastinit launch sglang)
JUPYTER_LAUNCH_PORT = 8080  # in Vast's Jupyter launch mode, Vast's own Jupyter holds it

_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class Route:
    """External ``port`` proxied to ``host:target``; ``path`` is the page the portal opens."""

    port: int
    target: int
    host: str = "127.0.0.1"
    path: str = "/"
    label: str = ""
    auth: bool = True
    # The upstream checks the edge's own token, so it gets the credentials unchanged
    # (an [[expose]] with pass_credentials = true); otherwise the edge strips them.
    pass_credentials: bool = False
    source: str = ""  # where it came from, for messages: "PORTAL_CONFIG entry '...'", "unit x"

    @property
    def is_alias(self) -> bool:
        """An entry with equal ports names a page of another route; Caddy serves nothing."""
        return self.port == self.target


def default_portal_config(env: Mapping[str, str]) -> str:
    """``DEFAULT_PORTAL_CONFIG`` with SGLang's route to ``$SGLANG_SERVER_PORT`` when that is
    set: the one port setting the launcher, the sglang unit's probes and this route follow."""
    port = env.get(SGLANG_PORT_VARIABLE, "").strip()
    if not port:
        return DEFAULT_PORTAL_CONFIG
    try:
        _port(port, "")
    except ValueError:
        what = f"{SGLANG_PORT_VARIABLE}={port!r}"
        raise StackError(f"{what} is not a port number (1-65535)") from None
    return DEFAULT_PORTAL_CONFIG.replace("localhost:8000:18000:", f"localhost:8000:{port}:", 1)


def parse_portal_config(text: str) -> list[Route]:
    """The routes in a ``PORTAL_CONFIG`` value; StackError lists every bad entry by its text."""
    by_label: dict[str, Route] = {}
    problems: list[str] = []
    for raw in text.split("|"):
        entry = raw.strip()
        if not entry:
            continue  # "a|" and "a||b" are harmless
        try:
            route = _parse_entry(entry)
        except ValueError as exc:
            problems.append(f"PORTAL_CONFIG entry {entry!r}: {exc}")
            continue
        by_label.pop(route.label, None)  # the previous image kept the last entry per label
        by_label[route.label] = route
    if problems:
        raise StackError("\n".join(problems))
    return list(by_label.values())


def _parse_entry(entry: str) -> Route:
    fields = entry.split(":", 4)
    if len(fields) != 5:
        raise ValueError(
            f"expected 5 fields host:external_port:internal_port:path:Label, got {len(fields)}"
        )
    host, external, internal, path, label = (f.strip() for f in fields)
    if not _HOST.fullmatch(host):
        raise ValueError(f"host {host!r} is not a hostname or IPv4 address")
    return Route(
        port=_port(external, "external port"),
        target=_port(internal, "internal port"),
        host=host,
        path=path or "/",
        label=label,
        source=f"PORTAL_CONFIG entry {entry!r}",
    )


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{what} {text!r} is not a number from 1 to 65535")
    return int(text)


def routes_from_expose(exposes: Iterable[tuple[str, Expose]]) -> list[Route]:
    """A route for each ``(unit name, [[expose]])``, proxied to 127.0.0.1 as the spec says."""
    return [
        Route(
            port=e.port,
            target=e.target,
            path=e.path,
            label=e.label or name,
            auth=e.auth,
            pass_credentials=e.pass_credentials,
            source=f"unit {name}",
        )
        for name, e in exposes
    ]


def merge_routes(portal: list[Route], exposed: list[Route]) -> tuple[list[Route], list[str]]:
    """Every route, one served route per external port, and notes on what was overridden.

    PORTAL_CONFIG is the operator's word, so its entry wins over a unit's [[expose]] of the
    same port; two PORTAL_CONFIG entries serving one port differently are an error.
    """
    served: dict[int, Route] = {}
    problems: list[str] = []
    for route in portal:
        if route.is_alias:
            continue
        first = served.setdefault(route.port, route)
        if (first.host, first.target) != (route.host, route.target):
            problems.append(
                f"{first.source} and {route.source} both serve external port {route.port} "
                f"(to {first.host}:{first.target} and {route.host}:{route.target})"
            )
    if problems:
        raise StackError("\n".join(problems))
    notes: list[str] = []
    kept: list[Route] = []
    for route in exposed:
        winner = served.get(route.port)
        if winner is None:
            served[route.port] = route
            kept.append(route)
        elif (winner.host, winner.target) != (route.host, route.target):
            notes.append(
                f"{route.source} exposes port {route.port} -> {route.target}, "
                f"but {winner.source} wins (-> {winner.host}:{winner.target})"
            )
    return sorted([*portal, *kept], key=lambda r: (r.port, r.is_alias)), notes


def site_plan(
    routes: list[Route], env: Mapping[str, str], *, jupyter_launch: bool = False
) -> tuple[list[Route], list[tuple[Route, str]]]:
    """The routes Caddy serves, and the others with the reason each is not served.

    On Vast (any ``VAST_TCP_PORT_*`` set) a port the platform does not map is unreachable,
    so it gets no site, as before; elsewhere every route is served on its external port.
    """
    on_vast = any(name.startswith("VAST_TCP_PORT_") for name in env)
    served: list[Route] = []
    skipped: list[tuple[Route, str]] = []
    seen: set[int] = set()
    for route in routes:
        if route.is_alias:
            skipped.append((route, "alias (equal ports): listed by the portal, not proxied"))
        elif route.port in seen:
            skipped.append((route, f"port {route.port} is already served"))
        elif on_vast and f"VAST_TCP_PORT_{route.port}" not in env:
            skipped.append((route, f"VAST_TCP_PORT_{route.port} is not set: port not mapped"))
        elif jupyter_launch and route.port == JUPYTER_LAUNCH_PORT:
            skipped.append((route, "Jupyter launch mode: Vast serves this port itself"))
        else:
            served.append(route)
            seen.add(route.port)
    return served, skipped


# A readiness or liveness probe of a unit that checks this loopback port: http://HOST:PORT/...
# or HOST:PORT (tcp), HOST one of these. Templates (``${VAR}``) are not guessed at.
_LOOPBACK = r"(?:127\.0\.0\.1|localhost|\[::1\])"
_PROBE_PORT = re.compile(rf"^(?:https?://)?{_LOOPBACK}:(\d{{1,5}})(?:[/?#].*)?$")


@dataclass(frozen=True)
class UnitPorts:
    """What ties a unit to routes: its ``[[expose]]`` tables and the loopback ports its
    readiness and liveness probes check."""

    name: str
    exposes: tuple[Expose, ...] = ()
    probe_ports: frozenset[int] = frozenset()


def probe_port(target: str) -> int | None:
    """The loopback port an http or tcp probe target checks; None for anything else."""
    match = _PROBE_PORT.match(target.strip())
    if match is None or "$" in target:
        return None
    port = int(match.group(1))
    return port if 1 <= port <= 65535 else None


def route_units(routes: Iterable[Route], units: Iterable[UnitPorts]) -> dict[int, str | None]:
    """The unit behind each route (by external port), or None when no unit serves it.

    A route's unit is the unit whose ``[[expose]]`` it is; else the unit that exposes its
    target port; else the unit whose readiness or liveness probe checks that port on
    127.0.0.1. A route whose upstream is not on loopback has no unit.
    """
    units = list(units)
    by_target = {e.target: u.name for u in units for e in u.exposes}
    by_probe = {p: u.name for u in units for p in sorted(u.probe_ports)}
    found: dict[int, str | None] = {}
    for route in routes:
        if route.is_alias:
            continue
        unit: str | None = None
        if route.source.startswith("unit "):
            unit = route.source.removeprefix("unit ")
        elif route.host in ("127.0.0.1", "localhost"):
            unit = by_target.get(route.target) or by_probe.get(route.target)
        found[route.port] = unit
    return found
