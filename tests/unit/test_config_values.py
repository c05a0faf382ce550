"""Duration, size and signal grammars."""

from __future__ import annotations

import signal

import pytest

from vastinit.config.values import format_duration, parse_duration, parse_signal, parse_size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("30", 30.0),
        (" 10s ", 10.0),
        (30, 30.0),
        (0.25, 0.25),
    ],
)
def test_duration_parses_to_seconds(value: str | int | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "s", "1x", "1 s", "1h 30m", "-1s", "ms500", "1.2.3s", -1, float("inf")]
)
def test_bad_duration_raises(value: str | float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("10MiB", 10 * 1024**2),
        ("512KiB", 512 * 1024),
        ("1GiB", 1024**3),
        ("10MB", 10_000_000),
        ("1kb", 1000),
        ("100B", 100),
        ("1.5KiB", 1536),
        ("4096", 4096),
        (4096, 4096),
    ],
)
def test_size_parses_to_bytes(value: str | int, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["10 parsecs", "MiB", "10M", "", -1])
def test_bad_size_raises(value: str | int) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("SIGTERM", signal.SIGTERM),
        ("TERM", signal.SIGTERM),
        ("sigint", signal.SIGINT),
        ("QUIT", signal.SIGQUIT),
        (9, 9),
        ("15", 15),
    ],
)
def test_signal_name_or_number(value: str | int, number: int) -> None:
    assert parse_signal(value) == number


def test_unknown_signal_suggests_the_close_one() -> None:
    with pytest.raises(ValueError, match="did you mean 'SIGTERM'"):
        parse_signal("SIGTREM")


@pytest.mark.parametrize("value", [0, 1000, "SIGNOPE"])
def test_bad_signal_raises(value: str | int) -> None:
    with pytest.raises(ValueError, match="signal"):
        parse_signal(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.3, "300ms"),
        (0.999, "999ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (1.2344, "1.234s"),  # milliseconds at most
        (60.4, "1m"),  # past a minute, whole seconds
        (61, "1m1s"),
        (90, "1m30s"),
        (3600, "1h"),
        (3660, "1h1m"),
        (0, "0ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.0, 0.25, 1.0, 1.5, 59.0, 90.0, 3600.0, 5400.0, 86400.0])
def test_format_duration_reads_back_with_parse_duration(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
