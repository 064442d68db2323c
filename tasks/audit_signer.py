"""The audit log's signer: reads the log, signs checkpoints, sends them to the anchors.

The split of who can do what is the point of this process:

* the step workers append to the log file (they must be able to write it) and
  never see the signing key; they do not talk to this process at all;
* the signer runs as a user of its own that can read the log and the key file
  (mode 0600/0400, refused if group or others could read it), and alone can
  write the checkpoint file, the anchor directory's files and the socket;
* what the signer signs is the tree it computed itself from the lines it read,
  and it only ever extends its last checkpoint: if the file no longer hashes
  to it (cut, edited, rewritten) it stops signing and says why, so a writer
  cannot get a rewritten log signed.

A checkpoint is made once ``[audit] checkpoint_every`` records were appended
since the last one, or ``checkpoint_interval`` seconds passed and at least one
was. The Unix socket answers ``checkpoint`` (sign now) and ``status``.
"""

import json
import logging
import os
import socket
import socketserver
import stat
import threading
import time
from typing import Any, Dict, List, Optional

from novahooks.settings import AuditSettings
from tasks.backends.audit import anchors, checkpoint, note
from tasks.backends.audit.checkpoint import Checkpoint
from tasks.backends.audit.log import Log, b64
from tasks.backends.audit.merkle import leaf_hash
from tasks.errors import Misconfigured, StepError

LOG = logging.getLogger("novahooks.audit.signer")


def read_private_key(path: str, key: str = "signer_key_path") -> note.Signer:
    """The key, if only its owner can read the file: a key others can read is no split."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise Misconfigured("[audit] %s: cannot read %s: %s" % (key, path, exc.strerror)
                            ) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise Misconfigured("[audit] %s: %s is mode %04o; only its owner may read it "
                            "(chmod 0400)" % (key, path, stat.S_IMODE(info.st_mode)))
    with open(path, encoding="utf-8") as handle:
        try:
            return note.Signer(handle.read())
        except note.NoteError as exc:
            raise Misconfigured("[audit] %s: %s" % (key, exc)) from None


def _write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    temporary = "%s.%d.tmp" % (path, os.getpid())
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def status_path(config: AuditSettings) -> str:
    return config.latest_checkpoint() + ".status.json"


class Signer(object):
    """The signer's state: its view of the log, its last checkpoint, its anchors."""

    def __init__(self, config: AuditSettings) -> None:
        if not config.signer_key_path:
            raise Misconfigured("[audit] signer_key_path is not set")
        self.config = config
        self.key = read_private_key(config.signer_key_path)
        if self.key.kind != note.ED25519:
            raise Misconfigured("[audit] signer_key_path holds a cosignature key, not a log key")
        self.verifier = self.key.verifier()
        if config.verifier_key and str(self.verifier) != config.verifier_key.strip():
            raise Misconfigured("[audit] verifier_key is not the public half of "
                                "signer_key_path")
        self.log = Log(config.path)
        self.lock = threading.Lock()
        self.anchors: List[Any] = []
        # The witness first: its cosignature is then part of what the others keep.
        if config.witness_url and config.witness_key:
            self.anchors.append(anchors.Witness(config.witness_url, config.witness_key))
        if config.anchor_dir:
            self.anchors.append(anchors.WormDir(config.anchor_dir))
        if config.anchor_syslog and config.syslog_host:
            self.anchors.append(anchors.SyslogAnchor(config.syslog_host, config.syslog_port,
                                                     config.app_name))
        self.last: Optional[Checkpoint] = None
        self.last_time = 0.0
        self.last_verified = time.time()
        self.verify_failures = 0
        self.refused: Optional[str] = None
        self.anchored: Dict[str, Dict[str, Any]] = {}
        self._resume()

    def _resume(self) -> None:
        """Pick up the last checkpoint, and refuse to go on if the log no longer holds it."""
        previous = self._read_status()
        self.anchored = previous.get("anchors", {})
        self.verify_failures = int(previous.get("verify_failures", 0))
        for anchor in self.anchors:
            if anchor.name == "witness":
                anchor.size = self.anchored.get("witness", {}).get("size", 0)
        self.log.catch_up()
        # The latest checkpoint, or a larger one in the anchor directory if the latest was
        # removed: either way the signer never signs a tree that does not extend it.
        paths = [self.config.latest_checkpoint()]
        if self.config.anchor_dir:
            paths.extend(anchors.anchored(self.config.anchor_dir)[-1:])
        for path in paths:
            if os.path.exists(path):
                signed = checkpoint.read(path, self.verifier)
                if self.last is None or signed.checkpoint.size > self.last.size:
                    self.last, self.last_time = signed.checkpoint, os.path.getmtime(path)
        self._check_against(self.log.tree, self.log.tree.size)

    def _check_against(self, tree: Any, size: int) -> None:
        last = self.last
        if last is None:
            return
        if size < last.size:
            self._refuse("truncated: the log holds %d records, the last checkpoint %d"
                         % (size, last.size))
        elif tree.root(last.size) != last.root:
            self._refuse("the log's first %d records no longer hash to the last checkpoint's "
                         "root: edited or rewritten" % last.size)

    def _refuse(self, why: str) -> None:
        self.refused = why
        self.verify_failures += 1
        LOG.error("audit log %s: %s; no more checkpoints until it is restored",
                  self.config.path, why)
        self._write_status()

    def due(self, now: float) -> bool:
        signed = self.last.size if self.last else 0
        grown = self.log.tree.size - signed
        return grown >= self.config.checkpoint_every or (
            grown > 0 and now - self.last_time >= self.config.checkpoint_interval)

    def tick(self, now: Optional[float] = None) -> Optional[str]:
        """Read what was appended; sign and anchor a checkpoint when one is due."""
        now = time.time() if now is None else now
        with self.lock:
            if self.refused:
                return None
            self._check_tail()
            if self.refused:
                return None
            self.log.catch_up()
            if now - self.last_verified >= self.config.verify_every:
                self._reverify(now)
                if self.refused:
                    return None
            if not self.due(now):
                return None
            return self._sign(now)

    def _check_tail(self) -> None:
        """Between full re-reads, at each tick: the file did not shrink below what was read,
        and the last line read is still there as it was (cheap: one line)."""
        log = self.log
        if not log.tree.size:
            return
        try:
            size = os.path.getsize(self.config.path)
            last = log.record(log.tree.size - 1)
        except OSError as exc:
            self._refuse("cannot read the log: %s" % exc.strerror)
            return
        if size < log.offset:
            self._refuse("truncated: the log has %d bytes, %d were read" % (size, log.offset))
        elif leaf_hash(last) != log.tree.leaf(log.tree.size - 1):
            self._refuse("record %d changed after it was read: edited or rewritten"
                         % log.tree.size)

    def sign_now(self) -> str:
        with self.lock:
            if self.refused:
                raise StepError("refusing to sign: %s" % self.refused)
            self.log.catch_up()
            if self.last is not None and self.last.size == self.log.tree.size:
                with open(self.config.latest_checkpoint(), encoding="utf-8") as handle:
                    return handle.read()
            return self._sign(time.time())

    def _reverify(self, now: float) -> None:
        fresh = Log(self.config.path)
        fresh.catch_up()
        self.last_verified = now
        self._check_against(fresh.tree, fresh.tree.size)

    def _sign(self, now: float) -> str:
        tree = self.log.tree
        cp = Checkpoint(self.key.name, tree.size, tree.root())
        signed = checkpoint.sign(cp, self.key)
        for anchor in self.anchors:
            try:
                signed = anchor.put(cp, signed, tree)
                self.anchored[anchor.name] = {"time": now, "size": cp.size, "error": None}
            except (StepError, OSError, ValueError) as exc:
                # One anchor down must not keep the others from the checkpoint.
                LOG.error("anchor %s did not take checkpoint %d: %s", anchor.name, cp.size, exc)
                entry = self.anchored.setdefault(anchor.name, {"time": None, "size": 0})
                entry["error"] = str(exc)
                if isinstance(exc, anchors.Refused):
                    self.verify_failures += 1
        _write_atomically(self.config.latest_checkpoint(), signed)
        self.last, self.last_time = cp, now
        self._write_status()
        LOG.info("checkpoint %s size %d root %s", cp.origin, cp.size, b64(cp.root))
        return signed

    def status(self) -> Dict[str, Any]:
        last = self.last
        return {"origin": self.key.name, "log": self.config.path, "records": self.log.tree.size,
                "checkpoint": {"size": last.size, "root": b64(last.root),
                               "time": self.last_time} if last else None,
                "anchors": self.anchored, "verify_failures": self.verify_failures,
                "refused": self.refused, "pid": os.getpid(), "written": time.time()}

    def _read_status(self) -> Dict[str, Any]:
        try:
            with open(status_path(self.config), encoding="utf-8") as handle:
                return dict(json.load(handle))
        except (OSError, ValueError):
            return {}

    def _write_status(self) -> None:
        _write_atomically(status_path(self.config), json.dumps(self.status(), sort_keys=True))


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        signer = self.server.signer  # type: ignore[attr-defined]
        command = self.rfile.readline(100).decode(errors="replace").strip()
        try:
            if command == "checkpoint":
                answer = signer.sign_now()
            elif command == "status":
                with signer.lock:
                    answer = json.dumps(signer.status(), sort_keys=True) + "\n"
            else:
                answer = "error unknown command %r\n" % command[:40]
        except StepError as exc:
            answer = "error %s\n" % exc
        self.wfile.write(answer.encode())


