"""Compare what Nova has with what every backend holds, and repair the difference.

Nova is asked through its Compute API with openstacksdk (clouds.yaml or the
usual OS_* variables, an admin view across projects). Each backend is asked
for every instance it holds records of. The result is a list of drift rows:

* missing: Nova has the VM, a backend has no record of it;
* stale: a backend holds an instance Nova no longer has;
* mismatched: both have it, but something differs: addresses, the name (a rename
  no event revealed), and in the inventory the status (a shelve), the flavor, the
  interfaces (MAC -> addresses) and the primary IPs.

A VM still in BUILD is neither missing nor mismatched: its own chain registers it.

``--fix`` publishes the chain that repairs each VM, with care for the time
between the two listings. A build chain (idempotent; its steps read the
backends rather than trust the ledger) goes out only for a VM Nova still has
when asked by id right then, built from that answer, and not for one in BUILD
or with a tombstone. A delete chain goes out only for an instance that has been
missing for ``[reconcile] prune_after`` seconds across passes, that the ledger
saw nothing happen to since this pass began, and that Nova, asked by id right
before, still does not have.
"""

from typing import Any, Callable, Dict, List, Optional

from novahooks.event import Address, Flavor, InstanceEvent, new_event
from tasks.backends.inventory.base import status_of

#: The source of the build events reconcile publishes: their steps read the backends
#: instead of trusting the ledger's notes, which drift may have made wrong.
REPAIR = "reconcile:nova"
GONE = ("DELETED", "SOFT_DELETED")


def server_event(server: Any) -> InstanceEvent:
    """The event a build hook would have sent for this server (an openstacksdk Server)."""
    addresses = []
    for label, items in (server.addresses or {}).items():
        for item in items:
            if item.get("OS-EXT-IPS:type", "fixed") != "fixed":
                continue
            addresses.append(Address(item["addr"], int(item.get("version", 4)),
                                     item.get("OS-EXT-IPS-MAC:mac_addr"), label))
    flavor = server.flavor
    return new_event(
        "build", server.id, server.hostname or server.name, display_name=server.name,
        project_id=server.project_id, user_id=server.user_id,
        availability_zone=server.availability_zone,
        vm_state=str(server.vm_state or "active").lower(),
        flavor=Flavor(getattr(flavor, "original_name", None) or getattr(flavor, "name", None),
                      getattr(flavor, "vcpus", None), getattr(flavor, "ram", None),
                      getattr(flavor, "disk", None), getattr(flavor, "ephemeral", 0),
                      getattr(flavor, "swap", 0) or 0),
        image=(server.image or {}).get("id") if isinstance(server.image, dict) else None,
        metadata=dict(server.metadata or {}), addresses=addresses, source=REPAIR)


class Nova(object):
    """Nova's Compute API: the listing, and one server asked for by id."""

    def __init__(self, cloud: Optional[str] = None) -> None:
        import openstack
        self.conn = openstack.connect(cloud=cloud) if cloud else openstack.connect()

    def events(self) -> List[InstanceEvent]:
        return [server_event(server) for server in
                self.conn.compute.servers(details=True, all_projects=True)
                if str(server.status).upper() not in GONE]

    def event(self, uuid: str) -> Optional[InstanceEvent]:
        """The server now, or None when Nova no longer has it."""
        from openstack.exceptions import NotFoundException
        try:
            server = self.conn.compute.get_server(uuid)
        except NotFoundException:
            return None
        return None if str(server.status).upper() in GONE else server_event(server)


def nova_events(cloud: Optional[str] = None) -> List[InstanceEvent]:
    """Every server Nova knows, as the event a build hook would have sent."""
    return Nova(cloud).events()


def backend_holdings() -> Dict[str, Dict[str, Dict[str, Any]]]:
    from tasks import drivers
    return {"ipam": drivers.ipam().managed(), "ldap": drivers.directory().managed(),
            "inventory": drivers.inventory().managed()}


def policy_hostname(event: InstanceEvent) -> Optional[str]:
    """The host name the backends should hold for a Nova VM, None when policy leaves it out.

    The ledger's note wins: the workers saw the image properties, Nova's API does not.
    """
    from tasks import policy, validate
    from tasks.base import book
    from tasks.config import settings
    from tasks.errors import StepError
    made = book().made(event.uuid)
    if policy.LEDGER_KEY in made and not set(made) - {policy.LEDGER_KEY}:
        return None
    try:
        decision = policy.decide(validate.event(event, needs_hostname=False), settings())
    except StepError:
        return event.hostname  # its chain fails the same way; the rows show what is missing
    return decision.hostname if decision.register else None


def inventory_drift(event: InstanceEvent, have: Dict[str, Any]) -> List[str]:
    """What the inventory holds that differs from Nova, for the keys its driver reports."""
    found = []
    flavor = event.flavor or Flavor()
    want = {"status": status_of(event), "vcpus": flavor.vcpus, "memory": flavor.memory_mb,
            "disk": ((flavor.root_gb or 0) + (flavor.ephemeral_gb or 0)) * 1000}
    for key, value in want.items():
        if key in have and have[key] is not None and value is not None and have[key] != value:
            found.append("%s %s, Nova has %s" % (key, have[key], value))
    if "interfaces" in have:
        ports = {}  # type: Dict[str, List[str]]
        for item in event.addresses or []:
            ports.setdefault((item.mac or "").lower(), []).append(item.address)
        ports = {mac: sorted(a) for mac, a in ports.items()}
        if have["interfaces"] != ports:
            found.append("interfaces %s, Nova has %s" % (have["interfaces"], ports))
    for version in (4, 6):
        key = "primary_ip%d" % version
        if key not in have:
            continue
        mine = [a.address for a in event.addresses or [] if a.version == version]
        if (have[key] is None and mine) or (have[key] is not None and have[key] not in mine):
            found.append("%s %s, Nova has %s" % (key, have[key], mine or "none"))
    return found


