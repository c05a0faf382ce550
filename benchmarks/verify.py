"""Checks the flood's output: every numbered line once, in order, whole.

A flood line is ``%010d``, a space, 88 ``x`` and a newline (tests/programs/flood.c).  The
checks run after the measurement, at C speed where the output is intact (a byte compare, a
list compare) and line by line only to explain a difference.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

LINE = 100
_X = b"x" * 88


@lru_cache(maxsize=2)
def numbers(n: int) -> tuple[bytes, ...]:
    """``b"%010d" % i`` for i in 0..n-1."""
    return tuple(b"%010d" % i for i in range(n))


@lru_cache(maxsize=2)
def expected(n: int) -> bytes:
    """What a unit's log file must hold after ``flood n``."""
    tail = b" " + _X + b"\n"
    return tail.join(numbers(n)) + tail


def sequence_faults(seqs: list[int], n: int) -> dict[str, int]:
    """Lost, reordered and duplicated numbers in one unit's sequence of 0..n-1."""
    seen = bytearray(n)
    high = -1
    reordered = duplicated = 0
    for s in seqs:
        if not 0 <= s < n or seen[s]:
            duplicated += 1
            continue
        seen[s] = 1
        if s < high:
            reordered += 1
        else:
            high = s
    return {"lost": n - seen.count(1), "reordered": reordered, "duplicated": duplicated}


_FILE_LINE = re.compile(rb"^(\d{10}) x{88}$", re.M)


def check_file(data: bytes, n: int) -> dict[str, int]:
    """Faults in a unit's log file: lost/reordered/duplicated numbers and malformed lines."""
    if data == expected(n):
        return {"lost": 0, "reordered": 0, "duplicated": 0, "malformed": 0}
    found = _FILE_LINE.findall(data)
    faults = sequence_faults([int(x) for x in found], n)
    faults["malformed"] = data.count(b"\n") + (not data.endswith(b"\n")) - len(found)
    return faults


_PREFIXED = re.compile(rb"^(\w+) *\| (\d{10}) x{88}$", re.M)
_EVENT = re.compile(rb"^vastinit *\| (.*)$", re.M)
_DROPPED = re.compile(rb"dropped (\d+) lines")


def check_prefixed_stdout(data: bytes, units: list[str], n: int) -> dict[str, int]:
    """Faults in vastinit's text-format stdout (``NAME | line``), per unit, summed.

    ``spliced`` counts lines that are neither a whole unit line nor a vastinit event;
    ``announced`` the lines vastinit said it dropped (a full stdout queue), which are also
    counted in ``lost``.
    """
    per_unit: dict[bytes, list[bytes]] = {u.encode(): [] for u in units}
    matched = 0
    for name, num in _PREFIXED.findall(data):
        if name in per_unit:
            per_unit[name].append(num)
            matched += 1
    events = _EVENT.findall(data)
    announced = sum(int(m) for e in events for m in _DROPPED.findall(e))
    total_lines = data.count(b"\n") + (bool(data) and not data.endswith(b"\n"))
    out = {"spliced": total_lines - matched - len(events), "announced": announced}
    out.update(lost=0, reordered=0, duplicated=0)
    want = list(numbers(n))
    for nums in per_unit.values():
        if nums == want:
            continue
        for key, value in sequence_faults([int(x) for x in nums], n).items():
            out[key] += value
    return out


_SD_LOG = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]{4} ", re.M)
_BLANK = re.compile(rb"^\n", re.M)


def check_raw_stdout(data: bytes, units: int, n: int) -> dict[str, int]:
    """Faults in supervisord's stdout: raw lines of ``units`` floods, interleaved.

    The lines carry no unit name, so order cannot be checked per unit: each number must
    appear exactly ``units`` times (``lost``/``duplicated``; a line cut in pieces is lost as
    a whole).  ``spliced`` counts the other lines, except supervisord's own log lines and
    blank lines: pieces of flood lines, cut by a chunk boundary or mixed with another
    writer's bytes.
    """
    found = _FILE_LINE.findall(data)
    total_lines = data.count(b"\n") + (bool(data) and not data.endswith(b"\n"))
    total_lines -= len(_SD_LOG.findall(data)) + len(_BLANK.findall(data))
    counts = Counter(found)
    lost = duplicated = 0
    for num in numbers(n):
        c = counts.pop(num, 0)
        if c < units:
            lost += units - c
        else:
            duplicated += c - units
    duplicated += sum(counts.values())  # numbers out of range
    return {"spliced": total_lines - len(found), "lost": lost, "duplicated": duplicated}
