"""The per-instance ledger: what each step really did, tombstones, dead letters.

A Celery chain is not a durable workflow: a worker killed between two steps
can stop it silently, and a delete may overtake its own create on another
queue. The ledger, in a real database (SQLite on one host, PostgreSQL for
several), keeps what the backends cannot tell us cheaply:

* ``instances``: a tombstone once a delete began; register steps that arrive
  later do nothing, so a create that loses the race to its delete leaves
  nothing behind. Each step takes a per-instance lock while it checks the
  tombstone and writes, which makes "register, then deregister" and
  "tombstone, then skipped register" the only possible orders.
* ``records``: what each step made (backend, reference), for deletes and status. A
  step that creates by trusting an empty note first leaves ``{"pending": true}``
  there (``made_claiming``): a run killed or failed after its first write but before
  its note makes the next run read the backend, not create a second object.
* ``versions``: per instance and backend, the order (novahooks.event.Order) of the
  event whose state the backend last got; a register step of an older event does
  nothing (``skipped: superseded by ...``), under the same lock, so the newest state
  stays whichever chain runs last. ``skips`` says so to the chain's audit record.
* ``progress``: which steps of which event finished, so ``reconcile`` can find
  chains that stopped half-way and finish them.
* ``dead_letters``: events a step gave up on, with the error and attempts,
  until an operator replays them.

Every time the ledger keeps is the ledger database's own clock (PostgreSQL's
``clock_timestamp()``; SQLite lives on one host, whose clock it is): workers, relays
and reconcile run on hosts whose clocks differ, and a worker five minutes behind
would otherwise make every chain it touches look five minutes stalled to a
reconcile on a right clock, and a VM it registered look older than a listing that
began before it (see README, "Deploying on several hosts").
"""

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

from sqlalchemy import (BigInteger, Column, Float, Integer, MetaData, String, Table, Text,
                        UniqueConstraint, bindparam, create_engine, delete, event, insert,
                        select, text, update)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from novahooks.nova.spool import create_shared
from tasks.errors import BackendUnavailable

metadata = MetaData()

#: The note of a step whose first run began and has not finished (``made_claiming``).
PENDING = {"pending": True}

instances = Table(
    "instances", metadata,
    Column("uuid", String(36), primary_key=True),
    Column("hostname", String(253)),
    Column("deleted_at", Float),
    Column("updated_at", Float, nullable=False),
)

