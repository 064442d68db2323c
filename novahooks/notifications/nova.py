"""What one Nova notification says happened to an instance.

Versioned (``instance.*``, payload a serialized Nova object) and legacy
(``compute.instance.*``, a flat dict) notifications both become a
:class:`Change`: the action and an :class:`InstanceEvent` carrying the fixed
addresses exactly as Nova reported them (``None`` when the payload has none to
tell). Everything else is :class:`Ignored` with the reason an operator reads in
``novahooks explain``. Pure functions: what the listener already knows
(captured addresses, floating IPs) is combined in :mod:`novahooks.notifications.plan`.

Actions:

* ``build``: the VM is up with its addresses (``create.end``).
* ``capture``: remember the addresses, enqueue nothing (``delete.start``).
* ``delete``: the VM is gone; ``delete.end`` carries no addresses.
* ``network``: addresses changed (interface attach/detach).
* ``resize``: flavor, host or image changed (resize, rebuild, migration).
* ``update``: ``instance.update``; whether it is a rename or an address change
  depends on what was known before.
* ``offload``: shelve offloaded the VM (host null until ``unshelve.end``): a
  ``resize`` event with vm_state ``shelved_offloaded``, addresses kept.
* ``observe``: any other notification carrying the settled instance (power,
  pause, shelve, snapshot, volume, ``exists``...): nothing unless it reveals a
  rename (or other addresses) that no event announced, since Nova sends no
  ``instance.update`` for a rename unless ``[notifications]
  notify_on_state_change`` is set.

Every event carries its order (:data:`novahooks.event.Order`): the
notification's own ``timestamp`` (UTC, Nova's ``str(utcnow())``) and the
action's :data:`RANK` as tie-breaker.
"""

import datetime
import re
import time
import uuid as uuidlib
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

from novahooks.event import Address, Flavor, InstanceEvent, Order
from novahooks.notifications.message import Malformed, Notification

#: Nova payload classes this code reads -> the major versions it understands. Minor
#: versions only add fields (Nova's rule), so any 1.x of a known class is read.
PAYLOADS = {
    "InstancePayload": (1,),
    "InstanceActionPayload": (1,),
    "InstanceCreatePayload": (1,),
    "InstanceUpdatePayload": (1, 2),
    "InstanceActionRebuildPayload": (1,),
    "InstanceActionResizePrepPayload": (1,),
    # read only to notice a rename no event announced (action "observe")
    "InstanceActionVolumePayload": (1,),
    "InstanceActionVolumeSwapPayload": (1,),
    "InstanceActionSnapshotPayload": (1,),
    "InstanceActionRescuePayload": (1,),
    "InstanceActionSharePayload": (1,),
    "InstanceExistsPayload": (1, 2),
}
NESTED = {"IpPayload": (1,), "FlavorPayload": (1,)}

#: Versioned event type -> action.
VERSIONED = {
    "instance.create.end": "build",
    "instance.delete.start": "capture",
    "instance.delete.end": "delete",
    "instance.interface_attach.end": "network",
    "instance.interface_detach.end": "network",
    "instance.update": "update",
    "instance.resize_finish.end": "resize",
    "instance.resize_revert.end": "resize",
    "instance.rebuild.end": "resize",
    "instance.live_migration_post_dest.end": "resize",
    "instance.unshelve.end": "resize",
    "instance.evacuate": "resize",
    "instance.shelve_offload.end": "offload",
}
#: Notifications of a settled instance that change nothing registered by themselves.
OBSERVED = ("power_off.end", "power_on.end", "reboot.end", "pause.end", "unpause.end",
            "suspend.end", "resume.end", "shelve.end", "rescue.end", "unrescue.end",
            "resize_confirm.end", "snapshot.end", "volume_attach.end", "volume_detach.end",
            "volume_swap.end", "restore.end", "trigger_crash_dump.end", "lock", "unlock",
            "exists", "share_attach.end", "share_detach.end")
