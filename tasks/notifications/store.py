"""The listener's store: what it learnt from earlier notifications, in the ledger's database.

Three things no single notification tells:

* the addresses of an instance when ``instance.delete.end`` arrives (it has none);
* which instance owns the port a floating IP is bound to (Neutron's
  ``floatingip.*`` names a port and its fixed address, never an instance);
* the floating IPs of an instance when Nova reports its addresses again
  (Nova's payloads list fixed addresses only, and the steps make a backend hold
  *exactly* the addresses of an event).

Why not the ledger's ``records``: they are written by the steps, later and in
any order, so a floating IP announced right after ``create.end`` would find no
port yet. These tables are written by the listener itself, in bus order, right
after the event is durable, so they never lag behind what was enqueued. They
live in the ledger's database (``[ledger] url``): several listeners on one
queue (PostgreSQL) share them; one host's listener and workers share SQLite.

Two more make one Nova action one event: ``notified_messages`` (the message ids
whose events are durable: a redelivery or a second publication is ignored) and
``notified_twins`` (each handled notification's action and timestamp, so the
other format's twin of it is ignored). Both are pruned after ``retention``
seconds (``[notifications] seen_retention``), far longer than any redelivery.
"""

import time
from typing import List, Optional, Sequence

from sqlalchemy import (BigInteger, Boolean, Column, Float, MetaData, String, Table, Text,
                        create_engine, delete, func, insert, or_, select, text, update)
from sqlalchemy.engine import Connection, Engine

from novahooks.event import InstanceEvent, event_from_json
from novahooks.notifications.state import (TWIN_WINDOW_US, Effect, EmptyState, Floating,
                                           Seen, Twin)

metadata = MetaData()

