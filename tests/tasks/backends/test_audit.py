"""Hash-chained JSONL audit and RFC 5424 syslog, with real files and a real UDP socket."""

import json
import multiprocessing
import re
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.backends.audit.jsonl import JsonlAudit, verify
from tasks.backends.audit.syslog import SyslogAudit
from tasks.errors import Misconfigured

DATA = Path(__file__).resolve().parents[2] / "data" / "audit"


def _writer(path: str, n: int) -> None:
    sink = JsonlAudit(SimpleNamespace(path=path))
    for i in range(n):
        sink.record({"instance_uuid": "u", "stage": "done", "i": i})


def test_chain_survives_concurrent_writers_and_verifies(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.jsonl")
    procs = [multiprocessing.Process(target=_writer, args=(path, 50)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 200
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 201))
    assert verify(path) == []


def test_verify_names_edited_and_removed_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlAudit(SimpleNamespace(path=str(path)))
    for i in range(5):
        sink.record({"instance_uuid": "u%d" % i, "stage": "done"})
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["instance_uuid"] = "forged"
    lines[1] = json.dumps(edited, sort_keys=True)
    del lines[3]
    path.write_text("\n".join(lines) + "\n")
    problems = verify(str(path))
    assert any(p.startswith("line 2:") and "edited" in p for p in problems)
    assert any(p.startswith("line 4:") and "removed" in p for p in problems)


def test_syslog_sends_rfc5424_with_structured_data() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    sink = SyslogAudit(SimpleNamespace(syslog_host="127.0.0.1",
                                       syslog_port=receiver.getsockname()[1],
                                       app_name="novahooks"))
    sink.record({"instance_uuid": "0e4f", "hostname": 'we"b]1', "kind": "build",
                 "stage": "failed", "step": "dns.register"})
    data = receiver.recv(65535)
    receiver.close()
    header, _, message = data.partition(b"\xef\xbb\xbf")
    text = header.decode()
    assert re.match(r"^<83>1 \d{4}-\d\d-\d\dT[\d:.]+\+00:00 \S+ novahooks \d+ build "
                    r"\[novahooks@32473 ", text), text
    assert 'hostname="we\\"b\\]1"' in text
    assert json.loads(message)["step"] == "dns.register"


def test_syslog_without_host_is_misconfigured() -> None:
    with pytest.raises(Misconfigured, match="syslog_host"):
        SyslogAudit(SimpleNamespace(syslog_host=None, syslog_port=514, app_name="x"))


def test_a_chained_file_from_before_the_merkle_log_keeps_verifying(tmp_path: Path) -> None:
    """tests/data/audit/chained-v1.jsonl was written by the chained-only JsonlAudit: new
    records extend its chain, and the first checkpoint covers its lines as they are."""
    from novahooks.settings import load_settings
    from tasks.audit_signer import Signer
    from tasks.backends.audit import checkpoint, note
    from tasks.backends.audit.verify import verify_log
    path = tmp_path / "audit.jsonl"
    shutil.copy(DATA / "chained-v1.jsonl", path)
    old = path.read_bytes()
    sink = JsonlAudit(SimpleNamespace(path=str(path)))
    for i in range(5):
        sink.record({"instance_uuid": "new-%d" % i, "stage": "done", "time": 1.5 + i})
    assert path.read_bytes().startswith(old)
    assert verify(str(path)) == []
    key = tmp_path / "log.key"
    skey, vkey = note.generate("audit.example/migrated")
    key.write_text(skey)
    key.chmod(0o400)
    (tmp_path / "n.conf").write_text(
        "[audit]\npath = %s\nverifier_key = %s\nsigner_key_path = %s\ncheckpoint_every = 1\n"
        % (path, vkey, key))
    signer = Signer(load_settings(str(tmp_path / "n.conf")).audit)
    signed = checkpoint.open_checkpoint(signer.tick() or "", note.Verifier(vkey))
    assert signed.checkpoint.size == 17
    assert verify_log(str(path), [signed]).problems == []
    lines = path.read_text().splitlines()
    record = json.loads(lines[2])
    record["hostname"] = "forged"
    lines[2] = json.dumps(record, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    problems = verify_log(str(path), [signed]).problems
    assert problems[0] == ("records 1-17 do not hash to the root of the checkpoint of size 17: "
                           "changed since it was signed (lines named below)")
    assert "line 3: content does not match its hash (edited)" in problems


def test_every_configured_secret_is_masked_in_a_record(tmp_path: Path) -> None:
    from novahooks.settings import load_settings
    from tasks.backends.audit.redact import scrub, secrets_of
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef01234567")
    (tmp_path / "n.conf").write_text(
        "[ipam]\ntoken_file = %s\n[directory]\npassword = s3cret-bind-pw\n"
        "[dns]\ntsig_secret = c2VjcmV0\n" % token)
    found = secrets_of(load_settings(str(tmp_path / "n.conf")))
    assert found == ["0123456789abcdef0123456789abcdef01234567", "s3cret-bind-pw", "c2VjcmV0"]
    entry = {"error": "GET https://nb/api/?token=0123456789abcdef0123456789abcdef01234567: 403",
             "backends": {"ldap": {"dn": "cn=x", "bound": ["s3cret-bind-pw"]}}, "n": 3}
    assert scrub(entry, found) == {"error": "GET https://nb/api/?token=***: 403",
                                   "backends": {"ldap": {"dn": "cn=x", "bound": ["***"]}},
                                   "n": 3}


def test_a_whole_number_float_keeps_its_record_verifiable(tmp_path: Path) -> None:
    """RFC 8785 writes 1796173098.0 as 1796173098, which reads back as an int: the chain
    hash is over what a reader gets (a Nova timestamp on a whole second is common)."""
    path = tmp_path / "audit.jsonl"
    sink = JsonlAudit(SimpleNamespace(path=str(path)))
    sink.record({"instance_uuid": "u", "emitted_at": 1796173098.0, "time": 1796173098.5,
                 "nested": {"n": [2.0, 0.25, 1e22]}})
    assert b'"emitted_at":1796173098,' in path.read_bytes()
    assert verify(str(path)) == []


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers(1 - 2 ** 53, 2 ** 53 - 1) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                               max_size=3), max_leaves=8),
    max_size=6))
