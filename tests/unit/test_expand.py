"""${VAR} templates and env files."""

from __future__ import annotations

from pathlib import Path

import pytest

from vastinit.config import expand, read_env_files
from vastinit.config.expand import template_problem

ENV = {"A": "alpha", "EMPTY": "", "N": "3"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("${A}", "alpha"),
        ("x${A}y", "xalphay"),
        ("${UNSET}", ""),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),  # like sh: an empty value takes the default too
        ("${A:-dflt}", "alpha"),
        ("${UNSET:-}", ""),
        ("${UNSET:-${A}/sub}", "alpha/sub"),  # defaults may hold templates
        ("${UNSET:-a$$b}", "a$b"),
        ("$$", "$"),
        ("$${A}", "${A}"),  # $$ escapes, so the rest is literal
        ("cost $5 and $HOME", "cost $5 and $HOME"),  # a lone $ is left for the shell
        ("trailing $", "trailing $"),
        ("}{", "}{"),
        ("--tp ${N} --x=${A}", "--tp 3 --x=alpha"),
    ],
)
def test_expand_replaces_templates(text: str, expected: str) -> None:
    assert expand(text, ENV) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("${A", "never closed"),
        ("${", "expected a variable name"),
        ("${}", "expected a variable name"),
        ("${1X}", "expected a variable name"),
        ("${A-b}", "unexpected '-'"),
        ("${A:=b}", "unexpected ':'"),
        ("${A:-b", "never closed"),
        ("x ${A:-${B}", "never closed"),
    ],
)
def test_malformed_template_raises_with_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        expand(text, ENV)
    problem = template_problem(text)
    assert problem is not None and why in problem


def test_unclosed_template_names_the_column() -> None:
    assert "column 5" in str(template_problem("abc ${X"))


def test_well_formed_template_has_no_problem() -> None:
    assert template_problem("${A:-b} $$ $x") is None


def test_env_file_syntax(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text(
        "# a comment\n"
        "\n"
        "PLAIN=value\n"
        "export EXPORTED=yes\n"
        "SPACED = around \n"
        'DQ="two words"\n'
        "SQ='$literal \\n'\n"
        'ESC="a\\"b\\\\c"\n'
        "TRAIL=val # comment\n"
        "HASH=a#b\n"
        'QCOMMENT="q" # comment\n'
        "EMPTY=\n"
        "not a line\n"
        "1BAD=x\n"
    )
    assert read_env_files([str(path)]) == {
        "PLAIN": "value",
        "EXPORTED": "yes",
        "SPACED": "around",
        "DQ": "two words",
        "SQ": "$literal \\n",
        "ESC": 'a"b\\c',
        "TRAIL": "val",
        "HASH": "a#b",
        "QCOMMENT": "q",
        "EMPTY": "",
    }


def test_env_files_later_wins_and_missing_or_unreadable_are_skipped(tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.write_text("A=1\nB=1\n")
    second = tmp_path / "second"
    second.write_text("B=2\n")
    assert read_env_files([str(first), str(tmp_path / "missing"), str(tmp_path), str(second)]) == {
        "A": "1",
        "B": "2",
    }
