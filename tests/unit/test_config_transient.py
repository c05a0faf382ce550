"""``load_transient``: a transient unit's text through the unit file pipeline and the
transient rules, problems as ``<transient NAME>:LINE: unit NAME: message`` (issue 22)."""

from __future__ import annotations

import pytest

from vastinit.config import load_transient
from vastinit.config.load import MAX_DEPTH, MAX_UNIT_FILE
from vastinit.errors import ConfigError
from vastinit.model import Expose, Unit

SLEEP = 'command = ["sleep", "60"]\n'


def problems(text: str, units: dict[str, Unit] | None = None, name: str = "t") -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_transient(name, text, units or {})
    return [str(p) for p in info.value.problems]


def test_a_plain_unit_is_transient_with_a_pseudo_source() -> None:
    unit = load_transient("t", SLEEP + 'description = "x"\n', {})
    assert unit.transient and unit.source == "<transient t>"
    assert unit.command == ("sleep", "60") and unit.raw["description"] == "x"


def test_every_transient_rule_is_reported_at_its_line() -> None:
    text = (
        SLEEP
        + 'user = "nobody"\n'
        + 'group = "nogroup"\n'
        + 'secrets = ["VASTINIT_TOKEN"]\n'
        + "[restart]\nessential = true\n"
        + "[[expose]]\nport = 8123\ntarget = 18123\nauth = false\npass_credentials = true\n"
    )
    assert problems(text) == [
        "<transient t>:2: unit t: user: a transient unit cannot set user",
        "<transient t>:3: unit t: group: a transient unit cannot set group",
        "<transient t>:4: unit t: secrets: a transient unit cannot receive withheld variables",
        "<transient t>:6: unit t: restart.essential: a transient unit cannot be essential",
        "<transient t>:10: unit t: expose[0].auth: a transient unit cannot expose a port "
        "without auth",
        "<transient t>:11: unit t: expose[0].pass_credentials: a transient unit cannot "
        "receive the edge credentials",
    ]


def test_an_exposed_port_with_auth_is_allowed_unless_taken() -> None:
    text = SLEEP + "[[expose]]\nport = 8123\ntarget = 18123\n"
    assert load_transient("t", text, {}).expose[0].auth
    owner = Unit("web", expose=(Expose(port=8123, target=1),))
    assert problems(text, {"web": owner}) == [
        "<transient t>:3: unit t: expose[0].port: port 8123 is already exposed by web"
    ]


def test_dependencies_must_exist_among_the_running_units() -> None:
    text = SLEEP + '[depends_on]\nbase = "ready"\nt = "ready"\n'
    assert problems(text, {"bas": Unit("bas")}) == [
        "<transient t>:3: unit t: depends_on.base: unknown unit 'base' (did you mean 'bas'?)",
        "<transient t>:4: unit t: depends_on.t: a unit cannot depend on itself",
    ]
    assert (
        "base"
        in load_transient(
            "t", SLEEP + '[depends_on]\nbase = "ready"\n', {"base": Unit("base")}
        ).depends_on
    )


def test_the_unit_file_bounds_apply() -> None:
    assert "TOML syntax error" in problems('command = ["sleep",\n')[0]
    assert problems("command = 1\n")[0].startswith("<transient t>:1: unit t: command")
    big = SLEEP + "#" * MAX_UNIT_FILE
    assert "the limit is 1 MiB" in problems(big)[0]
    deep = "x = " + "[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2) + "\n"
    assert "nested deeper than" in problems(deep)[0]
    assert "unknown key" in problems(SLEEP + "bogus = 1\n")[0]


def test_a_control_character_in_the_name_is_escaped_in_problems() -> None:
    assert problems("command = 1\n", name="a\x1bb")[0].startswith("<transient a\\x1bb>")


def test_text_that_is_not_utf8_is_a_problem_not_a_crash() -> None:
    assert "not UTF-8 text" in problems('command = ["\ud800"]\n')[0]
