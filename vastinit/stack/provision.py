"""``vastinit provision``: first-boot setup, run by the provisioning oneshot unit.

Order, as in the previous image: ``HOTFIX_SCRIPT`` on every run (its failure is logged, not
fatal: "the script must manage its own run conditions"); then, unless
``/.provisioning_complete`` exists, with ``/.provisioning`` present: ``APT_PACKAGES``,
``PIP_PACKAGES``, ``PROVISIONING_SCRIPT``, stopping at the first failure. The outcome is
``/.provisioning_complete`` or ``/.provisioning_failed``; ``/.provisioning`` is removed
either way, so services that wait on it start even after a failure, as before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import structlog

from vastinit.stack.common import StackError, configure_cli_logging

log = structlog.get_logger("vastinit.stack.provision")

LAUNCH_FILE = Path("/.launch")  # present in Vast's Jupyter/SSH launch modes
MAIN_VENV_PYTHON = Path("/venv/main/bin/python")


@dataclass(frozen=True)
class Retry:
    """Download retry policy: ``attempts`` tries, each ``timeout`` s, backoff doubling."""

    attempts: int = 5
    timeout: float = 60.0
    delay: float = 2.0
    max_delay: float = 60.0

    def backoff(self, failed_attempt: int) -> float:
        """Seconds to wait after the ``failed_attempt``-th (1-based) failure."""
        return min(self.delay * 2.0 ** (failed_attempt - 1), self.max_delay)


class Markers:
    """The marker files other tools read, in ``directory`` (``/`` in the image)."""

    def __init__(self, directory: Path) -> None:
        self.running = directory / ".provisioning"
        self.complete = directory / ".provisioning_complete"
        self.failed = directory / ".provisioning_failed"
        self.script = directory / "provisioning.sh"  # the previous image's script cache


class Interrupted(BaseException):
    """SIGTERM/SIGINT arrived: unwind so the markers are still written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- downloading ------------------------------------------------------------------------------


def is_url(source: str) -> bool:
    """Whether ``source`` is an http(s) URL rather than a local path."""
    return source.startswith(("http://", "https://"))


def redact(url: str) -> str:
    """``url`` with any password in its user-info replaced, fit for a log line."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class _Retryable(Exception):
    """An attempt failed in a way another attempt may fix (5xx, 408, 429, network, timeout)."""


async def _attempt(url: str, timeout: float) -> bytes:
    import aiohttp
    import anyio

    shown = redact(url)
    try:
        with anyio.fail_after(timeout):
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, allow_redirects=True) as response,
            ):
                if response.status != 200:
                    message = f"{shown}: HTTP {response.status} {response.reason or ''}".rstrip()
                    if response.status >= 500 or response.status in (408, 429):
                        raise _Retryable(message)
                    raise StackError(message)  # 404, 403...: asking again will not help
                return await response.read()
    except TimeoutError:
        raise _Retryable(f"{shown}: no complete answer within {timeout:g}s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise _Retryable(f"{shown}: {type(exc).__name__}: {exc}") from None


async def fetch(url: str, retry: Retry) -> bytes:
    """The body of ``url`` (HTTP 200), retried per ``retry``; StackError names URL and status."""
    import anyio

    last = ""
    for attempt in range(1, retry.attempts + 1):
        try:
            return await _attempt(url, retry.timeout)
        except _Retryable as exc:
            last = str(exc)
        if attempt < retry.attempts:
            wait = retry.backoff(attempt)
            log.warning(
                "provision.download_retry",
                error=last,
                attempt=f"{attempt}/{retry.attempts}",
                retry_in=f"{wait:g}s",
            )
            await anyio.sleep(wait)
    raise StackError(f"{last} (gave up after {retry.attempts} attempts)")


def obtain(source: str, what: str, retry: Retry) -> bytes:
    """The script ``source`` names (URL or path), with CRLF line ends turned into LF."""
    if is_url(source):
        import anyio

        log.info("provision.download", what=what, url=redact(source))
        data = anyio.run(fetch, source, retry)
    else:
        path = Path(source.removeprefix("file://"))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StackError(f"{what}: cannot read {path}: {exc.strerror}") from None
    # Scripts edited on Windows: bash would read "\r" as part of every command.
    return data.replace(b"\r\n", b"\n")


# --- running ----------------------------------------------------------------------------------


def script_command(path: Path, data: bytes) -> list[str]:
    """How to run a script: by its own ``#!`` interpreter if it names one, else with bash."""
    return [str(path)] if data.startswith(b"#!") else ["bash", str(path)]


