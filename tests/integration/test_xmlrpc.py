"""supervisord's XML-RPC API on vastinit's socket: xmlrpc.client and the real supervisorctl."""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import sys
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Vastinit, wait_until
from tests.integration.test_ctl import wait_status

Start = Callable[..., Vastinit]

CONF = """\
[program:crash]
command=sh -c "echo crashing; exit 3"
startretries=1
[program:once]
command=sh -c "echo once"
autorestart=false
[program:manual]
command=sleep 600
autostart=false
[program:web]
command=sh -c "echo web up; echo web err >&2; exec sleep 600"
[program:w]
command=sleep 600
process_name=%(program_name)s_%(process_num)02d
numprocs=3
"""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self.path)


def proxy(v: Vastinit) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy("http://localhost/RPC2", _UnixTransport(str(v.socket)))


@pytest.fixture
def box(tmp_path: Path, units_dir: Path, vastinit_run: Start) -> Iterator[Vastinit]:
    etc = tmp_path / "etc-supervisor"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "conf.d" / "progs.conf").write_text(CONF)
    env = {
        "VASTINIT_ROLE": "box",
        "VASTINIT_SUPERVISOR_DIR": str(etc),
        "VASTINIT_SUPERVISOR_SOCKET": str(tmp_path / "supervisor.sock"),
    }
    v = vastinit_run(control=True, env=env)
    v.wait_control()
    wait_status(v, "web", "ready")
    wait_status(v, "crash", "failed", timeout=20)
    wait_status(v, "once", "exited")
    yield v
    assert v.terminate() == 0


