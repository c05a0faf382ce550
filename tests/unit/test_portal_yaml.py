"""The applications list (SPEC §4.4): /etc/portal.yaml in the box role (seeded from
PORTAL_CONFIG when absent), else PORTAL_CONFIG; never touched in the workstation role."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from vastinit.stack.caddy import build
from vastinit.stack.common import StackError
from vastinit.stack.portal_yaml import applications
from vastinit.stack.routes import Route

CONFIG = "localhost:8000:18000:/docs:SGLang API|localhost:8080:18080:/:Jupyter"


def env(tmp_path: Path, role: str, **extra: str) -> dict[str, str]:
    return {
        "VASTINIT_ROLE": role,
        "VASTINIT_PORTAL_YAML": str(tmp_path / "portal.yaml"),
        "PORTAL_CONFIG": CONFIG,
        **extra,
    }


def labels(routes: list[Route]) -> list[tuple[int, int, str]]:
    return sorted((r.port, r.target, r.label) for r in routes)


def test_workstation_never_reads_or_writes_the_file(tmp_path: Path) -> None:
    (tmp_path / "portal.yaml").write_text(
        "applications:\n"
        "  X: {hostname: localhost, external_port: 9, internal_port: 10, open_path: /}\n"
    )
    routes = applications(env(tmp_path, "workstation"), seed=True)
    assert labels(routes) == [(8000, 18000, "SGLang API"), (8080, 18080, "Jupyter")]


def test_box_first_start_seeds_the_file_from_portal_config(tmp_path: Path) -> None:
    e = env(tmp_path, "box")
    assert labels(applications(e, seed=False)) == labels(applications(e, seed=True))
    path = tmp_path / "portal.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    doc = yaml.safe_load(path.read_text())
    assert doc["applications"]["Jupyter"] == {
        "hostname": "localhost",
        "external_port": 8080,
        "internal_port": 18080,
        "open_path": "/",
        "name": "Jupyter",
    }


def test_box_the_file_wins_and_a_different_portal_config_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "portal.yaml").write_text(
        "applications:\n"
        "  My App:\n    hostname: localhost\n    external_port: 9100\n"
        "    internal_port: 19100\n    open_path: /ui\n    name: My App\n"
    )
    with capture_logs() as logs:
        routes = applications(env(tmp_path, "box"), seed=True)
    assert labels(routes) == [(9100, 19100, "My App")]
    assert any(entry["event"] == "portal.yaml_differs" for entry in logs)
    # And the Caddyfile serves the file's route, not PORTAL_CONFIG's.
    caddyfile = build(env(tmp_path, "box"), [])
    assert "19100" in caddyfile and "18080" not in caddyfile


def test_box_an_empty_file_is_the_old_placeholder_and_portal_config_applies(tmp_path: Path) -> None:
    (tmp_path / "portal.yaml").write_text("")
    assert labels(applications(env(tmp_path, "box"))) == [
        (8000, 18000, "SGLang API"),
        (8080, 18080, "Jupyter"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("applications: [1, 2]\n", "expected a mapping"),
        ("applications:\n  A: 3\n", "application 'A' is not a mapping"),
        (
            "applications: {A: {hostname: localhost, external_port: x, internal_port: 1}}\n",
            "external port",
        ),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_a_bad_file_is_a_clear_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "portal.yaml").write_text(text)
    with pytest.raises(StackError, match=message) as info:
        applications(env(tmp_path, "box"))
    assert str(tmp_path / "portal.yaml") in str(info.value)
