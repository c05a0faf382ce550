"""The non-root socket directory (``/tmp/vastinit-UID``) is ours and private, or refused.

Anyone can create a directory in /tmp: a local user who makes ``/tmp/vastinit-UID`` first
could put a socket there and answer ``vastinit ctl`` in vastinit's place. Both ends check
it: ``vastinit run`` (bind) creates it 0700 or refuses it, ``vastinit ctl`` refuses to
connect through it. The tests run as root: another owner is uid 65534 (chown).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vastinit.control.client import Client, CtlError
from vastinit.control.server import ControlSocket
from vastinit.errors import ControlError
from vastinit.paths import check_private_dir, ensure_private_dir, is_private_runtime_dir

ROOT = Path(__file__).resolve().parents[2]
OTHER = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def private_dir(tmp_path: Path) -> Path:
    return tmp_path / f"vastinit-{os.getuid()}"


def test_only_the_fallback_directory_name_is_treated_as_private(tmp_path: Path) -> None:
    assert is_private_runtime_dir(private_dir(tmp_path))
    assert not is_private_runtime_dir(tmp_path / "run")
    assert not is_private_runtime_dir(tmp_path / f"vastinit-{os.getuid() + 1}")


def test_missing_directory_is_created_0700(tmp_path: Path) -> None:
    os.umask(old := os.umask(0))  # whatever the umask, the directory is 0700
    try:
        path = private_dir(tmp_path / "deeper")
        ensure_private_dir(path)
        assert path.is_dir() and path.stat().st_mode & 0o777 == 0o700
        ensure_private_dir(path)  # existing and fine: accepted
    finally:
        os.umask(old)


def _bad(tmp_path: Path, kind: str) -> Path:
    path = private_dir(tmp_path)
    if kind == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        path.symlink_to(tmp_path / "elsewhere")
    elif kind == "file":
        path.write_text("")
    else:
        path.mkdir()
        if kind == "other-owner":
            os.chmod(path, 0o700)
            os.chown(path, OTHER, OTHER)
        else:
            os.chmod(path, {"group-readable": 0o750, "world-writable": 0o777}[kind])
    return path


KINDS = [
    ("symlink", "is a symlink"),
    ("file", "is not a directory"),
    pytest.param("other-owner", f"owned by uid {OTHER}", marks=needs_root),
    ("group-readable", "has mode 0750"),
    ("world-writable", "has mode 0777"),
]


@pytest.mark.parametrize(("kind", "problem"), KINDS)
def test_an_unsafe_directory_is_refused_naming_it_and_why(
    tmp_path: Path, kind: str, problem: str
) -> None:
    path = _bad(tmp_path, kind)
    for check in (check_private_dir, ensure_private_dir):
        with pytest.raises(ControlError, match=problem) as caught:
            check(path)
        assert str(path) in str(caught.value)


@pytest.mark.parametrize(("kind", "problem"), KINDS)
def test_bind_refuses_an_unsafe_directory(tmp_path: Path, kind: str, problem: str) -> None:
    path = _bad(tmp_path, kind)
    with pytest.raises(ControlError, match=problem):
        ControlSocket.bind(path / "vastinit.sock")
    assert kind == "symlink" or not (path / "vastinit.sock").exists()


def test_bind_creates_the_private_directory_0700(tmp_path: Path) -> None:
    sock = private_dir(tmp_path) / "vastinit.sock"
    listener = ControlSocket.bind(sock)
    try:
        assert sock.parent.stat().st_mode & 0o777 == 0o700
    finally:
        listener.close()


@needs_root
def test_the_client_will_not_talk_to_a_socket_in_someone_elses_directory(
    tmp_path: Path,
) -> None:
    # The hijack: another user made the directory first and listens in it.
    path = private_dir(tmp_path)
    path.mkdir(mode=0o755)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as impostor:
        impostor.bind(str(path / "vastinit.sock"))
        impostor.listen(1)
        os.chown(path, OTHER, OTHER)
        with pytest.raises(CtlError, match=f"owned by uid {OTHER}") as caught:
            Client(str(path / "vastinit.sock")).get("/v1/status")
        assert caught.value.code == "unsafe_socket_dir"
        # The real command says so, exit 1, and never reads an answer from the impostor.
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        sock = str(path / "vastinit.sock")
        ctl = subprocess.run(
            [sys.executable, "-m", "vastinit", "ctl", "--socket", sock, "status"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert ctl.returncode != 0
        assert f"{path} is owned by uid {OTHER}" in ctl.stderr, ctl.stderr
        run = subprocess.run(
            [sys.executable, "-m", "vastinit", "run", "--units", str(tmp_path), "--socket", sock],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, "VASTINIT_LOG_DIR": str(tmp_path / "log")},
        )
        assert run.returncode != 0
        assert f"{path} is owned by uid {OTHER}" in run.stdout + run.stderr, run.stderr
