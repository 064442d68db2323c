"""The versioned JSON event that every source (hooks, notifications, CLI) produces.

One shape for all sources keeps the worker side ignorant of where an event was
born: a hook in nova-compute, a notification on the bus or an operator's replay.
The schema is versioned so that hook hosts and workers can be upgraded apart:
workers accept every version up to their own and refuse newer ones loudly.
"""

import datetime
import json
import time
import uuid as uuidlib
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

SCHEMA_VERSION = 1

#: What happened to the instance; the worker side maps each kind to a chain.
KINDS = ("create", "build", "network", "delete", "resize")

#: An event's place among its instance's events: (microseconds since the epoch, UTC, of
#: the moment it describes; tie-breaker). Chains of one VM race (queues of different
#: lengths, retries, redeliveries), so a step compares this with what its backend last
#: got and leaves newer state alone. The time is the source's (a notification's own
#: timestamp, a hook's wall clock at the call), never a relay's or listener's, so it
#: survives republishing; the tie-breaker is the outbox sequence for hooks and Nova's
#: action rank for notifications.
Order = Tuple[int, int]


class Address(NamedTuple):
    """One fixed address of one virtual interface, as Neutron assigned it."""

    address: str
    version: int
    mac: Optional[str] = None
    network: Optional[str] = None
    port_id: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return dict(self._asdict())


class Flavor(NamedTuple):
    name: Optional[str] = None
    vcpus: Optional[int] = None
    memory_mb: Optional[int] = None
    root_gb: Optional[int] = None
    ephemeral_gb: Optional[int] = None
    swap: Optional[int] = None


class InstanceEvent(NamedTuple):
    """A small, JSON-only picture of an instance at one moment of its life.

    ``addresses`` is ``None`` when the source could not know them yet (Nova's
    create_instance hook runs before scheduling); an empty list means "known to
    have none". Workers skip address steps for ``None`` but remove addresses
    for ``[]``.
    """

    kind: str
    uuid: str
    hostname: Optional[str]
    display_name: Optional[str] = None
    project_id: Optional[str] = None
    user_id: Optional[str] = None
    availability_zone: Optional[str] = None
    host: Optional[str] = None
    vm_state: Optional[str] = None
    flavor: Optional[Flavor] = None
    image: Optional[str] = None
    os_type: Optional[str] = None
    metadata: Dict[str, str] = {}
    #: The image's properties as Nova copied them into the instance (for opt-in/out policy).
    image_properties: Dict[str, str] = {}
    addresses: Optional[List[Address]] = None
    source: str = "unknown"
    event_id: str = ""
    emitted_at: float = 0.0
    version: int = SCHEMA_VERSION
    #: None until the source or the relay sets it (events of older hooks never do):
    #: :meth:`ordering` then falls back to ``emitted_at``.
    order: Optional[Order] = None

    def ordering(self) -> Order:
        """The order steps compare; an event without one is placed at its emitted time."""
        if self.order is not None:
            return self.order
        return (microseconds(self.emitted_at), 0)

    def to_dict(self) -> Dict[str, Any]:
        data = dict(self._asdict())
        data["flavor"] = dict(self.flavor._asdict()) if self.flavor is not None else None
        data["addresses"] = (None if self.addresses is None
                             else [a.to_dict() for a in self.addresses])
        data["metadata"] = dict(self.metadata)
        data["image_properties"] = dict(self.image_properties)
        data["order"] = list(self.order) if self.order is not None else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


class EventFormatError(ValueError):
    """The event cannot be read at all; names the field that is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__("event field %r: %s" % (field, problem))
        self.field = field


def new_event(kind: str, uuid: str, hostname: Optional[str], **fields: Any) -> InstanceEvent:
    """Build an event stamped with a fresh id and the current time."""
    return InstanceEvent(kind=kind, uuid=uuid, hostname=hostname,
                         event_id=str(uuidlib.uuid4()), emitted_at=time.time(), **fields)


def microseconds(when: float) -> int:
    """Seconds since the epoch as the integer an :data:`Order` starts with."""
    return int(round(when * 1000000))


def describe_order(order: Order) -> str:
    """For log lines and audit records: the UTC time and the tie-breaker."""
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=order[0])
    return "%s #%d" % (moment.strftime("%Y-%m-%d %H:%M:%S.%f"), order[1])


def _order(value: Any) -> Optional[Order]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise EventFormatError("order", "expected [microseconds, tie-breaker] (integers) "
                               "or null, got %r" % (value,))
    return (value[0], value[1])


def event_from_dict(data: Any) -> InstanceEvent:
    """Rebuild an event from its JSON form, refusing what this code cannot understand."""
    if not isinstance(data, dict):
        raise EventFormatError("<root>", "expected an object, got %s" % type(data).__name__)
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise EventFormatError("version", "missing or not a positive integer")
    if version > SCHEMA_VERSION:
        raise EventFormatError("version", "%d is newer than this worker understands (%d)"
                               % (version, SCHEMA_VERSION))
    for required in ("kind", "uuid"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise EventFormatError(required, "missing or empty")
    if data["kind"] not in KINDS:
        raise EventFormatError("kind", "%r is not one of %s" % (data["kind"], ", ".join(KINDS)))
    if "hostname" not in data:
        raise EventFormatError("hostname", "missing (null when not known yet)")
    known = set(InstanceEvent._fields)
    fields = {k: v for k, v in data.items() if k in known}
    flavor = data.get("flavor")
    if flavor is not None:
        if not isinstance(flavor, dict):
            raise EventFormatError("flavor", "expected an object")
        fields["flavor"] = Flavor(**{k: v for k, v in flavor.items() if k in Flavor._fields})
    addresses = data.get("addresses")
    if addresses is not None:
        if not isinstance(addresses, list):
            raise EventFormatError("addresses", "expected a list or null")
        parsed = []
        for i, item in enumerate(addresses):
            if not isinstance(item, dict) or not item.get("address"):
                raise EventFormatError("addresses[%d]" % i, "expected an object with 'address'")
            if "version" not in item:
                raise EventFormatError("addresses[%d].version" % i, "missing")
            parsed.append(Address(**{k: v for k, v in item.items() if k in Address._fields}))
        fields["addresses"] = parsed
    for name in ("metadata", "image_properties"):
        values = data.get(name) or {}
        if not isinstance(values, dict):
            raise EventFormatError(name, "expected an object")
        fields[name] = {str(k): str(v) for k, v in values.items()}
    fields["order"] = _order(data.get("order"))
    return InstanceEvent(**fields)


def event_from_json(text: str) -> InstanceEvent:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EventFormatError("<root>", "not valid JSON: %s" % exc) from None
    return event_from_dict(data)
