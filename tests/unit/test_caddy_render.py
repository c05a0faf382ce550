"""The rendered Caddyfile: Caddy 2.6 accepts it, auth where it belongs, no secret inside."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vastinit.stack.caddy import (
    AuthSettings,
    TlsFiles,
    auth_from_env,
    build,
    cookie_name,
    render_caddyfile,
    tls_from_env,
)
from vastinit.stack.common import StackError
from vastinit.stack.routes import Route

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
needs_caddy = pytest.mark.skipif(not Path(CADDY).exists(), reason="caddy is not installed")

API = Route(port=8000, target=18000, host="localhost", path="/docs", label="SGLang API")
JUPYTER = Route(port=8080, target=18080, label="Jupyter")
ALIAS = Route(port=8080, target=8080, label="Jupyter Terminal")


def _validate(tmp_path: Path, text: str) -> None:
    path = tmp_path / "Caddyfile"
    path.write_text(text)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "OPEN_BUTTON_TOKEN": "t1",
        "WEB_PASSWORD": "t2",
    }
    result = subprocess.run(
        [CADDY, "validate", "--adapter", "caddyfile", "--config", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    formatted = subprocess.run(
        [CADDY, "fmt", str(path)], capture_output=True, text=True, timeout=60, env=env
    )
    assert formatted.stdout == text, "the generated file is not as `caddy fmt` would lay it out"


def _site(text: str, port: int) -> str:
    start = text.index(f"://:{port} {{")
    end = text.find("\n}\n", start)
    return text[start:end]


@needs_caddy
@pytest.mark.parametrize(
    "auth",
    [
        AuthSettings(),
        AuthSettings(enabled=False),
        AuthSettings(exclude_ports=frozenset({8080})),
        AuthSettings(
            token_vars=("OPEN_BUTTON_TOKEN", "WEB_PASSWORD"), cookie_name="C.42_auth_token"
        ),
    ],
    ids=["auth", "auth-off", "exclude-8080", "two-tokens"],
)
def test_rendered_file_passes_caddy_validate(tmp_path: Path, auth: AuthSettings) -> None:
    _validate(tmp_path, render_caddyfile([API, JUPYTER, ALIAS], auth=auth))


@needs_caddy
def test_rendered_file_with_tls_passes_caddy_validate(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    args = ["/CN=localhost", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", *args],
        check=True,
        capture_output=True,
        timeout=60,
    )
    text = render_caddyfile([API], auth=AuthSettings(), tls=TlsFiles(str(cert), str(key)))
    assert "https://:8000 {" in text and "http_redirect" in text
    _validate(tmp_path, text)


@needs_caddy
def test_hostile_label_is_escaped_and_still_valid(tmp_path: Path) -> None:
    label = 'Evil {env.HOME} `x` "q" <script>alert(1)</script>\nnext'
    text = render_caddyfile([Route(9000, 19000, label=label)], auth=AuthSettings())
    page = next(line for line in text.splitlines() if "respond @browser" in line)
    assert "<script>" not in page and "{env.HOME}" not in page
    assert "&lt;script&gt;" in page and "&#123;env.HOME&#125;" in page
    assert "{env.HOME}" not in text  # nor in the comments
    _validate(tmp_path, text)


@needs_caddy
def test_empty_file_when_nothing_is_served_is_valid(tmp_path: Path) -> None:
    text = render_caddyfile([ALIAS], auth=AuthSettings())
    assert "://:" not in text
    _validate(tmp_path, text)


def test_auth_is_on_by_default_and_off_where_excluded() -> None:
    text = render_caddyfile(
        [API, JUPYTER, Route(9000, 19000, auth=False)],
        auth=AuthSettings(exclude_ports=frozenset({8080})),
    )
    assert "@denied" in _site(text, 8000)
    assert "@denied" not in _site(text, 8080)  # AUTH_EXCLUDE
    assert "@denied" not in _site(text, 9000)  # [[expose]] auth = false
    off = render_caddyfile([API], auth=AuthSettings(enabled=False))
    assert "@denied" not in off and "reverse_proxy localhost:18000" in off


SHARED = Route(9100, 19100, label="Token app", pass_credentials=True)


@needs_caddy
@pytest.mark.parametrize(
    "auth", [AuthSettings(), AuthSettings(enabled=False)], ids=["auth", "auth-off"]
)
def test_rendered_file_with_a_route_sharing_the_token_passes_caddy_validate(
    tmp_path: Path, auth: AuthSettings
) -> None:
    _validate(tmp_path, render_caddyfile([API, SHARED, Route(9000, 19000, auth=False)], auth=auth))


def test_credentials_are_stripped_except_where_the_route_shares_the_token() -> None:
    text = render_caddyfile(
        [API, SHARED, Route(9000, 19000, auth=False)], auth=AuthSettings(cookie_name="C.7_x")
    )
    api, shared, public = _site(text, 8000), _site(text, 9100), _site(text, 9000)
    # Behind auth: the Bearer header, the cookie, every token parameter.
    assert "request_header @token_bearer -Authorization" in api
    assert "request_header Cookie `;[ \\t]*C[.]7_x=[^;]*()` $1" in api
    assert "route @token_param {" in api
    # Declared to share the token: still checked, nothing stripped.
    assert "@denied" in shared
    assert "(route; auth on; credentials passed on)\nhttp://:9100 {" in text
    assert "-Authorization" not in shared and "request_header Cookie" not in shared
    assert "route @token_param" not in shared
    # No auth: only the cookie (a browser sends it to every port of the host).
    assert "request_header Cookie" in public and "-Authorization" not in public
    assert "route @token_param" not in public


def test_alias_routes_get_no_site() -> None:
    text = render_caddyfile([ALIAS], auth=AuthSettings())
    assert ":8080" not in text


def test_admin_endpoint_is_off_by_default_and_bind_is_optional() -> None:
    # Never a TCP port any local process could reach: it can rewrite the edge, auth included.
    text = render_caddyfile([API], auth=AuthSettings())
    assert "\tadmin off\n" in text and "bind" not in text
    bound = render_caddyfile([API], auth=AuthSettings(), bind="127.0.0.1", admin="off")
    assert "\tbind 127.0.0.1\n" in bound and "\tadmin off\n" in bound


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"admin": "0.0.0.0:2019 }"}, "admin"),
        ({"flush_interval": "1s }"}, "CADDY_FLUSH_INTERVAL"),
        ({"bind": "1.2.3.4 }"}, "bind"),
        ({"tls": TlsFiles("/a b", "/k")}, "TLS certificate"),
    ],
)
def test_unsafe_settings_are_refused(kwargs: dict[str, object], what: str) -> None:
    with pytest.raises(StackError, match=what):
        render_caddyfile([API], auth=AuthSettings(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        (None, "vastinit_auth_token"),
        ("", "vastinit_auth_token"),
        ("C.12345", "C.12345_auth_token"),
        ("a b;c=d", "a_b_c_d_auth_token"),
    ],
)
def test_cookie_name_follows_the_container_label(label: str | None, expected: str) -> None:
    env = {} if label is None else {"VAST_CONTAINERLABEL": label}
    assert cookie_name(env) == expected


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, AuthSettings()),
        ({"ENABLE_AUTH": "false"}, AuthSettings(enabled=False)),
        ({"ENABLE_AUTH": "TRUE"}, AuthSettings()),
        ({"AUTH_EXCLUDE": "8080, 1111,"}, AuthSettings(exclude_ports=frozenset({8080, 1111}))),
        ({"OPEN_BUTTON_TOKEN": "a", "WEB_PASSWORD": "a"}, AuthSettings()),
        ({"WEB_PASSWORD": "b"}, AuthSettings()),  # handed over as OPEN_BUTTON_TOKEN by --run
        (
            {"OPEN_BUTTON_TOKEN": "a", "WEB_PASSWORD": "b"},
            AuthSettings(token_vars=("OPEN_BUTTON_TOKEN", "WEB_PASSWORD")),
        ),
    ],
)
def test_auth_settings_from_env(env: dict[str, str], expected: AuthSettings) -> None:
    assert auth_from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"AUTH_EXCLUDE": "8080,http"}, "AUTH_EXCLUDE: 'http'"),
        ({"AUTH_EXCLUDE": "99999"}, "AUTH_EXCLUDE: '99999'"),
        ({"ENABLE_AUTH": "nah"}, "ENABLE_AUTH"),
    ],
)
def test_bad_auth_settings_are_clear_errors(env: dict[str, str], match: str) -> None:
    with pytest.raises(StackError, match=match):
        auth_from_env(env)


def test_tls_follows_the_switch_and_never_falls_back_to_plain_http(tmp_path: Path) -> None:
    cert, key = tmp_path / "c", tmp_path / "k"  # neither exists: --run makes them first
    env = {"CADDY_TLS_CERT": str(cert), "CADDY_TLS_KEY": str(key)}
    assert tls_from_env(env) is None  # ENABLE_HTTPS unset
    assert tls_from_env({**env, "ENABLE_HTTPS": "true"}) == TlsFiles(str(cert), str(key))


def test_token_values_never_reach_the_file() -> None:
    env = {
        "OPEN_BUTTON_TOKEN": "button-secret-1234",
        "WEB_PASSWORD": "password-secret-5678",
        "PORTAL_CONFIG": "localhost:8000:18000:/:API",
    }
    text = build(env, [])
    assert "button-secret-1234" not in text and "password-secret-5678" not in text
    assert "{env.OPEN_BUTTON_TOKEN}" in text and "{env.WEB_PASSWORD}" in text


# --- the command ---------------------------------------------------------------------------


def _command(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    units = tmp_path / "units"
    units.mkdir(exist_ok=True)
    full = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VAST_", "PORTAL_", "OPEN_BUTTON", "WEB_PASS", "ENABLE_", "AUTH_"))
    }
    full.update({"VASTINIT_UNITS": str(units), "HOME": str(tmp_path), **env})
    return subprocess.run(
        [sys.executable, "-m", "vastinit", "caddyfile", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_command_prints_the_caddyfile_and_logs_to_stderr(tmp_path: Path) -> None:
    result = _command(tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# Generated by `vastinit caddyfile`")
    assert "http://:8000 {" in result.stdout and "http://:8080 {" in result.stdout
    assert "caddy.route_not_served" in result.stderr  # the Jupyter Terminal alias


def test_command_reads_units_expose(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    (units / "web.toml").write_text(
        'command = ["true"]\n[[expose]]\nport = 9100\ntarget = 19100\nlabel = "Web"\n'
    )
    result = _command(tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert "http://:9100 {" in result.stdout and "reverse_proxy 127.0.0.1:19100" in result.stdout


def test_command_reports_a_bad_portal_config_entry(tmp_path: Path) -> None:
    result = _command(tmp_path, {"PORTAL_CONFIG": "localhost:8000:18000:/:A|oops:1"})
    assert result.returncode == 2
    assert "PORTAL_CONFIG entry 'oops:1'" in result.stderr
    assert result.stdout == ""


def test_run_keeps_a_generated_token_in_a_private_file_and_hands_it_only_to_caddy(
    tmp_path: Path,
) -> None:
    # A stand-in for caddy: reports its argv and whether it got the token, never the token.
    fake = tmp_path / "fake-caddy"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "token = open(os.environ['TOKEN_FILE']).read().strip()\n"
        "print('FAKE', sys.argv[1:], os.environ.get('OPEN_BUTTON_TOKEN') == token, len(token))\n"
    )
    fake.chmod(0o755)
    token_file = tmp_path / "state" / "caddy_token"
    output = tmp_path / "etc" / "Caddyfile"
    result = _command(
        tmp_path,
        {"TOKEN_FILE": str(token_file), "VASTINIT_TOKEN_FILE": str(token_file)},
        "--output",
        str(output),
        "--run",
        "--caddy",
        str(fake),
    )
    assert result.returncode == 0, result.stderr
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert token_file.stat().st_mode & 0o777 == 0o600
    expected_args = ["run", "--config", str(output), "--adapter", "caddyfile"]
    assert f"FAKE {expected_args} True {len(token)}" in result.stdout
    assert token not in result.stdout + result.stderr
    assert token not in output.read_text()
    assert output.stat().st_mode & 0o777 == 0o644
    # A second start keeps the same token.
    again = _command(
        tmp_path,
        {"TOKEN_FILE": str(token_file), "VASTINIT_TOKEN_FILE": str(token_file)},
        "--output",
        str(output),
        "--run",
        "--caddy",
        str(fake),
    )
    assert again.returncode == 0 and token_file.read_text().strip() == token


def test_run_needs_output(tmp_path: Path) -> None:
    result = _command(tmp_path, {}, "--run")
    assert result.returncode == 2 and "--run needs --output" in result.stderr


# --- under vastinit: the readiness gate -----------------------------------------------------


def test_gated_routes_follow_a_ready_marker_and_others_say_nothing_serves_them(
    tmp_path: Path,
) -> None:
    from vastinit.stack.caddy import EdgeGate, build
    from vastinit.stack.routes import UnitPorts

    env = {
        "OPEN_BUTTON_TOKEN": "t",
        "PORTAL_CONFIG": "localhost:8000:18000:/docs:SGLang API|localhost:7860:17860:/:Model UI",
    }
    edge = str(tmp_path / "edge")
    text = build(env, [UnitPorts("sglang", (), frozenset({18000}))], edge_dir=edge)
    _validate(tmp_path, text)
    model_ui, sglang = text.split("http://:7860 {")[1].split("http://:8000 {")
    assert f"root {edge}/ready\n" in sglang and "try_files /sglang\n" in sglang
    assert f"reverse_proxy unix/{edge}/status.sock" in sglang
    assert "header Retry-After 1" in sglang and "Retry-After 5" not in text
    assert "not ready yet" in sglang and "http-equiv" not in text
    # The gate comes after the auth check: the status stream is token-protected too.
    assert sglang.index("@denied") < sglang.index("@vastinit_status")
    assert "ready" not in model_ui.split("handle_errors")[0].replace("already", "")
    assert "nothing serves this port" in model_ui and '" 502' in model_ui
    assert f"admin unix/{edge}/admin.sock" in text
    assert EdgeGate(edge, {}).admin_socket == f"{edge}/admin.sock"


@pytest.mark.parametrize("unit", ["a b", "x}", "../etc"])
def test_gated_unit_names_are_checked(unit: str) -> None:
    from vastinit.stack.caddy import EdgeGate

    with pytest.raises(StackError, match="unit name"):
        render_caddyfile([API], auth=AuthSettings(), gate=EdgeGate("/run/e", {API.port: unit}))
