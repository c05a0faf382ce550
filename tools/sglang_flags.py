#!/usr/bin/env python3
"""Write SGLang's server flags as JSON: the fixture ``vastinit launch sglang`` reads argv with.

    python3 tools/sglang_flags.py [--sglang-path DIR] [--output FILE]

Imports ``sglang.srt.server_args`` from the installed ``sglang`` (or from ``--sglang-path``,
e.g. a ``pip install --no-deps --target DIR sglang==X`` directory), calls
``ServerArgs.add_cli_args`` on a fresh ``argparse.ArgumentParser()`` (as SGLang's own
``prepare_server_args`` does) and dumps every action: option strings, dest, nargs, choices,
the kind of action (store, store_true, store_false, ...), the default's type, the value type,
whether it is required, and whether the parser accepts abbreviations.

The torch stub. ``server_args`` imports torch, triton and a dozen other heavy packages at
module level (reference: sglang-ops.md §5), but parsing needs none of them: no GPU, no
kernel, no model. A meta-path finder placed *first* on ``sys.meta_path`` answers for
every module outside the standard library, ``sglang`` and ``msgspec`` (installed or not:
the output must not depend on what else the machine has), with a stub module whose every
attribute is a stub class (callable, subscriptable, usable as a base class or decorator;
``torch.cuda.is_available()`` is a stub: nothing here depends on its value). Flags whose
choices are computed from a stubbed package would come out short; ``--no-stub`` turns the
stub off on a machine with torch and sglang fully installed (the GPU box) to compare. The
output names the stubbed packages.

CI never runs this: the fixtures it wrote are committed (vastinit/stack/sglang_flags/,
also reachable as tests/data/sglang/). Regenerate on each new SGLang release, e.g.:

    pip install --no-deps --target /tmp/sgl-0.5.23 sglang==0.5.23 msgspec
    python3 tools/sglang_flags.py --sglang-path /tmp/sgl-0.5.23 \
        --output vastinit/stack/sglang_flags/0.5.23.json
"""

from __future__ import annotations

import abc
import argparse
import importlib.abc
import importlib.machinery
import importlib.metadata
import json
import sys
import types
from typing import Any

STUBBED: list[str] = []
# Imported for real: sglang itself, PyYAML (the --config merger reads YAML with it) and
# msgspec (small; 0.5.23 declares its flags as msgspec structs, which a stub cannot stand
# in for). Install msgspec next to sglang: ``pip install --target DIR msgspec``.
_KEEP_REAL = ("sglang", "msgspec", "yaml")


# Dunders Python's own protocols probe stay missing; these few are library attributes that
# sglang's import-time patches read from stubbed classes (transformers' PretrainedConfig).
_DUNDERS = frozenset({"__class_validators__"})


class _StubMeta(abc.ABCMeta):  # ABCMeta: stubs mix with ABC bases (`nn.Module, ABC`)
    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> Any:
        return super().__new__(mcs, name, bases, ns)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") and name.endswith("__") and name not in _DUNDERS:
            raise AttributeError(name)
        return _stub_class(f"{cls.__name__}.{name}")

    def __getitem__(cls, item: Any) -> Any:
        return cls

    def register(cls, *args: Any, **kwargs: Any) -> Any:  # ``AutoProcessor.register(a, b)``
        return args[0] if args else cls

    def __or__(cls, other: Any) -> Any:
        return cls

    def __ror__(cls, other: Any) -> Any:
        return cls

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        # A decorator (``@torch.compile``, ``@triton.jit``) returns what it decorates.
        if len(args) == 1 and not kwargs and isinstance(args[0], types.FunctionType):
            return args[0]
        return super().__call__()

    def __iter__(cls) -> Any:
        return iter(())

    def __bool__(cls) -> bool:
        return False

    def __int__(cls) -> int:
        return 0

    def __index__(cls) -> int:
        return 0

    def __float__(cls) -> float:
        return 0.0

    def __lt__(cls, other: Any) -> bool:
        return False

    __le__ = __gt__ = __ge__ = __lt__


class _PlainStub(metaclass=_StubMeta):
    """A stub value or base class; a plain object, so it mixes with real classes as a base
    (``class X(torch.nn.Module, StubBase)``) when the real torch is imported."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __init_subclass__(cls, **kwargs: Any) -> None:  # ``class X(TypedDictStub, total=False)``
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _BASE[0]()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _BASE[0]()


class _Stub(str, _PlainStub):
    """With torch stubbed too: a str, so a stub value also works where a name is expected
    (``getattr(torch, device)`` with ``device`` from a stubbed triton)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return str.__new__(cls, "stub")


_BASE: list[type] = [_Stub]


