"""``vastinit check`` on hostile unit directories: one ``FILE:LINE`` problem each, exit 2,
no traceback, and never a hang (a real subprocess with a deadline, so a blocking read
shows as a timeout instead of a hung suite)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 20.0

Setup = Callable[[Path], None]


def check(units: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "vastinit", "check", "--units", str(units)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"vastinit check did not finish within {DEADLINE}s (a blocking read?)")


def text(name: str, body: str) -> Setup:
    return lambda d: (d / name).write_text(body)


def raw(name: str, body: bytes) -> Setup:
    return lambda d: (d / name).write_bytes(body)


def fifo(d: Path) -> None:
    os.mkfifo(d / "x.toml")


def symlink_to_fifo(d: Path) -> None:
    os.mkfifo(d / ".pipe")
    (d / "x.toml").symlink_to(d / ".pipe")


def dropin_fifo(d: Path) -> None:
    (d / "x.toml").write_text('command = ["true"]\n')
    (d / "x.d").mkdir()
    os.mkfifo(d / "x.d" / "10-more.toml")


def bomb() -> str:
    lines = ['command = ["true"]', "[environment]", 'A0 = "' + "x" * 100 + '"']
    lines += [f'A{i} = "${{A{i - 1}}}${{A{i - 1}}}"' for i in range(1, 27)]
    return "\n".join(lines) + "\n"


DEEP = "[" * 5000 + "]" * 5000
DOTTED = ".".join(f"k{i}" for i in range(40))
CASES: dict[str, tuple[Setup, str]] = {
    "deep array": (
        text("x.toml", f'command = ["true"]\nx = {DEEP}\n'),
        r"x\.toml:2: unit x: nested deeper than 32 levels",
    ),
    "deep inline tables": (
        text("x.toml", 'command = ["true"]\nx = ' + "{a = " * 40 + "1" + "}" * 40 + "\n"),
        r"x\.toml:2: unit x: nested deeper than 32 levels",
    ),
    "deep dotted header": (
        text("x.toml", f'command = ["true"]\n[{DOTTED}]\nk = 1\n'),
        r"x\.toml:2: unit x: nested deeper than 32 levels",
    ),
    "huge file": (
        text("x.toml", 'command = ["true"]\n' + "# padding\n" * 120_000),
        r"x\.toml: unit x: unit file is 1200019 bytes; the limit is 1 MiB",
    ),
    "NUL byte": (
        raw("x.toml", b'command = ["true"]\ndescription = "a\x00b"\n'),
        r"x\.toml:2: unit x: TOML syntax error: Illegal character '\\x00'",
    ),
    "control character": (
        raw("x.toml", b'command = ["true"]\ndescription = "\x1b[2J"\n'),
        r"x\.toml:2: unit x: TOML syntax error: Illegal character '\\x1b'",
    ),
    "invalid UTF-8": (
        raw("x.toml", b'command = ["true"]\ndescription = "\xff"\n'),
        r"x\.toml:2: unit x: not UTF-8 text \(byte 34\)",
    ),
    "FIFO": (fifo, r"x\.toml: unit x: not a regular file \(a FIFO\)"),
    "symlink to a FIFO": (symlink_to_fifo, r"x\.toml: unit x: not a regular file \(a FIFO\)"),
    "drop-in FIFO": (dropin_fifo, r"10-more\.toml: unit x: not a regular file \(a FIFO\)"),
    "escaped NUL in command": (
        text("x.toml", 'command = ["a\\u0000b"]\n'),
        r"x\.toml:1: unit x: command\[0\]: contains a NUL byte",
    ),
    "escaped NUL in environment": (
        text("x.toml", 'command = ["true"]\n[environment]\nX = "\\u0000"\n'),
        r"x\.toml:3: unit x: environment\.X: contains a NUL byte",
    ),
    "escaped NUL in a shell command": (
        text("x.toml", 'command = "echo \\u0000"\n'),
        r"x\.toml:1: unit x: command: contains a NUL byte",
    ),
    "expansion bomb": (
        text("x.toml", bomb()),
        r"x\.toml:14: unit x: environment\.A11: '\$\{A10\}\$\{A10\}' expands to more than 128 KiB",
    ),
    "control characters in the file name": (
        text("a\x1b[31mb\n.toml", 'command = ["true"]\n'),
        r"a\\x1b\[31mb\\n\.toml: unit a\\x1b\[31mb\\n: invalid unit name",
    ),
    "time zone that is a directory": (
        text(
            "x.toml",
            'type = "cron"\ncommand = ["true"]\n[schedule]\ncron = "@daily"\ntimezone = "Europe"\n',
        ),
        r"x\.toml:5: unit x: schedule\.timezone: unknown time zone 'Europe'",
    ),
    "regex nested too deep": (
        text(
            "x.toml", 'command = ["true"]\n[readiness]\nlog = "' + "(" * 3000 + ")" * 3000 + '"\n'
        ),
        r"x\.toml:3: unit x: readiness\.log: regular expression too complex",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_unit_file_is_one_problem_and_exit_2(tmp_path: Path, case: str) -> None:
    setup, expected = CASES[case]
    setup(tmp_path)
    result = check(tmp_path)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 2, result.stderr  # the problem, then the summary
    assert re.search(expected, lines[0]), lines[0]
    assert lines[1] == "vastinit check: 1 problem in 1 file"


@pytest.fixture
def pty_slave() -> Iterator[str]:
    """A terminal whose other end never writes: a blocking read on it never returns."""
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def test_symlink_to_a_terminal_nobody_writes_is_refused(tmp_path: Path, pty_slave: str) -> None:
    (tmp_path / "x.toml").symlink_to(pty_slave)
    result = check(tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"{tmp_path / 'x.toml'}: unit x: not a regular file (a character device); "
        "a unit file must be one"
    )


@pytest.mark.skipif(not os.path.exists("/proc/kmsg"), reason="no /proc/kmsg")
def test_symlink_to_proc_kmsg_is_refused_without_reading_it(tmp_path: Path) -> None:
    # /proc/kmsg looks like a regular file; reading it blocks until the kernel logs (and
    # consumes what it returns). It must be refused from its stat alone, never opened.
    (tmp_path / "x.toml").symlink_to("/proc/kmsg")
    result = check(tmp_path)
    assert result.returncode == 2, result.stderr
    assert "not a regular file (a kernel interface file under /proc)" in result.stderr