VERSIONED.update({"instance." + name: "observe" for name in OBSERVED})
#: Why the rest of the instance lifecycle changes nothing that is registered.
WHY_NOT = {
    "instance.create.start": "the VM has no address yet; it is registered at "
                             "instance.create.end",
    "instance.create.error": "the build failed; nothing was registered for it",
    "instance.resize.end": "sent by the source host before the resize finishes; the new "
                           "flavor and host come with instance.resize_finish.end",
    "compute.instance.resize.end": "sent by the source host before the resize finishes "
                                   "(still the old flavor); the new flavor and host come "
                                   "with compute.instance.finish_resize.end",
}
LEGACY = {
    "compute.instance.create.end": "build",
    "compute.instance.delete.start": "capture",
    "compute.instance.delete.end": "delete",
    "compute.instance.update": "update",
    "compute.instance.finish_resize.end": "resize",
    "compute.instance.resize.revert.end": "resize",
    "compute.instance.rebuild.end": "resize",
    "compute.instance.live_migration.post.dest.end": "resize",
    "compute.instance.unshelve.end": "resize",
    "compute.instance.evacuate": "resize",
    "compute.instance.shelve_offload.end": "offload",
}
#: Legacy names of the observed notifications above (Nova's LegacyValidatingNotifier).
LEGACY.update({"compute.instance." + name: "observe" for name in (
    "power_off.end", "power_on.end", "reboot.end", "pause.end", "unpause.end",
    "suspend.end", "resume.end", "shelve.end", "rescue.end", "unrescue.end",
    "resize.confirm.end", "snapshot.end", "restore.end", "trigger_crash_dump.end",
    "exists")})
#: Legacy event type -> its versioned twin's, where the names differ (the twins of one
#: Nova action are paired by this name, the instance and their timestamps).
LEGACY_TWINS = {
    "compute.instance.finish_resize.end": "instance.resize_finish.end",
    "compute.instance.resize.revert.end": "instance.resize_revert.end",
    "compute.instance.resize.confirm.end": "instance.resize_confirm.end",
    "compute.instance.live_migration.post.dest.end": "instance.live_migration_post_dest.end",
}
#: The tie-breaker of two notifications of one instance with the same timestamp: the
#: order of Nova's lifecycle (a build before what follows it, a delete last).
RANK = {"build": 1, "update": 2, "observe": 2, "network": 3, "resize": 3, "offload": 4,
        "capture": 5, "delete": 6}
#: The event kind each action enqueues (``update`` decides between the two later).
KIND = {"build": "build", "capture": "delete", "delete": "delete", "network": "network",
        "resize": "resize", "update": "network", "offload": "resize", "observe": "network"}


class Change(NamedTuple):
    action: str
    event: InstanceEvent
    #: ``instance.update`` with ``old_display_name``: the VM was renamed.
    renamed: bool = False
    #: ``instance.update`` while a task runs (spawning, deleting, ...): not a settled state.
    settled: bool = True


class Ignored(NamedTuple):
    reason: str


def twin_name(event_type: str) -> Tuple[str, str]:
    """(format, the versioned name of the action): legacy and versioned twins match."""
    if event_type.startswith("compute.instance."):
        return "legacy", LEGACY_TWINS.get(event_type, "instance." + event_type[17:])
    return "versioned", event_type


def timestamp(note: Notification) -> Optional[int]:
    """The notification's own time in microseconds since the epoch (None: none given).

    oslo.messaging writes ``str(utcnow())``: ``2026-12-01 23:08:48.523874``, UTC
    without a zone (and no fraction when it is zero); an ISO form with ``T`` or a
    zone is read too.
    """
    text = note.timestamp.strip()
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    delta = moment - datetime.datetime(1970, 1, 1)
    return (delta.days * 86400 + delta.seconds) * 1000000 + delta.microseconds


def order(note: Notification, action: str) -> Optional[Order]:
    stamp = timestamp(note)
    return None if stamp is None else (stamp, RANK.get(action, 0))


def sanitize_hostname(name: str) -> str:
    """Nova's nova.utils.sanitize_hostname (Nova 34, unchanged since Liberty)."""
    name = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    name = re.sub(r"[ _\.]", "-", name)
    name = re.sub(r"[^\w.-]+", "", name)
    return name.lower().strip(".-")


