"""The ledger on both databases it supports: SQLite and the machine's PostgreSQL."""

import multiprocessing
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

from sqlalchemy import text

from tasks.ledger import Ledger


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite:///%s" % (tmp_path / "ledger.sqlite")
        return
    name = "novahooks_ledger_%s" % uuid.uuid4().hex[:8]
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
    try:
        yield "postgresql://postgres@127.0.0.1:5432/%s" % name
    finally:
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--force", name],
                       check=True)


def _hold(url: str, key: str, step: Optional[str], seconds: float,
          started: "multiprocessing.Event") -> None:
    with Ledger(url).lock(key, step):
        started.set()
        time.sleep(seconds)


def _waited(url: str, key: str, step: Optional[str]) -> float:
    t0 = time.monotonic()
    with Ledger(url).lock(key, step):
        return time.monotonic() - t0


@pytest.mark.parametrize("holder,other,waits", [
    (None, None, True),               # two removals of one instance
    ("ldap", None, True),             # a removal waits for a register step
    (None, "ldap", True),             # a register step waits for a removal
    ("ldap", "ldap", True),           # the create and build chains' runs of one step
    ("ipam", "ldap", False),          # different steps of one VM run side by side
])
def test_lock_orders_steps_and_removals_across_processes(
        ledger_url: str, holder: Optional[str], other: Optional[str], waits: bool) -> None:
    started = multiprocessing.Event()
    proc = multiprocessing.Process(target=_hold, args=(ledger_url, "i-1", holder, 1.0, started))
    proc.start()
    try:
        assert started.wait(20)
        waited = _waited(ledger_url, "i-1", other)
        assert _waited(ledger_url, "i-2", None) < 0.5, "another instance is not held"
    finally:
        proc.join()
    assert (waited > 0.5) == waits, waited


def _note(url: str, key: str, worker: int, start: "multiprocessing.Event") -> None:
    book = Ledger(url)
    start.wait(20)
    for i in range(30):
        book.remember(key, "policy", {"worker": worker, "i": i})


def _race(target: Callable[..., None], argument_lists: List[Tuple[Any, ...]]) -> None:
    """One process per argument list, released at once (each gets the start event last)."""
    start = multiprocessing.Event()
    procs = [multiprocessing.Process(target=target, args=args + (start,))
             for args in argument_lists]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0


def test_concurrent_notes_of_one_key_never_collide(ledger_url: str) -> None:
    """Register steps of one instance note the policy decision before its lock."""
    Ledger(ledger_url).made("warm")  # tables exist before the race starts
    _race(_note, [(ledger_url, "u-race", w) for w in range(4)])
    made = Ledger(ledger_url).made("u-race")
    assert list(made) == ["policy"] and made["policy"]["i"] == 29


def test_tombstone_records_progress_and_dead_letters(ledger_url: str) -> None:
    book = Ledger(ledger_url)
    assert not book.is_deleted("u1")
    book.tombstone("u1", "web-1")
    with book.engine.connect() as conn:
        first = conn.execute(text("SELECT deleted_at FROM instances WHERE uuid = 'u1'")).one()
    time.sleep(0.01)
    book.tombstone("u1", "web-1")
    assert book.is_deleted("u1")
    with book.engine.connect() as conn:
        again = conn.execute(text("SELECT deleted_at FROM instances WHERE uuid = 'u1'")).one()
    assert again == first, "a second delete must keep the first one's time"
    book.remember("u2", "dns", {"addresses": ["10.0.0.1"]})
    book.remember("u2", "dns", {"addresses": ["10.0.0.2"]})
    assert book.made("u2") == {"dns": {"addresses": ["10.0.0.2"]}}
    book.forget("u2", "dns")
    assert book.made("u2") == {}
    event = {"event_id": "e1", "uuid": "u3", "kind": "build"}
    book.step_done(event, "ipam.reserve", last=False)
    book.step_done(event, "dns.register", last=False)
    time.sleep(0.05)
    (stalled,) = book.stalled(0.01)
    assert stalled["done_steps"] == "ipam.reserve,dns.register"
    book.dead_letter(event, "ldap.register", "Conflict: taken", 1)
    assert book.stalled(0.01) == [], "a dead-lettered chain is not 'stalled'"
    (letter,) = book.dead_letters()
    assert letter["step"] == "ldap.register" and letter["attempts"] == 1
    book.mark_replayed(letter["id"])
    assert book.dead_letters() == [] and len(book.dead_letters(include_replayed=True)) == 1
    book.step_done(event, "audit.record", last=True)
    assert book.stalled(0.0) == []


