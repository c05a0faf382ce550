"""SGLang's argument handling, per release, rebuilt from the committed flag fixtures (tests only).

Two uses:

- ``sglang_parse(version, argv)``: what SGLang ``version``'s ``prepare_server_args`` makes of
  ``argv`` (the server's arguments, after ``sglang serve``): the ``--config`` YAML merged as
  its ``ConfigArgumentMerger`` does (only for the exact token ``--config``; the YAML's
  arguments first, so the command line wins), then an ``argparse`` parser rebuilt from the
  fixture (abbreviations allowed, last value wins). Independent of vastinit's own reading
  (vastinit/stack/sglang_flags.py), so the tests do not grade the launcher with itself.
- ``install_fake_sglang(dir, version)``: a fake installed ``sglang`` of that version, with no
  model behind it: an ``sglang-VERSION.dist-info`` (so ``importlib.metadata`` reports it), an
  ``sglang`` package whose ``python -m sglang.launch_server`` and ``bin/sglang serve``
  dispatch as that release does (``sglang serve`` strips ``--model-type`` only from 0.5.10)
  and then print what the parser made of the arguments (a ``STANDIN {json}`` line), or fail
  as SGLang would (argparse's message, exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "data" / "sglang"
VERSIONS = ("0.5.6.post2", "0.5.8", "0.5.23")


def fixture(version: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{version}.json").read_text())
    return data


def rebuilt_parser(version: str) -> argparse.ArgumentParser:
    """SGLang ``version``'s parser: every flag of the fixture, values as text except int/float."""
    data = fixture(version)
    parser = argparse.ArgumentParser(allow_abbrev=data["allow_abbrev"], add_help=False)
    for action in data["actions"]:
        options = action["option_strings"]
        if not options or action["action"] == "help":
            continue
        if action["nargs"] == 0:
            parser.add_argument(*options, dest=action["dest"], action="store_true")
            continue
        kwargs: dict[str, Any] = {"dest": action["dest"], "nargs": action["nargs"]}
        kind = {"int": int, "float": float}.get(action["type"] or "")
        if kind is not None:
            kwargs["type"] = kind
        parser.add_argument(*options, **kwargs)
    return parser


def dest(version: str, option: str) -> str:
    for action in fixture(version)["actions"]:
        if option in action["option_strings"]:
            return str(action["dest"])
    raise KeyError(option)


def merge_config(version: str, argv: list[str]) -> list[str]:
    """SGLang's ConfigArgumentMerger: only the exact token ``--config`` reads the YAML."""
    import yaml

    if "--config" not in argv:
        return argv
    if argv.count("--config") > 1:
        raise ValueError("Multiple config files specified! Only one allowed.")
    index = argv.index("--config")
    data = yaml.safe_load(Path(argv[index + 1]).read_text()) or {}
    store_true = {
        a["dest"] for a in fixture(version)["actions"] if a["nargs"] == 0 and a["option_strings"]
    }
    config_args: list[str] = []
    for key, value in data.items():
        if isinstance(value, bool):
            if version == "0.5.6.post2" or key.replace("-", "_") in store_true:
                config_args += [f"--{key}"] if value else []
            else:
                config_args += [f"--{key}", str(value).lower()]
        elif isinstance(value, list):
            config_args += [f"--{key}", *map(str, value)] if value else []
        else:
            config_args += [f"--{key}", str(value)]
    return config_args + argv[:index] + argv[index + 2 :]


def sglang_parse(version: str, argv: list[str]) -> dict[str, Any]:
    """What SGLang ``version`` makes of the server arguments ``argv`` (SystemExit if it
    refuses them): model path, tp size, host, port, the --config it merged, log level."""
    merged = merge_config(version, argv)
    merged_from = argv[argv.index("--config") + 1] if "--config" in argv else None
    namespace = vars(rebuilt_parser(version).parse_args(merged))
    return {
        "model_path": namespace[dest(version, "--model-path")],
        "tp_size": namespace[dest(version, "--tp-size")] or 1,
        "host": namespace[dest(version, "--host")],
        "port": namespace[dest(version, "--port")],
        # a --config SGLang merged the YAML of, and one it kept as a plain (ignored) value
        "merged": merged_from,
        "config": namespace[dest(version, "--config")],
        "log_level": namespace[dest(version, "--log-level")],
        "api_key": namespace[dest(version, "--api-key")],
    }


_STANDIN = '''\
"""A fake SGLang {version}: parses like it (tests/sglang_standin.py), serves nothing."""
import json
import sys

sys.path.insert(0, {tests!r})
from sglang_standin import sglang_parse

VERSION = {version!r}
PARSES_AS = {parses_as!r}  # the fixture its parser is rebuilt from
MODEL_TYPE_SINCE = (0, 5, 10)


def _release():
    return tuple(int(p) for p in VERSION.split(".post")[0].split("."))


def report(entry, argv):
    try:
        seen = sglang_parse(PARSES_AS, argv)
    except SystemExit as exc:
        return exc.code
    seen.update(entry=entry, version=VERSION, argv=argv)
    print("STANDIN " + json.dumps(seen), flush=True)
    return 0


def serve(argv):
    assert argv[:1] == ["serve"], argv
    argv = argv[1:]
    if _release() >= MODEL_TYPE_SINCE:  # cli/serve.py: _extract_model_type_override
        out, i = [], 0
        while i < len(argv):
            if argv[i] == "--model-type":
                i += 2
                continue
            if argv[i].startswith("--model-type="):
                i += 1
                continue
            out.append(argv[i])
            i += 1
        argv = out
    return report("sglang serve", argv)
'''


def install_fake_sglang(
    root: Path, version: str, parses_as: str | None = None
) -> tuple[Path, Path]:
    """A fake installed SGLang ``version`` under ``root``: (site dir for PYTHONPATH, bin dir).
    It parses with ``parses_as``'s fixture (default: its own)."""
    site, bin_dir = root / "site", root / "bin"
    package = site / "sglang"
    package.mkdir(parents=True)
    bin_dir.mkdir(parents=True)
    dist = site / f"sglang-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: sglang\nVersion: {version}\n")
    tests = str(Path(__file__).parent)
    (package / "__init__.py").write_text("")
    (package / "_standin.py").write_text(
        _STANDIN.format(version=version, parses_as=parses_as or version, tests=tests)
    )
    (package / "launch_server.py").write_text(
        textwrap.dedent(
            """\
            import sys
            from sglang._standin import report
            if __name__ == "__main__":
                sys.exit(report("python -m sglang.launch_server", sys.argv[1:]))
            """
        )
    )
    script = bin_dir / "sglang"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from sglang._standin import serve\n"
        "sys.exit(serve(sys.argv[1:]))\n"
    )
    script.chmod(0o755)
    return site, bin_dir
