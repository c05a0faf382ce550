"""Line framing on bytes: CRLF, \\r redraws, partial lines, the 64 KiB split, EOF flush."""

from __future__ import annotations

import pytest

from vastinit.logs.framing import MAX_LINE, LineFramer


def frame(*chunks: bytes) -> list[bytes]:
    """Feed ``chunks`` then EOF; return the lines delivered, in order."""
    framer = LineFramer()
    out = b"".join(framer.feed(c) for c in chunks) + framer.flush()
    assert out == b"" or out.endswith(b"\n")
    return out.split(b"\n")[:-1]


def test_complete_lines_pass_through_unchanged() -> None:
    assert frame(b"one\ntwo\n\nthree\n") == [b"one", b"two", b"", b"three"]


def test_crlf_line_endings_lose_the_cr() -> None:
    assert frame(b"dos\r\nlines\r\n") == [b"dos", b"lines"]


def test_crlf_split_across_chunks_loses_the_cr() -> None:
    assert frame(b"dos\r", b"\nnext\n") == [b"dos", b"next"]


def test_carriage_return_redraws_keep_only_the_last_text() -> None:
    bar = b"\r 10%|#         |\r 50%|#####     |\r100%|##########|\n"
    assert frame(bar, b"done\n") == [b"100%|##########|", b"done"]


def test_redraw_then_trailing_cr_keeps_the_text_before_it() -> None:
    assert frame(b"50%\r100%\r\n", b"a\r\r\n") == [b"100%", b"a"]


def test_cr_only_in_some_lines_leaves_the_others_alone() -> None:
    assert frame(b"plain\nx\ry\nplain2\r\n") == [b"plain", b"y", b"plain2"]


def test_partial_line_is_joined_with_its_rest() -> None:
    assert frame(b"hel", b"lo wo", b"rld\nsecond", b" line\n") == [b"hello world", b"second line"]


def test_partial_line_is_flushed_at_eof() -> None:
    assert frame(b"first\nno newline at the end") == [b"first", b"no newline at the end"]


def test_partial_redraw_is_flushed_as_its_last_state() -> None:
    assert frame(b"\r 10%", b"\r 20%", b"\r 30%\r") == [b" 30%"]


def test_progress_bar_without_newline_stays_bounded() -> None:
    framer = LineFramer()
    for i in range(100_000):
        assert framer.feed(b"\rdownloading %6d/100000 [%s]" % (i, b"#" * (i % 40))) == b""
        assert len(framer.pending) < 100
    assert framer.flush() == b"downloading  99999/100000 [" + b"#" * (99_999 % 40) + b"]\n"


def test_feed_returns_nothing_until_a_line_completes() -> None:
    framer = LineFramer()
    assert framer.feed(b"abc") == b""
    assert framer.feed(b"def\ngh") == b"abcdef\n"
    assert framer.pending == b"gh"


@pytest.mark.parametrize("length", [MAX_LINE - 1, MAX_LINE])
def test_line_up_to_64_kib_is_kept_whole(length: int) -> None:
    line = b"y" * length
    assert frame(line + b"\nz\n") == [line, b"z"]


def test_long_line_is_split_into_64_kib_pieces() -> None:
    line = bytes(range(256)).replace(b"\n", b"_").replace(b"\r", b"_") * 1000  # 256,000 bytes
    pieces = frame(b"before\n" + line + b"\nafter\n")
    assert pieces[0] == b"before" and pieces[-1] == b"after"
    assert [len(p) for p in pieces[1:-1]] == [MAX_LINE, MAX_LINE, MAX_LINE, 256_000 - 3 * MAX_LINE]
    assert b"".join(pieces[1:-1]) == line


def test_long_line_splits_the_same_whatever_the_chunking() -> None:
    line = b"0123456789" * 20_000  # 200,000 bytes
    whole = frame(line + b"\n")
    assert frame(*[line[i : i + 7_000] for i in range(0, len(line), 7_000)], b"\n") == whole
    assert frame(line[:MAX_LINE], line[MAX_LINE:] + b"\n") == whole


def test_endless_line_without_newline_is_cut_while_it_grows() -> None:
    framer = LineFramer()
    emitted = b"".join(framer.feed(b"z" * 10_000) for _ in range(100))  # 1,000,000 bytes
    assert emitted.count(b"\n") == 1_000_000 // MAX_LINE
    assert len(framer.pending) <= MAX_LINE
    assert framer.flush() == b"z" * (1_000_000 % MAX_LINE) + b"\n"


def test_short_lines_in_a_big_chunk_are_not_split() -> None:
    lines = [b"%07d" % i + b"." * 90 for i in range(20_000)]  # ~2 MB, no line near 64 KiB
    assert frame(b"\n".join(lines) + b"\n") == lines