def serve_socket(signer: Signer, path: str) -> socketserver.UnixStreamServer:
    """The socket in a directory of its own; mode 0660 (the signer's group may ask)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o750, exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    old = os.umask(0o117)
    try:
        server = socketserver.ThreadingUnixStreamServer(path, _Handler)
    finally:
        os.umask(old)
    server.daemon_threads = True
    server.signer = signer  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, name="signer-socket", daemon=True).start()
    return server


def ask(path: str, command: str, timeout: float = 30.0) -> str:
    """One command to a running signer (``checkpoint`` or ``status``); its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    answer = b"".join(chunks).decode()
    if answer.startswith("error "):
        raise StepError(answer[6:].strip(), backend="audit signer")
    return answer


def main_loop(config: AuditSettings, stop: Optional[threading.Event] = None,
              metrics_address: str = "127.0.0.1") -> int:
    """Run until SIGTERM/SIGINT (or ``stop``); 1 if the log had to be refused."""
    import signal
    signer = Signer(config)
    server = serve_socket(signer, config.signer_socket)
    stop = stop or threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    if config.metrics_port:
        from tasks import audit_metrics
        audit_metrics.serve(config, signer, metrics_address)
    poll = min(1.0, config.checkpoint_interval / 4)
    LOG.info("audit signer for %s (%s) on %s: every %d records or %ss", config.path,
             signer.verifier, config.signer_socket, config.checkpoint_every,
             config.checkpoint_interval)
    try:
        while not stop.is_set():
            try:
                signer.tick()
            except Exception:  # noqa: BLE001 - a failed round is retried at the next tick
                LOG.exception("checkpoint round failed; retrying in %ss", poll)
            stop.wait(poll)
    finally:
        server.shutdown()
        server.server_close()
    return 1 if signer.refused else 0
