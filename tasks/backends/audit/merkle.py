"""RFC 9162 Merkle tree hashing, inclusion and consistency proofs.

The audit file's records are the leaves: ``SHA-256(0x00 || record)`` for a
leaf, ``SHA-256(0x01 || left || right)`` for a node, the tree split at the
largest power of two below its size. A checkpoint (size, root) then commits to
every record before it; an inclusion proof shows one record is in it with
log2(size) hashes, a consistency proof shows a larger tree extends a smaller
one without either party reading the records. Standard library only, so a
verifier needs nothing but this module and the public key.

:class:`Tree` keeps, per height, the hashes of the complete subtrees it has
seen (32 bytes each in one ``bytearray``), so appending costs one leaf hash
plus on average one node hash, and any proof is a handful of look-ups.
"""

import hashlib
from typing import Iterable, Iterator, List, Sequence, Tuple

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof does not verify; the message says which check failed."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


class Tree(object):
    """An append-only Merkle tree over leaf hashes, answering for any size it has reached."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        #: levels[k]: the roots of the complete, aligned subtrees of 2**k leaves, in order.
        self.levels: List[bytearray] = [bytearray()]
        self.size = 0
        for digest in leaf_hashes:
            self.append(digest)

    def append(self, digest: bytes) -> int:
        """Add one leaf hash; return its index."""
        index = self.size
        self.levels[0] += digest
        self.size += 1
        height, count = 0, self.size
        while count % 2 == 0:
            level = self.levels[height]
            pair = level[-2 * HASH_SIZE:]
            if height + 1 == len(self.levels):
                self.levels.append(bytearray())
            self.levels[height + 1] += node_hash(bytes(pair[:HASH_SIZE]),
                                                 bytes(pair[HASH_SIZE:]))
            height, count = height + 1, count // 2
        return index

    def leaf(self, index: int) -> bytes:
        return bytes(self.levels[0][index * HASH_SIZE:(index + 1) * HASH_SIZE])

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range of the leaves seen so far."""
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:
            height = n.bit_length() - 1
            slot = start >> height
            return bytes(self.levels[height][slot * HASH_SIZE:(slot + 1) * HASH_SIZE])
        k = _split(n)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def root(self, size: int = -1) -> bytes:
        size = self.size if size < 0 else size
        self._within(size)
        return self.subtree(0, size)

    def inclusion_proof(self, index: int, size: int = -1) -> List[bytes]:
        """PATH(index, D[0:size]) of RFC 9162, section 2.1.3.1."""
        size = self.size if size < 0 else size
        self._within(size)
        if not 0 <= index < size:
            raise ProofError("leaf %d is not in a tree of size %d" % (index, size))
        proof: List[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self.subtree(start + k, end))
                end = start + k
            else:
                proof.append(self.subtree(start, start + k))
                start += k
        return proof[::-1]

    def consistency_proof(self, old: int, new: int = -1) -> List[bytes]:
        """PROOF(old, D[0:new]) of RFC 9162, section 2.1.4.1."""
        new = self.size if new < 0 else new
        self._within(new)
        if not 0 <= old <= new:
            raise ProofError("no consistency proof from size %d to %d" % (old, new))
        if old == 0 or old == new:
            return []
        proof: List[bytes] = []
        start, end, complete = 0, new, True
        m = old
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self.subtree(start + k, end))
                end = start + k
            else:
                proof.append(self.subtree(start, start + k))
                start, m, complete = start + k, m - k, False
        if not complete:
            proof.append(self.subtree(start, end))
        return proof[::-1]

    def _within(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ProofError("size %d is beyond the %d leaves this tree holds"
                             % (size, self.size))


def _walk(fn: int, sn: int, path: Sequence[bytes],
          what: str) -> Iterator[Tuple[bytes, bool]]:
    """The walk both RFC 9162 verifications make from node ``fn`` up a tree whose last node
    is ``sn``: each proof node, and whether it is the left sibling. Raises ProofError when
    the path is longer or shorter than the tree is deep."""
    for node in path:
        if sn == 0:
            raise ProofError("%s proof is longer than the tree is deep" % what)
        left = bool(fn & 1) or fn == sn
        yield node, left
        if left:
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("%s proof is shorter than the tree is deep" % what)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes],
                     root: bytes) -> None:
    """RFC 9162, section 2.1.3.2; raises ProofError unless ``leaf`` is at ``index``."""
    if not 0 <= index < size:
        raise ProofError("leaf index %d is outside a tree of size %d" % (index, size))
    r = leaf
    for p, left in _walk(index, size - 1, proof, "inclusion"):
        r = node_hash(p, r) if left else node_hash(r, p)
    if r != root:
        raise ProofError("inclusion proof leads to a different root")


def verify_consistency(old: int, new: int, proof: Sequence[bytes], old_root: bytes,
                       new_root: bytes) -> None:
    """RFC 9162, section 2.1.4.2; raises ProofError unless tree ``new`` extends tree ``old``."""
    if old > new:
        raise ProofError("size %d is smaller than %d: a tree never shrinks" % (new, old))
    if old == new:
        if proof:
            raise ProofError("a proof between trees of one size must be empty")
        if old_root != new_root:
            raise ProofError("two different roots for the same size %d" % old)
        return
    if old == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("empty consistency proof from %d to %d" % (old, new))
    path = list(proof)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c, left in _walk(fn, sn, path[1:], "consistency"):
        if left:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
        else:
            sr = node_hash(sr, c)
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root (size %d)" % old)
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root (size %d)" % new)