def event_id(note: Notification) -> str:
    """The same notification delivered twice gives the same event id (the ledger sees one)."""
    if note.message_id:
        return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, "novahooks:notification:%s:%s"
                                 % (note.event_type, note.message_id)))
    return str(uuidlib.uuid4())


def _object(value: Any, field: str, known: Mapping[str, Tuple[int, ...]]) -> Dict[str, Any]:
    """The data of a serialized Nova object whose class and major version we know."""
    if not isinstance(value, dict):
        raise Malformed(field, "expected a serialized Nova object, got %s"
                        % type(value).__name__)
    if "$ref" in value:
        raise Malformed(field, "unresolved $ref %r: a documentation sample, not a "
                        "notification as Nova sends it (expand its $refs first)" % value["$ref"])
    name = value.get("nova_object.name")
    version = value.get("nova_object.version")
    data = value.get("nova_object.data")
    if not isinstance(name, str) or not isinstance(data, dict):
        raise Malformed(field, "missing nova_object.name or nova_object.data")
    if name not in known:
        raise Malformed(field + ".nova_object.name", "%r is not a payload this listener "
                        "reads (%s)" % (name, ", ".join(sorted(known))))
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise Malformed(field + ".nova_object.version", "%r is not a version" % (version,)) \
            from None
    if major not in known[name]:
        raise Malformed(field + ".nova_object.version", "%s %s: major version %d is unknown "
                        "(this listener reads %s)" % (name, version, major, ", ".join(
                            "%d.x" % m for m in known[name])))
    return data


