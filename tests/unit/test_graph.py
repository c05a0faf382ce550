"""The dependency graph: cycles, start layers, stop order, dependents."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from vastinit.graph import cycles, dependents, find_cycle, start_layers, stop_order
from vastinit.model import DependencyCondition, Unit


def graph(**deps: str) -> dict[str, Unit]:
    """graph(a="b c") -> unit a depends on b and c; every named unit exists."""
    names = set(deps) | {d for ds in deps.values() for d in ds.split()}
    return {
        name: Unit(
            name=name,
            depends_on=MappingProxyType(
                {d: DependencyCondition.READY for d in deps.get(name, "").split()}
            ),
        )
        for name in names
    }


def test_stack_layers() -> None:
    units = graph(sglang="provisioning caddy", jupyter="provisioning", caddy="", provisioning="")
    assert start_layers(units) == [["caddy", "provisioning"], ["jupyter", "sglang"]]
    assert stop_order(units) == [["jupyter", "sglang"], ["caddy", "provisioning"]]


def test_layer_is_one_past_the_deepest_dependency() -> None:
    units = graph(d="a c", c="b", b="a")
    assert start_layers(units) == [["a"], ["b"], ["c"], ["d"]]


def test_missing_dependencies_are_ignored() -> None:
    units = {k: v for k, v in graph(a="ghost", b="a").items() if k != "ghost"}
    assert start_layers(units) == [["a"], ["b"]]
    assert find_cycle(units) is None


def test_empty_graph() -> None:
    assert start_layers({}) == []
    assert stop_order({}) == []


@pytest.mark.parametrize(
    ("deps", "cycle"),
    [
        ({"a": "b", "b": "a"}, ["a", "b", "a"]),
        ({"a": "b", "b": "c", "c": "a"}, ["a", "b", "c", "a"]),
        ({"x": "y", "y": "z", "z": "y"}, ["y", "z", "y"]),
        ({"a": "a"}, ["a", "a"]),
        ({"a": "b c", "b": "d", "c": "", "d": ""}, None),
    ],
)
def test_find_cycle(deps: dict[str, str], cycle: list[str] | None) -> None:
    assert find_cycle(graph(**deps)) == cycle


def test_each_tangle_yields_one_cycle() -> None:
    units = graph(a="b", b="c a", c="a", p="q", q="p", free="a")
    assert cycles(units) == [["a", "b", "a"], ["p", "q", "p"]]


def test_start_layers_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match="a -> b -> a"):
        start_layers(graph(a="b", b="a"))


def test_dependents_are_direct_only() -> None:
    units = graph(sglang="caddy", portal="caddy", x="sglang")
    assert dependents(units, "caddy") == {"sglang", "portal"}
    assert dependents(units, "x") == set()


def test_long_chain_does_not_hit_the_recursion_limit() -> None:
    # u0000 depends on u0001 ... on u1499: the first name in sorted order is the deepest.
    chain = {f"u{i:04d}": f"u{i + 1:04d}" if i < 1499 else "" for i in range(1500)}
    layers = start_layers(graph(**chain))
    assert len(layers) == 1500 and layers[0] == ["u1499"] and layers[-1] == ["u0000"]
    assert find_cycle(graph(**{**chain, "u1499": "u0000"})) is not None