def run_script(what: str, source: str, data: bytes, path: Path) -> None:
    """Save ``data`` to ``path`` and run it, its output going straight to ours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755)
    shown = redact(source) if is_url(source) else source
    log.info("provision.run", what=what, source=shown)
    run(script_command(path, data), f"{what} ({shown})")


def run(argv: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> None:
    """Run ``argv``, its output going to ours (the unit's log); StackError if it fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        result = subprocess.run(list(argv), stdin=subprocess.DEVNULL, env=env, check=False)
    except OSError as exc:
        raise StackError(f"{what}: cannot run {argv[0]!r}: {exc.strerror}") from None
    if result.returncode != 0:
        raise StackError(f"{what} exited with status {result.returncode}")


def split_packages(text: str, name: str) -> list[str]:
    """The package list in ``name`` (shell quoting allowed, for specifiers like 'x>=1')."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise StackError(f"{name}: cannot split into package names: {exc}") from None


def apt_commands(packages: Sequence[str], *, launch_mode: bool) -> list[list[str]]:
    """apt-get update (skipped in Vast's launch modes, as before) and install, no recommends."""
    if not packages:
        return []
    install = ["apt-get", "install", "--no-install-recommends", "-y", *packages]
    return [install] if launch_mode else [["apt-get", "update"], install]


def pip_command(packages: Sequence[str], *, python: str, uv: str | None) -> list[str] | None:
    """``uv pip install --python PY`` when uv exists (as before), else ``PY -m pip install``."""
    if not packages:
        return None
    if uv:
        return [uv, "pip", "install", "--python", python, *packages]
    return [python, "-m", "pip", "install", "--no-input", *packages]


def image_python(env: Mapping[str, str]) -> str:
    """The Python that PIP_PACKAGES go to: $PROVISIONING_PYTHON, /venv/main's, else python3."""
    if env.get("PROVISIONING_PYTHON"):
        return env["PROVISIONING_PYTHON"]
    return str(MAIN_VENV_PYTHON) if MAIN_VENV_PYTHON.exists() else "python3"


def retry_from_env(env: Mapping[str, str]) -> Retry:
    """PROVISIONING_RETRIES, PROVISIONING_TIMEOUT and PROVISIONING_RETRY_DELAY, or defaults."""
    defaults = Retry()
    try:
        retry = Retry(
            attempts=int(env.get("PROVISIONING_RETRIES") or defaults.attempts),
            timeout=float(env.get("PROVISIONING_TIMEOUT") or defaults.timeout),
            delay=float(env.get("PROVISIONING_RETRY_DELAY") or defaults.delay),
        )
    except ValueError as exc:
        raise StackError(f"PROVISIONING_RETRIES/_TIMEOUT/_RETRY_DELAY: {exc}") from None
    if retry.attempts < 1 or retry.timeout <= 0 or retry.delay < 0:
        raise StackError(
            "PROVISIONING_RETRIES must be >= 1, PROVISIONING_TIMEOUT > 0, "
            "PROVISIONING_RETRY_DELAY >= 0"
        )
    return retry


# --- the command ------------------------------------------------------------------------------


def hotfix(env: Mapping[str, str], retry: Retry) -> None:
    """Run HOTFIX_SCRIPT if set; a failure is logged and does not stop provisioning."""
    source = env.get("HOTFIX_SCRIPT", "").strip()
    if not source:
        return
    with tempfile.TemporaryDirectory(prefix="vastinit-hotfix-") as work:
        try:
            data = obtain(source, "HOTFIX_SCRIPT", retry)
            run_script("HOTFIX_SCRIPT", source, data, Path(work) / "hotfix.sh")
        except StackError as exc:
            log.error("provision.hotfix_failed", error=str(exc), note="continuing")


def steps(env: Mapping[str, str], markers: Markers, retry: Retry) -> None:
    """APT_PACKAGES, PIP_PACKAGES, PROVISIONING_SCRIPT in order; StackError at the first failure."""
    apt = split_packages(env.get("APT_PACKAGES", ""), "APT_PACKAGES")
    pip = split_packages(env.get("PIP_PACKAGES", ""), "PIP_PACKAGES")
    apt_env = {**env, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in apt_commands(apt, launch_mode=LAUNCH_FILE.exists()):
        log.info("provision.apt", command=shlex.join(argv))
        run(argv, "APT_PACKAGES: " + " ".join(argv[:2]), apt_env)
    command = pip_command(pip, python=image_python(env), uv=shutil.which("uv"))
    if command is not None:
        log.info("provision.pip", command=shlex.join(command))
        run(command, "PIP_PACKAGES: pip install")
    source = env.get("PROVISIONING_SCRIPT", "").strip()
    if source:
        data = obtain(source, "PROVISIONING_SCRIPT", retry)
        run_script("PROVISIONING_SCRIPT", source, data, markers.script)


def provision(env: Mapping[str, str], markers: Markers, *, force: bool = False) -> int:
    """Hotfix, then the first-boot steps between the markers; the exit status (0, 1, 128+sig)."""
    retry = retry_from_env(env)
    hotfix(env, retry)
    if markers.complete.exists() and not force:
        log.info("provision.skipped", reason=f"{markers.complete} exists (done on an earlier boot)")
        return 0
    markers.running.parent.mkdir(parents=True, exist_ok=True)
    markers.running.touch()
    try:
        steps(env, markers, retry)
    except StackError as exc:
        log.error("provision.failed", error=str(exc), marker=str(markers.failed))
        markers.failed.touch()
        return 1
    except Interrupted as exc:
        log.error("provision.interrupted", signal=str(exc), marker=str(markers.failed))
        markers.failed.touch()
        return 128 + exc.signum
    else:
        markers.complete.touch()
        with contextlib.suppress(FileNotFoundError):
            markers.failed.unlink()
        log.info("provision.complete", marker=str(markers.complete))
        return 0
    finally:
        with contextlib.suppress(FileNotFoundError):
            markers.running.unlink()


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    # Unwind through provision()'s handlers: a stop must not leave /.provisioning behind.
    raise Interrupted(signum)


def main(argv: list[str]) -> int:
    """Run provisioning as the oneshot unit does; 0 done or skipped, 1 failed, 2 bad settings."""
    parser = argparse.ArgumentParser(
        prog="vastinit provision",
        description="First-boot provisioning: HOTFIX_SCRIPT, APT_PACKAGES, PIP_PACKAGES, "
        "PROVISIONING_SCRIPT; markers /.provisioning, /.provisioning_complete, "
        "/.provisioning_failed (docs/stack.md).",
    )
    parser.add_argument(
        "--force", action="store_true", help="run even if provisioning completed before"
    )
    args = parser.parse_args(argv)
    configure_cli_logging()
    env = os.environ
    markers = Markers(Path(env.get("VASTINIT_MARKER_DIR") or "/"))
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_interrupted)
    try:
        return provision(env, markers, force=args.force)
    except StackError as exc:
        print(f"vastinit provision: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the marker directory is not writable, say
        print(f"vastinit provision: {exc}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        return 128 + exc.signum  # stopped during the hotfix, before any marker
