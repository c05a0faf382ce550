"""``vastinit check``: validate the unit files and print the start order, or every problem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vastinit import graph
from vastinit.config.load import load_units
from vastinit.errors import ConfigError, ConfigProblem, printable
from vastinit.paths import default_unit_dirs


def main(argv: list[str]) -> int:
    """Exit 0 printing the start layers, or 2 printing every problem to stderr."""
    parser = argparse.ArgumentParser(
        prog="vastinit check",
        description="Validate unit files and print the order in which units start.",
    )
    parser.add_argument(
        "--units",
        metavar="DIR",
        type=Path,
        action="append",
        help="a unit directory (repeat for a search path; default: $VASTINIT_UNITS or the "
        "built-in path)",
    )
    args = parser.parse_args(argv)
    dirs: list[Path] = args.units or default_unit_dirs()
    if args.units:
        for directory in dirs:
            if not directory.is_dir():
                note = printable(f"vastinit check: note: {directory} is not a directory")
                print(note, file=sys.stderr)
    warnings: list[ConfigProblem] = []
    try:
        units = load_units(dirs, warnings=warnings)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        files = len({p.file for p in exc.problems})
        print(
            f"vastinit check: {count} problem{'s' * (count != 1)} "
            f"in {files} file{'s' * (files != 1)}",
            file=sys.stderr,
        )
        return 2
    for warning in warnings:
        print(warning, file=sys.stderr)
    if not units:
        print(printable(f"no units found in {', '.join(str(d) for d in dirs)}"))
        return 0
    enabled = {name: unit for name, unit in units.items() if unit.enabled}
    for index, layer in enumerate(graph.start_layers(enabled)):
        print(f"layer {index}: {', '.join(layer)}")
    disabled = sorted(set(units) - set(enabled))
    if disabled:
        print(f"disabled: {', '.join(disabled)}")
    for name, unit in sorted(enabled.items()):
        for dep in sorted(d for d in unit.depends_on if d in disabled):
            print(f"note: {name} depends on {dep}, which is disabled: {name} will be skipped")
    return 0
