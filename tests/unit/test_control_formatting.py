"""What `vastinit ctl` prints: durations, the status table, log lines, supervisorctl lines."""

from __future__ import annotations

import time
from typing import Any

import pytest

from vastinit.control import formatting as fmt
from vastinit.control.cli import action_line

NOW = 1_800_000_000.0


def unit(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "web",
        "type": "service",
        "state": "ready",
        "cause": "started",
        "pid": 42,
        "started_at": NOW - 75,
        "restarts": 0,
        "last_exit": None,
        "next_run": None,
        "probe_error": None,
    }
    return {**base, **fields}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (252, "4m12s"),
        (3599, "59m59s"),
        (7500, "2h05m"),
        (90000, "1d01h"),
    ],
)
def test_duration_is_short_and_coarsens_with_size(seconds: float, text: str) -> None:
    assert fmt.duration(seconds) == text


def test_status_row_fills_every_column() -> None:
    row = fmt.status_row(unit(restarts=2, last_exit="killed by SIGKILL"), NOW)
    assert row == ["web", "ready", "yes", "42", "1m15s", "2", "killed by SIGKILL", "-", "started"]
    assert len(row) == len(fmt.COLUMNS)


def test_status_row_for_units_without_a_process_or_readiness() -> None:
    job = fmt.status_row(
        unit(name="job", type="oneshot", state="exited", pid=None, last_exit="exit 0"), NOW
    )
    assert job[1:5] == ["exited", "-", "-", "-"]
    cron = fmt.status_row(
        unit(name="backup", type="cron", state="scheduled", pid=None, next_run=NOW + 300), NOW
    )
    assert cron[2] == "-" and cron[7] == "in 5m00s"
    waiting = fmt.status_row(unit(state="running", probe_error="connection refused"), NOW)
    assert waiting[2] == "no" and waiting[-1] == "connection refused"


def test_status_row_shows_a_live_units_status_text_unless_a_probe_failed() -> None:
    text = "https: serving a self-signed certificate; rejected /etc/instance.crt: missing"
    ready = fmt.status_row(unit(cause="READY=1 received", status_text=text), NOW)
    assert ready[-1] == text
    failing = unit(state="running", probe_error="connection refused", status_text=text)
    assert fmt.status_row(failing, NOW)[-1] == "connection refused"
    # Once the process is gone, its last STATUS= is history: the state's cause is shown.
    gone = unit(state="failed", pid=None, cause="exit 1", status_text=text)
    assert fmt.status_row(gone, NOW)[-1] == "exit 1"


def test_status_table_aligns_columns_and_cuts_the_cause_to_the_terminal() -> None:
    units = [unit(), unit(name="a-much-longer-name", cause="x" * 200)]
    table = fmt.status_table(units, NOW, width=120)
    lines = table.splitlines()
    assert lines[0].startswith("NAME                ")
    assert [line.index("ready") for line in lines[1:]] == [20, 20]
    assert all(len(line) <= 120 for line in lines)
    assert lines[2].endswith("x…")
    wide = fmt.status_table(units, NOW)
    assert wide.splitlines()[2].endswith("x" * 200)


def test_status_table_colours_states_without_breaking_alignment() -> None:
    plain = fmt.status_table([unit(), unit(name="db", state="failed")], NOW)
    coloured = fmt.status_table([unit(), unit(name="db", state="failed")], NOW, color=True)
    assert "\x1b[31mfailed" in coloured and "\x1b[32mready" in coloured
    strip = coloured.replace("\x1b[31m", "").replace("\x1b[32m", "").replace("\x1b[0m", "")
    assert strip == plain


