"""From one notification and what the listener knows, to the events to enqueue.

The one place that decides, shared by the listener (which then appends the
events to the outbox and applies the effects) and by ``novahooks explain``
(which only prints them). Every event carries the instance's whole address
set, fixed and floating, because each step makes its backend hold exactly the
addresses of the event: an attach, a detach or a floating IP therefore adds or
removes only the records of the address that changed.

One Nova action, one event: a notification already handled (its ``message_id``:
redelivered after a crash, or published again) is ignored, and so is the second
of the versioned and legacy twins Nova sends for one action with
``notification_format = both`` (same instance, same action, timestamps within
``state.TWIN_WINDOW_US``): whichever of the two arrives first is used. With one format
only (Nova's default is ``unversioned``) nothing pairs and nothing is dropped.
"""

import time
import uuid as uuidlib
from typing import List, NamedTuple, Optional, Tuple

from novahooks.event import Address, InstanceEvent
from novahooks.notifications import neutron, nova
from novahooks.notifications.message import Notification
from novahooks.notifications.state import Effect, EmptyState, Floating, Seen, Twin

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


def _renamed(known: InstanceEvent, event: InstanceEvent) -> bool:
    """A rename no event announced shows as another hostname or display name."""
    return known.hostname != event.hostname or (
        event.display_name is not None and known.display_name != event.display_name)


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
    if result.action == "offload":
        # Offloaded: no host until unshelve.end, but the ports and addresses stay.
        if not event.addresses and known is not None:
            event = event._replace(addresses=known.addresses)
        if known is not None and _renamed(known, event):
            event = event._replace(kind="network")
        return _emit(note, event, state, ("remember", event))
    if result.action == "resize":
        if known is not None and (_fixed(known) != _fixed(event) or _renamed(known, event)):
            event = event._replace(kind="network")
        return _emit(note, event, state, ("remember", event))
    if result.action == "observe":
        return _observe(note, event, known, result.settled, state)
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
    if _renamed(known, event):
        return _emit(note, event, state, ("remember", event))
    if event.addresses is not None and _fixed(known) != _fixed(event):
        return _emit(note, event, state, ("remember", event))
    return _ignore(note, "%s: same hostname and addresses as registered; a state change only"
                   % note.event_type)


def _observe(note: Notification, event: InstanceEvent, known: Optional[InstanceEvent],
             settled: bool, state: EmptyState) -> Plan:
    """A notification that registers nothing itself, unless it shows what no event told.

    With Nova's default (``notify_on_state_change`` unset) a rename sends nothing;
    the next notification carrying the instance has the new name: the records move
    then. Legacy payloads also reveal an interface attach or detach this way (Nova
    sends no legacy notification for those). An empty address list is not read as
    "all removed": several of these payloads list none.
    """
    if known is None:
        return _ignore(note, "%s changes nothing registered (this listener has not seen the "
                       "VM registered)" % note.event_type)
    if event.vm_state in UNSETTLED or not settled:
        return _ignore(note, "%s while the VM is %s%s: a passing state" % (
            note.event_type, event.vm_state, "" if settled else " with a task running"))
    moved = bool(event.addresses) and _fixed(known) != _fixed(event)
    if not _renamed(known, event) and not moved:
        return _ignore(note, "%s: same hostname, display name and addresses as registered; "
                       "it changes nothing registered" % note.event_type)
    if not event.addresses:
        event = event._replace(addresses=known.addresses)
    return _emit(note, event, state, ("remember", event))


def _one_per_action(note: Notification, plan: Plan, state: EmptyState) -> Plan:
    """The second twin of a Nova action (versioned and legacy) is ignored."""
    stamp = nova.timestamp(note)
    instance = next((e.uuid for e in plan.events), None) or next(
        (value.uuid for op, value in plan.effects if op == "remember"), None)
    if stamp is None or instance is None or not note.message_id:
        return plan
    form, name = nova.twin_name(note.event_type)
    twin = Twin(note.message_id, instance, name, form, stamp)
    other = state.twin_of(twin)
    if other is not None:
        return _ignore(note, "%s is the %s twin of %s (message %s, %.3f s apart), which was "
                       "handled already: one event per Nova action" % (
                           note.event_type, form, other.name if other.format == "versioned"
                           else "its legacy notification", other.message_id,
                           abs(stamp - other.stamp) / 1e6),
                       ("paired", other.message_id))
    return plan._replace(effects=plan.effects + (("twin", twin),))


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
            order=nova.order(note, "network"), event_id=str(uuidlib.uuid5(
                uuidlib.NAMESPACE_URL, "%s:%s" % (nova.event_id(note), owner)))))
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
    if note.message_id:
        handled = state.seen(note.message_id)
        if handled is not None:
            return _ignore(note, "message %s was handled already (%s UTC): a redelivery or a "
                           "second publication of the same notification" % (
                               note.message_id, time.strftime("%Y-%m-%d %H:%M:%S",
                                                              time.gmtime(handled))))
    if note.event_type.startswith("floatingip."):
        plan = _neutron(note, state)
    else:
        plan = _nova(note, state)
        if plan.events or plan.effects:
            plan = _one_per_action(note, plan, state)
    if note.message_id and (plan.events or plan.effects):
        plan = plan._replace(effects=plan.effects + (
            ("seen", Seen(note.message_id, note.event_type)),))
    return plan
