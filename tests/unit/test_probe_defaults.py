"""The probe defaults: one definition (vastinit.model), and the docs say what a unit gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vastinit import model
from vastinit.config import load_units
from vastinit.config.values import parse_duration
from vastinit.model import Probe, ProbeKind

DOCS = Path(__file__).resolve().parents[2] / "docs"
KINDS = {
    "http": '"http://127.0.0.1:8000/health"',
    "tcp": '"127.0.0.1:8000"',
    "exec": '["true"]',
}

# What model.py defines, by section and key: the one source of the defaults.
DEFINED: dict[str, dict[str, float | int | None]] = {
    "readiness": {
        "interval": model.READINESS_INTERVAL,
        "timeout": model.READINESS_TIMEOUT,
        "start_timeout": model.READINESS_START_TIMEOUT,
    },
    "liveness": {
        "interval": model.LIVENESS_INTERVAL,
        "timeout": model.LIVENESS_TIMEOUT,
        "failures": model.LIVENESS_FAILURES,
    },
}


def _doc_value(cell: str) -> float | int | None:
    """A table cell's default: ``"1s"`` -> 1.0, ``3`` -> 3, ``none (no limit)`` -> None."""
    cell = cell.strip().strip("`")
    if cell.startswith("none"):
        return None
    if cell.startswith('"'):
        return parse_duration(cell.strip('"'))
    return int(cell)


def _units_md_defaults(section: str) -> dict[str, float | int | None]:
    """The ``| key | type | default | meaning |`` table under ``### `[SECTION]` `` in units.md."""
    text = (DOCS / "units.md").read_text()
    part = text.split(f"### `[{section}]`", 1)[1].split("\n### ", 1)[0]
    part = part.split("| key | type | default | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|", part, re.MULTILINE)
    return {key: _doc_value(default) for key, default in rows}


def _probes_md_defaults(section: str) -> dict[str, float | int | None]:
    """The "Timing keys" table of probes.md (a ``—`` cell: not a key of that section)."""
    text = (DOCS / "probes.md").read_text()
    part = text.split("## Timing keys", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", part, re.MULTILINE)
    column = 0 if section == "readiness" else 1
    return {
        key: _doc_value(cells[column])
        for key, *cells in rows
        if cells[column].strip() not in ("—", "-")
    }


def _loaded_probe(tmp_path: Path, section: str, kind: str) -> Probe:
    """The probe of a unit whose ``[SECTION]`` names only the probe, no timing key."""
    (tmp_path / "u.toml").write_text(
        f'command = ["sleep", "1"]\n[{section}]\n{kind} = {KINDS[kind]}\n'
    )
    probe = getattr(load_units([tmp_path])["u"], section)
    assert isinstance(probe, Probe)
    return probe


@pytest.mark.parametrize("section", ["readiness", "liveness"])
def test_both_docs_document_the_defaults_that_model_defines(section: str) -> None:
    assert _units_md_defaults(section) == DEFINED[section]
    assert _probes_md_defaults(section) == DEFINED[section]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("section", ["readiness", "liveness"])
def test_a_unit_without_timing_keys_gets_the_documented_defaults(
    tmp_path: Path, section: str, kind: str
) -> None:
    probe = _loaded_probe(tmp_path, section, kind)
    documented = _units_md_defaults(section)
    for key, value in documented.items():
        assert getattr(probe, key) == value, f"{section}.{key}"


def test_probe_field_defaults_are_the_documented_readiness_defaults() -> None:
    probe = Probe(ProbeKind.HTTP, "http://127.0.0.1:8000/")
    for key, value in _units_md_defaults("readiness").items():
        assert getattr(probe, key) == value, key
    assert probe.failures == _units_md_defaults("liveness")["failures"]
