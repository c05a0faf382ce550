"""The unit log file: appends, size rotation with `keep`, and I/O errors that never raise."""

from __future__ import annotations

import os
from pathlib import Path

from vastinit.logs.filesink import FileSink


def lines(start: int, count: int) -> bytes:
    """``count`` 10-byte lines numbered from ``start``."""
    return b"".join(b"line %04d\n" % i for i in range(start, start + count))


def test_lines_are_appended_to_the_file(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "sub" / "app.log", 1 << 20, 3)
    sink.write(lines(0, 5))
    sink.write(lines(5, 5))
    sink.close()
    assert (tmp_path / "sub" / "app.log").read_bytes() == lines(0, 10)
    assert sink.errors == 0


def test_existing_file_is_appended_to_not_truncated(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"old\n")
    sink = FileSink(path, 1 << 20, 3)
    sink.write(b"new\n")
    sink.close()
    assert path.read_bytes() == b"old\nnew\n"


def test_rotation_keeps_newest_in_dot_1_and_at_most_keep_files(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    sink = FileSink(path, 100, 2)  # 10 lines of 10 bytes per file
    for i in range(0, 50, 3):  # 17 chunks of 3 lines (the last of 2): 50 lines
        sink.write(lines(i, min(3, 50 - i)))
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.log", "app.log.1", "app.log.2"]
    # Files are filled up to max_size at line boundaries: every rotated file holds 10 lines.
    assert (tmp_path / "app.log.2").read_bytes() == lines(30, 10)
    assert (tmp_path / "app.log.1").read_bytes() == lines(40, 10)
    assert path.read_bytes() == b""


def test_a_chunk_bigger_than_max_size_is_spread_over_files(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    sink = FileSink(path, 100, 5)
    sink.write(lines(0, 35))
    sink.close()
    assert path.with_name("app.log.3").read_bytes() == lines(0, 10)
    assert path.with_name("app.log.2").read_bytes() == lines(10, 10)
    assert path.with_name("app.log.1").read_bytes() == lines(20, 10)
    assert path.read_bytes() == lines(30, 5)


def test_a_line_longer_than_max_size_gets_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    sink = FileSink(path, 100, 3)
    sink.write(b"short\n" + b"L" * 300 + b"\nnext\n")
    sink.close()
    assert path.with_name("app.log.2").read_bytes() == b"short\n"
    assert path.with_name("app.log.1").read_bytes() == b"L" * 300 + b"\n"
    assert path.read_bytes() == b"next\n"


def test_keep_zero_discards_the_full_file(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    sink = FileSink(path, 100, 0)
    sink.write(lines(0, 25))
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == ["app.log"]
    assert path.read_bytes() == lines(20, 5)


def test_disk_full_counts_errors_and_lost_lines_without_raising() -> None:
    sink = FileSink(Path("/dev/full"), 10, 3)  # ENOSPC on every write; a device: never rotated
    sink.write(lines(0, 4))
    assert sink.flush()
    sink.write(lines(4, 6))
    sink.close()
    assert sink.errors == 2
    assert sink.lost_lines == 10
    assert Path("/dev/full").exists()


def test_failed_open_is_not_retried_on_every_chunk(tmp_path: Path) -> None:
    blocker = tmp_path / "dir"
    blocker.write_text("a file where the log directory should be")
    sink = FileSink(blocker / "app.log", 1 << 20, 3, reopen_interval=3600)
    sink.write(b"lost\n")
    assert sink.flush()
    blocker.unlink()
    sink.write(b"lost too: the next try is an hour away\n")
    assert sink.flush()
    assert (sink.errors, sink.lost_lines) == (1, 2)
    assert not (blocker / "app.log").exists()


def test_unopenable_file_is_retried_and_recovers(tmp_path: Path) -> None:
    blocker = tmp_path / "dir"
    blocker.write_text("a file where the log directory should be")
    path = blocker / "app.log"
    sink = FileSink(path, 1 << 20, 3, reopen_interval=0)
    sink.write(b"lost\n")
    assert sink.flush()
    assert (sink.errors, sink.lost_lines) == (1, 1)
    blocker.unlink()
    sink.write(b"kept\n")
    sink.close()
    # The first line written after the loss says what is missing there.
    notice, kept = path.read_bytes().splitlines()
    assert notice.startswith(b"vastinit: 1 lines lost here (") and kept == b"kept"


def test_bad_descriptor_is_reopened_on_a_later_chunk(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    sink = FileSink(path, 1 << 20, 3)
    sink.write(b"one\n")
    assert sink.flush()
    os.close(sink._fd)  # the fd goes bad under the sink (EBADF)
    sink.write(b"two\n")
    assert sink.flush()
    sink.write(b"three\n")
    sink.close()
    assert sink.errors == 1 and sink.lost_lines == 1
    assert path.read_bytes() == b"one\nvastinit: 1 lines lost here (Bad file descriptor)\nthree\n"


def test_failed_rotation_keeps_writing_to_the_current_file(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    (tmp_path / "app.log.1" / "occupied").mkdir(parents=True)  # rename onto it fails, even as root
    sink = FileSink(path, 100, 1)
    sink.write(lines(0, 5))
    sink.write(lines(5, 10))
    sink.write(lines(15, 1))
    sink.close()
    assert sink.errors >= 1
    assert sink.lost_lines == 0
    assert path.read_bytes() == lines(0, 16)
