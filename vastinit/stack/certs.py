"""The instance certificate (``/etc/instance.crt``/``.key``): checked, and replaced when unusable.

The one owner of that pair. ``vastinit caddyfile --run`` (the caddy unit's start) calls
:func:`ensure_certificate` when ``ENABLE_HTTPS`` is true, before Caddy is exec'd:

1. the pair on disk is kept when the certificate parses, matches the key and is not
   expired (nor expires within a day, nor is not yet valid); a key readable by others is
   made 0600;
2. otherwise (missing, unreadable, mismatched, expired), when ``CONTAINER_ID`` is set, a
   fresh RSA-2048 key's CSR is POSTed to the platform's signing endpoint (bounded tries,
   short timeouts) and the reply is installed only if it is a certificate for that key;
3. otherwise, or when that fails, a one-year self-signed pair naming ``PUBLIC_IPADDR``
   (when set), 127.0.0.1 and localhost is made.

The key is written 0600 and the certificate 0644, each by an atomic rename; nothing is
left half-written. What was rejected and why is logged (``caddy.certificate_rejected``)
and returned in :class:`Outcome` (the caddy unit's ``STATUS=``, shown by ``ctl status``).
When no usable pair can be made at all, :class:`StackError`: HTTPS was asked for, and
plain HTTP is never served instead.

The work is done by the ``openssl`` program (Debian's ``openssl`` package): the Python
``cryptography`` package is not a dependency of vastinit, and ``openssl`` is in every
image that has Caddy's TLS. Docs: docs/stack.md "HTTPS".
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from vastinit.stack.common import StackError

__all__ = [
    "DEFAULT_SIGN_URL",
    "Outcome",
    "PairCheck",
    "cert_paths",
    "check_pair",
    "ensure_certificate",
    "self_sign",
    "send_status",
    "sign_with_platform",
]

log = structlog.get_logger("vastinit.stack.caddy")

SYSTEM_CERT = Path("/etc/instance.crt")
SYSTEM_KEY = Path("/etc/instance.key")
DEFAULT_SIGN_URL = "https://console.vast.ai/api/v0/sign_cert/"
SIGN_ATTEMPTS = 3
SIGN_TIMEOUT_S = 10.0  # per attempt: connect and read
SIGN_BACKOFF_S = (0.5, 1.0)  # pauses between attempts
SELF_SIGNED_DAYS = 365
RENEW_MARGIN_S = 86400  # a certificate expiring within a day is replaced now
OPENSSL_TIMEOUT_S = 30.0
# The CSR's subject, as the previous image sent it (the endpoint is known to accept it).
CSR_SUBJECT = ("US", "CA", "Vast.ai Inc.", "jupyter.vast.ai")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


@dataclass(frozen=True)
class PairCheck:
    """The verdict on a certificate and key: ``problem`` is None when the pair is usable."""

    problem: str | None
    not_after: datetime | None = None
    self_signed: bool = False

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class Outcome:
    """What :func:`ensure_certificate` did: the pair served, where it came from, and why."""

    cert: Path
    key: Path
    source: str  # "kept", "platform", "self-signed"
    not_after: datetime | None
    notes: list[str] = field(default_factory=list)  # what was rejected, what failed

    @property
    def status(self) -> str:
        """One line for ``ctl status``: what is served, then what was rejected and why."""
        until = f", valid until {_day(self.not_after)}" if self.not_after else ""
        what = {
            "kept": f"serving {self.cert}{until}",
            "platform": f"serving a platform-signed certificate{until}",
            "self-signed": f"serving a self-signed certificate{until}",
        }[self.source]
        return "; ".join([f"https: {what}", *self.notes])


class _OpenSSLError(Exception):
    pass


class SignError(Exception):
    """The platform did not give a usable certificate; the message says why."""


def cert_paths(env: Mapping[str, str]) -> tuple[Path, Path]:
    """``CADDY_TLS_CERT``/``CADDY_TLS_KEY``; else /etc/instance.crt/.key for root, else the
    user's state directory (a laptop run writes nothing in /etc)."""
    cert, key = env.get("CADDY_TLS_CERT"), env.get("CADDY_TLS_KEY")
    if os.geteuid() == 0:
        default_cert, default_key = SYSTEM_CERT, SYSTEM_KEY
    else:
        state = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "vastinit"
        default_cert, default_key = state / "instance.crt", state / "instance.key"
    return Path(cert) if cert else default_cert, Path(key) if key else default_key


