"""C2SP tlog-checkpoint: the origin, size and root of the audit log, as a signed note.

::

    novahooks.example/audit
    1042
    ZmQ5...base64 root...=

    — novahooks.example/audit <base64(key id || Ed25519 signature)>
    — witness.example/w1 <base64(key id || time || Ed25519 signature)>

A checkpoint kept where the log's writers cannot reach (a WORM directory, a
syslog collector, a witness) is what makes truncation and a rewrite from
scratch visible: the log can no longer produce a root for that size.
"""

import base64
import binascii
from typing import List, NamedTuple, Optional, Sequence, Tuple

from tasks.backends.audit import note
from tasks.backends.audit.merkle import HASH_SIZE


class Checkpoint(NamedTuple):
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return "%s\n%d\n%s\n" % (self.origin, self.size, base64.b64encode(self.root).decode())


class Signed(NamedTuple):
    """A checkpoint whose log signature verified, with its note and cosignatures."""

    checkpoint: Checkpoint
    note: str
    #: (witness name, cosignature time) for each known witness that cosigned.
    cosigned: List[Tuple[str, int]]


def parse_body(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise note.NoteError("a checkpoint is origin, size and root lines")
    origin, size, root = lines[0], lines[1], lines[2]
    if not origin:
        raise note.NoteError("checkpoint origin line is empty")
    if not size.isdigit() or (size != "0" and size.startswith("0")):
        raise note.NoteError("checkpoint size %r is not a decimal number" % size[:30])
    try:
        digest = base64.b64decode(root, validate=True)
    except binascii.Error:
        raise note.NoteError("checkpoint root is not base64") from None
    if len(digest) != HASH_SIZE:
        raise note.NoteError("checkpoint root is %d bytes, not %d" % (len(digest), HASH_SIZE))
    return Checkpoint(origin, int(size), digest)


def sign(checkpoint: Checkpoint, signer: note.Signer) -> str:
    return note.sign(checkpoint.body(), [signer])


def open_checkpoint(text: str, log_key: note.Verifier,
                    witnesses: Sequence[note.Verifier] = (),
                    origin: Optional[str] = None) -> Signed:
    """A checkpoint signed by ``log_key`` (for ``origin`` when given), or NoteError."""
    body, signatures = note.split(text)
    if not any(name == log_key.name and ident == log_key.key_id
               for name, ident, _ in signatures):
        raise note.NoteError("checkpoint is not signed by the log key %s (%08x)"
                             % (log_key.name, log_key.key_id))
    _, verified = note.open_note(text, [log_key] + list(witnesses))
    checkpoint = parse_body(body)
    if origin is not None and checkpoint.origin != origin:
        raise note.NoteError("checkpoint is for origin %r, not %r" % (checkpoint.origin, origin))
    return Signed(checkpoint, text, [(v.name, stamp) for v, stamp in verified
                                     if stamp is not None])


def read(path: str, log_key: note.Verifier, witnesses: Sequence[note.Verifier] = (),
         origin: Optional[str] = None) -> Signed:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        return open_checkpoint(text, log_key, witnesses, origin)
    except note.NoteError as exc:
        raise note.NoteError("%s: %s" % (path, exc)) from None
