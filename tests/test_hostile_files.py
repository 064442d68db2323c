"""Least privilege on the Nova host: what the hooks read, the modes files and sockets are born
with, what the gate endpoint will audit, and an audit file whose last line was torn.

The hook-side test runs the hooks as a real second user (``nobody``) with files whose real
modes keep secrets from it; every other test runs as the suite's user with umask 022, the
usual default under which these files used to come out 0644.
"""

import json
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from novahooks.nova import gate
from novahooks.nova.outbox import Outbox
from novahooks.nova import spool
from tasks.backends.audit import jsonl
from tasks.backends.audit.jsonl import JsonlAudit
from tasks.gate_service import GateService
from tasks.ledger import Ledger
from tests.conftest import ROOT, make_event

SYSTEM_PYTHON = Path("/usr/bin/python3")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        assert os.umask(old) == 0o022, "something left the process umask changed"


@pytest.fixture
def no_chmod(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mode set after creation would leave a window: none may be set at all."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("chmod after creation: %r" % (args,))
    for name in ("chmod", "fchmod", "lchmod"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)


@pytest.fixture
def nobody_dir() -> Iterator[Tuple[Path, pwd.struct_passwd]]:
    """A directory the second user can traverse, with a copy of the hook side in it (the
    checkout may lie under a directory only root may enter)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a hook as a second user")
    if not SYSTEM_PYTHON.exists():
        pytest.skip("no %s for the second user" % SYSTEM_PYTHON)
    user = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="novahooks-nobody-", dir="/tmp"))
    try:
        base.chmod(0o755)
        shutil.copytree(str(ROOT / "novahooks"), str(base / "src" / "novahooks"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in [base / "src"] + list((base / "src").rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (base / "outbox").mkdir(mode=0o700)
        os.chown(str(base / "outbox"), user.pw_uid, user.pw_gid)
        yield base, user
    finally:
        shutil.rmtree(str(base), ignore_errors=True)


HOOK = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from novahooks.nova import hooks
hooks.DeleteInstanceHook().post(None, None, None,
                                {"uuid": sys.argv[1], "hostname": "least-privilege"})
"""


def _as_nobody(base: Path, user: pwd.struct_passwd, env: Dict[str, str],
               *args: str) -> subprocess.CompletedProcess:
    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setgroups([])
        os.setuid(user.pw_uid)
    full = dict({"PATH": "/usr/bin:/bin", "PYTHONPATH": str(base / "src"),
                 "PYTHONDONTWRITEBYTECODE": "1"}, **env)
    return subprocess.run([str(SYSTEM_PYTHON)] + list(args), env=full, cwd=str(base),
                          preexec_fn=drop, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


def _outbox_uuids(path: Path) -> List[str]:
    with sqlite3.connect(str(path)) as conn:
        return [row[0] for row in conn.execute("SELECT instance_uuid FROM events")]


def test_hooks_read_only_outbox_and_gate_and_work_without_the_secrets(
        nobody_dir: Tuple[Path, pwd.struct_passwd]) -> None:
    base, user = nobody_dir
    outbox = base / "outbox" / "outbox.sqlite"
    for name in ("tsig.key", "netbox.token", "ldap.password"):
        (base / name).write_text("s3cret-%s\n" % name)
        (base / name).chmod(0o600)  # root's: the Nova user may not read them
    main = base / "novahooks.conf"
    main.write_text(
        "[outbox]\npath = %s\n\n[gate]\ntimeout = 10\n\n"
        "[dns]\ntsig_secret_file = %s\n\n[ipam]\ntoken_file = %s\n\n"
        "[directory]\npassword_file = %s\n" % (
            outbox, base / "tsig.key", base / "netbox.token", base / "ldap.password"))
    main.chmod(0o644)

    # The control: the Nova user cannot load the whole configuration, as before.
    whole = _as_nobody(base, user, {"NOVAHOOKS_CONFIG": str(main)}, "-c",
                       "from novahooks.settings import load_settings; load_settings()")
    assert whole.returncode != 0 and "tsig_secret_file: cannot read" in whole.stderr, whole

    # 1. One file, readable, whose secrets are not: the hook reads [outbox] and [gate] only.
    first = str(uuid.uuid4())
    ran = _as_nobody(base, user, {"NOVAHOOKS_CONFIG": str(main)}, "-c", HOOK, first)
    assert ran.returncode == 0 and "not recorded" not in ran.stdout + ran.stderr, ran
    assert _outbox_uuids(outbox) == [first]

    # 2. The main file unreadable too: the two sections in a file of the hook side's own.
    main.chmod(0o600)
    hook_conf = base / "hooks.conf"
    hook_conf.write_text("[outbox]\npath = %s\n" % outbox)
    hook_conf.chmod(0o644)
    second = str(uuid.uuid4())
    ran = _as_nobody(base, user, {"NOVAHOOKS_CONFIG": str(main),
                                  "NOVAHOOKS_HOOK_CONFIG": str(hook_conf)}, "-c", HOOK, second)
    assert ran.returncode == 0 and "not recorded" not in ran.stdout + ran.stderr, ran
    assert _outbox_uuids(outbox) == [first, second]
    # ...and without its own file the hook says so instead of recording anything.
    third = _as_nobody(base, user, {"NOVAHOOKS_CONFIG": str(main)}, "-c", HOOK,
                       str(uuid.uuid4()))
    assert "event not recorded" in third.stdout + third.stderr
    assert "Permission denied" in third.stdout + third.stderr
    assert _outbox_uuids(outbox) == [first, second]


def test_outbox_spool_ledger_audit_and_gate_socket_are_born_restrictive(
        tmp_path: Path, umask_022: None, no_chmod: None) -> None:
    box = Outbox(str(tmp_path / "box" / "outbox.sqlite"))
    box.append(str(uuid.uuid4()), "create", "{}")
    where = Path(spool.write(box.path, str(uuid.uuid4()), "create", "{}"))
    book = Ledger("sqlite:///%s" % (tmp_path / "ledger" / "ledger.sqlite"))
    book.engine.dispose()
    audit_path = tmp_path / "audit" / "audit.jsonl"
    JsonlAudit(type("S", (), {"path": str(audit_path)})()).record({"event": "x"})
    service = GateService(str(tmp_path / "gate.sock"), book.url, lambda e, m: None).start()
    try:
        sock = tmp_path / "gate.sock"
        assert stat.S_ISSOCK(os.lstat(str(sock)).st_mode)
        modes = {
            "outbox dir": (_mode(tmp_path / "box"), 0o770),
            "outbox": (_mode(tmp_path / "box" / "outbox.sqlite"), 0o660),
            "outbox wal": (_mode(tmp_path / "box" / "outbox.sqlite-wal"), 0o660),
            "spool dir": (_mode(where.parent), 0o770),
            "spool file": (_mode(where), 0o640),
            "ledger": (_mode(tmp_path / "ledger" / "ledger.sqlite"), 0o660),
            "audit": (_mode(audit_path), 0o640),
            "gate socket": (_mode(sock), 0o660),
        }
        assert {k: oct(v[0]) for k, v in modes.items()} == \
            {k: oct(v[1]) for k, v in modes.items()}
    finally:
        service.stop()
        box.close()


def test_gate_audits_only_events_this_host_recorded_and_as_it_recorded_them(
        tmp_path: Path) -> None:
    box = Outbox(str(tmp_path / "outbox.sqlite"))
    book = Ledger("sqlite:///%s" % (tmp_path / "ledger.sqlite"))
    audited = []  # type: List[Tuple[Dict[str, Any], str]]
    path = str(tmp_path / "gate.sock")
    service = GateService(path, book.url, lambda e, m: audited.append((e, m)), box).start()
    try:
        def post(event: Dict[str, Any]) -> Dict[str, Any]:
            return gate._request(path, "POST", "/v1/events/%s/verdict" % event["event_id"],
                                 5, {"event": event, "outcome": "timeout",
                                     "policy": "continue", "reason": "waited"})

        stranger = make_event(kind="create").to_dict()
        with pytest.raises(gate.GateUnavailable, match="HTTP 404.*no event %s"
                           % stranger["event_id"]):
            post(stranger)
        assert audited == []

        waiting = make_event(kind="create").to_dict()
        box.append(waiting["uuid"], "create", json.dumps(waiting))
        published = make_event(kind="create").to_dict()
        book.published([published])
        assert post(dict(waiting, hostname="forged-name", uuid=str(uuid.uuid4()))) == \
            {"audited": True}
        assert post(published) == {"audited": True}
        assert [(e["event_id"], e["uuid"], e["hostname"]) for e, _ in audited] == [
            (waiting["event_id"], waiting["uuid"], waiting["hostname"]),
            (published["event_id"], published["uuid"], published["hostname"])]
        assert all("pre-boot gate timeout: waited" in message for _, message in audited)
    finally:
        service.stop()
        box.close()


def test_audit_append_survives_a_torn_last_line_and_verify_names_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = JsonlAudit(type("S", (), {"path": str(path)})())
    for n in range(3):
        audit.record({"event": "record-%d" % n})
    whole = path.read_bytes()
    lines = whole.splitlines(keepends=True)
    torn_at = len(whole) - len(lines[-1]) // 2
    with open(str(path), "r+b") as handle:
        handle.truncate(torn_at)  # the third record cut mid-line, as by a crash
    assert jsonl.verify(str(path)) == [
        "line 3: torn record (%d bytes of a record cut short: a write that did not finish); "
        "the chain goes on from the record before it" % (torn_at - len(lines[0]) - len(lines[1]))]

    audit.record({"event": "after the tear"})
    audit.record({"event": "and one more"})
    stored = path.read_bytes().splitlines()
    assert stored[:2] == [line.rstrip(b"\n") for line in lines[:2]]
    assert stored[2] == whole[len(lines[0]) + len(lines[1]):torn_at], "the torn bytes are kept"
    after = json.loads(stored[3])
    assert after["event"] == "after the tear" and after["seq"] == 3
    assert after["prev"] == json.loads(stored[1])["hash"]
    # Once records follow it, the torn line is still measured by its own bytes.
    assert jsonl.verify(str(path)) == [
        "line 3: torn record (%d bytes of a record cut short: a write that did not finish); "
        "the chain goes on from the record before it" % len(stored[2])]
