"""Structured logs: one JSON object per line when nobody is watching a terminal.

A step's outcome line carries instance_uuid, hostname, step, backend, attempt
and duration as top-level keys, so ``grep <uuid>`` (or any log shipper)
follows one VM through every worker pool. On a terminal the same fields
are printed as ``key=value`` for people.
"""

import json
import logging
import sys
import time
from typing import Any, Dict, Optional

#: the ``extra`` key under which callers pass structured fields
FIELDS = "novahooks_fields"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: Dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + ".%03dZ" % record.msecs, "level": record.levelname, "logger": record.name,
            "message": record.getMessage()}
        data.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, sort_keys=True, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, FIELDS, None)
        if fields:
            text += " " + " ".join("%s=%s" % item for item in sorted(fields.items()))
        return text


def formatter(stream: Optional[Any] = None) -> logging.Formatter:
    stream = stream or sys.stderr
    return TextFormatter() if getattr(stream, "isatty", lambda: False)() else JsonFormatter()


def setup(level: int = logging.INFO) -> None:
    """Root logging for the CLI, the relay and the workers."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(handler.stream))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
