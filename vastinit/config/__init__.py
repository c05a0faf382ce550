"""Unit files -> frozen ``Unit`` specs: search path, drop-ins, validation, ``${VAR}`` expansion."""

from __future__ import annotations

from vastinit.config.environ import read_env_files, resolve_unit, start_environment
from vastinit.config.expand import expand
from vastinit.config.load import MAX_TRANSIENT_UNITS, load_transient, load_units, transient_source

__all__ = [
    "MAX_TRANSIENT_UNITS",
    "expand",
    "load_transient",
    "load_units",
    "read_env_files",
    "resolve_unit",
    "start_environment",
    "transient_source",
]
