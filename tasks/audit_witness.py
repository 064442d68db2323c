"""``novahooks audit witness``: a C2SP tlog-witness for the audit log.

It keeps the size and root of the last checkpoint it cosigned, and cosigns a
new one only if the log's key signed it and a consistency proof shows it
extends that one: a log cut back, rewritten, or forked is refused, whatever
its own signature says. Run it on another host (or as another user) than
the signer, so that taking the signer's key is not enough to roll the log back.

``POST /add-checkpoint``, as the spec has it: 200 with the cosignature line;
400 old size above the checkpoint's; 403 no valid log signature; 404 unknown
origin; 409 old size is not the one it holds (body: that size), or the same
size with another root; 422 the consistency proof fails.
"""

import base64
import binascii
import http.server
import json
import logging
import os
import threading
from typing import Dict, Optional, Tuple

from novahooks.settings import AuditSettings
from tasks.audit_signer import _write_atomically, read_private_key
from tasks.backends.audit import checkpoint, note
from tasks.backends.audit.merkle import ProofError, verify_consistency
from tasks.errors import Misconfigured

LOG = logging.getLogger("novahooks.audit.witness")
TEXT = "text/plain; charset=utf-8"


class Answer(Exception):
    def __init__(self, code: int, text: str, content_type: str = "") -> None:
        super().__init__(text)
        self.code, self.text, self.content_type = code, text, content_type or TEXT


class Witness(object):
    """The checks and the state; the HTTP layer only parses and answers."""

    def __init__(self, key: note.Signer, logs: Dict[str, note.Verifier], state: str) -> None:
        if key.kind != note.COSIGNATURE_V1:
            raise Misconfigured("[audit] witness_key_path is not a cosignature key (type 0x04)")
        self.key, self.logs, self.state_path = key, logs, state
        self.lock = threading.Lock()
        self.state: Dict[str, Dict[str, object]] = {}
        if os.path.exists(state):
            with open(state, encoding="utf-8") as handle:
                self.state = json.load(handle)

    def latest(self, origin: str) -> Tuple[int, Optional[bytes]]:
        held = self.state.get(origin)
        if not held:
            return 0, None
        return int(str(held["size"])), base64.b64decode(str(held["root"]))

    def add_checkpoint(self, body: str) -> str:
        old, proof, signed = _parse(body)
        text, _ = note.split(signed)
        origin = text.split("\n", 1)[0]
        log_key = self.logs.get(origin)
        if log_key is None:
            raise Answer(404, "unknown log origin %r" % origin)
        try:
            cp = checkpoint.open_checkpoint(signed, log_key, origin=origin).checkpoint
        except note.NoteError as exc:
            raise Answer(403, str(exc)) from None
        if old > cp.size:
            raise Answer(400, "old size %d is above the checkpoint's %d" % (old, cp.size))
        # Check and update under one lock: two requests must not roll each other back.
        with self.lock:
            size, root = self.latest(origin)
            if old != size:
                LOG.warning("%s: asked from size %d, holds %d (checkpoint %d)", origin, old,
                            size, cp.size)
                raise Answer(409, "%d\n" % size, "text/x.tlog.size")
            if cp.size == size and root is not None and cp.root != root:
                LOG.error("%s: two roots for size %d: the log forked", origin, size)
                raise Answer(409, "%d\n" % size, "text/x.tlog.size")
            if root is not None and cp.size > size:
                try:
                    verify_consistency(size, cp.size, proof, root, cp.root)
                except ProofError as exc:
                    LOG.error("%s: checkpoint %d does not extend %d: %s", origin, cp.size,
                              size, exc)
                    raise Answer(422, "not consistent with size %d: %s" % (size, exc)) from None
            self.state[origin] = {"size": cp.size, "root": base64.b64encode(cp.root).decode()}
            _write_atomically(self.state_path, json.dumps(self.state, sort_keys=True), 0o600)
        return self.key.signature_line(cp.body())


def _parse(body: str) -> Tuple[int, list, str]:
    head, sep, signed = body.partition("\n\n")
    lines = head.split("\n")
    if not sep or not lines[0].startswith("old "):
        raise Answer(400, "body must be: old <size>, proof lines, a blank line, a checkpoint")
    size = lines[0][4:]
    if not size.isdigit() or (size != "0" and size.startswith("0")):
        raise Answer(400, "old size %r is not a decimal number" % size[:20])
    if len(lines) - 1 > 63:
        raise Answer(400, "more than 63 proof lines")
    try:
        proof = [base64.b64decode(line, validate=True) for line in lines[1:]]
    except binascii.Error:
        raise Answer(400, "a proof line is not base64") from None
    if int(size) == 0 and proof:
        raise Answer(400, "a proof from size 0 must be empty")
    return int(size), proof, signed


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "novahooks-witness"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        witness = self.server.witness  # type: ignore[attr-defined]
        try:
            if self.path.rstrip("/").rsplit("/", 1)[-1] != "add-checkpoint":
                raise Answer(404, "only add-checkpoint is here")
            length = int(self.headers.get("Content-Length") or 0)
            if length > 64 * 1024:
                raise Answer(400, "request too large")
            body = self.rfile.read(length).decode("utf-8")
            code, text, kind = 200, witness.add_checkpoint(body), TEXT
        except Answer as answer:
            code, text, kind = answer.code, answer.text, answer.content_type
        except (UnicodeDecodeError, note.NoteError) as exc:
            code, text, kind = 400, str(exc), TEXT
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        LOG.info("%s %s", self.address_string(), format % args)


def serve(config: AuditSettings) -> http.server.ThreadingHTTPServer:
    if not config.witness_key_path or not config.verifier_key:
        raise Misconfigured("[audit] witness_key_path and verifier_key (the log's key) "
                            "are needed by the witness")
    log_key = note.Verifier(config.verifier_key)
    witness = Witness(read_private_key(config.witness_key_path, "witness_key_path"),
                      {log_key.name: log_key}, config.witness_state)
    host, _, port = config.witness_listen.rpartition(":")
    server = http.server.ThreadingHTTPServer((host.strip("[]") or "127.0.0.1", int(port)),
                                             _Handler)
    server.witness = witness  # type: ignore[attr-defined]
    LOG.info("witness %s for %s on %s", witness.key.verifier(), log_key.name,
             config.witness_listen)
    return server