def test_any_json_record_reads_back_with_its_hash(entry: Dict[str, Any]) -> None:
    from tasks.backends.audit.jsonl import _digest, line
    text = line(entry, 7, "ab" * 32)
    record = json.loads(text)
    assert record["hash"] == _digest(record) and record["seq"] == 7


def _signer_on(tmp_path: Path, **extra: str) -> Any:
    from novahooks.settings import load_settings
    from tasks.audit_signer import Signer
    from tasks.backends.audit import note
    path = tmp_path / "audit.jsonl"
    shutil.copy(DATA / "chained-v1.jsonl", path)
    skey, vkey = note.generate("audit.example/log")
    key = tmp_path / "log.key"
    key.write_text(skey)
    key.chmod(0o400)
    lines = ["path = %s" % path, "verifier_key = %s" % vkey, "signer_key_path = %s" % key]
    lines += ["%s = %s" % item for item in extra.items()]
    (tmp_path / "n.conf").write_text("[audit]\n%s\n" % "\n".join(lines))
    return Signer(load_settings(str(tmp_path / "n.conf")).audit)


def test_the_signer_rereads_the_log_and_stops_on_an_edit_in_place(tmp_path: Path) -> None:
    """An edit that keeps the size between two checkpoints is found by the full re-read."""
    import time
    signer = _signer_on(tmp_path, checkpoint_every="1", verify_every="600")
    assert signer.tick() is not None and signer.last.size == 12
    path = tmp_path / "audit.jsonl"
    path.write_bytes(path.read_bytes().replace(b"old-vm-3", b"old-vm-X", 1))
    assert signer.tick() is None and signer.refused is None  # not due yet
    assert signer.tick(now=time.time() + 601) is None
    assert signer.refused == ("the log's first 12 records no longer hash to the last "
                              "checkpoint's root: edited or rewritten")
    assert signer.verify_failures == 1
    JsonlAudit(SimpleNamespace(path=str(path))).record({"instance_uuid": "after"})
    assert signer.tick() is None and signer.last.size == 12  # signs nothing more


def test_the_signer_checkpoints_on_count_or_interval(tmp_path: Path) -> None:
    import time
    signer = _signer_on(tmp_path, checkpoint_every="5", checkpoint_interval="30")
    now = time.time()
    assert signer.tick(now) is not None and signer.last.size == 12  # 12 >= 5 unsigned
    sink = JsonlAudit(SimpleNamespace(path=str(tmp_path / "audit.jsonl")))
    for i in range(4):
        sink.record({"instance_uuid": "n%d" % i})
    assert signer.tick(now + 1) is None  # 4 < 5 and 1 s < 30 s
    assert signer.tick(now + 31) is not None and signer.last.size == 16  # the interval
    sink.record({"instance_uuid": "x"})
    assert signer.tick(now + 32) is None
    for i in range(4):
        sink.record({"instance_uuid": "y%d" % i})
    assert signer.tick(now + 33) is not None and signer.last.size == 21  # the count


def test_strict_needs_an_anchor_outside_the_writer(tmp_path: Path) -> None:
    from novahooks.settings import SettingsError, load_settings
    (tmp_path / "n.conf").write_text("[audit]\nstrict = true\n")
    with pytest.raises(SettingsError, match=r"\[audit\] strict: no anchor outside the writer"):
        load_settings(str(tmp_path / "n.conf"))
    (tmp_path / "n.conf").write_text("[audit]\nstrict = true\nanchor_dir = /mnt/worm\n")
    assert load_settings(str(tmp_path / "n.conf")).audit.anchors() == ["worm"]


def test_the_signer_notices_a_cut_or_rewritten_tail_at_its_next_tick(tmp_path: Path) -> None:
    signer = _signer_on(tmp_path, checkpoint_every="100")
    assert signer.tick() is not None
    path = tmp_path / "audit.jsonl"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:-2] + [lines[-2].replace(b"old-vm", b"new-vm"), b""]))
    assert signer.tick() is None
    assert signer.refused == "record 12 changed after it was read: edited or rewritten"
    cut = tmp_path / "cut"
    cut.mkdir()
    other = _signer_on(cut)
    other.tick()
    (cut / "audit.jsonl").write_bytes(b"\n".join(lines[:5] + [b""]))
    assert other.tick() is None and other.refused.startswith("truncated: the log has ")


def test_a_number_json_cannot_carry_is_kept_as_text_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    JsonlAudit(SimpleNamespace(path=str(path))).record(
        {"instance_uuid": "u", "attempts": 2 ** 60, "raw": {"x": float("nan")}})
    record = json.loads(path.read_text())
    assert record["attempts"] == str(2 ** 60) and record["raw"] == {"x": "nan"}
    assert verify(str(path)) == []
