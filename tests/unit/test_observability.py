"""Request ids, log lines, telemetry settings, the run folders and the projector's tiny server."""

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.shared.config import ConfigError, Env
from services.shared.logs import REQUEST_ID, JsonFormatter, TextFormatter, configure_logging, wants_json
from services.shared.metrics_folder import MULTIPROCESS_VARIABLE, new_run_folder, process_start, run_folder_of_worker
from services.shared.monitor_server import Answer, MonitorServer, json_answer
from services.shared.observed_asgi import request_id
from services.shared.telemetry_settings import TelemetrySettings


def test_a_short_safe_request_id_is_kept_anything_else_replaced() -> None:
    assert request_id([(b"host", b"x"), (b"x-request-id", b"abc-123_4.5:6")]) == "abc-123_4.5:6"
    assert request_id([(b"x-request-id", b"Zm9vYmFy+/==")]) == "Zm9vYmFy+/=="
    for unsafe in (b"", b"a" * 65, b"a b", b"a\tb", b'a"b', b"a;b", b"\xc3\xa9t\xc3\xa9", b"a\\nb"):
        replaced = request_id([(b"x-request-id", unsafe)])
        assert replaced != unsafe.decode(errors="replace")
        assert len(replaced) == 16
    new = {request_id([]) for _ in range(1000)}
    assert len(new) == 1000
    assert all(len(rid) == 16 and int(rid, 16) >= 0 for rid in new)


def _record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("shipskip.test").makeRecord(
        "shipskip.test", logging.WARNING, __file__, 1, message, args, None, extra=extra
    )
    return record


def test_a_json_line_holds_the_message_the_request_id_and_the_extras() -> None:
    formatter = JsonFormatter("votes")
    token = REQUEST_ID.set("req-1")
    try:
        line = formatter.format(_record("took %d votes", 3, route="/v1/x", status=202))
    finally:
        REQUEST_ID.reset(token)
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["msg"] == "took 3 votes"
    assert fields["level"] == "warning"
    assert fields["logger"] == "shipskip.test"
    assert fields["service"] == "votes"
    assert fields["pid"] == os.getpid()
    assert fields["request_id"] == "req-1"
    assert fields["route"] == "/v1/x"
    assert fields["status"] == 202
    assert fields["ts"].endswith("Z")
    # Outside a request there is no request id.
    assert "request_id" not in json.loads(formatter.format(_record("idle")))


def test_a_traceback_stays_on_one_json_line() -> None:
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter("read").format(record)
    assert "\n" not in line
    assert "ValueError: broken" in json.loads(line)["exc"]


def test_text_for_people() -> None:
    token = REQUEST_ID.set("req-2")
    try:
        line = TextFormatter().format(_record("hello %s", "there", status=404))
    finally:
        REQUEST_ID.reset(token)
    assert line.endswith("WARNING shipskip.test [req req-2]: hello there status=404")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_text_at_a_terminal_json_elsewhere_unless_told() -> None:
    auto = TelemetrySettings.from_env(Env({}, {}))
    assert wants_json(auto, io.StringIO())
    assert not wants_json(auto, _Terminal())
    forced = TelemetrySettings.from_env(Env({"SHIPSKIP_LOG_FORMAT": "json"}, {}))
    assert wants_json(forced, _Terminal())
    stream = io.StringIO()
    configure_logging(forced, "cli", stream)
    try:
        logging.getLogger("shipskip.test").info("one line", extra={"n": 1})
    finally:
        configure_logging(auto, "cli", sys.stderr)
    assert json.loads(stream.getvalue())["n"] == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHIPSKIP_LOG_FORMAT", "xml"),
        ("SHIPSKIP_LOG_LEVEL", "loud"),
        ("SHIPSKIP_ACCESS_LOG", "some"),
        ("SHIPSKIP_PROJECTOR_PORT", "70000"),
        ("SHIPSKIP_PROJECTOR_PORT", "eighty"),
    ],
)
def test_a_wrong_telemetry_setting_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        TelemetrySettings.from_env(Env({name: value}, {}))


def test_telemetry_defaults() -> None:
    settings = TelemetrySettings.from_env(Env({}, {}))
    assert (settings.log_format, settings.log_level, settings.access_log) == ("auto", "info", "errors")
    assert (settings.projector_host, settings.projector_port) == ("127.0.0.1", 8082)


def test_the_folders_of_finished_runs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    dead_pid = int(finished.stdout)
    me = os.getpid()
    live = tmp_path / f"votes-{me}-{process_start(me)}"
    reused_pid = tmp_path / f"read-{me}-{process_start(me) + 1}"  # this pid, but another process's start
    dead = tmp_path / f"votes-{dead_pid}-12345"
    other = tmp_path / "not-a-run"
    for folder in (live, reused_pid, dead, other):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"")
    assert new_run_folder("votes", tmp_path, me) == live  # this process's run: kept, files and all
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
    assert (live / "counter_1.db").exists()


def test_a_worker_without_its_run_folder_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROCESS_VARIABLE, raising=False)
    with pytest.raises(ConfigError, match=f"{MULTIPROCESS_VARIABLE} is not set"):
        run_folder_of_worker()
    monkeypatch.setenv(MULTIPROCESS_VARIABLE, str(tmp_path / "gone"))
    with pytest.raises(ConfigError, match=f"{MULTIPROCESS_VARIABLE}=.*gone is not a folder"):
        run_folder_of_worker()
    monkeypatch.setenv(MULTIPROCESS_VARIABLE, str(tmp_path))
    assert run_folder_of_worker() == tmp_path


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def test_the_monitor_server_answers_its_routes_and_refuses_the_rest() -> None:
    async def hello() -> Answer:
        return json_answer(200, {"hello": "world"})

    server = MonitorServer({"/hello": hello}, "127.0.0.1", 0)
    await server.start()
    try:
        port = server.port
        ok = await _exchange(port, b"GET /hello?x=1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: rid-9\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nX-Request-Id: rid-9\r\n" in ok
        assert ok.endswith(b'{"hello":"world"}')
        head = await _exchange(port, b"HEAD /hello HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert head.endswith(b"\r\n\r\n")
        missing = await _exchange(port, b"GET /nope HTTP/1.1\r\n\r\n")
        assert missing.startswith(b"HTTP/1.1 404")
        assert b'"error":"not_found"' in missing
        post = await _exchange(port, b"POST /hello HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405")
        garbage = await _exchange(port, b"\x00\x01 nonsense\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400")
        # A head larger than the limit gets the connection closed, and the server goes on.
        assert await _exchange(port, b"GET /hello HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n") == b""
        assert (await _exchange(port, b"GET /hello HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")
    finally:
        await server.stop()
