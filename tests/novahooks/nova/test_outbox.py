"""The outbox and its spool on real SQLite files, with real lock contention between processes."""

import json
import logging
import multiprocessing
import subprocess
import sqlite3
from pathlib import Path

import pytest

from novahooks.nova import spool
from novahooks.nova.outbox import HOOK_CHECKPOINT_PAGES, Outbox


def stored(path: Path) -> list:
    with sqlite3.connect(str(path)) as conn:
        return [row[0] for row in conn.execute("SELECT instance_uuid FROM events ORDER BY seq")]


def test_append_returns_sequence_numbers_in_order(tmp_path: Path) -> None:
    outbox = Outbox(str(tmp_path / "o.sqlite"))
    first = outbox.append("a", "build", "{}")
    second = outbox.append("b", "delete", "{}")
    assert first is not None and second is not None and second > first
    assert [p.instance_uuid for p in outbox.pending()] == ["a", "b"]


def _wal_restarts(path: Path) -> int:
    """The WAL header's checkpoint sequence number: it grows each time a write restarts
    the WAL after a complete checkpoint (sqlite.org/fileformat.html, "WAL File Format")."""
    with open(str(path) + "-wal", "rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


def test_hooks_leave_checkpoints_to_the_relay(tmp_path: Path) -> None:
    """Copying the WAL into the database was the hook's slowest calls: the relay does it."""
    path = tmp_path / "o.sqlite"
    hook = Outbox(str(path), checkpoint_pages=HOOK_CHECKPOINT_PAGES)
    hook.append("first", "build", "{}")
    start = _wal_restarts(path)
    for i in range(1500):  # one WAL frame or more per commit: past SQLite's default 1,000
        hook.append("u%d" % i, "build", "x" * 800)
    assert _wal_restarts(path) == start, "a hook's commit checkpointed the WAL"
    relay = Outbox(str(path))
    relay.remove([p.seq for p in relay.pending(limit=2000)])
    hook.append("after", "build", "{}")
    assert _wal_restarts(path) > start, "the relay's commit did not checkpoint the WAL"
    assert stored(path) == ["after"]


def test_a_write_sqlite_refuses_goes_to_the_spool_and_the_relay_moves_it_in(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.sqlite"
    outbox = Outbox(str(path), busy_timeout_ms=50)
    outbox.append("before", "build", "{}")
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert outbox.append("during", "build", '{"x": 1}') is None
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "refused a write" in caplog.text and "spooled to" in caplog.text
    assert stored(path) == ["before"]
    assert outbox.depth()[0] == 2
    assert outbox.absorb_spool() == 1
    assert stored(path) == ["before", "during"]
    assert outbox.pending()[1].body == '{"x": 1}'
    assert spool.pending_files(str(path)) == []
    assert outbox.absorb_spool() == 0


def test_a_damaged_outbox_file_still_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    assert Outbox(str(path)).append("u1", "delete", "{}") is None
    (written,) = spool.pending_files(str(path))
    (event,) = spool.read(spool.claim(written))
    assert (event.instance_uuid, event.kind) == ("u1", "delete")


def test_an_unreadable_spool_line_is_reported_and_the_rest_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.sqlite"
    spool.write(str(path), "u1", "build", "{}")
    with open(spool.pending_files(str(path))[0], "a") as handle:
        handle.write('{"torn": \n')
    spool.write(str(path), "u2", "build", "{}")
    outbox = Outbox(str(path))
    with caplog.at_level(logging.ERROR):
        assert outbox.absorb_spool() == 2
    assert "line 2 is unreadable" in caplog.text
    assert stored(path) == ["u1", "u2"]


def test_a_claimed_file_left_by_an_interrupted_pass_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    spool.write(str(path), "u1", "build", "{}")
    spool.claim(spool.pending_files(str(path))[0])
    assert Outbox(str(path)).absorb_spool() == 1
    assert stored(path) == ["u1"]


def _spool_many(path: str, worker: int, count: int) -> None:
    for i in range(count):
        spool.write(path, "w%d-%d" % (worker, i), "build", json.dumps({"i": i}))


def test_writers_and_the_relay_racing_on_spool_files_lose_and_repeat_nothing(
        tmp_path: Path) -> None:
    path = str(tmp_path / "o.sqlite")
    outbox = Outbox(path)
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_spool_many, args=(path, w, 300)) for w in range(4)]
    for proc in writers:
        proc.start()
    moved = 0
    while any(proc.is_alive() for proc in writers):
        moved += outbox.absorb_spool()
    for proc in writers:
        proc.join()
        assert proc.exitcode == 0
    moved += outbox.absorb_spool()
    uuids = stored(Path(path))
    assert moved == len(uuids) == len(set(uuids)) == 1200


PY36 = sorted(Path.home().glob(".pyenv/versions/3.6*/bin/python"))


@pytest.mark.skipif(not PY36, reason="no Python 3.6 under pyenv")
def test_the_outbox_and_its_spool_run_on_python_3_6(tmp_path: Path) -> None:
    """Nova Queens to Ussuri run on 3.6: the hook side must too, fallback path included."""
    script = (
        "import sqlite3, sys\n"
        "from novahooks.nova.outbox import Outbox\n"
        "path = sys.argv[1]\n"
        "outbox = Outbox(path, busy_timeout_ms=50)\n"
        "print(outbox.append('a', 'build', '{}'))\n"
        "holder = sqlite3.connect(path, isolation_level=None)\n"
        "holder.execute('BEGIN IMMEDIATE')\n"
        "print(outbox.append('b', 'build', '{}'))\n"
    )
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([str(PY36[-1]), "-c", script, str(tmp_path / "o.sqlite")],
                         cwd=str(root), env={"PYTHONPATH": str(root)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "None"]
    assert Outbox(str(tmp_path / "o.sqlite")).absorb_spool() == 1
