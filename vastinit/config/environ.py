"""The environment of one start, and a unit with its templates expanded against it."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence

import structlog

from vastinit.config.expand import MAX_EXPANSION, byte_size, expand
from vastinit.config.files import MIB, FileRefused, format_size, read_bounded
from vastinit.errors import ExpansionError
from vastinit.model import Probe, Unit

MAX_ENV_FILE = 1 * MIB
"""The largest env file read; a larger one is skipped with a warning."""
MAX_EXPANDED_TOTAL = 2 * MIB
"""All of one unit's expanded ``environment`` values together (and, separately, all of its
expanded command arguments): the kernel's default ARG_MAX, so that many keys that each
expand to just under MAX_EXPANSION cannot add up to gigabytes."""

log = structlog.get_logger("vastinit")

_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*")
_DOUBLE_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_DOUBLE_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def read_env_files(paths: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE pairs from ``paths`` in order (later files win).

    Env files are optional by contract: a missing or unreadable one is skipped; one that is
    not a regular file or is over MAX_ENV_FILE is skipped with a warning, never read (a FIFO
    or a device never blocks). A line that cannot be an environment variable (a NUL byte, a
    value over MAX_EXPANSION) is ignored with a warning.
    """
    env: dict[str, str] = {}
    for path in paths:
        try:
            data = read_bounded(path, MAX_ENV_FILE, "env file")
        except FileRefused as exc:
            log.warning("env file skipped", path=str(path), reason=str(exc))
            continue
        except OSError:
            continue  # missing or unreadable env files are optional by contract
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            match = _LINE.fullmatch(line)
            if match is None:
                continue
            value = _unquote(match.group(2))
            if "\0" in value:
                log.warning("env file line ignored", path=str(path), line=number, reason="NUL byte")
            elif byte_size(value) > MAX_EXPANSION:
                log.warning(
                    "env file line ignored",
                    path=str(path),
                    line=number,
                    reason=f"value over {format_size(MAX_EXPANSION)}",
                )
            else:
                env[match.group(1)] = value
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


ENVIRONMENT_ORIGIN = "the unit's [environment]"
SECRETS_ORIGIN = "the unit's secrets"
BASE_ORIGIN = "vastinit's environment"


def start_environment(
    unit: Unit,
    base: Mapping[str, str],
    secrets_from: Mapping[str, str] | None = None,
    origins: dict[str, str] | None = None,
) -> dict[str, str]:
    """``base`` (SECRET_VARIABLES dropped), plus the unit's ``secrets`` taken from
    ``secrets_from`` (vastinit's own environment), then ``unit.env_files`` re-read now, then
    ``unit.environment`` expanded.

    Synchronous and thread-safe (call it through ``anyio.to_thread``). Never returns a
    name or value that execve would refuse (NUL, ``=`` in a name): those are dropped.
    Raises ExpansionError (a ValueError) when an expansion passes MAX_EXPANSION, or all
    of the unit's expanded values together pass MAX_EXPANDED_TOTAL.

    ``origins``, when given, is filled with where each variable's value came from: an env
    file's path, ENVIRONMENT_ORIGIN, SECRETS_ORIGIN or BASE_ORIGIN (never a value).
    """
    where: dict[str, str] = {} if origins is None else origins
    env = {k: v for k, v in base.items() if k not in SECRET_VARIABLES and _settable(k, v)}
    where.update(dict.fromkeys(env, BASE_ORIGIN))
    source = os.environ if secrets_from is None else secrets_from
    for name in unit.secrets:
        if name in source:
            env[name] = source[name]
            where[name] = SECRETS_ORIGIN
    for index, path in enumerate(unit.env_files):
        # Each path sees what earlier files set, so "${WORKSPACE}/.env" can follow /etc/environment.
        real = _expand_field(f"env_files[{index}]", path, env, MAX_EXPANSION)
        found = read_env_files([real])
        for name in SECRET_VARIABLES.difference(unit.secrets):
            # /etc/environment on Vast carries the container's variables, tokens included:
            # withheld from a file as from vastinit's own environment.
            found.pop(name, None)
        env.update(found)
        where.update(dict.fromkeys(found, real))
    budget = _Budget("the expanded environment values", MAX_EXPANDED_TOTAL)
    for key, value in unit.environment.items():
        env[key] = budget.expand(f"environment.{key}", value, env)
        where[key] = ENVIRONMENT_ORIGIN
    return {k: v for k, v in env.items() if _settable(k, v)}


def _settable(key: str, value: str) -> bool:
    return bool(key) and "=" not in key and "\0" not in key and "\0" not in value


def _expand_field(what: str, text: str, env: Mapping[str, str], limit: int) -> str:
    try:
        result = expand(text, env, limit=limit)
    except ValueError as exc:
        raise ExpansionError(f"{what}: {exc}") from None
    if "\0" in result:
        raise ExpansionError(f"{what}: contains a NUL byte")
    return result


class _Budget:
    """MAX_EXPANSION per value and ``total`` for all of them, checked while expanding."""

    def __init__(self, what: str, total: int) -> None:
        self.what = what
        self.left = total
        self.total = total

    def expand(self, field: str, text: str, env: Mapping[str, str]) -> str:
        limit = min(MAX_EXPANSION, self.left)
        try:
            result = _expand_field(field, text, env, limit)
        except ExpansionError:
            if limit < MAX_EXPANSION:
                raise ExpansionError(
                    f"{field}: {self.what} of this unit add up to more than "
                    f"{format_size(self.total)}"
                ) from None
            raise
        self.left -= byte_size(result)
        return result


def resolve_unit(unit: Unit, env: Mapping[str, str]) -> Unit:
    """A copy of ``unit`` with command, working_dir, probe targets and log.file expanded.

    Raises ExpansionError (a ValueError) when a field expands past MAX_EXPANSION (the
    command's arguments together: MAX_EXPANDED_TOTAL) or would contain a NUL byte.
    """
    spec = unit.log
    if spec.file:
        spec = dataclasses.replace(
            spec, file=_expand_field("log.file", spec.file, env, MAX_EXPANSION)
        )
    if spec.stderr_file:
        spec = dataclasses.replace(
            spec,
            stderr_file=_expand_field("log.stderr_file", spec.stderr_file, env, MAX_EXPANSION),
        )
    argv = _Budget("the expanded command arguments", MAX_EXPANDED_TOTAL)
    return dataclasses.replace(
        unit,
        command=tuple(argv.expand(f"command[{i}]", arg, env) for i, arg in enumerate(unit.command)),
        working_dir=None
        if unit.working_dir is None
        else _expand_field("working_dir", unit.working_dir, env, MAX_EXPANSION),
        readiness=_resolve_probe("readiness", unit.readiness, env),
        liveness=_resolve_probe("liveness", unit.liveness, env),
        log=spec,
    )


def _resolve_probe(section: str, probe: Probe | None, env: Mapping[str, str]) -> Probe | None:
    if probe is None:
        return None
    field = f"{section}.{probe.kind.value}"
    if isinstance(probe.target, str):
        target: str | tuple[str, ...] = _expand_field(field, probe.target, env, MAX_EXPANSION)
    else:
        argv = _Budget("the expanded probe arguments", MAX_EXPANDED_TOTAL)
        target = tuple(argv.expand(f"{field}[{i}]", arg, env) for i, arg in enumerate(probe.target))
    return dataclasses.replace(probe, target=target)
