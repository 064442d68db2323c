"""The HTTP side every stand-in server shares (the CMDB, the WAPI grid, the Compute API).

Each stand-in answers through one ``_handle(method)``; this class routes every method there,
speaks keep-alive HTTP/1.1 as the real servers do, and writes an answer with its length.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional, Sequence, Tuple


class StandInHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each keep-alive answer waits on a delayed ACK
    #: ``json.dumps`` indent of JSON answers (the WAPI indents as Infoblox does).
    json_indent: Optional[int] = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))

    def _send(self, status: int, payload: Any = None, content_type: str = "application/json",
              headers: Sequence[Tuple[str, str]] = ()) -> None:
        """Answer: bytes as they are, None as an empty body, anything else as JSON or text."""
        if payload is None or isinstance(payload, bytes):
            body = payload or b""
        elif content_type == "application/json":
            body = json.dumps(payload, indent=self.json_indent).encode()
        else:
            body = str(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:  # noqa: N802 - stdlib names
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")
