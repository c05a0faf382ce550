"""SGLang's own server flags, per release, and argv read the way SGLang reads it.

The fixtures in ``sglang_flags/`` (``VERSION.json``) are written by ``tools/sglang_flags.py``
from the released package: every action of ``ServerArgs.add_cli_args`` (option strings,
dest, nargs, choices, value type). ``Flags.parser()`` rebuilds an ``argparse`` parser from
one, with SGLang's settings (unique-prefix abbreviations allowed, last value wins), so
vastinit reads ``SGLANG_ARGS`` with the same names, aliases and abbreviations SGLang will,
without importing SGLang (which imports torch).

The ``--config FILE`` YAML is turned into arguments as SGLang's ``ConfigArgumentMerger``
does (``server_args_config_parser.py``): each key becomes ``--KEY`` verbatim, a ``true``
boolean of a store_true flag the bare flag, ``false`` nothing, other booleans ``--KEY
true|false``, a list ``--KEY a b``, a mapping (0.5.23) JSON; those arguments go *before*
the command line's, so the command line wins.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from vastinit.stack.common import StackError

FIXTURE_DIR = Path(__file__).with_name("sglang_flags")

# First releases with a behaviour the launcher depends on (read from each release's source).
MODEL_TYPE_SINCE = "0.5.10"  # `sglang serve` strips --model-type (cli/serve.py)
READY_ENDPOINT_SINCE = "0.5.20"  # GET /ready (entrypoints/http_server.py)
# A mapping value in the --config YAML becomes JSON (utils/server_args_config_parser.py).
YAML_MAPPING_SINCE = "0.5.23"
# Before this, every boolean in the YAML was a bare flag when true (no store_true check).
YAML_STORE_TRUE_SINCE = "0.5.8"

_VERSION = re.compile(
    r"v?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|b|rc)(?P<pren>\d+))?"
    r"(?:[-_.]?post(?P<post>\d+))?"
    r"(?:[-_.]?dev(?P<dev>\d+))?"
    r"(?:\+[A-Za-z0-9.]+)?"
)


def version_key(text: str) -> tuple[Any, ...]:
    """A sort key for a PEP 440 version (the subset SGLang's releases use); ValueError if not."""
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a version: {text!r}")
    release = [int(p) for p in match["release"].split(".")]
    while len(release) < 4:
        release.append(0)
    # dev < pre-release < release < post-release
    if match["dev"] is not None and match["pre"] is None and match["post"] is None:
        pre: tuple[int, int] = (-2, int(match["dev"]))
    elif match["pre"] is not None:
        pre = ({"a": -1, "b": 0, "rc": 1}[match["pre"]] - 1, int(match["pren"]))
    else:
        pre = (2, 0)
    post = int(match["post"]) if match["post"] is not None else -1
    return (tuple(release), pre, post)


def at_least(version: str | None, minimum: str) -> bool:
    """Whether ``version`` is ``minimum`` or newer (False when unknown or unparsable)."""
    if version is None:
        return False
    try:
        return version_key(version) >= version_key(minimum)
    except ValueError:
        return False


def fixture_versions() -> list[str]:
    """The SGLang versions with a committed flag fixture, oldest first."""
    names = [p.stem for p in FIXTURE_DIR.glob("*.json")]
    return sorted(names, key=version_key)


class ArgvError(Exception):
    """argparse would refuse the arguments (its message, as SGLang would print it)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and exiting."""

    def error(self, message: str) -> Any:  # argparse's hook for every refusal
        raise ArgvError(message)

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise ArgvError(message or f"exit {status}")


@dataclass(frozen=True)
class Flags:
    """One SGLang release's server flags (a fixture)."""

    version: str
    allow_abbrev: bool
    actions: tuple[dict[str, Any], ...]

    def action_for(self, option: str) -> dict[str, Any] | None:
        """The action that owns the exact option string ``option`` (``--tp-size``), or None."""
        for action in self.actions:
            if option in action["option_strings"]:
                return action
        return None

    def dest(self, option: str) -> str | None:
        """The attribute name SGLang stores ``option`` under in this release."""
        action = self.action_for(option)
        return None if action is None else str(action["dest"])

    def has(self, option: str) -> bool:
        return self.action_for(option) is not None

    def store_true_dests(self) -> set[str]:
        return {a["dest"] for a in self.actions if a["nargs"] == 0 and a["action"] != "help"}

    def parser(self, *, suppress_defaults: bool = False) -> argparse.ArgumentParser:
        """An argparse parser that reads argv as this release's SGLang does.

        Values keep their text except ``int``/``float`` flags (so ``choices`` still apply);
        with ``suppress_defaults`` the namespace holds only what the arguments set.
        """
        parser = _Parser(
            prog="sglang serve",
            allow_abbrev=self.allow_abbrev,
            add_help=False,
            exit_on_error=False,
        )
        for action in self.actions:
            options = action["option_strings"]
            if not options:
                continue
            kwargs: dict[str, Any] = {"dest": action["dest"]}
            if suppress_defaults:
                kwargs["default"] = argparse.SUPPRESS
            nargs = action["nargs"]
            if action["action"] == "help":
                kwargs.update(action="store_true")
            elif nargs == 0:
                # store_true/false, BooleanOptionalAction, deprecated no-value flags: present or not
                kwargs.update(action="store_const", const=_flag_value(action, options))
            else:
                value_type = {"int": int, "float": float}.get(action["type"] or "")
                kwargs.update(action="store", nargs=nargs)
                if value_type is not None:
                    kwargs["type"] = value_type
                choices = action["choices"]
                if choices is not None and _choices_fit(choices, value_type):
                    kwargs["choices"] = choices
            parser.add_argument(*options, **kwargs)
        return parser

    def parse(
        self, argv: Sequence[str], *, known_only: bool = False
    ) -> tuple[dict[str, Any], list[str]]:
        """What ``argv`` sets (dest -> value, defaults left out) and the arguments not known.

        ``known_only``: unknown arguments are returned instead of refused. ArgvError for what
        argparse refuses (an ambiguous abbreviation, a missing value, a bad choice...).
        """
        parser = self.parser(suppress_defaults=True)
        try:
            if known_only:
                namespace, unknown = parser.parse_known_args(list(argv))
            else:
                namespace, unknown = parser.parse_args(list(argv)), []
        except argparse.ArgumentError as exc:  # exit_on_error=False: a bad value lands here
            raise ArgvError(str(exc)) from None
        return vars(namespace), list(unknown)


def _flag_value(action: dict[str, Any], options: list[str]) -> Any:
    # Only presence matters to the launcher; keep store_false's meaning anyway.
    return action["action"] != "store_false"


def _choices_fit(choices: list[Any], value_type: type | None) -> bool:
    if value_type is None:
        return all(isinstance(c, str) for c in choices)
    return all(isinstance(c, value_type) and not isinstance(c, bool) for c in choices)


@cache
def load_flags(version: str) -> Flags:
    """The committed fixture of ``version``; StackError if there is none."""
    path = FIXTURE_DIR / f"{version}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StackError(f"{path}: cannot read the SGLang flag fixture: {exc}") from None
    return Flags(
        version=str(data["sglang"]),
        allow_abbrev=bool(data.get("allow_abbrev", True)),
        actions=tuple(data["actions"]),
    )


@dataclass(frozen=True)
class FlagChoice:
    """Which fixture reads this SGLang's argv, and whether it is that very release."""

    flags: Flags
    exact: bool
    note: str | None  # why it is not exact, for a warning


def choose_flags(installed: str | None) -> FlagChoice:
    """The fixture of ``installed``; else the nearest older one (the oldest for an older
    or unknown release, the newest when the version cannot be read), with a note."""
    versions = fixture_versions()
    if not versions:
        raise StackError(f"{FIXTURE_DIR}: no SGLang flag fixture is installed")
    if installed is not None and installed in versions:
        return FlagChoice(load_flags(installed), True, None)
    if installed is None:
        newest = versions[-1]
        note = f"SGLang's version is unknown: its flags are read as {newest}'s"
        return FlagChoice(load_flags(newest), False, note)
    try:
        key = version_key(installed)
    except ValueError:
        newest = versions[-1]
        note = f"SGLang {installed!r} is not a version vastinit can read: flags read as {newest}'s"
        return FlagChoice(load_flags(newest), False, note)
    older = [v for v in versions if version_key(v) <= key]
    chosen = older[-1] if older else versions[0]
    side = "nearest older" if older else "oldest"
    note = f"no flag list for SGLang {installed}: read with {chosen}'s ({side} known release)"
    return FlagChoice(load_flags(chosen), False, note)


# ---- the --config YAML ------------------------------------------------------------------------


def config_arguments(path: str, flags: Flags) -> list[str]:
    """The arguments SGLang makes of the YAML file at ``path``; StackError where SGLang fails."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".yaml", ".yml"):
        raise StackError(f"--config {path}: SGLang wants a .yaml or .yml file, got {suffix!r}")
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        raise StackError(f"--config {path}: PyYAML is not installed") from None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StackError(f"--config {path}: the file does not exist") from None
    except OSError as exc:
        raise StackError(f"--config {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StackError(f"--config {path}: not valid YAML: {_one_line(str(exc))}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise StackError(f"--config {path}: SGLang wants a mapping at the top level")
    store_true = {d.replace("-", "_") for d in flags.store_true_dests()}
    bools_as_flags = not at_least(flags.version, YAML_STORE_TRUE_SINCE)
    args: list[str] = []
    for key, value in data.items():
        name = f"--{key}"
        if isinstance(value, bool):
            if bools_as_flags or str(key).replace("-", "_") in store_true:
                if value:
                    args.append(name)
            else:
                args += [name, str(value).lower()]
        elif isinstance(value, list):
            if value:
                args += [name, *(str(item) for item in value)]
        elif isinstance(value, dict) and at_least(flags.version, YAML_MAPPING_SINCE):
            args += [name, json.dumps(value)]
        else:
            args += [name, str(value)]
    return args


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---- the installed release -------------------------------------------------------------------

_VERSION_SCRIPT = (
    "import importlib.metadata as m\n"
    "try:\n    print(m.version('sglang'))\n"
    "except m.PackageNotFoundError:\n    pass\n"
)


def installed_version(python: str | None, *, timeout: float = 15.0) -> str | None:
    """The version of the ``sglang`` distribution ``python`` would import, read from its
    metadata (``importlib.metadata``: SGLang itself, and torch, are not imported); None if
    there is none or it cannot be asked."""
    if python is None:
        return None
    try:
        result = subprocess.run(
            [python, "-c", _VERSION_SCRIPT],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = result.stdout.strip()
    return text if result.returncode == 0 and text else None


def script_interpreter(path: str) -> str | None:
    """The interpreter a ``#!`` script names (``/usr/bin/env python3`` -> ``python3``)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(4096)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode(errors="replace").split()
    if not words:
        return None
    if Path(words[0]).name == "env":
        rest = [w for w in words[1:] if not w.startswith("-")]
        return rest[0] if rest else None
    return words[0]
