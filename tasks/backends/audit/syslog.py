"""RFC 5424 syslog over UDP, for the security team's collector.

Written by hand rather than with logging.handlers.SysLogHandler, which emits
the older BSD format without structured data; the instance UUID, step and
outcome belong in SD-PARAMs where a SIEM can index them.
"""

import datetime
import json
import os
import socket
from typing import Any, Dict

from tasks.backends.audit.base import AuditDriver
from tasks.errors import BackendUnavailable, Misconfigured

FACILITY_AUTHPRIV = 10
SEVERITY = {"failed": 3, "start": 6, "done": 6}
SD_ID = "novahooks@32473"


def _sd_value(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_rfc5424(entry: Dict[str, Any], app_name: str, hostname: str) -> bytes:
    severity = SEVERITY.get(str(entry.get("stage")), 5)
    pri = FACILITY_AUTHPRIV * 8 + severity
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
    params = " ".join('%s="%s"' % (key, _sd_value(entry[key]))
                      for key in ("instance_uuid", "hostname", "kind", "stage", "step")
                      if entry.get(key) is not None)
    msgid = str(entry.get("kind") or "-")[:32]
    message = json.dumps(entry, sort_keys=True)
    return ("<%d>1 %s %s %s %d %s [%s %s] " % (pri, stamp, hostname[:255], app_name[:48],
                                                 os.getpid(), msgid, SD_ID, params)
            ).encode() + b"\xef\xbb\xbf" + message.encode()


class SyslogAudit(AuditDriver):
    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        if not settings.syslog_host:
            raise Misconfigured("[audit] syslog_host is not set", backend="syslog")
        self.address = (settings.syslog_host, int(settings.syslog_port))
        self.hostname = socket.gethostname()

    def record(self, entry: Dict[str, Any]) -> None:
        data = format_rfc5424(entry, self.settings.app_name, self.hostname)
        try:
            with socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET,
                               socket.SOCK_DGRAM) as sock:
                sock.sendto(data, self.address)
        except OSError as exc:
            raise BackendUnavailable("cannot send to %s:%d: %s" % (self.address + (exc,)),
                                     backend="syslog") from exc

    def check(self) -> str:
        try:
            socket.getaddrinfo(self.address[0], self.address[1], type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise BackendUnavailable("cannot resolve %s: %s" % (self.address[0], exc),
                                     backend="syslog") from exc
        return "RFC 5424 over UDP to %s:%d" % self.address