def real_supervisorctl(v: Vastinit, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "supervisor.supervisorctl", "-s", f"unix://{v.socket}", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def fault(call: Callable[[], Any]) -> int:
    with pytest.raises(xmlrpc.client.Fault) as info:
        call()
    return int(info.value.faultCode)


def test_xmlrpc_methods_answer_as_supervisord(box: Vastinit) -> None:
    s = proxy(box).supervisor
    assert s.getAPIVersion() == "3.0"
    assert s.getVersion() == "3.0"
    assert s.getSupervisorVersion().startswith("4.3.0")
    assert s.getIdentification() == "supervisor"
    assert s.getState() == {"statecode": 1, "statename": "RUNNING"}
    assert s.getPID() == box.proc.pid
    infos = {i["name"]: i for i in s.getAllProcessInfo()}
    assert set(infos) == {"crash", "once", "manual", "web", "w_00", "w_01", "w_02"}
    assert (infos["crash"]["state"], infos["crash"]["statename"]) == (200, "FATAL")
    assert (infos["once"]["state"], infos["once"]["statename"]) == (100, "EXITED")
    assert (infos["manual"]["state"], infos["manual"]["description"]) == (0, "Not started")
    assert infos["web"]["state"] == 20
    assert infos["web"]["description"].startswith(f"pid {infos['web']['pid']}, uptime 0:00:")
    assert {infos[f"w_0{i}"]["group"] for i in range(3)} == {"w"}
    assert s.getProcessInfo("w:w_01")["pid"] == infos["w_01"]["pid"]
    assert s.getProcessInfo("web")["group"] == "web"
    # faults
    assert fault(lambda: s.getProcessInfo("nosuch")) == 10  # BAD_NAME
    assert fault(lambda: s.startProcess("web")) == 60  # ALREADY_STARTED
    assert fault(lambda: s.stopProcess("manual")) == 70  # NOT_RUNNING
    assert fault(lambda: s.signalProcess("web", "NOSUCHSIG")) == 11  # BAD_SIGNAL
    assert fault(lambda: s.signalProcess("manual", "HUP")) == 70
    assert fault(lambda: s.sendProcessStdin("web", "x")) == 30  # FAILED: unsupported
    assert fault(lambda: s.nosuchMethod()) == 1  # UNKNOWN_METHOD
    assert fault(lambda: s.getProcessInfo(42)) == 2  # INCORRECT_PARAMETERS
    assert fault(lambda: s.getProcessInfo()) == 2
    assert fault(lambda: s.readProcessStdoutLog("web", "a", 10)) == 2
    assert fault(lambda: s.readProcessStdoutLog("web", -5, 10)) == 3  # BAD_ARGUMENTS
    assert fault(lambda: s.startProcess("web", "notabool")) == 2
    # start / stop / groups
    assert s.startProcess("manual") is True
    assert s.getProcessInfo("manual")["statename"] == "RUNNING"
    assert s.stopProcess("manual") is True
    assert s.getProcessInfo("manual")["statename"] == "STOPPED"
    stopped = s.stopProcessGroup("w")
    assert [(r["name"], r["status"], r["description"]) for r in stopped] == [
        (f"w_0{i}", 80, "OK") for i in range(3)
    ]
    started = s.startProcess("w:*")
    assert [r["status"] for r in started] == [80, 80, 80]
    # signals
    old = s.getProcessInfo("web")["pid"]
    assert s.signalProcess("web", "TERM") is True
    wait_until(lambda: s.getProcessInfo("web")["pid"] not in (0, old), 15, "web restarted")
    assert [r["status"] for r in s.signalProcessGroup("w", 0 + 18)] == [80, 80, 80]  # SIGCONT
    assert all(r["status"] == 80 for r in s.signalAllProcesses("CONT"))
    # logs
    out = s.readProcessStdoutLog("web", 0, 0)
    assert "web up\n" in out and "web err\n" in out
    assert s.readProcessStderrLog("web", 0, 0).count("web err\n") >= 1
    assert "web up" not in s.readProcessStderrLog("web", 0, 0)
    text, offset, overflow = s.tailProcessStdoutLog("web", 0, 5)
    assert (len(text.encode()), offset, overflow) == (5, len(out.encode()), True)
    assert s.tailProcessStderrLog("web", 0, 1000)[0].endswith("web err\n")
    assert s.clearProcessLogs("web") is True
    assert s.readLog(0, 0) == "" and s.tailLog(0, 10) == ["", 0, False]
    assert s.clearLog() is True
    # configuration
    config = {c["name"]: c for c in s.getAllConfigInfo()}
    assert config["manual"]["autostart"] is False and config["w_00"]["group"] == "w"
    assert s.reloadConfig() == [[[], [], []]]
    assert fault(lambda: s.addProcessGroup("web")) == 90  # ALREADY_ADDED
    assert fault(lambda: s.removeProcessGroup("web")) == 91  # STILL_RUNNING
    assert fault(lambda: s.addProcessGroup("nosuch")) == 10
    # system.*
    system = proxy(box).system
    methods = system.listMethods()
    assert {"supervisor.getAllProcessInfo", "system.multicall"} <= set(methods)
    assert "older name" in system.methodHelp("supervisor.getVersion")
    assert fault(lambda: system.methodHelp("nosuch")) == 4
    multi = system.multicall(
        [
            {"methodName": "supervisor.getAPIVersion", "params": []},
            {"methodName": "supervisor.getProcessInfo", "params": ["nosuch"]},
        ]
    )
    assert multi[0] == ["3.0"] and multi[1]["faultCode"] == 10


def test_garbage_requests_get_a_fault_never_a_500(box: Vastinit) -> None:
    for body in (b"", b"<notxml", b"<?xml version='1.0'?><methodCall></methodCall>"):
        conn = _UnixConnection(str(box.socket))
        conn.request("POST", "/RPC2", body, {"Content-Type": "text/xml"})
        reply = conn.getresponse()
        data = reply.read()
        assert reply.status == 200, data
        with pytest.raises(xmlrpc.client.Fault):
            xmlrpc.client.loads(data)


def test_the_real_supervisorctl_works_against_vastinit(box: Vastinit) -> None:
    status = real_supervisorctl(box, "status")
    assert status.returncode == 3, status  # supervisord: 3 when a process is not running
    lines = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()}
    assert lines == {
        "crash": "FATAL",
        "manual": "STOPPED",
        "once": "EXITED",
        "w:w_00": "RUNNING",
        "w:w_01": "RUNNING",
        "w:w_02": "RUNNING",
        "web": "RUNNING",
    }
    assert real_supervisorctl(box, "status", "nosuch").returncode == 4
    assert real_supervisorctl(box, "status", "web").returncode == 0
    stop = real_supervisorctl(box, "stop", "w:*")
    assert stop.stdout.splitlines() == ["w:w_00: stopped", "w:w_01: stopped", "w:w_02: stopped"]
    start = real_supervisorctl(box, "start", "manual")
    assert (start.returncode, start.stdout) == (0, "manual: started\n")
    again = real_supervisorctl(box, "start", "manual")
    assert again.stdout == "manual: ERROR (already started)\n"
    restart = real_supervisorctl(box, "restart", "web")
    assert restart.stdout == "web: stopped\nweb: started\n"
    pid = real_supervisorctl(box, "pid", "web").stdout.strip()
    assert int(pid) > 0
    assert "web up" in real_supervisorctl(box, "tail", "web").stdout
    assert "web err" in real_supervisorctl(box, "tail", "web", "stderr").stdout
    assert real_supervisorctl(box, "signal", "HUP", "manual").stdout == "manual: signalled\n"
    assert real_supervisorctl(box, "reread").stdout == "No config updates to processes\n"
    assert real_supervisorctl(box, "version").stdout.startswith("4.3.0")
    assert "manual" in real_supervisorctl(box, "avail").stdout
    follow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "supervisor.supervisorctl",
            "-s",
            f"unix://{box.socket}",
            "tail",
            "-f",
            "web",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        wait_until(lambda: "web up" in follow.stdout.readline(), 10, "tail -f output")
    finally:
        follow.kill()
        follow.wait()


