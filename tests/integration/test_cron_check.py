"""``vastinit check`` (a real subprocess) on cron units: every bad schedule at its FILE:LINE."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def check(units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vastinit", "check", "--units", str(units)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cron_unit(units: Path, name: str, cron: str, timezone: str = "UTC") -> Path:
    """A cron unit whose ``cron`` key is on line 4 and ``timezone`` on line 5."""
    path = units / f"{name}.toml"
    path.write_text(
        f'type = "cron"\ncommand = "true"\n[schedule]\ncron = "{cron}"\ntimezone = "{timezone}"\n'
    )
    return path


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("*/5 * * *", "invalid cron expression"),  # 4 fields
        ("0 */5 * * * *", "invalid cron expression"),  # croniter's seconds field
        ("0 0 1 1 * 2030", "invalid cron expression"),  # a year field
        ("@yearly", "invalid cron expression"),
        ("@annually", "invalid cron expression"),
        ("@midnight", "invalid cron expression"),
        ("0 0 L * *", "invalid cron expression"),  # croniter's last-day extension
        ("61 * * * *", "invalid cron expression"),
        ("0 0 31 2 *", "never fires"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_check_reports_a_bad_cron_expression_at_its_line(
    tmp_path: Path, cron: str, fragment: str
) -> None:
    path = cron_unit(tmp_path, "job", cron)
    result = check(tmp_path)
    assert result.returncode == 2, result.stdout
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{path}:4: unit job: schedule.cron: "), first
    assert fragment in first and repr(cron) in first, first
    if fragment == "invalid cron expression":
        # The message says what is allowed instead.
        assert "5 fields" in first and "@hourly, @daily, @weekly, @monthly, @reboot" in first


def test_check_reports_an_unknown_time_zone_at_its_line(tmp_path: Path) -> None:
    path = cron_unit(tmp_path, "job", "0 3 * * *", timezone="Mars/Olympus_Mons")
    result = check(tmp_path)
    assert result.returncode == 2, result.stdout
    assert result.stderr.splitlines()[0] == (
        f"{path}:5: unit job: schedule.timezone: unknown time zone 'Mars/Olympus_Mons' "
        "(use an IANA name such as 'UTC' or 'Europe/Berlin')"
    )


def test_check_reports_every_bad_schedule_at_once(tmp_path: Path) -> None:
    a = cron_unit(tmp_path, "a", "@yearly")
    b = cron_unit(tmp_path, "b", "0 0 31 2 *")
    c = cron_unit(tmp_path, "c", "* * * * *", timezone="Nowhere/Nothing")
    result = check(tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert [ln.split(": unit")[0] for ln in lines[:3]] == [f"{a}:4", f"{b}:4", f"{c}:5"], lines


@pytest.mark.parametrize(
    "cron",
    [
        "*/5 * * * *",
        "30 3 * * *",
        "0 9 * jan-mar mon-fri",
        "0,30 8-18/2 1,15 * 0",
        "@hourly",
        "@daily",
        "@weekly",
        "@monthly",
        "@reboot",
        "0 0 29 2 *",
    ],
)
def test_check_accepts_the_spec_forms(tmp_path: Path, cron: str) -> None:
    cron_unit(tmp_path, "job", cron, timezone="Europe/Berlin")
    result = check(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["layer 0: job"]
