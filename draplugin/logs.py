"""JSON logs, one object per line, with the claim and pod a message is about as fields of their own.

Operators grep for a claim or a pod across nodes; putting them in fields (via `extra={"claim": ...,
"pod": ...}`) makes that a query instead of a regular expression over free text.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from datetime import UTC, datetime

import orjson

CONTEXT_FIELDS = ("claim", "pod", "device", "request", "method")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def escape_controls(text: str) -> str:
    """Control characters become `\\xNN`: text from peers (API errors, NRI names) cannot forge a log line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class TextFormatter(logging.Formatter):
    """One line per message, as the JSON format gives for free; a traceback still spans its lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                body[name] = str(value)
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(body).decode()


def parse_level(value: str) -> str:
    """argparse type for --log-level: any case in, the logging module's spelling out.

    Checked at parse time because `logging.setLevel` would only reject a typo once the daemon starts.
    """
    level = value.strip().upper()
    if level not in LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown log level {value!r} (choose from {', '.join(lv.lower() for lv in LEVELS)})"
        )
    return level


def setup(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
