"""ensure_token: environment first, else a private file that keeps one random token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import structlog

from vastinit.stack.caddy_token import default_token_file, ensure_token
from vastinit.stack.common import StackError


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OPEN_BUTTON_TOKEN": "button"}, "button"),
        ({"OPEN_BUTTON_TOKEN": "button", "WEB_PASSWORD": "pw"}, "button"),
        ({"WEB_PASSWORD": "pw"}, "pw"),
        ({"OPEN_BUTTON_TOKEN": "", "WEB_PASSWORD": "pw"}, "pw"),
        ({"OPEN_BUTTON_TOKEN": " button\r\n"}, "button"),  # stray whitespace is not the token
    ],
)
def test_token_from_environment_wins_and_no_file_is_written(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    path = tmp_path / "token"
    assert ensure_token(env, path) == expected
    assert not path.exists()


@pytest.mark.parametrize("bad", ["a b", "a;b", "a,b", 'a"b', "a\\b", "a\x01b"])
def test_unusable_token_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(StackError) as caught:
        ensure_token({"WEB_PASSWORD": bad}, "/nonexistent/token")
    assert "WEB_PASSWORD" in str(caught.value)
    assert bad not in str(caught.value)


def test_generated_token_is_kept_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "vastinit" / "caddy_token"
    with structlog.testing.capture_logs() as logs:
        first = ensure_token({}, path)
    assert len(first) >= 32
    assert path.read_text() == first + "\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert ensure_token({}, path) == first
    assert [e["event"] for e in logs] == ["caddy.token_generated"]
    assert first not in repr(logs)  # never logged
    assert sorted(p.name for p in path.parent.iterdir()) == ["caddy_token"]  # no temp left


def test_two_fresh_tokens_differ(tmp_path: Path) -> None:
    assert ensure_token({}, tmp_path / "a") != ensure_token({}, tmp_path / "b")


def test_readable_token_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("kept-token\n")
    path.chmod(0o644)
    assert ensure_token({}, path) == "kept-token"
    assert path.stat().st_mode & 0o777 == 0o600


def test_empty_token_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n")
    token = ensure_token({}, path)
    assert token and path.read_text().strip() == token


def test_token_path_that_is_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="not a regular file"):
        ensure_token({}, tmp_path)


def test_token_file_location(tmp_path: Path) -> None:
    assert default_token_file({"VASTINIT_TOKEN_FILE": "/x/t"}) == Path("/x/t")
    if os.geteuid() == 0:
        assert default_token_file({}) == Path("/etc/vastinit/caddy_token")
    else:
        state = default_token_file({"XDG_STATE_HOME": str(tmp_path)})
        assert state == tmp_path / "vastinit" / "caddy_token"
