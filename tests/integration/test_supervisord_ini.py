"""supervisord INI programs under a real `vastinit run`: the image README's recipe."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.harness import Vastinit, pid_alive, wait_until, write_unit
from tests.integration.test_ctl import status_of, supervisorctl, wait_status

Start = Callable[..., Vastinit]


def test_readme_recipe_conf_d_program_runs_after_reread_and_update(
    tmp_path: Path, units_dir: Path, vastinit_run: Start
) -> None:
    etc = tmp_path / "etc-supervisor"
    (etc / "conf.d").mkdir(parents=True)
    app = tmp_path / "run.sh"
    app.write_text("#!/bin/sh\necho my-app says hello\nexec sleep 600\n")
    app.chmod(0o755)
    write_unit(units_dir, "base", 'command = ["sleep", "600"]')
    env = {
        "VASTINIT_ROLE": "box",
        "VASTINIT_SUPERVISOR_DIR": str(etc),
        "VASTINIT_SUPERVISOR_SOCKET": "",  # never this machine's /var/run
    }
    v = vastinit_run(control=True, env=env)
    v.wait_control()
    wait_status(v, "base", "ready")

    # The README, verbatim but for the paths:
    #   echo "[program:my-app]
    #   command=/opt/my-app/run.sh" > /etc/supervisor/conf.d/my-app.conf
    #   supervisorctl reread && supervisorctl update
    subprocess.run(
        ["sh", "-c", f'echo "[program:my-app]\ncommand={app}" > {etc}/conf.d/my-app.conf'],
        check=True,
    )
    reread = supervisorctl(v, "reread")
    assert (reread.returncode, reread.stdout) == (0, "my-app: available\n"), reread
    update = supervisorctl(v, "update")
    assert (update.returncode, update.stdout) == (0, "my-app: added process group\n"), update
    pid = wait_status(v, "my-app", "ready")["pid"]
    assert pid > 0

    def logged() -> bool:
        out = v.ctl("logs", "my-app")
        return out.returncode == 0 and "my-app says hello" in out.stdout

    wait_until(logged, 10, "my-app's output in `ctl logs`")

    (etc / "conf.d" / "my-app.conf").unlink()
    assert supervisorctl(v, "reread").stdout == "my-app: disappeared\n"
    update = supervisorctl(v, "update")
    assert update.returncode == 0, update
    assert "my-app: removed process group" in update.stdout
    assert "my-app" not in status_of(v)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, "my-app's process to be gone")
    assert v.terminate() == 0


def test_ini_files_in_etc_supervisor_are_ignored_on_a_workstation(
    tmp_path: Path, units_dir: Path, vastinit_run: Start
) -> None:
    etc = tmp_path / "etc-supervisor"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "conf.d" / "x.conf").write_text("[program:x]\ncommand=sleep 600\n")
    write_unit(units_dir, "base", 'command = ["sleep", "600"]')
    env = {"VASTINIT_ROLE": "workstation", "VASTINIT_SUPERVISOR_DIR": str(etc)}
    v = vastinit_run(control=True, env=env)
    v.wait_control()
    wait_status(v, "base", "ready")
    assert "x" not in status_of(v)
    assert v.terminate() == 0


def test_an_ini_programs_leftovers_keep_running_after_its_main_process_exits(
    tmp_path: Path, units_dir: Path, vastinit_run: Start
) -> None:
    pidfile = tmp_path / "child.pid"
    (units_dir / "spawner.conf").write_text(
        "[program:spawner]\n"
        f"command=sh -c 'sleep 600 & echo $! > {pidfile}; exit 0'\n"
        "autorestart=false\n"
    )
    write_unit(
        units_dir,
        "tomlspawner",
        f"""command = "sleep 600 & echo $! > {pidfile}.toml; exit 0"
        restart.policy = "never"
        """,
    )
    v = vastinit_run(control=True, env={"VASTINIT_SUPERVISOR_SOCKET": ""})
    v.wait_control()
    wait_status(v, "spawner", "exited")
    wait_status(v, "tomlspawner", "exited")
    child = int(pidfile.read_text())
    assert Path(f"/proc/{child}").exists()  # supervisord leaves it alone; so does vastinit
    toml_child = int(Path(f"{pidfile}.toml").read_text())
    wait_until(lambda: not pid_alive(toml_child), 10, "a TOML unit's leftover to be stopped")
    assert v.terminate() == 0
    wait_until(lambda: not pid_alive(child), 10, "the leftover to be stopped at shutdown")


def test_redirect_stderr_false_keeps_stderr_in_its_own_file(
    tmp_path: Path, units_dir: Path, vastinit_run: Start
) -> None:
    (units_dir / "both.conf").write_text(
        "[program:apart]\n"
        "command=sh -c 'echo to-out; echo to-err >&2; exec sleep 600'\n"
        "[program:together]\n"
        "command=sh -c 'echo to-out; echo to-err >&2; exec sleep 600'\n"
        "redirect_stderr=true\n"
    )
    v = vastinit_run(control=True, env={"VASTINIT_SUPERVISOR_SOCKET": ""})
    v.wait_control()
    logs = tmp_path / "logs"

    def written(name: str, text: str) -> bool:
        path = logs / name
        return path.exists() and text in path.read_text()

    wait_until(lambda: written("apart.stderr.log", "to-err"), 10, "apart's stderr file")
    wait_until(lambda: written("apart.log", "to-out"), 10, "apart's stdout file")
    wait_until(lambda: written("together.log", "to-err"), 10, "together's one file")
    assert "to-err" not in (logs / "apart.log").read_text()
    assert "to-out" not in (logs / "apart.stderr.log").read_text()
    assert not (logs / "together.stderr.log").exists()
    assert v.terminate() == 0
