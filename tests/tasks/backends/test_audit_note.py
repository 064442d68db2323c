"""C2SP signed notes, checkpoints and cosignatures, against Go's sumdb/note reference note."""

import base64

import pytest

from tasks.backends.audit import checkpoint, note
from tasks.backends.audit.checkpoint import Checkpoint

# The example of golang.org/x/mod/sumdb/note: Ed25519 is deterministic, so signing this
# text with this key must give this exact note, and the note must open with the key.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n")
GO_NOTE = GO_TEXT + ("\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGU"
                     "gYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")


def test_signing_reproduces_the_go_reference_note_byte_for_byte() -> None:
    signer = note.Signer(GO_SKEY)
    assert str(signer.verifier()) == GO_VKEY
    assert note.sign(GO_TEXT, [signer]) == GO_NOTE
    text, verified = note.open_note(GO_NOTE, [note.Verifier(GO_VKEY)])
    assert text == GO_TEXT and verified[0][0].name == "PeterNeumann"


def test_a_changed_note_or_another_key_is_refused() -> None:
    with pytest.raises(note.NoteError, match="does not verify"):
        note.open_note(GO_NOTE.replace("cryptography", "cryptographY"),
                       [note.Verifier(GO_VKEY)])
    _, other = note.generate("PeterNeumann")
    with pytest.raises(note.NoteError, match="no signature by a known key"):
        note.open_note(GO_NOTE, [note.Verifier(other)])
    with pytest.raises(note.NoteError, match="does not match the key"):
        note.Verifier(GO_VKEY.replace("c74f20a3", "c74f20a4"))


def test_checkpoint_with_a_witness_cosignature() -> None:
    log_skey, log_vkey = note.generate("audit.example/log")
    w_skey, w_vkey = note.generate("witness.example/w1", note.COSIGNATURE_V1)
    cp = Checkpoint("audit.example/log", 42, bytes(range(32)))
    signed = checkpoint.sign(cp, note.Signer(log_skey))
    assert signed.startswith("audit.example/log\n42\n%s\n\n\u2014 audit.example/log "
                             % base64.b64encode(bytes(range(32))).decode())
    cosigned = signed + note.Signer(w_skey).signature_line(cp.body(), timestamp=1700000000)
    opened = checkpoint.open_checkpoint(cosigned, note.Verifier(log_vkey),
                                        [note.Verifier(w_vkey)], origin="audit.example/log")
    assert opened.checkpoint == cp
    assert opened.cosigned == [("witness.example/w1", 1700000000)]
    # A cosignature is over "cosignature/v1", the time and the body: a changed time fails.
    name, ident, blob = note.split(cosigned)[1][1]
    forged = blob[:7] + b"\x01" + blob[8:]
    line = "\u2014 %s %s\n" % (name, base64.b64encode(ident.to_bytes(4, "big") + forged)
                               .decode())
    with pytest.raises(note.NoteError, match="witness.example/w1 does not verify"):
        checkpoint.open_checkpoint(signed + line, note.Verifier(log_vkey),
                                   [note.Verifier(w_vkey)])
    # Signed by the witness alone is not a checkpoint of the log.
    alone = cp.body() + "\n" + note.Signer(w_skey).signature_line(cp.body())
    with pytest.raises(note.NoteError, match="not signed by the log key"):
        checkpoint.open_checkpoint(alone, note.Verifier(log_vkey), [note.Verifier(w_vkey)])


def test_checkpoint_body_is_checked() -> None:
    with pytest.raises(note.NoteError, match="decimal"):
        checkpoint.parse_body("o\n012\n%s\n" % base64.b64encode(bytes(32)).decode())
    with pytest.raises(note.NoteError, match="not 32"):
        checkpoint.parse_body("o\n12\n%s\n" % base64.b64encode(bytes(31)).decode())