def compare(events: List[InstanceEvent], held: Dict[str, Dict[str, Dict[str, Any]]],
            dns_of: Any = None,
            expected: Optional[Callable[[InstanceEvent], Optional[str]]] = None
            ) -> List[Dict[str, Any]]:
    """Drift rows; ``dns_of(event)`` returns the addresses DNS holds for a Nova VM and
    ``expected(event)`` the host name it should have, None for a VM policy leaves out
    (see :func:`policy_hostname`; default: Nova's hostname)."""
    rows = []  # type: List[Dict[str, Any]]
    nova = {event.uuid: event for event in events}

    def row(uuid: str, hostname: Any, backend: str, problem: str, detail: str) -> None:
        rows.append({"instance_uuid": uuid, "hostname": hostname, "backend": backend,
                     "problem": problem, "detail": detail})

    for event in events:
        if event.vm_state == "building":
            continue  # its own chain registers it; nothing is stale either
        hostname = event.hostname if expected is None else expected(event)
        if hostname is None:
            continue  # left out by policy: nothing is expected, and nothing is stale
        want = sorted(a.address for a in event.addresses or [])
        for backend in ("ipam", "ldap", "inventory"):
            have = held[backend].get(event.uuid)
            if have is None:
                row(event.uuid, event.hostname, backend, "missing", "no record")
                continue
            if backend in ("ipam", "ldap") and sorted(have["addresses"]) != want:
                row(event.uuid, event.hostname, backend, "mismatched",
                    "addresses %s, Nova has %s" % (sorted(have["addresses"]), want))
            name = have.get("name") or have.get("hostname")
            if backend != "ipam" and name != hostname:
                row(event.uuid, event.hostname, backend, "mismatched",
                    "name %s, expected %s" % (name, hostname))
            if backend == "inventory":
                for detail in inventory_drift(event, have):
                    row(event.uuid, event.hostname, backend, "mismatched", detail)
        if dns_of is not None:
            have_dns = sorted(dns_of(event))
            if have_dns != want:
                row(event.uuid, event.hostname, "dns", "missing" if not have_dns else
                    "mismatched", "A/AAAA %s, Nova has %s" % (have_dns, want))
    for backend, instances in held.items():
        for uuid, have in instances.items():
            if uuid not in nova:
                row(uuid, have.get("name") or have.get("hostname"), backend, "stale",
                    "Nova has no such instance")
    return rows


def _removal(uuid: str, held: Dict[str, Dict[str, Dict[str, Any]]]) -> InstanceEvent:
    names = [(held[b].get(uuid) or {}).get("name") or (held[b].get(uuid) or {}).get("hostname")
             for b in ("inventory", "ldap")]
    addresses = [Address(a, 6 if ":" in a else 4) for a in
                 (held["ipam"].get(uuid) or held["ldap"].get(uuid) or {}).get("addresses", [])]
    return new_event("delete", uuid, next((name for name in names if name), None),
                     addresses=addresses, source="reconcile:stale")


def fix(rows: List[Dict[str, Any]], events: List[InstanceEvent],
        held: Dict[str, Dict[str, Dict[str, Any]]], nova: Any, began: float,
        prune_after: float, publish: Optional[Callable[[InstanceEvent], None]] = None
        ) -> List[Dict[str, Any]]:
    """One decision per drifting instance: the chain published, or why none was.

    ``nova`` answers ``event(uuid)`` (see :class:`Nova`); ``began`` is when the Nova
    listing was asked for, on the ledger's clock (``Ledger.now``: the one clock every
    host's chain is dated by); ``publish`` sends a chain (default: the Celery chain).
    """
    from tasks.base import book
    from tasks.reconcile_state import Absences
    if publish is None:
        publish = _publish
    listed = {event.uuid for event in events}
    drifting = sorted({r["instance_uuid"] for r in rows})
    stale = [uuid for uuid in drifting if uuid not in listed]
    ledger = book()
    absences = Absences(ledger)
    now = ledger.now()
    first_missing = absences.missing(stale, now)
    absences.keep_only(stale)
    active = absences.active_since(stale, began)
    decided = []

    def decide(uuid: str, chain: Optional[str], why: str) -> None:
        decided.append({"instance_uuid": uuid, "chain": chain or "none", "why": why})

    for uuid in drifting:
        if uuid in listed:
            current = nova.event(uuid)
            if current is None:
                decide(uuid, None, "deleted since the listing: not registered again")
            elif current.vm_state == "building":
                decide(uuid, None, "in BUILD now: its own chain registers it")
            elif ledger.is_deleted(uuid):
                decide(uuid, None, "the ledger has its delete: not registered again")
            else:
                publish(current)
                decide(uuid, "build", "repaired from Nova's answer by id")
            continue
        if uuid in active:
            decide(uuid, None, "the ledger saw it change after the listing began")
            continue
        missing_for = now - first_missing.get(uuid, now)
        if missing_for < prune_after:
            decide(uuid, None, "missing for %.0f s of the %.0f s [reconcile] prune_after"
                   % (missing_for, prune_after))
            continue
        current = nova.event(uuid)
        if current is not None:
            decide(uuid, None, "Nova has it when asked by id (%s): created after the listing"
                   % current.vm_state)
            continue
        publish(_removal(uuid, held))
        decide(uuid, "delete", "missing from Nova for %.0f s" % missing_for)
    return decided


def _publish(event: InstanceEvent) -> None:
    from tasks import chains
    from tasks.app import app
    chains.build(app, event.to_dict()).apply_async()