instances = Table(
    "notified_instances", metadata,
    Column("uuid", String(36), primary_key=True),
    Column("event", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

#: Fixed addresses (and their ports) of the instances above: port -> instance lookups.
addresses = Table(
    "notified_addresses", metadata,
    Column("instance_uuid", String(36), nullable=False, index=True),
    Column("address", String(64), nullable=False, index=True),
    Column("port_id", String(64), index=True),
)

floating_ips = Table(
    "notified_floating_ips", metadata,
    Column("floating_id", String(64), primary_key=True),
    Column("address", String(64), nullable=False),
    Column("port_id", String(64), index=True),
    Column("fixed_address", String(64), index=True),
    Column("updated_at", Float, nullable=False),
)


messages = Table(
    "notified_messages", metadata,
    Column("message_id", String(64), primary_key=True),
    Column("event_type", String(128), nullable=False),
    Column("seen_at", Float, nullable=False, index=True),
)

twins = Table(
    "notified_twins", metadata,
    Column("message_id", String(64), primary_key=True),
    Column("instance_uuid", String(36), nullable=False),
    Column("name", String(128), nullable=False),
    Column("format", String(16), nullable=False),
    Column("stamp", BigInteger, nullable=False),
    Column("paired", Boolean, nullable=False, default=False),
    Column("seen_at", Float, nullable=False, index=True),
)

#: Seconds between two prunings of the tables above.
PRUNE_EVERY = 60.0


class State(EmptyState):
    def __init__(self, url: str, retention: float = 172800.0) -> None:
        self.url = url
        self.retention = retention
        self._engine = None  # type: Optional[Engine]
        self._pruned = 0.0

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            if self.url.startswith("sqlite"):
                engine = create_engine(self.url, connect_args={"timeout": 30,
                                                               "check_same_thread": False})
                with engine.begin() as conn:
                    conn.execute(text("PRAGMA journal_mode=WAL"))
            else:
                engine = create_engine(self.url, pool_pre_ping=True, pool_size=4)
            metadata.create_all(engine)
            self._engine = engine
        return self._engine

    def known(self, instance_uuid: str) -> Optional[InstanceEvent]:
        with self.engine.connect() as conn:
            row = conn.execute(select(instances.c.event)
                               .where(instances.c.uuid == instance_uuid)).first()
        return event_from_json(row[0]) if row else None

    def instance_of(self, port_id: Optional[str], fixed_address: Optional[str]) -> Optional[str]:
        """The instance holding this port, or else this fixed address (legacy payloads
        carry no port ids)."""
        with self.engine.connect() as conn:
            for column, value in ((addresses.c.port_id, port_id),
                                  (addresses.c.address, fixed_address)):
                if value:
                    row = conn.execute(select(addresses.c.instance_uuid)
                                       .where(column == value)).first()
                    if row:
                        return str(row[0])
        return None

    def floating_of(self, event: InstanceEvent) -> List[Floating]:
        ports = [a.port_id for a in event.addresses or [] if a.port_id]
        fixed = [a.address for a in event.addresses or []]
        if not ports and not fixed:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(select(floating_ips).where(or_(
                floating_ips.c.port_id.in_(ports), floating_ips.c.fixed_address.in_(fixed)))
                .order_by(floating_ips.c.floating_id)).all()
        return [Floating(r.floating_id, r.address, r.port_id, r.fixed_address) for r in rows]

    def floating(self, floating_id: str) -> Optional[Floating]:
        with self.engine.connect() as conn:
            r = conn.execute(select(floating_ips)
                             .where(floating_ips.c.floating_id == floating_id)).first()
        return Floating(r.floating_id, r.address, r.port_id, r.fixed_address) if r else None

    def seen(self, message_id: str) -> Optional[float]:
        with self.engine.connect() as conn:
            return conn.execute(select(messages.c.seen_at)
                                .where(messages.c.message_id == message_id)).scalar()

    def twin_of(self, twin: Twin) -> Optional[Twin]:
        """The nearest unpaired notification of the other format for the same action."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(twins).where(twins.c.instance_uuid == twin.instance_uuid)
                .where(twins.c.name == twin.name).where(twins.c.format != twin.format)
                .where(twins.c.paired.is_(False))
                .where(twins.c.stamp.between(twin.stamp - TWIN_WINDOW_US,
                                             twin.stamp + TWIN_WINDOW_US))
                .order_by(func.abs(twins.c.stamp - twin.stamp)).limit(1)).first()
        return Twin(row.message_id, row.instance_uuid, row.name, row.format,
                    int(row.stamp)) if row else None

    def apply(self, effects: Sequence[Effect]) -> None:
        """All of one notification's changes in one transaction."""
        if not effects:
            return
        with self.engine.begin() as conn:
            for op, value in effects:
                getattr(self, "_" + op)(conn, value)
            now = time.time()
            if now - self._pruned > PRUNE_EVERY:
                self._pruned = now
                cutoff = now - self.retention
                conn.execute(delete(messages).where(messages.c.seen_at < cutoff))
                conn.execute(delete(twins).where(twins.c.seen_at < cutoff))

    @staticmethod
    def _seen(conn: Connection, seen: Seen) -> None:
        conn.execute(delete(messages).where(messages.c.message_id == seen.message_id))
        conn.execute(insert(messages).values(message_id=seen.message_id,
                                             event_type=seen.event_type[:128],
                                             seen_at=time.time()))

    @staticmethod
    def _twin(conn: Connection, twin: Twin) -> None:
        conn.execute(delete(twins).where(twins.c.message_id == twin.message_id))
        conn.execute(insert(twins).values(paired=False, seen_at=time.time(),
                                          **twin._asdict()))

    @staticmethod
    def _paired(conn: Connection, message_id: str) -> None:
        conn.execute(update(twins).where(twins.c.message_id == message_id)
                     .values(paired=True))

    @staticmethod
    def _remember(conn: Connection, event: InstanceEvent) -> None:
        conn.execute(delete(instances).where(instances.c.uuid == event.uuid))
        conn.execute(insert(instances).values(uuid=event.uuid, event=event.to_json(),
                                              updated_at=time.time()))
        conn.execute(delete(addresses).where(addresses.c.instance_uuid == event.uuid))
        rows = [{"instance_uuid": event.uuid, "address": a.address, "port_id": a.port_id}
                for a in event.addresses or []]
        if rows:
            conn.execute(insert(addresses), rows)

    @staticmethod
    def _forget(conn: Connection, instance_uuid: str) -> None:
        held = conn.execute(select(addresses.c.address, addresses.c.port_id)
                            .where(addresses.c.instance_uuid == instance_uuid)).all()
        ports = [r.port_id for r in held if r.port_id]
        fixed = [r.address for r in held]
        if ports or fixed:
            conn.execute(delete(floating_ips).where(or_(floating_ips.c.port_id.in_(ports),
                                                        floating_ips.c.fixed_address.in_(fixed))))
        conn.execute(delete(addresses).where(addresses.c.instance_uuid == instance_uuid))
        conn.execute(delete(instances).where(instances.c.uuid == instance_uuid))

    @staticmethod
    def _bind(conn: Connection, floating: Floating) -> None:
        conn.execute(delete(floating_ips)
                     .where(floating_ips.c.floating_id == floating.floating_id))
        conn.execute(insert(floating_ips).values(updated_at=time.time(), **floating._asdict()))

    @staticmethod
    def _unbind(conn: Connection, floating_id: str) -> None:
        conn.execute(delete(floating_ips).where(floating_ips.c.floating_id == floating_id))