def _required_text(data: Dict[str, Any], key: str, field: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise Malformed(field, "missing or empty (%r)" % (value,))
    return value


def _optional_text(data: Dict[str, Any], key: str) -> Optional[str]:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def _number(data: Dict[str, Any], key: str) -> Optional[int]:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _address(item: Dict[str, Any], field: str, mac_key: str, port_key: Optional[str],
             label_key: str) -> Address:
    address = item.get("address")
    if not isinstance(address, str) or not address:
        raise Malformed(field + ".address", "missing or not text (%r)" % (address,))
    version = item.get("version")
    if version in ("4", "6"):
        version = int(version)
    if version not in (4, 6):
        version = 6 if ":" in address else 4
    return Address(address=address, version=version, mac=_optional_text(item, mac_key),
                   network=_optional_text(item, label_key),
                   port_id=_optional_text(item, port_key) if port_key else None)


def _list(data: Dict[str, Any], key: str, field: str) -> Optional[List[Any]]:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise Malformed(field, "expected a list, got %s" % type(value).__name__)
    return value


def _flavor(data: Dict[str, Any]) -> Flavor:
    return Flavor(name=_optional_text(data, "name"), vcpus=_number(data, "vcpus"),
                  memory_mb=_number(data, "memory_mb"), root_gb=_number(data, "root_gb"),
                  ephemeral_gb=_number(data, "ephemeral_gb"), swap=_number(data, "swap"))


def _metadata(data: Dict[str, Any]) -> Dict[str, str]:
    value = data.get("metadata")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _addresses(data: Dict[str, Any], key: str,
               parse: Callable[[Any, str], Address]) -> Optional[List[Address]]:
    """``payload.<key>``: None when absent (not known yet), each item parsed and named."""
    items = _list(data, key, "payload." + key)
    if items is None:
        return None
    return [parse(item, "payload.%s[%d]" % (key, i)) for i, item in enumerate(items)]


def _plain_object(item: Any, field: str) -> Dict[str, Any]:
    if not isinstance(item, dict):
        raise Malformed(field, "expected an object")
    return item


def _hostname(data: Dict[str, Any], key: str, action: str, uuid: str) -> Optional[str]:
    """Every event but a delete needs the name it registers.

    A payload without one (very old legacy payloads) gets the name Nova gave the
    instance at creation from its display name (nova/compute/api.py
    ``_populate_instance_names``): sanitized, or ``Server-<uuid>`` when nothing is left.
    """
    hostname = _optional_text(data, key)
    if hostname is not None or action == "delete":
        return hostname
    display_name = _optional_text(data, "display_name")
    if display_name is None:
        raise Malformed("payload." + key, "missing or empty (%r), and no display_name to "
                        "derive it from as Nova does" % (data.get(key),))
    return sanitize_hostname(display_name) or "Server-%s" % uuid


def _event(note: Notification, action: str, data: Dict[str, Any], instance: str,
           hostname: Optional[str], flavor: Optional[Flavor], image: Optional[str],
           addresses: Optional[List[Address]]) -> InstanceEvent:
    """The event, from the fields both payload formats name alike and those they do not."""
    return InstanceEvent(
        kind=KIND[action], uuid=instance, hostname=hostname,
        display_name=_optional_text(data, "display_name"),
        project_id=_optional_text(data, "tenant_id"), user_id=_optional_text(data, "user_id"),
        availability_zone=_optional_text(data, "availability_zone"),
        host=_optional_text(data, "host"), vm_state=_optional_text(data, "state"),
        flavor=flavor, image=image, os_type=_optional_text(data, "os_type"),
        metadata=_metadata(data), addresses=addresses,
        source="notification:%s" % note.event_type, event_id=event_id(note),
        emitted_at=time.time(), order=order(note, action))


def _versioned(note: Notification, action: str) -> Change:
    data = _object(note.payload, "payload", PAYLOADS)
    instance = _required_text(data, "uuid", "payload.uuid")
    addresses = _addresses(data, "ip_addresses", lambda item, field: _address(
        _object(item, field, NESTED), field, "mac", "port_uuid", "label"))
    flavor = None
    if data.get("flavor") is not None:
        flavor = _flavor(_object(data["flavor"], "payload.flavor", NESTED))
    hostname = _hostname(data, "host_name", action, instance)
    event = _event(note, action, data, instance, hostname, flavor,
                   _optional_text(data, "image_uuid"), addresses)
    return Change(action, event, renamed=bool(data.get("old_display_name")),
                  settled=data.get("task_state") is None)


def _legacy(note: Notification, action: str) -> Change:
    data = note.payload
    instance = _required_text(data, "instance_id", "payload.instance_id")
    addresses = _addresses(data, "fixed_ips", lambda item, field: _address(
        _plain_object(item, field), field, "vif_mac", None, "label"))
    hostname = _hostname(data, "hostname", action, instance)
    flavor = Flavor(name=_optional_text(data, "instance_type"), vcpus=_number(data, "vcpus"),
                    memory_mb=_number(data, "memory_mb"), root_gb=_number(data, "root_gb"),
                    ephemeral_gb=_number(data, "ephemeral_gb"))
    image = _optional_text(data, "image_ref_url")
    event = _event(note, action, data, instance, hostname,
                   flavor if any(v is not None for v in flavor) else None,
                   image.rstrip("/").rsplit("/", 1)[-1] if image else None, addresses)
    return Change(action, event, renamed=bool(data.get("old_display_name")),
                  settled=not data.get("state_description"))


def translate(note: Notification) -> Union[Change, Ignored]:
    """The change one Nova notification describes, or why it changes nothing registered.

    Raises :class:`Malformed` (naming the field) for a payload this code cannot read.
    """
    kind = note.event_type
    read = _versioned if kind in VERSIONED else _legacy if kind in LEGACY else None
    if read is not None:
        action = VERSIONED.get(kind) or LEGACY[kind]
        try:
            return read(note, action)
        except Malformed as exc:
            if action != "observe":
                raise
            # It never registered anything: an unreadable one stays what it was, ignored.
            return Ignored("%s changes nothing registered, and could not be read to "
                           "notice a rename: %s" % (kind, exc))
    if WHY_NOT.get(kind):
        return Ignored(WHY_NOT[kind])
    if kind.startswith("compute.instance.create."):
        return Ignored("%s: the VM is registered at compute.instance.create.end" % kind)
    if kind.startswith("instance.") or kind.startswith("compute.instance."):
        return Ignored("%s changes nothing that is registered (name, addresses, flavor, "
                       "host)" % kind)
    return Ignored("%s is not an instance notification" % kind)