def test_log_line_prefixes_the_unit_only_when_asked() -> None:
    entry = {"ts": NOW + 0.25, "unit": "web", "stream": "stdout", "text": "hello"}
    assert fmt.log_line(entry, prefix_width=None, timestamps=False) == "hello"
    assert fmt.log_line(entry, prefix_width=6, timestamps=False) == "web    | hello"
    stamped = fmt.log_line(entry, prefix_width=None, timestamps=True)
    assert stamped.endswith(".250 hello") and stamped[4] == "-"


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({}, "web                              RUNNING   pid 42, uptime 0:01:15"),
        (
            {"state": "failed", "cause": "exit 1"},
            "web                              FATAL     exit 1",
        ),
        (
            {"state": "waiting", "pid": None, "cause": ""},
            "web                              STARTING",
        ),
        (  # supervisord's column widths and descriptions: the stop time...
            {"state": "exited", "pid": None, "cause": "exit 0", "last_exit_at": NOW},
            "web" + " " * 30 + "EXITED    " + time.strftime("%b %d %I:%M %p", time.localtime(NOW)),
        ),
        (  # ... or "Not started"
            {"state": "inactive", "pid": None, "started_at": None, "cause": "not started"},
            "web" + " " * 30 + "STOPPED   Not started",
        ),
        (  # vastinit's reason where supervisord has no such state
            {"state": "skipped", "pid": None, "cause": "program not found: x"},
            "web" + " " * 30 + "STOPPED   program not found: x",
        ),
    ],
)
def test_supervisor_status_line_reads_like_supervisorctl(fields: dict[str, Any], line: str) -> None:
    assert fmt.supervisor_status_line(unit(**fields), NOW) == line


@pytest.mark.parametrize(
    ("result", "line"),
    [
        ({"outcome": "ready", "ok": True}, "web: ready"),
        ({"outcome": "requested", "ok": True}, "web: start requested"),
        ({"outcome": "failed", "ok": False, "cause": "exit 1"}, "web: failed (exit 1)"),
        (
            {"outcome": "timeout", "ok": False, "state": "running", "cause": "pid 7"},
            "web: timed out after 2.5s (running: pid 7)",
        ),
    ],
)
def test_action_line_says_how_each_unit_ended(result: dict[str, Any], line: str) -> None:
    assert action_line("start", {"name": "web", **result}, 2.5) == line


def test_status_table_lists_restart_to_apply_notes_whole_under_the_table() -> None:
    note = "FOO changed in /workspace/.env; BAR removed from /workspace/.env"
    units = [unit(), unit(name="sglang", restart_to_apply=note), unit(name="z", cause="x" * 80)]
    lines = fmt.status_table(units, NOW, width=100).splitlines()
    assert len(lines) == 5
    assert all(len(line) <= 100 for line in lines[:4])  # the table is cut to the terminal
    assert lines[4] == f"sglang: restart to apply: {note}"  # the note never is
    assert "restart to apply" not in fmt.status_table([unit(restart_to_apply=None)], NOW)


def test_status_table_marks_transient_units_and_says_what_the_mark_means() -> None:
    table = fmt.status_table([unit(), unit(name="tunnel", transient=True)], NOW)
    lines = table.splitlines()
    assert lines[1].startswith("web ") and lines[2].startswith("tunnel* ")
    assert lines[-1] == fmt.TRANSIENT_NOTE
    assert fmt.TRANSIENT_NOTE not in fmt.status_table([unit(transient=False)], NOW)


def test_event_lines_for_status_watch() -> None:
    from vastinit.control.formatting import event_line

    state = {"type": "state", "ts": 0, "unit": "web", "old": "running", "new": "ready"}
    assert event_line({**state, "cause": "probe ok"}).endswith("web running -> ready: probe ok")
    note = {"type": "restart_to_apply", "ts": 0, "unit": "web", "note": "FOO changed in .env"}
    assert event_line(note).endswith("web restart to apply: FOO changed in .env")
    assert event_line({**note, "note": None}) is None
    reload = {"type": "reload", "ts": 0, "added": ["a"], "removed": [], "changed": ["b", "c"]}
    assert event_line(reload).endswith("reload: added a; changed b, c")
    assert event_line({"type": "log", "ts": 0, "unit": "web", "text": "x"}) is None
