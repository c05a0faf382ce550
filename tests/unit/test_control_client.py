"""The stdlib client against a real Unix socket that answers canned HTTP bytes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vastinit.control.client import Client, CtlError, query, unit_path


class Canned:
    """A one-connection-at-a-time server that records each request and sends ``reply``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reply = b""
        self.requests: list[bytes] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        while len(body) < int(line.split(b":")[1]):
                            body += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(self.reply)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def canned(tmp_path: Path) -> Iterator[Canned]:
    server = Canned(tmp_path / "canned.sock")
    yield server
    server.close()


def test_json_reply_by_content_length_and_request_shape(canned: Canned) -> None:
    canned.reply = b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}'
    client = Client(str(canned.path))
    assert client.post("/v1/start", {"units": ["web"]}) == {"ok": True}
    request = canned.requests[-1]
    assert request.startswith(b"POST /v1/start HTTP/1.1\r\n")
    assert b"Content-Length: 18\r\n" in request
    assert request.endswith(b'{"units": ["web"]}')
    assert client.get("/v1/status") == {"ok": True}
    assert canned.requests[-1].startswith(b"GET /v1/status HTTP/1.1\r\n")
    assert b"Content-Length" not in canned.requests[-1]


def test_chunked_reply_is_reassembled(canned: Canned) -> None:
    canned.reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"a":\r\n3;ext=1\r\n 1}\r\n0\r\n\r\n'
    )
    assert Client(str(canned.path)).get("/v1/x") == {"a": 1}


def test_stream_yields_ndjson_lines_split_across_chunks(canned: Canned) -> None:
    canned.reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'10\r\n{"n": 1}\n{"n": 2\r\n'
        b"2\r\n}\n\r\n"
        b"0\r\n\r\n"
    )
    batches = list(Client(str(canned.path)).stream("/v1/logs?follow=1"))
    assert batches == [[{"n": 1}], [{"n": 2}]]


def test_a_stream_cut_before_its_last_chunk_is_an_error(canned: Canned) -> None:
    canned.reply = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{"n": 1}\n\r\n'
    got: list[object] = []
    with pytest.raises(CtlError, match="connection to vastinit was cut"):
        for batch in Client(str(canned.path)).stream("/v1/logs?follow=1"):
            got.extend(batch)
    assert got == [{"n": 1}]


def test_server_error_becomes_ctlerror_with_its_one_line_and_code(canned: Canned) -> None:
    body = b'{"error": "no unit \'sglnag\' (did you mean sglang?)", "code": "unknown_unit"}'
    canned.reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    with pytest.raises(CtlError) as caught:
        Client(str(canned.path)).get("/v1/status?unit=sglnag")
    assert str(caught.value) == "no unit 'sglnag' (did you mean sglang?)"
    assert (caught.value.code, caught.value.status) == ("unknown_unit", 404)


def test_a_reply_that_is_not_json_is_reported_not_crashed_on(canned: Canned) -> None:
    canned.reply = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\nBad Request"
    with pytest.raises(CtlError, match="vastinit replied HTTP 400: Bad Request"):
        Client(str(canned.path)).get("/v1/status")
    canned.reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    with pytest.raises(CtlError, match="not JSON"):
        Client(str(canned.path)).get("/v1/status")
    canned.reply = b""
    with pytest.raises(CtlError, match="closed the connection before replying"):
        Client(str(canned.path)).get("/v1/status")


def test_connection_errors_name_the_socket(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sock"
    with pytest.raises(CtlError) as caught:
        Client(str(missing)).get("/v1/status")
    assert str(caught.value) == f"no vastinit is listening on {missing} (it does not exist)"
    assert caught.value.code == "no_daemon"
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
    with pytest.raises(CtlError, match=r"\(connection refused\)$"):
        Client(str(stale)).get("/v1/status")


def test_query_repeats_list_keys_and_drops_unset_values() -> None:
    assert query("/v1/status", {"unit": []}) == "/v1/status"
    assert query("/v1/logs", {"unit": ["a", "b c"], "n": 5, "follow": True}) == (
        "/v1/logs?unit=a&unit=b%20c&n=5&follow=1"
    )
    assert query("/v1/ready", {"wait": False, "timeout": None}) == "/v1/ready"
    assert unit_path("a/b") == "/v1/units/a%2Fb"
