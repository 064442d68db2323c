"""C2SP signed notes with Ed25519 keys, and tlog-cosignature/v1 witness cosignatures.

The same text format Go's sumdb, Sigsum and the public witness network use,
so a checkpoint of this log can be checked with their tools and cosigned by
their witnesses. Keys are the strings those tools exchange:
``PRIVATE+KEY+<name>+<id>+<base64>`` for a signer, ``<name>+<id>+<base64>``
for a verifier, where the base64 holds the signature type byte (0x01 for a
log's Ed25519 key, 0x04 for a witness's cosignature key) and the 32-byte key,
and the id is ``SHA-256(name || 0x0A || type || public key)[:4]``.
"""

import base64
import binascii
import hashlib
import struct
import time
from typing import List, Optional, Sequence, Tuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
DASH = "\u2014 "


class NoteError(ValueError):
    """A note, key or signature is malformed or does not verify; the message says which."""


def key_id(name: str, kind: int, public: bytes) -> int:
    return int.from_bytes(hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public)
                          .digest()[:4], "big")


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError("key name %r must be non-empty, without spaces or '+'" % name)


def _raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class Verifier(object):
    """A public key with its name, id and type, as a ``name+id+base64`` string names it."""

    def __init__(self, vkey: str) -> None:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("verifier key %r is not name+id+base64" % vkey[:40])
        self.name, hex_id, material = parts
        _check_name(self.name)
        try:
            raw = base64.b64decode(material, validate=True)
            self.key_id = int(hex_id, 16)
        except (binascii.Error, ValueError):
            raise NoteError("verifier key for %s: bad id or base64" % self.name) from None
        if len(hex_id) != 8 or len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError("verifier key for %s is not an Ed25519 key (type 0x01 or 0x04)"
                            % self.name)
        self.kind, self.public = raw[0], raw[1:]
        if key_id(self.name, self.kind, self.public) != self.key_id:
            raise NoteError("verifier key for %s: id %s does not match the key"
                            % (self.name, hex_id))
        self._key = Ed25519PublicKey.from_public_bytes(self.public)

    def __str__(self) -> str:
        return "%s+%08x+%s" % (self.name, self.key_id,
                               base64.b64encode(bytes([self.kind]) + self.public).decode())

    def verify(self, text: str, blob: bytes) -> Optional[int]:
        """Check a signature blob (after the key id) over ``text``; a cosignature's time."""
        try:
            if self.kind == COSIGNATURE_V1:
                if len(blob) != 72:
                    raise NoteError("cosignature of %s has %d bytes, not 8+64"
                                    % (self.name, len(blob)))
                (stamp,) = struct.unpack(">Q", blob[:8])
                self._key.verify(blob[8:], _cosigned(text, stamp))
                return stamp
            self._key.verify(blob, text.encode())
            return None
        except InvalidSignature:
            raise NoteError("signature of %s does not verify: the note was changed or "
                            "signed by another key" % self.name) from None


class Signer(object):
    """A private key, as a ``PRIVATE+KEY+name+id+base64`` string names it."""

    def __init__(self, skey: str) -> None:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("signer key is not PRIVATE+KEY+name+id+base64")
        self.name = parts[2]
        _check_name(self.name)
        try:
            raw = base64.b64decode(parts[4], validate=True)
            wanted = int(parts[3], 16)
        except (binascii.Error, ValueError):
            raise NoteError("signer key for %s: bad id or base64" % self.name) from None
        if len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError("signer key for %s is not an Ed25519 key" % self.name)
        self.kind = raw[0]
        self._key = Ed25519PrivateKey.from_private_bytes(raw[1:])
        self.public = _raw_public(self._key)
        self.key_id = key_id(self.name, self.kind, self.public)
        if self.key_id != wanted:
            raise NoteError("signer key for %s: id %s does not match the key"
                            % (self.name, parts[3]))

    def verifier(self) -> Verifier:
        return Verifier("%s+%08x+%s" % (self.name, self.key_id, base64.b64encode(
            bytes([self.kind]) + self.public).decode()))

    def signature_line(self, text: str, timestamp: Optional[int] = None) -> str:
        if self.kind == COSIGNATURE_V1:
            stamp = int(time.time()) if timestamp is None else timestamp
            blob = struct.pack(">Q", stamp) + self._key.sign(_cosigned(text, stamp))
        else:
            blob = self._key.sign(text.encode())
        return "%s%s %s\n" % (DASH, self.name, base64.b64encode(
            self.key_id.to_bytes(4, "big") + blob).decode())


def generate(name: str, kind: int = ED25519) -> Tuple[str, str]:
    """A new (signer key, verifier key) pair for ``name``."""
    _check_name(name)
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    ident = key_id(name, kind, _raw_public(private))
    skey = "PRIVATE+KEY+%s+%08x+%s" % (name, ident,
                                       base64.b64encode(bytes([kind]) + seed).decode())
    return skey, str(Signer(skey).verifier())


def _cosigned(text: str, stamp: int) -> bytes:
    return ("cosignature/v1\ntime %d\n" % stamp).encode() + text.encode()


def sign(text: str, signers: Sequence[Signer]) -> str:
    _check_text(text)
    return text + "\n" + "".join(s.signature_line(text) for s in signers)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end in a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note text holds a control character")


def split(note: str) -> Tuple[str, List[Tuple[str, int, bytes]]]:
    """The text and its signatures as (name, key id, signature) without verifying any."""
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("not a signed note: no blank line before the signatures")
    text, lines = note[:cut + 1], note[cut + 2:]
    _check_text(text)
    if not lines.endswith("\n"):
        raise NoteError("signature lines must end in a newline")
    signatures = []
    for line in lines[:-1].split("\n"):
        if not line.startswith(DASH):
            raise NoteError("malformed signature line %r" % line[:60])
        name, _, encoded = line[len(DASH):].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise NoteError("signature of %s is not base64" % name) from None
        if len(raw) < 5:
            raise NoteError("signature of %s is too short" % name)
        signatures.append((name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, signatures


def open_note(note: str, verifiers: Sequence[Verifier]) -> Tuple[str, List[Tuple[Verifier,
                                                                                  Optional[int]]]]:
    """The text if a known key signed it, with each known signer (and cosignature time).

    Signatures by unknown keys are ignored, as the spec requires; one by a known
    key that fails to verify rejects the whole note.
    """
    text, signatures = split(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified = []
    for name, ident, blob in signatures:
        verifier = known.get((name, ident))
        if verifier is not None:
            verified.append((verifier, verifier.verify(text, blob)))
    if not verified:
        raise NoteError("no signature by a known key (%s); signed by: %s" % (
            ", ".join(v.name for v in verifiers) or "none configured",
            ", ".join("%s/%08x" % (n, i) for n, i, _ in signatures)))
    return text, verified
