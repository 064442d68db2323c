"""What ``reconcile --nova`` keeps between passes, in the ledger's database.

A pass lists Nova, then the backends: a VM created in between is in the
backends and not in the listing. So a stale record is removed only after its
instance has been missing for ``[reconcile] prune_after`` seconds across passes,
which needs the time each instance was first seen missing, kept where every
reconcile host sees it (the ledger: SQLite on one host, PostgreSQL for several).
The ledger also says whether anything happened to the instance after a pass
began (a chain started, a step wrote), which the listing cannot show.
"""

from typing import Dict, Iterable, Set

from sqlalchemy import Column, Float, MetaData, String, Table, delete, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from tasks.errors import BackendUnavailable
from tasks.ledger import Ledger, progress, records

metadata = MetaData()

absent = Table(
    "reconcile_absent", metadata,
    Column("uuid", String(36), primary_key=True),
    Column("first_missing_at", Float, nullable=False),
    Column("last_missing_at", Float, nullable=False),
)

_NOTE = text("""
    INSERT INTO reconcile_absent (uuid, first_missing_at, last_missing_at)
    VALUES (:uuid, :now, :now)
    ON CONFLICT (uuid) DO UPDATE SET last_missing_at = excluded.last_missing_at
""")


class Absences(object):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        engine = ledger.engine
        try:
            metadata.create_all(engine)
        except IntegrityError:
            pass  # another pass created it at the same moment
        except OperationalError as exc:
            raise BackendUnavailable("ledger unavailable: %s" % exc, backend="ledger") from exc

    def missing(self, uuids: Iterable[str], now: float) -> Dict[str, float]:
        """Note these instances missing now; returns when each was first seen missing."""
        wanted = sorted(set(uuids))
        try:
            with self.ledger.engine.begin() as conn:
                for uuid in wanted:
                    conn.execute(_NOTE, {"uuid": uuid, "now": now})
                if not wanted:
                    return {}
                rows = conn.execute(select(absent.c.uuid, absent.c.first_missing_at)
                                    .where(absent.c.uuid.in_(wanted)))
                return {row.uuid: float(row.first_missing_at) for row in rows}
        except OperationalError as exc:
            raise BackendUnavailable("ledger unavailable: %s" % exc, backend="ledger") from exc

    def keep_only(self, uuids: Iterable[str]) -> None:
        """Forget every instance not missing in this pass: its absence, if any, restarts."""
        still = sorted(set(uuids))
        statement = delete(absent)
        if still:
            statement = statement.where(absent.c.uuid.not_in(still))
        try:
            with self.ledger.engine.begin() as conn:
                conn.execute(statement)
        except OperationalError as exc:
            raise BackendUnavailable("ledger unavailable: %s" % exc, backend="ledger") from exc

    def active_since(self, uuids: Iterable[str], since: float) -> Set[str]:
        """The instances the ledger saw a chain start or a step write for at ``since`` or later."""
        wanted = sorted(set(uuids))
        if not wanted:
            return set()
        try:
            with self.ledger.engine.connect() as conn:
                started = conn.execute(select(progress.c.instance_uuid).where(
                    progress.c.instance_uuid.in_(wanted)).where(
                    (progress.c.started_at >= since) | (progress.c.updated_at >= since)))
                wrote = conn.execute(select(records.c.instance_uuid).where(
                    records.c.instance_uuid.in_(wanted)).where(records.c.created_at >= since))
                return {row[0] for row in started} | {row[0] for row in wrote}
        except OperationalError as exc:
            raise BackendUnavailable("ledger unavailable: %s" % exc, backend="ledger") from exc
