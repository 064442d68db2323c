"""From one notification and what the listener knows, to the events to enqueue.

The one place that decides, shared by the listener (which then appends the
events to the outbox and applies the effects) and by ``novahooks explain``
(which only prints them). Every event carries the instance's whole address
set, fixed and floating, because each step makes its backend hold exactly the
addresses of the event: an attach, a detach or a floating IP therefore adds or
removes only the records of the address that changed.
"""

import time
import uuid as uuidlib
from typing import List, NamedTuple, Optional, Tuple

from novahooks.event import Address, InstanceEvent
from novahooks.notifications import neutron, nova
from novahooks.notifications.message import Notification
from novahooks.notifications.state import Effect, EmptyState, Floating

#: vm_states in which an instance.update cannot be a rename or address change to register.
UNSETTLED = ("building", "deleted", "soft-delete", "error")


class Plan(NamedTuple):
    notification: Notification
    events: Tuple[InstanceEvent, ...]
    #: Why nothing is enqueued (None when events are).
    ignored: Optional[str]
    #: What the listener records once the events are durable.
    effects: Tuple[Effect, ...]


def _fixed(event: Optional[InstanceEvent]) -> List[str]:
    return sorted(a.address for a in (event.addresses or [])) if event else []


def with_floating(event: InstanceEvent, floating: List[Floating]) -> InstanceEvent:
    """The event with the floating IPs bound to its ports (or fixed addresses) added."""
    if event.addresses is None:
        return event
    fixed = list(event.addresses)
    seen = {a.address for a in fixed}
    added = []  # type: List[Address]
    for item in floating:
        port = next((a for a in fixed if item.port_id and a.port_id == item.port_id), None) \
            or next((a for a in fixed if a.address == item.fixed_address), None)
        if port is None or item.address in seen:
            continue
        seen.add(item.address)
        added.append(Address(address=item.address, version=6 if ":" in item.address else 4,
                             mac=port.mac, network=port.network, port_id=port.port_id))
    return event._replace(addresses=fixed + added)


def _ignore(note: Notification, reason: str, *effects: Effect) -> Plan:
    return Plan(note, (), reason, tuple(effects))


def _emit(note: Notification, event: InstanceEvent, state: EmptyState,
          *effects: Effect) -> Plan:
    return Plan(note, (with_floating(event, state.floating_of(event)),), None, tuple(effects))


def _nova(note: Notification, state: EmptyState) -> Plan:
    result = nova.translate(note)
    if isinstance(result, nova.Ignored):
        return _ignore(note, result.reason)
    event = result.event
    known = state.known(event.uuid)
    if result.action == "build":
        return _emit(note, event, state, ("remember", event))
    if result.action == "capture":
        if not event.addresses and known is not None:
            event = event._replace(addresses=known.addresses)
        return _ignore(note, "%s: %d address(es) captured for instance.delete.end, which "
                       "removes the VM; nothing to enqueue now"
                       % (note.event_type, len(event.addresses or [])), ("remember", event))
    if result.action == "delete":
        # delete.end lists no addresses: use what create.end/delete.start told us, if anything
        # (the steps also remove by UUID and by what the ledger says they made).
        addresses = known.addresses if known is not None else None
        event = event._replace(addresses=addresses,
                               hostname=event.hostname or (known.hostname if known else None))
        return _emit(note, event, state, ("forget", event.uuid))
    if event.addresses is None and known is not None:
        event = event._replace(addresses=known.addresses)
    if result.action == "network":
        return _emit(note, event, state, ("remember", event))
    if result.action == "resize":
        if known is not None and _fixed(known) != _fixed(event):
            event = event._replace(kind="network")
        return _emit(note, event, state, ("remember", event))
    # instance.update: only a rename or an address change of a settled VM matters.
    if event.vm_state in UNSETTLED or not result.settled:
        return _ignore(note, "%s while the VM is %s%s: a passing state, not a rename or "
                       "address change" % (note.event_type, event.vm_state,
                                           "" if result.settled else " with a task running"))
    if result.renamed:
        return _emit(note, event, state, ("remember", event))
    if known is None:
        return _ignore(note, "%s without old_display_name for a VM this listener has not "
                       "seen registered: a state change only" % note.event_type)
    if known.hostname != event.hostname:
        return _emit(note, event, state, ("remember", event))
    if event.addresses is not None and _fixed(known) != _fixed(event):
        return _emit(note, event, state, ("remember", event))
    return _ignore(note, "%s: same hostname and addresses as registered; a state change only"
                   % note.event_type)


def _neutron(note: Notification, state: EmptyState) -> Plan:
    result = neutron.translate(note)
    if isinstance(result, nova.Ignored):
        return _ignore(note, result.reason)
    before = state.floating(result.floating_id)
    after = Floating(result.floating_id, result.address or "", result.port_id,
                     result.fixed_address) if result.address and result.port_id else None
    effect = ("bind", after) if after is not None else ("unbind", result.floating_id)
    owners = []  # type: List[str]
    for item in (before, after):
        owner = state.instance_of(item.port_id, item.fixed_address) if item else None
        if owner and owner not in owners:
            owners.append(owner)
    events = []
    for owner in owners:
        known = state.known(owner)
        if known is None:
            continue
        floating = [f for f in state.floating_of(known) if f.floating_id != result.floating_id]
        if after is not None:
            floating.append(after)
        events.append(with_floating(known, floating)._replace(
            kind="network", source="notification:%s" % note.event_type, emitted_at=time.time(),
            event_id=str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "%s:%s" % (
                nova.event_id(note), owner)))))
    if events:
        return Plan(note, tuple(events), None, (effect,))
    if after is None:
        return _ignore(note, "floating IP %s is bound to no port of a VM this listener knows"
                       % result.floating_id, effect)
    return _ignore(note, "floating IP %s (%s) is bound to port %s, which belongs to no VM "
                   "this listener knows yet; kept, it is registered with that VM's next "
                   "event" % (result.floating_id, result.address, result.port_id), effect)


def decide(note: Notification, state: Optional[EmptyState] = None) -> Plan:
    """Raises :class:`~novahooks.notifications.message.Malformed` naming the bad field."""
    state = state if state is not None else EmptyState()
    if note.event_type.startswith("floatingip."):
        return _neutron(note, state)
    return _nova(note, state)
