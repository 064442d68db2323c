"""Append-only JSON Lines audit file: a Merkle log whose records are also hash-chained.

Each line is one record in RFC 8785 canonical JSON and one leaf of the log's
Merkle tree (tasks/backends/audit/log.py); the signer's checkpoints commit to
its size and root. Each line also carries ``seq``, the SHA-256 of the previous
line (``prev``) and its own ``hash`` over everything else, as the file did
before it was a Merkle log: files written then keep verifying, and a break in
the chain names the line where a checkpoint only says "different". The
exclusive ``flock`` around read-last-line + append is the sequencer: one
appender at a time takes the next index, however many worker processes
append; ``fsync`` makes a returned record durable.
"""

import decimal
import fcntl
import hashlib
import json
import logging
import os
from typing import Any, Dict, Iterable, Iterator, List, Tuple

import rfc8785

from tasks.backends.audit.base import AuditDriver
from tasks.errors import BackendUnavailable, Misconfigured

GENESIS = "0" * 64
LOG = logging.getLogger("novahooks.audit")


def _digest(record: Dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def as_parsed(value: Any) -> Any:
    """``value`` as it reads back from its RFC 8785 form: an integral float is written
    without a fraction (1.0 as 1) and so comes back an int. The chain's hash is taken
    over this, so that a verifier parsing the line gets the same hash."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        # The shortest digits, as written: above 2**53 they are not the float's exact value.
        return int(decimal.Decimal(repr(value)))
    if isinstance(value, dict):
        return {k: as_parsed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_parsed(v) for v in value]
    return value


def line(entry: Dict[str, Any], seq: int, prev: str) -> bytes:
    """The stored line of a record: canonical JSON with its place in the chain."""
    record = dict(entry, seq=seq, prev=prev)
    record["hash"] = _digest(as_parsed(record))
    try:
        return rfc8785.dumps(record)
    except rfc8785.CanonicalizationError:
        # A number JSON cannot carry exactly (beyond 2**53, NaN): kept as its text rather
        # than losing the record.
        record = _representable(dict(entry, seq=seq, prev=prev))
        record["hash"] = _digest(as_parsed(record))
        return rfc8785.dumps(record)


def _representable(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) >= 2 ** 53:
        return str(value)
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _representable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_representable(v) for v in value]
    return value


def _lines_backwards(handle: Any) -> Iterator[bytes]:
    """The file's lines, last first, read in blocks from the end."""
    handle.seek(0, os.SEEK_END)
    pos = handle.tell()
    rest = b""
    while pos > 0:
        step = min(4096, pos)
        pos -= step
        handle.seek(pos)
        parts = (handle.read(step) + rest).split(b"\n")
        rest = parts[0]
        for part in reversed(parts[1:]):
            if part:
                yield part
    if rest:
        yield rest


def _last_record(handle: Any) -> Tuple[int, str]:
    """(seq, hash) of the last whole record, skipping torn lines after it; (0, GENESIS)
    for a file without one. A torn line is not part of the chain, so the next record
    follows the last one that is (``verify`` names the torn line)."""
    for raw in _lines_backwards(handle):
        try:
            record = json.loads(raw)
            return int(record["seq"]), str(record["hash"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0, GENESIS


def _seal(handle: Any) -> bool:
    """End a last line cut off without its newline (a writer killed mid-write, a disk
    that filled), so the next record starts a line of its own; True if there was one."""
    handle.seek(0, os.SEEK_END)
    if handle.tell() == 0:
        return False
    handle.seek(-1, os.SEEK_END)
    if handle.read(1) == b"\n":
        return False
    handle.seek(0, os.SEEK_END)
    handle.write(b"\n")
    return True


class JsonlAudit(AuditDriver):
    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        if not settings.path:
            raise Misconfigured("[audit] path is not set", backend="audit")
        self.path = settings.path

    def record(self, entry: Dict[str, Any]) -> None:
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, mode=0o750, exist_ok=True)
            # Created 0640 (the signer and verifiers read it through the group), never
            # wider and never chmodded afterwards.
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            with os.fdopen(fd, "a+b") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    if _seal(handle):
                        LOG.error("audit file %s ended in a torn line (a write cut short); "
                                  "sealed it and appended after it: `novahooks audit verify` "
                                  "names it", self.path)
                    seq, prev = _last_record(handle)
                    handle.seek(0, os.SEEK_END)
                    handle.write(line(entry, seq + 1, prev) + b"\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        except OSError as exc:
            raise BackendUnavailable("cannot append to %s: %s" % (self.path, exc.strerror),
                                     backend="audit") from exc

    def check(self) -> str:
        directory = os.path.dirname(os.path.abspath(self.path))
        target = self.path if os.path.exists(self.path) else directory
        if not os.access(target, os.W_OK):
            raise BackendUnavailable("%s is not writable" % target, backend="audit")
        return "%s writable" % self.path


def records(path: str) -> Iterator[Tuple[int, str]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            yield number, raw.decode("utf-8", errors="replace").rstrip("\n")


def verify(path: str) -> List[str]:
    """Every break in the chain, as 'line N: what is wrong'; empty when intact."""
    return verify_lines(records(path))


def verify_lines(numbered: Iterable[Tuple[int, str]], prev: str = GENESIS,
                 expected_seq: int = 1) -> List[str]:
    """The chain check over some of a file's lines, from the state before the first one.

    A gap in ``seq`` is a removal unless the missing records turn up later in the
    file, which makes it a reordering: so all lines are read before judging.
    """
    parsed: List[Tuple[int, Any, str]] = []
    for number, text in numbered:
        try:
            parsed.append((number, json.loads(text), text))
        except ValueError:
            parsed.append((number, None, text))
    seen = {r.get("seq") for _, r, _ in parsed if isinstance(r, dict)}
    problems: List[str] = []
    for number, record, text in parsed:
        if not isinstance(record, dict):
            problems.append(_not_a_record(number, text))
            continue
        if record.get("hash") != _digest(record):
            problems.append("line %d: content does not match its hash (edited)" % number)
        if record.get("prev") != prev:
            problems.append("line %d: does not follow the previous line (its prev is not "
                            "that line's hash)" % number)
        seq = record.get("seq")
        if seq != expected_seq:
            why = ""
            if isinstance(seq, int) and seq > expected_seq:
                later = all(s in seen for s in range(expected_seq, min(seq, expected_seq + 100)))
                why = (" (reordered: record %d comes later)" % expected_seq if later else
                       " (%d record(s) removed before it)" % (seq - expected_seq))
            elif isinstance(seq, int):
                why = " (reordered: it belongs earlier)"
            problems.append("line %d: sequence %r, expected %d%s" % (number, seq, expected_seq,
                                                                     why))
        prev = record.get("hash", "")
        # After a record out of place, the next one is expected after the highest so far.
        expected_seq = max(expected_seq, seq + 1 if isinstance(seq, int) else expected_seq + 1)
    return problems


def _not_a_record(number: int, text: str) -> str:
    """A line that is no record: torn (the start of one, cut short) or something else."""
    if text.startswith("{") and len(text) < 1 << 20:
        return ("line %d: torn record (%d bytes of a record cut short: a write that did not "
                "finish); the chain goes on from the record before it" % (number, len(text)))
    return "line %d: not valid JSON (edited?)" % number
