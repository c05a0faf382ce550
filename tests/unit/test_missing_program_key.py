"""The `missing_program` key (issue 10 item 11d): validated, defaulted, set by the shipped units."""

from __future__ import annotations

from pathlib import Path

import pytest

from vastinit import model
from vastinit.config import load_units
from vastinit.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[2] / "vastinit" / "units"


def problems_of(tmp_path: Path, text: str) -> list[str]:
    (tmp_path / "u.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_units([tmp_path])
    return [str(p) for p in info.value.problems]


def test_missing_program_defaults_to_fail_and_takes_skip(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('command = ["x"]\n')
    (tmp_path / "b.toml").write_text('command = ["x"]\nmissing_program = "skip"\n')
    units = load_units([tmp_path])
    missing = model.MissingProgram
    assert units["a"].missing_program is missing.FAIL
    assert units["b"].missing_program is missing.SKIP


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            'command = ["x"]\nmissing_program = "skp"\n',
            "u.toml:2: unit u: missing_program: 'skp' is not one of fail | skip "
            "(did you mean 'skip'?)",
        ),
        ('command = ["x"]\nmissing_program = true\n', "u.toml:2: unit u: missing_program:"),
        (
            'command = ["x"]\nmissing_programs = "skip"\n',
            "(did you mean 'missing_program'?)",
        ),
    ],
)
def test_missing_program_is_validated(tmp_path: Path, text: str, fragment: str) -> None:
    found = problems_of(tmp_path, text)
    assert len(found) == 1 and fragment in found[0], found


def test_every_shipped_unit_skips_when_its_program_is_missing() -> None:
    units = load_units([SHIPPED])
    assert units
    for unit in units.values():
        assert unit.missing_program.value == "skip", unit.name
