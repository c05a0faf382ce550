"""What the ``ctl`` client prints: status table, durations, log lines (standard library only)."""

from __future__ import annotations

import time
from collections.abc import Sequence

TYPE_CHECKING = False  # typing costs milliseconds at import: only the type checker reads it
if TYPE_CHECKING:
    from typing import Any

# `ctl status` exits 0 when every listed unit is in one of these states.
FINE_STATES = frozenset({"ready", "exited", "scheduled", "skipped"})

COLUMNS = ("NAME", "STATE", "READY", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "NEXT RUN", "CAUSE")

# After a transient unit's name in the table (created over the control API, in no file).
TRANSIENT_MARK = "*"
TRANSIENT_NOTE = (
    "* transient: created over the control API, in no file; gone when vastinit restarts"
)

_COLORS = {
    "ready": "32",  # green: up
    "exited": "32",
    "scheduled": "32",
    "skipped": "2",  # dim: nothing to do
    "failed": "31",  # red: needs a human
    "backoff": "33",  # yellow: on its way, or not
    "stopped": "2",
}


def duration(seconds: float) -> str:
    """``42`` -> ``42s``, ``252`` -> ``4m12s``, ``7500`` -> ``2h05m``, ``90000`` -> ``1d01h``."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def status_row(unit: dict[str, Any], now: float) -> list[str]:
    """One unit's cells, in ``COLUMNS`` order."""
    state = unit["state"]
    pid = unit.get("pid")
    started = unit.get("started_at")
    ready = "-"  # a oneshot or cron unit is never "ready"; its state says how it went
    if unit.get("type") == "service":
        ready = "yes" if state == "ready" else "no"
    next_run = unit.get("next_run")
    return [
        unit["name"] + TRANSIENT_MARK * bool(unit.get("transient")),
        state,
        ready,
        str(pid) if pid else "-",
        duration(now - started) if pid and started else "-",
        str(unit.get("restarts", 0)),
        unit.get("last_exit") or "-",
        f"in {duration(next_run - now)}" if next_run else "-",
        # A live unit's STATUS= (sd_notify), like systemctl's "Status:" line, says more than
        # "READY=1 received"; a probe failure says more than either.
        unit.get("probe_error") or (pid and unit.get("status_text")) or unit.get("cause") or "",
    ]


def status_table(
    units: Sequence[dict[str, Any]], now: float, *, width: int | None = None, color: bool = False
) -> str:
    """The ``ctl status`` table; the CAUSE column is cut to ``width`` when given."""
    rows = [list(COLUMNS)] + [status_row(u, now) for u in units]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        cause = row[-1]
        used = sum(widths) + 2 * len(widths)
        if width is not None and used + len(cause) > width:
            room = width - used
            cause = cause[: room - 1] + "…" if room > 1 else ""
        if color and index > 0 and row[1] in _COLORS:
            # Colour after padding, so the escape codes do not upset the alignment.
            cells[1] = f"\x1b[{_COLORS[row[1]]}m{cells[1]}\x1b[0m"
        lines.append("  ".join([*cells, cause]).rstrip())
    # Units whose environment changed since they started (names and sources, no values):
    # under the table, whole, so that the cut CAUSE column never hides it.
    lines += [
        f"{u['name']}: restart to apply: {u['restart_to_apply']}"
        for u in units
        if u.get("restart_to_apply")
    ]
    # Processes of a unit outside its process group (setsid, double forks), whole.
    lines += [
        f"{u['name']}: {p['kind']} process {p['pid']}: {p['command']}"
        for u in units
        for p in u.get("escaped") or ()
    ]
    if any(u.get("transient") for u in units):
        lines.append(TRANSIENT_NOTE)
    return "\n".join(lines)


def log_line(entry: dict[str, Any], *, prefix_width: int | None, timestamps: bool) -> str:
    """One log line as ``ctl logs`` prints it: ``[TIME ]NAME | text`` or just the text."""
    out = str(entry["text"])
    if prefix_width is not None:
        out = f"{entry['unit'].ljust(prefix_width)} | {out}"
    if timestamps:
        ts = entry["ts"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts))
        out = f"{stamp}.{int(ts % 1 * 1000):03d} {out}"
    return out


def supervisor_status_line(unit: dict[str, Any], now: float) -> str:
    """One line as supervisorctl prints it: ``name  RUNNING  pid 123, uptime 0:01:02``."""
    state = unit["state"]
    word = {
        "ready": "RUNNING",
        "running": "RUNNING",
        "waiting": "STARTING",
        "starting": "STARTING",
        "stopping": "STOPPING",
        "stopped": "STOPPED",
        "inactive": "STOPPED",
        "backoff": "BACKOFF",
        "exited": "EXITED",
        "failed": "FATAL",
        "skipped": "STOPPED",
        "scheduled": "STOPPED",
    }.get(state, state.upper())
    pid, started = unit.get("pid"), unit.get("started_at")
    # supervisord's descriptions (rpcinterface._interpretProcessInfo) and its columns
    if word == "RUNNING" and pid and started:
        up = max(0, int(now) - int(started))  # whole seconds, as supervisord counts
        hours, rest = divmod(up, 3600)
        desc = f"pid {pid}, uptime {hours}:{rest // 60:02d}:{rest % 60:02d}"
    elif word in ("STOPPED", "EXITED") and state in ("skipped", "scheduled"):
        desc = unit.get("cause") or ""  # vastinit's reason says more than a date
    elif word in ("STOPPED", "EXITED"):
        stop = unit.get("last_exit_at")
        if started and stop:
            desc = time.strftime("%b %d %I:%M %p", time.localtime(stop))
        else:
            desc = "Not started"
    else:
        desc = unit.get("cause") or ""
    name, group = unit["name"], unit.get("group") or unit["name"]
    spec = name if group == name else f"{group}:{name}"  # supervisorctl's GROUP:NAME
    return f"{spec:<33}{word:<10}{desc}".rstrip()


def event_line(event: dict[str, Any]) -> str | None:
    """One line for a ``ctl status --watch`` event (None for one it does not print)."""
    clock = time.strftime("%H:%M:%S", time.localtime(float(event.get("ts") or time.time())))
    kind = event.get("type")
    unit = event.get("unit", "")
    if kind == "state":
        return f"{clock} {unit} {event.get('old')} -> {event.get('new')}: {event.get('cause')}"
    if kind == "restart_to_apply":
        note = event.get("note")
        return f"{clock} {unit} restart to apply: {note}" if note else None
    if kind == "reload":
        parts = [
            f"{key} {', '.join(event.get(key) or [])}"
            for key in ("added", "removed", "changed")
            if event.get(key)
        ]
        return f"{clock} reload: {'; '.join(parts) or 'nothing changed'}"
    return None
