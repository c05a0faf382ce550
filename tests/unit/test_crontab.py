"""Crontab files -> cron units (vastinit.config.crontab), in scratch directories only."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from vastinit.config import load_units
from vastinit.config.crontab import CrontabPaths, Crontabs, split_percent
from vastinit.config.environ import resolve_unit
from vastinit.errors import ConfigError
from vastinit.model import Escaped, Overlap, UnitType
from vastinit.role import box_role

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="file owners need root to set")


def setup(tmp_path: Path) -> tuple[Crontabs, Path, Path, Path]:
    cron_d, spool = tmp_path / "cron.d", tmp_path / "spool"
    cron_d.mkdir()
    spool.mkdir()
    system = tmp_path / "crontab"
    paths = CrontabPaths(system=system, cron_d=cron_d, spool=spool, localtime=tmp_path / "lt")
    return Crontabs(paths, environ={"TZ": "Europe/Berlin"}), system, cron_d, spool


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def said(crontabs: Crontabs) -> list[str]:
    return [str(d) for d in crontabs.take_diagnostics()]


@pytest.mark.parametrize(
    ("command", "want"),
    [
        ("echo hi", ("echo hi", None)),
        ("cat%a%b", ("cat", "a\nb")),
        ("date +\\%s", ("date +%s", None)),
        ("mail x%body \\% too%", ("mail x", "body % too\n")),
        ("cat %", ("cat ", "")),
        ("echo a\\b", ("echo a\\b", None)),
    ],
)
def test_percent_is_cron_s_newline_and_stdin(command: str, want: tuple[str, str | None]) -> None:
    assert split_percent(command) == want


def test_lines_become_cron_units_with_cron_s_environment(tmp_path: Path) -> None:
    crontabs, system, _, _ = setup(tmp_path)
    write(
        system,
        "# m h dom mon dow user command\n"
        "SHELL=/bin/bash\n"
        'GREETING = "  spaced  "\n'
        "17 * * * * root cd / && echo ${HOME} $GREETING\n"
        "\n"
        "@Yearly root echo new year\n"
        "@midnight nobody echo midnight\n",
    )
    units = load_units([tmp_path / "units"], crontabs)
    assert sorted(units) == ["etc-crontab-1", "etc-crontab-2", "etc-crontab-3"]
    first = units["etc-crontab-1"]
    assert first.type is UnitType.CRON and first.user == "root"
    assert first.source == str(system)
    assert first.command == ("/bin/bash", "-c", "cd / && echo $${HOME} $$GREETING")
    # Nothing in a crontab is a vastinit template: the shell gets ${HOME} as written.
    assert resolve_unit(first, {}).command[2] == "cd / && echo ${HOME} $GREETING"
    env = dict(first.environment)
    assert env["GREETING"] == "  spaced  " and env["SHELL"] == "/bin/bash"
    assert env["PATH"] == "/usr/bin:/bin" and env["LOGNAME"] == "root"
    assert env["HOME"] == pwd.getpwnam("root").pw_dir
    assert first.schedule is not None
    assert (first.schedule.cron, first.schedule.timezone) == ("17 * * * *", "Europe/Berlin")
    assert first.schedule.overlap is Overlap.ALLOW
    assert first.stop.escaped is Escaped.KEEP and first.stop.leftovers is Escaped.KEEP
    assert units["etc-crontab-2"].schedule.cron == "0 0 1 1 *"  # type: ignore[union-attr]
    assert units["etc-crontab-3"].schedule.cron == "0 0 * * *"  # type: ignore[union-attr]
    assert units["etc-crontab-3"].user == "nobody"
    assert said(crontabs) == []


def test_bad_lines_are_errors_naming_file_line_and_the_rest_still_load(tmp_path: Path) -> None:
    crontabs, _, cron_d, _ = setup(tmp_path)
    job = write(
        cron_d / "job",
        "MAILTO=me@example.com\n"
        "* * * * * root echo good\n"
        "61 * * * * root echo bad minute\n"
        "garbage\n"
        "* * * * *\n"
        "@every root echo x\n"
        "* * * * * nosuchuser-xyz echo who\n"
        "LOGNAME=other\n"
        "0 0 * * * root echo good too\n",
    )
    units = load_units([tmp_path / "units"], crontabs)
    assert sorted(units) == ["cron.d-job-1", "cron.d-job-6"]
    lines = said(crontabs)
    assert lines[0].startswith(f"{job}:1: MAILTO: there is no mail here")
    assert lines[1].startswith(f"{job}:3: unit cron.d-job-2: schedule.cron: invalid cron")
    assert lines[2:] == [
        f"{job}:4: not a job line nor a NAME=value line: skipped",
        f"{job}:5: expected 5 time fields and a command: skipped",
        f"{job}:6: unknown '@every' (use one of @reboot, @yearly, @annually, @monthly, "
        "@weekly, @daily, @midnight, @hourly): skipped",
        f"{job}:7: ignored: user 'nosuchuser-xyz' has no passwd entry",
        f"{job}:8: LOGNAME cannot be changed (cron sets it): ignored",
    ]
    # Said once: an unchanged file's problems are not repeated at every rescan.
    load_units([tmp_path / "units"], crontabs)
    assert said(crontabs) == []


def test_names_follow_file_and_job_position_so_edits_keep_them(tmp_path: Path) -> None:
    crontabs, _, cron_d, _ = setup(tmp_path)
    write(cron_d / "a", "* * * * * root echo one\n0 * * * * root echo two\n")
    before = load_units([tmp_path / "units"], crontabs)
    write(cron_d / "a", "# note\n\n*/5 * * * * root echo ONE\n0 * * * * root echo two\n")
    after = load_units([tmp_path / "units"], crontabs)
    assert sorted(before) == sorted(after) == ["cron.d-a-1", "cron.d-a-2"]
    assert after["cron.d-a-1"].schedule.cron == "*/5 * * * *"  # type: ignore[union-attr]
    # The second line moved down two lines, unchanged: the same unit (not restarted).
    assert after["cron.d-a-2"] == before["cron.d-a-2"]


def test_a_drop_in_overrides_a_crontab_line_and_its_problems_name_file_line(
    tmp_path: Path,
) -> None:
    crontabs, _, cron_d, _ = setup(tmp_path)
    write(cron_d / "a", "* * * * * root echo one\n")
    dropins = tmp_path / "units" / "cron.d-a-1.d"
    dropins.mkdir(parents=True)
    (dropins / "skip.toml").write_text('[schedule]\noverlap = "skip"\n')
    units = load_units([tmp_path / "units"], crontabs)
    assert units["cron.d-a-1"].schedule.overlap is Overlap.SKIP  # type: ignore[union-attr]
    (dropins / "bad.toml").write_text('\n[stop]\nleftovers = "maybe"\n')
    with pytest.raises(ConfigError) as info:
        load_units([tmp_path / "units"], crontabs)
    [problem] = info.value.problems
    assert (problem.file, problem.line) == (str(dropins / "bad.toml"), 3)
    assert "stop.leftovers: 'maybe' is not one of stop | keep" in problem.message


def test_a_unit_file_keeps_its_name_over_a_crontab_line(tmp_path: Path) -> None:
    crontabs, _, cron_d, _ = setup(tmp_path)
    job = write(cron_d / "a", "* * * * * root echo one\n")
    units_dir = tmp_path / "units"
    units_dir.mkdir()
    (units_dir / "cron.d-a-1.toml").write_text('command = "true"\n')
    units = load_units([units_dir], crontabs)
    assert units["cron.d-a-1"].type is UnitType.SERVICE
    assert said(crontabs) == [f"{job}:1: skipped: unit cron.d-a-1 exists as a unit file already"]


@ROOT_ONLY
def test_permission_checks_ignore_sloppy_files_with_a_warning(tmp_path: Path) -> None:
    crontabs, system, cron_d, spool = setup(tmp_path)
    nobody = pwd.getpwnam("nobody")
    write(system, "* * * * * root echo sys\n", 0o664)
    mine = write(cron_d / "notroot", "* * * * * root echo x\n")
    os.chown(mine, nobody.pw_uid, -1)
    write(cron_d / "ok", "* * * * * root echo ok\n", 0o600)
    write(cron_d / "pkg.dpkg-old", "* * * * * root echo old\n")
    loose = write(spool / "nobody", "* * * * * echo n\n", 0o644)
    os.chown(loose, nobody.pw_uid, -1)
    wrong_owner = write(spool / "root", "* * * * * echo r\n", 0o600)
    os.chown(wrong_owner, nobody.pw_uid, -1)
    write(spool / "nosuchuser-xyz", "* * * * * echo r\n", 0o600)
    write(spool / "tmp.1234", "* * * * * echo r\n", 0o600)
    units = load_units([tmp_path / "units"], crontabs)
    assert sorted(units) == ["cron.d-ok-1"]
    assert sorted(said(crontabs)) == sorted(
        [
            f"{system}: ignored: writable by group or others (mode 0664)",
            f"{mine}: ignored: not owned by root (uid {nobody.pw_uid})",
            f"{cron_d / 'pkg.dpkg-old'}: ignored: cron.d file names may hold only letters, "
            "digits, '-' and '_' (as Debian's cron; files with a '.' are packaging leftovers)",
            f"{loose}: ignored: mode 0644; a crontab must be 0600",
            f"{wrong_owner}: ignored: not owned by root (uid {nobody.pw_uid})",
            f"{spool / 'nosuchuser-xyz'}: ignored: user 'nosuchuser-xyz' has no passwd entry",
        ]
    )


def test_spool_file_runs_as_its_owner_without_a_user_column(tmp_path: Path) -> None:
    crontabs, _, _, spool = setup(tmp_path)
    me = pwd.getpwuid(os.geteuid())
    write(spool / me.pw_name, "@reboot echo up\n", 0o600)
    units = load_units([tmp_path / "units"], crontabs)
    unit = units[f"crontab-{me.pw_name}-1"]
    assert unit.user == me.pw_name
    assert unit.command == ("/bin/sh", "-c", "echo up")


def test_reboot_runs_after_provisioning_and_a_later_reboot_line_waits_for_next_boot(
    tmp_path: Path,
) -> None:
    crontabs, _, cron_d, _ = setup(tmp_path)
    units_dir = tmp_path / "units"
    units_dir.mkdir()
    (units_dir / "provisioning.toml").write_text('type = "oneshot"\ncommand = "true"\n')
    write(cron_d / "a", "@reboot root echo boot\n")
    first = load_units([units_dir], crontabs)
    assert {k: v.value for k, v in first["cron.d-a-1"].depends_on.items()} == {
        "provisioning": "exited"
    }
    # A rescan of the unchanged line gives the same unit: it is not run again.
    assert load_units([units_dir], crontabs)["cron.d-a-1"] == first["cron.d-a-1"]
    write(cron_d / "a", "@reboot root echo boot\n@reboot root echo later\n")
    again = load_units([units_dir], crontabs)
    assert again["cron.d-a-1"] == first["cron.d-a-1"]
    assert again["cron.d-a-2"].enabled is False
    assert any("runs at the next boot" in line for line in said(crontabs))


def test_timezone_from_tz_else_localtime_link_else_utc(tmp_path: Path) -> None:
    crontabs, _, cron_d, _ = setup(tmp_path)
    write(cron_d / "a", "0 3 * * * root true\n")
    crontabs.environ = {}
    (tmp_path / "lt").symlink_to("/usr/share/zoneinfo/America/New_York")
    assert load_units([tmp_path / "u"], crontabs)["cron.d-a-1"].schedule.timezone == (  # type: ignore[union-attr]
        "America/New_York"
    )
    crontabs.environ = {"TZ": ":Asia/Tokyo"}
    assert load_units([tmp_path / "u"], crontabs)["cron.d-a-1"].schedule.timezone == (  # type: ignore[union-attr]
        "Asia/Tokyo"
    )


def test_box_role_as_the_spec_says(tmp_path: Path) -> None:
    absent = str(tmp_path / "no-launch")
    base = {"VASTINIT_LAUNCH_FILE": absent}
    assert box_role(base, pid1=True)
    assert not box_role(base, pid1=False)
    assert box_role({**base, "VAST_CONTAINERLABEL": "C.1"}, pid1=False)
    (tmp_path / "launch").write_text("")
    assert box_role({"VASTINIT_LAUNCH_FILE": str(tmp_path / "launch")}, pid1=False)
    assert not box_role({**base, "VASTINIT_ROLE": "workstation"}, pid1=True)
    assert box_role({**base, "VASTINIT_ROLE": "box"}, pid1=False)


def test_fingerprint_changes_with_a_crontab_and_only_then(tmp_path: Path) -> None:
    crontabs, _, cron_d, spool = setup(tmp_path)
    before = crontabs.fingerprint()
    assert crontabs.fingerprint() == before
    write(spool / "root", "* * * * * echo r\n", 0o600)
    after = crontabs.fingerprint()
    assert after != before
    write(cron_d / "a", "* * * * * root true\n")
    assert crontabs.fingerprint() != after


def test_vastinit_run_reads_crontabs_in_the_box_role_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vastinit.app import _crontabs

    monkeypatch.setenv("VASTINIT_LAUNCH_FILE", str(tmp_path / "no-launch"))
    monkeypatch.delenv("VAST_CONTAINERLABEL", raising=False)
    monkeypatch.delenv("VASTINIT_CRONTABS", raising=False)
    monkeypatch.setenv("VASTINIT_ROLE", "workstation")
    assert _crontabs() is None  # the host's own cron runs them already
    monkeypatch.setenv("VASTINIT_ROLE", "box")
    monkeypatch.setenv("VASTINIT_CRON_SPOOL", str(tmp_path / "spool"))
    crontabs = _crontabs()
    assert crontabs is not None and crontabs.paths.spool == tmp_path / "spool"
    monkeypatch.setenv("VASTINIT_CRONTABS", "off")
    assert _crontabs() is None
