"""Check an audit file against checkpoints signed outside it; prove records and extensions.

A checkpoint says "the first N records hash to this root". Whoever can write
the file can keep its hash chain self-consistent after cutting its tail or
rewriting it from scratch, but cannot make it hash to a root that was signed
(and anchored) before: so a file shorter than a checkpoint is truncated, and
a file whose first N records do not hash to the root was changed. The chain
(tasks/backends/audit/jsonl.py) then names the line where it can.
"""

import json
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from tasks.backends.audit import jsonl, log
from tasks.backends.audit.checkpoint import Signed
from tasks.backends.audit.merkle import ProofError, verify_consistency, verify_inclusion


class Report(NamedTuple):
    problems: List[str]
    #: Records in the file, and how many of them the largest good checkpoint covers.
    size: int
    covered: int
    notes: List[str]

    def kinds(self) -> List[str]:
        """What kinds of tampering the problems show, for a one-line verdict."""
        marks = (("truncated", "truncated: "), ("rewritten", ": rewritten ("),
                 ("edited", "(edited)"), ("removed", "removed"), ("reordered", "(reordered"),
                 ("split view", "(split view)"), ("incomplete", ": incomplete ("),
                 ("torn", ": torn record ("))
        return [kind for kind, mark in marks if any(mark in p for p in self.problems)]


def _chain_from(path: str, first: int) -> List[str]:
    """The chain check of lines ``first``.. (1-based), starting from the line before."""
    prev, seq = jsonl.GENESIS, 1
    numbered = jsonl.records(path)
    if first > 1:
        for number, text in numbered:
            if number == first - 1:
                try:
                    before = json.loads(text)
                    prev, seq = before.get("hash", ""), int(before.get("seq", 0)) + 1
                except (ValueError, TypeError):
                    pass
                break
    return jsonl.verify_lines(numbered, prev, seq)


def verify_log(path: str, checkpoints: Sequence[Signed]) -> Report:
    """Every way the file departs from the (already signature-checked) checkpoints.

    The smallest checkpoint the file fails is the one reported (with how the file
    fails it), then the chain's own findings from the last checkpoint that held.
    """
    current = log.Log(path)
    size = current.catch_up()
    problems: List[str] = []
    notes: List[str] = []
    by_size: Dict[int, bytes] = {}
    good = 0
    failed: Optional[Tuple[int, str]] = None
    for signed in sorted(checkpoints, key=lambda s: s.checkpoint.size):
        cp = signed.checkpoint
        if by_size.get(cp.size, cp.root) != cp.root:
            problems.append("checkpoints disagree at size %d: the signer signed two different "
                            "logs (split view)" % cp.size)
        by_size[cp.size] = cp.root
        if failed is not None:
            continue
        if cp.size > size:
            failed = (cp.size, "short")
        elif current.tree.root(cp.size) != cp.root:
            failed = (cp.size, "changed")
        else:
            good = cp.size
    if failed is not None:
        bad, how = failed
        chain = _chain_from(path, good + 1)
        within = [p for p in chain if _line_of(p) <= min(bad, size)]
        removed = any("removed" in p for p in within)
        if how == "short" and removed:
            problems.append("records were removed: the checkpoint of size %d covers %d "
                            "records, the file holds %d" % (bad, bad, size))
        elif how == "short":
            problems.append("truncated: the checkpoint of size %d covers %d records, the file "
                            "holds %d (records %d-%d are gone, or the file was rewritten "
                            "shorter)" % (bad, bad, size, size + 1, bad))
        elif within:
            problems.append("records 1-%d do not hash to the root of the checkpoint of size "
                            "%d: changed since it was signed (lines named below)" % (bad, bad))
        else:
            problems.append("records %d-%d: the chain is intact but they are not the records "
                            "the checkpoint of size %d signed: rewritten (the chain recomputed "
                            "or the file written anew)" % (good + 1, bad, bad))
        problems.extend(chain)
        if good:
            notes.append("records 1-%d match the checkpoint of size %d" % (good, good))
    elif good < size:
        problems.extend(_chain_from(path, good + 1))
        notes.append("%d record(s) after the last checkpoint (size %d) are not covered by one "
                     "yet; their chain was checked" % (size - good, good))
    tail = current.partial_tail()
    if tail:
        problems.append("line %d: incomplete (%d bytes without a newline): a cut line or a "
                        "write in progress" % (size + 1, tail))
    return Report(problems, size, good, notes)


def _line_of(problem: str) -> int:
    head = problem.split(":", 1)[0]
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else 0


def prove(path: str, signed: Signed, instance_uuid: str) -> Dict[str, Any]:
    """Every record of one instance with its inclusion proof against ``signed``.

    Each proof is checked here against the checkpoint's root before it is
    printed, so a record the checkpoint does not cover is named as such.
    """
    current = log.Log(path)
    size = current.catch_up()
    cp = signed.checkpoint
    if size < cp.size or current.tree.root(cp.size) != cp.root:
        raise ProofError("the file no longer matches the checkpoint of size %d "
                         "(run novahooks audit verify)" % cp.size)
    proven, pending = [], []
    for index, record in current.find(instance_uuid):
        if index >= cp.size:
            pending.append({"index": index, "record": record})
            continue
        leaf = current.tree.leaf(index)
        proof = current.tree.inclusion_proof(index, cp.size)
        verify_inclusion(index, cp.size, leaf, proof, cp.root)
        proven.append({"index": index, "record": record, "leaf_hash": log.b64(leaf),
                       "proof": [log.b64(p) for p in proof]})
    return {"instance_uuid": instance_uuid, "checkpoint": {"origin": cp.origin,
                                                           "size": cp.size,
                                                           "root": log.b64(cp.root)},
            "cosigned_by": [name for name, _ in signed.cosigned],
            "records": proven, "not_yet_checkpointed": pending}


def consistency(path: str, old: Signed, new: Signed) -> Dict[str, Any]:
    """The RFC 9162 proof that ``new`` extends ``old``, computed from the file and checked
    against the two roots alone (ProofError if it does not hold)."""
    a, b = sorted((old.checkpoint, new.checkpoint), key=lambda c: c.size)
    if a.origin != b.origin:
        raise ProofError("checkpoints of two logs: %r and %r" % (a.origin, b.origin))
    current = log.Log(path)
    size = current.catch_up()
    if size < b.size:
        raise ProofError("truncated: the file holds %d records, the checkpoint %d"
                         % (size, b.size))
    proof = current.tree.consistency_proof(a.size, b.size)
    verify_consistency(a.size, b.size, proof, a.root, b.root)
    return {"origin": a.origin, "old": {"size": a.size, "root": log.b64(a.root)},
            "new": {"size": b.size, "root": log.b64(b.root)},
            "proof": [log.b64(p) for p in proof]}
