"""The dependency graph of units: cycles, start layers, stop order. Pure: no I/O, no state.

Edges go from a unit to each unit in its ``depends_on``; an edge to a unit that does not
exist is ignored here (config validation reports it).
"""

from __future__ import annotations

from collections.abc import Mapping

from vastinit.model import Unit


def _edges(units: Mapping[str, Unit]) -> dict[str, list[str]]:
    return {name: sorted(d for d in unit.depends_on if d in units) for name, unit in units.items()}


def cycles(units: Mapping[str, Unit]) -> list[list[str]]:
    """One cycle per tangle of units (strongly connected component), e.g. ``["a", "b", "a"]``."""
    edges = _edges(units)
    found: list[list[str]] = []
    for component in _components(edges):
        start = min(component)
        if len(component) == 1 and start not in edges[start]:
            continue
        found.append(_shortest_cycle(edges, start, component))
    return sorted(found)


def find_cycle(units: Mapping[str, Unit]) -> list[str] | None:
    """A dependency cycle as names with the first repeated at the end, or None if acyclic."""
    found = cycles(units)
    return found[0] if found else None


def start_layers(units: Mapping[str, Unit]) -> list[list[str]]:
    """Units grouped by start order: layer 0 has no dependencies, layer N depends on < N."""
    cycle = find_cycle(units)
    if cycle is not None:
        raise ValueError(f"dependency cycle: {' -> '.join(cycle)}")
    edges = _edges(units)
    waiting_on = {name: len(deps) for name, deps in edges.items()}
    users: dict[str, list[str]] = {name: [] for name in edges}
    for name, deps in edges.items():
        for dep in deps:
            users[dep].append(name)
    layers: list[list[str]] = []
    layer = sorted(name for name, count in waiting_on.items() if count == 0)
    while layer:
        layers.append(layer)
        following: list[str] = []
        for name in layer:
            for user in users[name]:
                waiting_on[user] -= 1
                if waiting_on[user] == 0:
                    following.append(user)
        layer = sorted(following)
    return layers


def stop_order(units: Mapping[str, Unit]) -> list[list[str]]:
    """The start layers reversed: dependents stop before what they depend on."""
    return list(reversed(start_layers(units)))


def dependents(units: Mapping[str, Unit], name: str) -> set[str]:
    """The units whose ``depends_on`` names ``name`` directly."""
    return {other for other, unit in units.items() if name in unit.depends_on}


def _components(edges: Mapping[str, list[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if child < len(edges[node]):
                work.append((node, child + 1))
                nxt = edges[node][child]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                result.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def _shortest_cycle(edges: Mapping[str, list[str]], start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one component (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in edges[node]:
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if nxt in within and nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError("a strongly connected component always holds a cycle")
