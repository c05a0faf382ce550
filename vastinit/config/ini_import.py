"""``vastinit import [FILE|DIR]...``: supervisord programs written out as TOML unit files.

One ``NAME.toml`` per program (per process of a ``numprocs`` program), holding exactly the
table that loading the INI file builds (vastinit.config.ini), so that loading the written
TOML gives the same unit as loading the INI file; comments say where a mapping is
approximate. Problems are printed as ``FILE:LINE: unit NAME: message`` (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import tomli_w

from vastinit.config import ini
from vastinit.config.validate import dotted
from vastinit.errors import ConfigProblem


def render(program: ini.Program) -> str:
    """The TOML unit file text of ``program``, with its notes as comments on top."""
    head = [f"# Imported by `vastinit import` from {program.file}:{program.line}."]
    for path, note in sorted(program.notes.items(), key=lambda kv: dotted(kv[0])):
        head.append(f"# approximate: {dotted(path)}: {note}")
    return "\n".join(head) + "\n\n" + tomli_w.dumps(program.table)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="vastinit import",
        description="Write supervisord [program:x] sections as vastinit TOML unit files.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        help="INI files or directories of *.conf/*.ini (default: /etc/supervisor's)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, default=Path("."), help="where to write (default: .)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing unit files")
    args = parser.parse_args(argv)
    files: list[Path] = []
    for path in args.paths:
        files += ini.files_in([path]) if path.is_dir() else [path]
    if not args.paths:
        base = ini.supervisor_dir()
        files = [base / "supervisord.conf"] if (base / "supervisord.conf").is_file() else []
        files += sorted((base / "conf.d").glob("*.conf"))
    problems: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    programs = ini.read_programs(
        files,
        lambda f, n, u, m: problems.append(ConfigProblem(str(f), n, u, m)),
        lambda f, n, u, m: warnings.append(ConfigProblem(str(f), n, u, f"warning: {m}")),
    )
    for item in [*warnings, *problems]:
        print(item, file=sys.stderr)
    if problems:
        print(f"vastinit import: {len(problems)} problem(s); nothing written", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    for program in programs:
        target = args.output / f"{program.name}.toml"
        if target.exists() and not args.force:
            print(f"vastinit import: {target} exists (--force overwrites)", file=sys.stderr)
            return 1
        target.write_text(render(program))
        print(f"{target}")
    return 0
