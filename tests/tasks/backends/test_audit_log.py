"""The Merkle log the real workers write, signed by a signer process, anchored outside it.

The session's workers append to the stack's audit file; here a signer (its own
process, key file mode 0400) checkpoints that file every few records, and hands
each checkpoint to a witness process, a WORM-style directory and a syslog
socket. Then every tamper case is made on a copy of what the workers wrote and
must be named by ``novahooks audit verify`` from the checkpoint in the anchor
directory; ``prove`` and ``consistency`` run on the live file.
"""

import base64
import functools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Tuple

import pytest
import requests
import rfc8785

from tasks.backends.audit import checkpoint, jsonl, note
from tasks.backends.audit.checkpoint import Checkpoint
from tasks.backends.audit.log import Log
from tasks.backends.audit.merkle import leaf_hash, verify_inclusion
from tasks.simulate import Vm, create, delete, with_uuid
from tests.conftest import mac, unique_v4
from tests.helpers import audit_lines, until
from tests.servers.base import Process, free_port, port_open, wait_for
from tests.servers.stack import Processes, Stack

pytestmark = pytest.mark.usefixtures("hook_outbox")


class Trail(NamedTuple):
    workdir: Path
    config: Path
    vkey: str
    wkey: str
    log_key: Path
    log: Path
    worm: Path
    syslog: socket.socket
    vm: str
    metrics_port: int
    witness_port: int


def cli(config: Path, *args: str) -> Tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "novahooks.cli", "--config", str(config)]
                            + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=120)
    return result.returncode, result.stdout


def keygen(workdir: Path, name: str, *extra: str) -> Tuple[Path, str]:
    path = workdir / ("%s.key" % name.replace("/", "_"))
    rc, out = cli(workdir / "none.conf", "audit", "keygen", name, "--out", str(path), *extra)
    assert rc == 0, out
    assert oct(path.stat().st_mode & 0o777) == "0o400"
    return path, out.strip().splitlines()[-1]


def write_config(target: Path, **audit: Any) -> Path:
    target.write_text("[audit]\n" + "".join("%s = %s\n" % kv for kv in audit.items()))
    return target


def latest(trail: Trail) -> checkpoint.Signed:
    return checkpoint.read(str(trail.log) + ".checkpoint", note.Verifier(trail.vkey),
                           [note.Verifier(trail.wkey)])


def _done(stack: Stack, vm: Vm, kind: str) -> bool:
    return any(r["stage"] == "done" and r["kind"] == kind
               for r in audit_lines(stack.audit_path, str(vm.uuid)))