records = Table(
    "records", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance_uuid", String(36), nullable=False, index=True),
    Column("step", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("instance_uuid", "step", name="uq_records_instance_step"),
)

progress = Table(
    "progress", metadata,
    Column("event_id", String(36), primary_key=True),
    Column("instance_uuid", String(36), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("event", Text, nullable=False),
    Column("done_steps", Text, nullable=False, default=""),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
)

versions = Table(
    "versions", metadata,
    Column("instance_uuid", String(36), primary_key=True),
    Column("backend", String(32), primary_key=True),
    Column("stamp", BigInteger, nullable=False),
    Column("tie", BigInteger, nullable=False),
    Column("event_id", String(36)),
    Column("updated_at", Float, nullable=False),
)

#: Register steps of an event that did nothing because of a tombstone or a newer
#: version: the chain's audit record names them (written only when a step skips).
skips = Table(
    "skips", metadata,
    Column("event_id", String(36), primary_key=True),
    Column("step", String(64), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

deliveries = Table(
    "deliveries", metadata,
    Column("task_id", String(64), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

dead_letters = Table(
    "dead_letters", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), index=True),
    Column("instance_uuid", String(36), index=True),
    Column("step", String(64), nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("event", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("replayed_at", Float),
)


#: What every step runs, built once: building these with SQLAlchemy's expression
#: language on every call cost more than executing them. The two writes are in the SQL
#: SQLite (>= 3.24) and PostgreSQL share.
_STEP_DONE = text("""
    INSERT INTO progress (event_id, instance_uuid, kind, event, done_steps, started_at,
                          updated_at, finished_at)
    VALUES (:event_id, :instance_uuid, :kind, :event, :step, :now, :now,
            CASE WHEN :last THEN :now END)
    ON CONFLICT (event_id) DO UPDATE SET
        done_steps = CASE
            WHEN progress.done_steps = '' THEN excluded.done_steps
            WHEN ',' || progress.done_steps || ',' LIKE :pattern ESCAPE '\\'
                THEN progress.done_steps
            ELSE progress.done_steps || ',' || excluded.done_steps END,
        updated_at = excluded.updated_at,
        finished_at = COALESCE(excluded.finished_at, progress.finished_at)
""")
_IS_DELETED = select(instances.c.deleted_at).where(instances.c.uuid == bindparam("uuid"))
#: A register step's one read under its lock: the tombstone and its backend's version.
_REGISTER_STATE = text("""
    SELECT (SELECT deleted_at FROM instances WHERE uuid = :uuid) AS deleted_at,
           v.stamp, v.tie, v.event_id
    FROM (SELECT 1 AS one) AS o
    LEFT JOIN versions AS v ON v.instance_uuid = :uuid AND v.backend = :backend
""")
#: Only ever moves forward, even without the lock (an operator's replay, a race).
_APPLIED = text("""
    INSERT INTO versions (instance_uuid, backend, stamp, tie, event_id, updated_at)
    VALUES (:instance_uuid, :backend, :stamp, :tie, :event_id, :now)
    ON CONFLICT (instance_uuid, backend) DO UPDATE SET
        stamp = excluded.stamp, tie = excluded.tie, event_id = excluded.event_id,
        updated_at = excluded.updated_at
    WHERE excluded.stamp > versions.stamp
       OR (excluded.stamp = versions.stamp AND excluded.tie >= versions.tie)
""")
_SKIP = text("""
    INSERT INTO skips (event_id, step, reason, created_at)
    VALUES (:event_id, :step, :reason, :now)
    ON CONFLICT (event_id, step) DO UPDATE SET reason = excluded.reason
""")
_SKIPS = select(skips.c.step, skips.c.reason).where(skips.c.event_id == bindparam("event_id"))
_MADE = select(records).where(records.c.instance_uuid == bindparam("uuid"))
_FORGET = delete(records).where(records.c.instance_uuid == bindparam("uuid")) \
    .where(records.c.step == bindparam("step"))
_TOMBSTONE = text("""
    INSERT INTO instances (uuid, hostname, deleted_at, updated_at)
    VALUES (:uuid, :hostname, :now, :now)
    ON CONFLICT (uuid) DO UPDATE SET
        deleted_at = COALESCE(instances.deleted_at, excluded.deleted_at),
        updated_at = CASE WHEN instances.deleted_at IS NULL THEN excluded.updated_at
                          ELSE instances.updated_at END
""")
_REMEMBER = text("""
    INSERT INTO records (instance_uuid, step, detail, created_at)
    VALUES (:instance_uuid, :step, :detail, :now)
    ON CONFLICT (instance_uuid, step) DO UPDATE SET
        detail = excluded.detail, created_at = excluded.created_at
""")


class Applied(NamedTuple):
    """The version a backend holds for an instance: the order and event that set it."""

    order: Tuple[int, int]
    event_id: str


def _lock_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


_ENGINE_LOCK = threading.Lock()


@contextlib.contextmanager
def _flocked(path: str, mode: int) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: The time, in seconds since the epoch, on the PostgreSQL server's clock.
PG_CLOCK = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"


def database_now(engine: Engine) -> float:
    """The time on the clock of ``engine``'s database server (SQLite: this host's)."""
    if engine.dialect.name == "sqlite":
        return time.time()
    with engine.connect() as conn:
        return float(conn.execute(text("SELECT %s" % PG_CLOCK)).scalar_one())


def _unavailable(exc: Exception) -> BackendUnavailable:
    return BackendUnavailable("ledger database unavailable: %s" % str(exc).splitlines()[0],
                              backend="ledger")


class Ledger(object):
    def __init__(self, url: str, synchronous: str = "normal") -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        #: SQLite's PRAGMA synchronous for every connection ([ledger] sqlite_synchronous).
        self.synchronous = synchronous
        self._engine = None  # type: Optional[Engine]
        self._pid = 0
        self._clocked_text: Dict[str, Any] = {}

    @property
    def engine(self) -> Engine:
        """One engine per process: pooled connections must not cross a fork. Made under
        a lock: a threads pool's steps may ask for it at once."""
        if self._engine is not None and self._pid == os.getpid():
            return self._engine
        with _ENGINE_LOCK:
            return self._make_engine()

    def _make_engine(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            if self.sqlite:
                path = self.url.split("///", 1)[-1]
                engine = create_engine(self.url, connect_args={"timeout": 30})
                if path and path != ":memory:":
                    # 0660 from the start (workers, relay and gate share a group), never
                    # readable by others: SQLite's -wal and -shm take the file's mode.
                    create_shared(path)
                with engine.begin() as conn:
                    conn.execute(text("PRAGMA journal_mode=WAL"))
                pragma = "PRAGMA synchronous=%s" % (
                    "FULL" if self.synchronous == "full" else "NORMAL")

                @event.listens_for(engine, "connect")
                def _per_connection(dbapi_conn: Any, _record: Any) -> None:
                    # Per connection, not per file: without it SQLite's default FULL
                    # fsyncs every commit, which was most of a step's own cost.
                    dbapi_conn.execute(pragma)
                engine.dispose()  # the connection above was opened before the listener
            else:
                # A step holds one connection for its lock and takes another for the
                # ledger's reads and writes: a threads pool of N steps needs up to 2N.
                engine = create_engine(self.url, pool_pre_ping=True, pool_size=2,
                                       max_overflow=64)
            self._create_tables(engine)
            self._engine, self._pid = engine, os.getpid()
        return self._engine

    @staticmethod
    def _create_tables(engine: Engine) -> None:
        """Create what is missing; several worker processes may race to do it first."""
        for attempt in range(3):
            try:
                metadata.create_all(engine)
                return
            except DBAPIError as exc:
                if "already exists" not in str(exc) or attempt == 2:
                    raise _unavailable(exc) from exc
                time.sleep(0.1)

    @contextlib.contextmanager
    def lock(self, instance_uuid: str, step: Optional[str] = None) -> Iterator[None]:
        """Order a step against the instance's delete, across every worker process.

        Without ``step`` (a removal): the instance alone. With ``step`` (a register
        step): the instance shared with the other register steps, and the step's own
        key alone. So a delete excludes every register, two runs of one step (the
        create and build chains both run ldap and inventory) exclude each other, and
        different steps of one VM no longer queue behind each other (an LDAP entry
        waited on NetBox's IPAM call before).

        PostgreSQL: transaction-scoped advisory locks, one connection each; SQLite (one
        host): flock on lock files beside the database, each opened apart. Both exclude
        threads of one process too (a threads pool, README "Batching NetBox writes").
        """
        if self.sqlite:
            directory = self.url.split("///", 1)[-1] + ".locks"
            os.makedirs(directory, exist_ok=True)
            base = os.path.join(directory, instance_uuid.replace("/", "_"))
            with contextlib.ExitStack() as held:
                if step is not None:
                    held.enter_context(_flocked(base + "." + step, fcntl.LOCK_EX))
                held.enter_context(_flocked(base, fcntl.LOCK_SH if step else fcntl.LOCK_EX))
                yield
            return
        try:
            with self.engine.begin() as conn:
                if step is not None:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                 {"key": _lock_key(instance_uuid + "." + step)})
                conn.execute(text("SELECT pg_advisory_xact_lock%s(:key)"
                                  % ("_shared" if step else "")),
                             {"key": _lock_key(instance_uuid)})
                yield
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    def now(self) -> float:
        """The ledger's clock: what every time it keeps is measured by (see above)."""
        try:
            return database_now(self.engine)
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    def _clocked(self, statement: Any) -> Any:
        """``statement`` with its ``:now`` read from the server's clock (PostgreSQL).

        SQLite keeps the bound ``now``: the database and every process that writes it
        share one host, so one clock. Callers bind ``now`` either way.
        """
        if self.sqlite:
            return statement
        key = statement.text
        if key not in self._clocked_text:
            self._clocked_text[key] = text(key.replace(":now", PG_CLOCK))
        return self._clocked_text[key]

    def _write(self, statement: Any, values: Optional[Dict[str, Any]] = None) -> None:
        """One statement in a transaction of its own; ``values`` bind a prepared one."""
        try:
            with self.engine.begin() as conn:
                conn.execute(statement, values)
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    def _rows(self, statement: Any,
              values: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
        try:
            with self.engine.connect() as conn:
                return [dict(row._mapping) for row in conn.execute(statement, values)]
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    def is_deleted(self, instance_uuid: str) -> bool:
        rows = self._rows(_IS_DELETED, {"uuid": instance_uuid})
        return bool(rows and rows[0]["deleted_at"])

    def register_state(self, instance_uuid: str,
                       backend: str) -> Tuple[bool, Optional[Applied]]:
        """Whether the instance was deleted, and what ``backend`` last got for it."""
        rows = self._rows(_REGISTER_STATE, {"uuid": instance_uuid, "backend": backend})
        row = rows[0] if rows else {}
        applied = None
        if row.get("stamp") is not None:
            applied = Applied((int(row["stamp"]), int(row["tie"])), row.get("event_id") or "")
        return bool(row.get("deleted_at")), applied

    def tombstone(self, instance_uuid: str, hostname: Optional[str]) -> None:
        """Mark the instance deleted; the first delete's time stays (one upsert)."""
        self._write(self._clocked(_TOMBSTONE), {"uuid": instance_uuid, "hostname": hostname,
                                                "now": time.time()})

    def remember(self, instance_uuid: str, step: str, detail: Dict[str, Any],
                 order: Optional[Tuple[int, int]] = None, event_id: str = "") -> None:
        """What a register step made; replaced on every run so it is always current.

        One upsert, so two steps of one instance noting the same key at once (the
        policy note, written before the instance lock is taken) cannot collide. With
        ``order``, the same transaction notes it as the backend's version.
        """
        values = {"instance_uuid": instance_uuid, "step": step,
                  "detail": json.dumps(detail, sort_keys=True), "now": time.time()}
        if order is None:
            self._write(self._clocked(_REMEMBER), values)
            return
        values.update(backend=step, stamp=order[0], tie=order[1], event_id=event_id)
        try:
            with self.engine.begin() as conn:
                conn.execute(self._clocked(_REMEMBER), values)
                conn.execute(self._clocked(_APPLIED), values)
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    def note_skip(self, event_id: str, step: str, reason: str) -> None:
        """A register step of this event did nothing, and why (read by its audit record)."""
        if not event_id:
            return
        self._write(self._clocked(_SKIP), {"event_id": event_id, "step": step,
                                           "reason": reason[:1000], "now": time.time()})

    def skipped_steps(self, event_id: str) -> Dict[str, str]:
        if not event_id:
            return {}
        return {row["step"]: row["reason"]
                for row in self._rows(_SKIPS, {"event_id": event_id})}

    def known_events(self, event_ids: List[str]) -> List[str]:
        """Which of these events were published already (have a progress row)."""
        if not event_ids:
            return []
        return [row["event_id"] for row in self._rows(
            select(progress.c.event_id).where(progress.c.event_id.in_(event_ids)))]

    def forget(self, instance_uuid: str, step: str) -> None:
        self._write(_FORGET, {"uuid": instance_uuid, "step": step})

    def made(self, instance_uuid: str) -> Dict[str, Dict[str, Any]]:
        rows = self._rows(_MADE, {"uuid": instance_uuid})
        return {row["step"]: json.loads(row["detail"]) for row in rows}

    def made_claiming(self, instance_uuid: str, step: str) -> Dict[str, Dict[str, Any]]:
        """``made``, and when ``step`` has no note yet, a mark that a run of it began.

        The caller (under the step's lock) creates without reading the backend, since
        the note says nothing was made. If that run creates and then dies or fails
        before its note, the mark is what the next run finds: not empty, so it reads
        the backend (by instance UUID) instead of creating again under a name or
        addresses that a later event may have changed. One write, first run only.
        """
        made = self.made(instance_uuid)
        if step not in made:
            self.remember(instance_uuid, step, dict(PENDING))
        return made

    def step_done(self, event: Dict[str, Any], step: str, last: bool) -> None:
        """Add ``step`` to the event's finished steps: one statement, one commit.

        The row may be new (an event the relay did not publish: replay, undo) or
        opened by the relay or an earlier step; the set of steps only grows, and a
        finished chain stays finished.
        """
        event_id = str(event.get("event_id") or "")
        if not event_id:
            return
        pattern = "%%,%s,%%" % step.replace("\\", "\\\\").replace("%", "\\%") \
            .replace("_", "\\_")
        self._write(self._clocked(_STEP_DONE), {
            "event_id": event_id, "instance_uuid": str(event.get("uuid")),
            "kind": str(event.get("kind")), "event": json.dumps(event, sort_keys=True),
            "step": step, "pattern": pattern, "now": time.time(), "last": bool(last)})

    def published(self, events: List[Dict[str, Any]]) -> None:
        """Open a progress row, with no step done, for each event the relay handed over.

        A chain whose first message is lost before any step ran (a broker that lost
        it, or, with Redis, a worker killed between taking a message off the queue
        and recording it as unacknowledged) leaves no other trace; with this row,
        ``reconcile`` finds it like any chain that stopped half-way.
        """
        if not any(event.get("event_id") for event in events):
            return
        now = self.now()
        rows = [{"event_id": str(event["event_id"]), "instance_uuid": str(event.get("uuid")),
                 "kind": str(event.get("kind")), "event": json.dumps(event, sort_keys=True),
                 "done_steps": "", "started_at": now, "updated_at": now}
                for event in events if event.get("event_id")]
        known = {row["event_id"] for row in self._rows(
            select(progress.c.event_id).where(progress.c.event_id.in_(
                [row["event_id"] for row in rows])))}
        fresh = [row for row in rows if row["event_id"] not in known]
        if not fresh:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(progress), fresh)
        except IntegrityError:
            for row in fresh:  # a worker recorded a step meanwhile: keep what it wrote
                try:
                    self._write(insert(progress).values(**row))
                except IntegrityError:
                    continue
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    def stalled(self, older_than: float, now: Optional[float] = None) -> List[Dict[str, Any]]:
        """Chains that began, stopped and were not dead-lettered (``now``: ``self.now()``)."""
        cutoff = (self.now() if now is None else now) - older_than
        dead = select(dead_letters.c.event_id).where(dead_letters.c.replayed_at.is_(None))
        return self._rows(select(progress).where(progress.c.finished_at.is_(None))
                          .where(progress.c.updated_at < cutoff)
                          .where(progress.c.event_id.not_in(dead)))

    def delivered(self, task_id: str) -> int:
        """Count one more delivery of a message; returns how many there were."""
        now = time.time()
        try:
            self._write(insert(deliveries).values(task_id=task_id, count=1, updated_at=now))
            return 1
        except IntegrityError:
            self._write(update(deliveries).where(deliveries.c.task_id == task_id)
                        .values(count=deliveries.c.count + 1, updated_at=now))
        rows = self._rows(select(deliveries.c.count).where(deliveries.c.task_id == task_id))
        return int(rows[0]["count"]) if rows else 1

    def settled(self, task_id: str) -> None:
        self._write(delete(deliveries).where(deliveries.c.task_id == task_id))

    def dead_letter(self, event: Any, step: str, error: str, attempts: int) -> None:
        data = event if isinstance(event, dict) else {"raw": repr(event)[:2000]}
        self._write(insert(dead_letters).values(
            event_id=data.get("event_id"), instance_uuid=data.get("uuid"), step=step,
            error=error[:4000], attempts=attempts, event=json.dumps(data, sort_keys=True),
            created_at=time.time()))

    def dead_letters(self, include_replayed: bool = False) -> List[Dict[str, Any]]:
        query = select(dead_letters).order_by(dead_letters.c.id)
        if not include_replayed:
            query = query.where(dead_letters.c.replayed_at.is_(None))
        return self._rows(query)

    def dead_letter_by_id(self, letter_id: int) -> Optional[Dict[str, Any]]:
        rows = self._rows(select(dead_letters).where(dead_letters.c.id == letter_id))
        return rows[0] if rows else None

    def mark_replayed(self, letter_id: int) -> None:
        self._write(update(dead_letters).where(dead_letters.c.id == letter_id)
                    .values(replayed_at=time.time()))


_ledgers: Dict[Tuple[str, str], Ledger] = {}


def ledger(url: str, synchronous: str = "normal") -> Ledger:
    """The process's one Ledger for this database (its engine keeps the pool)."""
    key = (url, synchronous)
    if key not in _ledgers:
        _ledgers[key] = Ledger(url, synchronous)
    return _ledgers[key]


def book() -> Ledger:
    """The worker's ledger, as its settings name it (what every step and command uses)."""
    from tasks.config import settings
    config = settings().ledger
    return ledger(config.url, config.sqlite_synchronous)
