"""Compare what Nova has with what every backend holds, and repair the difference.

Nova is asked through its Compute API with openstacksdk (clouds.yaml or the
usual OS_* variables, an admin view across projects). Each backend is asked
for every instance it holds records of. The result is a list of drift rows:

* missing: Nova has the VM, a backend has no record of it;
* stale: a backend holds an instance Nova no longer has;
* mismatched: both have it, but the addresses or the name differ.

``--fix`` publishes the chain that repairs each VM: a build chain (idempotent)
for missing and mismatched ones, a delete chain for stale ones.
"""

from typing import Any, Callable, Dict, List, Optional

from novahooks.event import Address, Flavor, InstanceEvent, new_event


def nova_events(cloud: Optional[str] = None) -> List[InstanceEvent]:
    """Every server Nova knows, as the event a build hook would have sent."""
    import openstack
    conn = openstack.connect(cloud=cloud) if cloud else openstack.connect()
    events = []
    for server in conn.compute.servers(details=True, all_projects=True):
        if str(server.status).upper() in ("DELETED", "SOFT_DELETED"):
            continue
        addresses = []
        for label, items in (server.addresses or {}).items():
            for item in items:
                if item.get("OS-EXT-IPS:type", "fixed") != "fixed":
                    continue
                addresses.append(Address(item["addr"], int(item.get("version", 4)),
                                         item.get("OS-EXT-IPS-MAC:mac_addr"), label))
        flavor = server.flavor
        events.append(new_event(
            "build", server.id, server.hostname or server.name, display_name=server.name,
            project_id=server.project_id, user_id=server.user_id,
            availability_zone=server.availability_zone, vm_state=str(server.vm_state or
                                                                     "active").lower(),
            flavor=Flavor(getattr(flavor, "original_name", None) or getattr(flavor, "name", None),
                          getattr(flavor, "vcpus", None), getattr(flavor, "ram", None),
                          getattr(flavor, "disk", None), getattr(flavor, "ephemeral", 0),
                          getattr(flavor, "swap", 0) or 0),
            image=(server.image or {}).get("id") if isinstance(server.image, dict) else None,
            metadata=dict(server.metadata or {}), addresses=addresses,
            source="reconcile:nova"))
    return events


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


def fix(rows: List[Dict[str, Any]], events: List[InstanceEvent],
        held: Dict[str, Dict[str, Dict[str, Any]]]) -> List[Dict[str, str]]:
    """Publish one repairing chain per drifting instance."""
    from tasks import chains
    from tasks.app import app
    nova = {event.uuid: event for event in events}
    published = []
    for uuid in sorted({r["instance_uuid"] for r in rows}):
        if uuid in nova:
            chains.build(app, nova[uuid].to_dict()).apply_async()
            published.append({"instance_uuid": uuid, "chain": "build"})
            continue
        names = [(held[b].get(uuid) or {}).get("name") or (held[b].get(uuid) or {}).get("hostname")
                 for b in ("inventory", "ldap")]
        hostname = next((name for name in names if name), None)
        addresses = [Address(a, 6 if ":" in a else 4) for a in
                     (held["ipam"].get(uuid) or held["ldap"].get(uuid) or {}).get(
                         "addresses", [])]
        event = new_event("delete", uuid, hostname, addresses=addresses,
                          source="reconcile:stale")
        chains.build(app, event.to_dict()).apply_async()
        published.append({"instance_uuid": uuid, "chain": "delete"})
    return published
