"""vastinit.stack.certs with the real openssl and a real signing stand-in on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.tls_standin import (
    CA,
    StandIn,
    expired_pair,
    make_ca,
    mismatched_pair,
    openssl,
    signing_standin,
    valid_pair,
)
from vastinit.stack import certs
from vastinit.stack.common import StackError


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def standin(ca: CA) -> Iterator[StandIn]:
    with signing_standin(ca) as running:
        yield running


def paths(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    cert, key = tmp_path / "etc" / "instance.crt", tmp_path / "etc" / "instance.key"
    return cert, key, {"CADDY_TLS_CERT": str(cert), "CADDY_TLS_KEY": str(key)}


def install(pair: tuple[Path, Path], cert: Path, key: Path) -> None:
    cert.parent.mkdir(parents=True, exist_ok=True)
    cert.write_bytes(pair[0].read_bytes())
    key.write_bytes(pair[1].read_bytes())
    key.chmod(0o600)


def sans(cert: Path) -> str:
    return openssl("x509", "-in", cert, "-noout", "-ext", "subjectAltName")


def issuer(cert: Path) -> str:
    return openssl("x509", "-in", cert, "-noout", "-issuer").strip()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def no_sleep(_: float) -> None:
    pass


# ---- the check -------------------------------------------------------------------------


def test_check_pair_accepts_a_valid_pair_and_names_each_problem(ca: CA, tmp_path: Path) -> None:
    cert, key = valid_pair(ca, tmp_path)
    verdict = certs.check_pair(cert, key)
    assert verdict.ok and verdict.not_after is not None and not verdict.self_signed
    assert "does not match the key" in str(certs.check_pair(*mismatched_pair(ca, tmp_path)).problem)
    assert "expired on 2020-02-01" in str(certs.check_pair(*expired_pair(ca, tmp_path)).problem)
    assert certs.check_pair(tmp_path / "none.crt", key).problem == f"{tmp_path}/none.crt: missing"
    (tmp_path / "empty.crt").write_text("")
    assert certs.check_pair(tmp_path / "empty.crt", key).problem == f"{tmp_path}/empty.crt: empty"
    (tmp_path / "page.crt").write_text("<html>502 Bad Gateway</html>\n")
    assert "not a PEM certificate" in str(certs.check_pair(tmp_path / "page.crt", key).problem)
    # An encrypted key fails (no passphrase prompt that would hang the start).
    locked = tmp_path / "locked.key"
    openssl("pkey", "-in", key, "-aes256", "-passout", "pass:secret", "-out", locked)
    assert "not an unencrypted PEM private key" in str(certs.check_pair(cert, locked).problem)


def test_a_certificate_expiring_within_a_day_is_replaced(ca: CA, tmp_path: Path) -> None:
    cert, key = valid_pair(ca, tmp_path)  # 30 days
    verdict = certs.check_pair(cert, key, now=time.time() + 29.5 * 86400)
    assert "expires within a day" in str(verdict.problem)


# ---- the whole step ----------------------------------------------------------------------


def test_a_valid_pair_is_kept_as_it_is(ca: CA, standin: StandIn, tmp_path: Path) -> None:
    cert, key, env = paths(tmp_path)
    install(valid_pair(ca, tmp_path), cert, key)
    before = (cert.read_bytes(), key.read_bytes())
    env |= {"CONTAINER_ID": "4242", "VASTINIT_SIGN_CERT_URL": standin.url}
    outcome = certs.ensure_certificate(env)
    assert outcome.source == "kept" and outcome.notes == []
    assert (cert.read_bytes(), key.read_bytes()) == before
    assert standin.requests == []  # nothing asked of the platform
    assert outcome.status.startswith(f"https: serving {cert}, valid until ")


def test_a_kept_key_readable_by_others_is_made_0600(ca: CA, tmp_path: Path) -> None:
    cert, key, env = paths(tmp_path)
    install(valid_pair(ca, tmp_path), cert, key)
    key.chmod(0o644)
    with structlog.testing.capture_logs() as logs:
        assert certs.ensure_certificate(env).source == "kept"
    assert mode(key) == 0o600
    assert any(e["event"] == "caddy.certificate_key_mode" and e["was"] == "0644" for e in logs)


@pytest.mark.parametrize("kind", ["none", "mismatched", "expired"])
def test_an_unusable_pair_off_vast_is_replaced_by_a_self_signed_one(
    ca: CA, tmp_path: Path, kind: str
) -> None:
    cert, key, env = paths(tmp_path)
    if kind == "mismatched":
        install(mismatched_pair(ca, tmp_path), cert, key)
    elif kind == "expired":
        install(expired_pair(ca, tmp_path), cert, key)
    env["PUBLIC_IPADDR"] = "203.0.113.9"
    with structlog.testing.capture_logs() as logs:
        outcome = certs.ensure_certificate(env)
    assert outcome.source == "self-signed"
    reason = {"none": "missing", "mismatched": "does not match", "expired": "expired on"}[kind]
    assert reason in outcome.notes[0] and "CONTAINER_ID is not set" in outcome.notes[1]
    assert reason in outcome.status and outcome.status.startswith("https: serving a self-signed")
    rejected = [e for e in logs if e["event"] == "caddy.certificate_rejected"]
    assert len(rejected) == 1 and reason in rejected[0]["reason"]
    assert certs.check_pair(cert, key).self_signed
    assert "IP Address:203.0.113.9, IP Address:127.0.0.1, DNS:localhost" in sans(cert)
    assert mode(key) == 0o600 and mode(cert) == 0o644
    days = (outcome.not_after.timestamp() - time.time()) / 86400 if outcome.not_after else 0
    assert 364 < days <= 365
    assert sorted(p.name for p in cert.parent.iterdir()) == ["instance.crt", "instance.key"]


@pytest.mark.parametrize("kind", ["none", "mismatched", "expired"])
def test_on_vast_the_platform_signs_a_fresh_key(
    ca: CA, standin: StandIn, tmp_path: Path, kind: str
) -> None:
    cert, key, env = paths(tmp_path)
    if kind == "mismatched":
        install(mismatched_pair(ca, tmp_path), cert, key)
    elif kind == "expired":
        install(expired_pair(ca, tmp_path), cert, key)
    old_key = key.read_bytes() if key.exists() else b""
    env |= {"CONTAINER_ID": "4242", "VASTINIT_SIGN_CERT_URL": standin.url}
    outcome = certs.ensure_certificate(env)
    assert outcome.source == "platform", outcome.notes
    assert outcome.status.startswith("https: serving a platform-signed certificate, valid until")
    [request] = standin.requests
    assert request["path"] == "/api/v0/sign_cert/?instance_id=4242"
    assert request["content_type"] == "application/octet-stream"
    assert request["body"].startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert key.read_bytes() != old_key  # a fresh key, never the rejected one
    assert certs.check_pair(cert, key).ok
    assert openssl("verify", "-CAfile", ca.cert, cert).strip() == f"{cert}: OK"
    assert mode(key) == 0o600 and mode(cert) == 0o644


def test_the_instance_id_falls_back_to_the_container_label() -> None:
    assert certs.instance_id({"CONTAINER_ID": " 17 "}) == "17"
    assert certs.instance_id({"VAST_CONTAINERLABEL": "C.9001"}) == "9001"
    assert certs.instance_id({"VAST_CONTAINERLABEL": "mybox"}) is None
    assert certs.instance_id({}) is None


@pytest.mark.parametrize(
    ("mode_", "requests", "why"),
    [
        ("other-key", 1, "its reply is unusable: does not match the new key"),
        ("garbage", 1, "its reply is unusable: not a PEM certificate"),
        ("403", 1, "HTTP 403 Forbidden (1 attempt)"),
        ("500", 3, "HTTP 500 Internal Server Error (3 attempts)"),
    ],
)
def test_a_refusal_or_a_bad_reply_leads_to_a_self_signed_pair(
    standin: StandIn, tmp_path: Path, mode_: str, requests: int, why: str
) -> None:
    cert, key, env = paths(tmp_path)
    standin.mode = mode_
    pauses: list[float] = []
    env |= {"CONTAINER_ID": "4242", "VASTINIT_SIGN_CERT_URL": standin.url}
    outcome = certs.ensure_certificate(env, sleep=pauses.append)
    assert outcome.source == "self-signed"
    assert outcome.notes[1].startswith(f"platform signing failed: {why}"), outcome.notes
    assert len(standin.requests) == requests
    assert pauses == list(certs.SIGN_BACKOFF_S[: requests - 1])
    assert certs.check_pair(cert, key).ok and certs.check_pair(cert, key).self_signed


def test_an_unreachable_endpoint_costs_bounded_time(tmp_path: Path) -> None:
    _, _, env = paths(tmp_path)
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        env |= {"CONTAINER_ID": "1", "VASTINIT_SIGN_CERT_URL": f"http://127.0.0.1:{port}/"}
        began = time.monotonic()
        outcome = certs.ensure_certificate(env)
        took = time.monotonic() - began
    assert outcome.notes[1] == "platform signing failed: Connection refused (3 attempts)"
    # 1.5 s of pauses between the attempts, plus two RSA keys; 10 s is a generous bound.
    assert sum(certs.SIGN_BACKOFF_S) <= took < 10


def test_a_silent_endpoint_times_out(standin: StandIn, tmp_path: Path) -> None:
    _, _, env = paths(tmp_path)
    standin.mode = "hang"
    env |= {
        "CONTAINER_ID": "1",
        "VASTINIT_SIGN_CERT_URL": standin.url,
        "VASTINIT_SIGN_CERT_TIMEOUT": "0.3",
    }
    began = time.monotonic()
    outcome = certs.ensure_certificate(env, sleep=no_sleep)
    assert time.monotonic() - began < 8  # 3 x 0.3 s of waiting, and the keys
    assert outcome.source == "self-signed" and "timed out (3 attempts)" in outcome.notes[1]


def test_a_bad_timeout_setting_is_a_clear_error(tmp_path: Path) -> None:
    _, _, env = paths(tmp_path)
    env |= {"CONTAINER_ID": "1", "VASTINIT_SIGN_CERT_TIMEOUT": "soon"}
    with pytest.raises(StackError, match="VASTINIT_SIGN_CERT_TIMEOUT='soon'"):
        certs.sign_with_platform(*certs.cert_paths(env), env, "1")


def test_no_writable_place_for_the_pair_is_an_error_not_plain_http(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    env = {
        "CADDY_TLS_CERT": str(tmp_path / "file" / "instance.crt"),
        "CADDY_TLS_KEY": str(tmp_path / "file" / "instance.key"),
    }
    with pytest.raises(StackError, match="cannot write the instance certificate"):
        certs.ensure_certificate(env)


@pytest.mark.parametrize(
    ("public", "names"),
    [
        ("", ["IP:127.0.0.1", "DNS:localhost"]),
        ("198.51.100.7", ["IP:198.51.100.7", "IP:127.0.0.1", "DNS:localhost"]),
        ("2001:db8::1", ["IP:2001:db8::1", "IP:127.0.0.1", "DNS:localhost"]),
        ("box.example.com", ["DNS:box.example.com", "IP:127.0.0.1", "DNS:localhost"]),
        ("127.0.0.1", ["IP:127.0.0.1", "DNS:localhost"]),
        ("x, DNS:evil", ["IP:127.0.0.1", "DNS:localhost"]),  # not a name: left out
    ],
)
def test_subject_alt_names(public: str, names: list[str]) -> None:
    assert certs.subject_alt_names({"PUBLIC_IPADDR": public}) == names


def test_default_paths_are_etc_for_root_and_the_state_dir_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert certs.cert_paths({}) == (Path("/etc/instance.crt"), Path("/etc/instance.key"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    state = tmp_path / "state"
    assert certs.cert_paths({"XDG_STATE_HOME": str(state)}) == (
        state / "vastinit" / "instance.crt",
        state / "vastinit" / "instance.key",
    )
    env = {"CADDY_TLS_CERT": "/x/c.pem", "CADDY_TLS_KEY": "/x/k.pem"}
    assert certs.cert_paths(env) == (Path("/x/c.pem"), Path("/x/k.pem"))


def test_status_goes_to_the_notify_socket(tmp_path: Path) -> None:
    assert certs.send_status({}, "https: x") is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(tmp_path / "notify.sock"))
        receiver.settimeout(5)
        assert certs.send_status({"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}, "https: x")
        assert receiver.recv(4096) == b"STATUS=https: x"
    # A socket that went away is not an error: the status is also logged.
    assert certs.send_status({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}, "x") is False
