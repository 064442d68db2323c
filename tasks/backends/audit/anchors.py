"""Where a signed checkpoint is kept outside the log's writer.

Each anchor is somewhere the step workers cannot rewrite: a directory meant
to be WORM storage or another host's mount (one file per checkpoint, created
exclusively and never replaced), a remote syslog collector (a SIEM keeps what
it received), and a witness that cosigns only trees consistent with the last
one it saw. Any one of them is enough to show that the log was cut or
rewritten after the checkpoint it holds.
"""

import base64
import os
import socket
from typing import Any, List, Optional

import requests

from tasks.backends.audit import note
from tasks.backends.audit.checkpoint import Checkpoint
from tasks.backends.audit.merkle import Tree
from tasks.backends.audit.syslog import SD_ID, FACILITY_AUTHPRIV, _sd_value
from tasks.errors import BackendUnavailable, PermanentError


class AnchorError(BackendUnavailable):
    """An anchor did not take the checkpoint; the signer retries at the next one."""


class Refused(PermanentError):
    """A witness refused the checkpoint: the log is inconsistent with what it saw."""


class WormDir(object):
    name = "worm"

    def __init__(self, path: str) -> None:
        self.path = path

    def put(self, checkpoint: Checkpoint, signed: str, tree: Tree) -> str:
        target = os.path.join(self.path, "%020d.checkpoint" % checkpoint.size)
        try:
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError:
            with open(target, encoding="utf-8") as handle:
                if handle.read() == signed:
                    return signed
            raise Refused("%s already holds another checkpoint of size %d"
                          % (target, checkpoint.size)) from None
        except OSError as exc:
            raise AnchorError("cannot write %s: %s" % (target, exc.strerror)) from exc
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(signed)
            handle.flush()
            os.fsync(handle.fileno())
        return signed


def anchored(path: str) -> List[str]:
    """The checkpoint files in an anchor directory, oldest (smallest) first."""
    try:
        names = sorted(n for n in os.listdir(path) if n.endswith(".checkpoint"))
    except OSError:
        return []
    return [os.path.join(path, n) for n in names]


class SyslogAnchor(object):
    """RFC 5424 over UDP with the size and root as SD-PARAMs and the note as message."""

    name = "syslog"

    def __init__(self, host: str, port: int, app_name: str) -> None:
        self.address = (host, port)
        self.app_name = app_name
        self.hostname = socket.gethostname()

    def put(self, checkpoint: Checkpoint, signed: str, tree: Tree) -> str:
        import datetime
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
        params = 'origin="%s" size="%d" root="%s"' % (
            _sd_value(checkpoint.origin), checkpoint.size,
            base64.b64encode(checkpoint.root).decode())
        data = ("<%d>1 %s %s %s %d checkpoint [%s %s] " % (
            FACILITY_AUTHPRIV * 8 + 5, stamp, self.hostname[:255], self.app_name[:48],
            os.getpid(), SD_ID, params)).encode() + b"\xef\xbb\xbf" + signed.encode()
        try:
            with socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET,
                               socket.SOCK_DGRAM) as sock:
                sock.sendto(data, self.address)
        except OSError as exc:
            raise AnchorError("cannot send to %s:%d: %s" % (self.address + (exc,))) from exc
        return signed


class Witness(object):
    """A C2SP tlog-witness: add-checkpoint with a consistency proof from its last size."""

    name = "witness"

    def __init__(self, url: str, key: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/") + "/add-checkpoint"
        self.key = note.Verifier(key)
        if self.key.kind != note.COSIGNATURE_V1:
            raise PermanentError("[audit] witness_key is not a cosignature key (type 0x04)")
        self.timeout = timeout
        #: The size the witness last cosigned, as far as this signer knows.
        self.size: Optional[int] = 0

    def put(self, checkpoint: Checkpoint, signed: str, tree: Tree) -> str:
        for _ in range(2):
            old = self.size or 0
            if old > checkpoint.size:
                raise Refused("the witness has cosigned %d records, this checkpoint has only "
                              "%d: the log was rolled back" % (old, checkpoint.size))
            proof = tree.consistency_proof(old, checkpoint.size)
            body = "old %d\n%s\n%s" % (old, "".join(base64.b64encode(p).decode() + "\n"
                                                    for p in proof), signed)
            answer = self._post(body)
            if answer.status_code == 409 and answer.headers.get(
                    "Content-Type", "").startswith("text/x.tlog.size"):
                self.size = int(answer.text.strip())
                continue
            if answer.status_code != 200:
                raise Refused("witness %s answered %d: %s" % (self.url, answer.status_code,
                                                               answer.text.strip()[:200]))
            cosigned = signed + answer.content.decode("utf-8", errors="replace")
            try:
                note.open_note(cosigned, [self.key])
            except note.NoteError as exc:
                raise Refused("witness %s answered without a valid cosignature: %s"
                              % (self.url, exc)) from None
            self.size = checkpoint.size
            return cosigned
        raise Refused("witness %s keeps answering 409 (size conflict)" % self.url)

    def _post(self, body: str) -> Any:
        try:
            return requests.post(self.url, data=body.encode(), timeout=self.timeout,
                                 headers={"Content-Type": "text/plain; charset=utf-8"})
        except requests.RequestException as exc:
            raise AnchorError("witness %s unreachable: %s" % (self.url, exc)) from exc
