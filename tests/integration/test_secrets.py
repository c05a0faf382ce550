"""The edge credentials reach only the units that list them in ``secrets`` (issue 10, #9).

A real ``vastinit run`` with OPEN_BUTTON_TOKEN, WEB_PASSWORD and CONTAINER_API_KEY in its
own environment; two oneshots print their process environment (``env``, what
/proc/PID/environ holds): only the one whose ``secrets`` names a variable receives it.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness import Vastinit, write_unit

SECRETS = {
    "OPEN_BUTTON_TOKEN": "obt-secret-1234",
    "WEB_PASSWORD": "web-secret-5678",
    "CONTAINER_API_KEY": "api-secret-9012",
}


def test_secrets_go_only_to_the_units_that_list_them(tmp_path: Path) -> None:
    units = tmp_path / "units"
    units.mkdir()
    write_unit(units, "plain", 'type = "oneshot"\ncommand = ["env"]')
    write_unit(
        units,
        "edge",
        'type = "oneshot"\ncommand = ["env"]\nsecrets = ["OPEN_BUTTON_TOKEN"]\n'
        'environment = { SEEN = "${WEB_PASSWORD:-withheld}" }',
    )
    vi = Vastinit(units, tmp_path, env={**SECRETS, "OTHER_VAR": "kept"}, control=True)
    try:
        vi.wait_state("plain", "exited")
        vi.wait_state("edge", "exited")
        plain = set(vi.unit_lines("plain"))
        edge = set(vi.unit_lines("edge"))
        assert "OTHER_VAR=kept" in plain and "OTHER_VAR=kept" in edge
        for name, value in SECRETS.items():
            assert f"{name}={value}" not in plain
            assert not any(value in line for line in plain)
        assert f"OPEN_BUTTON_TOKEN={SECRETS['OPEN_BUTTON_TOKEN']}" in edge
        # Not listed: withheld, also from ${...} expansion in the unit file.
        assert not any(SECRETS["WEB_PASSWORD"] in line for line in edge)
        assert not any(SECRETS["CONTAINER_API_KEY"] in line for line in edge)
        assert "SEEN=withheld" in edge
        vi.wait_control()
        shown = vi.ctl("show", "edge")
        assert shown.returncode == 0, shown.stderr
        assert "OPEN_BUTTON_TOKEN" in shown.stdout  # the name, never the value
        assert all(value not in shown.stdout for value in SECRETS.values())
    finally:
        vi.terminate()
