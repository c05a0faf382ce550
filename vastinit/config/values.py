"""Scalar value grammars of unit files: durations, sizes, signals. Each raises ValueError."""

from __future__ import annotations

import difflib
import math
import re
import signal

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", re.IGNORECASE)
_BYTES = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}

DURATION_HINT = 'a duration such as "500ms", "30s", "5m", "2h", "1h30m", or a number of seconds'
SIZE_HINT = 'a size such as "512KiB", "10MiB", "1GiB", "10MB", or a number of bytes'


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``: a duration string ("500ms", "1h30m") or a number of seconds."""
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return float(text)
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"bad duration {value!r}: expected {DURATION_HINT}")
        return sum(float(number) * _SECONDS[unit] for number, unit in parts)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"bad duration {value!r}: must be a finite number >= 0")
    return float(value)


def format_duration(seconds: float) -> str:
    """``90`` -> ``1m30s``; ``1.5`` -> ``1.5s``; ``0.5`` -> ``500ms``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60 and seconds != int(seconds):
        return f"{round(seconds, 3):g}s"  # 1.5s, not a rounded-up 2s
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return out + (f"{secs}s" if secs or not out else "")


def parse_size(value: str | int) -> int:
    """Bytes in ``value``: a size string ("10MiB" binary, "10MB" decimal) or a number of bytes."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"bad size {value!r}: must be >= 0")
        return value
    match = _SIZE.fullmatch(value.strip())
    if match is None or match.group(2).lower() not in _BYTES:
        raise ValueError(f"bad size {value!r}: expected {SIZE_HINT}")
    return int(float(match.group(1)) * _BYTES[match.group(2).lower()])


def parse_signal(value: str | int) -> int:
    """The signal number named by ``value``: "SIGTERM", "TERM", "term" or a number."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int):
        if not 1 <= value < signal.NSIG:
            raise ValueError(f"bad signal number {value} (valid: 1..{signal.NSIG - 1})")
        return value
    name = value.strip().upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    names = {n: int(s) for n, s in signal.Signals.__members__.items()}
    if name in names:
        return names[name]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else " (e.g. SIGTERM, SIGINT, SIGQUIT)"
    raise ValueError(f"unknown signal {value!r}{hint}")


def split_hostport(target: str) -> tuple[str, int]:
    """``"127.0.0.1:80"`` -> ("127.0.0.1", 80); ``"[::1]:80"`` -> ("::1", 80); ValueError."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:8000), got {target!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)
