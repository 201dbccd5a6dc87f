"""Logging for every shipskip process: one JSON object per line, or readable text on a terminal.

Each line carries the time (UTC), level, logger, message, the service and process, the request id of the request
being answered (``REQUEST_ID``, set by services/shared/observed_asgi.py) and any ``extra=`` fields the call passed.
A collector reads the JSON; people at a terminal (``make run``'s own output, the ``shipskip`` command) get text.
"""

import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

from services.shared.telemetry_settings import TelemetrySettings

REQUEST_ID: ContextVar[str | None] = ContextVar("shipskip_request_id", default=None)
"""The id of the request the current task answers (None outside a request)."""

# Every attribute a LogRecord has of its own: anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

_encoder = msgspec.json.Encoder(enc_hook=str)  # anything msgspec cannot encode is logged as its str()


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _RECORD_FIELDS}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service
        self._pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "service": self._service,
            "pid": self._pid,
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        line.update(_extras(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = record.stack_info
        # One line whatever the message holds: JSON escapes the newlines of a traceback.
        return _encoder.encode(line).decode()


class TextFormatter(logging.Formatter):
    """``12:00:01.123 INFO services.tally.projector.projector [req 1f2e…]: message key=value``, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = REQUEST_ID.get()
        request = f" [req {request_id}]" if request_id else ""
        fields = "".join(f" {key}={value}" for key, value in _extras(record).items())
        time = self.formatTime(record, "%H:%M:%S")
        line = (
            f"{time}.{int(record.msecs):03d} {record.levelname} {record.name}{request}: {record.getMessage()}{fields}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def wants_json(settings: TelemetrySettings, stream: TextIO) -> bool:
    if settings.log_format != "auto":
        return settings.log_format == "json"
    try:
        return not stream.isatty()
    except ValueError:  # a closed stream
        return True


def configure_logging(settings: TelemetrySettings, service: str, stream: TextIO | None = None) -> None:
    """Send every logger's lines (granian's too, in this process) to ``stream`` (stderr) in the chosen format."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service) if wants_json(settings, stream) else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # granian gives its loggers handlers of their own (plain text on stdout); in our processes they go through ours.
    for name in ("_granian", "granian.access"):
        granian = logging.getLogger(name)
        for old in list(granian.handlers):
            granian.removeHandler(old)
        granian.propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per readiness probe