def test_real_supervisorctl_reread_update_add_remove(box: Vastinit, tmp_path: Path) -> None:
    conf_d = tmp_path / "etc-supervisor" / "conf.d"
    (conf_d / "extra.conf").write_text("[program:extra]\ncommand=sleep 600\n")
    assert real_supervisorctl(box, "reread").stdout == "extra: available\n"
    update = real_supervisorctl(box, "update")
    assert (update.returncode, update.stdout) == (0, "extra: added process group\n"), update
    wait_status(box, "extra", "ready")
    text = (conf_d / "progs.conf").read_text().replace("echo web up", "echo web v2")
    (conf_d / "progs.conf").write_text(text)
    assert real_supervisorctl(box, "reread").stdout == "web: changed\n"
    update = real_supervisorctl(box, "update", "web")
    assert update.stdout == "web: stopped\nweb: updated process group\n", update
    wait_status(box, "web", "ready")
    wait_until(
        lambda: "web v2" in real_supervisorctl(box, "tail", "web").stdout, 10, "web's new output"
    )
    (conf_d / "extra.conf").unlink()
    assert real_supervisorctl(box, "reread").stdout == "extra: disappeared\n"
    update = real_supervisorctl(box, "update")
    assert update.stdout == "extra: stopped\nextra: removed process group\n", update
    assert "extra" not in real_supervisorctl(box, "status").stdout
    remove = real_supervisorctl(box, "remove", "web")
    assert remove.stdout == "ERROR: process/group still running: web\n"
    assert real_supervisorctl(box, "add", "web").stdout == "ERROR: process group already active\n"


def test_supervisords_default_socket_path_leads_to_vastinit(box: Vastinit, tmp_path: Path) -> None:
    alias = tmp_path / "supervisor.sock"
    assert alias.is_symlink()
    argv = [sys.executable, "-m", "supervisor.supervisorctl", "-s", f"unix://{alias}", "pid"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.stdout == f"{box.proc.pid}\n"
    assert box.terminate() == 0
    assert not alias.exists() and not alias.is_symlink()


def own_supervisorctl(v: Vastinit, *args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from vastinit.control.supervisorctl import main; sys.exit(main())"
    argv = [sys.executable, "-c", code, "-s", f"unix://{v.socket}", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_vastinits_own_supervisorctl_prints_what_the_real_one_does(box: Vastinit) -> None:
    for args in (
        ("status", "manual", "once", "crash"),
        ("status", "nosuch"),
        ("start", "web"),
        ("stop", "manual"),
        ("start", "nosuch"),
        ("stop", "nosuch"),
        ("pid", "nosuch"),
        ("signal", "HUP", "manual"),
        ("signal", "HUP", "nosuch"),
        ("tail", "nosuch"),
        ("avail",),
        ("clear", "web"),
        ("reread",),
    ):
        real, own = real_supervisorctl(box, *args), own_supervisorctl(box, *args)
        if args[0] == "avail":  # supervisord lists avail by group:name, vastinit by unit
            real_lines = [line.split()[0].split(":")[-1] for line in real.stdout.splitlines()]
            assert real_lines == [line.split()[0] for line in own.stdout.splitlines()]
            continue
        assert (own.returncode, own.stdout) == (real.returncode, real.stdout), args
    # the verbs that change something: vastinit's first, then both on the result
    assert own_supervisorctl(box, "start", "manual").stdout == "manual: started\n"
    for args in (("pid", "manual"), ("signal", "CONT", "manual"), ("status", "manual")):
        real, own = real_supervisorctl(box, *args), own_supervisorctl(box, *args)
        uptime = re.compile(r"uptime \S+")  # the two run a moment apart
        assert (own.returncode, uptime.sub("", own.stdout)) == (
            real.returncode,
            uptime.sub("", real.stdout),
        ), args
    assert own_supervisorctl(box, "stop", "manual").stdout == "manual: stopped\n"
    real, own = (
        real_supervisorctl(box, "status", "manual"),
        own_supervisorctl(box, "status", "manual"),
    )
    assert (own.returncode, own.stdout) == (real.returncode, real.stdout)


def test_vastinits_own_supervisorctl_takes_group_names(box: Vastinit) -> None:
    real, own = real_supervisorctl(box, "status", "w:*"), own_supervisorctl(box, "status", "w:*")
    uptime = re.compile(r"uptime \S+")
    assert uptime.sub("", own.stdout) == uptime.sub("", real.stdout)
    assert own.stdout.startswith("w:w_00 ")
    stop = own_supervisorctl(box, "stop", "w:*")
    assert stop.stdout == "w:w_00: stopped\nw:w_01: stopped\nw:w_02: stopped\n"
    assert own_supervisorctl(box, "start", "w:w_01").stdout == "w:w_01: started\n"
