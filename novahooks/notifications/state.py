"""What the listener knows from earlier notifications: the shapes, not the storage.

The decisions of :mod:`novahooks.notifications.plan` read this interface; the
listener's store in the ledger's database (:mod:`tasks.notifications.store`)
implements it, and ``explain`` without a configuration uses :class:`EmptyState`.
Kept free of SQL so that notification parsing stays in the stdlib-only core.
"""

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from novahooks.event import InstanceEvent


class Floating(NamedTuple):
    floating_id: str
    address: str
    port_id: Optional[str]
    fixed_address: Optional[str]


class Seen(NamedTuple):
    """A notification whose events (or effects) are durable: its redelivery does nothing."""

    message_id: str
    event_type: str


class Twin(NamedTuple):
    """One notification of a Nova action, which its other format's twin pairs with."""

    message_id: str
    instance_uuid: str
    #: the versioned event type (legacy names translated: nova.twin_name)
    name: str
    #: "versioned" or "legacy"
    format: str
    #: the notification's own time, microseconds since the epoch
    stamp: int


#: One change to apply once the events of a notification are durable:
#: ("remember", InstanceEvent) | ("forget", uuid) | ("bind", Floating) |
#: ("unbind", floating_id) | ("seen", Seen) | ("twin", Twin) | ("paired", message_id)
Effect = Tuple[str, Any]

#: Twins of one Nova action are sent one after the other by the same service: their
#: timestamps are milliseconds apart. Two actions of one kind on one VM are seconds apart.
TWIN_WINDOW_US = 5 * 1000000


class EmptyState(object):
    """Knows nothing and keeps nothing: ``explain`` without a configuration."""

    def known(self, instance_uuid: str) -> Optional[InstanceEvent]:
        return None

    def instance_of(self, port_id: Optional[str], fixed_address: Optional[str]) -> Optional[str]:
        return None

    def floating_of(self, event: InstanceEvent) -> List[Floating]:
        return []

    def floating(self, floating_id: str) -> Optional[Floating]:
        return None

    def seen(self, message_id: str) -> Optional[float]:
        """When a notification with this message id was handled (None: never)."""
        return None

    def twin_of(self, twin: Twin) -> Optional[Twin]:
        """The other format's unpaired notification of the same action, if handled."""
        return None

    def apply(self, effects: Sequence[Effect]) -> None:
        return None


def describe(state: EmptyState, instance_uuid: str) -> Dict[str, Any]:
    """What the listener knows of one instance (for explain)."""
    known = state.known(instance_uuid)
    if known is None:
        return {"known": False}
    return {"known": True, "hostname": known.hostname,
            "addresses": [a.address for a in known.addresses or []],
            "floating": [f.address for f in state.floating_of(known)]}


__all__ = ["EmptyState", "Floating", "Effect", "Seen", "Twin", "TWIN_WINDOW_US", "describe"]
