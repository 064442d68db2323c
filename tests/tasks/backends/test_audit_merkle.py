"""RFC 9162 hashing and proofs against the RFC 6962 test vectors, properties, proof sizes."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.backends.audit.merkle import (EMPTY_ROOT, ProofError, Tree, leaf_hash,
                                         verify_consistency, verify_inclusion)

h = bytes.fromhex
# The leaves and roots of the RFC 6962 reference tests (certificate-transparency-go,
# Trillian, transparency-dev/merkle): independent implementations that agree.
LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
          "606162636465666768696a6b6c6d6e6f"]
ROOTS = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
         "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
         "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
         "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
         "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
         "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
         "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
         "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]


def _tree(n: int) -> Tree:
    return Tree(leaf_hash(b"record %d" % i) for i in range(n))


def test_roots_match_the_reference_vectors() -> None:
    tree = Tree(leaf_hash(h(x)) for x in LEAVES)
    assert [tree.root(n + 1).hex() for n in range(8)] == ROOTS
    assert tree.root(0) == EMPTY_ROOT


def test_proofs_match_the_reference_vectors() -> None:
    tree = Tree(leaf_hash(h(x)) for x in LEAVES)
    assert [p.hex() for p in tree.inclusion_proof(5, 8)] == [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]
    assert [p.hex() for p in tree.consistency_proof(6, 8)] == [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]
    assert [p.hex() for p in tree.consistency_proof(2, 5)] == [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]
    verify_consistency(6, 8, tree.consistency_proof(6, 8), h(ROOTS[5]), h(ROOTS[7]))
    with pytest.raises(ProofError, match="old root"):
        verify_consistency(6, 8, tree.consistency_proof(6, 8), h(ROOTS[4]), h(ROOTS[7]))
    with pytest.raises(ProofError):
        verify_inclusion(4, 8, leaf_hash(h(LEAVES[5])), tree.inclusion_proof(5, 8),
                         h(ROOTS[7]))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.data())
def test_every_proof_verifies_and_any_change_breaks_it(n: int, data: st.DataObject) -> None:
    tree = _tree(n)
    index = data.draw(st.integers(0, n - 1))
    proof = tree.inclusion_proof(index)
    verify_inclusion(index, n, tree.leaf(index), proof, tree.root())
    with pytest.raises(ProofError):
        verify_inclusion(index, n, leaf_hash(b"forged"), proof, tree.root())
    if proof:
        flipped = list(proof)
        flipped[data.draw(st.integers(0, len(proof) - 1))] = leaf_hash(b"x")
        with pytest.raises(ProofError):
            verify_inclusion(index, n, tree.leaf(index), flipped, tree.root())
    old = data.draw(st.integers(0, n))
    consistency = tree.consistency_proof(old, n)
    verify_consistency(old, n, consistency, tree.root(old), tree.root(n))
    if 0 < old < n:
        other = _tree(old - 1)
        other.append(leaf_hash(b"rewritten"))
        with pytest.raises(ProofError):
            verify_consistency(old, n, consistency, other.root(), tree.root(n))


def test_a_smaller_tree_never_extends_a_larger_one() -> None:
    tree = _tree(10)
    with pytest.raises(ProofError, match="never shrinks"):
        verify_consistency(10, 9, [], tree.root(10), tree.root(9))
    with pytest.raises(ProofError, match="two different roots"):
        verify_consistency(10, 10, [], tree.root(10), tree.root(9))


@pytest.mark.parametrize("n", [10, 1000, 100000])
def test_proof_sizes_are_logarithmic(n: int) -> None:
    tree = _tree(n)
    depth = math.ceil(math.log2(n))
    sample = range(0, n, max(1, n // 97))
    inclusion = max(len(tree.inclusion_proof(i)) for i in sample)
    consistency = max(len(tree.consistency_proof(m)) for m in sample if m)
    print("n=%d: inclusion proof %d hashes, consistency proof %d (log2 n = %.1f)"
          % (n, inclusion, consistency, math.log2(n)))
    assert inclusion == depth
    assert consistency <= 2 * depth
