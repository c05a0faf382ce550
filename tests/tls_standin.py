"""Test certificates and a stand-in for the platform's signing endpoint, with real openssl.

The stand-in is a real HTTP server on 127.0.0.1 (a thread of the test process) that signs
a POSTed CSR with a test CA, as console.vast.ai/api/v0/sign_cert/ does with Vast's: the
reply body is the PEM certificate. It records every request, and can be told to misbehave.
"""

from __future__ import annotations

import http.server
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


def openssl(*args: str | Path) -> str:
    done = subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"openssl {args[0]}: {done.stderr}"
    return done.stdout


@dataclass(frozen=True)
class CA:
    cert: Path
    key: Path

    def sign(self, csr: Path, out: Path, *, days: int = 30) -> None:
        """Sign ``csr`` (its subjectAltName kept) into ``out``."""
        openssl(
            "x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
            "-CAcreateserial", "-days", days, "-sha256", "-copy_extensions", "copyall",
            "-out", out,
        )  # fmt: skip


def make_ca(directory: Path) -> CA:
    directory.mkdir(parents=True, exist_ok=True)
    ca = CA(directory / "ca.crt", directory / "ca.key")
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
        "/CN=vastinit test CA", "-keyout", ca.key, "-out", ca.cert,
    )  # fmt: skip
    return ca


def _csr(directory: Path, name: str) -> tuple[Path, Path]:
    key, csr = directory / f"{name}.key", directory / f"{name}.csr"
    openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", key, "-out", csr,
    )  # fmt: skip
    return key, csr


def valid_pair(ca: CA, directory: Path, name: str = "valid") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by ``ca`` (30 days) and its key."""
    key, csr = _csr(directory, name)
    cert = directory / f"{name}.crt"
    ca.sign(csr, cert)
    return cert, key


def mismatched_pair(ca: CA, directory: Path) -> tuple[Path, Path]:
    """A valid certificate, with the key of another one."""
    cert, _ = valid_pair(ca, directory, "mismatched-a")
    _, other_key = valid_pair(ca, directory, "mismatched-b")
    return cert, other_key


def expired_pair(ca: CA, directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by ``ca`` that expired in 2020, and its key."""
    key, csr = _csr(directory, "expired")
    db = directory / "expired-db"
    db.mkdir()
    (db / "index.txt").write_text("")
    (db / "serial").write_text("01\n")
    config = directory / "expired-ca.cnf"
    config.write_text(
        "[ca]\ndefault_ca = d\n[d]\n"
        f"database = {db}/index.txt\nnew_certs_dir = {db}\nserial = {db}/serial\n"
        "default_md = sha256\npolicy = p\nunique_subject = no\ncopy_extensions = copyall\n"
        "[p]\ncommonName = supplied\n"
    )
    cert = directory / "expired.crt"
    openssl(
        "ca", "-batch", "-config", config, "-cert", ca.cert, "-keyfile", ca.key, "-in", csr,
        "-startdate", "20200101000000Z", "-enddate", "20200201000000Z", "-notext", "-out", cert,
    )  # fmt: skip
    return cert, key


@dataclass
class StandIn:
    """The signing stand-in: ``url`` is the base the client appends ``?instance_id=`` to."""

    ca: CA
    url: str = ""
    mode: str = "sign"  # sign | garbage | other-key | 500 | 403 | hang
    requests: list[dict[str, str]] = field(default_factory=list)


@contextmanager
def signing_standin(ca: CA) -> Iterator[StandIn]:
    """The stand-in, listening on a free 127.0.0.1 port until the block ends."""
    standin = StandIn(ca)
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            standin.requests.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type", ""),
                    "body": body.decode(errors="replace"),
                }
            )
            if standin.mode == "hang":
                release.wait(30)
                return
            if standin.mode in ("500", "403"):
                self.send_error(int(standin.mode))
                return
            with tempfile.TemporaryDirectory() as scratch:
                work = Path(scratch)
                if standin.mode == "other-key":
                    _, csr = _csr(work, "other")
                else:
                    csr = work / "request.csr"
                    csr.write_bytes(body)
                out = work / "signed.crt"
                if standin.mode == "garbage":
                    out.write_text("<html>Service Unavailable</html>\n")
                else:
                    standin.ca.sign(csr, out)
                reply = out.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    standin.url = f"http://127.0.0.1:{server.server_address[1]}/api/v0/sign_cert/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