@pytest.fixture(scope="module")
def trail(stack: Stack, processes: Processes,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    workdir = tmp_path_factory.mktemp("trail")
    (workdir / "none.conf").write_text("")
    log_key, vkey = keygen(workdir, "audit.novahooks.test/log")
    witness_key, wkey = keygen(workdir, "witness.novahooks.test/w1", "--witness")
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    syslog.bind(("127.0.0.1", 0))
    syslog.settimeout(10)
    witness_port, metrics_port = free_port(), free_port()
    config = write_config(
        workdir / "audit.conf", path=stack.audit_path, verifier_key=vkey,
        signer_key_path=log_key, signer_socket=workdir / "run" / "signer.sock",
        checkpoint_every=3, checkpoint_interval=1, anchor_dir=workdir / "worm",
        anchor_syslog="true", syslog_host="127.0.0.1", syslog_port=syslog.getsockname()[1],
        witness_url="http://127.0.0.1:%d" % witness_port, witness_key=wkey,
        witness_key_path=witness_key, witness_state=workdir / "witness.json",
        witness_listen="127.0.0.1:%d" % witness_port, metrics_port=metrics_port,
        strict="true")
    argv = [sys.executable, "-m", "novahooks.cli", "--config", str(config), "audit"]
    witness = Process("witness", argv + ["witness"], workdir / "witness.log")
    signer = None
    try:
        wait_for(lambda: port_open(witness_port), 90, "witness", witness.proc,
                 workdir / "witness.log")
        signer = Process("signer", argv + ["signer"], workdir / "signer.log")
        wait_for(lambda: (workdir / "run" / "signer.sock").exists(), 90, "signer socket",
                 signer.proc, workdir / "signer.log")
        # Two VMs, the one under test second, so that its records sit inside the log.
        before, vm = (with_uuid(Vm(name, ((unique_v4(), mac()),)))
                      for name in ("audit-before", "audit-proof"))
        for each in (before, vm):
            create(each)
            until(functools.partial(_done, stack, each, "build"), 180, "build")
        for each in (before, vm):
            delete(each)
            until(functools.partial(_done, stack, each, "delete"), 180, "delete")
        yield Trail(workdir, config, vkey, wkey, log_key, Path(stack.audit_path),
                    workdir / "worm", syslog, str(vm.uuid), metrics_port, witness_port)
    finally:
        if signer is not None:
            signer.stop()
        witness.stop()
        syslog.close()


def records_of(trail: Trail) -> List[int]:
    """Leaf indexes of the trail VM's records in the live file."""
    return [i for i, _ in Log(str(trail.log)).find(trail.vm)]


def covered(trail: Trail) -> checkpoint.Signed:
    """A checkpoint the signer made by itself that covers the VM's last record."""
    last = records_of(trail)[-1]

    def covering() -> Any:
        signed = latest(trail) if (trail.log.parent / (trail.log.name + ".checkpoint")
                                   ).exists() else None
        return signed if signed and signed.checkpoint.size > last else None
    return until(covering, 60, "a checkpoint covering record %d" % last)


def test_checkpoints_follow_the_workers_and_reach_every_anchor(trail: Trail) -> None:
    signed = covered(trail)
    cp = signed.checkpoint
    assert cp.origin == "audit.novahooks.test/log"
    assert Log(str(trail.log)).catch_up() >= cp.size
    # The witness cosigned it, and the WORM directory and syslog got the cosigned note.
    assert [name for name, _ in signed.cosigned] == ["witness.novahooks.test/w1"]
    until(lambda: (trail.worm / ("%020d.checkpoint" % cp.size)).exists(), 10, "WORM file")
    assert (trail.worm / ("%020d.checkpoint" % cp.size)).read_text() == signed.note
    assert oct((trail.worm / ("%020d.checkpoint" % cp.size)).stat().st_mode & 0o777) == "0o444"
    messages = []
    while True:
        try:
            messages.append(trail.syslog.recv(65535))
        except socket.timeout:
            break
        if b'size="%d"' % cp.size in messages[-1]:
            break
    header, _, body = messages[-1].partition(b"\xef\xbb\xbf")
    assert b'root="%s"' % base64.b64encode(cp.root) in header
    assert body.decode() == signed.note
    state = json.loads((trail.workdir / "witness.json").read_text())
    assert state["audit.novahooks.test/log"]["size"] >= cp.size
    # Only the signer (and its group) may talk to it.
    sock = trail.workdir / "run" / "signer.sock"
    assert oct(sock.stat().st_mode & 0o777) == "0o660"
    assert oct(sock.parent.stat().st_mode & 0o777) == "0o750"
    rc, out = cli(trail.config, "audit", "checkpoint", "--status")
    status = json.loads(out)
    assert rc == 0 and status["refused"] is None and status["records"] >= cp.size
    rc, out = cli(trail.config, "audit", "checkpoint")
    assert rc == 0 and out.startswith("audit.novahooks.test/log\n"), out


def test_prove_gives_each_record_of_the_vm_with_a_logarithmic_inclusion_proof(
        trail: Trail) -> None:
    covered(trail)
    rc, out = cli(trail.config, "audit", "prove", trail.vm, "--json")
    assert rc == 0, out
    answer = json.loads(out)
    size = answer["checkpoint"]["size"]
    root = base64.b64decode(answer["checkpoint"]["root"])
    stages = [(r["record"]["kind"], r["record"]["stage"]) for r in answer["records"]]
    assert ("build", "done") in stages and ("delete", "done") in stages
    assert answer["cosigned_by"] == ["witness.novahooks.test/w1"]
    for item in answer["records"]:
        # The leaf is the record's RFC 8785 form, exactly as the worker stored it.
        leaf = leaf_hash(rfc8785.dumps(item["record"]))
        assert base64.b64encode(leaf).decode() == item["leaf_hash"]
        proof = [base64.b64decode(p) for p in item["proof"]]
        verify_inclusion(item["index"], size, leaf, proof, root)
        assert len(proof) <= math.ceil(math.log2(size))
    rc, text = cli(trail.config, "audit", "prove", trail.vm)
    assert rc == 0 and "proof, verified" in text, text


def test_consistency_between_two_checkpoints_of_the_workers_log(trail: Trail) -> None:
    covered(trail)
    files = sorted(trail.worm.glob("*.checkpoint"))
    assert len(files) >= 2, files
    rc, out = cli(trail.config, "audit", "consistency", str(files[0]), str(files[-1]), "--json")
    assert rc == 0, out
    answer = json.loads(out)
    assert answer["old"]["size"] < answer["new"]["size"]
    assert len(answer["proof"]) <= 2 * math.ceil(math.log2(answer["new"]["size"]))


def _rechain(records: List[Dict[str, Any]], start: int) -> List[Dict[str, Any]]:
    """What a writer who knows the format does: recompute the chain after its change."""
    prev = records[start - 1]["hash"] if start else jsonl.GENESIS
    for seq, record in enumerate(records[start:], start + 1):
        record.update(seq=seq, prev=prev)
        record["hash"] = jsonl._digest(record)
        prev = record["hash"]
    return records


def _edit(lines: List[bytes], k: int) -> List[bytes]:
    record = json.loads(lines[k])
    record["hostname"] = "forged"
    return lines[:k] + [rfc8785.dumps(record)] + lines[k + 1:]


def _edit_and_rechain(lines: List[bytes], k: int) -> List[bytes]:
    records = [json.loads(x) for x in lines]
    records[k]["stage"] = "failed"
    return [rfc8785.dumps(r) for r in _rechain(records, k)]


def _from_scratch(lines: List[bytes], k: int) -> List[bytes]:
    records = [{"instance_uuid": "00000000-0000-0000-0000-%012d" % i, "stage": "done",
                "kind": "build", "time": time.time()} for i in range(len(lines))]
    return [rfc8785.dumps(r) for r in _rechain(records, 0)]


TAMPERS = {
    "intact": (lambda lines, k: lines, None),
    "edit": (_edit, "line %(line)d: content does not match its hash (edited)"),
    "edit, chain recomputed": (_edit_and_rechain, "rewritten (the chain recomputed"),
    "reorder": (lambda lines, k: lines[:k] + [lines[k + 1], lines[k]] + lines[k + 2:],
                "line %(line)d: sequence %(next)d, expected %(line)d (reordered"),
    "deletion": (lambda lines, k: lines[:k] + lines[k + 1:],
                 "line %(line)d: sequence %(next)d, expected %(line)d (1 record(s) removed"),
    "truncation": (lambda lines, k: lines[:k], "truncated: the checkpoint of size"),
    "rewrite from scratch": (_from_scratch, "rewritten (the chain recomputed or the file "
                             "written anew)"),
    "rewrite from scratch, shorter": (lambda lines, k: _from_scratch(lines[:k], k),
                                      "truncated: the checkpoint of size"),
}


@pytest.mark.parametrize("case", list(TAMPERS))
def test_verify_names_each_tamper_from_the_anchored_checkpoint(trail: Trail, tmp_path: Path,
                                                               case: str) -> None:
    signed = covered(trail)
    size = signed.checkpoint.size
    anchored = trail.worm / ("%020d.checkpoint" % size)
    until(anchored.exists, 10, "WORM file")
    # What the workers wrote, up to the anchored checkpoint.
    lines = trail.log.read_bytes().split(b"\n")[:size]
    k = records_of(trail)[0]  # the VM's first record: a real one, in the middle of the file
    change, expected = TAMPERS[case]
    copy = tmp_path / "audit.jsonl"
    copy.write_bytes(b"".join(x + b"\n" for x in change(list(lines), k)))
    rc, out = cli(trail.config, "audit", "verify", str(copy), "--checkpoint", str(anchored))
    print("%s:\n%s" % (case, out))
    if expected is None:
        assert rc == 0 and "audit log intact" in out, out
        return
    assert rc == 1, out
    assert expected % {"line": k + 1, "next": k + 2} in out, out
    assert "audit log BROKEN" in out


def test_verify_refuses_a_checkpoint_not_signed_by_the_log_key(trail: Trail,
                                                               tmp_path: Path) -> None:
    signed = covered(trail)
    forged = tmp_path / "forged.checkpoint"
    body, rest = signed.note.split("\n", 1)[0], signed.note.split("\n", 2)[2]
    forged.write_text("%s\n%d\n%s" % (body, signed.checkpoint.size - 1, rest))
    rc, out = cli(trail.config, "audit", "verify", str(trail.log), "--checkpoint", str(forged))
    assert rc == 1 and "signature of audit.novahooks.test/log does not verify" in out, out
    other, _ = note.generate("audit.novahooks.test/log")
    own = tmp_path / "own.checkpoint"
    own.write_text(checkpoint.sign(signed.checkpoint, note.Signer(other)))
    rc, out = cli(trail.config, "audit", "verify", str(trail.log), "--checkpoint", str(own))
    assert rc == 1 and "not signed by the log key" in out, out


def _witness_config(trail: Trail, workdir: Path, port: int) -> Path:
    key, wkey = keygen(workdir, "witness.novahooks.test/w2", "--witness")
    return write_config(workdir / "w2.conf", verifier_key=trail.vkey, witness_key_path=key,
                        witness_state=workdir / "w2.json", witness_listen="127.0.0.1:%d" % port,
                        path=trail.log)


def test_a_witness_refuses_a_rolled_back_or_forked_log(trail: Trail, tmp_path: Path) -> None:
    """Even with the log's key, a cut or rewritten log gets no cosignature."""
    covered(trail)
    (tmp_path / "none.conf").write_text("")
    port = free_port()
    config = _witness_config(trail, tmp_path, port)
    witness = Process("witness2", [sys.executable, "-m", "novahooks.cli", "--config",
                                   str(config), "audit", "witness"], tmp_path / "w2.log")
    try:
        wait_for(lambda: port_open(port), 90, "witness", witness.proc, tmp_path / "w2.log")
        url = "http://127.0.0.1:%d/add-checkpoint" % port
        key = note.Signer(trail.log_key.read_text())
        log = Log(str(trail.log))
        log.catch_up()
        tree, n = log.tree, log.tree.size

        def submit(old: int, size: int, root: bytes, proof: List[bytes]) -> Any:
            signed = checkpoint.sign(Checkpoint(key.name, size, root), key)
            body = "old %d\n%s\n%s" % (old, "".join(base64.b64encode(p).decode() + "\n"
                                                    for p in proof), signed)
            return requests.post(url, data=body.encode(), timeout=10)

        first = submit(0, n - 4, tree.root(n - 4), [])
        assert first.status_code == 200 and first.text.startswith(
            "\u2014 witness.novahooks.test/w2 "), first.text
        grown = submit(n - 4, n, tree.root(n), tree.consistency_proof(n - 4, n))
        assert grown.status_code == 200, grown.text
        # Rolled back: a smaller tree, whatever old size the log claims.
        back = submit(n - 2, n - 2, tree.root(n - 2), [])
        assert back.status_code == 409 and back.text == "%d\n" % n
        assert back.headers["Content-Type"] == "text/x.tlog.size"
        assert submit(n, n - 2, tree.root(n - 2), []).status_code == 400
        # Forked: the same size with another root, or a larger tree that does not extend it.
        lines = _edit(trail.log.read_bytes().split(b"\n")[:n], n - 3)
        lines += [rfc8785.dumps({"instance_uuid": "later", "n": i}) for i in range(2)]
        (tmp_path / "forked.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
        forked = Log(str(tmp_path / "forked.jsonl"))
        forked.catch_up()
        assert submit(n, n, forked.tree.root(n), []).status_code == 409
        refused = submit(n, n + 2, forked.tree.root(n + 2),
                         forked.tree.consistency_proof(n, n + 2))
        assert refused.status_code == 422 and "not consistent with size %d" % n in refused.text
        # An unknown key is not the log.
        stranger = note.Signer(note.generate(key.name)[0])
        body = "old %d\n\n%s" % (n, checkpoint.sign(Checkpoint(key.name, n + 2,
                                                               tree.root(n)), stranger))
        assert requests.post(url, data=body.encode(), timeout=10).status_code == 403
        held = json.loads((tmp_path / "w2.json").read_text())[key.name]
        assert held == {"size": n, "root": base64.b64encode(tree.root(n)).decode()}
    finally:
        witness.stop()


def test_check_reports_checkpoint_and_anchor_ages(trail: Trail) -> None:
    from novahooks.settings import load_settings
    from tasks import audit_metrics
    signed = covered(trail)
    config = load_settings(str(trail.config)).audit

    def anchored() -> Any:
        report = audit_metrics.health(config)
        return report if all(a["size"] for a in report["anchors"].values()) else None
    report = until(anchored, 15, "every anchor holding a checkpoint")
    assert report["problems"] == [], report
    assert report["size"] >= signed.checkpoint.size
    assert report["checkpoint_age_s"] < 60 and report["anchored_age_s"] < 60
    assert sorted(report["anchors"]) == ["syslog", "witness", "worm"]
    assert report["verify_failures"] == 0
    scrape = requests.get("http://127.0.0.1:%d/metrics" % trail.metrics_port, timeout=10).text
    values = dict(line.rsplit(" ", 1) for line in scrape.splitlines()
                  if line and not line.startswith("#"))
    assert float(values["novahooks_audit_checkpoint_size"]) >= report["size"]
    assert float(values["novahooks_audit_records"]) >= report["size"]
    assert 'novahooks_audit_anchor_age_seconds{anchor="witness"}' in scrape
    assert "novahooks_audit_verify_failures 0.0" in scrape


def test_a_signer_on_a_cut_log_stops_signing_and_check_says_why(trail: Trail,
                                                                tmp_path: Path) -> None:
    from novahooks.settings import load_settings
    from tasks import audit_metrics
    from tasks.audit_signer import Signer
    signed = covered(trail)
    size = signed.checkpoint.size
    lines = trail.log.read_bytes().split(b"\n")[:size]
    (tmp_path / "audit.jsonl").write_bytes(b"".join(x + b"\n" for x in lines[:size - 2]))
    (tmp_path / "audit.jsonl.checkpoint").write_text(signed.note)
    key = tmp_path / "log.key"
    shutil.copy(trail.log_key, key)
    config = load_settings(str(write_config(
        tmp_path / "cut.conf", path=tmp_path / "audit.jsonl", verifier_key=trail.vkey,
        signer_key_path=key, signer_socket=tmp_path / "s.sock", checkpoint_every=1))).audit
    signer = Signer(config)
    assert signer.refused and signer.refused.startswith("truncated: the log holds %d records, "
                                                        "the last checkpoint %d"
                                                        % (size - 2, size))
    assert signer.tick() is None
    assert (tmp_path / "audit.jsonl.checkpoint").read_text() == signed.note
    report = audit_metrics.health(config)
    assert report["verify_failures"] == 1
    assert any("the signer stopped signing: truncated" in p for p in report["problems"])
    assert any(p.startswith("truncated: the log holds") for p in report["problems"])


def test_the_signer_refuses_a_key_file_others_can_read(trail: Trail, tmp_path: Path) -> None:
    from novahooks.settings import load_settings
    from tasks.audit_signer import Signer
    from tasks.errors import Misconfigured
    key = tmp_path / "log.key"
    shutil.copy(trail.log_key, key)
    os.chmod(key, 0o644)
    config = load_settings(str(write_config(tmp_path / "k.conf", path=tmp_path / "a.jsonl",
                                            signer_key_path=key))).audit
    with pytest.raises(Misconfigured, match="mode 0644; only its owner may read it"):
        Signer(config)


def test_novahooks_check_reports_the_checkpoint(stack: Stack, trail: Trail,
                                                tmp_path: Path) -> None:
    import configparser
    covered(trail)
    merged = configparser.ConfigParser(interpolation=None)
    merged.read([str(stack.config_path), str(trail.config)])
    with open(tmp_path / "check.conf", "w") as handle:
        merged.write(handle)
    rc, out = cli(tmp_path / "check.conf", "check", "--json")
    rows = {row["check"]: row for row in json.loads(out[out.index("["):])}
    row = rows["audit/checkpoint"]
    assert row["ok"], row
    assert row["detail"].startswith("checkpoint of ") and "verify failures: 0" in row["detail"]
    assert "witness" in row["detail"] and "worm" in row["detail"] and "syslog" in row["detail"]


def test_records_name_the_backends_objects_and_hold_no_secret(stack: Stack,
                                                              trail: Trail) -> None:
    text = trail.log.read_text()
    secrets = [p.read_text().strip() for p in (stack.workdir / "secrets").iterdir()]
    assert secrets and not [s for s in secrets if s in text]
    build = [r for r in audit_lines(trail.log, trail.vm)
             if r["kind"] == "build" and r["stage"] == "done"][-1]
    assert build["backends"]["directory"]["dn"].startswith("cn=audit-proof,"), build
    assert build["backends"]["inventory"]["id"], build