# --- openssl ----------------------------------------------------------------------------------


def _openssl(*args: str, data: bytes | None = None) -> str:
    """Run ``openssl ARGS``; its stdout, or _OpenSSLError with its last stderr line."""
    program = shutil.which("openssl")
    if program is None:
        raise StackError(
            "ENABLE_HTTPS=true needs the `openssl` program to check or make the instance "
            "certificate, and it is not on PATH (Debian: apt-get install openssl)"
        )
    try:
        done = subprocess.run(
            [program, *args],
            input=data,
            stdin=None if data is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=OPENSSL_TIMEOUT_S,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise _OpenSSLError(f"openssl {args[0]} took over {OPENSSL_TIMEOUT_S:g}s") from exc
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.decode(errors="replace").splitlines() if ln.strip()]
        raise _OpenSSLError(_short(lines[-1] if lines else f"openssl exited {done.returncode}"))
    return done.stdout.decode(errors="replace")


def _short(text: str) -> str:
    # openssl's error lines are "40A7...:error:16000069:STORE routines:...:reason:file:line".
    parts = text.split(":")
    if len(parts) > 5 and parts[1] == "error":
        return parts[5] if parts[5] else text
    return text.strip()[:200]


def _parse_date(text: str) -> datetime:
    return datetime.strptime(text.strip(), "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)


def _day(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


def check_pair(cert: Path, key: Path, *, now: float | None = None) -> PairCheck:
    """Whether ``cert`` and ``key`` can be served: both parse, they match, and the
    certificate is valid now and for at least another day."""
    for path in (cert, key):
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return PairCheck(f"{path}: missing")
        except OSError as exc:
            return PairCheck(f"{path}: cannot be read ({exc.strerror or exc})")
        if size == 0:
            return PairCheck(f"{path}: empty")
        if not os.access(path, os.R_OK):
            return PairCheck(f"{path}: cannot be read (permission denied)")
    try:
        info = _openssl(
            "x509",
            "-in",
            str(cert),
            "-noout",
            "-startdate",
            "-enddate",
            "-subject",
            "-issuer",
            "-nameopt",
            "RFC2253",
            "-pubkey",
        )
    except _OpenSSLError as exc:
        return PairCheck(f"{cert}: not a PEM certificate ({exc})")
    try:
        # -passin: an encrypted key fails here instead of prompting for a passphrase.
        key_pub = _openssl("pkey", "-in", str(key), "-pubout", "-passin", "pass:")
    except _OpenSSLError as exc:
        return PairCheck(f"{key}: not an unencrypted PEM private key ({exc})")
    fields = dict(
        line.split("=", 1)
        for line in info.splitlines()
        if re.match(r"^(notBefore|notAfter|subject|issuer)=", line)
    )
    cert_pub = info[info.find("-----BEGIN PUBLIC KEY-----") :].strip()
    try:
        not_before, not_after = _parse_date(fields["notBefore"]), _parse_date(fields["notAfter"])
    except (KeyError, ValueError):
        return PairCheck(f"{cert}: its validity dates cannot be read")
    self_signed = fields.get("subject") == fields.get("issuer")
    if not cert_pub or cert_pub != key_pub.strip():
        return PairCheck(f"{cert}: does not match the key {key}", not_after, self_signed)
    clock = time.time() if now is None else now
    if not_after.timestamp() <= clock:
        return PairCheck(f"{cert}: expired on {_day(not_after)}", not_after, self_signed)
    if not_after.timestamp() <= clock + RENEW_MARGIN_S:
        return PairCheck(
            f"{cert}: expires within a day ({_day(not_after)})", not_after, self_signed
        )
    if not_before.timestamp() > clock + 300:  # five minutes of clock skew tolerated
        return PairCheck(f"{cert}: not valid before {_day(not_before)}", not_after, self_signed)
    return PairCheck(None, not_after, self_signed)


def subject_alt_names(env: Mapping[str, str]) -> list[str]:
    """``PUBLIC_IPADDR`` (an IP address or a host name; anything else is left out), then
    127.0.0.1 and localhost, in openssl's ``subjectAltName`` syntax."""
    names: list[str] = []
    public = env.get("PUBLIC_IPADDR", "").strip()
    if public:
        try:
            names.append(f"IP:{ipaddress.ip_address(public)}")
        except ValueError:
            if _HOSTNAME.fullmatch(public):
                names.append(f"DNS:{public}")
            else:
                log.warning(
                    "caddy.certificate_name_skipped",
                    PUBLIC_IPADDR=public[:100],
                    reason="neither an IP address nor a host name",
                )
    for name in ("IP:127.0.0.1", "DNS:localhost"):
        if name not in names:
            names.append(name)
    return names


def _config(common_name: str, sans: list[str], *, subject: tuple[str, ...] | None = None) -> str:
    """An openssl config of its own, so the system's openssl.cnf adds nothing unexpected."""
    dn = ["[dn]"]
    if subject is not None:
        country, state, org, cn = subject
        dn += [f"C = {country}", f"ST = {state}", f"O = {org}", f"CN = {cn}"]
    else:
        dn += [f"CN = {common_name}"]
    return "\n".join(
        [
            "[req]",
            "distinguished_name = dn",
            "prompt = no",
            "x509_extensions = ext",
            "req_extensions = ext",
            *dn,
            "[ext]",
            "basicConstraints = critical, CA:FALSE",
            "keyUsage = critical, digitalSignature, keyEncipherment",
            "extendedKeyUsage = serverAuth",
            "subjectKeyIdentifier = hash",
            f"subjectAltName = {', '.join(sans)}",
            "",
        ]
    )


class _Staging:
    """Temporary key/cert files beside the real ones, installed by rename or removed."""

    def __init__(self, cert: Path, key: Path) -> None:
        for directory in {cert.parent, key.parent}:
            directory.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = cert, key
        self.new_key = self._temp(key, ".key")  # mkstemp: 0600 from the first byte
        self.new_cert = self._temp(cert, ".crt")
        self.scratch = Path(tempfile.mkdtemp(prefix="vastinit-cert."))

    @staticmethod
    def _temp(beside: Path, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(dir=beside.parent, prefix=f".{beside.name}.", suffix=suffix)
        os.close(fd)
        return Path(name)

    def install(self) -> None:
        os.chmod(self.new_key, 0o600)
        os.chmod(self.new_cert, 0o644)  # the certificate is public; the key is the secret
        os.replace(self.new_key, self.key)
        os.replace(self.new_cert, self.cert)

    def close(self) -> None:
        for path in (self.new_key, self.new_cert):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.scratch, ignore_errors=True)


def self_sign(cert: Path, key: Path, env: Mapping[str, str]) -> PairCheck:
    """Replace the pair with a new self-signed one (a year; :func:`subject_alt_names`)."""
    stage = _Staging(cert, key)
    try:
        sans = subject_alt_names(env)
        config = stage.scratch / "openssl.cnf"
        config.write_text(_config(sans[0].split(":", 1)[1], sans))
        try:
            _openssl(
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-days",
                str(SELF_SIGNED_DAYS),
                "-config",
                str(config),
                "-keyout",
                str(stage.new_key),
                "-out",
                str(stage.new_cert),
            )
        except _OpenSSLError as exc:
            raise StackError(f"cannot make a self-signed certificate: {exc}") from exc
        verdict = check_pair(stage.new_cert, stage.new_key)
        if not verdict.ok:
            raise StackError(
                f"the self-signed certificate just made is unusable: {verdict.problem}"
            )
        stage.install()
        return verdict
    finally:
        stage.close()


# --- the platform ---------------------------------------------------------------------------


def instance_id(env: Mapping[str, str]) -> str | None:
    """``CONTAINER_ID``, else ``VAST_CONTAINERLABEL`` without its ``C.`` (as before);
    None off Vast."""
    value = env.get("CONTAINER_ID", "").strip()
    if not value:
        label = env.get("VAST_CONTAINERLABEL", "").strip()
        value = label[2:] if label.startswith("C.") else ""
    return value or None


def _post(url: str, body: bytes, timeout: float) -> bytes:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/octet-stream"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read(1 << 20)
        return data


def sign_with_platform(
    cert: Path,
    key: Path,
    env: Mapping[str, str],
    ident: str,
    *,
    post: Callable[[str, bytes, float], bytes] = _post,
    sleep: Callable[[float], None] = time.sleep,
) -> PairCheck:
    """Ask the platform to sign a fresh key's CSR; install the pair if the reply is a usable
    certificate for that key. SignError (the pair on disk untouched) otherwise."""
    base = env.get("VASTINIT_SIGN_CERT_URL") or DEFAULT_SIGN_URL
    url = f"{base}{'&' if '?' in base else '?'}{urllib.parse.urlencode({'instance_id': ident})}"
    timeout = _seconds(env, "VASTINIT_SIGN_CERT_TIMEOUT", SIGN_TIMEOUT_S)
    stage = _Staging(cert, key)
    try:
        config = stage.scratch / "openssl.cnf"
        config.write_text(_config("", subject_alt_names(env), subject=CSR_SUBJECT))
        csr = stage.scratch / "instance.csr"
        try:
            _openssl(
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-config",
                str(config),
                "-keyout",
                str(stage.new_key),
                "-out",
                str(csr),
            )
        except _OpenSSLError as exc:
            raise SignError(f"cannot make the key and CSR: {exc}") from exc
        body = csr.read_bytes()
        last = "no attempt"
        for attempt in range(1, SIGN_ATTEMPTS + 1):
            if attempt > 1:
                sleep(SIGN_BACKOFF_S[min(attempt - 2, len(SIGN_BACKOFF_S) - 1)])
            try:
                reply = post(url, body, timeout)
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code} {exc.reason}"
                if 400 <= exc.code < 500 and exc.code not in (408, 429):
                    break  # a definite no: asking again gets the same answer
                continue
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                last = str(
                    reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
                )
                continue
            stage.new_cert.write_bytes(reply)
            verdict = check_pair(stage.new_cert, stage.new_key)
            if not verdict.ok:
                # A well-formed answer for another key would be rejected at every start.
                problem = str(verdict.problem).replace(f"{stage.new_cert}: ", "")
                problem = problem.replace(f"the key {stage.new_key}", "the new key")
                raise SignError(f"its reply is unusable: {problem}")
            stage.install()
            return verdict
        tries = f"{attempt} attempt{'s' * (attempt != 1)}"
        raise SignError(f"{last} ({tries})")
    finally:
        stage.close()


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= 120:
        raise StackError(f"{name}={raw!r}: want seconds, more than 0 and at most 120")
    return value


# --- the whole step ---------------------------------------------------------------------------


def ensure_certificate(
    env: Mapping[str, str],
    *,
    post: Callable[[str, bytes, float], bytes] = _post,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Keep, platform-sign or self-sign the instance certificate (module docstring);
    StackError when no usable pair can be had."""
    cert, key = cert_paths(env)
    verdict = check_pair(cert, key)
    if verdict.ok:
        _key_private(key)
        log.info(
            "caddy.certificate_kept",
            cert=str(cert),
            not_after=_day(verdict.not_after) if verdict.not_after else None,
        )
        return Outcome(cert, key, "kept", verdict.not_after)
    notes = [f"rejected {verdict.problem}"]
    log.warning("caddy.certificate_rejected", reason=verdict.problem)
    ident = instance_id(env)
    if ident is not None:
        try:
            signed = sign_with_platform(cert, key, env, ident, post=post, sleep=sleep)
        except (SignError, OSError) as exc:
            notes.append(f"platform signing failed: {exc}")
            log.warning("caddy.certificate_not_signed", reason=str(exc))
        else:
            log.info(
                "caddy.certificate_signed",
                cert=str(cert),
                not_after=_day(signed.not_after) if signed.not_after else None,
            )
            return Outcome(cert, key, "platform", signed.not_after, notes)
    else:
        notes.append("not signed by the platform: CONTAINER_ID is not set")
    try:
        made = self_sign(cert, key, env)
    except OSError as exc:
        raise StackError(f"cannot write the instance certificate: {exc}") from exc
    log.warning(
        "caddy.certificate_self_signed", cert=str(cert), names=", ".join(subject_alt_names(env))
    )
    return Outcome(cert, key, "self-signed", made.not_after, notes)


def _key_private(key: Path) -> None:
    """A kept key readable by group or others is made 0600 (and said so)."""
    mode = key.stat().st_mode & 0o777
    if mode & 0o077:
        try:
            os.chmod(key, 0o600)
        except OSError as exc:
            raise StackError(f"{key} is mode {mode:04o} and cannot be made 0600: {exc}") from exc
        log.warning("caddy.certificate_key_mode", key=str(key), was=f"{mode:04o}", now="0600")


def send_status(env: Mapping[str, str], text: str) -> bool:
    """Send ``STATUS=text`` to ``$NOTIFY_SOCKET`` (sd_notify) when there is one; whether sent."""
    where = env.get("NOTIFY_SOCKET", "")
    if not where:
        return False
    address = "\0" + where[1:] if where.startswith("@") else where
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"STATUS={text}".encode(), address)
        return True
    return False