def test_unreachable_database_is_transient() -> None:
    from tasks.errors import BackendUnavailable
    book = Ledger("postgresql://postgres@127.0.0.1:1/none")
    with pytest.raises(BackendUnavailable, match="ledger"):
        book.is_deleted("u")


def _steps(url: str, event_id: str, steps: List[str], start: "multiprocessing.Event") -> None:
    book = Ledger(url)
    start.wait(20)
    for step in steps:
        book.step_done({"event_id": event_id, "uuid": "u-steps", "kind": "build"}, step,
                       last=False)


def test_step_done_grows_one_set_of_steps(ledger_url: str) -> None:
    """One upsert per step: on a row the relay opened, on no row, repeated, and raced."""
    book = Ledger(ledger_url)
    opened = {"event_id": "e-open", "uuid": "u4", "kind": "delete"}
    book.published([opened])
    book.step_done(opened, "audit.record", last=False)
    book.step_done(opened, "audit.record", last=False)  # a redelivered step
    book.step_done(opened, "ldap.deregister", last=True)
    book.step_done(opened, "dns.deregister", last=False)  # a late duplicate after the end
    with book.engine.connect() as conn:
        row = conn.execute(text("SELECT done_steps, finished_at FROM progress "
                                "WHERE event_id = 'e-open'")).one()
    assert row.done_steps == "audit.record,ldap.deregister,dns.deregister"
    assert row.finished_at is not None, "a later step must not reopen a finished chain"
    names = [["s%d-%d" % (w, i) for i in range(10)] for w in range(4)]
    _race(_steps, [(ledger_url, "e-race", steps) for steps in names])
    with book.engine.connect() as conn:
        done = conn.execute(text("SELECT done_steps FROM progress "
                                 "WHERE event_id = 'e-race'")).scalar_one()
    assert sorted(done.split(",")) == sorted(sum(names, []))


@pytest.mark.parametrize("mode,expected", [("normal", 1), ("full", 2)])
def test_sqlite_synchronous_is_set_on_every_connection(tmp_path: Path, mode: str,
                                                       expected: int) -> None:
    book = Ledger("sqlite:///%s" % (tmp_path / "ledger.sqlite"), mode)
    book.made("warm")
    with book.engine.connect() as one, book.engine.connect() as two:
        for conn in (one, two):
            assert conn.execute(text("PRAGMA synchronous")).scalar_one() == expected
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"


def test_versions_per_instance_and_backend_only_move_forward(ledger_url: str) -> None:
    """What a register step reads under its lock, and writes with what it made."""
    book = Ledger(ledger_url)
    assert book.register_state("v1", "dns") == (False, None)
    book.remember("v1", "dns", {"fqdn": "new.example"}, (2000, 1), "e-new")
    book.remember("v1", "inventory", {"id": 7}, (1000, 0), "e-old")
    deleted, applied = book.register_state("v1", "dns")
    assert not deleted and applied is not None
    assert applied.order == (2000, 1) and applied.event_id == "e-new"
    assert book.register_state("v1", "inventory")[1].order == (1000, 0), "per backend"
    # An older version never replaces a newer one, even written without the lock.
    book.remember("v1", "dns", {"fqdn": "old.example"}, (1999, 9), "e-older")
    assert book.register_state("v1", "dns")[1].event_id == "e-new"
    book.remember("v1", "dns", {"fqdn": "new.example"}, (2000, 1), "e-new")  # the same again
    book.remember("v1", "dns", {"fqdn": "newer.example"}, (2000, 2), "e-tie")
    assert book.register_state("v1", "dns")[1].order == (2000, 2)
    big = (1796166528523874, 3)  # microseconds of a 2026 timestamp: 64-bit on both databases
    book.remember("v1", "dns", {}, big, "e-2026")
    assert book.register_state("v1", "dns")[1].order == big
    book.tombstone("v1", "web-1")
    assert book.register_state("v1", "dns")[0] is True
    assert book.made("v1")["dns"] == {}


