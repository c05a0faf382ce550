"""The environment of one start, and a unit with its templates expanded against it."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

from vastinit.config.expand import expand
from vastinit.model import Probe, Unit

_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*")
_DOUBLE_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_DOUBLE_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def read_env_files(paths: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE pairs from ``paths`` in order (later files win); unreadable files are skipped."""
    env: dict[str, str] = {}
    for path in paths:
        if not os.path.isfile(path):
            continue  # missing by contract; and never block on a FIFO or read a directory
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError:
            continue  # missing or unreadable env files are optional by contract
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            match = _LINE.fullmatch(line)
            if match is not None:
                env[match.group(1)] = _unquote(match.group(2))
    return env


def _unquote(value: str) -> str:
    # A quoted value ends at its closing quote; whatever follows (a comment) is dropped.
    if value.startswith("'"):
        end = value.find("'", 1)
        if end > 0:
            return value[1:end]
    elif value.startswith('"'):
        match = _DOUBLE_QUOTED.match(value)
        if match is not None:
            return re.sub(r"\\(.)", lambda m: _DOUBLE_ESCAPES.get(m[1], m[0]), match[1])
    # Like dotenv: an unquoted value ends at " #", so trailing comments are dropped.
    return re.split(r"\s+#", value, maxsplit=1)[0]


# The edge credentials: vastinit withholds them from every unit's environment (they would
# be readable in /proc/PID/environ by that unit's user) unless its `secrets` lists them.
SECRET_VARIABLES = frozenset({"OPEN_BUTTON_TOKEN", "WEB_PASSWORD", "CONTAINER_API_KEY"})


def start_environment(
    unit: Unit, base: Mapping[str, str], secrets_from: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` (SECRET_VARIABLES dropped), plus the unit's ``secrets`` taken from
    ``secrets_from`` (vastinit's own environment), then ``unit.env_files`` re-read now, then
    ``unit.environment`` expanded."""
    env = {k: v for k, v in base.items() if k not in SECRET_VARIABLES}
    source = os.environ if secrets_from is None else secrets_from
    for name in unit.secrets:
        if name in source:
            env[name] = source[name]
    for path in unit.env_files:
        # Each path sees what earlier files set, so "${WORKSPACE}/.env" can follow /etc/environment.
        env.update(read_env_files([expand(path, env)]))
    for key, value in unit.environment.items():
        env[key] = expand(value, env)
    return env


def resolve_unit(unit: Unit, env: Mapping[str, str]) -> Unit:
    """A copy of ``unit`` with command, working_dir, probe targets and log.file expanded."""
    log = unit.log
    if log.file:
        log = dataclasses.replace(log, file=expand(log.file, env))
    return dataclasses.replace(
        unit,
        command=tuple(expand(arg, env) for arg in unit.command),
        working_dir=None if unit.working_dir is None else expand(unit.working_dir, env),
        readiness=_resolve_probe(unit.readiness, env),
        liveness=_resolve_probe(unit.liveness, env),
        log=log,
    )


def _resolve_probe(probe: Probe | None, env: Mapping[str, str]) -> Probe | None:
    if probe is None:
        return None
    if isinstance(probe.target, str):
        target: str | tuple[str, ...] = expand(probe.target, env)
    else:
        target = tuple(expand(arg, env) for arg in probe.target)
    return dataclasses.replace(probe, target=target)
