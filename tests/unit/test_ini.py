"""supervisord INI programs -> units, and `vastinit import` round-trips them."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vastinit.config import load_units
from vastinit.config.ini_import import main as import_main
from vastinit.errors import ConfigError, ConfigProblem
from vastinit.model import RestartMode, StopMode

DATA = Path(__file__).resolve().parent.parent / "data" / "supervisord"
# Real-world files (tests/data/supervisord/SOURCES.md) kept outside the repository: set
# VASTINIT_SUPERVISORD_CORPUS=DIR to run the round-trip and check tests over them too.
_EXTRA = os.environ.get("VASTINIT_SUPERVISORD_CORPUS")
CORPUS = sorted(DATA.glob("*.conf")) + (sorted(Path(_EXTRA).glob("*.conf")) if _EXTRA else [])


def load_ini(*files: Path) -> tuple[dict[str, object], list[str]]:
    warnings: list[ConfigProblem] = []
    units = load_units([], ini_files=list(files), warnings=warnings)
    return units, [str(w) for w in warnings]  # type: ignore[return-value]


def test_program_options_map_to_the_unit() -> None:
    units, warnings = load_ini(DATA / "web-stack.conf")
    app = units["app"]
    assert app.command[:3] == ("/bin/sh", "-c", 'umask 022 && exec "$$@"')  # type: ignore[attr-defined]
    assert app.command[4:] == ("/srv/venv/bin/gunicorn", "main:app", "--bind", "127.0.0.1:8000")  # type: ignore[attr-defined]
    assert app.working_dir == "/srv/app" and app.user == "www-data"  # type: ignore[attr-defined]
    env = dict(app.environment)  # type: ignore[attr-defined]
    assert env["APP_ENV"] == "prod" and env["NAME"] == "app"
    assert env["PATH"] == f"/srv/venv/bin:{os.environ['PATH']}".replace("$", "$$")
    assert app.stop.signal == signal.SIGQUIT and app.stop.timeout == 30  # type: ignore[attr-defined]
    assert app.stop.mode is StopMode.GROUP  # type: ignore[attr-defined]
    assert app.log.file == "/var/log/app/app.log" and app.log.keep == 5  # type: ignore[attr-defined]
    assert app.log.max_size == 20 * 1024 * 1024  # type: ignore[attr-defined]
    assert app.restart.limit == 10  # type: ignore[attr-defined]
    assert dict(app.depends_on) == {"nginx": app.depends_on["nginx"]}  # type: ignore[attr-defined]
    nginx = units["nginx"]
    assert nginx.log.file == "" and nginx.restart.mode is RestartMode.ALWAYS  # type: ignore[attr-defined]
    assert nginx.stop.mode is StopMode.MAIN  # type: ignore[attr-defined]
    assert warnings == []


def test_numprocs_groups_and_unsupported_options_are_warnings() -> None:
    units, warnings = load_ini(DATA / "workers.conf")
    assert sorted(units) == ["beat", "worker_01", "worker_02", "worker_03"]
    assert {units[n].process_group for n in units} == {"queue"}  # type: ignore[attr-defined]
    assert units["worker_02"].command[:4] == ("python", "-m", "worker", "--id")  # type: ignore[attr-defined]
    assert units["worker_02"].command[4] == "2"  # type: ignore[attr-defined]
    assert units["beat"].autostart is False  # type: ignore[attr-defined]
    assert units["beat"].command[-1] == str(DATA)  # type: ignore[attr-defined]
    path = DATA / "workers.conf"
    assert warnings == [
        f"{path}:8: unit worker: warning: stdout_capture_maxbytes: not supported by vastinit; "
        "ignored",
        f"{path}:21: unit memmon: warning: [eventlistener:memmon]: supervisord eventlistener "
        "sections are not supported; not run",
    ]


def test_bad_values_are_file_line_problems(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf"
    conf.write_text("[program:x]\ncommand=sleep 1\nstartretries=lots\nstopsignal=NOPE\n")
    with pytest.raises(ConfigError) as info:
        load_ini(conf)
    text = [str(p) for p in info.value.problems]
    assert text[0].startswith(f"{conf}:3: unit x: restart.limit: expected an integer")
    assert text[1].startswith(f"{conf}:4: unit x: stop.signal:")


def test_a_toml_unit_wins_over_an_ini_program_of_the_same_name(tmp_path: Path) -> None:
    (tmp_path / "web.toml").write_text('command = ["sleep", "1"]\n')
    (tmp_path / "web.conf").write_text("[program:web]\ncommand=sleep 2\n")
    warnings: list[ConfigProblem] = []
    units = load_units([tmp_path], ini_files=None, warnings=warnings)
    assert units["web"].command == ("sleep", "1")
    assert [str(w) for w in warnings] == [
        f"{tmp_path}/web.conf:1: unit web: warning: {tmp_path}/web.toml defines the same "
        "unit; the TOML unit wins"
    ]


def test_supervisord_conf_includes_are_followed(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "supervisord.conf").write_text("[include]\nfiles = conf.d/*.conf\n")
    (tmp_path / "conf.d" / "a.conf").write_text("[program:a]\ncommand=sleep 1\n")
    units, _ = load_ini(tmp_path / "supervisord.conf")
    assert list(units) == ["a"]


@pytest.mark.parametrize("conf", CORPUS, ids=[c.name for c in CORPUS])
def test_import_round_trips(conf: Path, tmp_path: Path) -> None:
    direct, _ = load_ini(conf)
    assert import_main(["-o", str(tmp_path), str(conf)]) == 0
    imported = load_units([tmp_path], ini_files=[])
    assert sorted(imported) == sorted(direct)
    for name, unit in direct.items():
        assert dataclasses.replace(unit, source="") == dataclasses.replace(  # type: ignore[type-var]
            imported[name], source=""
        ), name


@pytest.mark.parametrize("conf", CORPUS, ids=[c.name for c in CORPUS])
def test_check_prints_the_programs(conf: Path, tmp_path: Path) -> None:
    (tmp_path / conf.name).write_bytes(conf.read_bytes())
    env = {**os.environ, "VASTINIT_ROLE": "workstation"}
    result = subprocess.run(
        [sys.executable, "-m", "vastinit", "check", "--units", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    units, _ = load_ini(conf)
    for name in units:
        assert name in result.stdout