def test_skips_are_kept_per_event_for_its_audit_record(ledger_url: str) -> None:
    book = Ledger(ledger_url)
    assert book.skipped_steps("e-1") == {}
    book.note_skip("e-1", "dns.register", "superseded by e-2")
    book.note_skip("e-1", "ldap.register", "superseded by e-2")
    book.note_skip("e-1", "ldap.register", "instance u was deleted")
    assert book.skipped_steps("e-1") == {"dns.register": "superseded by e-2",
                                         "ldap.register": "instance u was deleted"}
    assert book.skipped_steps("e-2") == {}
    book.published([{"event_id": "e-1", "uuid": "u", "kind": "build"}])
    assert book.known_events(["e-1", "e-3"]) == ["e-1"]


def test_a_skewed_host_dates_nothing_by_its_own_clock(ledger_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker host 5 minutes behind (or ahead) writes the chains it runs; a reconcile on
    a right clock must not see them stalled (behind) or fresh for 5 minutes more (ahead),
    nor a VM registered after its listing began as older than the listing."""
    if ledger_url.startswith("sqlite"):
        pytest.skip("SQLite is one host's database: one clock")
    book = Ledger(ledger_url)
    real = time.time
    began = book.now()
    assert abs(began - real()) < 5, "the server is this machine: its clock is ours"
    for skew in (-300.0, 300.0):
        monkeypatch.setattr(time, "time", lambda skew=skew: real() + skew)
        event = {"event_id": str(uuid.uuid4()), "uuid": str(uuid.uuid4()), "kind": "build"}
        book.published([event])
        book.step_done(event, "ipam.reserve", last=False)
        book.remember(event["uuid"], "ipam", {"ids": [1]}, order=(1, 1),
                      event_id=event["event_id"])
        book.tombstone(str(uuid.uuid4()), "gone")
        monkeypatch.setattr(time, "time", real)
        with book.engine.connect() as conn:
            row = conn.execute(text("SELECT started_at, updated_at FROM progress WHERE "
                                    "event_id = :e"), {"e": event["event_id"]}).one()
            made = conn.execute(text("SELECT created_at FROM records WHERE instance_uuid = :u"),
                                {"u": event["uuid"]}).scalar_one()
            deleted = conn.execute(text("SELECT max(deleted_at) FROM instances")).scalar_one()
        for stamp in (row.started_at, row.updated_at, made, deleted):
            assert abs(stamp - real()) < 5, "skew %+d s: a time of the writer's clock" % skew
        assert event["event_id"] not in [r["event_id"] for r in book.stalled(60)]
        from tasks.reconcile_state import Absences
        assert event["uuid"] in Absences(book).active_since([event["uuid"]], began)


def test_a_first_run_leaves_a_pending_note_until_its_own_replaces_it(ledger_url: str) -> None:
    """``made_claiming``: the first run of a step sees no note (so it may create without
    reading) and leaves the pending mark; a run after one that died sees the mark; the
    step's own note replaces it; a removal forgets both."""
    from tasks.ledger import PENDING
    book = Ledger(ledger_url)
    vm = str(uuid.uuid4())
    book.remember(vm, "ipam", {"ids": {"10.0.0.5": 7}})
    assert book.made_claiming(vm, "inventory") == {"ipam": {"ids": {"10.0.0.5": 7}}}
    assert book.made(vm)["inventory"] == PENDING
    assert book.made_claiming(vm, "inventory")["inventory"] == PENDING, "a died run's mark"
    book.remember(vm, "inventory", {"id": 42}, (1, 1), "event-1")
    assert book.made_claiming(vm, "inventory")["inventory"] == {"id": 42}
    book.forget(vm, "inventory")
    assert "inventory" not in book.made(vm)