def _stub_class(name: str) -> type:
    return _StubMeta(name.rsplit(".", 1)[-1], (_BASE[0],), {"__module__": "stub"})


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        value = _stub_class(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []  # a package: its submodules are stubbed too
        module.__version__ = "0.0.0+stub"
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _StubFinder(importlib.abc.MetaPathFinder):
    """First on sys.meta_path: every module outside the standard library and sglang is a stub,
    installed or not, so the output does not depend on what else this machine has. Last on
    it (``missing_only``): only what no other finder finds."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        top = fullname.split(".")[0]
        if top in _KEEP_REAL or top in sys.stdlib_module_names or top.startswith("_"):
            return None
        STUBBED.append(fullname)
        return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)


# With ``missing_only``, these are stubbed even when installed: real ones would meet stubbed
# types (pydantic cannot build a schema for a stub class) and fail at import.
_ALWAYS_STUB = ("pydantic", "fastapi", "starlette", "transformers", "openai", "huggingface_hub")


class _ForcedStubFinder(_StubFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname.split(".")[0] not in _ALWAYS_STUB:
            return None
        return super().find_spec(fullname, path, target)


def install_stub(*, missing_only: bool = False) -> None:
    """Put the stub finder on ``sys.meta_path``: first (everything stubbed), or last (only
    what is not installed, plus ``_ALWAYS_STUB``)."""
    if missing_only:
        import importlib.util

        # Real torch: stub classes must mix with its classes as bases. Stubbed torch: stub
        # values must also be strings (see _Stub).
        _BASE[0] = _PlainStub if importlib.util.find_spec("torch") is not None else _Stub
        sys.meta_path.insert(0, _ForcedStubFinder())
        sys.meta_path.append(_StubFinder())
    else:
        sys.meta_path.insert(0, _StubFinder())


def describe(action: argparse.Action) -> dict[str, Any]:
    kind = type(action).__name__
    known = {
        "_StoreAction": "store",
        "_StoreTrueAction": "store_true",
        "_StoreFalseAction": "store_false",
        "_StoreConstAction": "store_const",
        "_AppendAction": "append",
        "_AppendConstAction": "append_const",
        "_CountAction": "count",
        "_HelpAction": "help",
        "_VersionAction": "version",
        "BooleanOptionalAction": "boolean_optional",
    }
    value_type = action.type
    if value_type is None:
        type_name = None
    elif value_type in (int, float, str):
        type_name = value_type.__name__
    else:
        type_name = getattr(value_type, "__name__", type(value_type).__name__)
    choices = None
    if action.choices is not None:
        choices = [c if isinstance(c, (int, float, str, bool)) else str(c) for c in action.choices]
        # Sorted: a set's order changes with hash seeds, a registry's with import order;
        # argparse only asks whether a value is in them.
        choices.sort(key=str)
    return {
        "option_strings": list(action.option_strings),
        "dest": action.dest,
        "action": known.get(kind, kind),
        "nargs": action.nargs,
        "choices": choices,
        "type": type_name,
        "default_type": type(action.default).__name__,
        "required": bool(action.required),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sglang-path", help="a directory holding the sglang package")
    p.add_argument("--output", help="write here (default: stdout)")
    p.add_argument("--no-stub", action="store_true", help="import the real torch & co.")
    p.add_argument(
        "--stub-missing",
        action="store_true",
        help="stub only what is not installed (torch real on a GPU box), not everything",
    )
    args = p.parse_args(argv)
    if args.sglang_path:
        sys.path.insert(0, args.sglang_path)
    if args.stub_missing:
        install_stub(missing_only=True)
    elif not args.no_stub:
        install_stub()
    from sglang.srt.server_args import ServerArgs  # type: ignore[import-not-found]

    version = _version(args.sglang_path)
    parser = argparse.ArgumentParser()  # as prepare_server_args: abbreviations allowed
    ServerArgs.add_cli_args(parser)
    data = {
        "sglang": version,
        "generator": "tools/sglang_flags.py",
        "python": ".".join(map(str, sys.version_info[:3])),
        "allow_abbrev": parser.allow_abbrev,
        "stubbed": sorted({m.split(".")[0] for m in STUBBED}),
        "actions": [describe(a) for a in parser._actions],
    }
    text = _dumps(data)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _dumps(data: dict[str, Any]) -> str:
    """JSON with one action per line: a new release's fixture diffs line by line."""
    head = {k: v for k, v in data.items() if k != "actions"}
    lines = [json.dumps(head)[:-1] + ', "actions": [']
    lines += [" " + json.dumps(a) + "," for a in data["actions"]]
    lines[-1] = lines[-1].rstrip(",")
    return "\n".join([*lines, "]}"]) + "\n"


def _version(path: str | None) -> str:
    try:
        from sglang.version import __version__  # type: ignore[import-not-found]

        return str(__version__)
    except Exception:
        pass
    dists = importlib.metadata.distributions(path=[path]) if path else None
    for dist in dists or ():
        if dist.metadata["Name"] == "sglang":
            return str(dist.version)
    return importlib.metadata.version("sglang")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
