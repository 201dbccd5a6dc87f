"""HTTP/1.1 by hand, over a plain socket: hostile requests that an HTTP client library would refuse to send
(raw NUL bytes, bare CR, folded headers, two Content-Lengths, unnormalised ``..``), read back as sent."""

import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int | None
    """None when the server closed the connection without answering."""
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


def build(
    method: str,
    target: bytes | str,
    *,
    headers: list[tuple[bytes | str, bytes | str]] | None = None,
    body: bytes | None = None,
    content_length: bool = True,
) -> bytes:
    """A request with Host and ``Connection: close``; a Content-Length for ``body`` unless told not to."""
    target = target.encode() if isinstance(target, str) else target
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in headers or []:
        lines.append(_bytes(name) + b": " + _bytes(value))
    if body is not None and content_length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def _bytes(value: bytes | str) -> bytes:
    return value.encode("latin-1") if isinstance(value, str) else value


def exchange(port: int, request: bytes, timeout: float = 20.0) -> RawResponse:
    """Send ``request`` whole, read until the server closes the connection (``Connection: close``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        # The server may answer (413) and close before taking the whole body: then read what it said.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(request)
        return read_response(conn)


def read_response(conn: socket.socket) -> RawResponse:
    data = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            break  # reset after its answer, with our unread body still in its buffer
        if not chunk:
            break
        data += chunk
    if not data:
        return RawResponse(None, [], b"")
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    response = RawResponse(int(status_line.split(" ")[1]), headers, body)
    if (response.header("transfer-encoding") or "").lower() == "chunked":
        response.body = _dechunk(body)
    return response


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out
